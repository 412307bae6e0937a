//! git-model's application layer: a git repository with its local store and its server.
//!
//! Everything a front end does goes through here: the `git-model` binary (clap and
//! rendering over this crate), and the Python package and the web UI built on it. The
//! operations take the parts they need ([`Repo`], a [`PathFilter`], a progress sink)
//! and return typed results; printing, progress bars, `--json` rendering, charts and exit
//! codes are the front end's.
//!
//! - [`repository`]: opening a repository ([`Repo`]), its configuration, its local store
//!   and its server.
//! - [`filter`]: git's clean/smudge filter (the long-running process and single shots).
//! - [`checkout`]: every route to a pointer's content (a stream, a file, `pull`).
//! - [`transfer`]: push (the pre-push hook and `git model push`) and fetch.
//! - [`status`]: what the working tree and the store hold of the tracked files.
//! - [`maint`]: `fsck` and `prune` of the local store.
//! - [`content`]: reading files at any revision in ranges, fetching only the chunks read
//!   (the ML commands' view of models, tables and metrics).
//! - [`registry`]: the stage registry's git-backed event log (view, append, sync) and
//!   promote / rollback / export.
//! - [`lfs`]: Git LFS interop (objects git-lfs left, the custom transfer agent, migrate).
//! - [`paths`], [`statcache`]: which paths a checkout downloads; files written with their
//!   stat data, so the clean filter need not hash them again.
//!
//! Errors: see [`error`].
#![forbid(unsafe_code)]

pub mod cache;
pub mod checkout;
pub mod content;
pub mod diff;
pub mod error;
pub mod experiments;
pub mod filter;
pub mod lfs;
pub mod maint;
pub mod merge;
pub mod objects;
pub mod paths;
pub mod registry;
pub mod repository;
pub mod revision;
pub mod statcache;
pub mod status;
pub mod tensors;
pub mod transfer;

pub use error::{not_found, usage, GateRefused, NotFound, PullError, UsageError};
pub use paths::PathFilter;
pub use repository::{auth, tls_options, Repo};

/// One file with something wrong: what `fsck` and `pull` report per file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The file's path in the repository.
    pub path: String,
    /// Its SHA-256, hex.
    pub oid: String,
    pub problem: String,
}
