//! Moving content between the local store and the server: push (the pre-push hook and
//! `git model push`), fetch, and pull (which writes the working tree, see
//! [`crate::checkout`]).

use std::collections::HashSet;

use anyhow::{Context, Result};
use gitmodel_client::{DownloadReport, FileRef, Progress, UploadReport};
use gitmodel_git::scan::{self, Found};

use crate::error::usage;
use crate::paths::PathFilter;
use crate::Repo;

/// Files as the transfer layer names them.
pub fn to_refs(found: Vec<Found>) -> Vec<FileRef> {
    found
        .into_iter()
        .map(|f| FileRef {
            oid: f.pointer.oid,
            size: f.pointer.size,
            path: f.path,
        })
        .collect()
}

/// What a push did: the server's URL (`None` when there was nothing to upload) and the
/// figures.
#[derive(Debug, Default)]
pub struct Pushed {
    pub url: Option<String>,
    pub report: UploadReport,
}

/// Uploads the pointers in commits reachable from `include` and not from `exclude`.
pub fn upload_range(
    repo: &Repo,
    include: &[git2::Oid],
    exclude: &[git2::Oid],
    progress: &Progress,
) -> Result<Pushed> {
    let found = scan::pointers_in_commits(&repo.repo, include, exclude)?;
    if found.is_empty() {
        return Ok(Pushed::default());
    }
    let store = repo.store()?;
    let remote = repo.remote()?;
    // Content git-lfs stored (a repository that switched to git-model) counts as local.
    for f in &found {
        crate::objects::have_locally(&repo.repo, &store, &f.pointer);
    }
    let files = to_refs(found);
    let report = gitmodel_client::upload_with_progress(&store, &remote, &files, progress)
        .with_context(|| format!("uploading to {}", remote.url()))?;
    Ok(Pushed {
        url: Some(remote.url().to_string()),
        report,
    })
}

/// Commits the remote is known to have: its remote-tracking refs.
fn remote_tips(repo: &Repo, remote: &str) -> Result<Vec<git2::Oid>> {
    let mut out = Vec::new();
    let glob = format!("refs/remotes/{remote}/*");
    for r in repo.repo.references_glob(&glob)? {
        if let Some(id) = r?.peel_to_commit().ok().map(|c| c.id()) {
            out.push(id);
        }
    }
    Ok(out)
}

/// What git's pre-push hook is told (`<local ref> <local sha> <remote ref> <remote sha>`
/// lines on its stdin), as the commits to upload and those the remote has: `None` when
/// nothing is pushed (only deletions).
pub fn pre_push_range(
    repo: &Repo,
    remote: &str,
    input: &str,
) -> Result<Option<(Vec<git2::Oid>, Vec<git2::Oid>)>> {
    let mut include = Vec::new();
    let mut exclude = remote_tips(repo, remote)?;
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local_sha, _, remote_sha] = fields[..] else {
            return Err(usage(format!("unexpected pre-push input line {line:?}")));
        };
        let local = git2::Oid::from_str(local_sha)?;
        if !local.is_zero() {
            include.push(local);
        }
        if let Ok(r) = git2::Oid::from_str(remote_sha) {
            if !r.is_zero() && repo.repo.find_commit(r).is_ok() {
                exclude.push(r);
            }
        }
    }
    Ok((!include.is_empty()).then_some((include, exclude)))
}

/// The pre-push hook: uploads what the pushed commits point to and the remote lacks.
pub fn pre_push(repo: &Repo, remote: &str, input: &str, progress: &Progress) -> Result<Pushed> {
    let Some((include, exclude)) = pre_push_range(repo, remote, input)? else {
        return Ok(Pushed::default());
    };
    upload_range(repo, &include, &exclude, progress)
        .context("push refused: the server does not have the content of every pointer pushed")
}

/// Tips of every branch and tag.
pub fn all_tips(repo: &Repo) -> Result<Vec<git2::Oid>> {
    let mut tips = Vec::new();
    for r in repo.repo.references()? {
        let r = r?;
        if r.is_branch() || r.is_tag() {
            if let Ok(c) = r.peel_to_commit() {
                tips.push(c.id());
            }
        }
    }
    Ok(tips)
}

/// The commits `refs` name (`HEAD` when empty); an unknown one is a usage error.
pub fn commits_of(repo: &Repo, refs: &[String]) -> Result<Vec<git2::Oid>> {
    if refs.is_empty() {
        return Ok(vec![repo.repo.head()?.peel_to_commit()?.id()]);
    }
    let mut out = Vec::new();
    for r in refs {
        let obj = repo
            .repo
            .revparse_single(r)
            .map_err(|_| usage(format!("unknown ref {r:?}")))?;
        out.push(obj.peel_to_commit()?.id());
    }
    Ok(out)
}

/// `git model push`: uploads the content of `refs` (default HEAD), or of every branch
/// and tag with `all`. Unlike the pre-push hook, nothing is skipped because the remote's
/// refs have it: the server is asked, so content that a `--no-verify` push left behind is
/// sent. `remote` is named for symmetry with `git push`; the content goes to model.url.
pub fn push(
    repo: &Repo,
    remote: Option<&str>,
    refs: &[String],
    all: bool,
    progress: &Progress,
) -> Result<Pushed> {
    if let Some(r) = remote {
        if repo.repo.find_remote(r).is_err() && !r.contains("://") && !r.contains('/') {
            return Err(usage(format!("no remote named {r:?}")));
        }
    }
    let include = if all {
        all_tips(repo)?
    } else {
        commits_of(repo, refs)?
    };
    upload_range(repo, &include, &[], progress)
}

/// Brings the content of `files` into the local store (those it lacks). The report
/// counts every distinct non-empty file; those complete before count as local.
pub fn fetch_files(repo: &Repo, files: &[FileRef], progress: &Progress) -> Result<DownloadReport> {
    let store = repo.store()?;
    let mut seen = HashSet::new();
    let files: Vec<&FileRef> = files
        .iter()
        .filter(|f| f.size > 0 && seen.insert(f.oid))
        .collect();
    let missing: Vec<FileRef> = files
        .iter()
        .filter(|f| !store.has_file(&f.oid))
        .map(|f| (*f).clone())
        .collect();
    if missing.is_empty() {
        return Ok(DownloadReport {
            files: files.len(),
            files_local: files.len(),
            ..Default::default()
        });
    }
    let remote = repo.remote()?;
    let report = gitmodel_client::download_with_progress(&store, &remote, &missing, progress)
        .with_context(|| format!("downloading from {}", remote.url()))?;
    Ok(DownloadReport {
        files: files.len(),
        files_local: files.len() - missing.len(),
        ..report
    })
}

/// `git model fetch`: the content of the files in `refs` (default HEAD) that `filter`
/// allows, into the local store; the working tree is not touched.
pub fn fetch(
    repo: &Repo,
    refs: &[String],
    filter: &PathFilter,
    progress: &Progress,
) -> Result<DownloadReport> {
    let refs: Vec<String> = if refs.is_empty() {
        vec!["HEAD".into()]
    } else {
        refs.to_vec()
    };
    let mut files = Vec::new();
    for r in &refs {
        let obj = repo
            .repo
            .revparse_single(r)
            .map_err(|_| usage(format!("unknown ref {r:?}")))?;
        let tree = obj.peel_to_tree()?;
        files.extend(
            to_refs(scan::pointers_in_tree(&repo.repo, &tree)?)
                .into_iter()
                .filter(|f| filter.allows(&f.path)),
        );
    }
    fetch_files(repo, &files, progress)
}
