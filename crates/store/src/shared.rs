//! Small files share packs.
//!
//! A `git add` of thousands of small files used to write one pack per file: thousands of
//! files to create, and later thousands of packs to upload, index and fetch from. Instead,
//! the last (partial) pack of each file, when small, joins a pack shared by every file the
//! store ingests until that pack is full or the store is flushed (at the end of the
//! command, or before anything reads those chunks back).
//!
//! A recipe must never name chunks that are not on disk, yet the shared pack is written
//! only when it is finished. So its records also go, as they arrive and before the
//! file's recipe, to a journal (`journal/<pid>-<n>.records`): the records exactly as they
//! sit in a pack. If the process dies before the pack is written, the next process to
//! open the store turns the journal into the pack (its whole records; a torn last one is
//! dropped, and no recipe names it, since the recipe is written after the append returns).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use gitmodel_format::pack::{self, PackBuilder};
use gitmodel_format::ChunkId;

use crate::{io_err, Durability, LocalStore, Result};

/// A file's last pack is shared when it is smaller than this.
pub(crate) const SHARE_BELOW: u64 = 4 * 1024 * 1024;

const JOURNAL_SUFFIX: &str = ".records";

/// The pack being filled by small files, and its journal.
pub(crate) struct OpenPack {
    builder: PackBuilder,
    journal: fs::File,
    path: PathBuf,
}

static JOURNALS: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// Adds the records of `tail` (the last, small pack of a file being ingested) to the
    /// shared pack; they are in the journal when this returns.
    pub(crate) fn share(&self, tail: PackBuilder) -> Result<()> {
        let mut open = self.open_pack.lock().unwrap();
        let mut ids = self.open_ids.write().unwrap();
        let mut first_new = None;
        for (entry, stored) in tail.records() {
            if ids.contains(&entry.id) || self.index.read().unwrap().contains_key(&entry.id) {
                continue;
            }
            if let Some(o) = open.as_mut() {
                if !o.builder.fits(stored.len()) {
                    let o = open.take().expect("open");
                    Self::append(&o, first_new.take(), self.durability)?;
                    self.finish_open(o)?;
                    ids.clear();
                }
            }
            if open.is_none() {
                *open = Some(self.start_open()?);
            }
            let o = open.as_mut().expect("open");
            first_new.get_or_insert(o.builder.entries().len());
            o.builder.push(entry.id, entry.raw_len, entry.codec, stored);
            ids.insert(entry.id);
        }
        if let Some(o) = open.as_ref() {
            Self::append(o, first_new, self.durability)?;
        }
        Ok(())
    }

    /// Appends the records from the `first`th on to the journal.
    fn append(o: &OpenPack, first: Option<usize>, durability: Durability) -> Result<()> {
        let Some(first) = first else {
            return Ok(());
        };
        let mut journal = &o.journal;
        journal
            .write_all(o.builder.records_from(first))
            .map_err(io_err(&o.path))?;
        if durability == Durability::Immediate {
            journal.sync_data().map_err(io_err(&o.path))?;
        }
        Ok(())
    }

    fn start_open(&self) -> Result<OpenPack> {
        let dir = self.journal_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!(
            "{}-{}{JOURNAL_SUFFIX}",
            std::process::id(),
            JOURNALS.fetch_add(1, Ordering::Relaxed)
        ));
        let journal = fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(OpenPack {
            builder: PackBuilder::new(),
            journal,
            path,
        })
    }

    /// Writes the shared pack and drops its journal.
    fn finish_open(&self, o: OpenPack) -> Result<()> {
        if !o.builder.is_empty() {
            self.write_pack(o.builder)?;
        }
        drop(o.journal);
        // Under batch durability the pack becomes durable at the store's next sync; until
        // then the journal is the copy a crash leaves, so it is removed after that sync.
        match self.durability {
            Durability::Immediate => {
                fs::remove_file(&o.path).map_err(io_err(&o.path))?;
            }
            Durability::Batch => self.done_journals.lock().unwrap().push(o.path),
        }
        Ok(())
    }

    /// Lets the files this store ingests from now on share packs (see the module
    /// documentation): for a process that adds many files and then ends, like git's
    /// filter process. Chunks in the shared pack are read only through this store
    /// instance (which writes the pack first) until it is flushed or dropped.
    pub fn share_small_files(&self, on: bool) {
        self.share_small.store(on, Ordering::Relaxed);
    }

    /// Whether [`LocalStore::share_small_files`] is on.
    pub(crate) fn shares_small_files(&self) -> bool {
        self.share_small.load(Ordering::Relaxed)
    }

    /// Writes the shared pack, if any, so that its chunks can be read.
    pub fn flush_shared(&self) -> Result<()> {
        let mut open = self.open_pack.lock().unwrap();
        let mut ids = self.open_ids.write().unwrap();
        if let Some(o) = open.take() {
            self.finish_open(o)?;
        }
        ids.clear();
        Ok(())
    }

    /// Whether chunk `id` waits in the shared pack.
    pub(crate) fn in_shared(&self, id: &ChunkId) -> bool {
        self.open_ids.read().unwrap().contains(id)
    }

    /// Removes the journals of packs that were written and synced.
    pub(crate) fn drop_done_journals(&self) {
        for path in std::mem::take(&mut *self.done_journals.lock().unwrap()) {
            let _ = fs::remove_file(path);
        }
    }

    /// Turns the journals of processes that died before writing their shared pack into
    /// packs. Journals of running processes (this one included) are left alone.
    pub(crate) fn recover_journals(&self) -> Result<usize> {
        let dir = self.journal_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut recovered = 0;
        for e in entries.flatten() {
            let path = e.path();
            let Some(pid) = journal_pid(&path) else {
                continue;
            };
            if Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let whole = pack::complete_records_len(&bytes);
            let records = pack::parse_records(&bytes[..whole]).unwrap_or_default();
            let mut builder = PackBuilder::new();
            for rec in records {
                // Written by this program, but read back after a crash: check each.
                if self.has_chunk(&rec.id) || rec.decode().is_err() {
                    continue;
                }
                if !builder.fits(rec.stored.len()) {
                    self.write_pack(std::mem::replace(&mut builder, PackBuilder::new()))?;
                }
                builder.push(rec.id, rec.raw_len, rec.codec, rec.stored);
            }
            if !builder.is_empty() {
                self.write_pack(builder)?;
            }
            self.sync()?;
            fs::remove_file(&path).map_err(io_err(&path))?;
            recovered += 1;
        }
        Ok(recovered)
    }
}

fn journal_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?.strip_suffix(JOURNAL_SUFFIX)?;
    name.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitmodel_format::Oid;

    fn files(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| crate::random_bytes(20_000 + i * 3_000, 9 + i as u64))
            .collect()
    }

    /// A batch-durability store at `root` with shared packs, and the oids of `contents`
    /// ingested into it.
    fn shared_store(root: &Path, contents: &[Vec<u8>]) -> (LocalStore, Vec<Oid>) {
        let store = LocalStore::open_with(root, Durability::Batch).unwrap();
        store.share_small_files(true);
        let oids = contents
            .iter()
            .map(|c| store.ingest(&c[..]).unwrap().pointer.oid)
            .collect();
        (store, oids)
    }

    fn pack_count(root: &Path) -> usize {
        walk(&root.join("packs"))
    }

    fn walk(dir: &Path) -> usize {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn small_files_share_packs_and_read_back_before_and_after_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("model");
        let contents = files(40);
        let (store, oids) = shared_store(&root, &contents);
        assert_eq!(pack_count(&root), 0, "nothing written before the flush");
        // Read through the same store: the shared pack is written first.
        let mut out = Vec::new();
        store.write_file(&oids[7], &mut out).unwrap();
        assert!(out == contents[7]);
        assert_eq!(pack_count(&root), 1);
        // More files, then the store goes away: one more pack, no journal left.
        let more = files(45);
        let more_oids: Vec<Oid> = more[40..]
            .iter()
            .map(|c| store.ingest(&c[..]).unwrap().pointer.oid)
            .collect();
        drop(store);
        assert_eq!(pack_count(&root), 2);
        assert_eq!(walk(&root.join("journal")), 0);
        let store = LocalStore::open(&root).unwrap();
        for (oid, c) in oids
            .iter()
            .zip(&contents)
            .chain(more_oids.iter().zip(&more[40..]))
        {
            let mut out = Vec::new();
            store.write_file(oid, &mut out).unwrap();
            assert!(out == *c);
        }
    }

    #[test]
    fn a_crashed_process_journal_becomes_a_pack() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("model");
        let contents = files(30);
        let (store, oids) = shared_store(&root, &contents);
        // The process "dies": nothing flushed, the journal stays, under a dead pid, and
        // ends with a record cut short.
        std::mem::forget(store);
        let journals: Vec<PathBuf> = fs::read_dir(root.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(journals.len(), 1);
        let dead = root
            .join("journal")
            .join(format!("4000000000-0{JOURNAL_SUFFIX}"));
        let mut bytes = fs::read(&journals[0]).unwrap();
        bytes.extend_from_within(..100);
        fs::write(&dead, bytes).unwrap();
        fs::remove_file(&journals[0]).unwrap();
        assert_eq!(pack_count(&root), 0);

        let store = LocalStore::open(&root).unwrap();
        assert_eq!(pack_count(&root), 1);
        assert!(!dead.exists());
        for (oid, c) in oids.iter().zip(&contents) {
            assert!(store.has_file(oid));
            let mut out = Vec::new();
            store.write_file(oid, &mut out).unwrap();
            assert!(out == *c);
        }
    }

    #[test]
    fn a_running_process_journal_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("model");
        let (writer, oids) = shared_store(&root, &files(1));
        let oid = oids[0];
        // Another store instance of this (running) process does not take the journal.
        let other = LocalStore::open(&root).unwrap();
        assert!(!other.has_file(&oid));
        assert_eq!(walk(&root.join("journal")), 1);
        drop(writer);
        let other = LocalStore::open(&root).unwrap();
        assert!(other.has_file(&oid));
    }
}
