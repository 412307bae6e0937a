//! Repair of damaged server copies, end to end: a pack damaged on the server's storage
//! (behind its back) is found by `git-model-server scrub` and by `git model fsck
//! --remote`, both naming the affected file; `git model push` from a clone holding the
//! file sends it again; afterwards the scrub is clean and a fresh clone is byte-exact.

use std::fs;

use gitmodel_format::Oid;
use gitmodel_testkit::safetensors;
use serde_json::Value;

use crate::World;

on_each_backend!(a_damaged_pack_is_found_named_and_repaired_by_a_push);

/// `git-model-server scrub --json` on the world's store: success, and the report.
fn scrub(w: &World) -> (bool, Value) {
    let out = w.server_command(&["scrub", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "scrub: stdout is not one JSON object ({e}):\n{text}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        out.status.success(),
        report["ok"] == true,
        "exit status and report disagree: {report}"
    );
    (out.status.success(), report)
}

fn a_damaged_pack_is_found_named_and_repaired_by_a_push(w: World) {
    let repo = w.work_repo("work");
    let data = safetensors(7, 1 << 20, &[0; 3]);
    let oid = Oid::of(&data).to_hex();
    let rel = "weights/model.safetensors";
    w.commit_file(&repo, rel, &data, "v1");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    let (ok, report) = scrub(&w);
    assert!(ok, "a fresh store is clean: {report}");
    assert!(report["packs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["recipes"], 1, "{report}");
    let out = w.env.git_output(&repo, &["model", "fsck", "--remote"]);
    crate::check_ok("fsck --remote on an intact server", &out);

    assert!(w.damage_packs() > 0);

    // The client notices: the server checks its copy and says which file is damaged.
    let out = w.env.git_output(&repo, &["model", "fsck", "--remote"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "fsck --remote missed the damage: {stderr}"
    );
    assert!(
        stderr.contains(rel) && stderr.contains(&oid) && stderr.contains("damaged"),
        "{stderr}"
    );

    // The operator's scrub finds it too, and names the repository's file.
    let (ok, report) = scrub(&w);
    assert!(!ok, "{report}");
    let damaged = report["damaged_packs"].as_array().unwrap();
    assert!(!damaged.is_empty(), "{report}");
    let affected = report["affected_files"].as_array().unwrap();
    assert!(
        affected
            .iter()
            .any(|f| f["repo"] == "acme/vision" && f["oid"] == oid.as_str()),
        "{report}"
    );

    // A push from the clone that has the file sends it again (before: "already there").
    let out = w.env.git_output(&repo, &["model", "push", "--json"]);
    crate::check_ok("repairing push", &out);
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["files_uploaded"], 1, "{pushed}");
    assert!(pushed["chunks_sent"].as_u64().unwrap() > 0, "{pushed}");

    let (ok, report) = scrub(&w);
    assert!(ok, "the push repaired the store: {report}");
    let out = w.env.git_output(&repo, &["model", "fsck", "--remote"]);
    crate::check_ok("fsck --remote after the repair", &out);
    let fresh = w.clone("fresh");
    assert!(
        fs::read(fresh.join(rel)).unwrap() == data,
        "a fresh clone is byte-exact"
    );
}
