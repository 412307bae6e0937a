//! The user-facing commands.

use std::io::Read;

use anyhow::Result;
use gitmodel_client::{DownloadReport, UploadReport};
use gitmodel_git::setup::{self, Scope};
use gitmodel_git::Git;
use gitmodel_repo::{checkout, status, transfer, usage, PathFilter, PullError, Repo};

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

/// The pre-push hook: stdin has `<local ref> <local sha> <remote ref> <remote sha>` lines.
pub fn pre_push(remote: &str, _url: Option<&str>) -> Result<()> {
    let repo = Repo::open()?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let pushed = crate::progress::show("uploading", |p| {
        transfer::pre_push(&repo, remote, &input, p)
    })?;
    print_upload(&pushed.report);
    Ok(())
}

pub fn push(remote: Option<String>, refs: &[String], all: bool) -> Result<()> {
    let repo = Repo::open()?;
    let pushed = crate::progress::show("uploading", |p| {
        transfer::push(&repo, remote.as_deref(), refs, all, p)
    })?;
    print_upload(&pushed.report);
    if crate::report::json() {
        crate::report::emit(&crate::report::Push::new(pushed.url, &pushed.report))?;
    }
    Ok(())
}

pub fn fetch(refs: &[String], include: &[String], exclude: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let filter = PathFilter::from_flags_or_config(&repo.git, include, exclude)?;
    let report =
        crate::progress::show("downloading", |p| transfer::fetch(&repo, refs, &filter, p))?;
    print_download(&report);
    if crate::report::json() {
        crate::report::emit(&crate::report::Fetch::new(&report))?;
    }
    Ok(())
}

pub fn pull(include: &[String], exclude: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let filter = PathFilter::from_flags_or_config(&repo.git, include, exclude)?;
    let pulled = crate::progress::show("downloading", |p| checkout::pull(&repo, &filter, p))?;
    let json = crate::report::json();
    if pulled.written.is_empty() && pulled.failed.is_empty() && pulled.fetch.files == 0 {
        if json {
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
    if pulled.fetch.files > pulled.fetch.files_local {
        print_download(&pulled.fetch);
    }
    if json {
        crate::report::emit(&crate::report::Pull {
            command: "pull",
            fetch: crate::report::Fetch::new(&pulled.fetch),
            files_written: pulled.written.len(),
            bytes_written: pulled.bytes_written,
            written: pulled.written.clone(),
            failed: pulled.failed.clone(),
        })?;
    } else {
        eprintln!(
            "git-model: wrote {} file(s), {}",
            pulled.written.len(),
            bytes(pulled.bytes_written)
        );
    }
    if !pulled.failed.is_empty() {
        return Err(PullError {
            failed: pulled.failed,
        }
        .into());
    }
    Ok(())
}

pub fn ls_files(long: bool) -> Result<()> {
    let repo = Repo::open()?;
    let files = status::ls_files(&repo)?;
    if crate::report::json() {
        return crate::report::emit(&crate::report::LsFiles {
            command: "ls-files",
            files: files
                .into_iter()
                .map(|t| crate::report::FileState::new(t, None))
                .collect(),
        });
    }
    for t in files {
        let mark = if t.in_working_tree { '*' } else { '-' };
        if long {
            println!("{} {mark} {} {}", t.pointer.oid, t.pointer.size, t.path);
        } else {
            println!("{} {mark} {}", &t.pointer.oid.to_hex()[..10], t.path);
        }
    }
    Ok(())
}

pub fn status() -> Result<()> {
    let repo = Repo::open()?;
    let st = status::status(&repo)?;
    let (total, present, pointer_only) = (st.tracked_bytes(), st.present(), st.pointer_only());
    let tracked = st.files.len();
    let stats = st.store;
    if crate::report::json() {
        return crate::report::emit(&crate::report::Status {
            command: "status",
            files: st
                .files
                .into_iter()
                .map(|(t, s)| crate::report::FileState::new(t, Some(s)))
                .collect(),
            tracked_files: tracked,
            tracked_bytes: total,
            present,
            pointer_only,
            store: crate::report::StoreSize {
                chunks: stats.chunks,
                raw_bytes: stats.raw_bytes,
                packs: stats.packs,
                pack_bytes: stats.pack_bytes,
            },
        });
    }
    for (t, s) in &st.files {
        println!(
            "{:<12} {} {}",
            &t.pointer.oid.to_hex()[..10],
            t.path,
            s.describe()
        );
    }
    println!(
        "{tracked} tracked file(s), {} in total; {present} present, {pointer_only} pointer only",
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
        if matches!(gitmodel_repo::auth(), gitmodel_client::Auth::None) {
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
        credentials: if matches!(gitmodel_repo::auth(), gitmodel_client::Auth::None) {
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
