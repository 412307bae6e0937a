//! Tensors by name from a model file at any revision, reading only their bytes: the
//! header, then the byte ranges of the tensors asked for, mapped onto the file's chunks;
//! only the chunks missing locally are fetched, every chunk is verified against its id,
//! and a file read whole is verified against its oid.

use std::collections::HashSet;

use anyhow::{anyhow, Result};
use gitmodel_format::id::OidHasher;
use gitmodel_ml::{DType, FileKind, ModelHeader};

use crate::content::{Content, Ctx, Side};
use crate::diff::header;
use crate::error::not_found;

/// One tensor's bytes as stored (little-endian), with what they are.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    /// Dimensions, outermost first (GGUF's innermost-first list is reversed on reading).
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// What [`load`] read.
#[derive(Debug)]
pub struct Loaded {
    /// `safetensors` or `gguf`.
    pub format: &'static str,
    pub tensors: Vec<Tensor>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub file_size: u64,
    /// Raw bytes of chunks fetched from the server for this load.
    pub bytes_fetched: u64,
}

/// The header of the model file at `path` on `side`.
pub fn model_header(ctx: &Ctx, side: Side, path: &str) -> Result<(Content, FileKind, ModelHeader)> {
    let content = ctx
        .content_at(side, path)?
        .ok_or_else(|| not_found(format!("{path}: no such file at {}", side_label(side))))?;
    let mut kind = FileKind::detect(path, &[]);
    if !kind.is_model() {
        let head = ctx.read_at(&content, 0, 16)?;
        kind = FileKind::detect(path, &head);
    }
    if !kind.is_model() {
        return Err(anyhow!(
            "{path}: not a safetensors or GGUF file, so it has no tensors to load"
        ));
    }
    let h = header(ctx, kind, &content)?;
    Ok((content, kind, h))
}

fn side_label(side: Side) -> String {
    match side {
        Side::Rev(c) => crate::content::short(&c.to_string()).to_string(),
        Side::Worktree => "the working tree".into(),
    }
}

/// The tensors `names` (all of them when `None`) of the model file at `path` on `side`.
pub fn load(ctx: &Ctx, side: Side, path: &str, names: Option<&[String]>) -> Result<Loaded> {
    let fetched_before = ctx.bytes_fetched.get();
    let (content, _, h) = model_header(ctx, side, path)?;
    let picked: Vec<&gitmodel_ml::TensorInfo> = match names {
        None => h.tensors.iter().collect(),
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            let mut seen = HashSet::new();
            for n in names {
                let t = h.tensors.iter().find(|t| &t.name == n).ok_or_else(|| {
                    let some: Vec<&str> =
                        h.tensors.iter().take(5).map(|t| t.name.as_str()).collect();
                    not_found(format!(
                        "{path}: no tensor named {n:?} ({} tensors, e.g. {})",
                        h.tensors.len(),
                        some.join(", ")
                    ))
                })?;
                if seen.insert(n) {
                    out.push(t);
                }
            }
            out
        }
    };
    let ranges: Vec<_> = picked.iter().map(|t| t.range()).collect();
    ctx.prefetch(&content, &ranges)?;
    if names.is_none() {
        verify_whole(ctx, &content, path)?;
    }
    let mut tensors = Vec::with_capacity(picked.len());
    for t in picked {
        let data = ctx.read_at(&content, t.start, t.len())?;
        if data.len() as u64 != t.len() {
            return Err(anyhow!(
                "{path}: tensor {:?} ends past the end of the file",
                t.name
            ));
        }
        tensors.push(Tensor {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            data,
        });
    }
    Ok(Loaded {
        format: h.format,
        tensors,
        metadata: h.metadata,
        file_size: content.size(),
        bytes_fetched: ctx.bytes_fetched.get() - fetched_before,
    })
}

/// Hashes a stored file whole and compares it with its oid (its chunks are checked one
/// by one as they are read; this proves they are the right ones in the right order).
pub fn verify_whole(ctx: &Ctx, content: &Content, path: &str) -> Result<()> {
    let Some(p) = content.pointer() else {
        return Ok(());
    };
    const PIECE: u64 = 4 << 20;
    ctx.prefetch(content, std::slice::from_ref(&(0..p.size)))?;
    let mut h = OidHasher::new();
    let mut at = 0;
    while at < p.size {
        let piece = ctx.read_at(content, at, PIECE)?;
        if piece.is_empty() {
            break;
        }
        at += piece.len() as u64;
        h.update(&piece);
    }
    let actual = h.finish();
    if at != p.size || actual != p.oid {
        return Err(gitmodel_store::StoreError::HashMismatch {
            oid: p.oid,
            actual,
            size: at,
        })
        .map_err(|e| anyhow::Error::new(e).context(path.to_string()));
    }
    Ok(())
}
