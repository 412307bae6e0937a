"""Fixtures of the Python package's tests: hermetic git, the real git-model-server on a
free loopback port, and a real git host (git http-backend behind lighttpd, with HTTP
Basic credentials). The `git-model` and `git-model-server` commands are the ones the
installed wheel put beside this interpreter."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
USER, PASSWORD = "alice", "s3cret-pw"


def run(args, cwd=None, env=None, check=True, input=None):
    p = subprocess.run(
        args, cwd=cwd, env=env, input=input, capture_output=True, text=True
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def git(*args, cwd=None, check=True, env=None):
    return run(["git", *args], cwd=cwd, check=check, env=env).stdout


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """A hermetic HOME for git (global config, credentials), set in os.environ so that
    the package's own git calls see it too."""
    h = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update(
        {
            "HOME": str(h),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(h / ".gitconfig"),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "Ada Trainer",
            "GIT_AUTHOR_EMAIL": "ada@example.com",
            "GIT_COMMITTER_NAME": "Ada Trainer",
            "GIT_COMMITTER_EMAIL": "ada@example.com",
            "GIT_MODEL_CACHE": str(h / "cache"),
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "LC_ALL": "C",
        }
    )
    os.environ.pop("GIT_MODEL_URL", None)
    os.environ.pop("GIT_MODEL_TOKEN", None)
    git("config", "--global", "init.defaultBranch", "main")
    git("config", "--global", "credential.helper", "store")
    yield h
    os.environ.clear()
    os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path):
        self.proc = subprocess.Popen(
            [str(BIN / "git-model-server"), "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=open(data_dir.parent / f"{data_dir.name}.log", "w"),
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        self.url = line.rsplit(" ", 1)[-1]
        assert self.url.startswith("http://127.0.0.1:"), line
        self.data_dir = data_dir

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def server(home, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("server"))
    yield s
    s.stop()


class GitHost:
    """git http-backend behind lighttpd on 127.0.0.1, every URL behind HTTP Basic."""

    def __init__(self, root: Path):
        self.root = root
        self.repos = root / "repos"
        self.repos.mkdir()
        (root / "www").mkdir()
        (root / "users").write_text(f"{USER}:{PASSWORD}\n")
        backend = Path(git("--exec-path").strip()) / "git-http-backend"
        lighttpd = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
        for attempt in range(5):
            self.port = free_port()
            conf = root / "lighttpd.conf"
            conf.write_text(
                f"""
server.modules = ("mod_auth", "mod_authn_file", "mod_alias", "mod_setenv", "mod_cgi")
server.document-root = "{root / 'www'}"
server.bind = "127.0.0.1"
server.port = {self.port}
server.errorlog = "{root / 'error.log'}"
alias.url = ("/git/" => "{backend}/")
$HTTP["url"] =~ "^/git/" {{
    cgi.assign = ("" => "")
    setenv.add-environment = (
        "GIT_PROJECT_ROOT" => "{self.repos}",
        "GIT_HTTP_EXPORT_ALL" => "1",
    )
    auth.backend = "plain"
    auth.backend.plain.userfile = "{root / 'users'}"
    auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
}}
"""
            )
            self.proc = subprocess.Popen([lighttpd, "-D", "-f", str(conf)], stderr=subprocess.PIPE)
            deadline = time.time() + 10
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                except OSError:
                    time.sleep(0.05)
            self.proc.kill()
        raise AssertionError(f"lighttpd did not start: {self.proc.stderr.read()}")

    def new_repo(self, name: str) -> str:
        bare = self.repos / f"{name}.git"
        git("init", "-q", "--bare", str(bare))
        git("config", "-f", str(bare / "config"), "http.receivepack", "true")
        return self.url(name)

    def url(self, name: str, credentials: bool = False) -> str:
        auth = f"{USER}:{PASSWORD}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}/git/{name}.git"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def githost(home, tmp_path_factory):
    h = GitHost(tmp_path_factory.mktemp("githost"))
    # The credentials, as a user's credential helper keeps them.
    (home / ".git-credentials").write_text(f"http://{USER}:{PASSWORD}@127.0.0.1:{h.port}\n")
    yield h
    h.stop()


def model_repo(root: Path, server_url: str, patterns: list):
    """A bare origin and a clone of it set up for git-model: the filter installed, the
    given patterns tracked, the server at `server_url`. Returns (origin, work)."""
    origin = root / "origin.git"
    git("init", "-q", "--bare", str(origin))
    work = root / "work"
    git("clone", "-q", str(origin), str(work))
    git("model", "install", cwd=work)
    for pattern in patterns:
        git("model", "track", pattern, cwd=work)
    git("config", "-f", ".gitmodel", "model.url", server_url, cwd=work)
    return origin, work


def safetensors_bytes(tensors: dict) -> bytes:
    """A safetensors file of numpy arrays (F32/F64/I64/U8…), in name order."""
    names = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64",
             np.dtype("u1"): "U8", np.dtype("<f2"): "F16", np.dtype("<i4"): "I32"}
    header, blobs, at = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype.newbyteorder("<")], "shape": list(a.shape),
                        "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
