//! `install` / `uninstall` (filter driver config and the pre-push hook) and `track` /
//! `untrack` (`.gitattributes` lines).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Git, GitError, Result};

/// Marker line identifying hooks written by git-model.
pub const HOOK_MARKER: &str = "# git-model pre-push hook";
/// An existing hook found at install time is kept under this name and run first.
pub const CHAINED_SUFFIX: &str = ".pre-git-model";
/// The attributes `track` writes.
pub const ATTRS: &str = "filter=model diff=model merge=model -text";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Local,
}

impl Scope {
    fn flag(self) -> &'static str {
        match self {
            Scope::Global => "--global",
            Scope::Local => "--local",
        }
    }
}

/// The filter and diff driver settings `install` writes (and `uninstall` removes).
pub fn filter_config(exe: &str) -> Vec<(&'static str, String)> {
    vec![
        ("filter.model.process", format!("{exe} filter-process")),
        ("filter.model.clean", format!("{exe} clean -- %f")),
        ("filter.model.smudge", format!("{exe} smudge -- %f")),
        ("filter.model.required", "true".to_string()),
        // `diff=model` (written by `track`): plain `git diff` prints git-model's
        // per-tensor / per-row summary; `git log -p` (no external diffs) diffs a
        // textual rendering instead, cached per blob in refs/notes/textconv/model.
        ("diff.model.command", format!("{exe} diff-driver")),
        ("diff.model.textconv", format!("{exe} textconv")),
        ("diff.model.cachetextconv", "true".to_string()),
        // `merge=model` (written by `track`): git merges pointers; the driver takes the
        // side that changed, merges keyed tables row by row, and explains a conflict.
        // %X/%Y (ours'/theirs' labels, git 2.44+) let it name the sides' commits.
        (
            "merge.model.name",
            "git-model: models and datasets".to_string(),
        ),
        (
            "merge.model.driver",
            format!("{exe} merge-driver %O %A %B %P %X %Y"),
        ),
    ]
}

pub fn install_filter(git: &Git, scope: Scope) -> Result<()> {
    for (key, value) in filter_config("git-model") {
        git.run(&["config", scope.flag(), "--replace-all", key, &value])?;
    }
    Ok(())
}

pub fn uninstall_filter(git: &Git, scope: Scope) -> Result<()> {
    for (key, _) in filter_config("git-model") {
        // Unset fails when the key is absent, which is fine.
        git.try_run(&["config", scope.flag(), "--unset-all", key])?;
    }
    Ok(())
}

/// The hooks directory git uses for this repository (honours `core.hooksPath`).
pub fn hooks_dir(git: &Git) -> Result<PathBuf> {
    let p = PathBuf::from(git.run(&["rev-parse", "--git-path", "hooks"])?);
    Ok(if p.is_absolute() {
        p
    } else {
        git.dir().join(p)
    })
}

fn hook_script() -> String {
    format!(
        r#"#!/bin/sh
{HOOK_MARKER}: uploads the content of pointer files before git pushes them.
# Installed by `git model install`; a hook that was here before runs first.
command -v git-model >/dev/null 2>&1 || {{
    echo >&2 "git-model is not on PATH: the push would publish pointers without content."
    echo >&2 "Install git-model, or remove this hook ($0)."
    exit 2
}}
input=$(cat)
chained="$0{CHAINED_SUFFIX}"
if [ -x "$chained" ]; then
    printf '%s\n' "$input" | "$chained" "$@" || exit $?
fi
printf '%s\n' "$input" | git-model pre-push "$@"
"#
    )
}

/// Whether the pre-push hook is in place.
pub fn hooks_installed(git: &Git) -> Result<bool> {
    let hook = hooks_dir(git)?.join("pre-push");
    Ok(fs::read_to_string(hook)
        .map(|s| s.contains(HOOK_MARKER))
        .unwrap_or(false))
}

/// Installs the pre-push hook, keeping (and chaining) a foreign one.
pub fn install_hooks(git: &Git) -> Result<PathBuf> {
    let dir = hooks_dir(git)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GitError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let hook = dir.join("pre-push");
    if let Ok(existing) = fs::read_to_string(&hook) {
        if !existing.contains(HOOK_MARKER) {
            let chained = dir.join(format!("pre-push{CHAINED_SUFFIX}"));
            if chained.exists() {
                return Err(GitError::Invalid(format!(
                    "both {} and {} exist; merge them by hand",
                    hook.display(),
                    chained.display()
                )));
            }
            fs::rename(&hook, &chained).map_err(io(&hook))?;
        }
    }
    let tmp = dir.join(".pre-push.git-model-tmp");
    fs::write(&tmp, hook_script()).map_err(io(&tmp))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
    fs::rename(&tmp, &hook).map_err(io(&hook))?;
    Ok(hook)
}

/// Removes our hook and restores a chained one.
pub fn uninstall_hooks(git: &Git) -> Result<()> {
    let dir = hooks_dir(git)?;
    let hook = dir.join("pre-push");
    if hooks_installed(git)? {
        fs::remove_file(&hook).map_err(|source| GitError::Io {
            path: hook.clone(),
            source,
        })?;
        let chained = dir.join(format!("pre-push{CHAINED_SUFFIX}"));
        if chained.exists() {
            fs::rename(&chained, &hook).map_err(|source| GitError::Io {
                path: chained,
                source,
            })?;
        }
    }
    Ok(())
}

/// Escapes a pattern for `.gitattributes`: whitespace would end the pattern.
fn escape_pattern(p: &str) -> String {
    p.replace(' ', "[[:space:]]")
}

/// Adds `<pattern> filter=model …` lines; returns the patterns that were new.
pub fn track(worktree: &Path, patterns: &[String]) -> Result<Vec<String>> {
    let path = worktree.join(".gitattributes");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    let mut added = Vec::new();
    for p in patterns {
        let pat = escape_pattern(p);
        let line = format!("{pat} {ATTRS}");
        if text.lines().any(|l| l.trim() == line) {
            continue;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        added.push(p.clone());
    }
    if !added.is_empty() {
        fs::write(&path, text).map_err(|source| GitError::Io { path, source })?;
    }
    Ok(added)
}

/// Removes the lines `track` wrote for these patterns; returns the ones removed.
pub fn untrack(worktree: &Path, patterns: &[String]) -> Result<Vec<String>> {
    let path = worktree.join(".gitattributes");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let hit = patterns
                .iter()
                .find(|p| l.trim() == format!("{} {ATTRS}", escape_pattern(p)));
            if let Some(p) = hit {
                removed.push(p.clone());
            }
            hit.is_none()
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    fs::write(&path, out).map_err(|source| GitError::Io { path, source })?;
    Ok(removed)
}

/// Patterns currently tracked (lines of `.gitattributes` with `filter=model`).
pub fn tracked_patterns(worktree: &Path) -> Vec<String> {
    fs::read_to_string(worktree.join(".gitattributes"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().skip(1).any(|a| a == "filter=model"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| p.replace("[[:space:]]", " "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_untrack() {
        let dir = tempfile_dir();
        fs::write(dir.join(".gitattributes"), "*.txt text").unwrap();
        let added = track(&dir, &["*.bin".into(), "my model.pt".into()]).unwrap();
        assert_eq!(added.len(), 2);
        assert!(track(&dir, &["*.bin".into()]).unwrap().is_empty());
        let text = fs::read_to_string(dir.join(".gitattributes")).unwrap();
        assert_eq!(
            text,
            "*.txt text\n*.bin filter=model diff=model merge=model -text\nmy[[:space:]]model.pt filter=model diff=model merge=model -text\n"
        );
        assert_eq!(tracked_patterns(&dir), vec!["*.bin", "my model.pt"]);
        untrack(&dir, &["*.bin".into()]).unwrap();
        assert_eq!(tracked_patterns(&dir), vec!["my model.pt"]);
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("gitmodel-setup-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
