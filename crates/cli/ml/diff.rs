//! `git model diff` and git's external diff driver (`git model diff-driver`).
//!
//! Models: both headers are parsed; tensors whose byte ranges are covered by the same
//! chunks in both versions are equal without being read; the others are streamed piece by
//! piece into [`TensorStats`]. Tables: both versions are read and diffed by rows and
//! columns. Anything else: shared chunks and sizes, from the recipes alone.

use anyhow::{Context, Result};
use gitmodel_ml::tensor::{human_bytes, ModelDiff};
use gitmodel_ml::FileKind;
pub use gitmodel_repo::diff::{diff_file, header, key_column, FileDiff, PIECE};
use serde::Serialize;

use super::{Content, Ctx, Side};
use gitmodel_repo::usage;

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
            None if FileKind::detect(path, &[]).is_table() => key_column(&ctx, path)?,
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
