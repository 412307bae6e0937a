//! git-model's git integration: what it takes for plain `git add / commit / push / clone`
//! to route large files through git-model.
//!
//! - [`pktline`] and [`filter`]: git's long-running filter protocol (sans policy).
//! - [`setup`]: `install` / `uninstall` (filter config, hooks), `track` / `untrack`.
//! - [`scan`]: finding pointer blobs in commits, trees and the index.
//! - [`config`]: `model.*` settings from the environment, git config and `.gitmodel`.
//! - [`Git`]: running the `git` binary in a repository, with errors that say what failed.
#![forbid(unsafe_code)]

pub mod config;
pub mod filter;
pub mod pktline;
pub mod scan;
pub mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run git {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("git {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("{0}")]
    Git2(#[from] git2::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// The `git` binary, run in one directory.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
}

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Runs git and returns its stdout, trimmed of the final newline.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.ends_with('\n') {
            s.pop();
        }
        Ok(s)
    }

    /// Runs git; `None` when it exits non-zero (e.g. `git config --get` of an unset key).
    pub fn try_run(&self, args: &[&str]) -> Result<Option<String>> {
        let out = self.output(args)?;
        if !out.status.success() {
            return Ok(None);
        }
        let s = String::from_utf8_lossy(&out.stdout);
        Ok(Some(s.strip_suffix('\n').unwrap_or(&s).to_string()))
    }

    fn output(&self, args: &[&str]) -> Result<std::process::Output> {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| GitError::Spawn {
                args: args.join(" "),
                source,
            })
    }
}

/// Opens the repository containing `dir` (honouring `GIT_DIR` and friends).
pub fn open_repo(dir: &Path) -> Result<git2::Repository> {
    Ok(git2::Repository::open_ext(
        dir,
        git2::RepositoryOpenFlags::FROM_ENV,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .or_else(|_| git2::Repository::discover(dir))?)
}

/// Where the local chunk store lives: `<common git dir>/model`.
pub fn store_dir(repo: &git2::Repository) -> PathBuf {
    repo.commondir().join("model")
}
