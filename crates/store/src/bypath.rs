//! Content by working-tree path. The store keeps, per path, SHA-256 states at chunk
//! boundaries of the version last cleaned or written there, so that the next version of
//! the same file (a fine-tune of its last layers) is hashed only from where it differs.
//! Callers name the path; the store does the bookkeeping.

use std::io::{Read, Write};

use gitmodel_format::{ChunkParams, Oid};

use crate::{Ingested, LocalStore, Result};

impl LocalStore {
    /// Stores `input` as the new content of the repository path `path` (chunked with
    /// [`ChunkParams::for_path`]), resuming the SHA-256 from the states kept for `path`
    /// and keeping the new ones. A failure to keep them costs only speed later.
    pub fn ingest_path<R: Read + Send>(&self, input: R, path: &str) -> Result<Ingested> {
        let ingested =
            self.ingest_resuming(input, ChunkParams::for_path(path), self.prefix_states(path))?;
        if ingested.pointer.size > 0 {
            if let Err(e) = self.keep_prefix_states(path, &ingested.states) {
                tracing::debug!("keeping hash states of {path}: {e}");
            }
        }
        Ok(ingested)
    }

    /// Writes the content of `oid` to `out` as the file at the repository path `path`
    /// (checked against `oid` as it goes), resuming the SHA-256 from the states kept for
    /// `path` and keeping the new ones. Returns the size written.
    pub fn write_file_for_path<W: Write + Send>(
        &self,
        oid: &Oid,
        out: W,
        path: &str,
    ) -> Result<u64> {
        let (size, states) = self.write_file_resuming(oid, out, self.prefix_states(path))?;
        if let Err(e) = self.keep_prefix_states(path, &states) {
            tracing::debug!("keeping hash states of {path}: {e}");
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u8) -> Vec<u8> {
        gitmodel_testkit::noise(seed.into(), n)
    }

    #[test]
    fn a_new_version_of_a_path_is_hashed_only_from_where_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let v1 = data(24 << 20, 7);
        let mut v2 = v1.clone();
        let tail = v2.len() - (1 << 20);
        v2[tail..].copy_from_slice(&data(1 << 20, 9));
        let a = store.ingest_path(&v1[..], "m.bin").unwrap();
        assert_eq!(a.hashed_bytes, v1.len() as u64);
        let b = store.ingest_path(&v2[..], "m.bin").unwrap();
        assert_eq!(b.pointer.oid, Oid::of(&v2));
        assert!(b.hashed_bytes < 4 << 20, "hashed {} bytes", b.hashed_bytes);
        // Another path knows nothing of it.
        let c = store.ingest_path(&v2[..], "other.bin").unwrap();
        assert_eq!(c.hashed_bytes, v2.len() as u64);
        // Writing v1 back at the path keeps its states: v2 is again hashed from the edit.
        let mut out = Vec::new();
        let n = store
            .write_file_for_path(&a.pointer.oid, &mut out, "m.bin")
            .unwrap();
        assert_eq!((n, out == v1), (v1.len() as u64, true));
        let d = store.ingest_path(&v2[..], "m.bin").unwrap();
        assert!(d.hashed_bytes < 4 << 20, "hashed {} bytes", d.hashed_bytes);
    }
}
