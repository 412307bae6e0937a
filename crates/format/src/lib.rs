//! git-model's formats, with no I/O: everything here works on `&[u8]` and `impl Read`.
//!
//! - [`chunk`]: content-defined chunking (gear rolling hash), push-style, and the one
//!   streaming "bytes → chunk ids and lengths" helper ([`ChunkHasher`], [`chunk_ids`]).
//! - [`id`]: the three 32-byte ids: [`ChunkId`] (BLAKE3 of a chunk), [`Oid`] (SHA-256 of a
//!   whole file, the Git LFS oid) and [`PackId`] (BLAKE3 of a pack's bytes).
//! - [`pointer`]: Git LFS spec v1 pointer files, byte-identical to the reference client.
//! - [`pack`]: packs aggregating compressed chunks, with a footer index.
//! - [`planes`]: byte planes, the chunk encoding that makes model weights compress.
//! - [`prefix`]: SHA-256 states at chunk boundaries, to resume hashing a new version.
//! - [`recipe`]: how a file is rebuilt from chunks, and where those chunks live.
//!
//! The byte layouts are specified in `docs/formats.md` and pinned by golden-vector tests.
#![forbid(unsafe_code)]

pub mod chunk;
pub mod id;
pub mod pack;
pub mod planes;
pub mod pointer;
pub mod prefix;
pub mod recipe;
pub mod time;

pub use chunk::{chunk_ids, cut_candidates, select_cuts, ChunkHasher, ChunkParams, Chunker};
pub use id::{ChunkId, IdError, Oid, PackId};
pub use pack::{Codec, PackBuilder, PackEntry, PackError};
pub use pointer::Pointer;
pub use recipe::{Recipe, RecipeChunk, RecipeError, RecipeHeader, Segment};
