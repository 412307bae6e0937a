//! Finding pointer blobs: in the commits a push sends, in a tree, in the index.
//!
//! A blob is a candidate when it is non-empty and under 1024 bytes (read from the object
//! header, without loading big blobs); it counts when it parses as a pointer. Trees and
//! blobs already visited are skipped, so a long history of small changes is walked once.

use std::collections::HashSet;
use std::path::Path;

use gitmodel_format::pointer::MAX_POINTER_SIZE;
use gitmodel_format::Pointer;

use crate::Result;

/// A pointer and the first path it was seen at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pointer: Pointer,
    pub path: String,
}

struct Walker<'r> {
    repo: &'r git2::Repository,
    odb: git2::Odb<'r>,
    seen_trees: HashSet<git2::Oid>,
    seen_blobs: HashSet<git2::Oid>,
    seen_pointers: HashSet<gitmodel_format::Oid>,
    found: Vec<Found>,
}

impl<'r> Walker<'r> {
    fn new(repo: &'r git2::Repository) -> Result<Self> {
        Ok(Walker {
            repo,
            odb: repo.odb()?,
            seen_trees: HashSet::new(),
            seen_blobs: HashSet::new(),
            seen_pointers: HashSet::new(),
            found: Vec::new(),
        })
    }

    /// The pointer stored in blob `id`, if it is one.
    fn blob_pointer(&self, id: git2::Oid) -> Result<Option<Pointer>> {
        let (size, kind) = self.odb.read_header(id)?;
        if kind != git2::ObjectType::Blob || size == 0 || size >= MAX_POINTER_SIZE {
            return Ok(None);
        }
        let blob = self.repo.find_blob(id)?;
        Ok(Pointer::parse(blob.content()))
    }

    fn blob(&mut self, id: git2::Oid, path: &str) -> Result<()> {
        if !self.seen_blobs.insert(id) {
            return Ok(());
        }
        if let Some(p) = self.blob_pointer(id)? {
            if self.seen_pointers.insert(p.oid) {
                self.found.push(Found {
                    pointer: p,
                    path: path.to_string(),
                });
            }
        }
        Ok(())
    }

    fn tree(&mut self, tree: &git2::Tree<'_>, prefix: &str) -> Result<()> {
        if !self.seen_trees.insert(tree.id()) {
            return Ok(());
        }
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes());
            let path = if prefix.is_empty() {
                name.into_owned()
            } else {
                format!("{prefix}/{name}")
            };
            match entry.kind() {
                Some(git2::ObjectType::Tree) => {
                    let sub = self.repo.find_tree(entry.id())?;
                    self.tree(&sub, &path)?;
                }
                Some(git2::ObjectType::Blob) => self.blob(entry.id(), &path)?,
                _ => {} // submodules (commits) hold no pointers of ours
            }
        }
        Ok(())
    }
}

/// Pointers in the trees of commits reachable from `include` and not from `exclude`.
pub fn pointers_in_commits(
    repo: &git2::Repository,
    include: &[git2::Oid],
    exclude: &[git2::Oid],
) -> Result<Vec<Found>> {
    let mut walk = repo.revwalk()?;
    for id in include {
        walk.push(*id)?;
    }
    for id in exclude {
        // The remote may have commits we never fetched: nothing to hide then.
        let _ = walk.hide(*id);
    }
    let mut w = Walker::new(repo)?;
    for id in walk {
        let commit = repo.find_commit(id?)?;
        w.tree(&commit.tree()?, "")?;
    }
    Ok(w.found)
}

/// Pointers in one tree.
pub fn pointers_in_tree(repo: &git2::Repository, tree: &git2::Tree<'_>) -> Result<Vec<Found>> {
    let mut w = Walker::new(repo)?;
    w.tree(tree, "")?;
    Ok(w.found)
}

/// A pointer staged in the index.
#[derive(Debug, Clone)]
pub struct IndexPointer {
    pub path: String,
    pub pointer: Pointer,
    pub executable: bool,
}

/// Every index entry whose blob is a pointer (one entry per path; stage 0 only).
pub fn pointers_in_index(repo: &git2::Repository) -> Result<Vec<IndexPointer>> {
    let index = repo.index()?;
    let w = Walker::new(repo)?;
    let mut out = Vec::new();
    for entry in index.iter() {
        let stage = (entry.flags >> 12) & 0x3;
        if stage != 0 {
            continue;
        }
        // Regular files only: 0o100644 / 0o100755.
        if entry.mode & 0o170000 != 0o100000 {
            continue;
        }
        if let Some(p) = w.blob_pointer(entry.id)? {
            out.push(IndexPointer {
                path: String::from_utf8_lossy(&entry.path).into_owned(),
                pointer: p,
                executable: entry.mode & 0o111 != 0,
            });
        }
    }
    Ok(out)
}

/// Records the current stat data of working-tree files in their index entries, keeping
/// the staged blob: what `git update-index --refresh` would do after re-cleaning each file
/// and finding the same pointer, but without git reading every file through the clean
/// filter again. Only for files whose content is known to clean to their staged pointer
/// (just written from it). Returns how many entries were refreshed.
pub fn refresh_index_stat(
    repo: &git2::Repository,
    workdir: &Path,
    paths: &[&str],
) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let mut index = repo.index()?;
    let mut refreshed = 0;
    for path in paths {
        let Some(mut e) = index.get_path(Path::new(path), 0) else {
            continue;
        };
        let Ok(m) = std::fs::symlink_metadata(workdir.join(path)) else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        // The index keeps 32-bit stat fields, truncated as git truncates them.
        e.ctime = git2::IndexTime::new(m.ctime() as i32, m.ctime_nsec() as u32);
        e.mtime = git2::IndexTime::new(m.mtime() as i32, m.mtime_nsec() as u32);
        e.dev = m.dev() as u32;
        e.ino = m.ino() as u32;
        e.uid = m.uid();
        e.gid = m.gid();
        e.file_size = m.size() as u32;
        index.add(&e)?;
        refreshed += 1;
    }
    index.write()?;
    Ok(refreshed)
}
