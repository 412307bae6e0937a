"""git-model for Python: the models, tensors, metrics and stage registry of a git
repository, read lazily (only the bytes asked for, every chunk verified).

    import gitmodel
    repo = gitmodel.Repo(".")
    w = repo.load_tensors("models/vision.safetensors", rev="exp/lr-0.01", names=["head.weight"])
    prod = repo.resolve("vision@production")
    repo.export("vision@production", "/srv/model.safetensors")

A revision is anything git names (a commit, branch, tag) or ``MODEL@STAGE``. Where a
repository is taken, a git URL works too (nothing is cloned: see :meth:`Repo.from_url`).
See docs/python.md for the whole API and how it maps to the ``git model`` commands.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import _native
from .errors import (
    ConfigError,
    GateRefused,
    GitModelError,
    IntegrityError,
    NotFound,
    RemoteError,
    UnsupportedDtype,
)

__version__ = _native.version()

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "Repo",
    "ModelVersion",
    "QuantizedTensor",
    "TensorInfo",
    "load_tensors",
    "open",
    "resolve",
    "export",
    "log_metrics",
    "log_params",
    "GitModelError",
    "NotFound",
    "GateRefused",
    "IntegrityError",
    "RemoteError",
    "ConfigError",
    "UnsupportedDtype",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/:]+@[^/:]+:")


def _is_url(s: Any) -> bool:
    return isinstance(s, str) and bool(_URL.match(s))


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One version of a model: what ``MODEL@STAGE`` or ``MODEL@REV`` names."""

    model: str
    #: The stage asked for (``None`` when a revision was).
    stage: Optional[str]
    commit: str
    #: SHA-256 of the model file (its Git LFS oid).
    oid: str
    path: str
    size: int
    metrics: Dict[str, float]
    #: When and by whom it was put in the stage (``None`` for a revision).
    when: Optional[_dt.datetime]
    who: Optional[str]

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "ModelVersion":
        since = d.get("since")
        return cls(
            model=d["model"],
            stage=d.get("stage"),
            commit=d["commit"],
            oid=d["oid"],
            path=d["path"],
            size=d["size"],
            metrics=dict(d.get("metrics") or {}),
            when=None if since is None else _dt.datetime.fromtimestamp(since, _dt.timezone.utc),
            who=d.get("by"),
        )


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A tensor of a model file, without its data."""

    name: str
    dtype: str
    shape: tuple
    #: Byte range in the file.
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """A GGUF tensor of a quantized type (Q4_0, Q8_0, Q4_K…): its raw blocks, as stored."""

    name: str
    type: str
    #: Dimensions, outermost first (as numpy orders them).
    shape: tuple
    data: bytes


# safetensors / GGML type names -> numpy dtype strings (little-endian, as stored).
_NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
# Types numpy has only through ml_dtypes.
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _array(name: str, dtype: str, shape: Sequence[int], data: bytearray, fmt: str):
    import numpy as np

    dims = tuple(int(d) for d in shape)  # outermost first, GGUF's reversed on reading
    if dtype in _NUMPY:
        return np.frombuffer(data, dtype=np.dtype(_NUMPY[dtype])).reshape(dims)
    if dtype in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise UnsupportedDtype(
                f"tensor {name!r} is {dtype}: numpy needs the ml_dtypes package for it "
                f"(pip install ml_dtypes), or leave it out of names="
            ) from None
        return np.frombuffer(data, dtype=getattr(ml_dtypes, _ML_DTYPES[dtype])).reshape(dims)
    if fmt == "gguf":
        return QuantizedTensor(name=name, type=dtype, shape=dims, data=bytes(data))
    raise UnsupportedDtype(f"tensor {name!r} has the type {dtype!r}, which numpy cannot hold")


class _RawFile(io.RawIOBase):
    """The raw, seekable reader under :meth:`Repo.open`."""

    def __init__(self, native: Any) -> None:
        super().__init__()
        self._f = native
        self._pos = 0

    @property
    def name(self) -> str:
        return self._f.path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._f.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        data = self._f.read_at(self._pos, len(view))
        n = len(data)
        view[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        data = self._f.read_at(self._pos, max(self._f.size - self._pos, 0))
        self._pos += len(data)
        return data


class GitModelFile(io.BufferedReader):
    """A file of a repository at a revision: binary, seekable, streaming (only the bytes
    read are fetched). ``size`` and ``oid`` say what it is. Reading it through from start
    to end also checks the whole file against its oid."""

    def __init__(self, native: Any, buffer_size: int) -> None:
        super().__init__(_RawFile(native), buffer_size=buffer_size)
        self.size: int = native.size
        self.oid: Optional[str] = native.oid


class Repo:
    """A git repository with its local store and its server.

    ``Repo(path)`` opens a clone (pointer-only is fine: content comes from the server,
    only what is read). ``Repo.from_url(url)`` opens a repository by its git URL without
    a clone. Safe to share between threads; calls on one ``Repo`` take turns.
    """

    def __init__(self, path: PathLike = ".") -> None:
        if _is_url(path):
            raise ConfigError(f"{path!r} is a URL: use gitmodel.Repo.from_url(url)")
        self._r = _native.Repo(os.fspath(path))

    @classmethod
    def from_url(cls, url: str) -> "Repo":
        """A repository by its git URL (https, ssh, file): fetches just the default
        branch's tip and the stage registry, shallow, into the cache
        (``GIT_MODEL_CACHE``), and of models only the chunks read. Close it (or use it as
        a context manager) to let other processes use the same cached copy."""
        self = cls.__new__(cls)
        self._r = _native.Repo.from_url(url)
        return self

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> "Repo":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"gitmodel.Repo({self._r.url or self._r.root!r})"

    @property
    def root(self) -> Optional[str]:
        """The working tree (or git directory); ``None`` for a URL."""
        return self._r.root

    def commit(self, rev: str) -> str:
        """The full commit id ``rev`` names (a commit, branch, tag or ``MODEL@STAGE``)."""
        return self._r.commit(rev)

    # -- tensors and files ---------------------------------------------------------

    def tensors(self, path: str, rev: Optional[str] = None) -> List[TensorInfo]:
        """The tensors of a safetensors or GGUF file (reads its header only)."""
        infos = json.loads(self._r.tensor_infos(path, rev))
        return [
            TensorInfo(i["name"], i["dtype"], tuple(i["shape"]), i["start"], i["end"])
            for i in infos
        ]

    def load_tensors(
        self,
        path: str,
        rev: Optional[str] = None,
        names: Optional[Iterable[str]] = None,
    ) -> Dict[str, Any]:
        """Tensors of a safetensors or GGUF file as numpy arrays, by name.

        Reads the header and the byte ranges of the tensors asked for (``names``; all when
        ``None``), fetching only the chunks this clone lacks; every chunk is verified, and
        a load of every tensor also checks the whole file against its oid. ``rev``:
        ``None`` is the working tree. BF16/FP8 need ``ml_dtypes``; quantized GGUF tensors
        come as :class:`QuantizedTensor`.
        """
        if isinstance(names, str):
            names = [names]
        loaded = self._r.load_tensors(path, rev, None if names is None else list(names))
        self.last_load = {
            "file_size": loaded["file_size"],
            "bytes_fetched": loaded["bytes_fetched"],
            "format": loaded["format"],
        }
        fmt = loaded["format"]
        return {
            name: _array(name, dtype, shape, data, fmt)
            for (name, dtype, shape, data) in loaded["tensors"]
        }

    def open(
        self, path: str, rev: Optional[str] = None, mode: str = "rb", buffer_size: int = 1 << 20
    ) -> GitModelFile:
        """A file at ``rev`` (``None``: the working tree) as a binary, seekable, streaming
        file object; only the bytes read are fetched."""
        if mode not in ("r", "rb"):
            raise ConfigError(f"mode {mode!r}: files are opened for reading, in binary ('rb')")
        return GitModelFile(self._r.open(path, rev), buffer_size)

    def export(self, spec: str, dest: PathLike) -> ModelVersion:
        """Writes the model version ``spec`` names (``MODEL@STAGE``, ``MODEL@REV``) to
        ``dest``: atomically, checked against its oid, fetching only missing chunks."""
        return ModelVersion._from(json.loads(self._r.export(spec, os.fspath(dest))))

    # -- experiments -------------------------------------------------------------------

    def resolve(self, spec: str) -> ModelVersion:
        """The model version ``MODEL@STAGE``, ``MODEL@REV`` or ``MODEL`` (HEAD) names."""
        return ModelVersion._from(json.loads(self._r.resolve(spec)))

    def metrics(self, rev: Optional[str] = None) -> Dict[str, Any]:
        """The metrics at ``rev`` (``None``: the working tree), flattened (``eval.loss``)."""
        return json.loads(self._r.values("metrics", rev))

    def params(self, rev: Optional[str] = None) -> Dict[str, Any]:
        """The params at ``rev`` (``None``: the working tree), flattened."""
        return json.loads(self._r.values("params", rev))

    def compare(
        self, *refs: str, sort: Optional[str] = None, ascending: bool = False
    ) -> List[Dict[str, Any]]:
        """One row per revision (patterns like ``exp/*`` match branches; the first is the
        baseline): ``name``, ``commit``, the params, the metrics, and ``delta.<metric>``
        against the baseline. Rows after the baseline are ordered by ``sort``.
        ``pandas.DataFrame(rows)`` makes a table of it."""
        if len(refs) == 1 and not isinstance(refs[0], str):
            refs = tuple(refs[0])
        table = json.loads(self._r.compare(list(refs), sort, ascending))
        rows = []
        for r in table["rows"]:
            row: Dict[str, Any] = {"name": r["name"], "commit": r["commit"]}
            row.update(r.get("params") or {})
            row.update(r.get("metrics") or {})
            for k, v in (r.get("deltas") or {}).items():
                row[f"delta.{k}"] = v
            rows.append(row)
        return rows

    def lineage(self, model: str, rev: Optional[str] = None) -> Dict[str, Any]:
        """What the model's version at ``rev`` was made from: the commit, its inputs'
        versions, params and metrics."""
        return json.loads(self._r.lineage(model, rev))

    def diff(self, a: str, b: Optional[str] = None, *, path: str) -> Dict[str, Any]:
        """What changed in ``path`` from ``a`` to ``b`` (``None``: the working tree):
        per tensor for models, per row for tables. ``{"kind": None}`` when unchanged."""
        d = json.loads(self._r.diff(a, b, path))
        return d if isinstance(d, dict) and "kind" in d else {"kind": None, **(d or {})}

    # -- the stage registry -------------------------------------------------------------

    def history(
        self,
        model: str,
        stage: Optional[str] = None,
        at: Union[None, str, _dt.date, _dt.datetime] = None,
    ) -> Any:
        """Every promotion and rollback of ``model`` (list of dicts); with ``at`` (a date,
        datetime or ``YYYY-MM-DD``), which version each stage held then (dict by stage)."""
        if isinstance(at, _dt.datetime):
            if at.tzinfo is None:
                at = at.replace(tzinfo=_dt.timezone.utc)
            at = "@%d" % int(at.timestamp())
        elif isinstance(at, _dt.date):
            at = at.isoformat()
        return json.loads(self._r.history(model, stage, at))

    def stage(self, model: str, stage: str) -> Optional[ModelVersion]:
        """The version in ``stage``, or ``None``."""
        try:
            return self.resolve(f"{model}@{stage}")
        except NotFound:
            return None

    def promote(
        self,
        model: str,
        rev: str,
        to: str,
        message: Optional[str] = None,
        force: bool = False,
        local: bool = False,
    ) -> Dict[str, Any]:
        """Puts the model's version at ``rev`` into stage ``to`` if its gates in
        models.toml pass (else raises :class:`GateRefused`; ``force`` records an
        override), syncing the registry with the remote unless ``local``."""
        return json.loads(self._r.promote(model, rev, to, message, force, local))

    def rollback(
        self, model: str, stage: str, message: Optional[str] = None, local: bool = False
    ) -> Dict[str, Any]:
        """Puts back the version ``stage`` held before its current one."""
        return json.loads(self._r.rollback(model, stage, message, local))

    # -- training scripts ----------------------------------------------------------------

    def log_metrics(self, values: Mapping[str, Any], model: Optional[str] = None) -> str:
        """Merges ``values`` into the metrics file models.toml names (for ``model``, else
        the repository's; default ``metrics.json``), atomically. Returns its path."""
        return self._r.log_values("metrics", json.dumps(dict(values)), model)

    def log_params(self, values: Mapping[str, Any], model: Optional[str] = None) -> str:
        """Like :meth:`log_metrics`, for the params file (default ``params.yaml``)."""
        return self._r.log_values("params", json.dumps(dict(values)), model)


def _repo(repo: Union[PathLike, Repo, None]):
    """(Repo, whether to close it)."""
    if isinstance(repo, Repo):
        return repo, False
    if repo is None:
        repo = "."
    if _is_url(repo):
        return Repo.from_url(repo), True
    return Repo(repo), True


def _on(repo: Union[PathLike, Repo, None], call):
    """`call(Repo)` on a Repo, a clone's path or a git URL (opened and closed for it)."""
    r, close = _repo(repo)
    try:
        return call(r)
    finally:
        if close:
            r.close()


def load_tensors(
    repo: Union[PathLike, Repo],
    path: str,
    rev: Optional[str] = None,
    names: Optional[Iterable[str]] = None,
) -> Dict[str, Any]:
    """:meth:`Repo.load_tensors` on a clone's path or a git URL (nothing cloned)."""
    return _on(repo, lambda r: r.load_tensors(path, rev=rev, names=names))


def resolve(repo: Union[PathLike, Repo], spec: str) -> ModelVersion:
    """:meth:`Repo.resolve` on a clone's path or a git URL."""
    return _on(repo, lambda r: r.resolve(spec))


def export(repo: Union[PathLike, Repo], spec: str, dest: PathLike) -> ModelVersion:
    """:meth:`Repo.export` on a clone's path or a git URL."""
    return _on(repo, lambda r: r.export(spec, dest))


def open(  # noqa: A001 - the module-level counterpart of Repo.open
    repo: Union[PathLike, Repo], path: str, rev: Optional[str] = None
) -> io.BufferedIOBase:
    """:meth:`Repo.open` on a clone's path or a git URL (the file is read whole first for
    a URL, which is released at once)."""
    if isinstance(repo, Repo):
        return repo.open(path, rev)

    def whole(r: Repo) -> io.BufferedIOBase:
        with r.open(path, rev) as f:
            return io.BytesIO(f.read())

    return _on(repo, whole)


def log_metrics(values: Mapping[str, Any], model: Optional[str] = None, repo: PathLike = ".") -> str:
    """:meth:`Repo.log_metrics` for the repository the training script runs in."""
    return _on(repo, lambda r: r.log_metrics(values, model))


def log_params(values: Mapping[str, Any], model: Optional[str] = None, repo: PathLike = ".") -> str:
    """:meth:`Repo.log_params` for the repository the training script runs in."""
    return _on(repo, lambda r: r.log_params(values, model))
