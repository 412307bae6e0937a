//! Every route to a pointer's content: the smudge filter (to git's stream), `git model
//! pull` (working-tree files written straight from the downloaded chunks), and the
//! commands that write one file out (export, resolve, the Git LFS agent). Each checks the
//! content against its oid before anyone sees it; a server's recipe is kept in the local
//! store only once the file it describes hashed to its oid.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use gitmodel_client::{DownloadReport, FileRef, Progress, Remote};
use gitmodel_format::pointer::MAX_POINTER_SIZE;
use gitmodel_format::{Pointer, Recipe};
use gitmodel_git::scan;
use gitmodel_store::LocalStore;

use crate::paths::PathFilter;
use crate::statcache::StatCache;
use crate::{Problem, Repo};

/// Whether the working tree lacks the content of `p` at `path`: the file still holds
/// exactly the pointer, or is not there at all (a checkout whose smudge failed leaves
/// no file).
pub fn lacks_content(path: &Path, p: &Pointer) -> bool {
    is_missing(path) || is_pointer_file(path, p)
}

/// Whether nothing is at `path`.
pub fn is_missing(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Whether the working-tree file at `path` still holds exactly the pointer `p`.
pub fn is_pointer_file(path: &Path, p: &Pointer) -> bool {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && (m.len() as usize) < MAX_POINTER_SIZE => fs::read(path)
            .ok()
            .and_then(|b| Pointer::parse(&b))
            .is_some_and(|q| q == *p),
        _ => false,
    }
}

/// Where a checked-out file goes.
pub enum Destination<'a> {
    /// A stream (git's smudge pipe); `path` is the file's repository path, whose hash
    /// states the store keeps (see [`LocalStore::write_file_for_path`]).
    Stream {
        out: &'a mut (dyn Write + Send),
        path: Option<&'a str>,
    },
    /// A file, written beside `target` and renamed over it once it checked out.
    File { target: &'a Path, executable: bool },
}

/// Writes the content of `p` to `to`, downloading it first when the local store (or
/// git-lfs's object directory) lacks it. Returns the size written.
pub fn checkout(
    repo: &Repo,
    store: &LocalStore,
    remote: impl FnOnce() -> Result<Remote>,
    p: &Pointer,
    name: &str,
    to: Destination<'_>,
) -> Result<u64> {
    if p.size > 0 && !crate::objects::have_locally(&repo.repo, store, p) {
        let remote = remote()?;
        let file = FileRef {
            oid: p.oid,
            size: p.size,
            path: name.to_string(),
        };
        gitmodel_client::download(store, &remote, std::slice::from_ref(&file))
            .with_context(|| format!("downloading {name} from {}", remote.url()))?;
    }
    Ok(write_out(store, p, to)?)
}

/// Writes the content of `p`, which the store has, to `to`.
pub fn write_out(
    store: &LocalStore,
    p: &Pointer,
    to: Destination<'_>,
) -> gitmodel_store::Result<u64> {
    match to {
        Destination::Stream {
            out,
            path: Some(path),
        } => store.write_file_for_path(&p.oid, out, path),
        Destination::Stream { out, path: None } => store.write_file(&p.oid, out),
        Destination::File { target, executable } => store.materialize(&p.oid, target, executable),
    }
}

/// What `git model pull` did.
#[derive(Debug, Default)]
pub struct Pulled {
    /// The download's figures over every file the pull needed.
    pub fetch: DownloadReport,
    /// Working-tree files replaced by their content (repository paths).
    pub written: Vec<String>,
    pub bytes_written: u64,
    /// Files that could not be written; they stay pointers.
    pub failed: Vec<Problem>,
}

/// Files written by one [`gitmodel_store::Assembly`] at most: each holds an open temp
/// file.
const ASSEMBLY_FILES: usize = 256;

/// Bytes a file may repeat of its own chunks (beyond twice its distinct chunks' size)
/// and still be written as its chunks arrive. A file that repeats more (a 2 GiB file of
/// one zero chunk, or a server's lie of that shape) is first hashed from the store, in
/// memory, and written only once it matched: a few hundred bytes from a server never
/// make gigabytes of unverified writes.
const REPEAT_UNCHECKED_BYTES: u64 = 64 << 20;

/// Whether `recipe` repeats its chunks so much that writing it unverified would write far
/// more than its distinct content (see [`REPEAT_UNCHECKED_BYTES`]).
fn repeats_much(recipe: &Recipe) -> bool {
    let mut seen = HashSet::new();
    let distinct: u64 = recipe
        .chunks
        .iter()
        .filter(|c| seen.insert(c.id))
        .map(|c| c.raw_len as u64)
        .sum();
    recipe.size > 2 * distinct && recipe.size - distinct > REPEAT_UNCHECKED_BYTES
}

/// `git model pull`: writes the content of every staged pointer that `filter` allows and
/// the working tree lacks, downloading what the store lacks, then refreshes the index
/// entries of the files written. A file that fails is in [`Pulled::failed`] and stays a
/// pointer; only the server failing as a whole fails the pull.
pub fn pull(repo: &Repo, filter: &PathFilter, progress: &Progress) -> Result<Pulled> {
    let workdir = repo.workdir()?.clone();
    let staged = scan::pointers_in_index(&repo.repo)?;
    let todo: Vec<_> = staged
        .into_iter()
        .filter(|s| {
            s.pointer.size > 0
                && filter.allows(&s.path)
                && lacks_content(&workdir.join(&s.path), &s.pointer)
        })
        .collect();
    let mut pulled = Pulled::default();
    if todo.is_empty() {
        return Ok(pulled);
    }
    let store = repo.store()?;
    let mut remote = None;
    let mut done: Vec<(String, Pointer)> = Vec::new();
    let mut outcome = |s: &scan::IndexPointer, result: Result<u64, String>| match result {
        Ok(n) => {
            pulled.bytes_written += n;
            done.push((s.path.clone(), s.pointer));
        }
        Err(problem) => pulled.failed.push(Problem {
            path: s.path.clone(),
            oid: s.pointer.oid.to_hex(),
            problem,
        }),
    };
    let mut fetched = DownloadReport::default();
    for batch in todo.chunks(ASSEMBLY_FILES) {
        pull_batch(
            repo,
            &store,
            &mut remote,
            &workdir,
            batch,
            progress,
            &mut fetched,
            &mut outcome,
        )?;
    }
    // The files changed size on disk, which git takes for a modification until their
    // index entries get the new stat data. Each was just written from its staged pointer,
    // so the entries are refreshed in place (the blob stays). Should that fail (an index
    // libgit2 cannot write), re-adding them runs the clean filter, which yields the same
    // pointers; the stat cache lets it answer without hashing the files again, and also
    // answers git's own re-clean of a racily clean entry.
    if let Err(e) = StatCache::save(store.root(), &workdir, &done) {
        tracing::warn!("could not save the stat cache: {e}");
    }
    let paths: Vec<&str> = done.iter().map(|(p, _)| p.as_str()).collect();
    let refreshed = scan::refresh_index_stat(&repo.repo, &workdir, &paths);
    if let Err(e) = &refreshed {
        tracing::debug!("refreshing the index in place: {e}; re-adding instead");
    }
    for batch in paths.chunks(500).filter(|_| refreshed.is_err()) {
        let specs: Vec<String> = batch.iter().map(|p| format!(":(literal){p}")).collect();
        let mut args = vec!["add", "--"];
        args.extend(specs.iter().map(String::as_str));
        repo.git.run(&args)?;
    }
    pulled.fetch = fetched;
    pulled.written = done.into_iter().map(|(p, _)| p).collect();
    Ok(pulled)
}

/// Downloads what `batch` lacks and writes its files straight from the downloaded chunks
/// (plus those already in the store), each checked against its oid before it replaces the
/// pointer file; a server recipe is kept in the store only once its file checked out.
/// A file that fails (a bad answer, a failed check) is reported through `outcome` and
/// left as a pointer; the others go on. Only a server failing as a whole (unreachable,
/// refusing us, too slow) fails the batch, with nothing written.
#[allow(clippy::too_many_arguments)]
fn pull_batch(
    repo: &Repo,
    store: &LocalStore,
    remote: &mut Option<Remote>,
    workdir: &Path,
    batch: &[scan::IndexPointer],
    progress: &Progress,
    fetched: &mut DownloadReport,
    outcome: &mut impl FnMut(&scan::IndexPointer, Result<u64, String>),
) -> Result<()> {
    let files: Vec<FileRef> = batch
        .iter()
        .filter(|s| !store.has_file(&s.pointer.oid))
        .map(|s| FileRef {
            oid: s.pointer.oid,
            size: s.pointer.size,
            path: s.path.clone(),
        })
        .collect();
    let mut unique = HashSet::new();
    fetched.files += batch
        .iter()
        .filter(|s| unique.insert(s.pointer.oid))
        .count();
    fetched.files_local += unique.len() - files.iter().map(|f| f.oid).collect::<HashSet<_>>().len();
    let plan = if files.is_empty() {
        None
    } else {
        if remote.is_none() {
            *remote = Some(repo.remote()?);
        }
        let r = remote.as_ref().expect("just set");
        Some(
            gitmodel_client::plan_download(store, r, &files)
                .with_context(|| format!("downloading from {}", r.url()))?,
        )
    };
    // Why a file cannot be had, by oid: its recipe was absent or bad.
    let mut failed: HashMap<_, String> = plan
        .iter()
        .flat_map(|p| p.failed())
        .map(|f| (f.oid, f.error.to_string()))
        .collect();
    // Recipes by oid: the plan's (located) and those read from the store, once each.
    let mut local: HashMap<_, Recipe> = Default::default();
    let planned: HashMap<_, &Recipe> = plan
        .iter()
        .flat_map(|p| p.recipes())
        .map(|r| (r.oid, r))
        .collect();
    let mut items = Vec::new();
    let mut placed = Vec::new();
    // Files written only after their content was checked from the store.
    let mut checked_first = Vec::new();
    for s in batch {
        let oid = s.pointer.oid;
        if let Some(why) = failed.get(&oid) {
            outcome(s, Err(why.clone()));
            continue;
        }
        let recipe = match planned.get(&oid).copied().or_else(|| local.get(&oid)) {
            Some(r) => r.unlocated(),
            None => match store.recipe(&oid) {
                Ok(Some(r)) => {
                    local.insert(oid, r.clone());
                    r
                }
                Ok(None) => {
                    let e = gitmodel_store::StoreError::MissingFile { oid };
                    outcome(s, Err(e.to_string()));
                    continue;
                }
                Err(e) => {
                    outcome(s, Err(e.to_string()));
                    continue;
                }
            },
        };
        if repeats_much(&recipe) {
            checked_first.push(s);
            continue;
        }
        items.push((recipe, workdir.join(&s.path), s.executable, s.path.clone()));
        placed.push(s);
    }
    // The store resumes each file's hash from the states it kept for its path, and keeps
    // the new ones: an edit of the file is then cleaned from where it differs.
    let assembly = gitmodel_store::Assembly::for_paths(store, items)?;
    // The server's recipes, kept once their files checked out.
    let mut unverified: HashMap<_, Recipe> = Default::default();
    if let (Some(plan), Some(r)) = (plan, remote.as_ref()) {
        let sink = |id: &gitmodel_format::ChunkId, data: &[u8]| assembly.put(id, data);
        let done = gitmodel_client::run_download(store, r, plan, progress, Some(&sink))
            .with_context(|| format!("downloading from {}", r.url()))?;
        let report = done.report;
        fetched.file_bytes += report.file_bytes;
        fetched.chunks_fetched += report.chunks_fetched;
        fetched.bytes_received += report.bytes_received;
        fetched.bytes_new += report.bytes_new;
        fetched.requests += report.requests;
        for f in done.failed {
            failed.insert(f.oid, f.error.to_string());
        }
        unverified.extend(done.unverified.into_iter().map(|r| (r.oid, r)));
    }
    for (s, done) in placed.into_iter().zip(assembly.finish(store)) {
        let oid = s.pointer.oid;
        if let Some(why) = failed.get(&oid) {
            outcome(s, Err(why.clone()));
            continue;
        }
        if let Err(gitmodel_store::StoreError::HashMismatch { .. }) = &done.result {
            if local.contains_key(&oid) {
                // A stored recipe that makes the wrong file (kept unchecked by an older
                // git-model): drop it, so that the next pull asks the server again.
                if let Err(e) = store.forget_recipe(&oid) {
                    tracing::warn!("dropping the wrong recipe of {oid}: {e}");
                }
            }
        }
        let result = done
            .result
            .map_err(|e| e.to_string())
            .and_then(|(size, _)| {
                if let Some(r) = unverified.remove(&oid) {
                    // The file hashed to its oid: the recipe is true.
                    store.put_recipe(&r).map_err(|e| e.to_string())?;
                }
                Ok(size)
            });
        outcome(s, result);
    }
    for s in checked_first {
        let oid = s.pointer.oid;
        if let Some(why) = failed.get(&oid) {
            outcome(s, Err(why.clone()));
            continue;
        }
        let result = (|| -> Result<u64, String> {
            if let Some(r) = unverified.remove(&oid) {
                store
                    .verify_recipe(&r)
                    .map_err(|e| format!("the server's recipe does not make this file: {e}"))?;
                store.put_recipe(&r).map_err(|e| e.to_string())?;
            }
            let target = workdir.join(&s.path);
            write_out(
                store,
                &s.pointer,
                Destination::File {
                    target: &target,
                    executable: s.executable,
                },
            )
            .map_err(|e| e.to_string())
        })();
        outcome(s, result);
    }
    Ok(())
}
