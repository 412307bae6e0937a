//! The clean and smudge filters: git's long-running process and single-shot fallbacks.
//!
//! Clean stores content in the local store and answers a pointer; content that already is
//! a pointer passes through. Smudge answers the content of a pointer from the local store,
//! fetching it from the server when missing; when it cannot be had, the pointer stays in
//! the working tree with a warning naming the path, and `git model pull` fetches it later.
//!
//! The drivers ([`process`], [`clean_once`], [`smudge_once`]) take git's streams, so any
//! front end (the `git-model` binary, or a test) runs the same filter.

use std::fs;
use std::io::{self, BufReader, Read, Write};

use anyhow::Result;
use gitmodel_client::{FileRef, Remote};
use gitmodel_format::pointer::MAX_POINTER_SIZE;
use gitmodel_format::Pointer;
use gitmodel_git::filter::{Filter, FilterError};
use gitmodel_store::LocalStore;

use crate::paths::PathFilter;
use crate::statcache::StatCache;
use crate::Repo;

/// Where the filter's warnings for the user go (git shows a filter's stderr as it is).
pub type Notices = Box<dyn FnMut(&str) + Send>;

struct ModelFilter {
    repo: Repo,
    store: LocalStore,
    /// Created on first use: most sessions never need the server.
    remote: Option<Result<Remote, std::sync::Arc<anyhow::Error>>>,
    /// Smudges git let us postpone: downloaded together, in parallel.
    delayed: Vec<FileRef>,
    /// `model.fetchinclude` / `fetchexclude`: other paths stay pointers on checkout.
    paths: PathFilter,
    /// Files `git model pull` or an earlier checkout wrote: cleaned without hashing them
    /// again.
    stat_cache: StatCache,
    /// The last smudge: path, pointer and when it started.
    last_smudge: Option<(String, Pointer, std::time::SystemTime)>,
    /// Files smudged for a checkout in this session, with when: recorded in the stat
    /// cache once git is done.
    smudged: Vec<(String, Pointer, std::time::SystemTime)>,
    notices: Notices,
}

fn skip_smudge() -> bool {
    std::env::var_os("GIT_MODEL_SKIP_SMUDGE").is_some_and(|v| v == "1")
}

impl ModelFilter {
    fn new(repo: Repo, notices: Notices) -> Result<ModelFilter> {
        let store = repo.store()?;
        // A `git add` of many small files: one pack for many of them, written when full
        // or when this process ends (journaled meanwhile).
        store.share_small_files(true);
        // A fresh clone has no hooks yet: install them now, so its pushes upload content.
        if repo.workdir.is_some()
            && !gitmodel_git::setup::hooks_installed(&repo.git).unwrap_or(true)
        {
            if let Err(e) = gitmodel_git::setup::install_hooks(&repo.git) {
                tracing::warn!("could not install the pre-push hook: {e}");
            }
        }
        let paths = PathFilter::from_flags_or_config(&repo.git, &[], &[])?;
        let stat_cache = StatCache::load(store.root());
        Ok(ModelFilter {
            repo,
            store,
            remote: None,
            delayed: Vec::new(),
            paths,
            stat_cache,
            last_smudge: None,
            smudged: Vec::new(),
            notices,
        })
    }

    /// The server, opened once; why not, when it cannot be (no `model.url`, a bad
    /// setting), which every later use reports.
    fn remote(&mut self) -> Result<&Remote, std::sync::Arc<anyhow::Error>> {
        let slot = self
            .remote
            .get_or_insert_with(|| self.repo.remote().map_err(std::sync::Arc::new));
        slot.as_ref().map_err(std::sync::Arc::clone)
    }

    /// Whether the content of `p` is here. A long-running filter opened the store before
    /// git started: content another process stored since (the merge driver's merged
    /// tables) has a recipe on disk the store's chunk index does not know yet, so the
    /// store is opened again before anything is fetched.
    fn have_locally(&mut self, p: &Pointer) -> bool {
        if crate::objects::have_locally(&self.repo.repo, &self.store, p) {
            return true;
        }
        if !matches!(self.store.recipe(&p.oid), Ok(Some(_))) {
            return false;
        }
        match self.repo.store() {
            Ok(store) => {
                store.share_small_files(true);
                self.store = store;
            }
            Err(e) => tracing::warn!("reopening the local store: {e:#}"),
        }
        self.store.has_file(&p.oid)
    }

    /// Downloads the content of `p` into the store. The error's top line says why
    /// (the whole chain when the server cannot be used at all).
    fn fetch(&mut self, path: &str, p: &Pointer) -> Result<()> {
        let file = FileRef {
            oid: p.oid,
            size: p.size,
            path: path.to_string(),
        };
        let remote = self.remote().map_err(|e| anyhow::anyhow!("{e:#}"))?.clone();
        gitmodel_client::download(&self.store, &remote, &[file])?;
        Ok(())
    }
}

impl Filter for ModelFilter {
    fn clean(&mut self, path: &str, input: &mut (dyn Read + Send)) -> Result<Vec<u8>, FilterError> {
        let err = |e: String| FilterError::Content {
            path: path.to_string(),
            oid: None,
            message: e,
        };
        if let Some(workdir) = &self.repo.workdir {
            if let Some(p) = self.stat_cache.lookup(workdir, path) {
                // The protocol still hands us the content; it need not be hashed.
                io::copy(input, &mut io::sink()).map_err(|e| err(e.to_string()))?;
                return Ok(p.to_bytes());
            }
        }
        let mut head = Vec::with_capacity(MAX_POINTER_SIZE);
        input
            .take(MAX_POINTER_SIZE as u64)
            .read_to_end(&mut head)
            .map_err(|e| err(e.to_string()))?;
        if head.len() < MAX_POINTER_SIZE && Pointer::parse(&head).is_some() {
            // Already a pointer (e.g. content not pulled yet): keep it as it is.
            return Ok(head);
        }
        // The store resumes the SHA-256 from the states it kept when this path was last
        // cleaned: a new version is hashed only from where it differs.
        let ingested = self
            .store
            .ingest_path(io::Cursor::new(head).chain(input), path)
            .map_err(|e| err(e.to_string()))?;
        if ingested.pointer.size == 0 {
            return Ok(Vec::new());
        }
        tracing::debug!(
            "clean {path}: {} chunks, {} new ({} bytes stored), {} bytes hashed",
            ingested.chunks,
            ingested.new_chunks,
            ingested.stored_bytes,
            ingested.hashed_bytes
        );
        Ok(ingested.pointer.to_bytes())
    }

    fn smudge(
        &mut self,
        path: &str,
        stored: &[u8],
        rest: &mut (dyn Read + Send),
        out: &mut (dyn Write + Send),
    ) -> Result<(), FilterError> {
        let io_err = |source: io::Error| FilterError::Io {
            path: path.to_string(),
            source,
        };
        let pointer = (stored.len() < MAX_POINTER_SIZE)
            .then(|| Pointer::parse(stored))
            .flatten();
        let Some(p) = pointer else {
            // Not a pointer: pass through untouched.
            out.write_all(stored).map_err(io_err)?;
            io::copy(rest, out).map_err(io_err)?;
            return Ok(());
        };
        if p.size == 0 {
            return Ok(());
        }
        if skip_smudge() || !self.paths.allows(path) {
            out.write_all(stored).map_err(io_err)?;
            return Ok(());
        }
        if !self.have_locally(&p) {
            if let Err(why) = self.fetch(path, &p) {
                (self.notices)(&format!(
                    "git-model: {path}: content of {} not available ({why}); left as a pointer, \
                     run `git model pull` later",
                    p.oid
                ));
                out.write_all(stored).map_err(io_err)?;
                return Ok(());
            }
        }
        let started = std::time::SystemTime::now();
        // The store keeps this file's hash states: an edit of it (a fine-tune of its last
        // layers) is then cleaned from where it differs.
        let to = crate::checkout::Destination::Stream {
            out,
            path: Some(path),
        };
        crate::checkout::write_out(&self.store, &p, to).map_err(|e| {
            if let gitmodel_store::StoreError::HashMismatch { .. } = e {
                // A stored recipe that makes the wrong file (kept unchecked by an
                // older git-model): dropped, so that `git model pull` fetches anew.
                if let Err(e) = self.store.forget_recipe(&p.oid) {
                    tracing::warn!("dropping the wrong recipe of {}: {e}", p.oid);
                }
            }
            FilterError::Content {
                path: path.to_string(),
                oid: Some(p.oid.to_hex()),
                message: e.to_string(),
            }
        })?;
        self.last_smudge = Some((path.to_string(), p, started));
        Ok(())
    }

    fn checked_out(&mut self, path: &str) {
        if let Some(last) = self.last_smudge.take().filter(|l| l.0 == path) {
            self.smudged.push(last);
        }
    }

    fn delay(&mut self, path: &str, stored: &[u8]) -> bool {
        let Some(p) = Pointer::parse(stored) else {
            return false;
        };
        if p.size == 0
            || skip_smudge()
            || !self.paths.allows(path)
            || self.have_locally(&p)
            || self.remote().is_err()
        {
            return false;
        }
        self.delayed.push(FileRef {
            oid: p.oid,
            size: p.size,
            path: path.to_string(),
        });
        true
    }

    fn available(&mut self) -> Vec<String> {
        let files = std::mem::take(&mut self.delayed);
        if files.is_empty() {
            return Vec::new();
        }
        // One download for the whole checkout: requests for all files in flight together.
        // A failure here is not final: each file is retried (and reported) on its own when
        // git asks for it again.
        if let Ok(remote) = self.remote().cloned() {
            if let Err(e) = gitmodel_client::download(&self.store, &remote, &files) {
                tracing::warn!("batched download failed, retrying file by file: {e}");
            }
        }
        files.into_iter().map(|f| f.path).collect()
    }
}

/// `git-model filter-process`, run by git for a whole checkout or add: git's long-running
/// filter protocol on `input` / `output` (the process's stdin and stdout).
pub fn process(
    repo: Repo,
    input: impl Read + Send,
    output: impl Write + Send,
    notices: Notices,
) -> Result<()> {
    let mut filter = ModelFilter::new(repo, notices)?;
    let input = BufReader::with_capacity(1 << 16, input);
    let output = io::BufWriter::with_capacity(1 << 16, output);
    gitmodel_git::filter::run(input, output, &mut filter)?;
    // git closes the stream as it exits, when the files it smudged are in place: record
    // their stat data, so that git's next look at them (a "racily clean" file is cleaned
    // again before a checkout may replace it) does not hash them again.
    // Only smudges for a checkout count (git never offers to delay one for a temporary
    // file, such as a side of `git diff`), and only if the file was written after the
    // smudge began (a checkout that failed to write it leaves an older file).
    let written: Vec<(String, Pointer)> = match &filter.repo.workdir {
        Some(workdir) => filter
            .smudged
            .iter()
            .filter(|(path, _, started)| {
                let margin = std::time::Duration::from_millis(20); // coarse fs clocks
                fs::metadata(workdir.join(path))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t + margin >= *started)
            })
            .map(|(path, p, _)| (path.clone(), *p))
            .collect(),
        None => Vec::new(),
    };
    if let (Some(workdir), false) = (&filter.repo.workdir, written.is_empty()) {
        if let Err(e) = StatCache::save(filter.store.root(), workdir, &written) {
            tracing::warn!("recording checked-out files in the stat cache: {e}");
        }
    }
    // Make this session's writes durable before exiting.
    filter.store.sync()?;
    Ok(())
}

/// `git-model clean -- <path>` (git's single-shot filter): content from `input`, its
/// pointer to `output`.
pub fn clean_once(
    repo: Repo,
    path: &str,
    mut input: impl Read + Send,
    mut output: impl Write,
    notices: Notices,
) -> Result<()> {
    let mut filter = ModelFilter::new(repo, notices)?;
    let stored = filter
        .clean(path, &mut input)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    output.write_all(&stored)?;
    output.flush()?;
    Ok(())
}

/// `git-model smudge -- <path>` (git's single-shot filter): a pointer from `input`, the
/// content to `output`.
pub fn smudge_once(
    repo: Repo,
    path: &str,
    mut input: impl Read + Send,
    output: impl Write + Send,
    notices: Notices,
) -> Result<()> {
    let mut filter = ModelFilter::new(repo, notices)?;
    let mut head = Vec::new();
    (&mut input)
        .take(gitmodel_format::pointer::POINTER_PROBE_BYTES as u64)
        .read_to_end(&mut head)?;
    let mut out = io::BufWriter::new(output);
    filter
        .smudge(path, &head, &mut input, &mut out)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    out.flush()?;
    Ok(())
}
