//! Where a recipe's chunks are: each placed in the packs a repository may read (never
//! the client's word), as segments and as the windows that verify them. Below the
//! registration handler and the state, which both locate files.

use std::collections::HashSet;
use std::ops::Range;

use gitmodel_format::{ChunkId, PackId, Recipe, Segment};

use crate::index::ChunkIndex;
use crate::storage::READ_WINDOW_BYTES as WINDOW_BYTES;

/// Why one file of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// `missing_chunks`, `hash_mismatch` or `corrupt_chunk` (see `docs/protocol.md`).
    pub code: &'static str,
    pub message: String,
}

impl FileError {
    pub(crate) fn hash_mismatch(message: String) -> FileError {
        FileError {
            code: "hash_mismatch",
            message,
        }
    }
}

/// One range read of consecutive records, and the recipe chunks they must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub pack: PackId,
    pub offset: u64,
    pub length: u64,
    pub chunks: Range<usize>,
}

/// A recipe with its server locations, and the reads that verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub recipe: Recipe,
    pub windows: Vec<Window>,
}

/// Places every chunk of `recipe` in packs that `usable` accepts: the packs the
/// repository may read ([`crate::tenancy`]), so that a client cannot register (and then
/// download) chunks it never uploaded by naming their ids. The recipe's own segments, if
/// any, are ignored: the client's word on locations is not trusted. Consecutive chunks
/// that are consecutive records of one pack share a segment.
pub fn locate(
    index: &ChunkIndex,
    recipe: &Recipe,
    usable: impl Fn(&PackId) -> bool,
) -> Result<Located, FileError> {
    let locations = index.get_many_where(recipe.chunks.iter().map(|c| &c.id), usable);
    place(recipe, locations)
}

/// [`locate`] in the packs of `readable`, at a cost that does not grow with the copies
/// of a chunk that other repositories stored ([`ChunkIndex::get_many_in`]).
pub fn locate_in(
    index: &ChunkIndex,
    recipe: &Recipe,
    readable: &HashSet<PackId>,
) -> Result<Located, FileError> {
    let locations = index.get_many_in(recipe.chunks.iter().map(|c| &c.id), readable);
    place(recipe, locations)
}

/// Builds the segments and verification windows of `recipe` from each chunk's location.
fn place(
    recipe: &Recipe,
    locations: Vec<Option<crate::index::Location>>,
) -> Result<Located, FileError> {
    let missing: Vec<&ChunkId> = recipe
        .chunks
        .iter()
        .zip(&locations)
        .filter(|(_, loc)| loc.is_none())
        .map(|(c, _)| &c.id)
        .collect();
    if let Some(first) = missing.first() {
        return Err(FileError {
            code: "missing_chunks",
            message: format!(
                "{} of the file's {} chunks are not on the server; first missing: {first}",
                missing.len(),
                recipe.chunks.len()
            ),
        });
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut windows: Vec<Window> = Vec::new();
    for (i, (chunk, loc)) in recipe.chunks.iter().zip(locations).enumerate() {
        let Some(loc) = loc else { continue };
        if loc.entry.raw_len != chunk.raw_len {
            return Err(FileError::hash_mismatch(format!(
                "chunk {} has {} bytes, the recipe says {}",
                chunk.id, loc.entry.raw_len, chunk.raw_len
            )));
        }
        let record_len = loc.entry.record_len();
        let follows = |pack: PackId, end: u64| pack == loc.pack && end == loc.entry.offset;
        match segments.last_mut() {
            Some(s)
                if follows(s.pack, s.offset + s.length)
                    && s.first.checked_add(s.count) == Some(loc.index_in_pack) =>
            {
                s.count += 1;
                s.length += record_len;
            }
            _ => segments.push(Segment {
                pack: loc.pack,
                first: loc.index_in_pack,
                count: 1,
                offset: loc.entry.offset,
                length: record_len,
            }),
        }
        match windows.last_mut() {
            Some(w)
                if follows(w.pack, w.offset + w.length)
                    && w.chunks.end == i
                    && w.length + record_len <= WINDOW_BYTES =>
            {
                w.length += record_len;
                w.chunks.end = i + 1;
            }
            _ => windows.push(Window {
                pack: loc.pack,
                offset: loc.entry.offset,
                length: record_len,
                chunks: i..i + 1,
            }),
        }
    }
    Ok(Located {
        recipe: Recipe {
            segments,
            ..recipe.unlocated()
        },
        windows,
    })
}
