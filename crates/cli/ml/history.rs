//! `git model log <path>` (every version of a file, what each added to storage, its
//! metrics) and `git model lineage` (what a model version was made from, and which model
//! versions a dataset version went into).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use gitmodel_format::Pointer;
use gitmodel_ml::manifest::Manifest;
use gitmodel_ml::metrics::{self, Flat};
use gitmodel_ml::tensor::human_bytes;
use gitmodel_ml::time::format_date;
use serde::Serialize;

use super::tables::{self, Kind};
use super::{short, Ctx, Side};
use gitmodel_repo::usage;

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
    tables::load_files(ctx, side, &files)
}

fn compact(flat: &Flat) -> String {
    flat.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Serialize)]
struct LogEntry {
    commit: String,
    date: String,
    author: String,
    subject: String,
    id: Option<String>,
    size: Option<u64>,
    /// Bytes in chunks the previous version does not have (`None`: unknown).
    new_bytes: Option<u64>,
    metrics: Flat,
}

/// `git model log <path>`.
pub fn log(path: &str, rev: &str, json: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    let start = ctx.commit(rev)?.id();
    let path = &super::repo_path(&ctx, path);
    let found = versions(&ctx, start, path)?;
    if found.is_empty() {
        return Err(usage(format!(
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
            metrics: metrics_at(&ctx, *commit, Some(path)).unwrap_or_default(),
        };
        let mut chunks = None;
        if let Some(b) = blob {
            let (id, size, pointer) = version_of(&ctx, *b)?;
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
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                short(&e.commit).to_string(),
                e.date.clone(),
                e.author.clone(),
                e.size.map(human_bytes).unwrap_or_else(|| "deleted".into()),
                e.new_bytes.map(human_bytes).unwrap_or_else(|| "?".into()),
                compact(&e.metrics),
                e.subject.clone(),
            ]
        })
        .collect();
    let header: Vec<String> = [
        "commit", "date", "author", "size", "new", "metrics", "subject",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    print!("{}", metrics::markdown(&header, &rows));
    Ok(())
}

fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once('@') {
        Some((a, b)) if !b.is_empty() => (a, b),
        Some((a, _)) => (a, "HEAD"),
        None => (spec, "HEAD"),
    }
}

#[derive(Serialize)]
struct Lineage {
    model: String,
    asked: String,
    /// The commit where the model file last changed: the code that produced it.
    commit: String,
    date: String,
    subject: String,
    file: FileVersion,
    inputs: Vec<Input>,
    params: Flat,
    metrics: Flat,
}

#[derive(Serialize)]
struct Input {
    path: String,
    version: Option<FileVersion>,
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

/// `git model lineage <model>[@<rev>]`.
pub fn lineage(spec: &str, json: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    let (name, rev) = split_spec(spec);
    let start = ctx.commit(rev)?.id();
    let manifest = ctx.require_manifest(Side::Rev(start))?;
    let model = manifest.model(name).map_err(|e| usage(e.to_string()))?;
    let made = last_change(&ctx, start, &model.path)?
        .ok_or_else(|| usage(format!("model {name}: {} is not in {rev}", model.path)))?;
    let c = ctx.git().find_commit(made)?;
    let file = file_version(&ctx, made, &model.path)?.context("model file")?;
    let mut inputs = Vec::new();
    for p in &model.inputs {
        inputs.push(Input {
            path: p.clone(),
            version: file_version(&ctx, made, p)?,
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
        params: tables::load_files(&ctx, side, &or_all(&model.params, manifest.all_params()))?,
        metrics: tables::load_files(&ctx, side, &or_all(&model.metrics, manifest.all_metrics()))?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&l)?);
        return Ok(());
    }
    println!(
        "model {} ({}, {}) as of {}",
        l.model,
        l.file.path,
        human_bytes(l.file.size),
        l.asked
    );
    println!("  version  {}", l.file.id);
    println!("  code     {} {} {}", short(&l.commit), l.date, l.subject);
    println!("  inputs:");
    if l.inputs.is_empty() {
        println!("    (none listed in models.toml)");
    }
    for i in &l.inputs {
        match &i.version {
            Some(v) => println!(
                "    {}  {}  {}  changed in {} ({})",
                i.path,
                short_id(&v.id),
                human_bytes(v.size),
                short(&v.changed_in),
                v.date
            ),
            None => println!("    {}  (missing at {})", i.path, short(&l.commit)),
        }
    }
    if !l.params.is_empty() {
        println!("  params:   {}", compact(&l.params));
    }
    if !l.metrics.is_empty() {
        println!("  metrics:  {}", compact(&l.metrics));
    }
    Ok(())
}

/// The model's own files, else the repository-wide ones.
fn or_all(own: &[String], all: Vec<String>) -> Vec<String> {
    if own.is_empty() {
        all
    } else {
        own.to_vec()
    }
}

fn short_id(id: &str) -> String {
    match id.split_once(':') {
        Some((kind, hex)) => format!("{kind}:{}", gitmodel_ml::registry::prefix(hex, 12)),
        None => id.to_string(),
    }
}

#[derive(Serialize)]
struct Trained {
    model: String,
    commit: String,
    date: String,
    subject: String,
    file: String,
}

/// `git model lineage --reverse <dataset>[@<rev>]`.
pub fn lineage_reverse(spec: &str, json: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    let (given, rev) = split_spec(spec);
    let path = &super::repo_path(&ctx, given);
    let at = ctx.commit(rev)?;
    let blob = ctx
        .blob_id_at(&at, path)
        .ok_or_else(|| usage(format!("{path} is not in {rev}")))?;
    let (target, _, _) = version_of(&ctx, blob)?;
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
            if version_of(&ctx, data)?.0 != target {
                continue;
            }
            found.push(Trained {
                model: model.name.clone(),
                commit: c.id().to_string(),
                date: format_date(c.time().seconds()),
                subject: c.summary().unwrap_or_default().to_string(),
                file: version_of(&ctx, mb)?.0,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    println!("{path} {} (at {rev})", short_id(&target));
    if found.is_empty() {
        println!("  no model version in this repository's branches was trained on it");
    }
    for t in &found {
        println!(
            "  {}@{}  {}  {}  {}",
            t.model,
            short(&t.commit),
            t.date,
            short_id(&t.file),
            t.subject
        );
    }
    Ok(())
}
