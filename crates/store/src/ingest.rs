//! The clean path: a stream of file bytes in, chunks stored once, a recipe and pointer out.
//!
//! A reader thread pulls blocks from the input. The calling thread finds each block's cut
//! candidates and then hashes (BLAKE3) and compresses the new chunks, both as tasks on
//! the rayon pool, so that every core works whatever the mix; a writer thread writes full
//! packs, and a hashing thread takes the cut blocks for the file's SHA-256 (the oid).
//! That hash resumes from the state kept for the longest prefix the file shares with an
//! earlier version ([`gitmodel_format::prefix`]), so a model whose last layers changed
//! is hashed only from where it changed. Memory stays at a few blocks whatever the file
//! size, and the only bytes copied before compression are the unfinished chunk carried
//! from one block to the next. Packs are written as they fill; the recipe last, so a
//! recipe never names chunks that are not on disk.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{mpsc, Arc};

use gitmodel_format::id::OidHasher;
use gitmodel_format::pack::{encode_chunk, Codec};
use gitmodel_format::prefix::{Fingerprint, ResumingHasher, States};
use gitmodel_format::recipe::RecipeChunk;
use gitmodel_format::{
    cut_candidates, select_cuts, ChunkId, ChunkParams, PackBuilder, Pointer, Recipe,
};
use rayon::prelude::*;

use crate::{LocalStore, Result, StoreError};

/// Hash states are kept for files of at least this many strides of chunks (about 4 MiB
/// of a model): below that, hashing again costs less than keeping them.
pub const MIN_KEPT_STATES: usize = 4;

/// Bytes read from the input per step.
const BLOCK: usize = 8 * 1024 * 1024;

/// Bytes of a block scanned for cut candidates by one task.
const SCAN_PIECE: usize = 1024 * 1024;

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
    /// Bytes fed to SHA-256: the size, less a prefix whose hash state was known.
    pub hashed_bytes: u64,
    /// Hash states at chunk boundaries, to resume from when the next version is cleaned.
    pub states: Vec<(Fingerprint, OidHasher)>,
}

/// A cut block on its way to the hashing thread: the block, and its chunks' byte ranges
/// and ids, in order.
type CutBlock = (Shared, Vec<(std::ops::Range<usize>, ChunkId)>);

/// A block shared by the chunks cut from it until they are hashed.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl LocalStore {
    /// Stores the content read from `input` and returns its pointer. The empty input gives
    /// a pointer of size 0 and stores nothing.
    pub fn ingest<R: Read + Send>(&self, input: R) -> Result<Ingested> {
        self.ingest_with(input, ChunkParams::V1)
    }

    /// [`LocalStore::ingest`] with chosen chunking parameters (recorded in the recipe).
    pub fn ingest_with<R: Read + Send>(&self, input: R, params: ChunkParams) -> Result<Ingested> {
        self.ingest_resuming(input, params, States::new())
    }

    /// [`LocalStore::ingest_with`], resuming the file's SHA-256 from `known` states (kept
    /// from an earlier version, see [`Ingested::states`]) where its chunks allow.
    pub fn ingest_resuming<R: Read + Send>(
        &self,
        input: R,
        params: ChunkParams,
        known: States,
    ) -> Result<Ingested> {
        let (tx, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(2);
        let (pack_tx, pack_rx) = mpsc::sync_channel::<PackBuilder>(1);
        let (hash_tx, hash_rx) = mpsc::sync_channel::<CutBlock>(2);
        std::thread::scope(|scope| {
            let head = params.max_size;
            let reader = scope.spawn(move || read_blocks(input, tx, head));
            let hashing = scope.spawn(move || {
                let mut h = ResumingHasher::new(known);
                for (block, chunks) in hash_rx {
                    for (range, id) in chunks {
                        h.chunk(block.clone(), range, &id);
                    }
                }
                h.finish()
            });
            let writer = scope.spawn(move || -> Result<()> {
                for pack in pack_rx {
                    self.write_pack(pack)?;
                }
                Ok(())
            });
            let stored = self.chunk_and_store(params, rx, pack_tx, hash_tx);
            let written = writer.join().expect("pack writer thread panicked");
            reader.join().expect("reader thread panicked");
            let (oid, size, states, hashed_bytes) =
                hashing.join().expect("hashing thread panicked");
            // A failed pack write stops the cutting too: report the write's own error
            // (e.g. a full disk), not that the writer went away.
            written?;
            let (chunks, counts, tail) = stored?;
            // The file's last pack: shared with the next files when small.
            if !tail.is_empty() {
                if self.shares_small_files() && tail.finished_len() < crate::shared::SHARE_BELOW {
                    self.share(tail)?;
                } else {
                    self.write_pack(tail)?;
                }
            }
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
                hashed_bytes,
                states,
            })
        })
    }

    /// Cuts the blocks from `rx` into chunks, hashes them and compresses the new ones on
    /// the rayon pool, and hands full packs to `packs` (written by another thread, so
    /// cutting goes on while the kernel copies a pack); returns the last, unfinished one. Each block arrives with
    /// `params.max_size` free bytes at its front, where the unfinished chunk of the
    /// previous block is put: the only bytes ever copied before compression.
    #[allow(clippy::type_complexity)]
    fn chunk_and_store(
        &self,
        params: ChunkParams,
        rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
        packs: mpsc::SyncSender<PackBuilder>,
        hashing: mpsc::SyncSender<CutBlock>,
    ) -> Result<(Vec<RecipeChunk>, (usize, u64, u64), PackBuilder)> {
        let head = params.max_size;
        let mut carry: Vec<u8> = Vec::with_capacity(head);
        let mut recipe = Vec::new();
        let mut pack = PackBuilder::new();
        let mut in_pack: HashSet<ChunkId> = HashSet::new();
        let (mut new_chunks, mut new_bytes, mut stored_bytes) = (0usize, 0u64, 0u64);
        let send = |pack: PackBuilder| {
            packs
                .send(pack)
                .map_err(|_| StoreError::Input(std::io::Error::other("the pack writer stopped")))
        };
        loop {
            let (mut block, eof) = match rx.recv() {
                Ok(block) => (block.map_err(StoreError::Input)?, false),
                Err(_) => (std::mem::take(&mut carry), true),
            };
            let start = if eof {
                0
            } else {
                let start = head - carry.len();
                block[start..head].copy_from_slice(&carry);
                start
            };
            // `data` starts at a chunk boundary: its cut candidates are found in pieces
            // on every core, then turned into cuts in order.
            let data = &block[start..];
            let pieces: Vec<(usize, usize)> = (params.min_size..=data.len())
                .step_by(SCAN_PIECE)
                .map(|a| (a, (a + SCAN_PIECE - 1).min(data.len())))
                .collect();
            let candidates: Vec<Vec<usize>> = pieces
                .par_iter()
                .map(|&(a, b)| cut_candidates(params, &data[..b], a))
                .collect();
            let cuts = select_cuts(params, &candidates.concat(), data.len(), eof);
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
                    let chunk = &data[a..b];
                    let id = ChunkId::of(chunk);
                    let enc = (!self.has_chunk(&id)).then(|| encode_chunk(chunk));
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
                    send(std::mem::replace(&mut pack, PackBuilder::new()))?;
                }
                pack.push(id, raw_len, codec, &stored);
                new_chunks += 1;
                new_bytes += raw_len as u64;
                stored_bytes += stored.len() as u64 + gitmodel_format::pack::RECORD_HEADER_LEN;
            }
            let chunks: Vec<_> = ranges
                .iter()
                .zip(&recipe[recipe.len() - ranges.len()..])
                .map(|(&(a, b), c)| (start + a..start + b, c.id))
                .collect();
            if !eof {
                let consumed = cuts.last().copied().unwrap_or(0);
                carry.clear();
                carry.extend_from_slice(&data[consumed..]);
                debug_assert!(
                    carry.len() < head,
                    "an unfinished chunk is shorter than max_size"
                );
            }
            if !chunks.is_empty() {
                hashing
                    .send((Shared(Arc::new(block)), chunks))
                    .map_err(|_| {
                        StoreError::Input(std::io::Error::other("the hashing thread stopped"))
                    })?;
            }
            if eof {
                break;
            }
        }
        Ok((recipe, (new_chunks, new_bytes, stored_bytes), pack))
    }
}

/// Reads `input` in blocks of [`BLOCK`] bytes, each after `head` free bytes.
fn read_blocks<R: Read>(mut input: R, tx: mpsc::SyncSender<std::io::Result<Vec<u8>>>, head: usize) {
    loop {
        let mut block = Vec::with_capacity(head + BLOCK);
        block.resize(head, 0);
        if let Err(e) = input.by_ref().take(BLOCK as u64).read_to_end(&mut block) {
            let _ = tx.send(Err(e));
            break;
        }
        let filled = block.len() - head;
        if filled > 0 && tx.send(Ok(block)).is_err() {
            break;
        }
        if filled < BLOCK {
            break;
        }
    }
}

impl LocalStore {
    fn prefix_states_path(&self, key: &str) -> std::path::PathBuf {
        self.root
            .join("prefix-states")
            .join(ChunkId::of(key.as_bytes()).to_hex())
    }

    /// Hash states kept under `key` (a file's path) by [`LocalStore::keep_prefix_states`];
    /// none if there are none or they are damaged (they only save work).
    pub fn prefix_states(&self, key: &str) -> States {
        std::fs::read(self.prefix_states_path(key))
            .ok()
            .and_then(|bytes| gitmodel_format::prefix::decode_states(&bytes))
            .unwrap_or_default()
    }

    /// Keeps the hash states of the version of `key` just cleaned or written, replacing
    /// the earlier ones: the next version of that file starts from them. A cache, so not
    /// fsynced; files of fewer than [`MIN_KEPT_STATES`] states are not worth it.
    pub fn keep_prefix_states(&self, key: &str, states: &[(Fingerprint, OidHasher)]) -> Result<()> {
        if states.len() < MIN_KEPT_STATES {
            return Ok(());
        }
        let path = self.prefix_states_path(key);
        let dir = path.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir).map_err(crate::io_err(dir))?;
        crate::fsutil::write_atomic_unsynced(&path, &gitmodel_format::prefix::encode_states(states))
            .map_err(crate::io_err(&path))
    }
}
