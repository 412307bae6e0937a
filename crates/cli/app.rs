//! What every command needs: the repository, its local store, the server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gitmodel_client::{Auth, Remote};
use gitmodel_git::config::{self, Setting};
use gitmodel_git::Git;
use gitmodel_store::LocalStore;

/// An error in how git-model was called or configured (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

pub struct Repo {
    pub git: Git,
    pub repo: git2::Repository,
    pub workdir: Option<PathBuf>,
}

impl Repo {
    pub fn open() -> Result<Repo> {
        let cwd = std::env::current_dir().context("current directory")?;
        let repo = gitmodel_git::open_repo(&cwd).map_err(|_| usage("not in a git repository"))?;
        let workdir = repo.workdir().map(|p| p.to_path_buf());
        let git = Git::new(workdir.clone().unwrap_or_else(|| cwd.clone()));
        Ok(Repo { git, repo, workdir })
    }

    pub fn workdir(&self) -> Result<&PathBuf> {
        self.workdir
            .as_ref()
            .ok_or_else(|| usage("this command needs a working tree (not a bare repository)"))
    }

    pub fn store(&self) -> Result<LocalStore> {
        let dir = gitmodel_git::store_dir(&self.repo);
        LocalStore::open(&dir).with_context(|| format!("opening the local store {}", dir.display()))
    }

    pub fn url_setting(&self) -> Result<Option<Setting>> {
        Ok(config::get(&self.git, "url", Some("GIT_MODEL_URL"))?)
    }

    pub fn remote(&self) -> Result<Remote> {
        let Some(url) = self.url_setting()? else {
            return Err(usage(
                "no server configured: set model.url, e.g. \
                 `git config -f .gitmodel model.url http://host:8080/<namespace>/<repo>`",
            ));
        };
        Ok(Remote::new(&url.value, auth())?)
    }
}

/// Credentials from the environment (for CI); never printed.
pub fn auth() -> Auth {
    match std::env::var("GIT_MODEL_TOKEN") {
        Ok(t) if !t.is_empty() => Auth::Bearer(t),
        _ => Auth::None,
    }
}
