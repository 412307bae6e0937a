//! `model.*` settings and where each came from. Precedence, highest first: the
//! environment (`GIT_MODEL_URL`), git config (`model.url`, any scope), then the committed
//! `.gitmodel` file (git-config syntax: worktree copy, else the index, else `HEAD`).

use crate::{Git, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Env(&'static str),
    GitConfig,
    GitModelFile(String),
    /// Derived from a Git LFS endpoint (`lfs.url`, `.lfsconfig`) of a git-model server.
    Lfs(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(var) => write!(f, "environment {var}"),
            Source::GitConfig => f.write_str("git config"),
            Source::GitModelFile(where_) => write!(f, ".gitmodel ({where_})"),
            Source::Lfs(where_) => write!(f, "{where_}, as a git-model-server LFS endpoint"),
        }
    }
}

/// A resolved value with its origin.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: String,
    pub source: Source,
}

/// Resolves `model.<key>`; `env` names the overriding environment variable, if any.
pub fn get(git: &Git, key: &str, env: Option<&'static str>) -> Result<Option<Setting>> {
    if let Some(var) = env {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return Ok(Some(Setting {
                    value: v,
                    source: Source::Env(var),
                }));
            }
        }
    }
    let full = format!("model.{key}");
    if let Some(v) = git.try_run(&["config", "--get", &full])? {
        return Ok(Some(Setting {
            value: v,
            source: Source::GitConfig,
        }));
    }
    let top = git.try_run(&["rev-parse", "--show-toplevel"])?;
    if let Some(top) = top {
        let file = std::path::Path::new(&top).join(".gitmodel");
        if file.is_file() {
            let f = file.to_string_lossy().into_owned();
            return Ok(git
                .try_run(&["config", "-f", &f, "--get", &full])?
                .map(|value| Setting {
                    value,
                    source: Source::GitModelFile("working tree".into()),
                }));
        }
    }
    for (blob, label) in [(":.gitmodel", "index"), ("HEAD:.gitmodel", "HEAD")] {
        if let Some(v) = git.try_run(&["config", "--blob", blob, "--get", &full])? {
            return Ok(Some(Setting {
                value: v,
                source: Source::GitModelFile(label.into()),
            }));
        }
    }
    Ok(None)
}

/// The Git LFS endpoint configured for this repository: `lfs.url` in git config, else in
/// the committed `.lfsconfig`, else `remote.origin.lfsurl`. (The default derived from the
/// remote URL is not considered: it says nothing about which server speaks git-model.)
pub fn lfs_url(git: &Git) -> Result<Option<(String, String)>> {
    if let Some(v) = git.try_run(&["config", "--get", "lfs.url"])? {
        return Ok(Some((v, "lfs.url".into())));
    }
    if let Some(top) = git.try_run(&["rev-parse", "--show-toplevel"])? {
        let file = std::path::Path::new(&top).join(".lfsconfig");
        if file.is_file() {
            let f = file.to_string_lossy().into_owned();
            if let Some(v) = git.try_run(&["config", "-f", &f, "--get", "lfs.url"])? {
                return Ok(Some((v, ".lfsconfig".into())));
            }
        }
    }
    for blob in [":.lfsconfig", "HEAD:.lfsconfig"] {
        if let Some(v) = git.try_run(&["config", "--blob", blob, "--get", "lfs.url"])? {
            return Ok(Some((v, ".lfsconfig".into())));
        }
    }
    Ok(git
        .try_run(&["config", "--get", "remote.origin.lfsurl"])?
        .map(|v| (v, "remote.origin.lfsurl".into())))
}

/// The git-model repository URL behind an LFS endpoint of git-model-server:
/// `<server>/<ns>/<repo>[.git]/info/lfs` → `<server>/<ns>/<repo>`.
pub fn model_url_from_lfs(lfs: &str) -> Option<String> {
    let base = lfs.trim_end_matches('/').strip_suffix("/info/lfs")?;
    Some(base.strip_suffix(".git").unwrap_or(base).to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lfs_endpoint_to_model_url() {
        use super::model_url_from_lfs as f;
        assert_eq!(
            f("http://h:1/a/b.git/info/lfs").as_deref(),
            Some("http://h:1/a/b")
        );
        assert_eq!(
            f("http://h:1/a/b/info/lfs/").as_deref(),
            Some("http://h:1/a/b")
        );
        assert_eq!(f("http://h:1/a/b"), None);
    }
}
