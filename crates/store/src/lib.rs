//! git-model's local chunk store: packs and recipes under `.git/model/`, written atomically,
//! every chunk verified against its id when read.
//!
//! Layout: `packs/<ab>/<pack id>.pack` (format in `gitmodel_format::pack`) and
//! `recipes/<ab>/<oid>.recipe` (unlocated recipes: the chunk list of a file). Where a chunk
//! lives is answered by an in-memory index built from the packs' footers when the store is
//! opened, so packs are the only truth and nothing else needs to stay consistent with them.
//! A chunk is stored once across all files and versions.
//!
//! [`LocalStore::ingest`] is the clean path (chunk, hash, compress, pack), streaming with
//! bounded memory; [`LocalStore::write_file`] and [`LocalStore::materialize`] the smudge path,
//! verifying every chunk and the file's SHA-256. Network transfer is not here.
#![forbid(unsafe_code)]

mod assemble;
mod bypath;
mod ingest;
mod maintain;
mod read;
mod shared;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use gitmodel_format::pack::{self, PackEntry, PackError, TRAILER_LEN};
use gitmodel_format::recipe::RecipeError;
use gitmodel_format::{ChunkId, Oid, PackBuilder, PackId, Recipe};
use rayon::prelude::*;

pub use assemble::{Assembled, Assembly};
/// Durable file writes ([`gitmodel_fsutil`]), which the store is built on.
pub use gitmodel_fsutil as fsutil;
pub use ingest::Ingested;
pub use maintain::PrunePlan;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("pack {pack}: {source}")]
    Pack { pack: PackId, source: PackError },
    #[error("recipe of {oid}: {source}")]
    Recipe { oid: Oid, source: RecipeError },
    #[error("object {oid} is not in the local store")]
    MissingFile { oid: Oid },
    #[error("object {oid}: chunk {chunk} is not in the local store")]
    MissingChunk { oid: Oid, chunk: ChunkId },
    #[error("object {oid}: rebuilt content hashes to {actual} ({size} bytes)")]
    HashMismatch { oid: Oid, actual: Oid, size: u64 },
    #[error("reading input: {0}")]
    Input(io::Error),
    #[error("writing output: {0}")]
    Output(io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Reproducible random bytes for tests.
#[cfg(test)]
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a chunk is stored locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack: PackId,
    pub entry: PackEntry,
}

/// A chunk as stored (possibly compressed), verified against its id.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub entry: PackEntry,
    pub stored: Vec<u8>,
}

/// Figures about the local store.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub packs: u64,
    pub pack_bytes: u64,
    pub chunks: u64,
    pub raw_bytes: u64,
}

/// When writes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every file is fsynced (and its directory) before it is renamed into place.
    #[default]
    Immediate,
    /// Files are renamed into place at once (still atomic) and fsynced together by
    /// [`LocalStore::sync`] — at the latest when the store is dropped. One sync for a whole
    /// `git add` of thousands of small files instead of four per file, as git's own
    /// `core.fsyncMethod=batch` does.
    Batch,
}

pub struct LocalStore {
    root: PathBuf,
    index: RwLock<HashMap<ChunkId, ChunkLoc>>,
    durability: Durability,
    /// Files written but not yet fsynced (batch durability).
    unsynced: std::sync::Mutex<Vec<PathBuf>>,
    /// Batch durability: a thread that flushes large files' data as soon as they are
    /// written, so that the disk works while the CPU goes on and the final sync finds
    /// little left to write.
    flusher: std::sync::Mutex<Option<Flusher>>,
    /// The pack small files share until it is full or flushed ([`shared`]).
    open_pack: std::sync::Mutex<Option<shared::OpenPack>>,
    /// The chunks in it (readable once it is flushed).
    open_ids: RwLock<std::collections::HashSet<ChunkId>>,
    /// Journals of shared packs written but not yet synced.
    done_journals: std::sync::Mutex<Vec<PathBuf>>,
    /// Whether small files share packs ([`LocalStore::share_small_files`]).
    share_small: std::sync::atomic::AtomicBool,
}

struct Flusher {
    paths: std::sync::mpsc::Sender<PathBuf>,
    thread: std::thread::JoinHandle<()>,
}

/// Files at least this large are flushed early under batch durability.
const EARLY_FLUSH_BYTES: usize = 1 << 20;

impl Drop for LocalStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush_shared() {
            tracing::error!("writing the shared pack of {}: {e}", self.root.display());
        }
        if let Err(e) = self.sync() {
            tracing::error!("syncing the local store {}: {e}", self.root.display());
        }
    }
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root`, typically `<git common dir>/model`.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore> {
        Self::open_with(root, Durability::Immediate)
    }

    /// Opens the store with a chosen [`Durability`].
    pub fn open_with(root: impl Into<PathBuf>, durability: Durability) -> Result<LocalStore> {
        let root = root.into();
        for dir in ["packs", "recipes"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let store = LocalStore {
            root,
            index: RwLock::new(HashMap::new()),
            durability,
            unsynced: std::sync::Mutex::new(Vec::new()),
            flusher: std::sync::Mutex::new(None),
            open_pack: std::sync::Mutex::new(None),
            open_ids: RwLock::new(Default::default()),
            done_journals: std::sync::Mutex::new(Vec::new()),
            share_small: std::sync::atomic::AtomicBool::new(false),
        };
        store.load_index()?;
        store.recover_journals()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes every write so far durable (a no-op with immediate durability).
    pub fn sync(&self) -> Result<()> {
        if let Some(f) = self.flusher.lock().unwrap().take() {
            drop(f.paths);
            // Its fsyncs are only a head start: errors surface in the sync below.
            let _ = f.thread.join();
        }
        let paths = std::mem::take(&mut *self.unsynced.lock().unwrap());
        if !paths.is_empty() {
            fsutil::sync_paths(&paths).map_err(|source| StoreError::Io {
                path: self.root.clone(),
                source,
            })?;
        }
        self.drop_done_journals();
        Ok(())
    }

    /// Writes `data` to `path` atomically, durable now or at the next sync.
    fn write(&self, path: &Path, data: &[u8], once: bool) -> Result<()> {
        if once && path.exists() {
            return Ok(());
        }
        match self.durability {
            Durability::Immediate => fsutil::write_atomic(path, data).map_err(io_err(path)),
            Durability::Batch => {
                fsutil::write_atomic_unsynced(path, data).map_err(io_err(path))?;
                self.unsynced.lock().unwrap().push(path.to_path_buf());
                if data.len() >= EARLY_FLUSH_BYTES {
                    self.flush_early(path);
                }
                Ok(())
            }
        }
    }

    /// Starts writing `path`'s data to disk in the background (batch durability).
    fn flush_early(&self, path: &Path) {
        let mut flusher = self.flusher.lock().unwrap();
        let f = flusher.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
            let thread = std::thread::spawn(move || {
                for p in rx {
                    if let Ok(file) = fs::File::open(&p) {
                        let _ = file.sync_data();
                    }
                }
            });
            Flusher { paths: tx, thread }
        });
        let _ = f.paths.send(path.to_path_buf());
    }

    /// Moves a finished temp file into place, durable now or at the next sync.
    fn persist(&self, tmp: tempfile::NamedTempFile, target: &Path) -> Result<()> {
        match self.durability {
            Durability::Immediate => fsutil::persist(tmp, target).map_err(io_err(target)),
            Durability::Batch => {
                fsutil::persist_unsynced(tmp, target).map_err(io_err(target))?;
                self.unsynced.lock().unwrap().push(target.to_path_buf());
                Ok(())
            }
        }
    }

    fn pack_path(&self, id: &PackId) -> PathBuf {
        fsutil::fanout(&self.root.join("packs"), &id.to_hex(), ".pack")
    }

    fn recipe_path(&self, oid: &Oid) -> PathBuf {
        fsutil::fanout(&self.root.join("recipes"), &oid.to_hex(), ".recipe")
    }

    /// Every pack file in the store with its id.
    fn pack_files(&self) -> Result<Vec<(PackId, PathBuf)>> {
        self.flush_shared()?;
        let packs = self.root.join("packs");
        let mut out = Vec::new();
        for fan in fs::read_dir(&packs).map_err(io_err(&packs))? {
            let fan = fan.map_err(io_err(&packs))?.path();
            if !fan.is_dir() {
                continue;
            }
            for f in fs::read_dir(&fan).map_err(io_err(&fan))? {
                let path = f.map_err(io_err(&fan))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(id) = name
                    .strip_suffix(".pack")
                    .and_then(|h| PackId::from_hex(h).ok())
                {
                    out.push((id, path));
                }
            }
        }
        Ok(out)
    }

    fn load_index(&self) -> Result<()> {
        let files = self.pack_files()?;
        let loaded: Vec<(PackId, Vec<PackEntry>)> = files
            .par_iter()
            .filter_map(|(id, path)| match read_pack_index(path) {
                Ok(entries) => Some((*id, entries)),
                Err(e) => {
                    tracing::warn!("skipping unreadable pack {}: {e}", path.display());
                    None
                }
            })
            .collect();
        let mut index = self.index.write().unwrap();
        for (pack, entries) in loaded {
            for entry in entries {
                index.insert(entry.id, ChunkLoc { pack, entry });
            }
        }
        Ok(())
    }

    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        let indexed = self.index.read().unwrap().contains_key(id);
        indexed || self.in_shared(id)
    }

    pub fn locate(&self, id: &ChunkId) -> Option<ChunkLoc> {
        if let Some(loc) = self.index.read().unwrap().get(id).copied() {
            return Some(loc);
        }
        // Waiting in the shared pack: write it, so that the chunk can be read.
        if self.in_shared(id) {
            if let Err(e) = self.flush_shared() {
                tracing::warn!("writing the shared pack: {e}");
            }
            return self.index.read().unwrap().get(id).copied();
        }
        None
    }

    /// The recipe of a file, if the store has one (its chunks may still be missing).
    pub fn recipe(&self, oid: &Oid) -> Result<Option<Recipe>> {
        let path = self.recipe_path(oid);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let recipe =
            Recipe::decode(&bytes).map_err(|source| StoreError::Recipe { oid: *oid, source })?;
        if recipe.oid != *oid {
            return Err(StoreError::Recipe {
                oid: *oid,
                source: RecipeError::Malformed(format!("file holds the recipe of {}", recipe.oid)),
            });
        }
        Ok(Some(recipe))
    }

    /// Whether the whole content of `oid` is here: its recipe and every chunk.
    pub fn has_file(&self, oid: &Oid) -> bool {
        match self.recipe(oid) {
            Ok(Some(r)) => r.chunks.iter().all(|c| self.has_chunk(&c.id)),
            _ => false,
        }
    }

    /// Stores the chunk list of a file (located or not; stored unlocated).
    pub fn put_recipe(&self, recipe: &Recipe) -> Result<()> {
        let path = self.recipe_path(&recipe.oid);
        self.write(&path, &recipe.unlocated().encode(), false)
    }

    /// Drops the recipe of `oid`: for one that proved wrong (its chunks are each checked
    /// against their ids, so a rebuilt file that hashes to something else means the
    /// chunk list is wrong, e.g. kept from a server by an older git-model). The file is
    /// then fetched again, with a recipe that is checked before it is kept.
    pub fn forget_recipe(&self, oid: &Oid) -> Result<()> {
        let path = self.recipe_path(oid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes a finished pack and indexes its chunks.
    fn write_pack(&self, builder: PackBuilder) -> Result<PackId> {
        let (id, bytes, entries) = builder.finish();
        let path = self.pack_path(&id);
        self.write(&path, &bytes, true)?;
        let mut index = self.index.write().unwrap();
        for entry in entries {
            index
                .entry(entry.id)
                .or_insert(ChunkLoc { pack: id, entry });
        }
        Ok(id)
    }

    /// Adds chunks that arrived from elsewhere (already verified by the caller) in new
    /// packs. Chunks the store already has are skipped.
    pub fn import(&self, chunks: impl IntoIterator<Item = StoredChunk>) -> Result<usize> {
        let mut builder = PackBuilder::new();
        let mut added = 0;
        let mut seen = std::collections::HashSet::new();
        for c in chunks {
            if self.has_chunk(&c.entry.id) || !seen.insert(c.entry.id) {
                continue;
            }
            if !builder.fits(c.stored.len()) {
                self.write_pack(std::mem::replace(&mut builder, PackBuilder::new()))?;
            }
            builder.push(c.entry.id, c.entry.raw_len, c.entry.codec, &c.stored);
            added += 1;
        }
        if !builder.is_empty() {
            self.write_pack(builder)?;
        }
        Ok(added)
    }

    /// Reads one chunk as stored, verifying that it decodes to its id.
    pub fn read_stored(&self, id: &ChunkId) -> Result<Option<StoredChunk>> {
        Ok(self.read_record(id)?.map(|(stored, _)| stored))
    }

    /// The content of chunk `id`, checked against it; `None` if the store lacks it.
    pub fn read_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        Ok(self.read_record(id)?.map(|(_, raw)| raw))
    }

    /// Reads chunk `id`'s record and decodes it (checking it against the id): its index
    /// entry, stored bytes and content.
    fn read_record(&self, id: &ChunkId) -> Result<Option<(StoredChunk, Vec<u8>)>> {
        let Some(loc) = self.locate(id) else {
            return Ok(None);
        };
        let path = self.pack_path(&loc.pack);
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let mut buf = vec![0u8; loc.entry.record_len() as usize];
        file.read_exact_at(&mut buf, loc.entry.offset)
            .map_err(io_err(&path))?;
        let records = pack::parse_records(&buf).map_err(|source| StoreError::Pack {
            pack: loc.pack,
            source,
        })?;
        let rec = &records[0];
        if rec.id != *id {
            return Err(StoreError::Pack {
                pack: loc.pack,
                source: PackError::Malformed {
                    what: format!("record at {} is {}, not {id}", loc.entry.offset, rec.id),
                },
            });
        }
        let raw = rec.decode().map_err(|source| StoreError::Pack {
            pack: loc.pack,
            source,
        })?;
        let stored = StoredChunk {
            entry: loc.entry,
            stored: rec.stored.to_vec(),
        };
        Ok(Some((stored, raw)))
    }

    /// How many indexed chunks each pack holds (a chunk stored twice counts once, in
    /// the pack the index points to).
    pub fn pack_chunk_counts(&self) -> HashMap<PackId, usize> {
        if let Err(e) = self.flush_shared() {
            tracing::warn!("writing the shared pack: {e}");
        }
        let mut counts = HashMap::new();
        for loc in self.index.read().unwrap().values() {
            *counts.entry(loc.pack).or_insert(0) += 1;
        }
        counts
    }

    /// Reads a whole pack file, verified against its id (the BLAKE3 of its bytes), so
    /// that every record in it is as this store wrote it.
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>> {
        let path = self.pack_path(id);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let actual = PackId::of(&bytes);
        if actual != *id {
            return Err(StoreError::Pack {
                pack: *id,
                source: PackError::IdMismatch {
                    claimed: *id,
                    actual,
                },
            });
        }
        Ok(bytes)
    }

    pub fn stats(&self) -> Result<StoreStats> {
        self.flush_shared()?;
        let mut s = StoreStats::default();
        for (_, path) in self.pack_files()? {
            s.packs += 1;
            s.pack_bytes += fs::metadata(&path).map_err(io_err(&path))?.len();
        }
        let index = self.index.read().unwrap();
        s.chunks = index.len() as u64;
        s.raw_bytes = index.values().map(|l| l.entry.raw_len as u64).sum();
        Ok(s)
    }
}

/// Reads a pack file's footer index.
fn read_pack_index(path: &Path) -> std::result::Result<Vec<PackEntry>, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < TRAILER_LEN {
        return Err("too short".into());
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN)
        .map_err(|e| e.to_string())?;
    let (index_offset, _) = pack::parse_trailer(&trailer, len).map_err(|e| e.to_string())?;
    let mut index = vec![0u8; (len - TRAILER_LEN - index_offset) as usize];
    file.read_exact_at(&mut index, index_offset)
        .map_err(|e| e.to_string())?;
    pack::parse_index(&index, index_offset).map_err(|e| e.to_string())
}
