//! Store maintenance: `fsck` (is every pointer's content here, intact, and on the server,
//! intact there too?)
//! and `prune` (drop local chunks no recent ref needs, never any the server lacks).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use gitmodel_format::{ChunkId, Oid};
use gitmodel_git::scan::{self, Found};
use gitmodel_store::PrunePlan;

use crate::error::usage;
use crate::{Problem, Repo};

/// Pointers in the tips of `refs` (default HEAD), or of every branch and tag with `all`.
fn pointers_at(repo: &Repo, refs: &[String], all: bool) -> Result<Vec<Found>> {
    let mut trees = Vec::new();
    if all {
        for r in repo.repo.references()? {
            let r = r?;
            if r.is_branch() || r.is_tag() {
                if let Ok(t) = r.peel_to_tree() {
                    trees.push(t);
                }
            }
        }
    } else if refs.is_empty() {
        trees.push(repo.repo.head()?.peel_to_tree()?);
    } else {
        for r in refs {
            let obj = repo
                .repo
                .revparse_single(r)
                .map_err(|_| usage(format!("unknown ref {r:?}")))?;
            trees.push(obj.peel_to_tree()?);
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in &trees {
        for f in scan::pointers_in_tree(&repo.repo, t)? {
            if seen.insert(f.pointer.oid) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// What [`fsck`] found.
#[derive(Debug)]
pub struct Checked {
    /// Distinct non-empty files in the checked refs.
    pub files_checked: usize,
    /// Bytes read back and hash-checked from the local store.
    pub bytes_verified: u64,
    /// With `remote`: files the server has, intact.
    pub files_on_server: Option<usize>,
    pub problems: Vec<Problem>,
}

/// `git model fsck`: is the content of every pointer in `refs` (default HEAD; every
/// branch and tag with `all`) in the local store and intact (read back and hashed)? With
/// `remote`, also: has the server every file, intact?
pub fn fsck(repo: &Repo, refs: &[String], all: bool, remote: bool) -> Result<Checked> {
    let store = repo.store()?;
    let found: Vec<Found> = pointers_at(repo, refs, all)?
        .into_iter()
        .filter(|f| f.pointer.size > 0)
        .collect();
    let mut problems = Vec::new();
    let mut verified = 0u64;
    for f in &found {
        let oid = f.pointer.oid;
        let problem = |what: String| Problem {
            path: f.path.clone(),
            oid: oid.to_hex(),
            problem: what,
        };
        if store.recipe(&oid)?.is_none() {
            problems.push(problem("not in the local store".into()));
            continue;
        }
        match store.write_file(&oid, std::io::sink()) {
            Ok(n) => verified += n,
            Err(e) => problems.push(problem(e.to_string())),
        }
    }
    let mut on_server = None;
    if remote {
        let (n, found_problems) = check_remote(repo, &found)?;
        problems.extend(found_problems);
        on_server = Some(n);
    }
    Ok(Checked {
        files_checked: found.len(),
        bytes_verified: verified,
        files_on_server: on_server,
        problems,
    })
}

/// `fsck --remote`: has the server every file, and is its copy intact? The server checks
/// its own storage (`files/verify`: every chunk of every file read and hashed there, no
/// file content crosses the network); a server without that endpoint is only asked
/// whether it has the files. Returns how many are there and intact, and the problems.
fn check_remote(repo: &Repo, found: &[Found]) -> Result<(usize, Vec<Problem>)> {
    let r = repo.remote()?;
    let oids: Vec<Oid> = found.iter().map(|f| f.pointer.oid).collect();
    let problem = |f: &Found, what: String| Problem {
        path: f.path.clone(),
        oid: f.pointer.oid.to_hex(),
        problem: what,
    };
    let mut problems = Vec::new();
    let mut n = 0;
    let verified = match r.verify_files(&oids) {
        Ok(results) => results,
        Err(gitmodel_client::ClientError::Http {
            status: 404 | 405, ..
        }) => {
            tracing::warn!("{} cannot verify its copies (an older server): only asking whether it has the files", r.url());
            for (f, there) in found.iter().zip(r.files_exist(&oids)?) {
                if there {
                    n += 1;
                } else {
                    problems.push(problem(f, format!("not on the server {}", r.url())));
                }
            }
            return Ok((n, problems));
        }
        Err(e) => return Err(e.into()),
    };
    for (f, result) in found.iter().zip(verified) {
        match result.status.as_str() {
            "ok" => n += 1,
            "missing" => problems.push(problem(f, format!("not on the server {}", r.url()))),
            status => {
                let message = result.error.map(|e| e.message).unwrap_or_default();
                problems.push(problem(
                    f,
                    format!("the server's copy is {status}: {message}"),
                ));
            }
        }
    }
    Ok((n, problems))
}

/// Files needed locally: the index, HEAD, and tips of refs committed within `age`.
fn needed_files(repo: &Repo, age: Duration) -> Result<HashSet<Oid>> {
    let mut keep: HashSet<Oid> = scan::pointers_in_index(&repo.repo)?
        .into_iter()
        .map(|p| p.pointer.oid)
        .collect();
    if let Ok(head) = repo.repo.head().and_then(|h| h.peel_to_tree()) {
        keep.extend(
            scan::pointers_in_tree(&repo.repo, &head)?
                .into_iter()
                .map(|f| f.pointer.oid),
        );
    }
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs() as i64;
    for r in repo.repo.references()? {
        let r = r?;
        let Ok(commit) = r.peel_to_commit() else {
            continue;
        };
        if commit.time().seconds() >= cutoff {
            keep.extend(
                scan::pointers_in_tree(&repo.repo, &commit.tree()?)?
                    .into_iter()
                    .map(|f| f.pointer.oid),
            );
        }
    }
    Ok(keep)
}

/// What [`prune`] removed (or, in a dry run, would remove).
#[derive(Debug)]
pub struct Pruned {
    pub dry_run: bool,
    pub age_days: u64,
    pub plan: PrunePlan,
    /// Files kept: needed by the checkout, recent refs, or not on the server.
    pub files_kept: usize,
}

/// `git model prune`: drops local chunks no file of the index, HEAD or a ref committed
/// within `age_days` (default `model.pruneage`, else 7) needs, never any the server
/// lacks (a file with such a chunk stays whole).
pub fn prune(repo: &Repo, dry_run: bool, age_days: Option<u64>) -> Result<Pruned> {
    let store = repo.store()?;
    let age_days = match age_days {
        Some(d) => d,
        None => repo
            .git
            .try_run(&["config", "--get", "model.pruneage"])?
            .map(|v| {
                v.parse()
                    .map_err(|_| usage(format!("model.pruneage {v:?} is not a number of days")))
            })
            .transpose()?
            .unwrap_or(7),
    };
    let mut keep_files = needed_files(repo, Duration::from_secs(age_days * 86400))?;
    let chunks_of = |files: &HashSet<Oid>| -> Result<HashSet<ChunkId>> {
        let mut set = HashSet::new();
        for oid in files {
            if let Some(r) = store.recipe(oid)? {
                set.extend(r.chunks.iter().map(|c| c.id));
            }
        }
        Ok(set)
    };
    let mut keep = chunks_of(&keep_files)?;
    let mut plan = store.plan_prune(&keep, &keep_files)?;
    if !plan.chunks.is_empty() {
        // Never drop what the server does not hold: a file with any such chunk stays whole.
        let remote = repo.remote()?;
        let present = remote.chunks_exist(&plan.chunks)?;
        let absent: HashSet<ChunkId> = plan
            .chunks
            .iter()
            .zip(present)
            .filter(|(_, p)| !p)
            .map(|(c, _)| *c)
            .collect();
        if !absent.is_empty() {
            for oid in store.files()? {
                if let Some(r) = store.recipe(&oid)? {
                    if r.chunks.iter().any(|c| absent.contains(&c.id)) {
                        keep_files.insert(oid);
                    }
                }
            }
            keep = chunks_of(&keep_files)?;
            keep.extend(absent);
            plan = store.plan_prune(&keep, &keep_files)?;
        }
    }
    if !dry_run {
        store.apply_prune(&plan)?;
    }
    Ok(Pruned {
        dry_run,
        age_days,
        plan,
        files_kept: keep_files.len(),
    })
}
