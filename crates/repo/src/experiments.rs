//! The experiment views: every version of a file along history ([`file_log`]), what a
//! model version was made from and what a dataset version went into ([`lineage`],
//! [`lineage_reverse`]), and params and metrics across branches ([`compare`]). Typed
//! reports; the CLI, the Python package and the UI render them.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use gitmodel_format::Pointer;
use gitmodel_ml::manifest::Manifest;
use gitmodel_ml::metrics::{self, CompareRow, Comparison, Flat};
use gitmodel_ml::time::format_date;
use serde::Serialize;

use crate::content::{load, load_files, short, Ctx, Kind, Side};
use crate::error::{not_found, usage};

/// A version of a file at a commit: the LFS oid for pointers, the git blob id otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileVersion {
    pub path: String,
    pub id: String,
    pub size: u64,
    /// The commit where the file last changed to this version.
    pub changed_in: String,
    pub date: String,
}

fn version_of(ctx: &Ctx, blob: git2::Oid) -> Result<(String, u64, Option<Pointer>)> {
    let b = ctx.git().find_blob(blob)?;
    Ok(match Pointer::parse(b.content()) {
        Some(p) => (format!("sha256:{}", p.oid), p.size, Some(p)),
        None => (format!("git:{blob}"), b.size() as u64, None),
    })
}

/// Commits from `start` (newest first) where `path`'s blob differs from the first
/// parent's: the versions of the file, with their blob ids (`None`: deleted there).
fn versions(
    ctx: &Ctx,
    start: git2::Oid,
    path: &str,
) -> Result<Vec<(git2::Oid, Option<git2::Oid>)>> {
    let mut walk = ctx.git().revwalk()?;
    walk.push(start)?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)?;
    let mut out = Vec::new();
    for id in walk {
        let c = ctx.git().find_commit(id?)?;
        let mine = ctx.blob_id_at(&c, path);
        let parent = c.parent(0).ok().and_then(|p| ctx.blob_id_at(&p, path));
        if mine != parent && (mine.is_some() || c.parent_count() > 0) {
            out.push((c.id(), mine));
        }
    }
    Ok(out)
}

/// The commit (at or before `start`) where `path` last changed to its content at `start`.
fn last_change(ctx: &Ctx, start: git2::Oid, path: &str) -> Result<Option<git2::Oid>> {
    let c = ctx.git().find_commit(start)?;
    let Some(target) = ctx.blob_id_at(&c, path) else {
        return Ok(None);
    };
    Ok(versions(ctx, start, path)?
        .into_iter()
        .find(|(_, b)| *b == Some(target))
        .map(|(c, _)| c))
}

fn commit_date(ctx: &Ctx, id: git2::Oid) -> String {
    ctx.git()
        .find_commit(id)
        .map(|c| format_date(c.time().seconds()))
        .unwrap_or_default()
}

/// Numeric metrics of the model at `path` (or the repository's) at a commit, compact.
fn metrics_at(ctx: &Ctx, commit: git2::Oid, path: Option<&str>) -> Result<Flat> {
    let side = Side::Rev(commit);
    let manifest = ctx.manifest(side)?;
    let files = match (path, &manifest) {
        (Some(p), Some(m)) => match m.model_for_path(p) {
            Some(spec) if !spec.metrics.is_empty() => spec.metrics.clone(),
            _ => Kind::Metrics.files(Some(m)),
        },
        _ => Kind::Metrics.files(manifest.as_ref()),
    };
    load_files(ctx, side, &files)
}

#[derive(Debug, Serialize)]
pub struct LogEntry {
    pub commit: String,
    pub date: String,
    pub author: String,
    pub subject: String,
    pub id: Option<String>,
    pub size: Option<u64>,
    /// Bytes in chunks the previous version does not have (`None`: unknown).
    pub new_bytes: Option<u64>,
    pub metrics: Flat,
}

/// Every version of the file at `path` (from the repository root) in the history of
/// `rev`, newest first: commit, author, size, the bytes it added to storage, metrics.
pub fn file_log(ctx: &Ctx, path: &str, rev: &str) -> Result<Vec<LogEntry>> {
    let start = ctx.commit(rev)?.id();
    let found = versions(ctx, start, path)?;
    if found.is_empty() {
        return Err(not_found(format!(
            "{path} is in no commit reachable from {rev}"
        )));
    }
    // Oldest first, to know each version's predecessor.
    let mut entries = Vec::new();
    let mut previous: Option<HashSet<gitmodel_format::ChunkId>> = None;
    for (commit, blob) in found.iter().rev() {
        let c = ctx.git().find_commit(*commit)?;
        let mut e = LogEntry {
            commit: commit.to_string(),
            date: format_date(c.time().seconds()),
            author: c.author().name().unwrap_or_default().to_string(),
            subject: c.summary().unwrap_or_default().to_string(),
            id: None,
            size: None,
            new_bytes: None,
            metrics: metrics_at(ctx, *commit, Some(path)).unwrap_or_default(),
        };
        let mut chunks = None;
        if let Some(b) = blob {
            let (id, size, pointer) = version_of(ctx, *b)?;
            e.id = Some(id);
            e.size = Some(size);
            match pointer {
                Some(p) if p.size > 0 => match ctx.chunk_list(&p) {
                    Ok(layout) => {
                        let ids: HashSet<_> = (0..layout.len()).map(|i| layout.id(i)).collect();
                        e.new_bytes = Some(
                            (0..layout.len())
                                .filter(|i| {
                                    previous
                                        .as_ref()
                                        .is_none_or(|prev| !prev.contains(&layout.id(*i)))
                                })
                                .map(|i| {
                                    let r = layout.chunk_range(i);
                                    r.end - r.start
                                })
                                .sum(),
                        );
                        chunks = Some(ids);
                    }
                    Err(err) => tracing::warn!("{path} at {}: {err:#}", short(&e.commit)),
                },
                Some(_) => e.new_bytes = Some(0),
                None => e.new_bytes = Some(size),
            }
        }
        previous = chunks.or(previous.take().filter(|_| blob.is_none()));
        entries.push(e);
    }
    entries.reverse();
    Ok(entries)
}

pub fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once('@') {
        Some((a, b)) if !b.is_empty() => (a, b),
        Some((a, _)) => (a, "HEAD"),
        None => (spec, "HEAD"),
    }
}

#[derive(Debug, Serialize)]
pub struct Lineage {
    pub model: String,
    pub asked: String,
    /// The commit where the model file last changed: the code that produced it.
    pub commit: String,
    pub date: String,
    pub subject: String,
    pub file: FileVersion,
    pub inputs: Vec<Input>,
    pub params: Flat,
    pub metrics: Flat,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub path: String,
    pub version: Option<FileVersion>,
}

fn file_version(ctx: &Ctx, commit: git2::Oid, path: &str) -> Result<Option<FileVersion>> {
    let c = ctx.git().find_commit(commit)?;
    let Some(blob) = ctx.blob_id_at(&c, path) else {
        return Ok(None);
    };
    let (id, size, _) = version_of(ctx, blob)?;
    let changed = last_change(ctx, commit, path)?.unwrap_or(commit);
    Ok(Some(FileVersion {
        path: path.to_string(),
        id,
        size,
        changed_in: changed.to_string(),
        date: commit_date(ctx, changed),
    }))
}

/// What the version of a model at `<model>[@<rev>]` was made from: the commit where its
/// file last changed, the versions of its inputs there, its params and metrics.
pub fn lineage(ctx: &Ctx, spec: &str) -> Result<Lineage> {
    let (name, rev) = split_spec(spec);
    let start = ctx.commit(rev)?.id();
    let manifest = ctx.require_manifest(Side::Rev(start))?;
    let model = manifest.model(name).map_err(|e| not_found(e.to_string()))?;
    let made = last_change(ctx, start, &model.path)?
        .ok_or_else(|| not_found(format!("model {name}: {} is not in {rev}", model.path)))?;
    let c = ctx.git().find_commit(made)?;
    let file = file_version(ctx, made, &model.path)?.context("model file")?;
    let mut inputs = Vec::new();
    for p in &model.inputs {
        inputs.push(Input {
            path: p.clone(),
            version: file_version(ctx, made, p)?,
        });
    }
    let side = Side::Rev(made);
    let l = Lineage {
        model: name.to_string(),
        asked: rev.to_string(),
        commit: made.to_string(),
        date: format_date(c.time().seconds()),
        subject: c.summary().unwrap_or_default().to_string(),
        file,
        inputs,
        params: load_files(ctx, side, &or_all(&model.params, manifest.all_params()))?,
        metrics: load_files(ctx, side, &or_all(&model.metrics, manifest.all_metrics()))?,
    };
    Ok(l)
}

/// The model's own files, else the repository-wide ones.
fn or_all(own: &[String], all: Vec<String>) -> Vec<String> {
    if own.is_empty() {
        all
    } else {
        own.to_vec()
    }
}

#[derive(Debug, Serialize)]
pub struct Trained {
    pub model: String,
    pub commit: String,
    pub date: String,
    pub subject: String,
    pub file: String,
}

/// What [`lineage_reverse`] found.
#[derive(Debug, Serialize)]
pub struct Reverse {
    pub path: String,
    pub rev: String,
    /// The dataset version: `sha256:…` for a pointer, `git:…` for a plain file.
    pub id: String,
    pub trained: Vec<Trained>,
}

/// Which model versions (in this repository's branches) were trained on the version of
/// the dataset `path` at `rev`.
pub fn lineage_reverse(ctx: &Ctx, path: &str, rev: &str) -> Result<Reverse> {
    let at = ctx.commit(rev)?;
    let blob = ctx
        .blob_id_at(&at, path)
        .ok_or_else(|| not_found(format!("{path} is not in {rev}")))?;
    let (target, _, _) = version_of(ctx, blob)?;
    // Every commit reachable from a branch or HEAD.
    let mut walk = ctx.git().revwalk()?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)?;
    walk.push_head().ok();
    walk.push_glob("refs/heads/*")?;
    let mut manifests: HashMap<git2::Oid, Option<Manifest>> = HashMap::new();
    let mut found = Vec::new();
    for id in walk {
        let c = ctx.git().find_commit(id?)?;
        let Some(mblob) = ctx.blob_id_at(&c, gitmodel_ml::manifest::MANIFEST) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = manifests.entry(mblob) {
            slot.insert(ctx.manifest(Side::Rev(c.id())).unwrap_or(None));
        }
        let Some(Some(m)) = manifests.get(&mblob) else {
            continue;
        };
        let parent = c.parent(0).ok();
        for model in m.models.values() {
            if !model.inputs.iter().any(|i| i == path) {
                continue;
            }
            let mine = ctx.blob_id_at(&c, &model.path);
            let before = parent.as_ref().and_then(|p| ctx.blob_id_at(p, &model.path));
            let (Some(mb), true) = (mine, mine != before) else {
                continue;
            };
            let Some(data) = ctx.blob_id_at(&c, path) else {
                continue;
            };
            if version_of(ctx, data)?.0 != target {
                continue;
            }
            found.push(Trained {
                model: model.name.clone(),
                commit: c.id().to_string(),
                date: format_date(c.time().seconds()),
                subject: c.summary().unwrap_or_default().to_string(),
                file: version_of(ctx, mb)?.0,
            });
        }
    }
    Ok(Reverse {
        path: path.to_string(),
        rev: rev.to_string(),
        id: target,
        trained: found,
    })
}

/// Branches (or other refs) named by `pattern`: a glob over branches, remote-tracking
/// branches and tags, or one revision.
pub fn expand(ctx: &Ctx, pattern: &str) -> Result<Vec<(String, git2::Oid)>> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![(pattern.to_string(), ctx.commit(pattern)?.id())]);
    }
    for ns in ["refs/heads/", "refs/remotes/", "refs/tags/"] {
        let mut out = Vec::new();
        for r in ctx.git().references_glob(&format!("{ns}{pattern}"))? {
            let r = r?;
            let name = r.name().unwrap_or_default();
            let short = name.strip_prefix(ns).unwrap_or(name).to_string();
            if let Ok(c) = r.peel_to_commit() {
                out.push((short, c.id()));
            }
        }
        if !out.is_empty() {
            out.sort();
            return Ok(out);
        }
    }
    Err(not_found(format!("no branch or tag matches {pattern:?}")))
}

/// Params and metrics of every revision `refs` name (patterns like `exp/*` match
/// branches), the first being the baseline; the rows after it ordered by the metric
/// `sort` (descending unless `ascending`).
pub fn compare(
    ctx: &Ctx,
    refs: &[String],
    sort: Option<&str>,
    ascending: bool,
) -> Result<Comparison> {
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for pattern in refs {
        for (name, commit) in expand(ctx, pattern)? {
            if !seen.insert(name.clone()) {
                continue;
            }
            let side = Side::Rev(commit);
            rows.push(CompareRow {
                name,
                commit: short(&commit.to_string()).to_string(),
                params: load(ctx, side, Kind::Params)?,
                metrics: load(ctx, side, Kind::Metrics)?,
                deltas: Default::default(),
            });
        }
    }
    metrics::compare(rows, sort, ascending).map_err(|e| usage(e.to_string()))
}

/// Writes `values` into the working tree's metrics (or params) file: the first one
/// `models.toml` names for `model` (for no model: the repository's first), else the
/// default (`metrics.json`, `params.yaml`). Merged with what the file holds (nested
/// tables key by key, the new value winning), written atomically; JSON, YAML or TOML by
/// the file's extension. Returns the file's path from the repository root.
pub fn log_values(
    ctx: &Ctx,
    kind: Kind,
    model: Option<&str>,
    values: serde_json::Map<String, serde_json::Value>,
) -> Result<String> {
    let workdir = ctx.repo.workdir()?.clone();
    let manifest = ctx.manifest(Side::Worktree)?;
    let named = match (&manifest, model) {
        (Some(m), Some(name)) => {
            let spec = m.model(name).map_err(|e| not_found(e.to_string()))?;
            match kind {
                Kind::Metrics => spec.metrics.clone(),
                Kind::Params => spec.params.clone(),
            }
        }
        (None, Some(name)) => {
            return Err(not_found(format!(
                "model {name:?}: there is no {} in the working tree",
                gitmodel_ml::manifest::MANIFEST
            )))
        }
        (m, None) => kind.files(m.as_ref()),
    };
    let file = match named.first() {
        Some(f) => f.clone(),
        None => kind.files(None).remove(0),
    };
    let full = workdir.join(&file);
    let ext = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let format = match ext.as_deref() {
        Some("json") => ValuesFormat::Json,
        Some("yaml" | "yml") => ValuesFormat::Yaml,
        Some("toml") => ValuesFormat::Toml,
        _ => {
            return Err(usage(format!(
                "{file}: cannot write {} there: name a .json, .yaml or .toml file in {}",
                kind.name(),
                gitmodel_ml::manifest::MANIFEST
            )))
        }
    };
    let mut have = match std::fs::read(&full) {
        Ok(bytes) => format
            .parse(&bytes)
            .with_context(|| format!("{file}: reading the {} there", kind.name()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            serde_json::Value::Object(Default::default())
        }
        Err(e) => return Err(e).with_context(|| full.display().to_string()),
    };
    merge_into(&mut have, serde_json::Value::Object(values));
    let text = format
        .render(&have)
        .with_context(|| format!("{file}: writing"))?;
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    gitmodel_store::fsutil::write_atomic(&full, text.as_bytes())
        .with_context(|| full.display().to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o644))
        .with_context(|| full.display().to_string())?;
    Ok(file)
}

#[derive(Clone, Copy)]
enum ValuesFormat {
    Json,
    Yaml,
    Toml,
}

impl ValuesFormat {
    fn parse(self, bytes: &[u8]) -> Result<serde_json::Value> {
        let text = std::str::from_utf8(bytes).context("not UTF-8")?;
        let v: serde_json::Value = match self {
            ValuesFormat::Json => serde_json::from_str(text)?,
            ValuesFormat::Yaml => serde_yaml::from_str(text)?,
            ValuesFormat::Toml => toml::from_str(text)?,
        };
        if !v.is_object() {
            anyhow::bail!("the file holds no table of values");
        }
        Ok(v)
    }

    fn render(self, v: &serde_json::Value) -> Result<String> {
        Ok(match self {
            ValuesFormat::Json => serde_json::to_string_pretty(v)? + "\n",
            ValuesFormat::Yaml => serde_yaml::to_string(v)?,
            ValuesFormat::Toml => toml::to_string_pretty(v)?,
        })
    }
}

/// `new`'s keys into `into`, tables merged key by key.
fn merge_into(into: &mut serde_json::Value, new: serde_json::Value) {
    match (into, new) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge_into(slot, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
