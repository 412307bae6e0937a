//! git-model's ML layer, as pure logic: everything here works on bytes, strings and
//! chunk lists handed in by the caller; reading git objects, the local store or the
//! network is the CLI's job.
//!
//! - [`dtype`]: tensor element types (safetensors names and GGML types) and decoding.
//! - [`safetensors`] and [`gguf`]: model headers: which tensor lives in which byte range.
//! - [`ranges`]: mapping byte ranges onto a recipe's chunk list (equal chunk ids ⇒ equal
//!   bytes), so a diff reads only tensors whose chunks differ.
//! - [`tensor`]: per-tensor diff statistics and the model diff report.
//! - [`table`]: CSV/TSV and JSON Lines row/column diffs.
//! - [`merge`]: three-way merges: keyed tables row by row, and what each side of a model
//!   merge changed, judged from headers and chunk ids.
//! - [`manifest`]: `models.toml` (models, their inputs, params, metrics and stage gates).
//! - [`metrics`]: metrics and params files (JSON, YAML, TOML, CSV) flattened to key/value
//!   maps, their comparison and the `compare` table.
//! - [`registry`]: the stage registry's events and how they replay into stage assignments.
//! - [`time`]: the few date formats the commands accept and print.
#![forbid(unsafe_code)]

pub mod dtype;
pub mod gguf;
pub mod manifest;
pub mod merge;
pub mod metrics;
pub mod ranges;
pub mod registry;
pub mod safetensors;
pub mod table;
pub mod tensor;
pub mod time;

pub use dtype::DType;
pub use manifest::{Gate, Manifest, ManifestError, ModelSpec};
pub use tensor::{ModelHeader, TensorInfo};

/// A malformed model header (safetensors or GGUF).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a {format} file: {why}")]
    NotFormat { format: &'static str, why: String },
    #[error("{format} header is malformed: {why}")]
    Malformed { format: &'static str, why: String },
    #[error("{format} tensor {name:?}: {why}")]
    BadTensor {
        format: &'static str,
        name: String,
        why: String,
    },
    #[error("{format} header is truncated (file ends at byte {size})")]
    Truncated { format: &'static str, size: u64 },
    #[error("reading the {format} header: {why}")]
    Read { format: &'static str, why: String },
}

/// Which model format a file is, by its name and first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Safetensors,
    Gguf,
    Csv,
    Tsv,
    Jsonl,
    Other,
}

impl FileKind {
    /// Guesses from the path's extension; `head` (the first bytes, possibly empty) settles
    /// model formats whose files are often renamed.
    pub fn detect(path: &str, head: &[u8]) -> FileKind {
        let lower = path.to_ascii_lowercase();
        if head.starts_with(gguf::MAGIC) || lower.ends_with(".gguf") {
            return FileKind::Gguf;
        }
        if lower.ends_with(".safetensors") {
            return FileKind::Safetensors;
        }
        let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "csv" => FileKind::Csv,
            "tsv" | "tab" => FileKind::Tsv,
            "jsonl" | "ndjson" => FileKind::Jsonl,
            _ if safetensors::looks_like(head) => FileKind::Safetensors,
            _ => FileKind::Other,
        }
    }

    pub fn is_model(self) -> bool {
        matches!(self, FileKind::Safetensors | FileKind::Gguf)
    }

    pub fn is_table(self) -> bool {
        matches!(self, FileKind::Csv | FileKind::Tsv | FileKind::Jsonl)
    }
}
