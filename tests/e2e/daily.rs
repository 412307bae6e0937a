//! Daily-use robustness: partial fetch, fsck, prune, interrupted transfers.
//!
//! The tests that involve the server run on both backends (`daily::local::<name>`,
//! `daily::s3::<name>` on Garage; see `crate::backend`).

use std::fs;

use gitmodel_format::{Oid, Pointer};
use gitmodel_testkit::{dir_size, safetensors};

use crate::World;

fn model(seed: u64, mib: usize) -> Vec<u8> {
    safetensors(seed, 1 << 20, &vec![0; mib])
}

on_each_backend!(
    partial_fetch_with_include_exclude_and_config,
    fsck_finds_missing_and_corrupt_content,
    prune_frees_old_versions_but_never_unpushed_content,
    killed_pull_leaves_no_half_written_file_and_rerun_completes,
    server_killed_during_push_then_push_completes,
    server_gc_removes_a_deleted_repository_packs_and_keeps_the_rest,
    metrics_count_requests_and_chunks,
);

fn pointer_bytes(data: &[u8]) -> Vec<u8> {
    Pointer::new(Oid::of(data), data.len() as u64).to_bytes()
}

fn partial_fetch_with_include_exclude_and_config(w: World) {
    let repo = w.work_repo("work");
    let a = model(1, 1);
    let b = model(2, 1);
    let c = model(3, 1);
    fs::create_dir_all(repo.join("models/big")).unwrap();
    fs::create_dir_all(repo.join("models/small")).unwrap();
    fs::write(repo.join("models/big/a.safetensors"), &a).unwrap();
    fs::write(repo.join("models/small/b.safetensors"), &b).unwrap();
    fs::write(repo.join("c.safetensors"), &c).unwrap();
    w.env.git(&repo, &["add", "."]);
    w.env.git(&repo, &["commit", "-q", "-m", "three"]);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    let lazy = w.clone_pointers_only("lazy");
    w.env.git(
        &lazy,
        &[
            "model",
            "pull",
            "--include",
            "models/small",
            "--exclude",
            "c.*",
        ],
    );
    assert_eq!(
        fs::read(lazy.join("models/small/b.safetensors")).unwrap(),
        b
    );
    assert_eq!(
        fs::read(lazy.join("models/big/a.safetensors")).unwrap(),
        pointer_bytes(&a)
    );
    assert_eq!(
        fs::read(lazy.join("c.safetensors")).unwrap(),
        pointer_bytes(&c)
    );

    // Config applies to pull and to checkout (smudge) alike.
    w.env
        .git(&lazy, &["config", "model.fetchexclude", "models/big"]);
    w.env.git(&lazy, &["model", "pull"]);
    assert_eq!(fs::read(lazy.join("c.safetensors")).unwrap(), c);
    assert_eq!(
        fs::read(lazy.join("models/big/a.safetensors")).unwrap(),
        pointer_bytes(&a)
    );
    assert_eq!(w.env.git(&lazy, &["status", "--porcelain"]), "");
}

fn fsck_finds_missing_and_corrupt_content(w: World) {
    let repo = w.work_repo("work");
    let a = model(4, 2);
    w.commit_file(&repo, "a.safetensors", &a, "a");
    let out = w.env.git(&repo, &["model", "fsck"]);
    assert!(out.contains("1 file(s) checked"), "{out}");
    // Not pushed yet: the server lacks it.
    let out = w.env.git_output(&repo, &["model", "fsck", "--remote"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on the server"));
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    w.env.git(&repo, &["model", "fsck", "--remote"]);

    // Corrupt the local pack: fsck names the file and the oid.
    let mut packs = Vec::new();
    crate::collect(&repo.join(".git/model/packs"), &mut packs);
    for p in &packs {
        let mut bytes = fs::read(p).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 1;
        fs::write(p, bytes).unwrap();
    }
    let out = w.env.git_output(&repo, &["model", "fsck"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a.safetensors") && stderr.contains(&Oid::of(&a).to_hex()),
        "{stderr}"
    );
}

fn prune_frees_old_versions_but_never_unpushed_content(w: World) {
    let repo = w.work_repo("work");
    let v1 = model(5, 4);
    let v2 = model(6, 4);
    w.commit_file(&repo, "m.safetensors", &v1, "v1");
    w.commit_file(&repo, "m.safetensors", &v2, "v2");
    // Nothing pushed: prune must keep everything (the server lacks it).
    let before = dir_size(&repo.join(".git/model"));
    w.env.git(&repo, &["model", "prune", "--age", "0"]);
    assert_eq!(dir_size(&repo.join(".git/model")), before);

    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let dry = w
        .env
        .git(&repo, &["model", "prune", "--age", "0", "--dry-run"]);
    assert!(dry.contains("would remove"), "{dry}");
    assert_eq!(dir_size(&repo.join(".git/model")), before);
    w.env.git(&repo, &["model", "prune", "--age", "0"]);
    let after = dir_size(&repo.join(".git/model"));
    assert!(after < before * 2 / 3, "before {before}, after {after}");
    // The checkout's version is intact; the old one comes back from the server on demand.
    w.env.git(&repo, &["model", "fsck"]);
    w.env
        .git(&repo, &["checkout", "-q", "HEAD~1", "--", "m.safetensors"]);
    assert!(fs::read(repo.join("m.safetensors")).unwrap() == v1);
}

fn killed_pull_leaves_no_half_written_file_and_rerun_completes(w: World) {
    let repo = w.work_repo("work");
    let big = model(7, 48);
    w.commit_file(&repo, "big.safetensors", &big, "big");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let lazy = w.clone_pointers_only("lazy");
    let target = lazy.join("big.safetensors");
    let pointer = pointer_bytes(&big);
    // Kill the pull at several points; the file is always the pointer or the full content.
    for delay_ms in [5u64, 40, 120] {
        // The git-model process itself is killed (not a `git` wrapper that would orphan it).
        let mut child = w.env.cmd("git-model", &lazy).arg("pull").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // A `git add` it had started finishes on its own; wait for its index lock to go.
        for _ in 0..200 {
            if !lazy.join(".git/index.lock").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let now = fs::read(&target).unwrap();
        assert!(
            now == pointer || now == big,
            "half-written file after kill at {delay_ms} ms"
        );
    }
    // A killed process may leave its temp file, but never in place of the target; the
    // next pull removes it, and leaves alone one of a process still running.
    fs::write(
        lazy.join(".tmp-gitmodel-4000000000-dead"),
        b"left by a crash",
    )
    .unwrap();
    let live = format!(".tmp-gitmodel-{}-live", std::process::id());
    fs::write(lazy.join(&live), b"being written").unwrap();
    w.env.git(&lazy, &["model", "pull"]);
    fs::remove_file(lazy.join(&live)).expect("a running process's temp file is kept");
    assert!(fs::read(&target).unwrap() == big);
    let stray: Vec<_> = fs::read_dir(&lazy)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-gitmodel"))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
    assert_eq!(w.env.git(&lazy, &["status", "--porcelain"]), "");
    w.env.git(&lazy, &["model", "fsck"]);
}

fn server_killed_during_push_then_push_completes(mut w: World) {
    let repo = w.work_repo("work");
    let big = model(8, 96);
    w.commit_file(&repo, "big.safetensors", &big, "big");
    let mut push = w
        .env
        .cmd("git", &repo)
        .args(["push", "-q", "origin", "main"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    w.server.kill();
    let status = push.wait().unwrap();
    // Either the push finished before the kill, or it failed; never a pointer without content.
    let restarted = w.start_server(&[]);
    let url = restarted.repo_url("acme", "vision");
    w.env.git(&repo, &["config", "model.url", &url]);
    if !status.success() {
        let refs = w.env.git(&w.origin, &["for-each-ref"]);
        assert!(
            !refs.contains("refs/heads/main"),
            "failed push published the branch"
        );
        w.env.git(&repo, &["push", "-q", "origin", "main"]);
    }
    w.env.git(&repo, &["model", "fsck", "--remote"]);
    w.server = restarted;
    let other = w.clone("other");
    w.env.git(&other, &["config", "model.url", &url]);
    w.env.git(&other, &["model", "pull"]);
    assert!(fs::read(other.join("big.safetensors")).unwrap() == big);
}

#[test]
fn an_edit_after_pull_is_never_mistaken_for_the_pulled_file() {
    let w = World::new();
    let repo = w.work_repo("work");
    let a = model(9, 2);
    w.commit_file(&repo, "a.safetensors", &a, "a");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let lazy = w.clone_pointers_only("lazy");
    w.env.git(&lazy, &["model", "pull"]);
    assert_eq!(w.env.git(&lazy, &["status", "--porcelain"]), "");
    // Same size, one byte different, written in place right after the pull.
    let mut edited = a.clone();
    edited[a.len() / 2] ^= 0xff;
    fs::write(lazy.join("a.safetensors"), &edited).unwrap();
    w.env.git(&lazy, &["add", "a.safetensors"]);
    let staged = w.env.git(&lazy, &["cat-file", "-p", ":a.safetensors"]);
    assert_eq!(staged.as_bytes(), &pointer_bytes(&edited)[..]);
}

/// The filter remembers the files a checkout smudged (so that git's re-clean of a
/// "racily clean" file costs no hashing), but never a smudge for a temporary file: here
/// `git diff` smudges HEAD's version while the working file holds other bytes of the
/// same size, and the edit must stay visible and be committed as it is.
#[test]
fn checked_out_files_are_not_hashed_again_and_a_diff_never_hides_an_edit() {
    let w = World::new();
    let repo = w.work_repo("work");
    let (v1, v2) = (model(21, 2), model(22, 2));
    assert_eq!(v1.len(), v2.len());
    w.commit_file(&repo, "m.safetensors", &v1, "v1");
    w.commit_file(&repo, "m.safetensors", &v2, "v2");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    // A clone smudges v2 into the working tree: remembered for that path.
    let clone = w.clone("clone");
    assert!(fs::read(clone.join("m.safetensors")).unwrap() == v2);
    let cache = fs::read_to_string(clone.join(".git/model/stat-cache")).unwrap();
    assert!(
        cache.contains(&Oid::of(&v2).to_hex()) && cache.contains("m.safetensors"),
        "{cache}"
    );

    // v1's bytes written back; `git diff` smudges v2 (HEAD) into a temporary file.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(clone.join("m.safetensors"), &v1).unwrap();
    let before = w.env.git(&clone, &["status", "--porcelain"]);
    assert_eq!(before.trim(), "M m.safetensors");
    w.env.git(&clone, &["diff", "--stat"]);
    w.env.git(&clone, &["diff"]);
    let after = w.env.git(&clone, &["status", "--porcelain"]);
    assert_eq!(after.trim(), "M m.safetensors", "the edit went invisible");
    w.env.git(&clone, &["add", "m.safetensors"]);
    let staged = w.env.git(&clone, &["cat-file", "-p", ":m.safetensors"]);
    assert_eq!(staged.as_bytes(), &pointer_bytes(&v1)[..]);
}

/// The bytes the clean filter fed to SHA-256 for one `git add`, from its debug log.
fn hashed_by_add(w: &World, repo: &std::path::Path, path: &str) -> u64 {
    let out = w.env.git_with(
        repo,
        &[("GIT_MODEL_LOG", "git_model=debug")],
        &["add", path],
    );
    crate::check_ok(&format!("git add {path}"), &out);
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains(&format!("clean {path}:")))
        .unwrap_or_else(|| panic!("no clean line for {path} in:\n{log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "hashed")
        .expect("bytes hashed");
    words[at - 2].parse().unwrap()
}

#[test]
fn a_new_version_is_hashed_from_where_it_changed_and_its_oid_stays_exact() {
    let w = World::new();
    let repo = w.work_repo("work");
    // 12 tensors of 1 MiB: v2 changes the last two, v3 the first.
    let v1 = safetensors(5, 1 << 20, &[0; 12]);
    let mut edits = [0u64; 12];
    edits[10] = 1;
    edits[11] = 1;
    let v2 = safetensors(5, 1 << 20, &edits);
    edits[0] = 1;
    let v3 = safetensors(5, 1 << 20, &edits);
    let file = repo.join("m.safetensors");
    let staged = |repo: &std::path::Path| w.env.git(repo, &["cat-file", "-p", ":m.safetensors"]);

    fs::write(&file, &v1).unwrap();
    assert_eq!(hashed_by_add(&w, &repo, "m.safetensors"), v1.len() as u64);
    w.env.git(&repo, &["commit", "-qm", "v1"]);

    // The first ten tensors are hashed no more: their states were kept at the v1 clean.
    fs::write(&file, &v2).unwrap();
    let hashed = hashed_by_add(&w, &repo, "m.safetensors");
    assert!(
        (2 << 20..4 << 20).contains(&hashed),
        "{hashed} of {} bytes hashed",
        v2.len()
    );
    assert_eq!(staged(&repo).as_bytes(), &pointer_bytes(&v2)[..]);
    w.env.git(&repo, &["commit", "-qm", "v2"]);

    // An edit at the front: nothing to resume from, every byte hashed.
    fs::write(&file, &v3).unwrap();
    assert_eq!(hashed_by_add(&w, &repo, "m.safetensors"), v3.len() as u64);
    assert_eq!(staged(&repo).as_bytes(), &pointer_bytes(&v3)[..]);

    // Damaged states are ignored, not trusted.
    for entry in fs::read_dir(repo.join(".git/model/prefix-states")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(&path, bytes).unwrap();
    }
    fs::write(&file, &v2).unwrap();
    assert_eq!(hashed_by_add(&w, &repo, "m.safetensors"), v2.len() as u64);
    assert_eq!(staged(&repo).as_bytes(), &pointer_bytes(&v2)[..]);

    // The server checks every oid when it registers the files.
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let clone = w.clone("clone");
    assert!(fs::read(clone.join("m.safetensors")).unwrap() == v2);

    // A checkout (smudge) and `git model pull` keep the states too: a fine-tune of the
    // last layers in a clone is hashed from where it differs.
    let mut tuned = [0u64; 12];
    tuned[11] = 7;
    let v4 = safetensors(5, 1 << 20, &tuned);
    let lazy = w.clone_pointers_only("lazy");
    w.env.git(&lazy, &["model", "pull"]);
    for c in [&clone, &lazy] {
        fs::write(c.join("m.safetensors"), &v4).unwrap();
        let hashed = hashed_by_add(&w, c, "m.safetensors");
        assert!(hashed < 3 << 20, "{hashed} of {} bytes hashed", v4.len());
        assert_eq!(staged(c).as_bytes(), &pointer_bytes(&v4)[..]);
    }
}

#[test]
fn a_git_add_killed_while_small_files_share_a_pack_loses_nothing() {
    let w = World::new();
    let repo = w.work_repo("work");
    // 600 small files: the filter shares packs among them, journaled until written.
    let files: Vec<(String, Vec<u8>)> = (0..600u64)
        .map(|i| {
            let data = safetensors(1000 + i, 16 << 10, &[0; 4]);
            (format!("d/f{i:03}.safetensors"), data)
        })
        .collect();
    for (rel, data) in &files {
        let path = repo.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    // Kill the filter process as soon as its journal holds records: its pid is in the
    // journal's name.
    let journal_dir = repo.join(".git/model/journal");
    let mut add = w.env.cmd("git", &repo).args(["add", "d"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let killed = loop {
        let found = fs::read_dir(&journal_dir).ok().and_then(|rd| {
            rd.flatten()
                .find(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .map(|e| e.file_name().to_string_lossy().into_owned())
        });
        if let Some(name) = found {
            let pid = name.split('-').next().unwrap().to_string();
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap();
            assert!(status.success(), "kill {pid}");
            break name;
        }
        assert!(
            add.try_wait().unwrap().is_none(),
            "git add finished before its journal was seen"
        );
        assert!(std::time::Instant::now() < deadline, "no journal appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let status = add.wait().unwrap();
    assert!(!status.success(), "git add survived the loss of its filter");
    assert!(
        journal_dir.join(&killed).exists(),
        "the journal outlives its process"
    );

    // The next command recovers the journal into a pack; the add then completes.
    w.env.git(&repo, &["add", "d"]);
    assert!(
        !journal_dir.join(&killed).exists(),
        "the dead process's journal was not recovered"
    );
    w.env.git(&repo, &["commit", "-q", "-m", "small files"]);
    w.env.git(&repo, &["model", "fsck"]);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let clone = w.clone("clone");
    for (rel, data) in &files {
        assert!(fs::read(clone.join(rel)).unwrap() == *data, "{rel}");
    }
    let mut packs = Vec::new();
    crate::collect(&repo.join(".git/model/packs"), &mut packs);
    assert!(
        packs.len() < 20,
        "{} packs for 600 small files",
        packs.len()
    );
}

fn server_gc_removes_a_deleted_repository_packs_and_keeps_the_rest(w: World) {
    let repo = w.work_repo("work");
    let keep = model(10, 3);
    w.commit_file(&repo, "keep.safetensors", &keep, "keep");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    // A second repository with content of its own.
    let scratch_url = w.server.repo_url("acme", "scratch");
    w.env.git(&repo, &["config", "model.url", &scratch_url]);
    let tmp = model(11, 4);
    w.commit_file(&repo, "tmp.safetensors", &tmp, "tmp");
    w.env.git(&repo, &["model", "push"]);
    w.env.git(&repo, &["config", "--unset", "model.url"]);
    let before = w.stored_bytes();

    let server = |args: &[&str]| {
        let out = w.server_command(args).output().unwrap();
        crate::check_ok(&format!("git-model-server {args:?}"), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    server(&["delete-repo", "acme/scratch"]);
    // First pass: candidates only; the grace period protects uploads in progress.
    let out = server(&["gc", "--grace-hours", "0"]);
    assert!(out.contains("deleted 0"), "{out}");
    let out = server(&["gc", "--grace-hours", "0", "--dry-run"]);
    assert!(
        out.contains("would delete") && !out.contains("would delete 0"),
        "{out}"
    );
    let out = server(&["gc", "--grace-hours", "0"]);
    assert!(!out.contains("deleted 0"), "{out}");
    let after = w.stored_bytes();
    assert!(
        after + (tmp.len() as u64) / 2 < before,
        "before {before}, after {after}"
    );

    // The other repository is whole: a fresh clone through a restarted server.
    let mut w = w;
    w.server.kill();
    let restarted = w.start_server(&[]);
    let other = w.clone_pointers_only("other");
    w.env.git(
        &other,
        &["config", "model.url", &restarted.repo_url("acme", "vision")],
    );
    w.env.git(&other, &["model", "pull"]);
    assert!(fs::read(other.join("keep.safetensors")).unwrap() == keep);
    w.server = restarted;
}

fn metrics_count_requests_and_chunks(w: World) {
    let repo = w.work_repo("work");
    w.commit_file(&repo, "m.safetensors", &model(12, 2), "m");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let text = ureq::get(&format!("{}/metrics", w.server.url))
        .call()
        .expect("GET /metrics")
        .into_string()
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    // The push asked which files and chunks exist, sent a pack and registered the file.
    assert!(
        value("gitmodel_requests_total{class=\"2xx\"}") >= 4.0,
        "{text}"
    );
    assert!(value("gitmodel_index_chunks") >= 30.0, "{text}");
    assert!(value("gitmodel_request_seconds_total") > 0.0, "{text}");
}
