//! `--json`: the machine-readable result of a command, one JSON object on stdout.
//!
//! Each command that reports results has one shape here ([`Push`], [`Fetch`], [`Pull`],
//! [`Fsck`], [`Prune`], [`Status`], [`LsFiles`], [`Env`], [`Migrate`]), documented in
//! `docs/json.md`. Every object starts with `"command"`; sizes are integers in bytes;
//! fields are only ever added, never renamed or removed. Without `--json` none of this is
//! printed and the human text is unchanged.

use std::sync::OnceLock;

use gitmodel_client::{DownloadReport, UploadReport};
use serde::Serialize;

static JSON: OnceLock<bool> = OnceLock::new();

/// Set once from the command line.
pub fn set_json(json: bool) {
    let _ = JSON.set(json);
}

/// Whether the result goes out as JSON (and the human summary lines stay silent).
pub fn json() -> bool {
    *JSON.get().unwrap_or(&false)
}

/// Prints `value` as one line of JSON on stdout.
pub fn emit<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    println!("{text}");
    Ok(())
}

/// `git model push --json`.
#[derive(Debug, Serialize)]
pub struct Push {
    pub command: &'static str,
    /// The server (`model.url`); `null` when there was nothing to push.
    pub url: Option<String>,
    /// Distinct non-empty files in the pushed commits.
    pub files: usize,
    /// Of those, files the server already had.
    pub files_present: usize,
    /// Files uploaded (registered) by this push.
    pub files_uploaded: usize,
    /// Size of the uploaded files.
    pub file_bytes: u64,
    /// Distinct chunks of the uploaded files.
    pub chunks: usize,
    /// Chunks the server lacked, sent now.
    pub chunks_sent: usize,
    /// Raw (uncompressed) bytes of the chunks sent.
    pub bytes_new: u64,
    /// Bytes on the wire: the packs sent.
    pub bytes_sent: u64,
    pub packs: usize,
}

impl Push {
    pub fn new(url: Option<String>, r: &UploadReport) -> Push {
        Push {
            command: "push",
            url,
            files: r.files,
            files_present: r.files_present,
            files_uploaded: r.files - r.files_present,
            file_bytes: r.file_bytes,
            chunks: r.chunks,
            chunks_sent: r.chunks_sent,
            bytes_new: r.bytes_new,
            bytes_sent: r.bytes_sent,
            packs: r.packs,
        }
    }
}

/// A download's figures: `git model fetch --json`, and `"fetch"` inside [`Pull`].
#[derive(Debug, Serialize)]
pub struct Fetch {
    pub command: &'static str,
    /// Distinct non-empty files asked for.
    pub files: usize,
    /// Of those, files already complete in the local store.
    pub files_local: usize,
    /// Files downloaded now.
    pub files_fetched: usize,
    /// Size of the downloaded files.
    pub file_bytes: u64,
    /// Chunks the local store lacked, fetched now.
    pub chunks_fetched: usize,
    /// Raw bytes of those chunks.
    pub bytes_new: u64,
    /// Bytes received (compressed records).
    pub bytes_received: u64,
    /// Range requests made for chunk data.
    pub requests: usize,
}

impl Fetch {
    pub fn new(r: &DownloadReport) -> Fetch {
        Fetch {
            command: "fetch",
            files: r.files,
            files_local: r.files_local,
            files_fetched: r.files - r.files_local,
            file_bytes: r.file_bytes,
            chunks_fetched: r.chunks_fetched,
            bytes_new: r.bytes_new,
            bytes_received: r.bytes_received,
            requests: r.requests,
        }
    }
}

/// `git model pull --json`.
#[derive(Debug, Serialize)]
pub struct Pull {
    pub command: &'static str,
    pub fetch: Fetch,
    /// Working-tree files replaced by their content.
    pub files_written: usize,
    pub bytes_written: u64,
    /// Their paths.
    pub written: Vec<String>,
    /// Files that could not be written (the command then exits 1).
    pub failed: Vec<Problem>,
}

/// One file with something wrong.
pub use gitmodel_repo::Problem;

/// `git model fsck --json`.
#[derive(Debug, Serialize)]
pub struct Fsck {
    pub command: &'static str,
    /// Distinct non-empty files in the checked refs.
    pub files_checked: usize,
    /// Bytes read back and hash-checked from the local store.
    pub bytes_verified: u64,
    /// With `--remote`: files the server has; otherwise `null`.
    pub files_on_server: Option<usize>,
    /// `true` when `problems` is empty (exit 0).
    pub ok: bool,
    pub problems: Vec<Problem>,
}

/// `git model prune [--dry-run] --json`.
#[derive(Debug, Serialize)]
pub struct Prune {
    pub command: &'static str,
    /// `true`: nothing was removed; the figures are what would go.
    pub dry_run: bool,
    pub age_days: u64,
    pub chunks: usize,
    /// Raw bytes of those chunks.
    pub raw_bytes: u64,
    /// Packs touched: deleted whole plus rewritten.
    pub packs: usize,
    pub packs_deleted: usize,
    pub packs_rewritten: usize,
    /// Pack bytes freed (before the rewritten packs' new copies).
    pub pack_bytes: u64,
    /// File recipes removed.
    pub recipes: usize,
    /// Files kept: needed by the checkout, recent refs, or not on the server.
    pub files_kept: usize,
}

/// One tracked file, as `status` and `ls-files` see it.
#[derive(Debug, Serialize)]
pub struct FileState {
    pub path: String,
    pub oid: String,
    pub size: u64,
    /// The working-tree file holds the content, not the pointer.
    pub in_working_tree: bool,
    /// Only in `status`: the local store has the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_store: Option<bool>,
    /// Only in `status`: `ok`, `not_in_store`, `pointer`, `missing` or `not_downloaded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

impl FileState {
    pub fn new(
        t: gitmodel_repo::status::Tracked,
        state: Option<gitmodel_repo::status::FileStatus>,
    ) -> FileState {
        FileState {
            path: t.path,
            oid: t.pointer.oid.to_hex(),
            size: t.pointer.size,
            in_working_tree: t.in_working_tree,
            in_store: t.in_store,
            state: state.map(|s| s.code()),
        }
    }
}

/// `git model ls-files --json`.
#[derive(Debug, Serialize)]
pub struct LsFiles {
    pub command: &'static str,
    pub files: Vec<FileState>,
}

/// The local store's size.
#[derive(Debug, Serialize)]
pub struct StoreSize {
    pub chunks: u64,
    pub raw_bytes: u64,
    pub packs: u64,
    pub pack_bytes: u64,
}

/// `git model status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub command: &'static str,
    pub files: Vec<FileState>,
    pub tracked_files: usize,
    pub tracked_bytes: u64,
    pub present: usize,
    pub pointer_only: usize,
    pub store: StoreSize,
}

/// A resolved setting and where it came from.
#[derive(Debug, Serialize)]
pub struct Setting {
    pub value: String,
    pub source: String,
}

/// `git model env --json`.
#[derive(Debug, Serialize)]
pub struct Env {
    pub command: &'static str,
    pub version: &'static str,
    pub git: String,
    /// `filter.model.process`, `null` when unset (run `git model install`).
    pub filter_process: Option<String>,
    pub filter_required: Option<String>,
    /// Outside a repository: `repository`, `local_store`, `model_url`,
    /// `pre_push_hook` are `null` and `tracked_patterns` is empty.
    pub repository: Option<String>,
    pub local_store: Option<String>,
    pub model_url: Option<Setting>,
    pub pre_push_hook: Option<bool>,
    pub tracked_patterns: Vec<String>,
    /// `none` or `token` (GIT_MODEL_TOKEN).
    pub credentials: &'static str,
}

/// `git model migrate --json`: the command, then [`gitmodel_repo::lfs::Migrated`]'s
/// fields in order (the LFS endpoint and which setting named it, objects, those already
/// migrated, those moved now and their bytes, bytes new on the server and sent, growth of
/// the local store).
#[derive(Debug, Serialize)]
pub struct Migrate {
    pub command: &'static str,
    #[serde(flatten)]
    pub result: gitmodel_repo::lfs::Migrated,
}
