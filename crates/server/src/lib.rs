//! git-model's HTTP server: stores packs of chunks (deduplicated across repositories) and
//! per-repository recipes, and verifies everything it is given before storing it.
//!
//! - [`storage`]: the [`Storage`] trait (object-store shaped) and its [`LocalDir`] backend;
//!   [`s3`]: the S3 backend ([`S3Store`], `--store s3://bucket/prefix`). See `docs/deploy.md`.
//! - [`keys`]: where packs and recipes live in storage.
//! - [`index`]: the in-memory [`ChunkIndex`], a rebuildable cache of the packs' indexes.
//! - [`register`]: locating and verifying recipes on registration; [`prefix`]: hash
//!   states of verified prefixes, so a new version is hashed only from where it differs.
//! - [`api`]: routing and handlers; [`error`]: [`ApiError`] and its status mapping.
//! - [`lfs`]: the Git LFS API (batch, basic transfers) over the same stores, with
//!   [`upload`] (server-side chunking of a raw object), [`download`] (streaming a file
//!   from its recipe) and [`locks`] (the file locking API). See `docs/lfs.md`.
//! - [`auth`]: the [`Authorizer`] hook; [`tokens`]: scoped, hashed access tokens and
//!   [`TokenAuthorizer`]; [`tenancy`]: which packs each repository may read;
//!   [`security`]: the binary's config file, security options, `token` subcommand and
//!   startup policy; [`tls`]: HTTPS. See `docs/security.md`.
//! - [`scrub`]: checking stored packs and recipes after the fact (`git-model-server
//!   scrub`, `files/verify`), and the damage records that stop servers vouching for a
//!   damaged pack until a client uploads it again.
//! - [`state`]: [`AppState`] and [`ServerConfig`]; [`server`]: [`serve`] and shutdown;
//!   [`conn`]: connection caps, write deadlines and the least body rate.
//!
//! The binary (`crates/server/main.rs`) only parses flags, sets up logging and calls
//! [`AppState::open_local`] and [`serve`]. The API is specified in `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod conn;
pub mod damage;
pub mod download;
pub mod error;
pub mod gc;
pub mod http;
pub mod index;
pub mod keys;
pub mod lfs;
pub mod locate;
pub mod locks;
pub mod metrics;
pub mod prefix;
pub mod range;
pub mod register;
pub mod s3;
pub mod scrub;
pub mod security;
pub mod server;
pub mod state;
pub mod storage;
pub mod tenancy;
pub mod tls;
pub mod tokens;
pub mod upload;

pub use auth::{Access, AllowAll, Authorizer};
pub use error::ApiError;
pub use index::{ChunkIndex, Location};
pub use s3::{S3Location, S3Options, S3Store};
pub use security::{Security, SecurityOptions};
pub use server::{serve, serve_tls, shutdown_signal};
pub use state::{
    default_data_dir, AppState, ServerConfig, DATA_DIR_ENV, DEFAULT_LISTEN,
    DEFAULT_SHARED_INDEX_REFRESH, PRESIGNED_URL_EXPIRY,
};
pub use storage::{LocalDir, Storage, StorageError};
pub use tokens::{TokenAuthorizer, TokenStore};
