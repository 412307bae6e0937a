//! The clean path: a stream of file bytes in, chunks stored once, a recipe and pointer out.
//!
//! A reader thread pulls blocks from the input and feeds SHA-256 (the file oid) while the
//! calling thread cuts chunks and, on the rayon pool, hashes each chunk with BLAKE3 and
//! compresses the ones the store lacks. Memory stays at a few blocks whatever the file
//! size. Packs are written as they fill; the recipe last, so a recipe never names chunks
//! that are not on disk.

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc;

use gitmodel_format::id::OidHasher;
use gitmodel_format::pack::{encode_chunk, Codec};
use gitmodel_format::recipe::RecipeChunk;
use gitmodel_format::{ChunkId, ChunkParams, Chunker, PackBuilder, Pointer, Recipe};
use rayon::prelude::*;

use crate::{LocalStore, Result, StoreError};

/// Bytes read from the input per step.
const BLOCK: usize = 8 * 1024 * 1024;

/// What [`LocalStore::ingest`] did.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub pointer: Pointer,
    pub chunks: usize,
    /// Chunks the store did not have before.
    pub new_chunks: usize,
    /// Raw bytes of those new chunks.
    pub new_bytes: u64,
    /// Bytes they take in packs (after compression).
    pub stored_bytes: u64,
}

impl LocalStore {
    /// Stores the content read from `input` and returns its pointer. The empty input gives
    /// a pointer of size 0 and stores nothing.
    pub fn ingest<R: Read + Send>(&self, input: R) -> Result<Ingested> {
        self.ingest_with(input, ChunkParams::V1)
    }

    /// [`LocalStore::ingest`] with chosen chunking parameters (recorded in the recipe).
    pub fn ingest_with<R: Read + Send>(&self, input: R, params: ChunkParams) -> Result<Ingested> {
        let (tx, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(2);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || read_blocks(input, tx));
            let stored = self.chunk_and_store(params, rx);
            let (oid, size) = reader.join().expect("reader thread panicked");
            let (chunks, counts) = stored?;
            let recipe = Recipe {
                chunker: params.version,
                oid,
                size,
                chunks,
                segments: Vec::new(),
            };
            if size > 0 {
                recipe
                    .validate()
                    .map_err(|source| StoreError::Recipe { oid, source })?;
                self.put_recipe(&recipe)?;
            }
            Ok(Ingested {
                pointer: Pointer::new(oid, size),
                chunks: recipe.chunks.len(),
                new_chunks: counts.0,
                new_bytes: counts.1,
                stored_bytes: counts.2,
            })
        })
    }

    #[allow(clippy::type_complexity)]
    fn chunk_and_store(
        &self,
        params: ChunkParams,
        rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    ) -> Result<(Vec<RecipeChunk>, (usize, u64, u64))> {
        let mut chunker = Chunker::new(params);
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + params.max_size);
        let mut recipe = Vec::new();
        let mut pack = PackBuilder::new();
        let mut in_pack: HashSet<ChunkId> = HashSet::new();
        let (mut new_chunks, mut new_bytes, mut stored_bytes) = (0usize, 0u64, 0u64);
        let mut eof = false;
        while !eof {
            // Bytes at the front of `buf` were already scanned by the chunker.
            let scanned = buf.len();
            match rx.recv() {
                Ok(block) => buf.extend_from_slice(&block.map_err(StoreError::Input)?),
                Err(_) => eof = true,
            }
            let mut cuts = Vec::new();
            let mut pos = scanned;
            while pos < buf.len() {
                match chunker.next_boundary(&buf[pos..]) {
                    Some(n) => {
                        pos += n;
                        cuts.push(pos);
                    }
                    None => break,
                }
            }
            if eof && cuts.last().copied().unwrap_or(0) < buf.len() {
                cuts.push(buf.len());
            }
            let ranges: Vec<(usize, usize)> = cuts
                .iter()
                .scan(0, |start, &end| {
                    let r = (*start, end);
                    *start = end;
                    Some(r)
                })
                .collect();
            let encoded: Vec<(ChunkId, Option<(Codec, Vec<u8>)>)> = ranges
                .par_iter()
                .map(|&(a, b)| {
                    let data = &buf[a..b];
                    let id = ChunkId::of(data);
                    let enc = (!self.has_chunk(&id)).then(|| encode_chunk(data));
                    (id, enc)
                })
                .collect();
            for (&(a, b), (id, enc)) in ranges.iter().zip(encoded) {
                let raw_len = (b - a) as u32;
                recipe.push(RecipeChunk { id, raw_len });
                let Some((codec, stored)) = enc else { continue };
                if !in_pack.insert(id) {
                    continue;
                }
                if !pack.fits(stored.len()) {
                    self.write_pack(std::mem::replace(&mut pack, PackBuilder::new()))?;
                }
                pack.push(id, raw_len, codec, &stored);
                new_chunks += 1;
                new_bytes += raw_len as u64;
                stored_bytes += stored.len() as u64 + gitmodel_format::pack::RECORD_HEADER_LEN;
            }
            let consumed = cuts.last().copied().unwrap_or(0);
            buf.drain(..consumed);
        }
        if !pack.is_empty() {
            self.write_pack(pack)?;
        }
        Ok((recipe, (new_chunks, new_bytes, stored_bytes)))
    }
}

/// Reads `input` in blocks, hashing as it goes; returns the oid and size.
fn read_blocks<R: Read>(
    mut input: R,
    tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>,
) -> (gitmodel_format::Oid, u64) {
    let mut hasher = OidHasher::new();
    let mut size = 0u64;
    loop {
        let mut block = vec![0u8; BLOCK];
        let mut filled = 0;
        let result = loop {
            match input.read(&mut block[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == BLOCK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e));
            return (hasher.finish(), size);
        }
        block.truncate(filled);
        hasher.update(&block);
        size += filled as u64;
        let done = filled < BLOCK;
        if filled > 0 && tx.send(Ok(block)).is_err() {
            break;
        }
        if done {
            break;
        }
    }
    (hasher.finish(), size)
}
