//! Writing files straight from chunks as a download delivers them.
//!
//! `git model pull` used to store the downloaded chunks and then rebuild each file from
//! the store, decompressing every chunk twice. An [`Assembly`] instead takes each chunk's
//! bytes the moment a download worker has decoded and checked them, and writes them at
//! every offset where the files being pulled use that chunk (positioned writes into temp
//! files beside the targets, from any thread). [`Assembly::finish`] fills what the
//! download did not bring (chunks the store already had) from the store, checks each
//! file's SHA-256, and only then renames it into place; a file that fails any check is
//! never exposed, and one whose assembly is abandoned leaves nothing behind.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use gitmodel_format::id::OidHasher;
use gitmodel_format::prefix::{Fingerprint, ResumingHasher, States};
use gitmodel_format::{ChunkId, Recipe};
use rayon::prelude::*;

use crate::{fsutil, io_err, LocalStore, Result, StoreError};

/// One file being assembled.
struct Part {
    recipe: Recipe,
    target: PathBuf,
    executable: bool,
    tmp: tempfile::NamedTempFile,
    /// Offset of each recipe chunk in the file.
    offsets: Vec<u64>,
    /// Which recipe chunks have been written.
    filled: Vec<AtomicBool>,
    /// SHA-256 of the written prefix: chunks are hashed as soon as all before them are
    /// written, so the hash keeps up with the download instead of following it.
    hashing: Mutex<Hashing>,
    /// The working-tree path whose hash states the store keeps once the file is written
    /// ([`Assembly::for_paths`]).
    key: Option<String>,
}

struct Hashing {
    /// The first recipe chunk not hashed yet.
    next: usize,
    /// Resumes from the states of an earlier version of the target's path where the
    /// chunks allow (each chunk was checked against its id by whoever decoded it).
    hasher: ResumingHasher<Vec<u8>>,
}

/// Files written from chunks in any order; see the module documentation.
pub struct Assembly {
    parts: Vec<Part>,
    /// Where each chunk goes: its first use (part, recipe chunk index) inline, since a
    /// chunk is rarely used twice and an 8 GiB file has 130,000 of them.
    uses: HashMap<ChunkId, (u32, u32)>,
    /// Every further use of a chunk.
    more_uses: HashMap<ChunkId, Vec<(u32, u32)>>,
}

/// What [`Assembly::finish`] did for one target.
pub struct Assembled {
    pub target: PathBuf,
    /// The size written, and the file's hash states (for [`LocalStore::keep_prefix_states`]).
    pub result: Result<(u64, Vec<(Fingerprint, OidHasher)>)>,
}

impl Assembly {
    /// Prepares `files` (each the recipe of the content, the path to write it to, whether
    /// it is executable, and hash states kept for that path): a temp file of the right
    /// size beside each target.
    pub fn new(files: Vec<(Recipe, PathBuf, bool, States)>) -> Result<Assembly> {
        let mut parts = Vec::with_capacity(files.len());
        let mut uses: HashMap<ChunkId, (u32, u32)> = HashMap::new();
        let mut more_uses: HashMap<ChunkId, Vec<(u32, u32)>> = HashMap::new();
        let mut swept = std::collections::HashSet::new();
        for (recipe, target, executable, known) in files {
            // A killed earlier pull may have left its temp files here.
            if let Some(dir) = target.parent().filter(|d| swept.insert(d.to_path_buf())) {
                fsutil::remove_stale_temps(dir);
            }
            let tmp = fsutil::temp_beside(&target).map_err(io_err(&target))?;
            tmp.as_file()
                .set_len(recipe.size)
                .map_err(io_err(&target))?;
            let mut offsets = Vec::with_capacity(recipe.chunks.len());
            let mut at = 0u64;
            for (k, c) in recipe.chunks.iter().enumerate() {
                offsets.push(at);
                at += c.raw_len as u64;
                let at = (parts.len() as u32, k as u32);
                if let Some(first) = uses.insert(c.id, at) {
                    // Keep the first use inline, the others aside.
                    uses.insert(c.id, first);
                    more_uses.entry(c.id).or_default().push(at);
                }
            }
            if at != recipe.size {
                return Err(StoreError::Recipe {
                    oid: recipe.oid,
                    source: gitmodel_format::RecipeError::Malformed(format!(
                        "chunks add up to {at} bytes, the file has {}",
                        recipe.size
                    )),
                });
            }
            let filled = recipe
                .chunks
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect();
            parts.push(Part {
                recipe,
                target,
                executable,
                tmp,
                offsets,
                filled,
                hashing: Mutex::new(Hashing {
                    next: 0,
                    hasher: ResumingHasher::new(known),
                }),
                key: None,
            });
        }
        Ok(Assembly {
            parts,
            uses,
            more_uses,
        })
    }

    /// [`Assembly::new`] for working-tree files: each is the recipe, the target, whether
    /// it is executable, and its path in the repository. The store resumes each file's
    /// hash from the states it kept for that path, and keeps the new ones once the file
    /// is written (so an edit of it is later cleaned from where it differs).
    pub fn for_paths(
        store: &LocalStore,
        files: Vec<(Recipe, PathBuf, bool, String)>,
    ) -> Result<Assembly> {
        let mut keys = Vec::with_capacity(files.len());
        let items = files
            .into_iter()
            .map(|(recipe, target, executable, key)| {
                let known = store.prefix_states(&key);
                keys.push(key);
                (recipe, target, executable, known)
            })
            .collect();
        let mut assembly = Assembly::new(items)?;
        for (part, key) in assembly.parts.iter_mut().zip(keys) {
            part.key = Some(key);
        }
        Ok(assembly)
    }

    /// Writes a chunk's bytes wherever the files use it. The caller has checked `data`
    /// against `id`; a chunk no file uses is ignored. Safe to call from many threads.
    pub fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        let first = self.uses.get(id).copied();
        let more = self
            .more_uses
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (p, k) in first.into_iter().chain(more.iter().copied()) {
            let (p, k) = (p as usize, k as usize);
            let part = &self.parts[p];
            if part.recipe.chunks[k].raw_len as usize != data.len() {
                continue; // cannot be this chunk; left for finish() to fill and check
            }
            part.tmp
                .as_file()
                .write_all_at(data, part.offsets[k])
                .map_err(io_err(&part.target))?;
            part.filled[k].store(true, Ordering::Release);
            advance(part, Some((k, data)))?;
        }
        Ok(())
    }

    /// Fills the chunks not yet written from `store`, checks every file against its oid
    /// and moves the good ones into place. One result per file, in the order given.
    pub fn finish(self, store: &LocalStore) -> Vec<Assembled> {
        self.parts
            .into_par_iter()
            .map(|part| {
                let target = part.target.clone();
                let result = finish_part(store, part);
                Assembled { target, result }
            })
            .collect()
    }
}

/// Hashes the chunks of `part` that are written and follow the hashed prefix, unless
/// another thread is at it (the rest is picked up by a later call or by `finish`).
/// `fresh` is a chunk just written, hashed from memory instead of read back.
fn advance(part: &Part, fresh: Option<(usize, &[u8])>) -> Result<()> {
    let Ok(mut h) = part.hashing.try_lock() else {
        return Ok(());
    };
    let mut buf = Vec::new();
    while h.next < part.filled.len() && part.filled[h.next].load(Ordering::Acquire) {
        let k = h.next;
        match fresh {
            Some((fk, data)) if fk == k => h.hash_chunk(part, k, data),
            _ => {
                read_chunk_at(part, k, &mut buf)?;
                h.hash_chunk(part, k, &buf);
            }
        }
    }
    Ok(())
}

impl Hashing {
    /// Hashes chunk `k` (the next one) of `part`.
    fn hash_chunk(&mut self, part: &Part, k: usize, data: &[u8]) {
        debug_assert_eq!(k, self.next);
        self.hasher.chunk_slice(data, &part.recipe.chunks[k].id);
        self.next += 1;
    }
}

/// Reads chunk `k` of `part` back from its temp file into `buf`.
fn read_chunk_at(part: &Part, k: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(part.recipe.chunks[k].raw_len as usize, 0);
    part.tmp
        .as_file()
        .read_exact_at(buf, part.offsets[k])
        .map_err(io_err(&part.target))
}

fn finish_part(store: &LocalStore, part: Part) -> Result<(u64, Vec<(Fingerprint, OidHasher)>)> {
    let oid = part.recipe.oid;
    let missing: Vec<usize> = (0..part.recipe.chunks.len())
        .filter(|&k| !part.filled[k].load(Ordering::Acquire))
        .collect();
    missing.par_iter().try_for_each(|&k| -> Result<()> {
        let c = &part.recipe.chunks[k];
        let data = store
            .read_chunk(&c.id)?
            .ok_or(StoreError::MissingChunk { oid, chunk: c.id })?;
        part.tmp
            .as_file()
            .write_all_at(&data, part.offsets[k])
            .map_err(io_err(&part.target))
    })?;
    // The rest of the file is read back and hashed: every byte renamed into place is
    // covered by the oid check.
    let mut h = std::mem::replace(
        &mut *part.hashing.lock().expect("no thread panicked"),
        Hashing {
            next: 0,
            hasher: ResumingHasher::new(States::new()),
        },
    );
    let mut buf = Vec::new();
    while h.next < part.recipe.chunks.len() {
        let k = h.next;
        read_chunk_at(&part, k, &mut buf)?;
        h.hash_chunk(&part, k, &buf);
    }
    let (actual, size, states, _) = h.hasher.finish();
    if actual != oid || size != part.recipe.size {
        return Err(StoreError::HashMismatch { oid, actual, size });
    }
    store.place(part.tmp, &part.target, part.executable)?;
    if let Some(key) = &part.key {
        if let Err(e) = store.keep_prefix_states(key, &states) {
            tracing::debug!("keeping hash states of {key}: {e}");
        }
    }
    Ok((size, states))
}

/// How far in the past [`LocalStore::place`] sets a written file's modification time.
pub const BACKDATE: std::time::Duration = std::time::Duration::from_secs(1);

impl LocalStore {
    /// Gives a finished temp file its mode (0644, or 0755 when `executable`) and a
    /// modification time [`BACKDATE`] in the past, and renames it over `target`.
    ///
    /// Why the time: the caller records the file's stat data in git's index right after.
    /// git takes an entry whose mtime falls in the same second as the index file's for
    /// *racily clean* and re-reads the file through the clean filter on the next command
    /// that writes the index (`git status`, `git pull`): half a second of copying per
    /// 510 MiB before the user sees anything. A second earlier, the entry is clean for
    /// git. Any later change to the file sets its mtime and ctime to the present, so git
    /// still notices every modification.
    pub(crate) fn place(
        &self,
        tmp: tempfile::NamedTempFile,
        target: &Path,
        executable: bool,
    ) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mode = if executable { 0o755 } else { 0o644 };
        let file = tmp.as_file();
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err(target))?;
        if let Some(then) = std::time::SystemTime::now().checked_sub(BACKDATE) {
            file.set_modified(then).map_err(io_err(target))?;
        }
        self.persist(tmp, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_bytes as data;

    fn chunks_of(recipe: &Recipe, content: &[u8]) -> Vec<(ChunkId, Vec<u8>)> {
        let mut at = 0;
        recipe
            .chunks
            .iter()
            .map(|c| {
                let bytes = content[at..at + c.raw_len as usize].to_vec();
                at += c.raw_len as usize;
                (c.id, bytes)
            })
            .collect()
    }

    fn temps(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(fsutil::TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn chunks_in_any_order_plus_the_store_make_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = LocalStore::open(dir.path().join("source")).unwrap();
        let local = LocalStore::open(dir.path().join("local")).unwrap();
        let content = data(6 << 20, 1);
        let recipe = source.ingest(&content[..]).unwrap().pointer.oid;
        let recipe = source.recipe(&recipe).unwrap().unwrap();
        let chunks = chunks_of(&recipe, &content);
        // The local store already has every third chunk; the rest "arrive" backwards.
        let have: Vec<_> = chunks
            .iter()
            .step_by(3)
            .map(|(id, _)| source.read_stored(id).unwrap().unwrap())
            .collect();
        local.import(have).unwrap();
        let out = dir.path().join("work");
        let (a, b) = (out.join("a.bin"), out.join("sub/b.bin"));
        let asm = Assembly::new(vec![
            (recipe.clone(), a.clone(), false, States::new()),
            (recipe.clone(), b.clone(), true, States::new()),
        ])
        .unwrap();
        for (k, (id, bytes)) in chunks.iter().enumerate().rev() {
            if k % 3 != 0 {
                asm.put(id, bytes).unwrap();
            }
        }
        asm.put(&ChunkId::of(b"unused"), b"unused").unwrap();
        let done = asm.finish(&local);
        assert_eq!(done.len(), 2);
        for d in done {
            let (size, states) = d.result.unwrap();
            assert_eq!(size, content.len() as u64);
            assert_eq!(
                states.len(),
                recipe.chunks.len() / gitmodel_format::prefix::STRIDE
            );
            assert!(std::fs::read(&d.target).unwrap() == content);
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&a), mode(&b)), (0o644, 0o755));
        assert!(temps(&out).is_empty() && temps(&out.join("sub")).is_empty());
    }

    #[test]
    fn wrong_bytes_never_reach_the_target_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        let content = data(3 << 20, 2);
        let oid = store.ingest(&content[..]).unwrap().pointer.oid;
        let recipe = store.recipe(&oid).unwrap().unwrap();
        let target = dir.path().join("m.bin");
        std::fs::write(&target, b"the pointer").unwrap();
        let asm =
            Assembly::new(vec![(recipe.clone(), target.clone(), false, States::new())]).unwrap();
        for (k, (id, mut bytes)) in chunks_of(&recipe, &content).into_iter().enumerate() {
            if k == 2 {
                bytes[0] ^= 1; // a sink fed bytes that are not this chunk's
            }
            asm.put(&id, &bytes).unwrap();
        }
        let done = asm.finish(&store);
        assert!(
            matches!(done[0].result, Err(StoreError::HashMismatch { .. })),
            "{:?}",
            done[0].result.as_ref().err()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"the pointer");
        assert!(temps(dir.path()).is_empty());

        // Abandoned half way (a failed download): nothing is left either.
        let asm =
            Assembly::new(vec![(recipe.clone(), target.clone(), false, States::new())]).unwrap();
        let (id, bytes) = &chunks_of(&recipe, &content)[0];
        asm.put(id, bytes).unwrap();
        assert_eq!(temps(dir.path()).len(), 1);
        drop(asm);
        assert!(temps(dir.path()).is_empty());
        assert_eq!(std::fs::read(&target).unwrap(), b"the pointer");
    }
}
