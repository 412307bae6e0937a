"""The types a model file holds, as numpy sees them: BF16 through ml_dtypes (and a clear
error naming the fix without it), and GGUF tensors by name, quantized ones as their raw
blocks with their type. The files are committed, pushed and read back lazily from a
pointer-only clone, as a user would."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import gitmodel
from conftest import git, model_repo

# GGML type numbers (ggml.h).
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def raw_safetensors(tensors: dict) -> bytes:
    """A safetensors file from `name -> (dtype name, shape, raw little-endian bytes)`."""
    header, blobs, at = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + b"".join(blobs)


def gguf_bytes(tensors: list, alignment: int = 32) -> bytes:
    """A GGUF v3 file from `(name, ggml type, numpy-order shape, raw bytes)`: one
    key/value (general.alignment) and the data section aligned as it says."""

    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1))
    out += string("general.alignment") + struct.pack("<II", 4, alignment)  # type 4: u32
    data, offsets = bytearray(), []
    for _, _, _, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        offsets.append(len(data))
        data += raw
    for (name, ggml_type, shape, _), offset in zip(tensors, offsets):
        dims = list(shape)[::-1]  # GGUF lists the innermost dimension first
        out += string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
    out += b"\0" * (-len(out) % alignment)
    return bytes(out + data)


def q8_0_blocks(x: np.ndarray) -> bytes:
    """Q8_0 as llama.cpp stores it: per 32 values an F16 scale and 32 signed bytes."""
    out = bytearray()
    for block in x.reshape(-1, 32):
        scale = float(np.abs(block).max()) / 127 or 1.0
        out += np.float16(scale).tobytes()
        out += np.clip(np.round(block / scale), -127, 127).astype(np.int8).tobytes()
    return bytes(out)


@pytest.fixture(scope="module")
def files(home, server, tmp_path_factory):
    root = tmp_path_factory.mktemp("dtypes")
    origin, work = model_repo(root, f"{server.url}/acme/dtypes", ["*.safetensors", "*.gguf"])

    rng = np.random.default_rng(11)
    f32 = rng.normal(size=(64, 48)).astype(np.float32)
    bf16_bits = (f32.view(np.uint32) >> 16).astype(np.uint16)  # truncation: exact in BF16
    ids = rng.integers(0, 1000, size=(16,)).astype(np.int64)
    (work / "bf16.safetensors").write_bytes(raw_safetensors({
        "proj.weight": ("BF16", f32.shape, bf16_bits.astype("<u2").tobytes()),
        "tokens": ("I64", ids.shape, ids.astype("<i8").tobytes()),
    }))

    norm = rng.normal(size=(96,)).astype(np.float32)
    emb = rng.normal(size=(8, 64)).astype(np.float16)
    quant = rng.normal(size=(4, 256)).astype(np.float32)
    q8 = q8_0_blocks(quant)
    (work / "model.gguf").write_bytes(gguf_bytes([
        ("output_norm.weight", GGML_F32, norm.shape, norm.astype("<f4").tobytes()),
        ("token_embd.weight", GGML_F16, emb.shape, emb.astype("<f2").tobytes()),
        ("blk.0.attn_q.weight", GGML_Q8_0, quant.shape, q8),
    ]))
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "bf16 and gguf", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)

    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True,
                   env={**os.environ, "GIT_MODEL_SKIP_SMUDGE": "1"})
    assert (clone / "model.gguf").stat().st_size < 200, "the clone holds pointers only"
    return {"clone": clone, "f32": f32, "bf16_bits": bf16_bits, "ids": ids,
            "norm": norm, "emb": emb, "quant": quant, "q8": q8}


def test_bf16_loads_through_ml_dtypes(files):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    repo = gitmodel.Repo(files["clone"])
    w = repo.load_tensors("bf16.safetensors", rev="HEAD", names=["proj.weight"])
    a = w["proj.weight"]
    assert a.dtype == np.dtype(ml_dtypes.bfloat16)
    assert a.shape == (64, 48)
    assert np.array_equal(a.view(np.uint16), files["bf16_bits"])
    expected = (files["bf16_bits"].astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(a.astype(np.float32), expected)


def test_bf16_without_ml_dtypes_names_the_fix(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # `import ml_dtypes` now fails
    repo = gitmodel.Repo(files["clone"])
    with pytest.raises(gitmodel.UnsupportedDtype) as e:
        repo.load_tensors("bf16.safetensors", rev="HEAD")
    assert "proj.weight" in str(e.value) and "BF16" in str(e.value)
    assert "pip install ml_dtypes" in str(e.value)
    assert isinstance(e.value, TypeError)
    # The other tensors of the file still load when the BF16 one is left out.
    w = repo.load_tensors("bf16.safetensors", rev="HEAD", names=["tokens"])
    assert np.array_equal(w["tokens"], files["ids"])


def test_gguf_tensors_load_by_name(files):
    repo = gitmodel.Repo(files["clone"])
    infos = {t.name: t for t in repo.tensors("model.gguf", rev="HEAD")}
    assert set(infos) == {"output_norm.weight", "token_embd.weight", "blk.0.attn_q.weight"}
    assert infos["blk.0.attn_q.weight"].dtype == "Q8_0"

    w = repo.load_tensors("model.gguf", rev="HEAD",
                          names=["output_norm.weight", "token_embd.weight"])
    assert set(w) == {"output_norm.weight", "token_embd.weight"}
    assert w["output_norm.weight"].dtype == np.float32
    assert np.array_equal(w["output_norm.weight"], files["norm"])
    assert w["token_embd.weight"].shape == (8, 64)  # numpy order: outermost first
    assert np.array_equal(w["token_embd.weight"], files["emb"])


def test_quantized_gguf_tensors_come_as_raw_blocks(files):
    repo = gitmodel.Repo(files["clone"])
    q = repo.load_tensors("model.gguf", rev="HEAD", names=["blk.0.attn_q.weight"])[
        "blk.0.attn_q.weight"]
    assert isinstance(q, gitmodel.QuantizedTensor)
    assert q.type == "Q8_0"
    assert q.shape == (4, 256)
    assert q.data == files["q8"]
    assert len(q.data) == 4 * 256 // 32 * 34
    # The blocks decode to the values they quantize (within a Q8_0 step).
    blocks = np.frombuffer(q.data, dtype=np.dtype([("d", "<f2"), ("qs", "i1", 32)]))
    decoded = (blocks["d"].astype(np.float32)[:, None] * blocks["qs"]).reshape(4, 256)
    step = np.abs(files["quant"]).reshape(-1, 32).max(axis=1) / 127
    assert np.all(np.abs(decoded - files["quant"]).reshape(-1, 32) <= step[:, None] * 0.51 + 1e-3)


def test_an_unknown_tensor_name_is_not_found(files):
    repo = gitmodel.Repo(files["clone"])
    with pytest.raises(gitmodel.NotFound) as e:
        repo.load_tensors("model.gguf", rev="HEAD", names=["blk.9.ffn_up.weight"])
    assert "blk.9.ffn_up.weight" in str(e.value)
