//! The user-facing commands.

use std::fs;
use std::io::Read;

use anyhow::{Context, Result};
use gitmodel_client::{DownloadReport, FileRef, UploadReport};
use gitmodel_format::pointer::MAX_POINTER_SIZE;
use gitmodel_format::Pointer;
use gitmodel_git::scan::{self, Found};
use gitmodel_git::setup::{self, Scope};
use gitmodel_git::Git;

use crate::app::{usage, Repo};
use crate::paths::PathFilter;
use crate::statcache::StatCache;
use crate::units::{bytes, percent};

pub fn install(local: bool, skip_repo: bool) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let in_repo = gitmodel_git::open_repo(&cwd).ok();
    if local && in_repo.is_none() {
        return Err(usage("--local needs a git repository"));
    }
    let git = Git::new(&cwd);
    let scope = if local { Scope::Local } else { Scope::Global };
    setup::install_filter(&git, scope)?;
    println!(
        "git-model: filter installed ({})",
        if local {
            "this repository"
        } else {
            "global config"
        }
    );
    if let (Some(repo), false) = (in_repo, skip_repo) {
        if repo.workdir().is_some() || repo.is_bare() {
            let hook = setup::install_hooks(&git)?;
            println!("git-model: pre-push hook installed ({})", hook.display());
        }
    }
    Ok(())
}

pub fn uninstall(local: bool) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let git = Git::new(&cwd);
    setup::uninstall_filter(&git, if local { Scope::Local } else { Scope::Global })?;
    if gitmodel_git::open_repo(&cwd).is_ok() {
        setup::uninstall_hooks(&git)?;
    }
    println!("git-model: uninstalled");
    Ok(())
}

pub fn track(patterns: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let workdir = repo.workdir()?;
    if patterns.is_empty() {
        for p in setup::tracked_patterns(workdir) {
            println!("{p}");
        }
        return Ok(());
    }
    for p in patterns {
        if p.trim().is_empty() || p.contains('\n') {
            return Err(usage(format!("invalid pattern {p:?}")));
        }
    }
    let added = setup::track(workdir, patterns)?;
    for p in patterns {
        if added.contains(p) {
            println!("Tracking {p:?}");
        } else {
            println!("{p:?} already tracked");
        }
    }
    if !setup::hooks_installed(&repo.git)? {
        setup::install_hooks(&repo.git)?;
    }
    Ok(())
}

pub fn untrack(patterns: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let removed = setup::untrack(repo.workdir()?, patterns)?;
    for p in patterns {
        if removed.contains(p) {
            println!("Untracking {p:?}");
        } else {
            println!("{p:?} was not tracked");
        }
    }
    Ok(())
}

fn to_refs(found: Vec<Found>) -> Vec<FileRef> {
    found
        .into_iter()
        .map(|f| FileRef {
            oid: f.pointer.oid,
            size: f.pointer.size,
            path: f.path,
        })
        .collect()
}

fn print_upload(r: &UploadReport) {
    if r.files == 0 || crate::progress::quiet() || crate::report::json() {
        return;
    }
    let uploaded = r.files - r.files_present;
    let dedup = 100.0 - percent(r.bytes_new, r.file_bytes);
    eprintln!(
        "git-model: {} file(s); {} already on the server; uploaded {uploaded} ({}): \
         {} of {} chunks new, {} sent in {} pack(s), {dedup:.1}% deduplicated",
        r.files,
        r.files_present,
        bytes(r.file_bytes),
        r.chunks_sent,
        r.chunks,
        bytes(r.bytes_sent),
        r.packs,
    );
}

/// Uploads the pointers in commits reachable from `include` and not from `exclude`;
/// returns the server's URL (`None` when there was nothing to upload) and the figures.
fn upload_range(
    repo: &Repo,
    include: &[git2::Oid],
    exclude: &[git2::Oid],
) -> Result<(Option<String>, UploadReport)> {
    let found = scan::pointers_in_commits(&repo.repo, include, exclude)?;
    if found.is_empty() {
        return Ok((None, UploadReport::default()));
    }
    let store = repo.store()?;
    let remote = repo.remote()?;
    // Content git-lfs stored (a repository that switched to git-model) counts as local.
    for f in &found {
        crate::lfs::have_locally(&repo.repo, &store, &f.pointer);
    }
    let files = to_refs(found);
    let report = crate::progress::show("uploading", |p| {
        gitmodel_client::upload_with_progress(&store, &remote, &files, p)
    })
    .with_context(|| format!("uploading to {}", remote.url()))?;
    print_upload(&report);
    Ok((Some(remote.url().to_string()), report))
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

/// The pre-push hook: stdin has `<local ref> <local sha> <remote ref> <remote sha>` lines.
pub fn pre_push(remote: &str, _url: Option<&str>) -> Result<()> {
    let repo = Repo::open()?;
    let mut include = Vec::new();
    let mut exclude = remote_tips(&repo, remote)?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
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
    if include.is_empty() {
        return Ok(());
    }
    upload_range(&repo, &include, &exclude)
        .context("push refused: the server does not have the content of every pointer pushed")?;
    Ok(())
}

pub fn push(remote: Option<String>, refs: &[String], all: bool) -> Result<()> {
    let repo = Repo::open()?;
    // The remote is named for symmetry with `git push`; the content goes to model.url.
    // Unlike the pre-push hook, nothing is skipped because the remote's refs have it:
    // the server is asked, so content that a `--no-verify` push left behind is sent.
    if let Some(r) = &remote {
        if repo.repo.find_remote(r).is_err() && !r.contains("://") && !r.contains('/') {
            return Err(usage(format!("no remote named {r:?}")));
        }
    }
    let mut include = Vec::new();
    if all {
        for r in repo.repo.references()? {
            let r = r?;
            if r.is_branch() || r.is_tag() {
                if let Ok(c) = r.peel_to_commit() {
                    include.push(c.id());
                }
            }
        }
    } else if refs.is_empty() {
        include.push(repo.repo.head()?.peel_to_commit()?.id());
    } else {
        for r in refs {
            let obj = repo
                .repo
                .revparse_single(r)
                .map_err(|_| usage(format!("unknown ref {r:?}")))?;
            include.push(obj.peel_to_commit()?.id());
        }
    }
    let (url, report) = upload_range(&repo, &include, &[])?;
    if crate::report::json() {
        crate::report::emit(&crate::report::Push::new(url, &report))?;
    }
    Ok(())
}

fn print_download(r: &DownloadReport) {
    if r.files == 0 || r.files == r.files_local || crate::progress::quiet() || crate::report::json()
    {
        return;
    }
    eprintln!(
        "git-model: fetched {} file(s) ({}): {} new chunks, {} received in {} request(s)",
        r.files - r.files_local,
        bytes(r.file_bytes),
        r.chunks_fetched,
        bytes(r.bytes_received),
        r.requests
    );
}

fn fetch_pointers(repo: &Repo, files: &[FileRef]) -> Result<DownloadReport> {
    let store = repo.store()?;
    let mut seen = std::collections::HashSet::new();
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
    let report = crate::progress::show("downloading", |p| {
        gitmodel_client::download_with_progress(&store, &remote, &missing, p)
    })
    .with_context(|| format!("downloading from {}", remote.url()))?;
    print_download(&report);
    // Files complete before the download count as local in the whole command's figures.
    let report = DownloadReport {
        files: files.len(),
        files_local: files.len() - missing.len(),
        ..report
    };
    Ok(report)
}

pub fn fetch(refs: &[String], include: &[String], exclude: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let filter = PathFilter::from_flags_or_config(&repo.git, include, exclude)?;
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
    let report = fetch_pointers(&repo, &files)?;
    if crate::report::json() {
        crate::report::emit(&crate::report::Fetch::new(&report))?;
    }
    Ok(())
}

/// Whether the working tree lacks the content of `p` at `path`: the file still holds
/// exactly the pointer, or is not there at all (a checkout whose smudge failed leaves
/// no file).
fn lacks_content(path: &std::path::Path, p: &Pointer) -> bool {
    is_missing(path) || is_pointer_file(path, p)
}

fn is_missing(path: &std::path::Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Whether the working-tree file at `path` still holds exactly the pointer `p`.
fn is_pointer_file(path: &std::path::Path, p: &Pointer) -> bool {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && (m.len() as usize) < MAX_POINTER_SIZE => fs::read(path)
            .ok()
            .and_then(|b| Pointer::parse(&b))
            .is_some_and(|q| q == *p),
        _ => false,
    }
}

/// Files written by one [`Assembly`] at most: each holds an open temp file.
const ASSEMBLY_FILES: usize = 256;

/// Bytes a file may repeat of its own chunks (beyond twice its distinct chunks' size)
/// and still be written as its chunks arrive. A file that repeats more (a 2 GiB file of
/// one zero chunk, or a server's lie of that shape) is first hashed from the store, in
/// memory, and written only once it matched: a few hundred bytes from a server never
/// make gigabytes of unverified writes.
const REPEAT_UNCHECKED_BYTES: u64 = 64 << 20;

/// Whether `recipe` repeats its chunks so much that writing it unverified would write far
/// more than its distinct content (see [`REPEAT_UNCHECKED_BYTES`]).
fn repeats_much(recipe: &gitmodel_format::Recipe) -> bool {
    let mut seen = std::collections::HashSet::new();
    let distinct: u64 = recipe
        .chunks
        .iter()
        .filter(|c| seen.insert(c.id))
        .map(|c| c.raw_len as u64)
        .sum();
    recipe.size > 2 * distinct && recipe.size - distinct > REPEAT_UNCHECKED_BYTES
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
    store: &gitmodel_store::LocalStore,
    remote: &mut Option<gitmodel_client::Remote>,
    workdir: &std::path::Path,
    batch: &[scan::IndexPointer],
    progress: &gitmodel_client::Progress,
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
    let mut unique = std::collections::HashSet::new();
    fetched.files += batch
        .iter()
        .filter(|s| unique.insert(s.pointer.oid))
        .count();
    fetched.files_local += unique.len()
        - files
            .iter()
            .map(|f| f.oid)
            .collect::<std::collections::HashSet<_>>()
            .len();
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
    let mut failed: std::collections::HashMap<_, String> = plan
        .iter()
        .flat_map(|p| p.failed())
        .map(|f| (f.oid, f.error.to_string()))
        .collect();
    // Recipes by oid: the plan's (located) and those read from the store, once each.
    let mut local: std::collections::HashMap<_, gitmodel_format::Recipe> = Default::default();
    let planned: std::collections::HashMap<_, &gitmodel_format::Recipe> = plan
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
        let known = store.prefix_states(&s.path);
        items.push((recipe, workdir.join(&s.path), s.executable, known));
        placed.push(s);
    }
    let assembly = gitmodel_store::Assembly::new(items)?;
    // The server's recipes, kept once their files checked out.
    let mut unverified: std::collections::HashMap<_, gitmodel_format::Recipe> = Default::default();
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
            .and_then(|(size, states)| {
                if let Some(r) = unverified.remove(&oid) {
                    // The file hashed to its oid: the recipe is true.
                    store.put_recipe(&r).map_err(|e| e.to_string())?;
                }
                // An edit of this file is then cleaned from where it differs.
                if let Err(e) = store.keep_prefix_states(&s.path, &states) {
                    tracing::debug!("keeping hash states of {}: {e}", s.path);
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
            store
                .materialize(&oid, &workdir.join(&s.path), s.executable)
                .map_err(|e| e.to_string())
        })();
        outcome(s, result);
    }
    Ok(())
}

pub fn pull(include: &[String], exclude: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let workdir = repo.workdir()?.clone();
    let filter = PathFilter::from_flags_or_config(&repo.git, include, exclude)?;
    let staged = scan::pointers_in_index(&repo.repo)?;
    let todo: Vec<_> = staged
        .into_iter()
        .filter(|s| {
            s.pointer.size > 0
                && filter.allows(&s.path)
                && lacks_content(&workdir.join(&s.path), &s.pointer)
        })
        .collect();
    if todo.is_empty() {
        if crate::report::json() {
            return crate::report::emit(&crate::report::Pull {
                command: "pull",
                fetch: crate::report::Fetch::new(&DownloadReport::default()),
                files_written: 0,
                bytes_written: 0,
                written: Vec::new(),
                failed: Vec::new(),
            });
        }
        eprintln!("git-model: every tracked file is already in the working tree");
        return Ok(());
    }
    let store = repo.store()?;
    let mut remote = None;
    let mut fetched = DownloadReport::default();
    let mut written = 0u64;
    let mut failed = Vec::new();
    let mut done: Vec<(String, Pointer)> = Vec::new();
    let mut outcome = |s: &scan::IndexPointer, result: Result<u64, String>| match result {
        Ok(n) => {
            written += n;
            done.push((s.path.clone(), s.pointer));
        }
        Err(problem) => failed.push(crate::report::Problem {
            path: s.path.clone(),
            oid: s.pointer.oid.to_hex(),
            problem,
        }),
    };
    crate::progress::show("downloading", |progress| -> Result<()> {
        for batch in todo.chunks(ASSEMBLY_FILES) {
            pull_batch(
                &repo,
                &store,
                &mut remote,
                &workdir,
                batch,
                progress,
                &mut fetched,
                &mut outcome,
            )?;
        }
        Ok(())
    })?;
    if fetched.files > fetched.files_local {
        print_download(&fetched);
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
    let done: Vec<&str> = done.iter().map(|(p, _)| p.as_str()).collect();
    let refreshed = scan::refresh_index_stat(&repo.repo, &workdir, &done);
    if let Err(e) = &refreshed {
        tracing::debug!("refreshing the index in place: {e}; re-adding instead");
    }
    for batch in done.chunks(500).filter(|_| refreshed.is_err()) {
        let specs: Vec<String> = batch.iter().map(|p| format!(":(literal){p}")).collect();
        let mut args = vec!["add", "--"];
        args.extend(specs.iter().map(String::as_str));
        repo.git.run(&args)?;
    }
    if !crate::report::json() {
        eprintln!(
            "git-model: wrote {} file(s), {}",
            done.len(),
            bytes(written)
        );
    }
    let lines: Vec<String> = failed
        .iter()
        .map(|p| format!("{} ({}): {}", p.path, p.oid, p.problem))
        .collect();
    if crate::report::json() {
        crate::report::emit(&crate::report::Pull {
            command: "pull",
            fetch: crate::report::Fetch::new(&fetched),
            files_written: done.len(),
            bytes_written: written,
            written: done.iter().map(|p| p.to_string()).collect(),
            failed,
        })?;
    }
    if !lines.is_empty() {
        anyhow::bail!("could not write:\n  {}", lines.join("\n  "));
    }
    Ok(())
}

pub fn ls_files(long: bool) -> Result<()> {
    let repo = Repo::open()?;
    let workdir = repo.workdir()?.clone();
    let json = crate::report::json();
    let mut files = Vec::new();
    for s in scan::pointers_in_index(&repo.repo)? {
        let here = !lacks_content(&workdir.join(&s.path), &s.pointer);
        if json {
            files.push(crate::report::FileState {
                path: s.path,
                oid: s.pointer.oid.to_hex(),
                size: s.pointer.size,
                in_working_tree: here,
                in_store: None,
                state: None,
            });
            continue;
        }
        let mark = if here { '*' } else { '-' };
        if long {
            println!("{} {mark} {} {}", s.pointer.oid, s.pointer.size, s.path);
        } else {
            println!("{} {mark} {}", &s.pointer.oid.to_hex()[..10], s.path);
        }
    }
    if json {
        crate::report::emit(&crate::report::LsFiles {
            command: "ls-files",
            files,
        })?;
    }
    Ok(())
}

pub fn status() -> Result<()> {
    let repo = Repo::open()?;
    let workdir = repo.workdir()?.clone();
    let store = repo.store()?;
    let staged = scan::pointers_in_index(&repo.repo)?;
    let (mut local, mut pointer_only, mut total) = (0, 0, 0u64);
    let json = crate::report::json();
    let mut files = Vec::new();
    for s in &staged {
        total += s.pointer.size;
        let in_store = store.has_file(&s.pointer.oid) || s.pointer.size == 0;
        let in_tree = !lacks_content(&workdir.join(&s.path), &s.pointer);
        let (state, code) = match (in_tree, in_store) {
            (true, true) => {
                local += 1;
                ("ok", "ok")
            }
            (true, false) => ("in working tree, not in local store", "not_in_store"),
            (false, _) if is_missing(&workdir.join(&s.path)) => {
                pointer_only += 1;
                (
                    "missing from the working tree (run git model pull)",
                    "missing",
                )
            }
            (false, true) => {
                pointer_only += 1;
                ("pointer in working tree (run git model pull)", "pointer")
            }
            (false, false) => {
                pointer_only += 1;
                ("not downloaded (run git model pull)", "not_downloaded")
            }
        };
        if json {
            files.push(crate::report::FileState {
                path: s.path.clone(),
                oid: s.pointer.oid.to_hex(),
                size: s.pointer.size,
                in_working_tree: in_tree,
                in_store: Some(in_store),
                state: Some(code),
            });
            continue;
        }
        println!("{:<12} {} {}", &s.pointer.oid.to_hex()[..10], s.path, state);
    }
    let stats = store.stats()?;
    if json {
        return crate::report::emit(&crate::report::Status {
            command: "status",
            files,
            tracked_files: staged.len(),
            tracked_bytes: total,
            present: local,
            pointer_only,
            store: crate::report::StoreSize {
                chunks: stats.chunks,
                raw_bytes: stats.raw_bytes,
                packs: stats.packs,
                pack_bytes: stats.pack_bytes,
            },
        });
    }
    println!(
        "{} tracked file(s), {} in total; {local} present, {pointer_only} pointer only",
        staged.len(),
        bytes(total)
    );
    println!(
        "local store: {} chunks ({} raw) in {} pack(s), {} on disk",
        stats.chunks,
        bytes(stats.raw_bytes),
        stats.packs,
        bytes(stats.pack_bytes)
    );
    Ok(())
}

pub fn env() -> Result<()> {
    if crate::report::json() {
        return env_json();
    }
    println!("git-model {}", env!("CARGO_PKG_VERSION"));
    let cwd = std::env::current_dir()?;
    let git = Git::new(&cwd);
    println!(
        "git: {}",
        git.run(&["--version"]).unwrap_or_else(|e| e.to_string())
    );
    for key in ["filter.model.process", "filter.model.required"] {
        let v = git.try_run(&["config", "--get", key])?;
        println!(
            "{key} = {}",
            v.as_deref().unwrap_or("(unset: run git model install)")
        );
    }
    match Repo::open() {
        Err(_) => println!("repository: (none)"),
        Ok(repo) => {
            if let Some(w) = &repo.workdir {
                println!("repository: {}", w.display());
            }
            println!(
                "local store: {}",
                gitmodel_git::store_dir(&repo.repo).display()
            );
            match repo.url_setting()? {
                Some(s) => println!("model.url = {} (from {})", s.value, s.source),
                None => println!("model.url = (unset)"),
            }
            println!(
                "pre-push hook: {}",
                if setup::hooks_installed(&repo.git)? {
                    "installed"
                } else {
                    "missing"
                }
            );
            if let Some(w) = &repo.workdir {
                let pats = setup::tracked_patterns(w);
                println!(
                    "tracked patterns: {}",
                    if pats.is_empty() {
                        "(none)".into()
                    } else {
                        pats.join(" ")
                    }
                );
            }
        }
    }
    println!(
        "credentials: {}",
        if matches!(crate::app::auth(), gitmodel_client::Auth::None) {
            "none"
        } else {
            "token from GIT_MODEL_TOKEN"
        }
    );
    Ok(())
}

/// `git model env --json`: the same facts as [`env`], as [`crate::report::Env`].
fn env_json() -> Result<()> {
    let cwd = std::env::current_dir()?;
    let git = Git::new(&cwd);
    let mut out = crate::report::Env {
        command: "env",
        version: env!("CARGO_PKG_VERSION"),
        git: git.run(&["--version"]).unwrap_or_else(|e| e.to_string()),
        filter_process: git.try_run(&["config", "--get", "filter.model.process"])?,
        filter_required: git.try_run(&["config", "--get", "filter.model.required"])?,
        repository: None,
        local_store: None,
        model_url: None,
        pre_push_hook: None,
        tracked_patterns: Vec::new(),
        credentials: if matches!(crate::app::auth(), gitmodel_client::Auth::None) {
            "none"
        } else {
            "token"
        },
    };
    if let Ok(repo) = Repo::open() {
        out.repository = repo.workdir.as_ref().map(|w| w.display().to_string());
        out.local_store = Some(gitmodel_git::store_dir(&repo.repo).display().to_string());
        out.model_url = repo.url_setting()?.map(|s| crate::report::Setting {
            value: s.value,
            source: s.source.to_string(),
        });
        out.pre_push_hook = Some(setup::hooks_installed(&repo.git)?);
        if let Some(w) = &repo.workdir {
            out.tracked_patterns = setup::tracked_patterns(w);
        }
    }
    crate::report::emit(&out)
}
