//! What the working tree and the local store hold of the tracked files (`git model
//! status`, `git model ls-files`).

use anyhow::Result;
use gitmodel_format::Pointer;
use gitmodel_git::scan;
use gitmodel_store::StoreStats;

use crate::checkout::{is_missing, lacks_content};
use crate::Repo;

/// Where one tracked file's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// In the working tree and in the local store.
    Ok,
    /// In the working tree only (added, not pushed from here).
    NotInStore,
    /// Missing from the working tree (a checkout that could not write it).
    Missing,
    /// The working tree holds the pointer; the local store has the content.
    Pointer,
    /// The working tree holds the pointer; the content is not downloaded.
    NotDownloaded,
}

impl FileStatus {
    /// The stable code in `--json` output.
    pub fn code(self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::NotInStore => "not_in_store",
            FileStatus::Missing => "missing",
            FileStatus::Pointer => "pointer",
            FileStatus::NotDownloaded => "not_downloaded",
        }
    }

    /// What it means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::NotInStore => "in working tree, not in local store",
            FileStatus::Missing => "missing from the working tree (run git model pull)",
            FileStatus::Pointer => "pointer in working tree (run git model pull)",
            FileStatus::NotDownloaded => "not downloaded (run git model pull)",
        }
    }

    /// Whether the working tree holds the content.
    pub fn in_working_tree(self) -> bool {
        matches!(self, FileStatus::Ok | FileStatus::NotInStore)
    }
}

/// One tracked (staged) file.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub path: String,
    pub pointer: Pointer,
    pub in_working_tree: bool,
    /// The local store has the content (`None` when not asked: [`ls_files`]).
    pub in_store: Option<bool>,
}

/// Every staged pointer, and whether the working tree holds its content.
pub fn ls_files(repo: &Repo) -> Result<Vec<Tracked>> {
    let workdir = repo.workdir()?;
    Ok(scan::pointers_in_index(&repo.repo)?
        .into_iter()
        .map(|s| Tracked {
            in_working_tree: !lacks_content(&workdir.join(&s.path), &s.pointer),
            path: s.path,
            pointer: s.pointer,
            in_store: None,
        })
        .collect())
}

/// What [`status`] found.
#[derive(Debug)]
pub struct Status {
    pub files: Vec<(Tracked, FileStatus)>,
    pub store: StoreStats,
}

impl Status {
    /// Bytes of all tracked files.
    pub fn tracked_bytes(&self) -> u64 {
        self.files.iter().map(|(t, _)| t.pointer.size).sum()
    }

    /// Files whose content is in the working tree and the store.
    pub fn present(&self) -> usize {
        self.files
            .iter()
            .filter(|(_, s)| *s == FileStatus::Ok)
            .count()
    }

    /// Files the working tree lacks (a pointer, or nothing).
    pub fn pointer_only(&self) -> usize {
        self.files
            .iter()
            .filter(|(_, s)| !s.in_working_tree())
            .count()
    }
}

/// `git model status`: each tracked file's [`FileStatus`], and the local store's size.
pub fn status(repo: &Repo) -> Result<Status> {
    let workdir = repo.workdir()?.clone();
    let store = repo.store()?;
    let mut files = Vec::new();
    for s in scan::pointers_in_index(&repo.repo)? {
        let in_store = store.has_file(&s.pointer.oid) || s.pointer.size == 0;
        let full = workdir.join(&s.path);
        let in_tree = !lacks_content(&full, &s.pointer);
        let state = match (in_tree, in_store) {
            (true, true) => FileStatus::Ok,
            (true, false) => FileStatus::NotInStore,
            (false, _) if is_missing(&full) => FileStatus::Missing,
            (false, true) => FileStatus::Pointer,
            (false, false) => FileStatus::NotDownloaded,
        };
        let tracked = Tracked {
            path: s.path,
            pointer: s.pointer,
            in_working_tree: in_tree,
            in_store: Some(in_store),
        };
        files.push((tracked, state));
    }
    Ok(Status {
        files,
        store: store.stats()?,
    })
}
