#!/usr/bin/env python3
"""report.py --results DIR --workloads-root DIR --command CMD --scale S --runs N

Writes docs/benchmarks.md (Markdown, on stdout) from the JSON lines that scripts/bench
collected: RESULTS/{gitmodel,gitlfs,dvc}.jsonl (one line per tool, workload, run, phase,
version), gitmodel-s3.jsonl and s3.json (git-model with its server on an S3 bucket, and
whether that ran), failures.jsonl, dedup_anchor.jsonl, limits.jsonl, machine.json, plus
each workload's manifest.json.  Medians are over runs; the spread is min–max over runs.
"""
import argparse
import json
import os
import statistics
from collections import defaultdict

MiB = 2 ** 20
ORDER = ["model-head", "model-full", "model-insert", "dataset-append", "many-small"]
TOOLS = [("git-model", "gitmodel"), ("git-lfs", "gitlfs"), ("dvc", "dvc")]
NAME = {"git-model": "git-model", "git-lfs": "git-lfs", "dvc": "DVC"}


def load(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def mib(b):
    return "-" if b is None else f"{b / MiB:,.1f}"


def secs(s):
    if s is None:
        return "-"
    return f"{s:.2f}" if s < 100 else f"{s:.0f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = sorted(x for x in xs if x is not None)
    if len(xs) < 2:
        return "-"
    return f"{secs(xs[0])}–{secs(xs[-1])}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def client_bytes(r, clone=False):
    if clone:
        return r.get("clone_git_bytes", 0) + r.get("clone_cache_bytes", 0)
    return r.get("client_git_bytes", 0) + r.get("client_cache_bytes", 0)


# phase groups: (label, phase, version filter, is_clone)
def groups(nv):
    rest = f"v2–v{nv} (sum)" if nv > 2 else "v2"
    return [
        ("add+commit v1", "add_commit", lambda v: v == 1, False),
        (f"add+commit {rest}", "add_commit", lambda v: v > 1, False),
        ("push v1", "push", lambda v: v == 1, False),
        (f"push {rest}", "push", lambda v: v > 1, False),
        (f"fresh clone + pull v{nv}", "clone_pull", lambda v: True, True),
        ("clone v1 (smudge filter; DVC: + dvc pull)", "clone", lambda v: True, True),
        (f"pull next version {rest}", "pull_next", lambda v: True, True),
        ("clone v1, `git model pull`", "clone_direct", lambda v: True, True),
        (f"pull next version {rest}, `git model pull`", "pull_next_direct",
         lambda v: True, True),
    ]


def group_stats(lines_by_run, phase, vf, is_clone):
    """Per run: wall sum, last server bytes, last client bytes, max RSS, CPU sum."""
    per = []
    for run, lines in lines_by_run.items():
        ls = sorted((r for r in lines if r["phase"] == phase and vf(r["version"])),
                    key=lambda r: r["version"])
        if not ls:
            continue
        per.append({
            "wall": sum(r["wall_s"] for r in ls),
            "server": ls[-1]["server_bytes"],
            "client": client_bytes(ls[-1], is_clone),
            "rss": max(r.get("peak_rss_kb", 0) for r in ls) * 1024,
            "srv_rss": max(r.get("server_peak_rss_kb", 0) or 0 for r in ls) * 1024,
            "cpu": sum(r.get("cpu_s", 0) + r.get("server_cpu_s", 0) for r in ls),
            "other": sum(r.get("other_cpu_s", 0) for r in ls),
            "verified": all(r.get("verified", True) for r in ls),
            "n": len(ls),
        })
    if not per:
        return None
    return {
        "wall": med([p["wall"] for p in per]),
        "walls": [p["wall"] for p in per],
        "server": med([p["server"] for p in per]),
        "client": med([p["client"] for p in per]),
        "rss": med([p["rss"] for p in per]),
        "srv_rss": med([p["srv_rss"] for p in per]),
        "cpu": med([p["cpu"] for p in per]),
        "verified": all(p["verified"] for p in per),
        "runs": len(per),
    }


def s3_section(P, results, by, workloads, manifests):
    """git-model with the server on S3 (gitmodel-s3.jsonl) beside the local directory."""
    note = (load(os.path.join(results, "s3.json")) or [{}])[0]
    s3 = defaultdict(lambda: defaultdict(list))
    for r in load(os.path.join(results, "gitmodel-s3.jsonl")):
        s3[r["workload"]][str(r["run"])].append(r)
    if not note and not s3:
        return  # results from before the S3 option
    P("## S3 backend (git-model-server on a bucket) beside the local directory\n")
    if not s3:
        P(f"Not run: {note.get('why', 'no S3 results')}.\n")
        return
    P(f"The same `gitmodel.sh` flow with the server started as `git-model-server --store "
      f"s3://BUCKET/PREFIX` (a fresh prefix per run, deleted afterwards) on "
      f"{note.get('store') or 'an S3-compatible store'} at {note.get('where', '?')}"
      + (" (as `scripts/garage` starts it: a single node, replication factor 1, on this "
         "machine's loopback, sharing its cores with everything else)"
         if (note.get("store") or "").startswith("Garage") else "")
      + ". \"local\" is the git-model rows above (server on its "
      "data directory). Bucket MiB: the bytes of every object under the prefix (listed "
      "through the S3 API), plus the bare git remote, after the phase group.\n")
    P("| workload | phase | local s | S3 s | S3 ÷ local | spread (S3) | local server MiB | "
      "S3 server MiB | local server RSS MiB | S3 server RSS MiB | verified (S3) |")
    P("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for w in workloads:
        if w not in s3:
            continue
        nv = manifests.get(w, {}).get("n_versions") or max(
            r["version"] for ls in s3[w].values() for r in ls)
        # add+commit never talks to the server: only the phases that do
        # (git-model only here: no peer notes in the labels)
        rows = [("push, all versions", "push", lambda v: True, False)] + [
            (g[0].replace("; DVC: + dvc pull", ""),) + g[1:]
            for g in groups(nv) if g[1] != "add_commit"]
        for label, phase, vf, is_clone in rows:
            loc = group_stats(by.get((w, "git-model"), {}), phase, vf, is_clone)
            rem = group_stats(s3[w], phase, vf, is_clone)
            if not rem:
                continue
            P(f"| {w} | {label} | {secs(loc and loc['wall'])} | {secs(rem['wall'])} | "
              f"{ratio(rem['wall'], loc and loc['wall'])} | {spread(rem['walls'])} | "
              f"{mib(loc and loc['server'])} | {mib(rem['server'])} | "
              f"{mib(loc['srv_rss']) if loc and loc['srv_rss'] else '-'} | "
              f"{mib(rem['srv_rss']) if rem['srv_rss'] else '-'} | "
              f"{'yes' if rem['verified'] else '**NO**'} |")
    P()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--workloads-root", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--scale", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--analysis", default=None,
                    help="hand-written Markdown appended as the analysis section")
    a = ap.parse_args()
    res = a.results
    rows = []
    for _, f in TOOLS:
        rows += load(os.path.join(res, f + ".jsonl"))
    failures = load(os.path.join(res, "failures.jsonl"))
    script_tool = {f: t for t, f in TOOLS}
    failed = {(f["workload"], script_tool.get(f["tool"], f["tool"])): f.get("why", "failed")
              for f in failures}
    anchors = {d["workload"]: d for d in load(os.path.join(res, "dedup_anchor.jsonl"))}
    limits = load(os.path.join(res, "limits.jsonl"))
    machine = (load(os.path.join(res, "machine.json")) or [{}])[0]
    tools_present = [t for t, _ in TOOLS if any(r["tool"] == t for r in rows)]
    by = defaultdict(lambda: defaultdict(list))  # (workload, tool) -> run -> lines
    for r in rows:
        by[(r["workload"], r["tool"])][str(r["run"])].append(r)
    workloads = sorted({r["workload"] for r in rows} | {f["workload"] for f in failures},
                       key=lambda w: ORDER.index(w) if w in ORDER else 99)
    manifests = {}
    for w in workloads:
        mf = os.path.join(a.workloads_root, w, "manifest.json")
        if os.path.exists(mf):
            manifests[w] = json.load(open(mf))

    gm = next((r for r in rows if r["tool"] == "git-model"), {})
    P = print
    P("# Benchmarks: git-model vs git-lfs vs DVC\n")
    P(f"Generated by `{a.command}` on {machine.get('date', '?')} (scale {a.scale}, "
      f"{a.runs} run(s) per tool and workload; "
      f"{gm.get('tool_version', 'git-model not run')}). Do not edit by hand: rerun the "
      "command. Raw JSON lines stay in the results directory the script prints.\n")

    # ---- noise
    wall_total = sum(r["wall_s"] for r in rows)
    # Each phase's figure is the machine's CPU minus the tool's, so rounding can make it
    # slightly negative on a quiet machine.
    other_total = max(0.0, sum(r.get("other_cpu_s", 0) for r in rows))
    loads = [float(r.get("load1", 0)) for r in rows]
    busy = wall_total > 0 and other_total / wall_total > 0.25
    P("## Read this first\n")
    P(f"- Noise: processes outside the benchmark used {other_total:,.0f} CPU-seconds during "
      f"the {wall_total:,.0f} s of measured phases (≈{other_total / max(wall_total, 1e-9):.2f} "
      f"of a core on average; the machine has {machine.get('nproc', '?')}); load1 ranged "
      f"{min(loads, default=0):.1f}–{max(loads, default=0):.1f}. "
      + ("**The machine was busy (other builds and tests ran in parallel): timings are "
         "indicative only; byte counts are exact.**" if busy else
         "The machine was reasonably quiet."))
    if str(a.runs) == "1":
        P("- One run per tool: no spread is available; medians are single values.")
    if float(a.scale) != 1.0:
        P(f"- Scale {a.scale}: files are {a.scale}× the sizes in ../shared/bench/README.md, "
          "so fixed costs (process start-up, git, HTTP round trips) weigh more than at "
          "scale 1.0.")
    P()

    # ---- method
    P("## Method\n")
    P("- Workloads: `../shared/bench/gen_workloads.py` (seed 1234): each is v1..vN full "
      "snapshots plus a manifest of sizes, sha256s and the generator's count of genuinely "
      "new bytes.")
    P("- Every tool goes through the same flow on 127.0.0.1, in a hermetic git config: for "
      "each version, rsync the snapshot into `data/` (untimed), then **add+commit** "
      "(`git add -A && git commit`; DVC: `dvc add data` + commit) and **push** "
      "(git-model: `git push`, whose pre-push hook uploads the chunks the server lacks; "
      "git-lfs: `git push` to a bare remote + rudolfs; DVC: `dvc push && git push` to a "
      "local remote dir); then a **fresh clone + pull** of the last version "
      "(git-model: `GIT_MODEL_SKIP_SMUDGE=1 git clone` + `git model pull`; git-lfs: "
      "`GIT_LFS_SKIP_SMUDGE=1 git clone` + `git lfs pull`; DVC: `git clone` + `dvc pull`), "
      "verified byte for byte. Then a clone of v1 and each later version pulled into "
      "it, one at a time (**pull next**): git-model in a plain `git clone` (content "
      "through the smudge filter) with `git pull --ff-only`, and again in a second clone "
      "through the direct path (`GIT_MODEL_SKIP_SMUDGE=1` git, then `git model pull`); "
      "the peers' scripts have no such phases, so `scripts/bench.d/peer_next.sh` runs "
      "them on what each peer run leaves: git-lfs `git checkout` of v1 / `git merge "
      "--ff-only` of each next commit through its smudge filter (rudolfs restarted on the "
      "same directory), DVC the same git steps each followed by `dvc pull`.")
    P("- git-model: `scripts/bench.d/gitmodel.sh`; peers: `../shared/bench/peer_gitlfs.sh` "
      "(Debian git-lfs + rudolfs local backend) and `../shared/bench/peer_dvc.sh`. One "
      "JSON line per phase, same schema. Tool order rotates from run to run.")
    P("- Wall time: `date` around the phase. Peak RSS: max RSS of the tool's own processes "
      "in the phase (git-model / git-lfs through a `/usr/bin/time` shim on PATH: filter "
      "process, pre-push hook, pull; DVC: the dvc process), not git's. CPU: user+sys of "
      "the phase's process tree plus the server's. Server bytes: `du -sb` of the server's "
      "store (git-model-server data dir / rudolfs dir / DVC remote dir) plus the bare git "
      "remote. Client bytes: `du -sb` of the client's `.git` (git-model keeps its chunk "
      "store in `.git/model`, git-lfs in `.git/lfs`) plus, for DVC, `.dvc/cache`; on "
      "clone rows, the clone's.")
    P("- Ratios are git-model ÷ that tool (below 1: git-model is faster / smaller). "
      "Ideal bytes come from `../shared/bench/dedup_anchor.py` (no compression): "
      "whole-file dedup is the best Git LFS / DVC can do; CDC 64 KiB is the best a "
      "64 KiB content-defined chunk store can do before compression (git-model also "
      "compresses chunks with zstd, so it can go below it).")
    P()

    # ---- machine
    P("## Machine\n")
    P("| fact | value |\n|---|---|")
    P(f"| CPU | {machine.get('cpu', '?')} (SHA-NI: {machine.get('sha_ni', '?')}, "
      f"AVX2: {machine.get('avx2', '?')}) |")
    P(f"| cores (nproc) | {machine.get('nproc', '?')} |")
    P(f"| memory | {machine.get('mem_bytes', 0) / 2**30:.1f} GiB |")
    P(f"| kernel, scratch fs | {machine.get('kernel', '?')}, {machine.get('tmp_fs', '?')} |")
    P(f"| tools | {machine.get('git', '?')}; {machine.get('git_lfs', '?')}; "
      f"{machine.get('rudolfs', '?')}; dvc {machine.get('dvc', '?')}; "
      f"{machine.get('python', '?')}; {machine.get('rustc', '?')} |")
    P()

    # ---- floors
    if limits:
        f = limits[0]
        P(f"## Floors (`limits.sh` on `{os.path.relpath(f.get('file', '?'), a.workloads_root)}`, "
          f"{mib(f['bytes'])} MiB, page-cached, median of 3)\n")
        P("| operation | MiB/s | seconds for this file | notes |\n|---|---:|---:|---|")
        for d in limits:
            notes = ", ".join(f"{k}={v}" for k, v in d.items() if k not in (
                "op", "bytes", "walls_s", "median_mib_s", "best_mib_s", "file", "run"))
            P(f"| {d['op']} | {d['median_mib_s']:,.0f} | "
              f"{d['bytes'] / MiB / d['median_mib_s']:.2f} | {notes} |")
        P()

    # ---- main table
    P("## Summary\n")
    P("Per workload and tool, medians over runs: add+commit and push summed over all "
      "versions, fresh clone + pull of the last version, server and client bytes after "
      "the last push, peak RSS over all phases. The last columns are git-model ÷ that tool "
      "(wall time of add+commit / push / clone+pull, server bytes).\n")
    P("Pull next: each later version pulled into a clone holding the one before, summed; "
      "for git-model `git pull` (smudge filter) / `git model pull`, and both ratios.\n")
    P("| workload | tool | add+commit s | push s | clone+pull s | pull next s | server MiB | "
      "server ÷ CDC ideal | client MiB | peak RSS MiB | verified | "
      "gm÷ add | gm÷ push | gm÷ clone+pull | gm÷ pull next | gm÷ server |")
    P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    summary = {}

    def vcell(w, t, ver):
        if (w, t) in failed:
            return f"**FAILED: {failed[(w, t)]}**"
        return "yes" if ver else "**NO**"
    for w in workloads:
        anc = anchors.get(w, {})
        for t in tools_present:
            lr = by.get((w, t))
            if not lr:
                continue
            add = group_stats(lr, "add_commit", lambda v: True, False)
            push = group_stats(lr, "push", lambda v: True, False)
            cp = group_stats(lr, "clone_pull", lambda v: True, True)
            pn = group_stats(lr, "pull_next", lambda v: True, True)
            pd = group_stats(lr, "pull_next_direct", lambda v: True, True)
            allp = [l for ls in lr.values() for l in ls]
            rss = max((l.get("peak_rss_kb", 0) for l in allp), default=0) * 1024
            ver = all(l.get("verified", True) for l in allp) and cp is not None
            summary[(w, t)] = (add, push, cp, rss, ver, pn, pd)
        for t in tools_present:
            if (w, t) not in summary:
                P(f"| {w} | {NAME[t]} | - | - | - | - | - | - | - | - | "
                  f"{vcell(w, t, False)} | | | | | |")
                continue
            add, push, cp, rss, ver, pn, pd = summary[(w, t)]
            g = summary.get((w, "git-model"))
            rat = ["", "", "", "", ""]
            if t != "git-model" and g:
                rat = [ratio(g[0] and g[0]["wall"], add and add["wall"]),
                       ratio(g[1] and g[1]["wall"], push and push["wall"]),
                       ratio(g[2] and g[2]["wall"], cp and cp["wall"]),
                       ratio(g[5] and g[5]["wall"], pn and pn["wall"]) + " / "
                       + ratio(g[6] and g[6]["wall"], pn and pn["wall"]),
                       ratio(g[1] and g[1]["server"], push and push["server"])]
            pull_next = secs(pn and pn["wall"])
            if pd:
                pull_next += f" / {secs(pd['wall'])}"
            cdc = anc.get("unique_cdc_bytes")
            P(f"| {w} | {NAME[t]} | {secs(add and add['wall'])} | {secs(push and push['wall'])} | "
              f"{secs(cp and cp['wall'])} | {pull_next} | {mib(push and push['server'])} | "
              f"{ratio(push and push['server'], cdc)} | {mib(push and push['client'])} | "
              f"{mib(rss)} | {vcell(w, t, ver)} | " + " | ".join(rat) + " |")
    P()

    s3_section(P, res, by, workloads, manifests)

    # ---- ideal bytes
    if anchors:
        P("## Ideal bytes (`dedup_anchor.py`, all versions, no compression)\n")
        P("| workload | versions | logical MiB | whole-file dedup MiB | fixed 64 KiB blocks MiB | "
          "CDC 64 KiB MiB | generator's novel MiB | git-model server MiB |")
        P("|---|---:|---:|---:|---:|---:|---:|---:|")
        for w in workloads:
            d = anchors.get(w)
            if not d:
                continue
            g = summary.get((w, "git-model"))
            P(f"| {w} | {d['n_versions']} | {mib(d['total_logical_bytes'])} | "
              f"{mib(d['unique_file_bytes'])} | {mib(d['unique_fixed_block_bytes'])} | "
              f"{mib(d['unique_cdc_bytes'])} | {mib(d['novel_bytes_generator'])} | "
              f"{mib(g and g[1] and g[1]['server'])} |")
        P()

    # ---- per workload and phase
    P("## Per workload and phase\n")
    P("Wall time is the median over runs (spread: min–max over runs, when there is more "
      "than one run). Server MiB and client MiB are measured at the end of the phase "
      "group (client: the working repository for add/push, the clone for clone/pull rows). "
      "Peak RSS: the tool's own processes; server RSS: git-model-server / rudolfs VmHWM. "
      "CPU: user+sys of the phase's processes plus the server's. "
      "\"gm÷\" columns: git-model ÷ this tool for the same phase.\n")
    for w in workloads:
        m = manifests.get(w, {})
        nv = m.get("n_versions", 0)
        P(f"### {w}\n")
        if m:
            d = anchors.get(w, {})
            P(f"{nv} versions; last version {mib(m['versions'][-1]['logical_bytes'])} MiB; "
              f"all versions {mib(m['total_logical_bytes'])} MiB logical, "
              f"{mib(m['unique_file_bytes'])} MiB unique files, "
              + (f"{mib(d['unique_cdc_bytes'])} MiB unique 64 KiB CDC chunks, " if d else "")
              + f"{mib(m['novel_bytes_total'])} MiB generator-novel. "
              f"Change per version: {m['versions'][-1]['desc']}.\n")
        P("| phase | tool | wall s | spread | server MiB | client MiB | peak RSS MiB | "
          "server RSS MiB | CPU s | gm÷ wall | gm÷ server | gm÷ client | gm÷ RSS |")
        P("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, phase, vf, is_clone in groups(nv):
            stats = {t: group_stats(by[(w, t)], phase, vf, is_clone)
                     for t in tools_present if (w, t) in by}
            if not any(stats.values()):
                continue
            g = stats.get("git-model")
            for t in tools_present:
                s = stats.get(t)
                if not s:
                    continue
                rat = ["", "", "", ""]
                if t != "git-model" and g:
                    rat = [ratio(g["wall"], s["wall"]), ratio(g["server"], s["server"]),
                           ratio(g["client"], s["client"]), ratio(g["rss"], s["rss"])]
                vmark = "" if s["verified"] else " **(verify FAILED)**"
                P(f"| {label}{vmark} | {NAME[t]} | {secs(s['wall'])} | {spread(s['walls'])} | "
                  f"{mib(s['server'])} | {mib(s['client'])} | {mib(s['rss'])} | "
                  f"{mib(s['srv_rss']) if s['srv_rss'] else '-'} | {s['cpu']:.1f} | "
                  + " | ".join(rat) + " |")
        P()
        # git-model per version detail
        lr = by.get((w, "git-model"))
        if lr:
            P(f"<details><summary>git-model per version ({w}, median over runs)</summary>\n")
            P("| version | add+commit s | push s | pull into clone s | `git model pull` into "
              "clone s | server MiB after push | server growth MiB | version MiB | "
              "client .git MiB |")
            P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            prev = 0
            for v in range(1, nv + 1):
                def pick(phase, key):
                    return med([l[key] for ls in lr.values() for l in ls
                                if l["phase"] == phase and l["version"] == v])
                srv = pick("push", "server_bytes")
                pull = pick("pull_next", "wall_s") if v > 1 else pick("clone", "wall_s")
                direct = (pick("pull_next_direct", "wall_s") if v > 1
                          else pick("clone_direct", "wall_s"))
                P(f"| {v} | {secs(pick('add_commit', 'wall_s'))} | {secs(pick('push', 'wall_s'))} | "
                  f"{secs(pull)}{' (clone)' if v == 1 and pull is not None else ''} | "
                  f"{secs(direct)}{' (clone)' if v == 1 and direct is not None else ''} | {mib(srv)} | "
                  f"{mib(srv - prev) if srv is not None else '-'} | "
                  f"{mib(pick('push', 'logical_bytes'))} | {mib(pick('push', 'client_git_bytes'))} |")
                prev = srv if srv is not None else prev
            P("\n</details>\n")

    # ---- failures
    bad = [r for r in rows if r.get("verified") is False]
    if failures or bad:
        P("## Failures\n")
        for f in failures:
            P(f"- {NAME.get(script_tool.get(f['tool']), f['tool'])} on {f['workload']}, run "
              f"{f['run']}: {f.get('why')}, after {f.get('elapsed_s')} s (stderr: "
              f"`{f['tool']}.err` in the results directory)")
        for r in bad:
            P(f"- {r['tool']} on {r['workload']}, run {r['run']}, {r['phase']} v{r['version']}: "
              "the materialised tree did not match the workload")
        P()

    if a.analysis and os.path.exists(a.analysis):
        P("## Analysis: targets, where the time goes, and the plan\n")
        P(f"(Hand-written in `docs/{os.path.basename(a.analysis)}` about the figures above; "
          "the tables are generated.)\n")
        with open(a.analysis) as f:
            P(f.read())


if __name__ == "__main__":
    main()
