"""Lazy and verified: a tensor load from a 64 MiB model in a pointer-only clone fetches
only the chunks of the tensors asked for; a corrupted chunk, in the local store or on
the server, raises IntegrityError and nothing unverified is returned or written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import gitmodel
from conftest import git, model_repo, safetensors_bytes

MODEL = "model.safetensors"
N, ELEMS = 64, 1 << 18  # 64 tensors of 1 MiB (F32): a 64 MiB file


def store_bytes(clone: Path) -> int:
    return sum(p.stat().st_size for p in (clone / ".git" / "model").rglob("*") if p.is_file())


def packs(root: Path):
    return sorted(p for p in root.rglob("*.pack") if p.is_file())


def damage(pack: Path):
    """Flips one byte in the middle of every chunk's stored data (the pack's record
    headers, index and trailer stay intact: the chunk bytes themselves are wrong)."""
    data = bytearray(pack.read_bytes())
    index_offset = int.from_bytes(data[-24:-16], "little")
    at = 16  # the header
    while at < index_offset:
        stored_len = int.from_bytes(data[at + 36 : at + 40], "little")
        start = at + 48
        if stored_len:
            data[start + stored_len // 2] ^= 0x5A
        at = start + stored_len
    pack.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def big(home, server, tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy")
    origin, work = model_repo(root, f"{server.url}/acme/big", ["*.safetensors"])
    rng = np.random.default_rng(3)
    tensors = {f"layers.{i:02d}.weight": rng.normal(size=ELEMS).astype(np.float32) for i in range(N)}
    data = safetensors_bytes(tensors)
    assert len(data) >= 64 << 20
    (work / MODEL).write_bytes(data)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "a 64 MiB model", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    return {"root": root, "origin": origin, "tensors": tensors, "data": data}


def pointer_clone(big, name):
    clone = big["root"] / name
    subprocess.run(["git", "clone", "-q", str(big["origin"]), str(clone)], check=True,
                   env={**os.environ, "GIT_MODEL_SKIP_SMUDGE": "1"})
    assert (clone / MODEL).stat().st_size < 200
    return clone


def test_a_tensor_load_reads_under_five_percent(big):
    clone = pointer_clone(big, "lazy-clone")
    repo = gitmodel.Repo(clone)
    name = "layers.37.weight"
    w = repo.load_tensors(MODEL, rev="HEAD", names=[name])
    np.testing.assert_array_equal(w[name], big["tensors"][name])
    size = len(big["data"])
    asked = big["tensors"][name].nbytes
    assert asked / size < 0.02
    fetched = repo.last_load["bytes_fetched"]
    assert asked <= fetched < 0.05 * size, (fetched, size)
    # What the clone holds on disk is bounded the same way.
    assert store_bytes(clone) < 0.05 * size
    infos = repo.tensors(MODEL)
    assert len(infos) == N and infos[0].shape == (ELEMS,) and infos[0].dtype == "F32"


def test_all_tensors_load_and_are_checked_whole(big):
    repo = gitmodel.Repo(pointer_clone(big, "whole-clone"))
    w = repo.load_tensors(MODEL)
    assert set(w) == set(big["tensors"])
    np.testing.assert_array_equal(w["layers.63.weight"], big["tensors"]["layers.63.weight"])
    with repo.open(MODEL, rev="HEAD") as f:
        assert f.read() == big["data"]


def test_a_corrupted_local_chunk_raises_and_writes_nothing(big, tmp_path):
    clone = pointer_clone(big, "corrupt-local")
    repo = gitmodel.Repo(clone)
    name = "layers.05.weight"
    repo.load_tensors(MODEL, rev="HEAD", names=[name])
    local = packs(clone / ".git" / "model")
    assert local
    for p in local:
        damage(p)
    with pytest.raises(gitmodel.IntegrityError) as e:
        gitmodel.Repo(clone).load_tensors(MODEL, rev="HEAD", names=[name])
    assert e.value.path == MODEL
    with pytest.raises(gitmodel.IntegrityError):
        gitmodel.Repo(clone).open(MODEL, rev="HEAD").read()


def test_a_corrupted_chunk_on_the_server_raises_and_writes_nothing(big, server, tmp_path):
    clone = pointer_clone(big, "corrupt-server")
    saved = {p: p.read_bytes() for p in packs(server.data_dir)}
    try:
        for p in saved:
            damage(p)
        repo = gitmodel.Repo(clone)
        with pytest.raises(gitmodel.IntegrityError):
            repo.load_tensors(MODEL, rev="HEAD", names=["layers.10.weight"])
        # Nothing unverified was kept in the clone's store.
        assert store_bytes(clone) < 1 << 20
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
