//! `model.*` settings and where each came from. Precedence, highest first: the
//! environment (`GIT_MODEL_URL`), git config (`model.url`, any scope), then the committed
//! `.gitmodel` file (git-config syntax: worktree copy, else the index, else `HEAD`).

use crate::{Git, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Env(&'static str),
    GitConfig,
    GitModelFile(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(var) => write!(f, "environment {var}"),
            Source::GitConfig => f.write_str("git config"),
            Source::GitModelFile(where_) => write!(f, ".gitmodel ({where_})"),
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
