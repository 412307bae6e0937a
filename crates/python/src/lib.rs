//! `gitmodel._native`: the application library (`gitmodel-repo`) for Python.
//!
//! Thin by design: each method takes plain values, runs the library's operation with the
//! GIL released, and hands back plain values (JSON text for structured reports, which the
//! pure-Python layer in `python/gitmodel` turns into dicts, numpy arrays and file
//! objects). A [`Repo`] serialises its own calls (one lock per repository object), so it
//! is safe to share between threads; errors become the exception classes of
//! `gitmodel.errors`, chosen by the typed root cause of the library's error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, Result};
use gitmodel_format::id::OidHasher;
use gitmodel_format::Oid;
use gitmodel_ml::registry as events;
use gitmodel_repo::cache::{Cached, RemoteGitError};
use gitmodel_repo::content::{Content, Ctx, Kind, Side};
use gitmodel_repo::{experiments, revision, tensors, GateRefused, NotFound, Repo as RepoDir};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};

/// An opened repository: a clone on disk, or a git URL's cached copy.
enum Inner {
    Local(Box<Ctx>),
    Cached(Box<Cached>),
}

impl Inner {
    fn ctx(&self) -> &Ctx {
        match self {
            Inner::Local(c) => c,
            Inner::Cached(c) => &c.ctx,
        }
    }

    /// Where commits this copy lacks are fetched from.
    fn remote(&self) -> Option<&'static str> {
        match self {
            Inner::Local(_) => None,
            Inner::Cached(_) => Some(gitmodel_repo::cache::REMOTE),
        }
    }

    /// Before reading the stage registry of a clone: its remote's events, best effort
    /// (offline, the registry as known here). A URL's copy fetched it when opened.
    fn refresh_registry(&self) {
        if let Inner::Local(ctx) = self {
            if let Some(e) = gitmodel_repo::registry::refresh(ctx, false) {
                tracing_warn(&e);
            }
        }
    }

    fn refresh_for(&self, rev: Option<&str>) {
        if rev.is_some_and(|r| revision::split_stage(r).is_some()) {
            self.refresh_registry();
        }
    }

    fn side(&self, rev: Option<&str>) -> Result<Side> {
        self.refresh_for(rev);
        match self {
            Inner::Cached(c) => Ok(Side::Rev(c.commit(rev.unwrap_or("HEAD"))?)),
            Inner::Local(ctx) => revision::side_of(ctx, rev, None),
        }
    }

    fn commit(&self, rev: &str) -> Result<git2::Oid> {
        self.refresh_for(Some(rev));
        match self {
            Inner::Cached(c) => c.commit(rev),
            Inner::Local(ctx) => revision::commit_of(ctx, rev, None),
        }
    }
}

fn tracing_warn(e: &anyhow::Error) {
    eprintln!("gitmodel: warning: {e:#}; using the stage registry as known locally");
}

type Shared = Arc<Mutex<Option<Inner>>>;

fn locked(shared: &Shared) -> Result<MutexGuard<'_, Option<Inner>>> {
    shared
        .lock()
        .map_err(|_| anyhow!("an earlier call on this repository failed midway"))
}

/// Runs `f` on the repository with the GIL released.
fn with_repo<T: Send>(
    py: Python<'_>,
    shared: &Shared,
    f: impl FnOnce(&Inner) -> Result<T> + Send,
) -> Result<T> {
    py.detach(|| {
        let guard = locked(shared)?;
        let inner = guard
            .as_ref()
            .ok_or_else(|| anyhow!("the repository was closed"))?;
        f(inner)
    })
}

/// The library's error as an exception of `gitmodel.errors`.
fn to_py(py: Python<'_>, e: anyhow::Error, path: Option<&str>) -> PyErr {
    match raise(py, &e, path) {
        Ok(err) => err,
        Err(err) => err,
    }
}

fn raise(py: Python<'_>, e: &anyhow::Error, path: Option<&str>) -> PyResult<PyErr> {
    let message = format!("{e:#}");
    let kwargs = PyDict::new(py);
    let mut class = "GitModelError";
    for cause in e.chain() {
        if let Some(g) = cause.downcast_ref::<GateRefused>() {
            class = "GateRefused";
            kwargs.set_item("model", &g.model)?;
            kwargs.set_item("stage", &g.stage)?;
            kwargs.set_item("commit", &g.commit)?;
            let failed = PyList::empty(py);
            for r in &g.failed {
                let d = PyDict::new(py);
                d.set_item("rule", &r.rule)?;
                d.set_item("passed", r.passed)?;
                d.set_item("detail", &r.detail)?;
                failed.append(d)?;
            }
            kwargs.set_item("failed", failed)?;
            break;
        }
        if cause.downcast_ref::<NotFound>().is_some() {
            class = "NotFound";
            break;
        }
        if let Some(oid) = integrity(cause) {
            class = "IntegrityError";
            kwargs.set_item("oid", oid.map(|o| o.to_hex()))?;
            kwargs.set_item("path", path)?;
            break;
        }
        if let Some(r) = cause.downcast_ref::<RemoteGitError>() {
            class = "RemoteError";
            kwargs.set_item("url", &r.url)?;
            kwargs.set_item("status", r.status)?;
            break;
        }
        if let Some((url, status)) = remote_failure(cause) {
            class = "RemoteError";
            kwargs.set_item("url", url)?;
            kwargs.set_item("status", status)?;
            break;
        }
        if cause.downcast_ref::<gitmodel_repo::UsageError>().is_some() {
            class = "ConfigError";
            break;
        }
    }
    let module = py.import("gitmodel.errors")?;
    let value = module.getattr(class)?.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(value))
}

/// Whether `cause` says stored or fetched bytes are not what their id says (with the
/// file's oid when it names one).
fn integrity(cause: &(dyn std::error::Error + 'static)) -> Option<Option<Oid>> {
    use gitmodel_client::ClientError;
    use gitmodel_format::pack::PackError;
    use gitmodel_store::StoreError;
    if let Some(s) = cause.downcast_ref::<StoreError>() {
        return match s {
            StoreError::HashMismatch { oid, .. } => Some(Some(*oid)),
            // A local pack that does not parse or decode is damaged on disk.
            StoreError::Pack { .. } | StoreError::Recipe { .. } => Some(None),
            _ => None,
        };
    }
    match cause.downcast_ref::<ClientError>() {
        Some(ClientError::Corrupt { oid, .. }) => return Some(Some(*oid)),
        Some(ClientError::CorruptChunk { .. }) => return Some(None),
        _ => {}
    }
    if let Some(PackError::CorruptChunk { .. }) = cause.downcast_ref::<PackError>() {
        return Some(None);
    }
    None
}

/// The server a failure came from, and its HTTP status.
fn remote_failure(cause: &(dyn std::error::Error + 'static)) -> Option<(String, Option<u16>)> {
    use gitmodel_client::ClientError;
    match cause.downcast_ref::<ClientError>()? {
        ClientError::Http { url, status, .. } => Some((url.clone(), Some(*status))),
        ClientError::Transport { url, .. }
        | ClientError::Timeout { url, .. }
        | ClientError::Tls { url, .. }
        | ClientError::Protocol { url, .. }
        | ClientError::BadUrl { url, .. } => Some((url.clone(), None)),
        ClientError::AuthRequired { url, .. } => Some((url.clone(), Some(401))),
        _ => None,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

fn kind(name: &str) -> PyResult<Kind> {
    match name {
        "metrics" => Ok(Kind::Metrics),
        "params" => Ok(Kind::Params),
        other => Err(PyRuntimeError::new_err(format!("unknown kind {other:?}"))),
    }
}

/// A repository (see `gitmodel.Repo`).
#[pyclass(frozen, module = "gitmodel._native")]
struct Repo {
    shared: Shared,
    root: Option<String>,
    url: Option<String>,
}

#[pymethods]
impl Repo {
    /// Opens the repository `path` is in (a working tree, a directory below one, or a bare
    /// repository).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Repo> {
        let opened = py.detach(|| -> Result<Ctx> { Ctx::new(RepoDir::open_at(&path)?) });
        let ctx = opened.map_err(|e| to_py(py, e, None))?;
        let root = ctx
            .repo
            .workdir
            .clone()
            .unwrap_or_else(|| ctx.git().path().to_path_buf());
        Ok(Repo {
            shared: Arc::new(Mutex::new(Some(Inner::Local(Box::new(ctx))))),
            root: Some(root.to_string_lossy().into_owned()),
            url: None,
        })
    }

    /// A repository known by its git URL: fetches the default branch's tip and the stage
    /// registry (shallow) into the cache, locked for this object until `close()`.
    #[staticmethod]
    fn from_url(py: Python<'_>, url: String) -> PyResult<Repo> {
        let cached = py
            .detach(|| Cached::open(&url, true))
            .map_err(|e| to_py(py, e, None))?;
        Ok(Repo {
            shared: Arc::new(Mutex::new(Some(Inner::Cached(Box::new(cached))))),
            root: None,
            url: Some(gitmodel_repo::cache::redact(&url)),
        })
    }

    /// Releases the repository (and, for a URL, the cache lock).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = py.detach(|| locked(&self.shared).map(|mut g| g.take()));
        drop(taken.map_err(|e| to_py(py, e, None))?);
        Ok(())
    }

    #[getter]
    fn root(&self) -> Option<String> {
        self.root.clone()
    }

    #[getter]
    fn url(&self) -> Option<String> {
        self.url.clone()
    }

    /// The full commit id `rev` names (a commit, branch, tag, or MODEL@STAGE).
    fn commit(&self, py: Python<'_>, rev: String) -> PyResult<String> {
        with_repo(py, &self.shared, |r| Ok(r.commit(&rev)?.to_string()))
            .map_err(|e| to_py(py, e, None))
    }

    /// Tensors of a model file: {format, file_size, bytes_fetched, metadata, tensors:
    /// [(name, dtype, shape, bytearray)]}.
    #[pyo3(signature = (path, rev=None, names=None))]
    fn load_tensors<'py>(
        &self,
        py: Python<'py>,
        path: String,
        rev: Option<String>,
        names: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let loaded = with_repo(py, &self.shared, |r| {
            let side = r.side(rev.as_deref())?;
            tensors::load(r.ctx(), side, &path, names.as_deref())
        })
        .map_err(|e| to_py(py, e, Some(&path)))?;
        let out = PyDict::new(py);
        out.set_item("format", loaded.format)?;
        out.set_item("file_size", loaded.file_size)?;
        out.set_item("bytes_fetched", loaded.bytes_fetched)?;
        out.set_item("metadata", loaded.metadata.into_iter().collect::<Vec<_>>())?;
        let list = PyList::empty(py);
        for t in loaded.tensors {
            let data = PyByteArray::new(py, &t.data);
            list.append((t.name, t.dtype.name(), t.shape, data))?;
        }
        out.set_item("tensors", list)?;
        Ok(out)
    }

    /// The tensors of a model file without their data (JSON list of {name, dtype, shape,
    /// start, end}).
    #[pyo3(signature = (path, rev=None))]
    fn tensor_infos(&self, py: Python<'_>, path: String, rev: Option<String>) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            let side = r.side(rev.as_deref())?;
            let (_, _, h) = tensors::model_header(r.ctx(), side, &path)?;
            let list: Vec<serde_json::Value> = h
                .tensors
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name, "dtype": t.dtype.name(), "shape": t.shape,
                        "start": t.start, "end": t.end,
                    })
                })
                .collect();
            json(&list)
        })
        .map_err(|e| to_py(py, e, Some(&path)))
    }

    /// The model version `spec` names (MODEL@STAGE, MODEL@REV, MODEL), as JSON.
    fn resolve(&self, py: Python<'_>, spec: String) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            r.refresh_registry();
            json(&revision::model_version(r.ctx(), &spec, r.remote())?)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// A file at a revision, for reading in ranges.
    #[pyo3(signature = (path, rev=None))]
    fn open(&self, py: Python<'_>, path: String, rev: Option<String>) -> PyResult<File> {
        let content = with_repo(py, &self.shared, |r| {
            let side = r.side(rev.as_deref())?;
            r.ctx().content_at(side, &path)?.ok_or_else(|| {
                gitmodel_repo::not_found(format!(
                    "{path}: no such file at {}",
                    rev.as_deref().unwrap_or("the working tree")
                ))
            })
        })
        .map_err(|e| to_py(py, e, Some(&path)))?;
        let oid = content.pointer().map(|p| p.oid);
        Ok(File {
            shared: self.shared.clone(),
            size: content.size(),
            content,
            oid,
            path,
            hashed: Mutex::new(Some(OidHasher::new())),
        })
    }

    /// Size and id of a file at a revision (JSON {size, oid, pointer}); `None` when absent.
    #[pyo3(signature = (path, rev=None))]
    fn stat(&self, py: Python<'_>, path: String, rev: Option<String>) -> PyResult<Option<String>> {
        with_repo(py, &self.shared, |r| {
            let side = r.side(rev.as_deref())?;
            let tree_kind = match side {
                Side::Rev(c) => tree_entry_kind(r.ctx(), c, &path)?,
                Side::Worktree => {
                    let full = r.ctx().repo.workdir()?.join(&path);
                    match std::fs::metadata(&full) {
                        Ok(m) if m.is_dir() => Some("directory"),
                        Ok(_) => Some("file"),
                        Err(_) => None,
                    }
                }
            };
            match tree_kind {
                None => Ok(None),
                Some("directory") => Ok(Some(json(&serde_json::json!({"type": "directory"}))?)),
                Some(_) => {
                    let Some(c) = r.ctx().content_at(side, &path)? else {
                        return Ok(None);
                    };
                    Ok(Some(json(&serde_json::json!({
                        "type": "file",
                        "size": c.size(),
                        "oid": c.pointer().map(|p| p.oid.to_hex()),
                    }))?))
                }
            }
        })
        .map_err(|e| to_py(py, e, Some(&path)))
    }

    /// Entries of a directory at a revision (JSON list of {name, type, size}).
    #[pyo3(signature = (path, rev=None))]
    fn list(&self, py: Python<'_>, path: String, rev: Option<String>) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            let commit = match r.side(rev.as_deref())? {
                Side::Rev(c) => c,
                Side::Worktree => r.commit("HEAD")?,
            };
            json(&list_tree(r.ctx(), commit, &path)?)
        })
        .map_err(|e| to_py(py, e, Some(&path)))
    }

    /// Writes the model version `spec` names to `dest` (atomically, verified): JSON of
    /// the version written.
    fn export(&self, py: Python<'_>, spec: String, dest: PathBuf) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            r.refresh_registry();
            let ctx = r.ctx();
            let mv = revision::model_version(ctx, &spec, r.remote())?;
            let oid = Oid::from_hex(&mv.version.oid).map_err(|e| anyhow!("{e}"))?;
            gitmodel_repo::registry::write_version(ctx, &mv.version, oid, &dest)?;
            json(&mv)
        })
        .map_err(|e| to_py(py, e, Some(&dest.to_string_lossy())))
    }

    /// Params and metrics across revisions (JSON of the comparison).
    #[pyo3(signature = (refs, sort=None, ascending=false))]
    fn compare(
        &self,
        py: Python<'_>,
        refs: Vec<String>,
        sort: Option<String>,
        ascending: bool,
    ) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            json(&experiments::compare(
                r.ctx(),
                &refs,
                sort.as_deref(),
                ascending,
            )?)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// Metrics or params at a revision (None: the working tree), JSON of flat values.
    #[pyo3(signature = (which, rev=None))]
    fn values(&self, py: Python<'_>, which: String, rev: Option<String>) -> PyResult<String> {
        let k = kind(&which)?;
        with_repo(py, &self.shared, |r| {
            let side = r.side(rev.as_deref())?;
            json(&gitmodel_repo::content::load(r.ctx(), side, k)?)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// What a model version was made from (JSON).
    #[pyo3(signature = (model, rev=None))]
    fn lineage(&self, py: Python<'_>, model: String, rev: Option<String>) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            let commit = r.commit(rev.as_deref().unwrap_or("HEAD"))?;
            json(&experiments::lineage(
                r.ctx(),
                &format!("{model}@{commit}"),
            )?)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// What changed in `path` between two revisions (`b` None: the working tree), JSON.
    #[pyo3(signature = (a, b, path))]
    fn diff(&self, py: Python<'_>, a: String, b: Option<String>, path: String) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            let ctx = r.ctx();
            let old = ctx.content_at(Side::Rev(r.commit(&a)?), &path)?;
            let new = ctx.content_at(r.side(b.as_deref())?, &path)?;
            let key = gitmodel_repo::diff::key_column(ctx, &path).unwrap_or(None);
            let d = gitmodel_repo::diff::diff_file(
                ctx,
                &path,
                old.as_ref(),
                new.as_ref(),
                key.as_deref(),
                5,
            )?;
            let mut v = serde_json::to_value(&d)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("bytes_fetched".into(), ctx.bytes_fetched.get().into());
            }
            json(&v)
        })
        .map_err(|e| to_py(py, e, Some(&path)))
    }

    /// Registry events of a model (JSON list), or with `at` the stages then (JSON map).
    #[pyo3(signature = (model, stage=None, at=None))]
    fn history(
        &self,
        py: Python<'_>,
        model: String,
        stage: Option<String>,
        at: Option<String>,
    ) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            r.refresh_registry();
            let list = gitmodel_repo::registry::view(r.ctx())?;
            if let Some(at) = &at {
                let t = gitmodel_ml::time::parse(at)
                    .map_err(|e| gitmodel_repo::usage(e.to_string()))?;
                let mut states = events::replay(&list, &model, Some(t));
                if let Some(s) = &stage {
                    states.retain(|k, _| k == s);
                }
                let out: serde_json::Map<String, serde_json::Value> = states
                    .into_iter()
                    .map(|(k, s)| {
                        (
                            k,
                            serde_json::json!({
                                "version": s.current, "since": s.since, "by": s.by,
                                "action": s.action,
                            }),
                        )
                    })
                    .collect();
                return json(&out);
            }
            let picked: Vec<&events::Event> = list
                .iter()
                .filter(|e| e.model == model && stage.as_ref().is_none_or(|s| &e.stage == s))
                .collect();
            json(&picked)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// Promotes (JSON of the event recorded).
    #[pyo3(signature = (model, rev, to, message=None, force=false, local=false))]
    #[allow(clippy::too_many_arguments)]
    fn promote(
        &self,
        py: Python<'_>,
        model: String,
        rev: String,
        to: String,
        message: Option<String>,
        force: bool,
        local: bool,
    ) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            let commit = r.commit(&rev)?.to_string();
            let done = gitmodel_repo::registry::promote(
                r.ctx(),
                &model,
                &commit,
                &to,
                message,
                force,
                None,
                local,
                |_| {},
            )?;
            json(&done.event)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// Rolls a stage back (JSON of the event recorded).
    #[pyo3(signature = (model, stage, message=None, local=false))]
    fn rollback(
        &self,
        py: Python<'_>,
        model: String,
        stage: String,
        message: Option<String>,
        local: bool,
    ) -> PyResult<String> {
        with_repo(py, &self.shared, |r| {
            let ev = gitmodel_repo::registry::rollback(
                r.ctx(),
                &model,
                &stage,
                message,
                None,
                local,
                |_| {},
            )?;
            json(&ev)
        })
        .map_err(|e| to_py(py, e, None))
    }

    /// Merges `values` (JSON object) into the working tree's metrics or params file;
    /// returns that file's path.
    #[pyo3(signature = (which, values, model=None))]
    fn log_values(
        &self,
        py: Python<'_>,
        which: String,
        values: String,
        model: Option<String>,
    ) -> PyResult<String> {
        let k = kind(&which)?;
        with_repo(py, &self.shared, |r| {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&values)?;
            experiments::log_values(r.ctx(), k, model.as_deref(), map)
        })
        .map_err(|e| to_py(py, e, None))
    }
}

fn tree_entry_kind(ctx: &Ctx, commit: git2::Oid, path: &str) -> Result<Option<&'static str>> {
    let tree = ctx.git().find_commit(commit)?.tree()?;
    if path.is_empty() || path == "/" {
        return Ok(Some("directory"));
    }
    let Ok(entry) = tree.get_path(std::path::Path::new(path.trim_end_matches('/'))) else {
        return Ok(None);
    };
    Ok(match entry.kind() {
        Some(git2::ObjectType::Tree) => Some("directory"),
        Some(git2::ObjectType::Blob) => Some("file"),
        _ => None,
    })
}

fn list_tree(ctx: &Ctx, commit: git2::Oid, path: &str) -> Result<Vec<serde_json::Value>> {
    let repo = ctx.git();
    let root = repo.find_commit(commit)?.tree()?;
    let dir = path.trim_matches('/');
    let tree = if dir.is_empty() {
        root
    } else {
        let entry = root
            .get_path(std::path::Path::new(dir))
            .map_err(|_| gitmodel_repo::not_found(format!("{dir}: no such directory")))?;
        repo.find_tree(entry.id())
            .map_err(|_| gitmodel_repo::not_found(format!("{dir}: not a directory")))?
    };
    let mut out = Vec::new();
    for e in tree.iter() {
        let name = e.name().unwrap_or_default();
        let full = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        match e.kind() {
            Some(git2::ObjectType::Tree) => {
                out.push(serde_json::json!({"name": full, "type": "directory", "size": 0}))
            }
            Some(git2::ObjectType::Blob) => {
                let blob = repo.find_blob(e.id())?;
                let (size, oid) = match gitmodel_format::Pointer::parse(blob.content()) {
                    Some(p) => (p.size, Some(p.oid.to_hex())),
                    None => (blob.size() as u64, None),
                };
                out.push(
                    serde_json::json!({"name": full, "type": "file", "size": size, "oid": oid}),
                )
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A file at a revision, read in ranges (see `gitmodel.Repo.open`). Read from its start
/// to its end in order, it is also checked against its oid as a whole.
#[pyclass(frozen, module = "gitmodel._native")]
struct File {
    shared: Shared,
    content: Content,
    size: u64,
    oid: Option<Oid>,
    path: String,
    /// The hash of the bytes read so far, while reads have been sequential from 0.
    hashed: Mutex<Option<OidHasher>>,
}

#[pymethods]
impl File {
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    #[getter]
    fn oid(&self) -> Option<String> {
        self.oid.map(|o| o.to_hex())
    }

    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// Up to `n` bytes from `offset` (fewer at the end of the file).
    fn read_at<'py>(&self, py: Python<'py>, offset: u64, n: u64) -> PyResult<Bound<'py, PyBytes>> {
        let data = with_repo(py, &self.shared, |r| {
            let ctx = r.ctx();
            let end = offset.saturating_add(n).min(self.size);
            if offset < end {
                ctx.prefetch(&self.content, std::slice::from_ref(&(offset..end)))?;
            }
            let data = ctx.read_at(&self.content, offset, n)?;
            self.track(offset, &data)?;
            Ok(data)
        })
        .map_err(|e| to_py(py, e, Some(&self.path)))?;
        Ok(PyBytes::new(py, &data))
    }
}

impl File {
    /// Feeds sequential reads to the whole-file hash; at the end, compares it.
    fn track(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut slot = self
            .hashed
            .lock()
            .map_err(|_| anyhow!("{}: an earlier read failed midway", self.path))?;
        let Some(h) = slot.as_mut() else {
            return Ok(());
        };
        if offset != h.len() {
            *slot = None; // not sequential: each chunk is still checked on its own
            return Ok(());
        }
        h.update(data);
        if h.len() < self.size {
            return Ok(());
        }
        let done = slot.take().map(OidHasher::finish);
        match (done, self.oid) {
            (Some(actual), Some(oid)) if actual != oid => Err(anyhow::Error::new(
                gitmodel_store::StoreError::HashMismatch {
                    oid,
                    actual,
                    size: self.size,
                },
            )
            .context(self.path.clone())),
            _ => Ok(()),
        }
    }
}

/// The version of this build (the `git-model` commands' version).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Repo>()?;
    m.add_class::<File>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
