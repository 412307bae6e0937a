//! Recipes: how a file (by oid) is rebuilt from chunks, and where those chunks are.
//!
//! ```text
//! header    64 B  magic "GMRECIP\n", version u32 = 1, chunker u32 (ChunkParams version),
//!                 oid [32], size u64, chunk_count u32, segment_count u32
//! chunks    per chunk, in file order: id [32], raw_len u32                       (36 B)
//! segments  per segment, in file order: pack [32], first u32, count u32,
//!                 offset u64, length u64                                          (56 B)
//! ```
//! A segment says that the next `count` chunks of the file are the records `first ..
//! first+count` of `pack`, stored in the byte range `offset .. offset+length`: one range
//! read. A recipe with no segments is *unlocated*: the form a client sends when it
//! registers a file, before the server places it in its own packs.

use crate::id::{ChunkId, Oid, PackId};
use crate::pack::{MAX_CHUNK_BYTES, RECORD_HEADER_LEN};

pub const RECIPE_MAGIC: &[u8; 8] = b"GMRECIP\n";
pub const RECIPE_VERSION: u32 = 1;
/// Bytes of the fixed header; [`RecipeHeader::parse`] reads it alone, so that a reader
/// can check it (and the length it announces) before reading anything else.
pub const HEADER_LEN: usize = 64;
const CHUNK_LEN: usize = 36;
const SEGMENT_LEN: usize = 56;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipeChunk {
    pub id: ChunkId,
    pub raw_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub pack: PackId,
    /// Index of the first record in the pack.
    pub first: u32,
    pub count: u32,
    /// Byte offset of the first record in the pack.
    pub offset: u64,
    /// Bytes of the `count` records, headers included.
    pub length: u64,
}

/// The fixed header of an encoded recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipeHeader {
    pub chunker: u32,
    pub oid: Oid,
    pub size: u64,
    pub chunk_count: u32,
    pub segment_count: u32,
}

impl RecipeHeader {
    /// Parses the first [`HEADER_LEN`] bytes of a recipe (magic and version checked).
    pub fn parse(bytes: &[u8]) -> Result<RecipeHeader, RecipeError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != RECIPE_MAGIC {
            return Err(bad("bad header"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        if u32_at(8) != RECIPE_VERSION {
            return Err(bad(format!("unknown version {}", u32_at(8))));
        }
        Ok(RecipeHeader {
            chunker: u32_at(12),
            oid: Oid::from_slice(&bytes[16..48]).unwrap(),
            size: u64::from_le_bytes(bytes[48..56].try_into().unwrap()),
            chunk_count: u32_at(56),
            segment_count: u32_at(60),
        })
    }

    /// Length of the whole encoded recipe this header announces.
    pub fn encoded_len(&self) -> u64 {
        HEADER_LEN as u64
            + self.chunk_count as u64 * CHUNK_LEN as u64
            + self.segment_count as u64 * SEGMENT_LEN as u64
    }

    /// Whether the counts are possible for a file of `size` bytes: every chunk holds 1 to
    /// [`MAX_CHUNK_BYTES`] bytes, and a located recipe has at most one segment per chunk.
    pub fn check_counts(&self) -> Result<(), RecipeError> {
        let chunks = self.chunk_count as u64;
        let fewest = self.size.div_ceil(MAX_CHUNK_BYTES as u64);
        if chunks < fewest || chunks > self.size {
            return Err(bad(format!(
                "{chunks} chunks cannot make a file of {} bytes",
                self.size
            )));
        }
        if self.segment_count > self.chunk_count {
            return Err(bad(format!(
                "{} segments for {chunks} chunks",
                self.segment_count
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub chunker: u32,
    pub oid: Oid,
    pub size: u64,
    pub chunks: Vec<RecipeChunk>,
    pub segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("recipe is malformed: {0}")]
    Malformed(String),
}

fn bad(what: impl Into<String>) -> RecipeError {
    RecipeError::Malformed(what.into())
}

impl Recipe {
    pub fn is_located(&self) -> bool {
        !self.segments.is_empty() || self.chunks.is_empty()
    }

    /// The recipe without locations, as a client registers it.
    pub fn unlocated(&self) -> Recipe {
        Recipe {
            segments: Vec::new(),
            ..self.clone()
        }
    }

    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.chunks.len() * CHUNK_LEN + self.segments.len() * SEGMENT_LEN
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(RECIPE_MAGIC);
        out.extend_from_slice(&RECIPE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.chunker.to_le_bytes());
        out.extend_from_slice(self.oid.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for c in &self.chunks {
            out.extend_from_slice(c.id.as_bytes());
            out.extend_from_slice(&c.raw_len.to_le_bytes());
        }
        for s in &self.segments {
            out.extend_from_slice(s.pack.as_bytes());
            out.extend_from_slice(&s.first.to_le_bytes());
            out.extend_from_slice(&s.count.to_le_bytes());
            out.extend_from_slice(&s.offset.to_le_bytes());
            out.extend_from_slice(&s.length.to_le_bytes());
        }
    }

    /// Decodes exactly one recipe filling all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Recipe, RecipeError> {
        let (recipe, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(bad("trailing bytes after the recipe"));
        }
        Ok(recipe)
    }

    /// Decodes the recipe at the start of `bytes`; returns it and the bytes it used. A
    /// batch of recipes is their encodings one after the other.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Recipe, usize), RecipeError> {
        let header = RecipeHeader::parse(bytes)?;
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let (chunker, oid, size) = (header.chunker, header.oid, header.size);
        let nchunks = header.chunk_count as usize;
        let nsegs = header.segment_count as usize;
        let total = HEADER_LEN + nchunks * CHUNK_LEN + nsegs * SEGMENT_LEN;
        if bytes.len() < total {
            return Err(bad(format!("truncated: {} of {total} bytes", bytes.len())));
        }
        let mut chunks = Vec::with_capacity(nchunks);
        let mut at = HEADER_LEN;
        for _ in 0..nchunks {
            chunks.push(RecipeChunk {
                id: ChunkId::from_slice(&bytes[at..]).unwrap(),
                raw_len: u32_at(at + 32),
            });
            at += CHUNK_LEN;
        }
        let mut segments = Vec::with_capacity(nsegs);
        for _ in 0..nsegs {
            segments.push(Segment {
                pack: PackId::from_slice(&bytes[at..]).unwrap(),
                first: u32_at(at + 32),
                count: u32_at(at + 36),
                offset: u64_at(at + 40),
                length: u64_at(at + 48),
            });
            at += SEGMENT_LEN;
        }
        let recipe = Recipe {
            chunker,
            oid,
            size,
            chunks,
            segments,
        };
        recipe.validate()?;
        Ok((recipe, total))
    }

    /// Structural checks: chunk sizes add up to the file size, segments cover the chunks.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let mut sum = 0u64;
        for c in &self.chunks {
            if c.raw_len == 0 || c.raw_len > MAX_CHUNK_BYTES {
                return Err(bad(format!("chunk {} has {} bytes", c.id, c.raw_len)));
            }
            sum += c.raw_len as u64;
        }
        if sum != self.size {
            return Err(bad(format!(
                "chunks add up to {sum} bytes, the file has {}",
                self.size
            )));
        }
        if !self.segments.is_empty() {
            let mut covered = 0u64;
            for s in &self.segments {
                if s.count == 0 || s.length < s.count as u64 * RECORD_HEADER_LEN {
                    return Err(bad("empty or impossible segment"));
                }
                covered += s.count as u64;
            }
            if covered != self.chunks.len() as u64 {
                return Err(bad("segments do not cover the chunks"));
            }
        }
        Ok(())
    }

    /// Segments paired with the recipe chunks they cover.
    pub fn segment_chunks(&self) -> impl Iterator<Item = (&Segment, &[RecipeChunk])> {
        let mut at = 0usize;
        self.segments.iter().map(move |s| {
            let slice = &self.chunks[at..at + s.count as usize];
            at += s.count as usize;
            (s, slice)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recipe {
        let a = ChunkId::of(b"a");
        let b = ChunkId::of(b"bb");
        Recipe {
            chunker: 1,
            oid: Oid::of(b"abb"),
            size: 3,
            chunks: vec![
                RecipeChunk { id: a, raw_len: 1 },
                RecipeChunk { id: b, raw_len: 2 },
            ],
            segments: vec![Segment {
                pack: PackId::of(b"pack"),
                first: 0,
                count: 2,
                offset: 16,
                length: 99,
            }],
        }
    }

    #[test]
    fn golden_encoding() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes.len(), 64 + 2 * 36 + 56);
        assert_eq!(&bytes[..16], b"GMRECIP\n\x01\x00\x00\x00\x01\x00\x00\x00");
        assert_eq!(PackId::of(&bytes).to_hex(), GOLDEN_HASH, "encoding changed");
        assert_eq!(Recipe::decode(&bytes).unwrap(), r);
    }

    const GOLDEN_HASH: &str = "2cfd754d3b1bdfe3f92f4d318bfce4d58c4c19d935416b6555956545142407d8";

    #[test]
    fn batch_and_rejects() {
        let r = sample();
        let mut batch = r.encode();
        r.unlocated().encode_into(&mut batch);
        let (first, used) = Recipe::decode_prefix(&batch).unwrap();
        assert_eq!(first, r);
        let second = Recipe::decode(&batch[used..]).unwrap();
        assert!(!second.is_located());

        let mut wrong_size = r.clone();
        wrong_size.size = 4;
        assert!(Recipe::decode(&wrong_size.encode()).is_err());
        let bytes = r.encode();
        assert!(Recipe::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut huge = bytes.clone();
        huge[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Recipe::decode(&huge).is_err());
    }
}
