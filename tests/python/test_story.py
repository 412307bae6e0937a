"""The package in a story: three experiment branches trained with numpy, compared,
the best promoted through a gate, loaded at @production from a pointer-only clone and
from the git URL with no clone, rolled back, and the registry read at past dates. Real
git, the real server, a real git host over smart HTTP with credentials."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import numpy as np
import pytest

import gitmodel
from conftest import git, safetensors_bytes, sha256

MODEL = "models/vision.safetensors"
MANIFEST = """\
[models.vision]
path = "models/vision.safetensors"
inputs = ["data/train.csv"]
params = ["params.yaml"]
metrics = ["metrics.json"]

[models.vision.stages.production]
require = ["accuracy >= 0.6", "accuracy >= previous"]
"""


def dataset(seed=7, n=600, d=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = rng.normal(size=d).astype(np.float32)
    y = (x @ w_true + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
    return x, y


def train(x, y, lr, steps=60):
    """Logistic regression by gradient descent: the 'head' of the model."""
    w = np.zeros(x.shape[1], np.float32)
    b = np.zeros(1, np.float32)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b[0])))
        g = p - y
        w -= lr * (x.T @ g) / len(y)
        b -= lr * g.mean(keepdims=True)
    p = 1 / (1 + np.exp(-(x @ w + b[0])))
    loss = float(-np.mean(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)))
    acc = float(np.mean((p > 0.5) == (y > 0.5)))
    return w.astype(np.float32), b.astype(np.float32), acc, loss


def at(date: str):
    """Registry events recorded at `date` (git's committer date)."""
    return {"GIT_COMMITTER_DATE": f"{date}T00:00:00Z"}


class Env:
    def __init__(self, **values):
        self.values = values

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def world(home, server, githost, tmp_path_factory):
    url = githost.new_repo("vision")
    root = tmp_path_factory.mktemp("story")
    work = root / "work"
    git("clone", "-q", url, str(work))
    git("model", "install", cwd=work)
    git("model", "track", "*.safetensors", cwd=work)
    git("model", "track", "*.csv", cwd=work)
    git("config", "-f", ".gitmodel", "model.url", f"{server.url}/acme/vision", cwd=work)
    (work / "models.toml").write_text(MANIFEST)
    x, y = dataset()
    (work / "data").mkdir()
    rows = "\n".join(",".join(f"{v:.4f}" for v in r) + f",{int(t)}" for r, t in zip(x, y))
    header = ",".join(f"f{i}" for i in range(x.shape[1])) + ",label"
    (work / "data" / "train.csv").write_text(header + "\n" + rows + "\n")
    # A frozen backbone shared by every experiment (dedup), and the trained head.
    backbone = np.random.default_rng(1).normal(size=(256, 1024)).astype(np.float32)

    def save(w, b, acc, loss, params):
        (work / "models").mkdir(exist_ok=True)
        data = safetensors_bytes({"backbone.weight": backbone, "head.weight": w, "head.bias": b})
        (work / MODEL).write_bytes(data)
        gitmodel.log_params(params, repo=work)
        gitmodel.log_metrics({"accuracy": acc}, model="vision", repo=work)
        gitmodel.log_metrics({"loss": loss}, model="vision", repo=work)
        return data

    w0, b0, acc0, loss0 = train(x, y, 0.0, steps=1)
    save(w0, b0, acc0, loss0, {"lr": 0.0, "steps": 0})
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "baseline", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    runs = {}
    for lr in (0.5, 0.05, 0.005):
        branch = f"exp/lr-{lr}"
        git("checkout", "-q", "-b", branch, "main", cwd=work)
        w, b, acc, loss = train(x, y, lr)
        data = save(w, b, acc, loss, {"lr": lr, "steps": 60})
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"train lr={lr}", cwd=work)
        git("push", "-q", "origin", branch, cwd=work)
        runs[branch] = {"w": w, "b": b, "acc": acc, "loss": loss, "data": data,
                        "commit": git("rev-parse", "HEAD", cwd=work).strip()}
    git("checkout", "-q", "main", cwd=work)
    accs = sorted(r["acc"] for r in runs.values())
    assert len(set(accs)) == 3, f"the experiments must differ: {accs}"
    return {"url": url, "work": work, "root": root, "runs": runs, "header": header}


def ranked(world):
    return sorted(world["runs"], key=lambda b: world["runs"][b]["acc"], reverse=True)


def test_the_story(world, githost, tmp_path):
    work, runs = world["work"], world["runs"]
    repo = gitmodel.Repo(work)
    best, second, worst = ranked(world)

    # log_metrics merged what two calls wrote into the one file models.toml names.
    assert repo.metrics(rev=best) == pytest.approx({"accuracy": runs[best]["acc"], "loss": runs[best]["loss"]})
    assert repo.params(rev=best) == {"lr": float(best.split("-")[1]), "steps": 60}
    saved = json.loads(subprocess.run(["git", "show", f"{best}:metrics.json"], cwd=work,
                                      capture_output=True, text=True, check=True).stdout)
    assert set(saved) == {"accuracy", "loss"}

    # compare picks the best experiment; rows are dicts pandas can take.
    rows = repo.compare("main", "exp/*", sort="accuracy")
    assert [r["name"] for r in rows] == ["main", best, second, worst]
    assert rows[1]["accuracy"] == pytest.approx(runs[best]["acc"])
    assert rows[1]["delta.accuracy"] == pytest.approx(runs[best]["acc"] - rows[0]["accuracy"])
    assert rows[1]["lr"] == float(best.split("-")[1])

    # Promote the winner through the gate; a worse one is refused by it.
    with Env(**at("2026-03-01")):
        ev = repo.promote("vision", best, to="production", message="nightly eval")
    assert ev["version"]["commit"] == runs[best]["commit"] and not ev["forced"]
    assert all(g["passed"] for g in ev["gates"])
    with pytest.raises(gitmodel.GateRefused) as refused:
        repo.promote("vision", worst, to="production")
    assert [g["rule"] for g in refused.value.failed] == ["accuracy >= previous"]
    assert refused.value.stage == "production" and "refusing to promote" in str(refused.value)

    # From a pointer-only clone: only the two head tensors' bytes, exact values.
    clone = world["root"] / "pointers"
    subprocess.run(["git", "clone", "-q", world["url"], str(clone)], check=True,
                   env={**os.environ, "GIT_MODEL_SKIP_SMUDGE": "1"})
    assert (clone / MODEL).stat().st_size < 200, "a pointer-only clone"
    c = gitmodel.Repo(clone)
    w = c.load_tensors(MODEL, rev="vision@production", names=["head.weight", "head.bias"])
    assert set(w) == {"head.weight", "head.bias"}
    np.testing.assert_array_equal(w["head.weight"], runs[best]["w"])
    np.testing.assert_array_equal(w["head.bias"], runs[best]["b"])
    assert w["head.weight"].dtype == np.float32 and w["head.weight"].shape == (16,)
    assert c.last_load["bytes_fetched"] < c.last_load["file_size"] / 2

    prod = c.resolve("vision@production")
    assert prod.commit == runs[best]["commit"] and prod.stage == "production"
    assert prod.oid == sha256(runs[best]["data"]) and prod.size == len(runs[best]["data"])
    assert prod.metrics["accuracy"] == pytest.approx(runs[best]["acc"])
    assert prod.who.startswith("Ada Trainer") and prod.when == dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)

    with c.open("data/train.csv", rev=prod.commit) as f:
        assert f.readline().decode().rstrip("\n") == world["header"]
        f.seek(0)
        whole = f.read()
    assert whole == (work / "data" / "train.csv").read_bytes()

    dest = tmp_path / "srv" / "model.safetensors"
    dest.parent.mkdir()
    exported = c.export("vision@production", dest)
    assert dest.read_bytes() == runs[best]["data"] and exported.oid == sha256(dest.read_bytes())

    # No clone at all: the git URL, through the git host's credentials.
    u = gitmodel.load_tensors(githost.url("vision"), MODEL, rev="vision@production", names=["head.weight"])
    np.testing.assert_array_equal(u["head.weight"], runs[best]["w"])
    assert gitmodel.resolve(githost.url("vision"), "vision@production").commit == runs[best]["commit"]
    assert any((world["root"].parent).glob("**/cache/repos/*.git")) or os.listdir(os.environ["GIT_MODEL_CACHE"])

    # fsspec: gitmodel:// with the repository and a revision.
    import fsspec

    with fsspec.open(f"gitmodel://{MODEL}", repo=str(clone), rev="vision@production") as f:
        assert f.read() == runs[best]["data"]
    fs = fsspec.filesystem("gitmodel", repo=str(clone), rev=f"origin/{best}")
    assert {e["name"] for e in fs.ls("")} >= {"models", "data", "models.toml", "metrics.json"}
    assert fs.info(MODEL)["size"] == len(runs[best]["data"])

    # Force the second-best in (recorded), roll it back, and read the past.
    with Env(**at("2026-03-05")):
        forced = c.promote("vision", f"origin/{second}", to="production", message="canary", force=True)
    assert forced["forced"]
    with Env(**at("2026-03-10")):
        back = c.rollback("vision", stage="production", message="latency regression")
    assert back["version"]["commit"] == runs[best]["commit"]
    then = repo.history("vision", stage="production", at="2026-03-07")
    assert then["production"]["version"]["commit"] == runs[second]["commit"]
    assert repo.history("vision", at=dt.date(2026, 3, 2))["production"]["version"]["commit"] == runs[best]["commit"]
    assert repo.history("vision", at="2026-02-01") == {}
    events = repo.history("vision", stage="production")
    assert [e["action"] for e in events] == ["promote", "promote", "rollback"]
    assert [e.get("reason") for e in events] == ["nightly eval", "canary", "latency regression"]
    assert repo.resolve("vision@production").commit == runs[best]["commit"]

    # What changed, and what the version was made from.
    d = repo.diff("main", best, path=MODEL)
    assert d["kind"] == "model"
    assert {t["name"] for t in d["tensors"]} == {"head.weight", "head.bias"}
    assert all(t["change"] == "changed" for t in d["tensors"]) and d["unchanged"] == 1
    lin = repo.lineage("vision", rev=best)
    assert lin["commit"] == runs[best]["commit"]
    assert [i["path"] for i in lin["inputs"]] == ["data/train.csv"]


def test_errors_are_exception_classes(world, githost):
    repo = gitmodel.Repo(world["work"])
    with pytest.raises(gitmodel.NotFound):
        repo.load_tensors(MODEL, rev="no-such-branch")
    with pytest.raises(gitmodel.NotFound):
        repo.load_tensors(MODEL, rev="main", names=["no.such.tensor"])
    with pytest.raises(gitmodel.NotFound):
        repo.resolve("nosuchmodel@production")
    with pytest.raises(LookupError):
        repo.open("nope.txt", rev="main")
    with pytest.raises(gitmodel.RemoteError) as e:
        gitmodel.load_tensors(githost.url("missing"), MODEL, rev="main")
    assert "127.0.0.1" in e.value.url and "s3cret" not in str(e.value)
    bad = world["url"].replace("http://", "http://alice:wrong@")
    with pytest.raises(gitmodel.RemoteError) as e:
        gitmodel.resolve(bad, "vision@production")
    assert "wrong" not in str(e.value) and e.value.status == 401


def test_threads_share_a_repo(world):
    from concurrent.futures import ThreadPoolExecutor

    repo = gitmodel.Repo(world["work"])
    runs = world["runs"]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda b: repo.load_tensors(MODEL, rev=b, names=["head.weight"]), list(runs) * 3))
    for b, w in zip(list(runs) * 3, got):
        np.testing.assert_array_equal(w["head.weight"], runs[b]["w"])
