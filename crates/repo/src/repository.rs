//! A git repository with its local store and its server: what every operation needs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gitmodel_client::{Auth, GitCredentialHelper, Remote, RemoteOptions, TlsOptions};
use gitmodel_git::config::{self, Setting};
use gitmodel_git::Git;
use gitmodel_store::{Durability, LocalStore};

use crate::error::usage;

/// An opened repository: git (the `git` binary for config and plumbing, libgit2 for
/// objects and refs) and, when it has one, its working tree.
pub struct Repo {
    pub git: Git,
    pub repo: git2::Repository,
    pub workdir: Option<PathBuf>,
}

impl Repo {
    /// The repository the current directory is in.
    pub fn open() -> Result<Repo> {
        let cwd = std::env::current_dir().context("current directory")?;
        Repo::open_at(&cwd)
    }

    /// The repository `dir` is in (a working tree or any directory below it, or a
    /// `.git` / bare directory).
    pub fn open_at(dir: &Path) -> Result<Repo> {
        let repo = gitmodel_git::open_repo(dir).map_err(|_| usage("not in a git repository"))?;
        let workdir = repo.workdir().map(|p| p.to_path_buf());
        let git = Git::new(workdir.clone().unwrap_or_else(|| dir.to_path_buf()));
        Ok(Repo { git, repo, workdir })
    }

    pub fn workdir(&self) -> Result<&PathBuf> {
        self.workdir
            .as_ref()
            .ok_or_else(|| usage("this command needs a working tree (not a bare repository)"))
    }

    /// The local chunk store. `model.fsync`: `batch` (default) makes a command's writes
    /// durable together before it exits; `always` fsyncs every file as it is written.
    pub fn store(&self) -> Result<LocalStore> {
        let dir = gitmodel_git::store_dir(&self.repo);
        let durability = match self
            .git
            .try_run(&["config", "--get", "model.fsync"])?
            .as_deref()
        {
            None | Some("batch") => Durability::Batch,
            Some("always") => Durability::Immediate,
            Some(other) => {
                return Err(usage(format!(
                    "model.fsync is {other:?}; expected \"batch\" or \"always\""
                )))
            }
        };
        LocalStore::open_with(&dir, durability)
            .with_context(|| format!("opening the local store {}", dir.display()))
    }

    pub fn url_setting(&self) -> Result<Option<Setting>> {
        if let Some(s) = config::get(&self.git, "url", Some("GIT_MODEL_URL"))? {
            return Ok(Some(s));
        }
        // A Git LFS repository pointed at git-model-server needs no extra setting.
        Ok(config::lfs_url(&self.git)?.and_then(|(url, origin)| {
            config::model_url_from_lfs(&url).map(|value| Setting {
                value,
                source: config::Source::Lfs(origin),
            })
        }))
    }

    pub fn remote(&self) -> Result<Remote> {
        let Some(url) = self.url_setting()? else {
            return Err(usage(
                "no server configured: set model.url, e.g. \
                 `git config -f .gitmodel model.url http://host:8080/<namespace>/<repo>`",
            ));
        };
        let options = RemoteOptions {
            auth: auth(),
            // Asked on a 401 when GIT_MODEL_TOKEN is unset: any git credential helper.
            credentials: Some(std::sync::Arc::new(GitCredentialHelper::new(
                self.git.dir(),
            ))),
            tls: tls_options(&self.git, &url.value)?,
            transfer_timeout: self.transfer_timeout()?,
        };
        Ok(Remote::with_options(&url.value, options)?)
    }
}

impl Repo {
    /// `GIT_MODEL_TRANSFER_TIMEOUT`, else `model.transferTimeout`: seconds every call to
    /// the server may take at most, retries included; unset, the client allows 60 s plus
    /// 4 s per MiB the call may move.
    fn transfer_timeout(&self) -> Result<Option<std::time::Duration>> {
        let Some(s) = config::get(
            &self.git,
            "transferTimeout",
            Some("GIT_MODEL_TRANSFER_TIMEOUT"),
        )?
        else {
            return Ok(None);
        };
        match s.value.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => {
                Ok(Some(std::time::Duration::from_secs_f64(secs)))
            }
            _ => Err(usage(format!(
                "model.transferTimeout ({}) is {:?}; expected a number of seconds, e.g. 600",
                s.source, s.value
            ))),
        }
    }
}

/// Credentials from the environment (for CI); never printed.
pub fn auth() -> Auth {
    match std::env::var("GIT_MODEL_TOKEN") {
        Ok(t) if !t.is_empty() => Auth::Bearer(t),
        _ => Auth::None,
    }
}

/// TLS settings as git itself reads them for `url`: `GIT_SSL_CAINFO` and
/// `GIT_SSL_NO_VERIFY`, else `http.sslCAInfo` and `http.sslVerify` (including their
/// `http.<url>.*` forms).
pub fn tls_options(git: &Git, url: &str) -> Result<TlsOptions> {
    let get = |key: &str, kind: &str| git.try_run(&["config", kind, "--get-urlmatch", key, url]);
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let ca_file = match env("GIT_SSL_CAINFO") {
        Some(path) => Some(PathBuf::from(path)),
        None => get("http.sslcainfo", "--path")?.map(PathBuf::from),
    };
    let verify = match env("GIT_SSL_NO_VERIFY") {
        Some(_) => false,
        None => get("http.sslverify", "--bool")?.as_deref() != Some("false"),
    };
    Ok(TlsOptions { ca_file, verify })
}
