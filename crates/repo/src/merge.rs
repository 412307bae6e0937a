//! git's merge driver for `merge=model` files: the three versions git hands it, the
//! result in ours' file.
//!
//! git merges the stored blobs, which for tracked files are pointers: the driver gets
//! three temp files holding the base's, ours' and theirs' pointer, and leaves the result
//! (a pointer) in ours' file. One side changed → that side. Both changed a table whose
//! path has a `merge-key` attribute → a row-wise merge ([`gitmodel_ml::merge`]); the
//! merged content is cleaned into the local store like any `git add`, so the checkout
//! that follows writes it and the next push uploads it. Anything else both sides changed
//! is a conflict: ours stays in place and the message names each side's version, what it
//! changed against the base (from headers and chunk ids, plus the few chunks at the edges
//! of edited regions: no tensor is read whole) and its metrics, and how to settle it.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use gitmodel_format::{ChunkParams, Oid, Pointer};
use gitmodel_ml::merge::{self as mlmerge, TableFormat, TableMerge};
use gitmodel_ml::metrics::Flat;
use gitmodel_ml::ranges::ChunkLayout;
use gitmodel_ml::tensor::human_bytes;
use gitmodel_ml::FileKind;
use gitmodel_ml::TensorInfo;
use gitmodel_store::fsutil;

use crate::content::{load_files, short, Content, Ctx, Kind, Side};
use crate::diff::{key_column, KEY_ATTR};

/// One version as git hands it to the driver.
struct Version {
    bytes: Vec<u8>,
    pointer: Option<Pointer>,
}

impl Version {
    fn read(file: &Path) -> Result<Version> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let pointer = Pointer::parse(&bytes);
        Ok(Version { bytes, pointer })
    }

    /// The content's SHA-256: a pointer's oid, else the bytes' own.
    fn oid(&self) -> Oid {
        match &self.pointer {
            Some(p) => p.oid,
            None => Oid::of(&self.bytes),
        }
    }

    fn size(&self) -> u64 {
        match &self.pointer {
            Some(p) => p.size,
            None => self.bytes.len() as u64,
        }
    }

    fn content(&self, ctx: &Ctx) -> Result<Content> {
        match self.pointer {
            Some(p) => ctx.stored(p),
            None => Ok(Content::Bytes(self.bytes.clone())),
        }
    }

    fn label(&self) -> String {
        if self.bytes.is_empty() {
            return "(no file)".into();
        }
        format!(
            "sha256:{} {}",
            short(&self.oid().to_hex()),
            human_bytes(self.size())
        )
    }
}

/// What [`merge_file`] did.
#[derive(Debug)]
pub enum MergeOutcome {
    /// The result is ours as it is (both sides agree, or only ours changed).
    Ours,
    /// Only theirs changed: the result is theirs.
    Theirs,
    /// Both changed a keyed table: merged row by row.
    Rows {
        key: String,
        stats: mlmerge::MergeStats,
    },
    /// Both changed it otherwise: ours stays; the message names each side's version,
    /// what it changed and how to settle it.
    Conflict(String),
}

/// git's merge driver on the three versions git hands it (`%O`, `%A`, `%B` temp files
/// holding blobs: pointers for tracked files) of the file at repository path `path`,
/// with the conflict labels (`%X`, `%Y`). Writes the result into `ours_file` (not on a
/// conflict); `open` gives the repository when content must be read.
pub fn merge_file(
    open: impl FnOnce() -> Result<Ctx>,
    [base, ours_file, theirs]: [&Path; 3],
    path: &str,
    [ours_label, theirs_label]: [Option<&str>; 2],
) -> Result<MergeOutcome> {
    let (o, a, b) = (
        Version::read(base)?,
        Version::read(ours_file)?,
        Version::read(theirs)?,
    );
    if a.oid() == b.oid() || o.oid() == b.oid() {
        return Ok(MergeOutcome::Ours);
    }
    if o.oid() == a.oid() {
        fsutil::write_atomic(ours_file, &b.bytes)
            .with_context(|| format!("writing {}", ours_file.display()))?;
        return Ok(MergeOutcome::Theirs);
    }
    let ctx = open()?;
    let kind = FileKind::detect(path, &[]);
    let mut notes = Vec::new();
    let key = match kind.is_table() {
        true => key_column(&ctx, path)?,
        false => None,
    };
    if kind.is_table() {
        match &key {
            Some(key) => match merge_table(&ctx, path, kind, key, [&o, &a, &b]) {
                Ok(Merged::Done(result, stats)) => {
                    fsutil::write_atomic(ours_file, &result)
                        .with_context(|| format!("writing {}", ours_file.display()))?;
                    return Ok(MergeOutcome::Rows {
                        key: key.clone(),
                        stats,
                    });
                }
                Ok(Merged::Conflict(why)) => notes.push(why),
                Err(e) => notes.push(format!("rows not merged: {e:#}")),
            },
            None => notes.push(format!(
                "rows are merged only when a key column is named: add \
                 `{path} {KEY_ATTR}=<column>` to .gitattributes"
            )),
        }
    }
    Ok(MergeOutcome::Conflict(conflict_message(
        &ctx,
        (path, kind, key.as_deref()),
        [&o, &a, &b],
        [ours_label, theirs_label],
        &notes,
    )))
}

enum Merged {
    /// What `%A` gets: a pointer to the merged content (or the content itself when the
    /// versions were stored as plain blobs).
    Done(Vec<u8>, mlmerge::MergeStats),
    Conflict(String),
}

fn merge_table(
    ctx: &Ctx,
    path: &str,
    kind: FileKind,
    key: &str,
    [o, a, b]: [&Version; 3],
) -> Result<Merged> {
    let read = |v: &Version| -> Result<Vec<u8>> {
        let c = v.content(ctx)?;
        ctx.read_all(&c)
            .with_context(|| format!("reading {}", v.label()))
    };
    let format = match kind {
        FileKind::Tsv => TableFormat::Delimited(b'\t'),
        FileKind::Jsonl => TableFormat::JsonLines,
        _ => TableFormat::Delimited(b','),
    };
    let merged = mlmerge::merge_tables(&read(o)?, &read(a)?, &read(b)?, format, key)
        .map_err(|e| anyhow!("{e}"))?;
    let (bytes, stats) = match merged {
        TableMerge::Merged { bytes, stats } => (bytes, stats),
        TableMerge::Conflict(c) => {
            let mut why = format!("rows keyed on {key:?} not merged: {}", c.why);
            if !c.keys.is_empty() {
                let shown: Vec<&str> = c.keys.iter().take(10).map(String::as_str).collect();
                why.push_str(&format!("; {key} = {}", shown.join(", ")));
                if c.keys.len() > 10 {
                    why.push_str(&format!(" (and {} more)", c.keys.len() - 10));
                }
            }
            return Ok(Merged::Conflict(why));
        }
    };
    let result = if a.pointer.is_some() || b.pointer.is_some() {
        let ingested = ctx
            .store
            .ingest_with(std::io::Cursor::new(&bytes), ChunkParams::for_path(path))
            .with_context(|| format!("storing the merged {path}"))?;
        ctx.store.sync()?;
        if ingested.pointer.size == 0 {
            Vec::new()
        } else {
            ingested.pointer.to_bytes()
        }
    } else {
        bytes
    };
    Ok(Merged::Done(result, stats))
}

/// The commit a merge label (`%X`, `%Y`) names, if it is one and holds `v` at `path`.
fn side_commit(
    ctx: &Ctx,
    label: Option<&str>,
    fallbacks: &[String],
    path: &str,
    v: &Version,
) -> Option<git2::Oid> {
    let mut candidates: Vec<String> = Vec::new();
    if let Some(l) = label.filter(|l| !l.starts_with('%') && !l.is_empty()) {
        candidates.push(l.to_string());
        // `branch:path` after renames; `abc1234 (subject)` in a rebase.
        if let Some((r, _)) = l.split_once(':') {
            candidates.push(r.to_string());
        }
        if let Some(w) = l.split_whitespace().next() {
            candidates.push(w.to_string());
        }
    }
    candidates.extend(fallbacks.iter().cloned());
    candidates.into_iter().find_map(|c| {
        let commit = ctx.commit(&c).ok()?.id();
        let (_, blob) = ctx.blob_at(commit, path).ok()??;
        let same = match (Pointer::parse(&blob), &v.pointer) {
            (Some(p), Some(q)) => p == *q,
            _ => blob == v.bytes,
        };
        same.then_some(commit)
    })
}

/// The commits `git merge` is merging in: MERGE_HEAD when it exists, else the
/// `GITHEAD_<id>` variables git sets for the driver.
fn theirs_fallbacks() -> Vec<String> {
    let mut out = vec![
        "MERGE_HEAD".to_string(),
        "CHERRY_PICK_HEAD".into(),
        "REBASE_HEAD".into(),
    ];
    for (k, _) in std::env::vars() {
        if let Some(id) = k.strip_prefix("GITHEAD_") {
            out.push(id.to_string());
        }
    }
    out
}

/// Numeric metrics of the model at `path` recorded at `commit`.
fn metrics_at(ctx: &Ctx, commit: git2::Oid, path: &str) -> Flat {
    let side = Side::Rev(commit);
    let Ok(manifest) = ctx.manifest(side) else {
        return Flat::new();
    };
    let files = match manifest.as_ref().and_then(|m| m.model_for_path(path)) {
        Some(spec) if !spec.metrics.is_empty() => spec.metrics.clone(),
        _ => Kind::Metrics.files(manifest.as_ref()),
    };
    load_files(ctx, side, &files).unwrap_or_default()
}

/// What `v` changed against `base`, from headers and chunk lists (models) or rows
/// (tables), or why that could not be said.
fn summary(
    ctx: &Ctx,
    (path, kind, key): (&str, FileKind, Option<&str>),
    base: &Version,
    v: &Version,
) -> String {
    if base.bytes.is_empty() {
        return "new (the base has no such file)".into();
    }
    let run = || -> Result<String> {
        let (bc, vc) = (base.content(ctx)?, v.content(ctx)?);
        if kind.is_model() {
            let bh = crate::diff::header(ctx, kind, &bc)?;
            let vh = crate::diff::header(ctx, kind, &vc)?;
            let (Some(bl), Some(vl)) = (bc.layout(), vc.layout()) else {
                return Ok(format!(
                    "{} → {} tensors",
                    bh.tensors.len(),
                    vh.tensors.len()
                ));
            };
            let mut s = mlmerge::model_summary(&bh, bl, &vh, vl);
            // Chunk ids vouch for most tensors. A tensor sharing a chunk with an edited
            // neighbour is settled by comparing just the parts they cannot vouch for,
            // stopping at the first difference: a few chunks, never whole tensors.
            let pairs: Vec<(&TensorInfo, &TensorInfo)> = std::mem::take(&mut s.changed)
                .iter()
                .filter_map(|name| {
                    let o = bh.tensors.iter().find(|t| &t.name == name)?;
                    Some((o, vh.tensors.iter().find(|t| &t.name == name)?))
                })
                .collect();
            // The first piece of each such part, fetched together (one range request per
            // run of chunks instead of one per chunk): usually all that gets compared.
            let (mut first_old, mut first_new) = (Vec::new(), Vec::new());
            for (o, n) in &pairs {
                for r in gitmodel_ml::ranges::unproven(bl, o.range(), vl, n.range()) {
                    let len = STEP.min(r.end - r.start);
                    first_old.push(o.start + r.start..o.start + r.start + len);
                    first_new.push(n.start + r.start..n.start + r.start + len);
                }
            }
            ctx.prefetch(&bc, &first_old)?;
            ctx.prefetch(&vc, &first_new)?;
            for (o, n) in pairs {
                if differs(ctx, (&bc, bl, o), (&vc, vl, n))? {
                    s.changed.push(n.name.clone());
                } else {
                    s.unchanged += 1;
                }
            }
            Ok(s.render())
        } else if kind.is_table() {
            match crate::diff::diff_file(ctx, path, Some(&bc), Some(&vc), key, 0)? {
                Some(crate::diff::FileDiff::Table(t)) => Ok(format!(
                    "rows vs base: {} added, {} removed, {} changed",
                    t.rows_added, t.rows_removed, t.rows_changed
                )),
                _ => Ok(String::new()),
            }
        } else {
            Ok(String::new())
        }
    };
    match run() {
        Ok(s) => s,
        Err(e) => format!("(not compared: {e:#})"),
    }
}

/// Bytes compared at a time when settling a tensor chunk ids cannot vouch for.
const STEP: u64 = 64 << 10;

/// Whether a tensor's bytes differ between two versions, reading only the parts chunk
/// ids do not prove equal, piece by piece until the first difference.
fn differs(
    ctx: &Ctx,
    (old, old_layout, o): (&Content, &ChunkLayout, &TensorInfo),
    (new, new_layout, n): (&Content, &ChunkLayout, &TensorInfo),
) -> Result<bool> {
    for r in gitmodel_ml::ranges::unproven(old_layout, o.range(), new_layout, n.range()) {
        let mut at = r.start;
        while at < r.end {
            let len = STEP.min(r.end - at);
            if ctx.read_at(old, o.start + at, len)? != ctx.read_at(new, n.start + at, len)? {
                return Ok(true);
            }
            at += len;
        }
    }
    Ok(false)
}

fn conflict_message(
    ctx: &Ctx,
    (path, kind, key): (&str, FileKind, Option<&str>),
    [o, a, b]: [&Version; 3],
    [ours_label, theirs_label]: [Option<&str>; 2],
    notes: &[String],
) -> String {
    let ours_commit = side_commit(ctx, ours_label, &["HEAD".into()], path, a);
    let theirs_commit = side_commit(ctx, theirs_label, &theirs_fallbacks(), path, b);
    let name = |label: Option<&str>, commit: Option<git2::Oid>| match (label, commit) {
        (Some(l), _) if !l.starts_with('%') => l.to_string(),
        (_, Some(c)) => short(&c.to_string()).to_string(),
        _ => String::new(),
    };
    let mut m = format!("merge conflict in {path}: both sides changed it\n");
    for (side, v, label, commit) in [
        ("ours  ", a, name(ours_label, ours_commit), ours_commit),
        (
            "theirs",
            b,
            name(theirs_label, theirs_commit),
            theirs_commit,
        ),
    ] {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        };
        m.push_str(&format!("  {side}{label}: {}\n", v.label()));
        let s = summary(ctx, (path, kind, key), o, v);
        if !s.is_empty() {
            m.push_str(&format!("      {s}\n"));
        }
        // Metrics describe models; a dataset's would be the repository's, the same noise
        // on both sides.
        if let Some(c) = commit.filter(|_| kind.is_model()) {
            let metrics = metrics_at(ctx, c, path);
            if !metrics.is_empty() {
                let text: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
                m.push_str(&format!("      metrics: {}\n", text.join(" ")));
            }
        }
    }
    m.push_str(&format!("  base: {}\n", o.label()));
    for n in notes {
        m.push_str(&format!("  {n}\n"));
    }
    m.push_str(&format!(
        "  the working tree keeps ours; settle it with one of\n    \
         git model resolve {path} --ours\n    \
         git model resolve {path} --theirs\n    \
         git model resolve {path} --rev <commit>\n  \
         then `git commit`"
    ));
    m
}
