//! The ML layer end to end: per-tensor diffs that read little (also through `git diff`),
//! table diffs, `log`, metrics/params comparison across branches, lineage, charts; merges
//! in [`merge`].

mod merge;

use std::path::Path;

use gitmodel_testkit::{dir_size, safetensors};
use serde_json::Value;

use crate::World;

const MIB: usize = 1 << 20;

/// Runs `git model …` in `dir`; panics with its output unless it succeeds; stdout.
fn gm(w: &World, dir: &Path, args: &[&str]) -> String {
    let mut full = vec!["model"];
    full.extend_from_slice(args);
    w.env.git(dir, &full)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn write(repo: &Path, rel: &str, text: &str) {
    let p = repo.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn commit_all(w: &World, repo: &Path, msg: &str) -> String {
    w.env.git(repo, &["add", "-A"]);
    w.env.git(repo, &["commit", "-q", "-m", msg]);
    w.env.git(repo, &["rev-parse", "HEAD"]).trim().to_string()
}

/// 16 tensors of 1 MiB; version 2 changes tensors 3 and 11.
fn two_versions() -> (Vec<u8>, Vec<u8>) {
    let v1 = safetensors(7, MIB, &[0; 16]);
    let mut versions = [0u64; 16];
    versions[3] = 1;
    versions[11] = 1;
    (v1, safetensors(7, MIB, &versions))
}

fn check_two_tensor_diff(entries: &Value) -> &Value {
    let entries = entries.as_array().expect("a list of files");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let d = &entries[0];
    assert_eq!(d["path"], "model.safetensors");
    assert_eq!(d["kind"], "model");
    assert_eq!(d["unchanged"], 14);
    let tensors = d["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["layers.3.weight", "layers.11.weight"]);
    for t in tensors {
        assert_eq!(t["change"], "changed");
        assert_eq!(t["elements"], (MIB / 4) as u64);
        // Fresh uniform values in ±0.05: nearly every element differs, the difference
        // has twice the variance of the old values, and never exceeds 0.1.
        let frac = t["fraction_changed"].as_f64().unwrap();
        assert!(frac > 0.999, "{t}");
        let rel = t["relative_l2"].as_f64().unwrap();
        assert!((rel - 2f64.sqrt()).abs() < 0.02, "{t}");
        let max = t["max_abs_diff"].as_f64().unwrap();
        assert!(max > 0.09 && max < 0.1, "{t}");
    }
    assert_eq!(
        d["layers_changed"],
        serde_json::json!(["layers.3", "layers.11"])
    );
    d
}

#[test]
fn diff_names_changed_tensors_reads_little_and_drives_git_diff() {
    let w = World::new();
    let repo = w.work_repo("work");
    let (v1, v2) = two_versions();
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    w.commit_file(&repo, "model.safetensors", &v2, "v2");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    let out = json(&gm(&w, &repo, &["diff", "HEAD~1", "HEAD", "--json"]));
    let d = check_two_tensor_diff(&out);
    // Headers and the two changed tensors of both versions, not the 32 MiB of content.
    let read = d["bytes_read"].as_u64().unwrap();
    let total = (v1.len() + v2.len()) as u64;
    assert!(read < total / 6, "read {read} of {total} bytes");

    // The same from a pointer-only clone: the chunks it needs come from the server, and
    // the rest of both versions is never downloaded.
    let home = w.env.home.path();
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "lazy"],
    );
    crate::check_ok("lazy clone", &out);
    let lazy = w.env.path("lazy");
    let text = gm(&w, &lazy, &["diff", "HEAD~1", "HEAD"]);
    assert!(text.contains("M layers.3.weight"), "{text}");
    assert!(text.contains("M layers.11.weight"), "{text}");
    assert!(text.contains("2 tensor(s) differ, 14 unchanged"), "{text}");
    let stored = dir_size(&lazy.join(".git/model"));
    assert!(
        stored < total / 4,
        "the lazy clone's store holds {stored} bytes"
    );

    // The working tree against an older version that is not here: the working-tree file
    // is cut into chunks locally, so only the old version's changed tensors are fetched.
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "lazy2"],
    );
    crate::check_ok("lazy clone", &out);
    let lazy2 = w.env.path("lazy2");
    gm(&w, &lazy2, &["pull"]);
    let before = dir_size(&lazy2.join(".git/model"));
    let text = gm(&w, &lazy2, &["diff", "HEAD~1"]);
    assert!(text.contains("2 tensor(s) differ, 14 unchanged"), "{text}");
    let grown = dir_size(&lazy2.join(".git/model")) - before;
    assert!(
        grown < (v1.len() / 4) as u64,
        "fetched {grown} bytes of the old version"
    );

    // Plain `git diff` goes through the driver `git model install` configured.
    let text = w.env.git(&repo, &["diff", "HEAD~1", "HEAD"]);
    assert!(
        text.contains("diff --git-model a/model.safetensors"),
        "{text}"
    );
    assert!(text.contains("M layers.3.weight"), "{text}");
    assert!(text.contains("layers: layers.3, layers.11"), "{text}");
    assert!(!text.contains("Binary files"), "{text}");
    // And the working tree: an edit not yet committed.
    std::fs::write(repo.join("model.safetensors"), &v1).unwrap();
    let text = w.env.git(&repo, &["diff"]);
    assert!(text.contains("M layers.11.weight"), "{text}");
    let text = gm(&w, &repo, &["diff"]);
    assert!(text.contains("M layers.3.weight"), "{text}");
    w.env.git(&repo, &["checkout", "--", "model.safetensors"]);

    // `git log -p` uses the textconv: one line per tensor with a content hash.
    let text = w.env.git(&repo, &["log", "-p", "-1", "--format=%s"]);
    let changed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert_eq!(changed.len(), 2, "{text}");
    assert!(
        changed[0].starts_with("+layers.3.weight\tF32 [262144]\tblake3:"),
        "{text}"
    );
}

#[test]
fn dataset_diff_by_rows_and_columns() {
    let w = World::new();
    let repo = w.work_repo("work");
    w.env.git(&repo, &["model", "track", "data/*.csv"]);
    write(
        &repo,
        "data/train.csv",
        "id,text,label\n1,cat,0\n2,dog,1\n3,fish,0\n4,bird,1\n",
    );
    write(
        &repo,
        "data/eval.jsonl",
        "{\"q\":\"a\",\"n\":1}\n{\"q\":\"b\",\"n\":2}\n",
    );
    commit_all(&w, &repo, "data v1");
    write(
        &repo,
        "data/train.csv",
        "id,text,label,source\n1,cat,0,web\n2,dog,0,web\n4,bird,1,web\n5,cow,1,book\n",
    );
    write(
        &repo,
        "data/eval.jsonl",
        "{\"q\":\"a\",\"n\":1}\n{\"q\":\"c\",\"n\":2}\n",
    );
    commit_all(&w, &repo, "data v2");
    // The CSV is stored by git-model, the JSON Lines file by git itself.
    let blob = crate::stored_blob(&w.env, &repo, "HEAD", "data/train.csv");
    assert!(blob.starts_with("version https://git-lfs"), "{blob}");

    let out = json(&gm(
        &w,
        &repo,
        &[
            "diff",
            "HEAD~1",
            "HEAD",
            "--key",
            "id",
            "--json",
            "--",
            "data/train.csv",
        ],
    ));
    let d = &out[0];
    assert_eq!(d["kind"], "table");
    assert_eq!(d["key"], "id");
    assert_eq!(d["columns_added"], serde_json::json!(["source"]));
    assert_eq!(
        (
            &d["rows_added"],
            &d["rows_removed"],
            &d["rows_changed"],
            &d["rows_unchanged"]
        ),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(2)
        )
    );
    let text = gm(&w, &repo, &["diff", "HEAD~1", "HEAD"]);
    assert!(text.contains("~ [2] label: \"1\" → \"0\""), "{text}");
    assert!(text.contains("- [3]"), "{text}");
    assert!(text.contains("+ [5]"), "{text}");
    // JSON Lines: no unique first column, so whole rows.
    assert!(
        text.contains("data/eval.jsonl: table, 2 → 2 rows"),
        "{text}"
    );
    assert!(
        text.contains("rows: 1 added, 1 removed, 0 changed, 1 unchanged"),
        "{text}"
    );
    // Through git diff too.
    let text = w
        .env
        .git(&repo, &["diff", "HEAD~1", "HEAD", "--", "data/train.csv"]);
    assert!(
        text.contains("1 added, 1 removed, 1 changed, 2 unchanged"),
        "{text}"
    );
    // A key that is not there is a clear error.
    let out = w
        .env
        .git_output(&repo, &["model", "diff", "HEAD~1", "HEAD", "--key", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("key column \"nope\""), "{err}");
}

const MANIFEST: &str = r#"
[models.vision]
path = "model.safetensors"
inputs = ["data/train.csv"]
params = ["params.yaml"]
metrics = ["metrics.json"]
"#;

#[test]
fn log_metrics_params_and_compare_across_branches() {
    let w = World::new();
    let repo = w.work_repo("work");
    write(&repo, "models.toml", MANIFEST);
    write(&repo, "params.yaml", "lr: 0.01\nepochs: 10\n");
    write(
        &repo,
        "metrics.json",
        "{\"accuracy\": 0.90, \"loss\": 0.30}",
    );
    std::fs::write(
        repo.join("model.safetensors"),
        safetensors(3, 256 << 10, &[0; 8]),
    )
    .unwrap();
    let base = commit_all(&w, &repo, "baseline");
    for (branch, lr, acc, tensor) in [("exp/a", "0.02", "0.91", 2), ("exp/b", "0.05", "0.93", 5)] {
        w.env.git(&repo, &["checkout", "-q", "-b", branch, "main"]);
        write(&repo, "params.yaml", &format!("lr: {lr}\nepochs: 10\n"));
        write(
            &repo,
            "metrics.json",
            &format!("{{\"accuracy\": {acc}, \"loss\": 0.25}}"),
        );
        let mut versions = [0u64; 8];
        versions[tensor] = 1;
        std::fs::write(
            repo.join("model.safetensors"),
            safetensors(3, 256 << 10, &versions),
        )
        .unwrap();
        commit_all(&w, &repo, &format!("train {branch}"));
    }
    w.env.git(&repo, &["checkout", "-q", "main"]);

    let md = gm(
        &w,
        &repo,
        &["compare", "main", "exp/*", "--sort", "accuracy"],
    );
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(rows[0].starts_with("| main "), "{md}");
    assert!(rows[1].starts_with("| exp/b "), "{md}");
    assert!(rows[2].starts_with("| exp/a "), "{md}");
    assert!(rows[1].contains("0.93 (+0.03)"), "{md}");
    let out = json(&gm(
        &w,
        &repo,
        &[
            "compare", "main", "exp/*", "--sort", "accuracy", "--asc", "--json",
        ],
    ));
    let names: Vec<&str> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["main", "exp/a", "exp/b"]);
    assert_eq!(out["rows"][2]["params"]["lr"], 0.05);
    assert!((out["rows"][2]["deltas"]["loss"].as_f64().unwrap() + 0.05).abs() < 1e-9);
    // The same comparison as a chart of accuracy, baseline first.
    gm(
        &w,
        &repo,
        &[
            "compare", "main", "exp/*", "--sort", "accuracy", "--plot", "acc.svg",
        ],
    );
    let svg = std::fs::read_to_string(repo.join("acc.svg")).expect("compare --plot wrote it");
    assert!(svg.starts_with("<svg"), "{svg}");
    let texts = svg_texts(&svg);
    for text in [
        "accuracy by version",
        "main",
        "exp/a",
        "exp/b",
        "0.9",
        "0.93 (+0.03)",
        "0.91 (+0.01)",
    ] {
        assert!(
            texts.contains(&text),
            "{text:?} not in the chart: {texts:?}"
        );
    }
    let at = |t: &str| texts.iter().position(|x| *x == t).unwrap();
    assert!(
        at("main") < at("exp/b") && at("exp/b") < at("exp/a"),
        "bars in the table's order: {texts:?}"
    );
    let out = w.env.git_output(
        &repo,
        &[
            "model", "compare", "main", "exp/a", "--plot", "x.svg", "--metric", "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no compared version has the metric \"nope\""),
        "{out:?}"
    );
    let csv = gm(&w, &repo, &["compare", "main", "exp/a", "--csv"]);
    assert!(
        csv.starts_with("ref,commit,epochs,lr,accuracy,loss\n"),
        "{csv}"
    );

    let text = gm(&w, &repo, &["metrics", "diff", "main", "exp/b"]);
    assert!(
        text.contains("| accuracy | 0.9  | 0.93  | +0.03  |"),
        "{text}"
    );
    let text = gm(&w, &repo, &["params", "diff", "main", "exp/a"]);
    assert!(text.contains("lr") && !text.contains("epochs"), "{text}");
    let shown = json(&gm(&w, &repo, &["metrics", "show", "exp/a", "--json"]));
    assert_eq!(shown["accuracy"], 0.91);

    // Two versions of the model on exp/b: the second added only its changed chunks.
    let log = json(&gm(
        &w,
        &repo,
        &["log", "model.safetensors", "--rev", "exp/b", "--json"],
    ));
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1]["commit"], base.as_str());
    let size = log[0]["size"].as_u64().unwrap();
    assert_eq!(log[1]["new_bytes"].as_u64().unwrap(), size);
    let new = log[0]["new_bytes"].as_u64().unwrap();
    assert!(new > 0 && new < size / 3, "{new} of {size}");
    assert_eq!(log[0]["metrics"]["accuracy"], 0.93);
    let text = gm(&w, &repo, &["log", "model.safetensors", "--rev", "exp/b"]);
    assert!(text.contains("accuracy=0.93 loss=0.25"), "{text}");

    // A malformed manifest is named with its line.
    write(
        &repo,
        "models.toml",
        "[models.vision]\npath = \"model.safetensors\"\nmetric = []\n",
    );
    let out = w.env.git_output(&repo, &["model", "metrics", "show"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models.toml:3:"), "{err}");
}

#[test]
fn lineage_forward_and_reverse() {
    let w = World::new();
    let repo = w.work_repo("work");
    w.env.git(&repo, &["model", "track", "data/*.csv"]);
    write(&repo, "models.toml", MANIFEST);
    write(&repo, "params.yaml", "lr: 0.01\n");
    write(&repo, "data/train.csv", "id,x\n1,a\n");
    write(&repo, "metrics.json", "{\"accuracy\": 0.8}");
    std::fs::write(
        repo.join("model.safetensors"),
        safetensors(1, 64 << 10, &[0, 0]),
    )
    .unwrap();
    let c1 = commit_all(&w, &repo, "data v1, model v1");
    write(&repo, "params.yaml", "lr: 0.02\n");
    std::fs::write(
        repo.join("model.safetensors"),
        safetensors(1, 64 << 10, &[1, 0]),
    )
    .unwrap();
    let c2 = commit_all(&w, &repo, "model v2 on the same data");
    write(&repo, "data/train.csv", "id,x\n1,a\n2,b\n");
    let c3 = commit_all(&w, &repo, "data v2");
    std::fs::write(
        repo.join("model.safetensors"),
        safetensors(1, 64 << 10, &[1, 1]),
    )
    .unwrap();
    let c4 = commit_all(&w, &repo, "model v3");
    write(&repo, "README", "docs\n");
    commit_all(&w, &repo, "docs only");

    let l = json(&gm(
        &w,
        &repo,
        &["lineage", &format!("vision@{c2}"), "--json"],
    ));
    assert_eq!(l["commit"], c2.as_str());
    assert_eq!(l["inputs"][0]["path"], "data/train.csv");
    assert_eq!(l["inputs"][0]["version"]["changed_in"], c1.as_str());
    assert!(l["inputs"][0]["version"]["id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(l["params"]["lr"], 0.02);
    // At HEAD, the model was last made in c4, from the data of c3.
    let l = json(&gm(&w, &repo, &["lineage", "vision", "--json"]));
    assert_eq!(l["commit"], c4.as_str());
    assert_eq!(l["inputs"][0]["version"]["changed_in"], c3.as_str());
    let text = gm(&w, &repo, &["lineage", "vision"]);
    assert!(
        text.contains("data/train.csv") && text.contains(&c3[..10]),
        "{text}"
    );

    let r = json(&gm(
        &w,
        &repo,
        &[
            "lineage",
            "--reverse",
            &format!("data/train.csv@{c1}"),
            "--json",
        ],
    ));
    let commits: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["commit"].as_str().unwrap())
        .collect();
    assert_eq!(commits, vec![c2.as_str(), c1.as_str()]);
    let r = json(&gm(
        &w,
        &repo,
        &["lineage", "--reverse", "data/train.csv", "--json"],
    ));
    assert_eq!(r[0]["commit"], c4.as_str());
    assert_eq!(r.as_array().unwrap().len(), 1);
}

#[test]
fn gguf_diff_per_tensor_including_quantized_blocks() {
    let w = World::new();
    let repo = w.work_repo("work");
    w.env.git(&repo, &["model", "track", "*.gguf"]);
    let f32s = |seed: u32| -> Vec<u8> {
        (0..4096u32)
            .flat_map(|i| ((i * 7 + seed) as f32 / 1000.0).to_le_bytes())
            .collect()
    };
    let quant = |fill: u8| vec![fill; 18 * 64]; // 64 Q4_0 blocks of 32 elements
    let make = |a: u32, q: u8, name: &str| {
        gitmodel_ml::gguf::build(
            &[("general.name", name)],
            &[
                ("token_embd.weight", 0, vec![64, 64], f32s(a)),
                ("blk.0.attn_q.weight", 2, vec![2048], quant(q)),
                ("blk.0.ffn_up.weight", 0, vec![4096], f32s(1)),
            ],
        )
    };
    w.commit_file(&repo, "tiny.gguf", &make(0, 1, "tiny"), "v1");
    w.commit_file(&repo, "tiny.gguf", &make(3, 2, "tiny-ft"), "v2");
    let out = json(&gm(&w, &repo, &["diff", "HEAD~1", "HEAD", "--json"]));
    let d = &out[0];
    assert_eq!(d["format"], "gguf");
    assert_eq!(d["unchanged"], 1);
    assert_eq!(d["metadata_changed"], serde_json::json!(["general.name"]));
    let t = &d["tensors"];
    assert_eq!(t[0]["name"], "token_embd.weight");
    assert_eq!(t[0]["shape"], serde_json::json!([64, 64]));
    let max = t[0]["max_abs_diff"].as_f64().unwrap();
    assert!((max - 0.003).abs() < 1e-6, "{t}");
    assert_eq!(t[1]["name"], "blk.0.attn_q.weight");
    assert_eq!(t[1]["dtype"], "Q4_0");
    assert_eq!(t[1]["fraction_changed"], 1.0);
    assert_eq!(t[1]["relative_l2"], Value::Null);

    // A third version: one tensor converted to F16, one dropped, a new block added.
    let v3 = gitmodel_ml::gguf::build(
        &[("general.name", "tiny-ft")],
        &[
            ("token_embd.weight", 0, vec![64, 64], f32s(3)),
            ("blk.0.ffn_up.weight", 1, vec![4096], vec![0; 8192]),
            ("blk.1.attn_q.weight", 2, vec![2048], quant(5)),
        ],
    );
    w.commit_file(&repo, "tiny.gguf", &v3, "v3");
    let out = json(&gm(&w, &repo, &["diff", "HEAD~1", "HEAD", "--json"]));
    let d = &out[0];
    assert_eq!(d["unchanged"], 1, "{d}");
    assert_eq!(d["metadata_changed"], serde_json::json!([]));
    let changes: Vec<(&str, &str)> = d["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["change"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("blk.0.ffn_up.weight", "retyped"),
            ("blk.1.attn_q.weight", "added"),
            ("blk.0.attn_q.weight", "removed"),
        ]
    );
    let t = &d["tensors"][0];
    assert_eq!(
        (t["old_dtype"].as_str(), t["new_dtype"].as_str()),
        (Some("F32"), Some("F16"))
    );
    assert_eq!(t["new_shape"], serde_json::json!([4096]));
    assert_eq!(d["tensors"][1]["dtype"], "Q4_0");
    assert_eq!(d["tensors"][2]["bytes"], 18 * 64);
}

/// The text of every `<text>` element of an SVG, in document order.
fn svg_texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim_matches('\n'))
        })
        .collect()
}

fn f32s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

#[test]
fn diff_reports_dtype_shape_inserted_and_removed_tensors_and_plots_them() {
    use gitmodel_ml::safetensors::build;
    let w = World::new();
    let repo = w.work_repo("work");
    let ramp = |n: usize, k: f32| f32s((0..n).map(move |i| (i as f32 + 1.0) * k));
    let v1 = build(&[
        ("embed", "F32", vec![16, 8], ramp(128, 0.01)),
        ("layers.0.w", "F32", vec![64], ramp(64, 0.02)),
        ("layers.1.w", "F32", vec![64], ramp(64, 0.03)),
        ("head", "F32", vec![8, 4], ramp(32, 0.5)),
        ("old", "F32", vec![10], ramp(10, 1.0)),
    ]);
    // head: every other element +0.25 (16 of 32 change, max |Δ| 0.25, a known L2).
    let head: Vec<f32> = (0..32)
        .map(|i| (i as f32 + 1.0) * 0.5 + if i % 2 == 0 { 0.25 } else { 0.0 })
        .collect();
    let v2 = build(&[
        ("embed", "F32", vec![16, 8], ramp(128, 0.01)),
        ("layers.0.w", "F16", vec![64], vec![0x3c; 128]),
        ("layers.1.w", "F32", vec![128], ramp(128, 0.03)),
        ("head", "F32", vec![8, 4], f32s(head)),
        ("new", "F32", vec![4], ramp(4, 2.0)),
    ]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    w.commit_file(&repo, "model.safetensors", &v2, "v2");

    let out = json(&gm(
        &w,
        &repo,
        &["diff", "HEAD~1", "HEAD", "--json", "--plot", "change.svg"],
    ));
    let d = &out[0];
    assert_eq!(d["format"], "safetensors");
    assert_eq!(
        (d["old_tensors"].as_u64(), d["new_tensors"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(d["unchanged"], 1, "{d}");
    let by_name = |name: &str| -> &Value {
        d["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {d}"))
    };
    let t = by_name("layers.0.w");
    assert_eq!(t["change"], "retyped");
    assert_eq!(
        (t["old_dtype"].as_str(), t["new_dtype"].as_str()),
        (Some("F32"), Some("F16"))
    );
    assert_eq!(t["old_shape"], serde_json::json!([64]));
    let t = by_name("layers.1.w");
    assert_eq!(t["change"], "retyped");
    assert_eq!(t["old_shape"], serde_json::json!([64]));
    assert_eq!(t["new_shape"], serde_json::json!([128]));
    let t = by_name("head");
    assert_eq!(t["change"], "changed");
    assert_eq!(t["elements"], 32);
    assert_eq!(t["changed"], 16);
    assert_eq!(t["fraction_changed"], 0.5);
    assert!(
        (t["max_abs_diff"].as_f64().unwrap() - 0.25).abs() < 1e-6,
        "{t}"
    );
    // ‖Δ‖ = 0.25·√16 = 1; ‖old‖² = 0.25·Σ_{k=1..32} k² = 0.25·11440.
    let rel = 1.0 / (0.25f64 * 11440.0).sqrt();
    assert!(
        (t["relative_l2"].as_f64().unwrap() - rel).abs() < 1e-6,
        "{t}"
    );
    let t = by_name("new");
    assert_eq!(t["change"], "added");
    assert_eq!(t["shape"], serde_json::json!([4]));
    let t = by_name("old");
    assert_eq!(t["change"], "removed");
    assert_eq!(t["bytes"], 40);
    assert!(d["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["name"] != "embed"));

    // The chart: one row per tensor that differs, with what happened to it.
    let svg = std::fs::read_to_string(repo.join("change.svg")).expect("diff --plot wrote the SVG");
    assert!(svg.starts_with("<svg"), "{svg}");
    let texts = svg_texts(&svg);
    let notes: Vec<&str> = texts.iter().map(|t| t.trim()).collect();
    for text in [
        "model.safetensors: 5 of 6 tensors differ",
        "layers.0.w",
        "layers.1.w",
        "head",
        "new",
        "old",
        "F32 [64] → F16 [64]",
        "F32 [64] → F32 [128]",
        "added F32 [4]",
        "removed F32 [10]",
        &format!("{rel:.4} (50.0% of elements)"),
        "relative L2 change ‖new − old‖ / ‖old‖",
    ] {
        assert!(
            notes.contains(&text),
            "{text:?} not in the chart: {notes:?}"
        );
    }
    assert!(!notes.contains(&"embed"), "unchanged tensors are not drawn");
    // No model among the changes: a clear error, and no file.
    let out = w.env.git_output(
        &repo,
        &["model", "diff", "HEAD", "HEAD", "--plot", "none.svg"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to plot"),
        "{out:?}"
    );
    assert!(!repo.join("none.svg").exists());
}
