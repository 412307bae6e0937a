//! The stage registry end to end: gates, rollback, history at a date, concurrent
//! promotions from two clones, export from a shallow clone.

use std::path::Path;
use std::process::Output;

use gitmodel_testkit::safetensors;
use serde_json::Value;

use crate::World;

const MANIFEST: &str = r#"
[models.vision]
path = "model.safetensors"
metrics = ["metrics.json"]

[models.vision.stages.staging]
require = ["accuracy >= 0.8"]

[models.vision.stages.production]
require = ["accuracy >= 0.9", "accuracy >= previous"]
"#;

/// `git model …` at a given committer date (the event's time).
fn gm_at(w: &World, dir: &Path, date: &str, args: &[&str]) -> Output {
    let mut full = vec!["model"];
    full.extend_from_slice(args);
    w.env.git_with(dir, &[("GIT_COMMITTER_DATE", date)], &full)
}

fn ok(what: &str, out: Output) -> String {
    crate::check_ok(what, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Commits a model version (tensor `k` bumped) with its accuracy; returns the commit.
fn version(w: &World, repo: &Path, k: usize, accuracy: f64) -> String {
    let mut versions = [0u64; 4];
    versions[k % 4] = k as u64;
    std::fs::write(
        repo.join("model.safetensors"),
        safetensors(9, 64 << 10, &versions),
    )
    .unwrap();
    std::fs::write(
        repo.join("metrics.json"),
        format!("{{\"accuracy\": {accuracy}}}"),
    )
    .unwrap();
    std::fs::write(repo.join("models.toml"), MANIFEST).unwrap();
    w.env.git(repo, &["add", "-A"]);
    w.env.git(repo, &["commit", "-q", "-m", &format!("v{k}")]);
    w.env.git(repo, &["rev-parse", "HEAD"]).trim().to_string()
}

fn stage_commit(w: &World, repo: &Path, stage: &str) -> Option<String> {
    let s = json(&ok(
        "stages",
        w.env
            .git_output(repo, &["model", "stages", "vision", "--json", "--offline"]),
    ));
    s["vision"][stage]["version"]["commit"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn promote_with_gates_rollback_and_history_at_a_date() {
    let w = World::new();
    let repo = w.work_repo("work");
    let v1 = version(&w, &repo, 1, 0.85);
    // Not pushed yet: others could not export it, so a published promotion is refused.
    let out = gm_at(
        &w,
        &repo,
        "2026-01-31T00:00:00Z",
        &["promote", "vision", &v1, "--to", "staging"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("push that commit first"), "{err}");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    ok(
        "staging v1",
        gm_at(
            &w,
            &repo,
            "2026-02-01T10:00:00Z",
            &["promote", "vision", &v1, "--to", "staging"],
        ),
    );
    // The production gate refuses, naming the metric.
    let out = gm_at(
        &w,
        &repo,
        "2026-02-01T11:00:00Z",
        &["promote", "vision", &v1, "--to", "production"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gate \"accuracy >= 0.9\" failed: accuracy = 0.85 < 0.9"),
        "{err}"
    );
    assert_eq!(stage_commit(&w, &repo, "production"), None);

    let v2 = version(&w, &repo, 2, 0.92);
    let v3 = version(&w, &repo, 3, 0.95);
    let v4 = version(&w, &repo, 4, 0.93);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    ok(
        "prod v2",
        gm_at(
            &w,
            &repo,
            "2026-02-03T00:00:00Z",
            &["promote", "vision", &v2, "--to", "production"],
        ),
    );
    ok(
        "prod v3",
        gm_at(
            &w,
            &repo,
            "2026-02-05T00:00:00Z",
            &[
                "promote",
                "vision",
                &v3,
                "--to",
                "production",
                "-m",
                "better",
            ],
        ),
    );
    // Worse than the version in production: refused, then forced (and recorded).
    let out = gm_at(
        &w,
        &repo,
        "2026-02-06T00:00:00Z",
        &["promote", "vision", &v4, "--to", "production"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"accuracy >= previous\" failed: accuracy = 0.93 < previous 0.95"),
        "{err}"
    );
    let text = ok(
        "forced",
        gm_at(
            &w,
            &repo,
            "2026-02-06T00:00:00Z",
            &[
                "promote",
                "vision",
                &v4,
                "--to",
                "production",
                "--force",
                "-m",
                "hotfix",
            ],
        ),
    );
    assert!(text.contains("[forced]"), "{text}");
    assert_eq!(
        stage_commit(&w, &repo, "production").as_deref(),
        Some(v4.as_str())
    );

    // Rollback: one step back to v3, recorded like a promotion.
    let text = ok(
        "rollback",
        gm_at(
            &w,
            &repo,
            "2026-02-07T00:00:00Z",
            &[
                "rollback",
                "vision",
                "--stage",
                "production",
                "-m",
                "latency",
            ],
        ),
    );
    assert!(text.contains(&format!("to {}", &v3[..10])), "{text}");
    assert_eq!(
        stage_commit(&w, &repo, "production").as_deref(),
        Some(v3.as_str())
    );
    assert_eq!(
        stage_commit(&w, &repo, "staging").as_deref(),
        Some(v1.as_str())
    );

    // Which version was in production at a date.
    let at = |date: &str| {
        json(&ok(
            "history --at",
            w.env.git_output(
                &repo,
                &[
                    "model",
                    "history",
                    "vision",
                    "--at",
                    date,
                    "--json",
                    "--offline",
                ],
            ),
        ))
    };
    assert_eq!(at("2026-02-04")["production"]["commit"], v2.as_str());
    assert_eq!(
        at("2026-02-06T12:00:00Z")["production"]["commit"],
        v4.as_str()
    );
    assert_eq!(at("2026-02-08")["production"]["commit"], v3.as_str());
    let early = at("2026-02-02");
    assert!(early.get("production").is_none(), "{early}");
    assert_eq!(early["staging"]["commit"], v1.as_str());
    let text = ok(
        "history",
        w.env.git_output(
            &repo,
            &[
                "model",
                "history",
                "vision",
                "--at",
                "2026-02-04",
                "--offline",
            ],
        ),
    );
    assert!(
        text.contains("production") && text.contains(&v2[..10]),
        "{text}"
    );

    // The full log: who, when, from what, why, forced.
    let events = json(&ok(
        "history",
        w.env.git_output(
            &repo,
            &[
                "model",
                "history",
                "vision",
                "--stage",
                "production",
                "--json",
                "--offline",
            ],
        ),
    ));
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[2]["forced"], true);
    assert_eq!(events[2]["reason"], "hotfix");
    assert_eq!(events[2]["previous"]["commit"], v3.as_str());
    assert_eq!(events[3]["action"], "rollback");
    assert_eq!(events[3]["who"], "Test Committer <committer@example.com>");
    assert_eq!(events[1]["time"], 1770249600); // 2026-02-05
                                               // The registry went to origin with each promotion.
    let remote = w
        .env
        .git(&w.origin, &["rev-parse", "refs/gitmodel/registry"]);
    let local = w.env.git(&repo, &["rev-parse", "refs/gitmodel/registry"]);
    assert_eq!(remote, local);
}

#[test]
fn concurrent_promotions_from_two_clones_are_both_kept() {
    let w = World::new();
    let repo = w.work_repo("work");
    let v1 = version(&w, &repo, 1, 0.91);
    let v2 = version(&w, &repo, 2, 0.95);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let a = w.clone("a");
    let b = w.clone("b");

    // Neither sees the other: B records locally while A publishes.
    ok(
        "a",
        gm_at(
            &w,
            &a,
            "2026-03-01T00:00:00Z",
            &["promote", "vision", &v1, "--to", "staging"],
        ),
    );
    ok(
        "b",
        gm_at(
            &w,
            &b,
            "2026-03-02T00:00:00Z",
            &["promote", "vision", &v2, "--to", "production", "--local"],
        ),
    );
    // B's sync fetches A's event, merges (union of events) and pushes.
    ok(
        "b sync",
        w.env.git_output(&b, &["model", "registry", "sync"]),
    );
    // A gets B's event with a plain `git fetch` (refspec added on first use).
    w.env.git(&a, &["fetch", "-q"]);
    assert_eq!(
        stage_commit(&w, &a, "staging").as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(
        stage_commit(&w, &a, "production").as_deref(),
        Some(v2.as_str())
    );
    // Another round: B publishes, A records offline, then A's sync merges and pushes.
    ok(
        "b2",
        gm_at(
            &w,
            &b,
            "2026-03-03T00:00:00Z",
            &["promote", "vision", &v2, "--to", "canary"],
        ),
    );
    ok(
        "a2",
        gm_at(
            &w,
            &a,
            "2026-03-04T00:00:00Z",
            &["promote", "vision", &v2, "--to", "staging", "--local"],
        ),
    );
    ok(
        "a sync",
        w.env.git_output(&a, &["model", "registry", "sync"]),
    );
    ok("b fetch", w.env.git_output(&b, &["fetch", "-q"]));
    let events = json(&ok(
        "history",
        w.env
            .git_output(&b, &["model", "history", "vision", "--json", "--offline"]),
    ));
    let stages: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, vec!["staging", "production", "canary", "staging"]);
    assert_eq!(
        stage_commit(&w, &b, "staging").as_deref(),
        Some(v2.as_str())
    );
    // The origin's registry holds all four.
    let tree = w.env.git(
        &w.origin,
        &["ls-tree", "-r", "--name-only", "refs/gitmodel/registry"],
    );
    assert_eq!(
        tree.lines()
            .filter(|l| l.starts_with("events/vision/"))
            .count(),
        4,
        "{tree}"
    );
}

#[test]
fn a_push_that_loses_a_race_is_merged_and_retried() {
    let w = World::new();
    let repo = w.work_repo("work");
    let v1 = version(&w, &repo, 1, 0.91);
    let v2 = version(&w, &repo, 2, 0.95);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let a = w.clone("a");
    let b = w.clone("b");
    ok(
        "b first",
        gm_at(
            &w,
            &b,
            "2026-04-01T00:00:00Z",
            &["promote", "vision", &v1, "--to", "staging"],
        ),
    );
    // A's fetches go through a wrapper that, once, lets B promote right after A has
    // fetched: A's push then finds the remote moved on and must merge and retry.
    let marker = w.env.path("raced");
    let wrapper = w.env.path("upload-pack-then-race");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ngit upload-pack \"$@\"\nrc=$?\nif [ ! -e '{m}' ]; then\n  touch '{m}'\n  \
             (cd '{b}' && unset GIT_DIR GIT_PROTOCOL && GIT_COMMITTER_DATE=2026-04-02T00:00:00Z \
             git model promote vision {v2} --to canary >&2)\nfi\nexit $rc\n",
            m = marker.display(),
            b = b.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.env.git(
        &a,
        &[
            "config",
            "remote.origin.uploadpack",
            wrapper.to_str().unwrap(),
        ],
    );
    ok(
        "a races",
        gm_at(
            &w,
            &a,
            "2026-04-03T00:00:00Z",
            &["promote", "vision", &v2, "--to", "production"],
        ),
    );
    assert!(marker.exists(), "the race did not happen");
    // All three events are on the origin and in A's view.
    let tree = w.env.git(
        &w.origin,
        &["ls-tree", "-r", "--name-only", "refs/gitmodel/registry"],
    );
    assert_eq!(
        tree.lines()
            .filter(|l| l.starts_with("events/vision/"))
            .count(),
        3,
        "{tree}"
    );
    assert_eq!(stage_commit(&w, &a, "canary").as_deref(), Some(v2.as_str()));
    assert_eq!(
        stage_commit(&w, &a, "production").as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        stage_commit(&w, &a, "staging").as_deref(),
        Some(v1.as_str())
    );
}

#[test]
fn export_stage_from_a_shallow_clone_is_byte_exact() {
    let w = World::new();
    let repo = w.work_repo("work");
    let v1 = version(&w, &repo, 1, 0.95);
    let want = std::fs::read(repo.join("model.safetensors")).unwrap();
    version(&w, &repo, 2, 0.5);
    let head = std::fs::read(repo.join("model.safetensors")).unwrap();
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    ok(
        "promote",
        w.env.git_output(
            &repo,
            &["model", "promote", "vision", &v1, "--to", "production"],
        ),
    );

    let home = w.env.home.path();
    let url = format!("file://{}", w.origin.display());
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_SKIP_SMUDGE", "1")],
        &["clone", "-q", "--depth", "1", &url, "shallow"],
    );
    crate::check_ok("shallow clone", &out);
    let shallow = w.env.path("shallow");
    assert!(shallow.join(".git/shallow").exists());
    // v1's commit is not in this clone; the registry says which content it is.
    assert!(!w
        .env
        .git_output(&shallow, &["cat-file", "-e", &v1])
        .status
        .success());
    let target = w.env.path("out/vision.safetensors");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let text = ok(
        "export",
        w.env.git_output(
            &shallow,
            &[
                "model",
                "export",
                "vision@production",
                "-o",
                target.to_str().unwrap(),
            ],
        ),
    );
    assert!(text.contains(&v1[..10]), "{text}");
    assert!(
        std::fs::read(&target).unwrap() == want,
        "exported bytes differ"
    );
    // By revision too.
    let t2 = w.env.path("out/head.safetensors");
    ok(
        "export rev",
        w.env.git_output(
            &shallow,
            &["model", "export", "vision@HEAD", "-o", t2.to_str().unwrap()],
        ),
    );
    assert!(std::fs::read(&t2).unwrap() == head);
    // Unknown stage or rev: a clear error.
    let out = w.env.git_output(
        &shallow,
        &[
            "model",
            "export",
            "vision@nowhere",
            "-o",
            t2.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither a stage of vision (production)"),
        "{err}"
    );
}
