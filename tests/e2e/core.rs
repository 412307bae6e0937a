//! The core story: track, add, commit, push, clone, pull; dedup; faults.
//!
//! Every test runs twice: `core::local::<name>` with the server on a local directory and
//! `core::s3::<name>` with it on a real Garage (see `crate::backend` for the gate).

use std::fs;

use gitmodel_format::{Oid, Pointer};
use gitmodel_testkit::{check, dir_size, safetensors};

use crate::{stored_blob, World};

const MIB: usize = 1 << 20;

on_each_backend!(
    push_clone_pull_and_checkout_old_version,
    pointer_only_clone_then_model_pull,
    one_tensor_edit_stores_little,
    push_fails_cleanly_when_the_server_is_down_then_completes,
    missing_content_leaves_pointer_with_warning_and_pull_fetches_later,
    corrupt_pack_on_server_is_detected_and_nothing_is_written,
    existing_pre_push_hook_is_chained,
    bad_configuration_gives_clear_errors,
    install_uninstall_env_and_single_shot_filters,
    many_files_and_nested_paths_round_trip,
    scattered_row_edits_in_a_csv_store_little,
);

fn model(mib: usize, edited: &[usize]) -> Vec<u8> {
    let mut versions = vec![0u64; mib];
    for &i in edited {
        versions[i] += 1;
    }
    safetensors(1, MIB, &versions)
}

fn assert_same(path: &std::path::Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got.len() == want.len() && got == want,
        "{}: {} bytes differ from the expected {} bytes",
        path.display(),
        got.len(),
        want.len()
    );
}

fn push_clone_pull_and_checkout_old_version(w: World) {
    let repo = w.work_repo("work");
    let v1 = model(8, &[]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");

    // git stores a byte-exact LFS pointer.
    let blob = stored_blob(&w.env, &repo, "HEAD", "model.safetensors");
    let expected = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_eq!(blob.as_bytes(), &expected[..]);
    // The working tree keeps the content and git sees it as clean.
    assert_same(&repo.join("model.safetensors"), &v1);
    assert_eq!(w.env.git(&repo, &["status", "--porcelain"]), "");

    let out = w.env.git_output(&repo, &["push", "-q", "origin", "main"]);
    crate::check_ok("git push", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uploaded 1"), "push said: {stderr}");

    // A fresh clone materialises the content through the smudge filter.
    let other = w.clone("other");
    assert_same(&other.join("model.safetensors"), &v1);
    assert_eq!(w.env.git(&other, &["status", "--porcelain"]), "");

    // A second version, pulled into the existing clone.
    let v2 = model(8, &[3]);
    w.commit_file(&repo, "model.safetensors", &v2, "v2");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    w.env.git(&other, &["pull", "-q", "origin", "main"]);
    assert_same(&other.join("model.safetensors"), &v2);

    // Checking out the older version brings back its bytes.
    w.env.git(
        &other,
        &["checkout", "-q", "HEAD~1", "--", "model.safetensors"],
    );
    assert_same(&other.join("model.safetensors"), &v1);
    w.env.git(
        &other,
        &["checkout", "-q", "HEAD", "--", "model.safetensors"],
    );
    assert_same(&other.join("model.safetensors"), &v2);
}

fn pointer_only_clone_then_model_pull(w: World) {
    let repo = w.work_repo("work");
    let v1 = model(4, &[]);
    w.commit_file(&repo, "weights/a.safetensors", &v1, "v1");
    w.commit_file(&repo, "weights/empty.safetensors", b"", "empty");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    let lazy = w.clone_pointers_only("lazy");
    let pointer = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_same(&lazy.join("weights/a.safetensors"), &pointer);
    assert_same(&lazy.join("weights/empty.safetensors"), b"");
    let ls = w.env.git(&lazy, &["model", "ls-files"]);
    assert!(ls.contains("- weights/a.safetensors"), "{ls}");

    w.env.git(&lazy, &["model", "pull"]);
    assert_same(&lazy.join("weights/a.safetensors"), &v1);
    assert_eq!(w.env.git(&lazy, &["status", "--porcelain"]), "");

    // The next version the same way: the index entries `git model pull` leaves are clean
    // for git, not racily clean, so the next command does not read the files through the
    // clean filter again (GIT_TRACE names every filter git starts).
    let v2 = model(4, &[1]);
    w.commit_file(&repo, "weights/a.safetensors", &v2, "v2");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let skip = [("GIT_MODEL_SKIP_SMUDGE", "1")];
    let fetched = w
        .env
        .git_with(&lazy, &skip, &["pull", "-q", "origin", "main"]);
    check("git pull", &lazy, &fetched);
    // Into the next second, so that the files git itself just wrote (pointers) are not
    // racily clean for it: only a file `git model pull` writes could be.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.env.git(&lazy, &["model", "pull"]);
    assert_same(&lazy.join("weights/a.safetensors"), &v2);
    let status = w
        .env
        .git_with(&lazy, &[("GIT_TRACE", "1")], &["status", "--porcelain"]);
    check("git status", &lazy, &status);
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");
    let trace = String::from_utf8_lossy(&status.stderr);
    assert!(
        !trace.contains("filter-process"),
        "git status re-read the pulled files through the filter:\n{trace}"
    );
    let ls = w.env.git(&lazy, &["model", "ls-files"]);
    assert!(ls.contains("* weights/a.safetensors"), "{ls}");
}

fn one_tensor_edit_stores_little(w: World) {
    let repo = w.work_repo("work");
    let v1 = model(64, &[]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let after_v1 = w.stored_bytes();
    assert!(after_v1 > 32 * MIB as u64, "v1 stored {after_v1} bytes");

    let v2 = model(64, &[17]);
    w.commit_file(&repo, "model.safetensors", &v2, "v2");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let grown = w.stored_bytes() - after_v1;
    assert!(
        grown < (v2.len() / 10) as u64,
        "second version stored {grown} new bytes for a {}-byte file",
        v2.len()
    );
    // The local store did not keep the second version whole either.
    let local = dir_size(&repo.join(".git/model"));
    assert!(
        local < after_v1 + (v2.len() / 10) as u64,
        "local store {local} bytes"
    );

    let other = w.clone("other");
    assert_same(&other.join("model.safetensors"), &v2);
}

fn push_fails_cleanly_when_the_server_is_down_then_completes(w: World) {
    let repo = w.work_repo("work");
    // A port nothing listens on: bind one, learn it, release it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/acme/vision", l.local_addr().unwrap())
    };
    w.env.git(&repo, &["config", "model.url", &dead]);
    let v1 = model(2, &[]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    let out = w.env.git_output(&repo, &["push", "-q", "origin", "main"]);
    assert!(
        !out.status.success(),
        "push must fail when content cannot be uploaded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");
    // The pointer was not published.
    let remote_refs = w.env.git(&w.origin, &["for-each-ref"]);
    assert!(!remote_refs.contains("refs/heads/main"), "{remote_refs}");

    w.env.git(&repo, &["config", "--unset", "model.url"]);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let other = w.clone("other");
    assert_same(&other.join("model.safetensors"), &v1);
}

fn missing_content_leaves_pointer_with_warning_and_pull_fetches_later(w: World) {
    let repo = w.work_repo("work");
    let v1 = model(2, &[]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    // Bypass the hook: git publishes pointers whose content the server lacks.
    w.env
        .git(&repo, &["push", "-q", "--no-verify", "origin", "main"]);

    let home = w.env.home.path();
    let out = w
        .env
        .git_output(home, &["clone", "-q", w.origin.to_str().unwrap(), "other"]);
    crate::check_ok("clone", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("left as a pointer"),
        "{stderr}"
    );
    let other = w.env.path("other");
    let pointer = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_same(&other.join("model.safetensors"), &pointer);

    // Once the content is uploaded, pull brings it.
    w.env.git(&repo, &["model", "push"]);
    w.env.git(&other, &["model", "pull"]);
    assert_same(&other.join("model.safetensors"), &v1);
    assert_eq!(w.env.git(&other, &["status", "--porcelain"]), "");
}

fn corrupt_pack_on_server_is_detected_and_nothing_is_written(w: World) {
    let repo = w.work_repo("work");
    let v1 = model(2, &[]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    // Flip a byte in the middle of every pack the server stored (behind its back).
    assert!(w.damage_packs() > 0);

    let other = w.clone_pointers_only("other");
    let out = w.env.git_output(&other, &["model", "pull"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corrupt") || stderr.contains("hashes to"),
        "{stderr}"
    );
    let pointer = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_same(&other.join("model.safetensors"), &pointer);
}

fn existing_pre_push_hook_is_chained(w: World) {
    let dir = w.env.path("hooked");
    w.env
        .git(w.env.home.path(), &["init", "-q", "-b", "main", "hooked"]);
    let hook = dir.join(".git/hooks/pre-push");
    fs::write(&hook, "#!/bin/sh\necho chained-hook-ran >&2\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    w.env.git(&dir, &["model", "install"]);
    w.env.git(
        &dir,
        &["remote", "add", "origin", w.origin.to_str().unwrap()],
    );
    w.env
        .git(&dir, &["commit", "-q", "--allow-empty", "-m", "x"]);
    let out = w.env.git_output(&dir, &["push", "origin", "main"]);
    crate::check_ok("push", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("chained-hook-ran"));
}

fn bad_configuration_gives_clear_errors(w: World) {
    let repo = w.work_repo("work");
    w.env
        .git(&repo, &["config", "model.url", "ftp://example/acme/vision"]);
    w.commit_file(&repo, "model.safetensors", &model(1, &[]), "v1");
    let out = w.env.git_output(&repo, &["model", "push"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad model.url"), "{stderr}");

    // A repository name the server refuses.
    let bad = format!("{}/acme/..hidden", w.server.url);
    w.env.git(&repo, &["config", "model.url", &bad]);
    let out = w.env.git_output(&repo, &["model", "push"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).lines().count() <= 3);

    let env = w.env.git(&repo, &["model", "env"]);
    assert!(
        env.contains("model.url = ") && env.contains("(from git config)"),
        "{env}"
    );
}

fn install_uninstall_env_and_single_shot_filters(w: World) {
    let repo = w.work_repo("work");
    let global = fs::read_to_string(w.env.path(".gitconfig")).unwrap();
    assert!(
        global.contains("process = git-model filter-process"),
        "{global}"
    );
    assert!(global.contains("required = true"), "{global}");
    assert!(repo.join(".git/hooks/pre-push").exists());

    // Precedence: GIT_MODEL_URL > git config > .gitmodel.
    let env = w.env.git(&repo, &["model", "env"]);
    assert!(
        env.contains(&format!(
            "model.url = {} (from .gitmodel (working tree))",
            w.model_url
        )),
        "{env}"
    );
    w.env
        .git(&repo, &["config", "model.url", "http://127.0.0.1:1/a/b"]);
    let env = w.env.git(&repo, &["model", "env"]);
    assert!(
        env.contains("model.url = http://127.0.0.1:1/a/b (from git config)"),
        "{env}"
    );
    let out = w.env.git_with(
        &repo,
        &[("GIT_MODEL_URL", "http://127.0.0.1:2/c/d")],
        &["model", "env"],
    );
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.contains("(from environment GIT_MODEL_URL)"), "{env}");
    w.env.git(&repo, &["config", "--unset", "model.url"]);

    // The single-shot filters agree with the long-running process.
    let data = model(1, &[]);
    fs::write(repo.join("a.safetensors"), &data).unwrap();
    let mut clean = w.env.cmd("git-model", &repo);
    clean.args(["clean", "--", "a.safetensors"]);
    clean.stdin(fs::File::open(repo.join("a.safetensors")).unwrap());
    let out = clean.output().unwrap();
    crate::check_ok("git-model clean", &out);
    let pointer = Pointer::new(Oid::of(&data), data.len() as u64).to_bytes();
    assert_eq!(out.stdout, pointer);
    let ptr_file = repo.join("ptr");
    fs::write(&ptr_file, &pointer).unwrap();
    let mut smudge = w.env.cmd("git-model", &repo);
    smudge.args(["smudge", "--", "a.safetensors"]);
    smudge.stdin(fs::File::open(&ptr_file).unwrap());
    let out = smudge.output().unwrap();
    crate::check_ok("git-model smudge", &out);
    assert!(out.stdout == data);
    // Content that is not a pointer passes through smudge untouched.
    let mut smudge = w.env.cmd("git-model", &repo);
    smudge.args(["smudge", "--", "x"]);
    smudge.stdin(fs::File::open(repo.join(".gitattributes")).unwrap());
    let out = smudge.output().unwrap();
    assert_eq!(out.stdout, fs::read(repo.join(".gitattributes")).unwrap());

    // Uninstall removes the hook and the filter config.
    w.env.git(&repo, &["model", "uninstall"]);
    assert!(!repo.join(".git/hooks/pre-push").exists());
    let global = fs::read_to_string(w.env.path(".gitconfig")).unwrap();
    assert!(!global.contains("filter-process"), "{global}");
}

fn many_files_and_nested_paths_round_trip(w: World) {
    let repo = w.work_repo("work");
    let mut files = Vec::new();
    for i in 0..40 {
        let data = safetensors(i, 4096 + (i as usize) * 1000, &[0, 1]);
        let rel = format!("models/run {i}/ckpt.safetensors");
        let path = repo.join(&rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &data).unwrap();
        files.push((rel, data));
    }
    w.env.git(&repo, &["add", "."]);
    w.env.git(&repo, &["commit", "-q", "-m", "many"]);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let other = w.clone("other");
    for (rel, data) in &files {
        assert_same(&other.join(rel), data);
    }
    assert_eq!(w.env.git(&other, &["status", "--porcelain"]), "");
}

fn scattered_row_edits_in_a_csv_store_little(w: World) {
    let repo = w.work_repo("work");
    w.env.git(&repo, &["model", "track", "*.csv"]);
    w.env.git(&repo, &["add", ".gitattributes"]);
    let mut rows: Vec<String> = (0..60_000)
        .map(|i| {
            format!(
                "{i},{},{:.6},label{}",
                i * 7919 % 10007,
                (i as f64).sin(),
                i % 13
            )
        })
        .collect();
    let v1 = rows.join("\n").into_bytes();
    w.commit_file(&repo, "data/train.csv", &v1, "v1");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let after_v1 = w.stored_bytes();
    for i in (0..rows.len()).step_by(3_000) {
        rows[i] = format!("{i},edited,0.0,fixed");
    }
    let v2 = rows.join("\n").into_bytes();
    w.commit_file(&repo, "data/train.csv", &v2, "v2: 20 rows fixed");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let grown = w.stored_bytes() - after_v1;
    assert!(
        grown < (v2.len() / 10) as u64,
        "20 scattered row edits stored {grown} bytes anew for a {}-byte table",
        v2.len()
    );
    let other = w.clone("other");
    assert_same(&other.join("data/train.csv"), &v2);
}
