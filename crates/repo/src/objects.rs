//! Whether a pointer's content is here: in the local store, or in the directory where
//! git-lfs left whole objects (a repository that switched from git-lfs), imported into
//! the store on first use.

use std::path::PathBuf;

use anyhow::{bail, Result};
use gitmodel_format::{Oid, Pointer};
use gitmodel_store::LocalStore;

/// Where git-lfs keeps a whole object.
fn lfs_object_path(repo: &git2::Repository, oid: &Oid) -> PathBuf {
    let hex = oid.to_hex();
    repo.commondir()
        .join("lfs/objects")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex)
}

/// Ingests `oid` from `.git/lfs/objects` when git-lfs left it there; true when the store
/// now has it. The content is hashed on the way in, so a damaged object is refused.
pub fn import_lfs_object(repo: &git2::Repository, store: &LocalStore, oid: &Oid) -> Result<bool> {
    if store.has_file(oid) {
        return Ok(true);
    }
    let path = lfs_object_path(repo, oid);
    let Ok(file) = std::fs::File::open(&path) else {
        return Ok(false);
    };
    let got = store.ingest(std::io::BufReader::new(file))?;
    if got.pointer.oid != *oid {
        bail!(
            "{} holds content hashing to {}, not {oid}",
            path.display(),
            got.pointer.oid
        );
    }
    Ok(true)
}

/// Whether a pointer's content is anywhere local: the store or git-lfs's object dir.
pub fn have_locally(repo: &git2::Repository, store: &LocalStore, p: &Pointer) -> bool {
    store.has_file(&p.oid) || import_lfs_object(repo, store, &p.oid).unwrap_or(false)
}
