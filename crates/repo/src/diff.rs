//! What changed between two versions of a file, per format. Models: both headers are
//! parsed; tensors whose byte ranges are covered by the same chunks in both versions are
//! equal without being read; the others are streamed piece by piece into
//! [`TensorStats`]. Tables: both versions are read and diffed by rows and columns.
//! Anything else: shared chunks and sizes, from the recipes alone.

use std::collections::HashSet;
use std::io::BufReader;

use anyhow::{Context, Result};
use gitmodel_ml::table::{self, TableDiff};
use gitmodel_ml::tensor::{
    self, ModelDiff, ModelHeader, Pair, TensorChange, TensorDiff, TensorStats,
};
use gitmodel_ml::{gguf, safetensors, FileKind};
use serde::Serialize;

use crate::content::{Content, ContentReader, Ctx};
use crate::error::usage;

/// The git attribute naming a table's key column (`merge-key=<column>`).
pub const KEY_ATTR: &str = "merge-key";

/// Bytes per piece when streaming a changed tensor.
pub const PIECE: u64 = 4 << 20;

/// What the diff of one file found.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileDiff {
    Model(ModelDiff),
    Table(TableDiff),
    Bytes(BytesDiff),
    Added { size: u64 },
    Removed { size: u64 },
}

#[derive(Debug, Serialize, Default)]
pub struct BytesDiff {
    pub old_size: u64,
    pub new_size: u64,
    /// Bytes of the new version in chunks the old one also has (`None`: not stored).
    pub shared_bytes: Option<u64>,
    pub note: Option<String>,
}

/// Reads a model header of the given kind.
pub fn header(ctx: &Ctx, kind: FileKind, c: &Content) -> Result<ModelHeader> {
    let size = c.size();
    match kind {
        FileKind::Gguf => {
            let reader = ContentReader {
                ctx,
                content: c,
                pos: 0,
            };
            Ok(gguf::parse(
                BufReader::with_capacity(64 << 10, reader),
                size,
            )?)
        }
        _ => {
            let first = ctx.read_at(c, 0, 8)?;
            let n = safetensors::header_len(&first, size)?;
            let json = ctx.read_at(c, 8, n)?;
            Ok(safetensors::parse(&json, size)?)
        }
    }
}

/// Per-tensor diff of two model versions.
pub fn model_diff(ctx: &Ctx, kind: FileKind, old: &Content, new: &Content) -> Result<FileDiff> {
    let before = ctx.bytes_read.get();
    let (oh, nh) = match (header(ctx, kind, old), header(ctx, kind, new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            let mut b = bytes_diff(old, new);
            b.note = Some(format!("not compared per tensor: {e:#}"));
            return Ok(FileDiff::Bytes(b));
        }
    };
    let mut d = ModelDiff {
        format: oh.format.to_string(),
        old_size: old.size(),
        new_size: new.size(),
        old_tensors: oh.tensors.len(),
        new_tensors: nh.tensors.len(),
        ..Default::default()
    };
    // A working-tree file compared with a stored version gets its chunk list computed
    // (one local read), so the stored side is read only where they differ.
    let file_layout = |c: &Content, other: &Content| match (c, other.layout()) {
        (Content::File { path, .. }, Some(_)) => crate::content::file_layout(ctx, path).map(Some),
        _ => Ok(None),
    };
    let (old_computed, new_computed) = (file_layout(old, new)?, file_layout(new, old)?);
    let old_layout = old.layout().or(old_computed.as_ref());
    let new_layout = new.layout().or(new_computed.as_ref());
    let mut to_read = Vec::new();
    for pair in tensor::pair_tensors(&oh, &nh) {
        match pair {
            Pair::Added(t) => d.tensors.push(TensorDiff {
                name: t.name.clone(),
                change: TensorChange::Added {
                    dtype: t.dtype.name(),
                    shape: t.shape.clone(),
                    bytes: t.len(),
                },
            }),
            Pair::Removed(t) => d.tensors.push(TensorDiff {
                name: t.name.clone(),
                change: TensorChange::Removed {
                    dtype: t.dtype.name(),
                    shape: t.shape.clone(),
                    bytes: t.len(),
                },
            }),
            Pair::Both(o, n) if o.dtype != n.dtype || o.shape != n.shape || o.len() != n.len() => {
                d.tensors.push(TensorDiff {
                    name: n.name.clone(),
                    change: TensorChange::Retyped {
                        old_dtype: o.dtype.name(),
                        new_dtype: n.dtype.name(),
                        old_shape: o.shape.clone(),
                        new_shape: n.shape.clone(),
                    },
                })
            }
            Pair::Both(o, n) => {
                let same = match (old_layout, new_layout) {
                    (Some(a), Some(b)) => {
                        gitmodel_ml::ranges::same_bytes(a, o.range(), b, n.range())
                    }
                    _ => false,
                };
                if same {
                    d.unchanged += 1;
                } else {
                    to_read.push((o.clone(), n.clone()));
                }
            }
        }
    }
    // First the parts chunk ids cannot vouch for (often just a chunk shared with an
    // edited neighbour): if they are equal too, the tensor is unchanged.
    let unproven =
        |o: &gitmodel_ml::TensorInfo, n: &gitmodel_ml::TensorInfo| match (old_layout, new_layout) {
            (Some(a), Some(b)) => gitmodel_ml::ranges::unproven(a, o.range(), b, n.range()),
            _ => std::iter::once(0..o.len()).collect(),
        };
    let parts: Vec<_> = to_read.iter().map(|(o, n)| unproven(o, n)).collect();
    let shift = |base: u64, rs: &[std::ops::Range<u64>]| -> Vec<std::ops::Range<u64>> {
        rs.iter().map(|r| base + r.start..base + r.end).collect()
    };
    let old_ranges: Vec<_> = to_read
        .iter()
        .zip(&parts)
        .flat_map(|((o, _), p)| shift(o.start, p))
        .collect();
    let new_ranges: Vec<_> = to_read
        .iter()
        .zip(&parts)
        .flat_map(|((_, n), p)| shift(n.start, p))
        .collect();
    ctx.prefetch(old, &old_ranges)?;
    ctx.prefetch(new, &new_ranges)?;
    let mut changed = Vec::new();
    for ((o, n), p) in to_read.into_iter().zip(&parts) {
        let mut differs = false;
        for r in p {
            let mut at = r.start;
            while at < r.end && !differs {
                let len = PIECE.min(r.end - at);
                differs =
                    ctx.read_at(old, o.start + at, len)? != ctx.read_at(new, n.start + at, len)?;
                at += len;
            }
        }
        if differs {
            changed.push((o, n));
        } else {
            d.unchanged += 1;
        }
    }
    // Then the numbers of the changed tensors, streamed piece by piece.
    let old_ranges: Vec<_> = changed.iter().map(|(o, _)| o.range()).collect();
    let new_ranges: Vec<_> = changed.iter().map(|(_, n)| n.range()).collect();
    ctx.prefetch(old, &old_ranges)?;
    ctx.prefetch(new, &new_ranges)?;
    for (o, n) in changed {
        let mut stats = TensorStats::new(&o.dtype);
        let unit = o.dtype.numeric_size().unwrap_or(1) as u64;
        let piece = (PIECE / unit).max(1) * unit;
        let mut at = 0;
        while at < o.len() {
            let len = piece.min(o.len() - at);
            let a = ctx.read_at(old, o.start + at, len)?;
            let b = ctx.read_at(new, n.start + at, len)?;
            stats.update(&o.dtype, &a, &b);
            at += len;
        }
        d.tensors.push(TensorDiff {
            name: n.name.clone(),
            change: TensorChange::changed(&n, &stats),
        });
    }
    let keys: HashSet<&String> = oh.metadata.keys().chain(nh.metadata.keys()).collect();
    let mut meta: Vec<String> = keys
        .into_iter()
        .filter(|k| oh.metadata.get(*k) != nh.metadata.get(*k))
        .cloned()
        .collect();
    meta.sort();
    d.metadata_changed = meta;
    // Keep file order for the report: tensors as in the new file, removed ones last.
    let mut order = std::collections::HashMap::new();
    for (i, t) in nh.tensors.iter().chain(&oh.tensors).enumerate() {
        order.entry(t.name.as_str()).or_insert(i);
    }
    d.tensors
        .sort_by_key(|t| order.get(t.name.as_str()).copied().unwrap_or(usize::MAX));
    d.bytes_read = ctx.bytes_read.get() - before;
    d.finish();
    Ok(FileDiff::Model(d))
}

/// Sizes and shared chunks, without reading content.
fn bytes_diff(old: &Content, new: &Content) -> BytesDiff {
    let shared = match (old.layout(), new.layout()) {
        (Some(a), Some(b)) => {
            let ids: HashSet<_> = (0..a.len()).map(|i| a.id(i)).collect();
            Some(
                (0..b.len())
                    .filter(|i| ids.contains(&b.id(*i)))
                    .map(|i| {
                        let r = b.chunk_range(i);
                        r.end - r.start
                    })
                    .sum(),
            )
        }
        _ => None,
    };
    BytesDiff {
        old_size: old.size(),
        new_size: new.size(),
        shared_bytes: shared,
        note: None,
    }
}

fn table_diff(
    ctx: &Ctx,
    kind: FileKind,
    path: &str,
    old: &Content,
    new: &Content,
    key: Option<&str>,
    examples: usize,
) -> Result<FileDiff> {
    let parse = |c: &Content, which: &str| -> Result<table::Table> {
        let bytes = ctx.read_all(c)?;
        let what = format!("{path} ({which})");
        Ok(match kind {
            FileKind::Csv => table::parse_delimited(&bytes, b',', &what)?,
            FileKind::Tsv => table::parse_delimited(&bytes, b'\t', &what)?,
            _ => table::parse_jsonl(&bytes, &what)?,
        })
    };
    let (o, n) = (parse(old, "old")?, parse(new, "new")?);
    let d = table::diff(&o, &n, key, examples).map_err(|e| usage(format!("{path}: {e}")))?;
    Ok(FileDiff::Table(d))
}

/// Diffs two versions of one file.
pub fn diff_file(
    ctx: &Ctx,
    path: &str,
    old: Option<&Content>,
    new: Option<&Content>,
    key: Option<&str>,
    examples: usize,
) -> Result<Option<FileDiff>> {
    let (old, new) = match (old, new) {
        (None, None) => return Ok(None),
        (None, Some(n)) => return Ok(Some(FileDiff::Added { size: n.size() })),
        (Some(o), None) => return Ok(Some(FileDiff::Removed { size: o.size() })),
        (Some(o), Some(n)) => (o, n),
    };
    if let (Some(a), Some(b)) = (old.pointer(), new.pointer()) {
        if a == b {
            return Ok(None);
        }
    }
    let mut kind = FileKind::detect(path, &[]);
    if kind == FileKind::Other {
        // Renamed model files are recognised by their first bytes.
        let head = ctx.read_at(new, 0, 16).unwrap_or_default();
        kind = FileKind::detect(path, &head);
    }
    let d = if kind.is_model() {
        model_diff(ctx, kind, old, new)?
    } else if kind.is_table() {
        table_diff(ctx, kind, path, old, new, key, examples)?
    } else {
        FileDiff::Bytes(bytes_diff(old, new))
    };
    Ok(Some(d))
}

/// The `merge-key` attribute of `path`, if set to a column name.
pub fn key_column(ctx: &Ctx, path: &str) -> Result<Option<String>> {
    let out = ctx
        .repo
        .git
        .run(&["check-attr", KEY_ATTR, "--", path])
        .context("git check-attr")?;
    // `<path>: merge-key: <value>`; the path itself may contain ": ".
    let value = out
        .rsplit_once(": ")
        .map(|(_, v)| v.trim())
        .unwrap_or_default();
    Ok(match value {
        "" | "unspecified" | "unset" | "set" => None,
        v => Some(v.to_string()),
    })
}
