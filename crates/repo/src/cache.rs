//! Repositories known only by their git URL: no clone, just what a read needs — the
//! default branch's tip and the stage registry, shallow, in a bare repository in the cache
//! directory (`GIT_MODEL_CACHE`, else `$XDG_CACHE_HOME/git-model`, else
//! `~/.cache/git-model`), and of a model only the chunks that were read.
//!
//! One bare repository per URL, shared by every call and process: a call holds an
//! exclusive lock on it (`<dir>.lock`, `flock`) while it fetches and reads, so concurrent
//! processes take turns. The cache is bounded: after a call, while the cached
//! repositories together exceed `GIT_MODEL_CACHE_MAX_BYTES` (default 10 GiB), the least
//! recently used ones not in use are deleted whole.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gitmodel_format::Oid;

use crate::content::Ctx;
use crate::Repo;

/// The remote every cached repository fetches from.
pub const REMOTE: &str = "origin";
/// Default bound of the cache, in bytes.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;

/// A failure to reach or read a git URL.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct RemoteGitError {
    pub url: String,
    /// The HTTP status git reported, when it reported one.
    pub status: Option<u16>,
    pub message: String,
}

/// Where cached repositories live.
pub fn cache_root() -> Result<PathBuf> {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = from_env("GIT_MODEL_CACHE") {
        return Ok(d);
    }
    if let Some(d) = from_env("XDG_CACHE_HOME") {
        return Ok(d.join("git-model"));
    }
    let home = from_env("HOME")
        .ok_or_else(|| crate::usage("no cache directory: set GIT_MODEL_CACHE (or HOME)"))?;
    Ok(home.join(".cache").join("git-model"))
}

/// `GIT_MODEL_CACHE_MAX_BYTES`, else [`DEFAULT_MAX_BYTES`].
pub fn max_bytes() -> Result<u64> {
    match std::env::var("GIT_MODEL_CACHE_MAX_BYTES") {
        Err(_) => Ok(DEFAULT_MAX_BYTES),
        Ok(v) => v.trim().parse().map_err(|_| {
            crate::usage(format!(
                "GIT_MODEL_CACHE_MAX_BYTES is {v:?}; expected a number of bytes"
            ))
        }),
    }
}

/// A cached repository, locked for this process until dropped.
pub struct Cached {
    pub ctx: Ctx,
    pub url: String,
    _lock: File,
    root: PathBuf,
    dir: PathBuf,
}

impl Cached {
    /// Fetches what a read needs when `refresh`, then opens the repository for reading.
    pub fn open(url: &str, refresh: bool) -> Result<Cached> {
        let root = cache_root()?;
        let repos = root.join("repos");
        std::fs::create_dir_all(&repos)
            .with_context(|| format!("creating the cache {}", repos.display()))?;
        let key = Oid::of(url.as_bytes()).to_hex();
        let dir = repos.join(format!("{}.git", &key[..24]));
        let lock = lock(&dir, true)?.context("the cache lock")?;
        let fresh = !dir.join("HEAD").is_file();
        if fresh {
            init(&dir, url)?;
        }
        let repo = Repo::open_at(&dir)?;
        let ctx = Ctx::new(repo)?;
        if fresh || refresh {
            fetch_head(&ctx, url)?;
            crate::registry::fetch(&ctx, REMOTE).map_err(|e| remote_error(url, &e))?;
        }
        Ok(Cached {
            ctx,
            url: url.to_string(),
            _lock: lock,
            root,
            dir,
        })
    }

    /// The commit `rev` names there, fetching it when this cache lacks it.
    pub fn commit(&self, rev: &str) -> Result<git2::Oid> {
        crate::revision::commit_of(&self.ctx, rev, Some(REMOTE))
            .map_err(|e| remote_error_if_fetch(&self.url, e))
    }
}

impl Drop for Cached {
    fn drop(&mut self) {
        if let Ok(max) = max_bytes() {
            if let Err(e) = evict(&self.root.join("repos"), &self.dir, max) {
                tracing::warn!("bounding the cache {}: {e:#}", self.root.display());
            }
        }
    }
}

/// Takes the lock of the cached repository `dir` (blocking, or only if free).
fn lock(dir: &Path, wait: bool) -> Result<Option<File>> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.with_extension("lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| path.display().to_string())?;
    let op = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    match flock(&f, op) {
        Ok(()) => {
            // The lock file's time is the repository's last use.
            let _ = f.set_modified(std::time::SystemTime::now());
            Ok(Some(f))
        }
        Err(e) if !wait && e.kind() == ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(std::io::Error::from(e)).with_context(|| path.display().to_string()),
    }
}

/// A new bare repository for `url`, made in a temporary directory and renamed into place.
fn init(dir: &Path, url: &str) -> Result<()> {
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let git = gitmodel_git::Git::new(tmp.parent().unwrap_or(Path::new(".")));
    let t = tmp.to_string_lossy();
    git.run(&["init", "-q", "--bare", &t])?;
    let inside = gitmodel_git::Git::new(&tmp);
    inside.run(&["config", &format!("remote.{REMOTE}.url"), url])?;
    // Only what is asked for is ever fetched; no tags along the way.
    inside.run(&["config", &format!("remote.{REMOTE}.tagOpt"), "--no-tags"])?;
    std::fs::rename(&tmp, dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

/// The remote's default branch tip, shallow, as this repository's HEAD (its
/// `models.toml` and `.gitmodel` are what stage lookups and the server URL come from).
fn fetch_head(ctx: &Ctx, url: &str) -> Result<()> {
    let out = ctx
        .repo
        .git
        .command()
        .args([
            "fetch",
            "-q",
            "--depth",
            "1",
            REMOTE,
            "+HEAD:refs/heads/remote-head",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .context("running git fetch")?;
    if !out.status.success() {
        return Err(git_failure(url, &String::from_utf8_lossy(&out.stderr)).into());
    }
    ctx.repo
        .git
        .run(&["symbolic-ref", "HEAD", "refs/heads/remote-head"])?;
    Ok(())
}

fn git_failure(url: &str, stderr: &str) -> RemoteGitError {
    // git says e.g. "The requested URL returned error: 401".
    let status = stderr
        .split("returned error: ")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            // Statuses git words instead of numbering them.
            if stderr.contains("Authentication failed")
                || stderr.contains("could not read Username")
            {
                Some(401)
            } else if stderr.contains("not found") {
                Some(404)
            } else {
                None
            }
        });
    let message = redact_all(stderr, url);
    let message = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    RemoteGitError {
        url: redact(url),
        status,
        message: format!("git fetch failed: {message}"),
    }
}

fn remote_error(url: &str, e: &anyhow::Error) -> anyhow::Error {
    git_failure(url, &format!("{e:#}")).into()
}

fn remote_error_if_fetch(url: &str, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<gitmodel_git::GitError>().is_some() {
        remote_error(url, &e)
    } else {
        e
    }
}

/// `text` with `url`'s password, if any, blanked.
fn redact_all(text: &str, url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => text.replace(&url[s + 3..at], "***"),
        _ => text.to_string(),
    }
}

/// `url` without a password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Deletes the least recently used cached repositories (not `current`, none in use)
/// while all of them together take more than `max` bytes.
fn evict(repos: &Path, current: &Path, max: u64) -> Result<()> {
    let mut all = Vec::new();
    let mut total = 0u64;
    for e in std::fs::read_dir(repos)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "git") && p.is_dir() {
            let size = dir_size(&p);
            let used = std::fs::metadata(p.with_extension("lock"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            total += size;
            all.push((used, size, p));
        }
    }
    all.sort();
    for (_, size, p) in all {
        if total <= max {
            break;
        }
        if p == current {
            continue;
        }
        let Some(_held) = lock(&p, false)? else {
            continue; // in use by another process
        };
        std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        total -= size;
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
