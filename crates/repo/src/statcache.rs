//! Files `git model pull` just wrote, or the filter just smudged for a checkout, with their
//! stat data, so the clean filter that git runs later (to refresh the index, or on a
//! "racily clean" file before the next checkout) can answer their pointer without hashing
//! the content again. An entry counts only while size, mtime, ctime and inode all still match
//! (ctime cannot be set from user space, so a later edit always misses).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use gitmodel_format::Pointer;

const FILE: &str = "stat-cache";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

fn stat(path: &Path) -> Option<Stat> {
    let m = fs::metadata(path).ok()?;
    Some(Stat {
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        ino: m.ino(),
    })
}

#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<String, (Stat, Pointer)>,
}

impl StatCache {
    /// Loads the cache of the store at `store_dir`; an unreadable cache is an empty one.
    pub fn load(store_dir: &Path) -> StatCache {
        let mut entries = HashMap::new();
        let text = fs::read_to_string(store_dir.join(FILE)).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [size, mtime, ctime, ino, oid, path] = f[..] else {
                continue;
            };
            let (Ok(size), Ok(mtime_ns), Ok(ctime_ns), Ok(ino), Ok(oid)) = (
                size.parse(),
                mtime.parse(),
                ctime.parse(),
                ino.parse(),
                gitmodel_format::Oid::from_hex(oid),
            ) else {
                continue;
            };
            let st = Stat {
                size,
                mtime_ns,
                ctime_ns,
                ino,
            };
            entries.insert(path.to_string(), (st, Pointer::new(oid, size)));
        }
        StatCache { entries }
    }

    /// Records files just written (paths relative to `workdir`) and saves the cache,
    /// keeping the earlier entries that still match their files. A file whose size is
    /// not its pointer's (left as a pointer, or already changed) is not recorded.
    pub fn save(
        store_dir: &Path,
        workdir: &Path,
        files: &[(String, Pointer)],
    ) -> std::io::Result<()> {
        let mut cache = StatCache::load(store_dir);
        cache
            .entries
            .retain(|path, (st, _)| stat(&workdir.join(path)).as_ref() == Some(st));
        for (path, p) in files {
            if path.contains(['\t', '\n']) {
                continue;
            }
            match stat(&workdir.join(path)) {
                Some(st) if st.size == p.size => {
                    cache.entries.insert(path.clone(), (st, *p));
                }
                _ => {
                    cache.entries.remove(path);
                }
            }
        }
        let mut out = String::new();
        for (path, (st, p)) in &cache.entries {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{path}\n",
                st.size, st.mtime_ns, st.ctime_ns, st.ino, p.oid
            ));
        }
        gitmodel_store::fsutil::write_atomic_unsynced(&store_dir.join(FILE), out.as_bytes())
    }

    /// The pointer of `path` if it is still exactly the file that was written.
    pub fn lookup(&self, workdir: &Path, path: &str) -> Option<Pointer> {
        let (st, p) = self.entries.get(path)?;
        (stat(&workdir.join(path)).as_ref() == Some(st)).then_some(*p)
    }
}
