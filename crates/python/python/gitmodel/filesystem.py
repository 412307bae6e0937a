"""``gitmodel://`` for fsspec: the files of a repository at a revision, read lazily.

    import fsspec
    with fsspec.open("gitmodel://models/vision.safetensors", repo=".", rev="vision@production") as f:
        ...

``repo`` is a clone's path or a git URL (default: the current directory); ``rev`` any
revision, ``MODEL@STAGE`` included (default: HEAD). Read-only.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from fsspec.spec import AbstractFileSystem

from . import Repo, _is_url


class GitModelFileSystem(AbstractFileSystem):
    protocol = "gitmodel"
    root_marker = ""

    def __init__(self, repo: Any = ".", rev: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(repo, Repo):
            self.repo = repo
        elif _is_url(repo):
            self.repo = Repo.from_url(repo)
        else:
            self.repo = Repo(repo)
        # Pin the revision once, so every read of this filesystem sees the same commit.
        self.rev = self.repo.commit(rev or "HEAD")

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = super()._strip_protocol(path)
        return path.strip("/")

    def ls(self, path: str, detail: bool = True, **kwargs: Any):
        path = self._strip_protocol(path)
        info = self.info(path)
        if info["type"] == "file":
            entries = [info]
        else:
            entries = [self._entry(e) for e in json.loads(self.repo._r.list(path, self.rev))]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any):
        path = self._strip_protocol(path)
        st = self.repo._r.stat(path, self.rev)
        if st is None:
            raise FileNotFoundError(path)
        st = json.loads(st)
        if st["type"] == "directory":
            return {"name": path, "type": "directory", "size": 0}
        return {"name": path, "type": "file", "size": st["size"], "oid": st.get("oid")}

    @staticmethod
    def _entry(e):
        out = {"name": e["name"], "type": e["type"], "size": e.get("size", 0)}
        if e.get("oid"):
            out["oid"] = e["oid"]
        return out

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any):
        if "r" not in mode or any(c in mode for c in "wa+x"):
            raise PermissionError(f"gitmodel:// is read-only (mode {mode!r})")
        path = self._strip_protocol(path)
        return self.repo.open(path, self.rev)

    def cat_file(self, path: str, start: Optional[int] = None, end: Optional[int] = None, **kwargs: Any):
        with self._open(path) as f:
            if start is not None:
                f.seek(start if start >= 0 else f.size + start)
            if end is None:
                return f.read()
            end = end if end >= 0 else f.size + end
            return f.read(max(end - f.tell(), 0))
