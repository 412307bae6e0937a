//! Reading content at any revision without checking it out: a file of a commit or of the
//! working tree, read in ranges; a pointer's chunks come from the local store, and those
//! it lacks from the server (only the chunks a read covers, through
//! [`gitmodel_client::fetch_chunks`]). The ML commands (per-tensor diffs, tables, the
//! manifest, metrics) read models this way.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use gitmodel_client::Remote;
use gitmodel_format::pack;
use gitmodel_format::{ChunkId, Oid, Pointer, Recipe};
use gitmodel_ml::manifest::{self, Manifest, MANIFEST};
use gitmodel_ml::metrics::{self, Flat};
use gitmodel_ml::ranges::ChunkLayout;
use gitmodel_store::LocalStore;

use crate::error::usage;
use crate::Repo;

/// Content of one version of a file, not read yet.
pub enum Content {
    /// A pointer: bytes come from the local store's chunks (fetched when missing).
    Stored {
        pointer: Pointer,
        layout: ChunkLayout,
    },
    /// A small blob or file held in memory.
    Bytes(Vec<u8>),
    /// A working-tree file with real content.
    File { path: PathBuf, size: u64 },
}

impl Content {
    pub fn size(&self) -> u64 {
        match self {
            Content::Stored { pointer, .. } => pointer.size,
            Content::Bytes(b) => b.len() as u64,
            Content::File { size, .. } => *size,
        }
    }

    pub fn layout(&self) -> Option<&ChunkLayout> {
        match self {
            Content::Stored { layout, .. } => Some(layout),
            _ => None,
        }
    }

    pub fn pointer(&self) -> Option<&Pointer> {
        match self {
            Content::Stored { pointer, .. } => Some(pointer),
            _ => None,
        }
    }
}

/// Where files are read from: a commit or the working tree.
#[derive(Clone, Copy)]
pub enum Side {
    Rev(git2::Oid),
    Worktree,
}

/// Decoded chunks kept for reads that straddle piece boundaries.
const CHUNK_CACHE: usize = 32;

/// The repository, its store and the server, with counters of what was read.
pub struct Ctx {
    pub repo: Repo,
    pub store: LocalStore,
    /// Opened on first use: most reads never need the server.
    remote: RefCell<Option<Remote>>,
    located: RefCell<HashMap<Oid, Arc<Recipe>>>,
    cache: RefCell<Vec<(ChunkId, Arc<Vec<u8>>)>>,
    touched: RefCell<HashSet<ChunkId>>,
    /// Raw bytes of distinct chunks (and plain files) read.
    pub bytes_read: Cell<u64>,
    /// Raw bytes of chunks fetched from the server.
    pub bytes_fetched: Cell<u64>,
}

impl Ctx {
    /// The repository the current directory is in.
    pub fn open() -> Result<Ctx> {
        Ctx::new(Repo::open()?)
    }

    /// Reads through `repo`, its local store and its server.
    pub fn new(repo: Repo) -> Result<Ctx> {
        let store = repo.store()?;
        Ok(Ctx {
            repo,
            store,
            remote: RefCell::new(None),
            located: RefCell::new(HashMap::new()),
            cache: RefCell::new(Vec::new()),
            touched: RefCell::new(HashSet::new()),
            bytes_read: Cell::new(0),
            bytes_fetched: Cell::new(0),
        })
    }

    pub fn git(&self) -> &git2::Repository {
        &self.repo.repo
    }

    /// The server (opened once).
    pub fn remote(&self) -> Result<Remote> {
        let mut slot = self.remote.borrow_mut();
        if let Some(r) = &*slot {
            return Ok(r.clone());
        }
        // Reading content needs the server only for chunks the store lacks: a setting
        // wrong for it is that read's failure (exit 1), not a usage error of the command.
        let r = self.repo.remote().map_err(|e| anyhow!("{e:#}"))?;
        *slot = Some(r.clone());
        Ok(r)
    }

    /// The server's located recipe of `oid` (where its chunks are in the server's packs).
    fn located_recipe(&self, oid: &Oid) -> Result<Arc<Recipe>> {
        if let Some(r) = self.located.borrow().get(oid) {
            return Ok(r.clone());
        }
        let remote = self.remote()?;
        let r = remote
            .get_recipe(oid)
            .with_context(|| format!("asking {} for {oid}", remote.url()))?
            .ok_or_else(|| anyhow!("{oid} is neither in the local store nor on the server"))?;
        let r = Arc::new(r);
        self.located.borrow_mut().insert(*oid, r.clone());
        Ok(r)
    }

    /// The chunk list of a stored file: from the local store, else the server's recipe
    /// (kept for this command only: the store keeps a server's recipe once the whole file
    /// was hashed to its oid, which a partial read never does; its chunks are fetched only
    /// when read).
    pub fn chunk_list(&self, p: &Pointer) -> Result<ChunkLayout> {
        if let Some(r) = self.store.recipe(&p.oid)? {
            return Ok(ChunkLayout::new(&r.chunks));
        }
        let r = self.located_recipe(&p.oid)?;
        if r.size != p.size {
            anyhow::bail!(
                "{}: the server's recipe has {} bytes, the pointer says {}",
                p.oid,
                r.size,
                p.size
            );
        }
        Ok(ChunkLayout::new(&r.chunks))
    }

    pub fn stored(&self, pointer: Pointer) -> Result<Content> {
        let layout = if pointer.size == 0 {
            ChunkLayout::default()
        } else {
            self.chunk_list(&pointer)?
        };
        Ok(Content::Stored { pointer, layout })
    }

    /// A git blob's content: a pointer's file, or the blob itself.
    pub fn blob_content(&self, bytes: Vec<u8>) -> Result<Content> {
        match Pointer::parse(&bytes) {
            Some(p) => self.stored(p),
            None => Ok(Content::Bytes(bytes)),
        }
    }

    /// A working-tree file: a pointer left in place, or real content.
    pub fn file_content(&self, path: &Path) -> Result<Option<Content>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        if meta.len() < pack_pointer_limit() {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            if let Some(p) = Pointer::parse(&bytes) {
                return self.stored(p).map(Some);
            }
        }
        Ok(Some(Content::File {
            path: path.to_path_buf(),
            size: meta.len(),
        }))
    }

    /// Makes sure the chunks covering `ranges` of `content` are in the local store,
    /// fetching the missing ones from the server in as few range requests as possible.
    pub fn prefetch(&self, content: &Content, ranges: &[Range<u64>]) -> Result<()> {
        let Content::Stored { pointer, layout } = content else {
            return Ok(());
        };
        let mut missing = HashSet::new();
        for r in ranges {
            let c = layout.cover(r.clone());
            for i in c.first..c.last {
                let id = layout.id(i);
                if !self.store.has_chunk(&id) {
                    missing.insert(id);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.fetch_chunks(&pointer.oid, &missing)
    }

    fn fetch_chunks(&self, oid: &Oid, wanted: &HashSet<ChunkId>) -> Result<()> {
        let recipe = self.located_recipe(oid)?;
        let remote = self.remote()?;
        let got = gitmodel_client::fetch_chunks(&self.store, &remote, &recipe, wanted)
            .with_context(|| format!("fetching chunks of {oid} from {}", remote.url()))?;
        self.bytes_fetched
            .set(self.bytes_fetched.get() + got.raw_bytes);
        Ok(())
    }

    /// One chunk's bytes, verified.
    fn chunk(&self, oid: &Oid, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some((_, data)) = self.cache.borrow().iter().find(|(c, _)| *c == id) {
            return Ok(data.clone());
        }
        if !self.store.has_chunk(&id) {
            self.fetch_chunks(oid, &HashSet::from([id]))?;
        }
        let stored = self
            .store
            .read_stored(&id)?
            .ok_or_else(|| anyhow!("{oid}: chunk {id} is not in the local store"))?;
        let raw = pack::decode_chunk(
            &id,
            stored.entry.codec,
            stored.entry.raw_len,
            &stored.stored,
        )
        .map_err(|e| anyhow::Error::new(e).context(oid.to_string()))?;
        if self.touched.borrow_mut().insert(id) {
            self.bytes_read
                .set(self.bytes_read.get() + raw.len() as u64);
        }
        let data = Arc::new(raw);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CHUNK_CACHE {
            cache.remove(0);
        }
        cache.push((id, data.clone()));
        Ok(data)
    }

    /// Bytes `offset .. offset + len` of `content` (clamped to its end).
    pub fn read_at(&self, content: &Content, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = (offset + len).min(content.size());
        if offset >= end {
            return Ok(Vec::new());
        }
        match content {
            Content::Bytes(b) => Ok(b[offset as usize..end as usize].to_vec()),
            Content::File { path, .. } => {
                let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
                let mut buf = vec![0u8; (end - offset) as usize];
                f.read_exact_at(&mut buf, offset)
                    .with_context(|| path.display().to_string())?;
                self.bytes_read
                    .set(self.bytes_read.get() + buf.len() as u64);
                Ok(buf)
            }
            Content::Stored { pointer, layout } => {
                let mut out = Vec::with_capacity((end - offset) as usize);
                let c = layout.cover(offset..end);
                for i in c.first..c.last {
                    let data = self.chunk(&pointer.oid, layout.id(i))?;
                    let r = layout.chunk_range(i);
                    let from = offset.max(r.start) - r.start;
                    let to = end.min(r.end) - r.start;
                    out.extend_from_slice(&data[from as usize..to as usize]);
                }
                Ok(out)
            }
        }
    }

    /// The whole content (tables, metrics files: things that are read whole anyway).
    pub fn read_all(&self, content: &Content) -> Result<Vec<u8>> {
        if let Content::Bytes(b) = content {
            return Ok(b.clone());
        }
        let whole = 0..content.size();
        self.prefetch(content, std::slice::from_ref(&whole))?;
        self.read_at(content, 0, content.size())
    }

    /// Commit named by `rev`.
    pub fn commit(&self, rev: &str) -> Result<git2::Commit<'_>> {
        self.git()
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| crate::error::not_found(format!("unknown revision {rev:?}")))
    }

    /// The blob at `path` in `commit`: (blob id, bytes), `None` when absent.
    pub fn blob_at(&self, commit: git2::Oid, path: &str) -> Result<Option<(git2::Oid, Vec<u8>)>> {
        let tree = self.git().find_commit(commit)?.tree()?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return Ok(None);
        }
        let blob = self.git().find_blob(entry.id())?;
        Ok(Some((entry.id(), blob.content().to_vec())))
    }

    /// Blob id at `path` in `commit` without reading it.
    pub fn blob_id_at(&self, commit: &git2::Commit<'_>, path: &str) -> Option<git2::Oid> {
        let tree = commit.tree().ok()?;
        let entry = tree.get_path(Path::new(path)).ok()?;
        (entry.kind() == Some(git2::ObjectType::Blob)).then(|| entry.id())
    }

    /// A file's content on `side`.
    pub fn content_at(&self, side: Side, path: &str) -> Result<Option<Content>> {
        match side {
            Side::Rev(c) => match self.blob_at(c, path)? {
                Some((_, bytes)) => self.blob_content(bytes).map(Some),
                None => Ok(None),
            },
            Side::Worktree => {
                let full = self.repo.workdir()?.join(path);
                self.file_content(&full)
            }
        }
    }

    /// A small file's bytes on `side` (pointers resolved).
    pub fn read_file(&self, side: Side, path: &str) -> Result<Option<Vec<u8>>> {
        match self.content_at(side, path)? {
            Some(c) => self
                .read_all(&c)
                .with_context(|| format!("reading {path}"))
                .map(Some),
            None => Ok(None),
        }
    }

    /// `models.toml` on `side`, if there is one.
    pub fn manifest(&self, side: Side) -> Result<Option<Manifest>> {
        let Some(bytes) = self.read_file(side, MANIFEST)? else {
            return Ok(None);
        };
        let label = match side {
            Side::Rev(c) => format!("{}:{MANIFEST}", short(&c.to_string())),
            Side::Worktree => MANIFEST.to_string(),
        };
        let text = String::from_utf8(bytes).map_err(|_| usage(format!("{label}: not UTF-8")))?;
        manifest::parse(&text, &label)
            .map(Some)
            .map_err(|e| usage(e.to_string()))
    }

    /// `models.toml` on `side`, which must exist.
    pub fn require_manifest(&self, side: Side) -> Result<Manifest> {
        self.manifest(side)?.ok_or_else(|| {
            usage(format!(
                "no {MANIFEST} {}: describe models there, e.g.\n\n[models.vision]\npath = \"model.safetensors\"\nmetrics = [\"metrics.json\"]",
                match side {
                    Side::Rev(c) => format!("at {}", short(&c.to_string())),
                    Side::Worktree => "in the working tree".to_string(),
                }
            ))
        })
    }
}

/// A path given on the command line (relative to the current directory) as a path from
/// the repository root, the way trees name it.
pub fn repo_path(ctx: &Ctx, given: &str) -> String {
    let root = ctx
        .repo
        .workdir
        .as_ref()
        .and_then(|w| w.canonicalize().ok());
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| c.canonicalize().ok());
    let (Some(root), Some(cwd)) = (root, cwd) else {
        return given.to_string();
    };
    let Ok(prefix) = cwd.strip_prefix(&root) else {
        return given.to_string();
    };
    // Lexically: the file may exist only in some commit.
    let mut parts: Vec<String> = Vec::new();
    let joined = if Path::new(given).is_absolute() {
        match Path::new(given).strip_prefix(&root) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => return given.to_string(),
        }
    } else {
        prefix.join(given)
    };
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// The chunk list a working-tree file would get (chunker version 1, as the clean filter
/// cuts it), so a diff against a stored version can skip what chunk ids prove equal.
pub fn file_layout(ctx: &Ctx, path: &Path) -> Result<ChunkLayout> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let chunks = gitmodel_format::chunk_ids(gitmodel_format::ChunkParams::V1, f)
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| path.display().to_string())?;
    let total: u64 = chunks.iter().map(|c| u64::from(c.raw_len)).sum();
    ctx.bytes_read.set(ctx.bytes_read.get() + total);
    Ok(ChunkLayout::new(&chunks))
}

/// Files under this size may be pointers.
fn pack_pointer_limit() -> u64 {
    gitmodel_format::pointer::MAX_POINTER_SIZE as u64
}

/// Sequential reads over a [`Content`] (for parsers that take `impl Read`).
pub struct ContentReader<'a> {
    pub ctx: &'a Ctx,
    pub content: &'a Content,
    pub pos: u64,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(1 << 20);
        let data = self
            .ctx
            .read_at(self.content, self.pos, want)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        buf[..data.len()].copy_from_slice(&data);
        self.pos += data.len() as u64;
        Ok(data.len())
    }
}

/// The first 10 hex digits of an id.
pub fn short(hex: &str) -> &str {
    gitmodel_ml::registry::prefix(hex, 10)
}

/// Metrics or params.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Metrics,
    Params,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Metrics => "metrics",
            Kind::Params => "params",
        }
    }

    /// Files used when there is no manifest.
    fn default_files(self) -> Vec<String> {
        match self {
            Kind::Metrics => vec!["metrics.json".into()],
            Kind::Params => vec!["params.yaml".into()],
        }
    }

    /// The files the manifest names for this kind (all models), else the default file.
    pub fn files(self, manifest: Option<&Manifest>) -> Vec<String> {
        let files = match (manifest, self) {
            (Some(m), Kind::Metrics) => m.all_metrics(),
            (Some(m), Kind::Params) => m.all_params(),
            (None, _) => Vec::new(),
        };
        if files.is_empty() {
            self.default_files()
        } else {
            files
        }
    }
}

/// Values of `files` on `side`, merged (a later file's key wins); missing files skipped.
pub fn load_files(ctx: &Ctx, side: Side, files: &[String]) -> Result<Flat> {
    let mut out = Flat::new();
    for f in files {
        if let Some(bytes) = ctx.read_file(side, f)? {
            out.extend(metrics::parse(f, &bytes).map_err(|e| usage(e.to_string()))?);
        }
    }
    Ok(out)
}

/// All metrics (or params) on `side`, as the manifest there names them.
pub fn load(ctx: &Ctx, side: Side, kind: Kind) -> Result<Flat> {
    let manifest = ctx.manifest(side)?;
    load_files(ctx, side, &kind.files(manifest.as_ref()))
}
