//! Packs and recipes made by hand, as a client would make them before uploading: a file's
//! chunks encoded into one pack, with the recipe that registers the file.

use gitmodel_format::pack::encode_chunk;
use gitmodel_format::{ChunkId, Oid, PackBuilder, PackEntry, PackId, Recipe, RecipeChunk};

/// A file whose chunks are all in one pack, in order.
#[derive(Debug, Clone)]
pub struct PackedFile {
    /// The file: its chunks' contents, one after the other.
    pub data: Vec<u8>,
    /// The chunks' ids and raw lengths, in file order.
    pub chunks: Vec<RecipeChunk>,
    /// The pack's id and bytes, as uploaded with `PUT …/packs/<id>`.
    pub pack: PackId,
    pub pack_bytes: Vec<u8>,
    /// Where each chunk's record is in the pack, in file order.
    pub entries: Vec<PackEntry>,
}

impl PackedFile {
    /// Packs `chunks` (each chunk's raw contents, in file order), each stored raw or
    /// compressed as [`encode_chunk`] decides.
    pub fn of_chunks<C: AsRef<[u8]>>(chunks: impl IntoIterator<Item = C>) -> PackedFile {
        let mut builder = PackBuilder::new();
        let mut data = Vec::new();
        let mut recipe_chunks = Vec::new();
        for raw in chunks {
            let raw = raw.as_ref();
            let id = ChunkId::of(raw);
            let (codec, stored) = encode_chunk(raw);
            builder.push(id, raw.len() as u32, codec, &stored);
            recipe_chunks.push(RecipeChunk {
                id,
                raw_len: raw.len() as u32,
            });
            data.extend_from_slice(raw);
        }
        let (pack, pack_bytes, entries) = builder.finish();
        PackedFile {
            data,
            chunks: recipe_chunks,
            pack,
            pack_bytes,
            entries,
        }
    }

    /// Packs `data` cut into chunks of `chunk_len` bytes (the last one shorter).
    pub fn split(data: &[u8], chunk_len: usize) -> PackedFile {
        PackedFile::of_chunks(data.chunks(chunk_len))
    }

    /// The file's oid.
    pub fn oid(&self) -> Oid {
        Oid::of(&self.data)
    }

    /// The recipe that registers the file (chunker 1, no segments: the server locates
    /// the chunks).
    pub fn recipe(&self) -> Recipe {
        Recipe {
            chunker: 1,
            oid: self.oid(),
            size: self.data.len() as u64,
            chunks: self.chunks.clone(),
            segments: Vec::new(),
        }
    }

    /// The chunks' ids one after the other: the body of a `chunks/exists` query.
    pub fn chunk_ids(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.id.0).collect()
    }
}
