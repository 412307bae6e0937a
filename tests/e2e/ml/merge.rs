//! Merges of tracked files through git's own `git merge`: git-model's merge driver
//! (configured by `install`, assigned by `track`), conflicts explained by version, diff
//! summary and metrics, settled by `git model resolve`; keyed tables merged row by row.

use std::path::Path;

use gitmodel_testkit::safetensors;

use super::{commit_all, gm, write};
use crate::World;

const MANIFEST: &str = r#"
[models.vision]
path = "model.safetensors"
metrics = ["metrics.json"]
"#;

/// 8 tensors of 1 MiB.
fn model(versions: &[u64]) -> Vec<u8> {
    safetensors(11, 1 << 20, versions)
}

/// `sha256:<10 hex>` of the pointer git stores for `rel` at `rev`.
fn short_oid(w: &World, repo: &Path, rev: &str, rel: &str) -> String {
    let blob = crate::stored_blob(&w.env, repo, rev, rel);
    let oid = blob
        .lines()
        .find_map(|l| l.strip_prefix("oid sha256:"))
        .unwrap_or_else(|| panic!("{rev}:{rel} is not a pointer: {blob}"));
    format!("sha256:{}", &oid[..10])
}

fn merge_fails(w: &World, repo: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = w.env.git_with(repo, env, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "git {args:?} should stop on a conflict\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("CONFLICT (content): Merge conflict in"),
        "{stdout}\n{stderr}"
    );
    stderr
}

#[test]
fn model_conflict_names_both_versions_and_resolve_settles_it() {
    let w = World::new();
    let repo = w.work_repo("work");
    write(&repo, "models.toml", MANIFEST);
    write(&repo, "metrics.json", "{\"accuracy\": 0.90}\n");
    std::fs::write(repo.join("model.safetensors"), model(&[0; 8])).unwrap();
    commit_all(&w, &repo, "baseline");
    // Two retrains of the same model: one touches tensor 2, the other tensors 5 and 6.
    let mut wanted = Vec::new();
    for (branch, acc, tensors) in [("exp/a", "0.91", vec![2]), ("exp/b", "0.93", vec![5, 6])] {
        w.env.git(&repo, &["checkout", "-q", "-b", branch, "main"]);
        let mut versions = [0u64; 8];
        for t in tensors {
            versions[t] = 1;
        }
        let bytes = model(&versions);
        std::fs::write(repo.join("model.safetensors"), &bytes).unwrap();
        write(&repo, "metrics.json", &format!("{{\"accuracy\": {acc}}}\n"));
        commit_all(&w, &repo, &format!("train {branch}"));
        wanted.push(bytes);
    }
    let (ours_bytes, theirs_bytes) = (wanted[0].clone(), wanted[1].clone());
    w.env
        .git(&repo, &["push", "-q", "origin", "main", "exp/a", "exp/b"]);
    let ours_id = short_oid(&w, &repo, "exp/a", "model.safetensors");
    let theirs_id = short_oid(&w, &repo, "exp/b", "model.safetensors");
    let base_id = short_oid(&w, &repo, "main", "model.safetensors");

    w.env.git(&repo, &["checkout", "-q", "exp/a"]);
    let err = merge_fails(&w, &repo, &[], &["merge", "-q", "--no-edit", "exp/b"]);
    for text in [
        "merge conflict in model.safetensors: both sides changed it",
        &format!("ours   (HEAD): {ours_id} "),
        &format!("theirs (exp/b): {theirs_id} "),
        &format!("base: {base_id} "),
        "1 of 8 tensors vs base: 1 changed (layers.2.weight); 7 unchanged",
        "2 of 8 tensors vs base: 2 changed (layers.5.weight, layers.6.weight); 6 unchanged",
        "metrics: accuracy=0.91",
        "metrics: accuracy=0.93",
        "git model resolve model.safetensors --ours",
        "git model resolve model.safetensors --theirs",
    ] {
        assert!(err.contains(text), "missing {text:?} in:\n{err}");
    }
    // The conflict leaves ours in the working tree, and the three versions in the index.
    assert_eq!(
        std::fs::read(repo.join("model.safetensors")).unwrap(),
        ours_bytes
    );
    let stages = w
        .env
        .git(&repo, &["ls-files", "-u", "--", "model.safetensors"]);
    assert_eq!(stages.lines().count(), 3, "{stages}");

    let out = gm(&w, &repo, &["resolve", "model.safetensors", "--theirs"]);
    assert!(
        out.contains(&format!(
            "resolved model.safetensors with theirs: {theirs_id}"
        )),
        "{out}"
    );
    w.env.git(&repo, &["checkout", "--theirs", "metrics.json"]);
    w.env.git(&repo, &["add", "metrics.json"]);
    w.env.git(&repo, &["commit", "-q", "--no-edit"]);
    assert_eq!(
        std::fs::read(repo.join("model.safetensors")).unwrap(),
        theirs_bytes
    );
    assert_eq!(
        crate::stored_blob(&w.env, &repo, "HEAD", "model.safetensors"),
        crate::stored_blob(&w.env, &repo, "exp/b", "model.safetensors")
    );
    let parents = w.env.git(&repo, &["rev-list", "--parents", "-1", "HEAD"]);
    assert_eq!(parents.split_whitespace().count(), 3, "a merge commit");
    assert_eq!(w.env.git(&repo, &["status", "--porcelain"]), "");

    // A clone holding only pointers: the driver explains the conflict from headers and
    // chunk lists fetched from the server, and `resolve --ours` downloads the content.
    let lazy = w.clone_pointers_only("lazy");
    let skip = [("GIT_MODEL_SKIP_SMUDGE", "1")];
    let out = w.env.git_with(
        &lazy,
        &skip,
        &["checkout", "-q", "-b", "exp/a", "origin/exp/a"],
    );
    crate::check_ok("checkout in the lazy clone", &out);
    let err = merge_fails(
        &w,
        &lazy,
        &skip,
        &["merge", "-q", "--no-edit", "origin/exp/b"],
    );
    assert!(
        err.contains(&format!("theirs (origin/exp/b): {theirs_id} ")),
        "{err}"
    );
    assert!(
        err.contains("2 changed (layers.5.weight, layers.6.weight)"),
        "{err}"
    );
    // Headers, chunk lists and a few chunks at the edges of the edits: a small part of
    // one version (8 MiB), let alone the three.
    let fetched = gitmodel_testkit::dir_size(&lazy.join(".git/model"));
    assert!(
        fetched < (ours_bytes.len() / 4) as u64,
        "the driver fetched {fetched} bytes"
    );
    let out = gm(&w, &lazy, &["resolve", "model.safetensors", "--ours"]);
    assert!(out.contains(&format!("with ours: {ours_id}")), "{out}");
    assert_eq!(
        std::fs::read(lazy.join("model.safetensors")).unwrap(),
        ours_bytes
    );
    w.env.git(&lazy, &["checkout", "--ours", "metrics.json"]);
    w.env.git(&lazy, &["add", "metrics.json"]);
    w.env.git(&lazy, &["commit", "-q", "--no-edit"]);
    assert_eq!(
        crate::stored_blob(&w.env, &lazy, "HEAD", "model.safetensors"),
        crate::stored_blob(&w.env, &lazy, "origin/exp/a", "model.safetensors")
    );
    assert_eq!(w.env.git(&lazy, &["status", "--porcelain"]), "");

    // Misuse is named.
    let out = w
        .env
        .git_output(&lazy, &["model", "resolve", "model.safetensors", "--ours"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.safetensors is not in conflict"),
        "{err}"
    );
}

/// A CSV line per row: `name,id,label` (the key is not the first column: names are
/// unique too, and only the attribute says to match on `id`).
fn csv(rows: &[(u32, &str, u32)]) -> String {
    let mut s = String::from("name,id,label\n");
    for (id, name, label) in rows {
        s.push_str(&format!("{name},{id},{label}\n"));
    }
    s
}

#[test]
fn keyed_csv_merges_row_wise_and_overlapping_rows_conflict() {
    let w = World::new();
    let repo = w.work_repo("work");
    gm(&w, &repo, &["track", "data/*.csv"]);
    let mut attrs = std::fs::read_to_string(repo.join(".gitattributes")).unwrap();
    attrs.push_str("data/*.csv merge-key=id\n");
    write(&repo, ".gitattributes", &attrs);
    let names = ["cat", "dog", "fish", "bird", "cow", "ant", "bee", "owl"];
    let base: Vec<(u32, &str, u32)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u32 + 1, *n, (i % 2) as u32))
        .collect();
    write(&repo, "data/train.csv", &csv(&base));
    commit_all(&w, &repo, "data v1");

    // Left relabels row 2 and appends row 9; right relabels row 6, drops row 4 and
    // inserts row 35 after row 3.
    let mut left = base.clone();
    left[1].2 = 7;
    left.push((9, "elk", 1));
    w.env.git(&repo, &["checkout", "-q", "-b", "left", "main"]);
    write(&repo, "data/train.csv", &csv(&left));
    commit_all(&w, &repo, "left edits");
    let mut right = base.clone();
    right[5].2 = 8;
    right.remove(3);
    right.insert(3, (35, "yak", 0));
    w.env.git(&repo, &["checkout", "-q", "-b", "right", "main"]);
    write(&repo, "data/train.csv", &csv(&right));
    commit_all(&w, &repo, "right edits");

    // What a person would write by hand: left's rows with right's edits applied.
    let mut expected = left.clone();
    expected[5].2 = 8; // row 6
    expected.remove(3); // row 4
    expected.insert(3, (35, "yak", 0));
    let expected = csv(&expected);

    w.env.git(&repo, &["checkout", "-q", "left"]);
    let out = w
        .env
        .git_output(&repo, &["merge", "--no-edit", "-m", "merge right", "right"]);
    crate::check_ok("git merge right", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("merged data/train.csv row by row on \"id\": theirs added 1, changed 1, removed 1 row(s)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("data/train.csv")).unwrap(),
        expected
    );
    let blob = crate::stored_blob(&w.env, &repo, "HEAD", "data/train.csv");
    assert!(blob.starts_with("version https://git-lfs"), "{blob}");
    assert_eq!(w.env.git(&repo, &["status", "--porcelain"]), "");
    // The merged content was stored like any add: pushed, it reaches a fresh clone.
    w.env.git(&repo, &["push", "-q", "origin", "left"]);
    let other = w.env.path("other");
    w.env.git(
        w.env.home.path(),
        &[
            "clone",
            "-q",
            "-b",
            "left",
            w.origin.to_str().unwrap(),
            "other",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(other.join("data/train.csv")).unwrap(),
        expected
    );
    // `git model diff` matches rows on the attribute's column too.
    let d = super::json(&gm(
        &w,
        &repo,
        &["diff", "main", "right", "--json", "--", "data/train.csv"],
    ));
    assert_eq!(d[0]["key"], "id", "{d}");
    assert_eq!(
        (
            d[0]["rows_added"].as_u64(),
            d[0]["rows_removed"].as_u64(),
            d[0]["rows_changed"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{d}"
    );

    // Two sides changing the same row (5) differently, one also row 7: a conflict
    // naming that key; row 7 alone would have merged.
    let mut one = left.clone();
    one[4].1 = "horse";
    w.env.git(&repo, &["checkout", "-q", "-b", "one", "main"]);
    write(&repo, "data/train.csv", &csv(&one));
    commit_all(&w, &repo, "one");
    let mut two = base.clone();
    two[4].1 = "mule";
    two[6].2 = 5;
    w.env.git(&repo, &["checkout", "-q", "-b", "two", "main"]);
    write(&repo, "data/train.csv", &csv(&two));
    commit_all(&w, &repo, "two");
    let err = merge_fails(&w, &repo, &[], &["merge", "-q", "--no-edit", "one"]);
    assert!(
        err.contains("rows keyed on \"id\" not merged: 1 row(s) changed differently on both sides"),
        "{err}"
    );
    assert!(err.contains("; id = 5\n"), "{err}");
    assert!(
        err.contains("rows vs base: 1 added, 0 removed, 2 changed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("data/train.csv")).unwrap(),
        csv(&two)
    );
    // From a subdirectory, by revision: the branch being merged.
    let out = gm(
        &w,
        &repo.join("data"),
        &["resolve", "train.csv", "--rev", "one"],
    );
    assert!(out.contains("resolved data/train.csv with one ("), "{out}");
    w.env.git(&repo, &["commit", "-q", "--no-edit"]);
    assert_eq!(
        std::fs::read_to_string(repo.join("data/train.csv")).unwrap(),
        csv(&one)
    );
    assert_eq!(w.env.git(&repo, &["status", "--porcelain"]), "");

    // The driver itself: when only theirs changed, theirs is left in ours' file; git's
    // arguments are required.
    let dir = w.env.path("driver");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [("o", "x\n"), ("a", "x\n"), ("b", "y\n")] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let arg = |n: &str| dir.join(n).to_str().unwrap().to_string();
    gm(
        &w,
        &repo,
        &[
            "merge-driver",
            &arg("o"),
            &arg("a"),
            &arg("b"),
            "notes.bin",
            "HEAD",
            "x",
        ],
    );
    assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "y\n");
    let out = w
        .env
        .git_output(&repo, &["model", "merge-driver", &arg("o")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("merge-driver expects git's arguments"),
        "{out:?}"
    );
}
