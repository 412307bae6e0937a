//! `git model diff` and git's external diff driver (`git model diff-driver`).
//!
//! Models: both headers are parsed; tensors whose byte ranges are covered by the same
//! chunks in both versions are equal without being read; the others are streamed piece by
//! piece into [`TensorStats`]. Tables: both versions are read and diffed by rows and
//! columns. Anything else: shared chunks and sizes, from the recipes alone.

use std::collections::HashSet;
use std::io::BufReader;

use anyhow::{Context, Result};
use gitmodel_ml::table::{self, TableDiff};
use gitmodel_ml::tensor::{
    self, human_bytes, ModelDiff, ModelHeader, Pair, TensorChange, TensorDiff, TensorStats,
};
use gitmodel_ml::{gguf, safetensors, FileKind};
use serde::Serialize;

use super::{Content, ContentReader, Ctx, Side};
use gitmodel_repo::usage;

/// Bytes per piece when streaming a changed tensor.
const PIECE: u64 = 4 << 20;

/// What the diff of one file found.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileDiff {
    Model(ModelDiff),
    Table(TableDiff),
    Bytes(BytesDiff),
    Added { size: u64 },
    Removed { size: u64 },
}

#[derive(Serialize, Default)]
pub struct BytesDiff {
    pub old_size: u64,
    pub new_size: u64,
    /// Bytes of the new version in chunks the old one also has (`None`: not stored).
    pub shared_bytes: Option<u64>,
    pub note: Option<String>,
}

#[derive(Serialize)]
struct Entry {
    path: String,
    #[serde(flatten)]
    diff: FileDiff,
}

pub fn render(path: &str, d: &FileDiff) -> String {
    match d {
        FileDiff::Model(m) => {
            let mut s = m.render(path);
            let total = m.old_size + m.new_size;
            s.push_str(&format!(
                "  read {} of {} ({:.1}%)\n",
                human_bytes(m.bytes_read),
                human_bytes(total),
                if total == 0 {
                    0.0
                } else {
                    100.0 * m.bytes_read as f64 / total as f64
                }
            ));
            s
        }
        FileDiff::Table(t) => t.render(path),
        FileDiff::Bytes(b) => {
            let mut s = format!(
                "{path}: {} → {}",
                human_bytes(b.old_size),
                human_bytes(b.new_size)
            );
            if let Some(shared) = b.shared_bytes {
                let pct = if b.new_size == 0 {
                    100.0
                } else {
                    100.0 * shared as f64 / b.new_size as f64
                };
                s.push_str(&format!(
                    ", {pct:.1}% in chunks both versions share, {} new",
                    human_bytes(b.new_size - shared.min(b.new_size))
                ));
            }
            if let Some(n) = &b.note {
                s.push_str(&format!(" ({n})"));
            }
            s.push('\n');
            s
        }
        FileDiff::Added { size } => format!("{path}: added ({})\n", human_bytes(*size)),
        FileDiff::Removed { size } => format!("{path}: removed ({})\n", human_bytes(*size)),
    }
}

/// Reads a model header of the given kind.
pub fn header(ctx: &Ctx, kind: FileKind, c: &Content) -> Result<ModelHeader, String> {
    let size = c.size();
    match kind {
        FileKind::Gguf => {
            let reader = ContentReader {
                ctx,
                content: c,
                pos: 0,
            };
            gguf::parse(BufReader::with_capacity(64 << 10, reader), size).map_err(|e| e.to_string())
        }
        _ => {
            let first = ctx.read_at(c, 0, 8).map_err(|e| format!("{e:#}"))?;
            let n = safetensors::header_len(&first, size).map_err(|e| e.to_string())?;
            let json = ctx.read_at(c, 8, n).map_err(|e| format!("{e:#}"))?;
            safetensors::parse(&json, size).map_err(|e| e.to_string())
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
            b.note = Some(format!("not compared per tensor: {e}"));
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
        (Content::File { path, .. }, Some(_)) => super::file_layout(ctx, path).map(Some),
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

/// `git model diff [A [B]] [-- paths]`.
pub fn diff(
    revs: &[String],
    paths: &[String],
    key: Option<&str>,
    json: bool,
    examples: usize,
    plot: Option<&std::path::Path>,
) -> Result<()> {
    let ctx = Ctx::open()?;
    let (old_rev, new_rev) = match revs {
        [] => ("HEAD".to_string(), None),
        [a] => (a.clone(), None),
        [a, b] => (a.clone(), Some(b.clone())),
        _ => return Err(usage("at most two revisions")),
    };
    let old_commit = ctx.commit(&old_rev)?.id();
    let new_side = match &new_rev {
        Some(r) => Side::Rev(ctx.commit(r)?.id()),
        None => {
            ctx.repo.workdir()?;
            Side::Worktree
        }
    };
    // Which paths differ: git's own answer (it runs the clean filter on modified
    // working-tree files, so unchanged ones are not listed).
    let mut args = vec![
        "diff".to_string(),
        "--no-ext-diff".into(),
        "--no-renames".into(),
        "--name-only".into(),
        "--no-relative".into(),
        "-z".into(),
        old_commit.to_string(),
    ];
    if let Side::Rev(c) = new_side {
        args.push(c.to_string());
    }
    args.push("--".into());
    args.extend(paths.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // Run where the user is, so pathspecs mean what they mean to git; the names it
    // prints are from the repository root either way.
    let listed = gitmodel_git::Git::new(std::env::current_dir()?).run(&argv)?;
    let mut entries = Vec::new();
    let mut other = 0;
    for path in listed.split('\0').filter(|p| !p.is_empty()) {
        let old = ctx.content_at(Side::Rev(old_commit), path)?;
        let new = ctx.content_at(new_side, path)?;
        let ours = [&old, &new]
            .iter()
            .any(|c| matches!(c, Some(Content::Stored { .. })))
            || {
                let k = FileKind::detect(path, &[]);
                k.is_model() || k.is_table()
            };
        if !ours {
            other += 1;
            continue;
        }
        // Without --key, a table's `merge-key` attribute names the column rows match on.
        let attr_key = match key {
            None if FileKind::detect(path, &[]).is_table() => super::merge::key_column(&ctx, path)?,
            _ => None,
        };
        let key = key.or(attr_key.as_deref());
        let d = diff_file(&ctx, path, old.as_ref(), new.as_ref(), key, examples)
            .with_context(|| format!("diffing {path}"))?;
        if let Some(d) = d {
            entries.push(Entry {
                path: path.to_string(),
                diff: d,
            });
        }
    }
    if let Some(file) = plot {
        let models: Vec<(String, &ModelDiff)> = entries
            .iter()
            .filter_map(|e| match &e.diff {
                FileDiff::Model(m) => Some((e.path.clone(), m)),
                _ => None,
            })
            .collect();
        let svg = super::plot::diff_chart(&models)?;
        super::write_plot(file, &svg)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    for e in &entries {
        print!("{}", render(&e.path, &e.diff));
    }
    if entries.is_empty() {
        println!("no tracked model or data file changed");
    }
    if other > 0 {
        println!("({other} other changed file(s): see git diff)");
    }
    if ctx.bytes_fetched.get() > 0 {
        eprintln!(
            "git-model: fetched {} of chunks from the server",
            human_bytes(ctx.bytes_fetched.get())
        );
    }
    Ok(())
}

/// One side as git's external diff interface gives it: a temp file (already smudged by
/// git, or the working-tree file itself) and the blob id, when git knows it.
fn driver_side(ctx: &Ctx, file: &str, hex: &str) -> Result<Option<Content>> {
    if file == "/dev/null" {
        return Ok(None);
    }
    // The blob git stores is the pointer: reading it by id skips the smudged copy.
    if let Ok(id) = git2::Oid::from_str(hex) {
        if !id.is_zero() {
            if let Ok(blob) = ctx.git().find_blob(id) {
                return ctx.blob_content(blob.content().to_vec()).map(Some);
            }
        }
    }
    ctx.file_content(std::path::Path::new(file))
}

/// `git model diff-driver <path> <old-file> <old-hex> <old-mode> <new-file> <new-hex>
/// <new-mode>` (git's `diff.<driver>.command` interface).
pub fn driver(args: &[String]) -> Result<()> {
    let ctx = Ctx::open()?;
    match args {
        [path] => {
            println!("* Unmerged path {path}");
            Ok(())
        }
        [path, old_file, old_hex, _old_mode, new_file, new_hex, _new_mode, ..] => {
            let old = driver_side(&ctx, old_file, old_hex)?;
            let new = driver_side(&ctx, new_file, new_hex)?;
            println!("diff --git-model a/{path} b/{path}");
            match diff_file(&ctx, path, old.as_ref(), new.as_ref(), None, 5) {
                Ok(Some(d)) => print!("{}", render(path, &d)),
                Ok(None) => println!("{path}: same content"),
                // git shows what the driver prints; an error must not hide the rest.
                Err(e) => println!("{path}: cannot diff: {e:#}"),
            }
            Ok(())
        }
        _ => Err(usage(
            "diff-driver expects git's 7 arguments: path old-file old-hex old-mode new-file new-hex new-mode",
        )),
    }
}

/// `git model textconv <file>`: a text rendering git can diff line by line.
pub fn textconv(file: &str) -> Result<()> {
    use std::io::Write;
    let ctx = Ctx::open()?;
    let path = std::path::Path::new(file);
    let content = ctx
        .file_content(path)?
        .ok_or_else(|| usage(format!("{file}: no such file")))?;
    // Only content that is here is hashed: a textconv must not download a model.
    let local = match &content {
        Content::Stored { pointer, .. } => pointer.size == 0 || ctx.store.has_file(&pointer.oid),
        _ => true,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(file);
    let mut kind = FileKind::detect(name, &[]);
    if kind == FileKind::Other && local {
        kind = FileKind::detect(name, &ctx.read_at(&content, 0, 16)?);
    }
    if kind.is_table() && local {
        out.write_all(&ctx.read_all(&content)?)?;
        return Ok(out.flush()?);
    }
    if kind.is_model() {
        if let Ok(h) = header(&ctx, kind, &content) {
            writeln!(
                out,
                "{} model, {} tensors, {} bytes",
                h.format,
                h.tensors.len(),
                content.size()
            )?;
            for (k, v) in &h.metadata {
                let v: String = v.chars().take(200).collect();
                writeln!(out, "metadata {k} = {v}")?;
            }
            for t in &h.tensors {
                let hash = if local {
                    let mut hasher = blake3::Hasher::new();
                    let mut at = t.start;
                    while at < t.end {
                        let len = PIECE.min(t.end - at);
                        hasher.update(&ctx.read_at(&content, at, len)?);
                        at += len;
                    }
                    format!("blake3:{}", &hasher.finalize().to_hex()[..16])
                } else {
                    "(content not here)".into()
                };
                writeln!(
                    out,
                    "{}\t{} {}\t{hash}",
                    t.name,
                    t.dtype.name(),
                    t.shape_text()
                )?;
            }
            return Ok(out.flush()?);
        }
    }
    match content.pointer() {
        Some(p) => writeln!(out, "{} bytes, sha256:{}", p.size, p.oid)?,
        None => {
            let mut h = gitmodel_format::id::OidHasher::new();
            let mut at = 0;
            while at < content.size() {
                let piece = ctx.read_at(&content, at, PIECE)?;
                h.update(&piece);
                at += piece.len() as u64;
            }
            writeln!(out, "{} bytes, sha256:{}", content.size(), h.finish())?;
        }
    }
    Ok(out.flush()?)
}
