//! The smudge path: rebuild a file from its recipe, verifying every chunk and the whole.
//!
//! Chunks are grouped into runs that are contiguous in one pack (one read each, at most
//! [`RUN_BYTES`]); a window of runs is decoded on the rayon pool while the previous window
//! is hashed and written, so decompression, SHA-256 and output overlap.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use gitmodel_format::id::OidHasher;
use gitmodel_format::pack;
use gitmodel_format::prefix::{Fingerprint, ResumingHasher, States};
use gitmodel_format::{Oid, PackId, Recipe};
use rayon::prelude::*;

use crate::{fsutil, io_err, ChunkLoc, LocalStore, Result, StoreError};

const RUN_BYTES: u64 = 4 * 1024 * 1024;
const WINDOW_RUNS: usize = 4;

/// Consecutive records of one pack.
struct Run {
    pack: PackId,
    offset: u64,
    length: u64,
    locs: Vec<ChunkLoc>,
}

impl LocalStore {
    /// Writes the content of `oid` to `out`; every chunk is checked against its id and the
    /// whole against the oid. On error, `out` may have received a prefix of verified
    /// chunks: callers that must not expose partial content write to a temp file
    /// ([`LocalStore::materialize`]).
    pub fn write_file<W: Write + Send>(&self, oid: &Oid, out: W) -> Result<u64> {
        Ok(self.write_file_resuming(oid, out, States::new())?.0)
    }

    /// [`LocalStore::write_file`], resuming the SHA-256 check from `known` states where
    /// the file's chunks match a prefix they were kept for (each chunk is still checked
    /// against its id, which pins the bytes the state covers), and returning the file's
    /// states (for [`LocalStore::keep_prefix_states`]).
    pub fn write_file_resuming<W: Write + Send>(
        &self,
        oid: &Oid,
        out: W,
        known: States,
    ) -> Result<(u64, Vec<(Fingerprint, OidHasher)>)> {
        let recipe = self
            .recipe(oid)?
            .ok_or(StoreError::MissingFile { oid: *oid })?;
        self.write_recipe_resuming(&recipe, out, known)
    }

    /// Rebuilds the content `recipe` describes from the store (which must hold its
    /// chunks) and checks it against the recipe's oid, writing nothing: how a recipe from
    /// a server is vetted before the store keeps it.
    pub fn verify_recipe(&self, recipe: &Recipe) -> Result<u64> {
        Ok(self
            .write_recipe_resuming(recipe, std::io::sink(), States::new())?
            .0)
    }

    /// [`LocalStore::write_file_resuming`] from a given recipe rather than the stored one.
    pub fn write_recipe_resuming<W: Write + Send>(
        &self,
        recipe: &Recipe,
        mut out: W,
        known: States,
    ) -> Result<(u64, Vec<(Fingerprint, OidHasher)>)> {
        let oid = &recipe.oid;
        let mut runs: Vec<Run> = Vec::new();
        for c in &recipe.chunks {
            let loc = self.locate(&c.id).ok_or(StoreError::MissingChunk {
                oid: *oid,
                chunk: c.id,
            })?;
            match runs.last_mut() {
                Some(r)
                    if r.pack == loc.pack
                        && r.offset + r.length == loc.entry.offset
                        && r.length < RUN_BYTES =>
                {
                    r.length += loc.entry.record_len();
                    r.locs.push(loc);
                }
                _ => runs.push(Run {
                    pack: loc.pack,
                    offset: loc.entry.offset,
                    length: loc.entry.record_len(),
                    locs: vec![loc],
                }),
            }
        }

        let mut hasher = ResumingHasher::<Vec<u8>>::new(known);
        let mut ids = recipe.chunks.iter();
        let mut write_window = |window: Vec<Vec<Vec<u8>>>| -> Result<()> {
            for chunk in window.into_iter().flatten() {
                out.write_all(&chunk).map_err(StoreError::Output)?;
                let c = ids.next().expect("one decoded chunk per recipe chunk");
                let len = chunk.len();
                hasher.chunk(chunk, 0..len, &c.id);
            }
            Ok(())
        };
        let mut windows = runs.chunks(WINDOW_RUNS);
        let mut pending: Option<Vec<Vec<Vec<u8>>>> = None;
        loop {
            let next = windows.next();
            let (decoded, written) = rayon::join(
                || {
                    next.map(|w| {
                        w.par_iter()
                            .map(|r| self.decode_run(oid, r))
                            .collect::<Vec<Result<Vec<Vec<u8>>>>>()
                    })
                },
                || pending.take().map(&mut write_window).transpose(),
            );
            written?;
            match decoded {
                Some(d) => pending = Some(d.into_iter().collect::<Result<Vec<_>>>()?),
                None => break,
            }
        }
        out.flush().map_err(StoreError::Output)?;
        let (actual, size, states, _) = hasher.finish();
        if actual != *oid || size != recipe.size {
            return Err(StoreError::HashMismatch {
                oid: *oid,
                actual,
                size,
            });
        }
        Ok((size, states))
    }

    fn decode_run(&self, oid: &Oid, run: &Run) -> Result<Vec<Vec<u8>>> {
        let path = self.pack_path(&run.pack);
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let mut buf = vec![0u8; run.length as usize];
        file.read_exact_at(&mut buf, run.offset)
            .map_err(io_err(&path))?;
        let pack_err = |source| StoreError::Pack {
            pack: run.pack,
            source,
        };
        let records = pack::parse_records(&buf).map_err(pack_err)?;
        if records.len() != run.locs.len() {
            return Err(StoreError::MissingChunk {
                oid: *oid,
                chunk: run.locs[0].entry.id,
            });
        }
        records
            .iter()
            .zip(&run.locs)
            .map(|(rec, loc)| {
                if rec.id != loc.entry.id {
                    return Err(StoreError::MissingChunk {
                        oid: *oid,
                        chunk: loc.entry.id,
                    });
                }
                rec.decode().map_err(pack_err)
            })
            .collect()
    }

    /// Writes the content of `oid` to `target` atomically: a verified temp file beside it
    /// is renamed over it, so `target` is never half-written.
    pub fn materialize(&self, oid: &Oid, target: &Path, executable: bool) -> Result<u64> {
        let tmp = fsutil::temp_beside(target).map_err(io_err(target))?;
        let size = self.write_file(
            oid,
            std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()),
        )?;
        self.place(tmp, target, executable)?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut v = crate::random_bytes(len, seed);
        // Make half of it compressible.
        for b in v.iter_mut().step_by(2) {
            *b &= 0x0f;
        }
        v
    }

    #[test]
    fn a_new_version_is_hashed_from_where_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        let v1 = data(24 << 20, 3);
        let a = store.ingest(&v1[..]).unwrap();
        assert_eq!(a.hashed_bytes, v1.len() as u64);
        store.keep_prefix_states("m.bin", &a.states).unwrap();

        // The last quarter changes: about three quarters are taken from the kept states.
        let mut v2 = v1.clone();
        let edit = 18 << 20;
        v2[edit..].iter_mut().for_each(|b| *b = b.wrapping_add(1));
        let known = store.prefix_states("m.bin");
        assert_eq!(known.len(), a.states.len());
        let b = store
            .ingest_resuming(&v2[..], gitmodel_format::ChunkParams::V1, known)
            .unwrap();
        assert_eq!(b.pointer.oid, Oid::of(&v2));
        assert_eq!(b.pointer.size, v2.len() as u64);
        let skipped = v2.len() as u64 - b.hashed_bytes;
        assert!(
            skipped <= edit as u64 && skipped > edit as u64 - (4 << 20),
            "skipped {skipped} of the {edit} unchanged bytes"
        );
        let mut out = Vec::new();
        store.write_file(&b.pointer.oid, &mut out).unwrap();
        assert!(out == v2);

        // Damaged states are ignored: the whole file is hashed, and the oid is right.
        let kept = fs::read_dir(dir.path().join("model/prefix-states"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&kept).unwrap();
        bytes[100] ^= 1;
        fs::write(&kept, bytes).unwrap();
        assert!(store.prefix_states("m.bin").is_empty());
        assert!(store.prefix_states("other.bin").is_empty());
        let c = store
            .ingest_resuming(
                &v2[..],
                gitmodel_format::ChunkParams::V1,
                store.prefix_states("m.bin"),
            )
            .unwrap();
        assert_eq!(
            (c.pointer.oid, c.hashed_bytes),
            (Oid::of(&v2), v2.len() as u64)
        );
    }

    #[test]
    fn rebuilding_resumes_from_kept_states_yet_checks_every_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        let v1 = data(12 << 20, 4);
        let a = store.ingest(&v1[..]).unwrap();
        let mut v2 = v1.clone();
        v2[11 << 20] ^= 1;
        let b = store.ingest(&v2[..]).unwrap();
        let known: gitmodel_format::prefix::States = a.states.iter().cloned().collect();
        let mut out = Vec::new();
        let (size, states) = store
            .write_file_resuming(&b.pointer.oid, &mut out, known.clone())
            .unwrap();
        assert!(out == v2);
        assert_eq!((size, states.len()), (v2.len() as u64, b.states.len()));

        // A damaged chunk in the shared prefix is caught by its id check.
        let (_, pack) = store.pack_files().unwrap().into_iter().next().unwrap();
        let mut bytes = fs::read(&pack).unwrap();
        bytes[5000] ^= 0x55;
        fs::write(&pack, bytes).unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        let err = store
            .write_file_resuming(&b.pointer.oid, Vec::new(), known)
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn ingest_then_rebuild_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        let v1 = data(20 << 20, 1);
        let a = store.ingest(&v1[..]).unwrap();
        assert_eq!(a.pointer.oid, Oid::of(&v1));
        assert_eq!(a.pointer.size, v1.len() as u64);
        assert!(a.stored_bytes < a.new_bytes, "compression helped");
        let mut out = Vec::new();
        store.write_file(&a.pointer.oid, &mut out).unwrap();
        assert!(out == v1);

        // One edited region: only a few chunks are new.
        let mut v2 = v1.clone();
        v2[10_000_000..10_000_100].fill(7);
        let b = store.ingest(&v2[..]).unwrap();
        assert!(b.new_chunks <= 2, "{} new chunks", b.new_chunks);

        // A reopened store sees the same chunks.
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        assert!(store.has_file(&b.pointer.oid));
        let target = dir.path().join("out.bin");
        store.materialize(&b.pointer.oid, &target, false).unwrap();
        assert!(fs::read(&target).unwrap() == v2);

        let empty = store.ingest(&b""[..]).unwrap();
        assert_eq!(empty.pointer.size, 0);
    }

    /// Hands out its bytes in awkward, varying pieces, as a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.step = (self.step * 7 + 13) % 70_001 + 1;
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn blocks_and_pieces_do_not_move_cut_points() {
        use gitmodel_format::ChunkParams;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        // Spans several 8 MiB read blocks, with a tail shorter than a chunk.
        let v = data((17 << 20) + 12_345, 3);
        for params in [ChunkParams::V1, ChunkParams::V2_TEXT] {
            let got = store
                .ingest_with(Trickle { data: &v, step: 1 }, params)
                .unwrap();
            assert_eq!(got.pointer.oid, Oid::of(&v));
            let recipe = store.recipe(&got.pointer.oid).unwrap().unwrap();
            let want: Vec<_> = gitmodel_format::chunk_ids(params, &v[..])
                .collect::<std::io::Result<_>>()
                .unwrap();
            assert_eq!(recipe.chunks, want, "chunker v{}", params.version);
            let mut out = Vec::new();
            store.write_file(&got.pointer.oid, &mut out).unwrap();
            assert!(out == v);
        }
    }

    #[test]
    fn corruption_is_detected_and_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("model")).unwrap();
        let v = data(3 << 20, 2);
        let oid = store.ingest(&v[..]).unwrap().pointer.oid;
        // Flip a byte inside the first pack's data.
        let (_, pack) = store.pack_files().unwrap().pop().unwrap();
        let mut bytes = fs::read(&pack).unwrap();
        bytes[1000] ^= 0x55;
        fs::write(&pack, bytes).unwrap();
        let target = dir.path().join("model.bin");
        fs::write(&target, b"pointer text").unwrap();
        let err = store.materialize(&oid, &target, false).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"pointer text");
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "temp file removed");
    }
}
