//! Which tracked paths a fetch, pull or checkout downloads: `--include` / `--exclude`
//! globs, defaulting to `model.fetchinclude` / `model.fetchexclude` (comma-separated).
//!
//! Patterns follow gitignore habits: one without a `/` matches a file name at any depth
//! (`*.bin`), one with a `/` matches from the repository root (`data/*.csv`), and a
//! pattern also matches everything under a directory it names (`models`).

use anyhow::{Context, Result};
use gitmodel_git::Git;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn glob(pattern: &str) -> Result<Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .with_context(|| format!("invalid pattern {pattern:?}"))
}

fn build(patterns: &[String]) -> Result<Option<GlobSet>> {
    let mut b = GlobSetBuilder::new();
    let mut any = false;
    for p in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let p = p.trim_start_matches('/').trim_end_matches('/');
        any = true;
        if p.contains('/') {
            b.add(glob(p)?);
            b.add(glob(&format!("{p}/**"))?);
        } else {
            b.add(glob(&format!("**/{p}"))?);
            b.add(glob(&format!("**/{p}/**"))?);
        }
    }
    Ok(if any { Some(b.build()?) } else { None })
}

fn split(value: Option<String>) -> Vec<String> {
    value
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

impl PathFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathFilter> {
        Ok(PathFilter {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// Flags when given, else the repository's `model.fetchinclude` / `fetchexclude`.
    pub fn from_flags_or_config(
        git: &Git,
        include: &[String],
        exclude: &[String],
    ) -> Result<PathFilter> {
        let include = if include.is_empty() {
            split(git.try_run(&["config", "--get", "model.fetchinclude"])?)
        } else {
            include.to_vec()
        };
        let exclude = if exclude.is_empty() {
            split(git.try_run(&["config", "--get", "model.fetchexclude"])?)
        } else {
            exclude.to_vec()
        };
        PathFilter::new(&include, &exclude)
    }

    pub fn allows(&self, path: &str) -> bool {
        let included = self.include.as_ref().is_none_or(|s| s.is_match(path));
        let excluded = self.exclude.as_ref().is_some_and(|s| s.is_match(path));
        included && !excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let f =
            PathFilter::new(&["data/*.csv".into(), "models".into()], &["*.tmp".into()]).unwrap();
        assert!(f.allows("data/a.csv"));
        assert!(!f.allows("data/sub/a.csv"));
        assert!(!f.allows("other/data/a.csv"));
        assert!(f.allows("models/x/y.bin"));
        assert!(f.allows("a/models/y.bin"));
        assert!(!f.allows("models/x.tmp"));
        assert!(!f.allows("weights.bin"));
        let all = PathFilter::new(&[], &["*.bin".into()]).unwrap();
        assert!(all.allows("a.safetensors"));
        assert!(!all.allows("deep/dir/w.bin"));
    }
}
