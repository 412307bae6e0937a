//! Git LFS compatibility: the real `git lfs` client (Debian's `git-lfs` package) against
//! the real server, over loopback HTTP. These tests fail, not skip, without git-lfs: it is
//! installed by the CI script (`apt-get install git-lfs`).

use std::fs;
use std::path::{Path, PathBuf};

use gitmodel_format::{Oid, Pointer};
use gitmodel_testkit::{dir_size, safetensors};

use crate::{stored_blob, World};

const MIB: usize = 1 << 20;

pub(crate) fn require_git_lfs(w: &World) {
    let out = w.env.git_output(w.env.home.path(), &["lfs", "version"]);
    assert!(
        out.status.success(),
        "these tests need the git-lfs client (`apt-get install git-lfs`): `git lfs version` \
         failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn assert_same(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got.len() == want.len() && got == want,
        "{}: {} bytes differ from the expected {} bytes",
        path.display(),
        got.len(),
        want.len()
    );
}

/// Runs git, panics with its output unless it succeeds; returns stdout and stderr.
pub(crate) fn git(w: &World, dir: &Path, args: &[&str]) -> (String, String) {
    let out = w.env.git_output(dir, args);
    crate::check_ok(
        &format!("git {} (in {})", args.join(" "), dir.display()),
        &out,
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The LFS endpoint of repository `ns/repo` on the test server.
pub(crate) fn lfs_url(w: &World, ns: &str, repo: &str) -> String {
    format!("{}.git/info/lfs", w.server.repo_url(ns, repo))
}

/// A repository using plain Git LFS (no git-model filter): `*.bin` tracked, the server in
/// a committed `.lfsconfig`, pushing to the bare origin.
pub(crate) fn lfs_repo(w: &World, name: &str) -> PathBuf {
    let home = w.env.home.path();
    git(w, home, &["init", "-q", "-b", "main", name]);
    let dir = w.env.path(name);
    git(w, &dir, &["lfs", "install", "--local"]);
    git(w, &dir, &["lfs", "track", "*.bin"]);
    let url = lfs_url(w, "acme", "lfsrepo");
    git(w, &dir, &["config", "-f", ".lfsconfig", "lfs.url", &url]);
    git(
        w,
        &dir,
        &["remote", "add", "origin", w.origin.to_str().unwrap()],
    );
    git(w, &dir, &["add", ".gitattributes", ".lfsconfig"]);
    git(w, &dir, &["commit", "-q", "-m", "set up git lfs"]);
    dir
}

/// A clone of origin whose checkout goes through git-lfs's smudge filter.
pub(crate) fn lfs_clone(w: &World, name: &str) -> PathBuf {
    let home = w.env.home.path();
    git(
        w,
        home,
        &[
            "clone",
            "-q",
            "--no-checkout",
            w.origin.to_str().unwrap(),
            name,
        ],
    );
    let dir = w.env.path(name);
    git(w, &dir, &["lfs", "install", "--local"]);
    git(w, &dir, &["reset", "-q", "--hard", "HEAD"]);
    dir
}

fn model(tensors: usize) -> Vec<u8> {
    safetensors(11, MIB, &vec![0; tensors])
}

/// The same model with a small region overwritten.
fn edited(v1: &[u8]) -> Vec<u8> {
    let mut v2 = v1.to_vec();
    let at = v2.len() / 2 + 12_345;
    v2[at..at + 1000].fill(0x5a);
    v2
}

#[test]
fn git_lfs_push_clone_pull_dedup() {
    let w = World::new();
    require_git_lfs(&w);
    let repo = lfs_repo(&w, "work");
    let v1 = model(6);
    w.commit_file(&repo, "weights.bin", &v1, "v1");
    let blob = stored_blob(&w.env, &repo, "HEAD", "weights.bin");
    let pointer = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_eq!(
        blob.as_bytes(),
        &pointer[..],
        "git stores a Git LFS pointer"
    );

    // git-lfs's pre-push hook: batch, then PUT to the server.
    let (_, stderr) = git(&w, &repo, &["push", "origin", "main"]);
    let oid = Oid::of(&v1).to_hex();
    let recipe = w.server.data_dir.join(format!(
        "repos/acme/lfsrepo/files/{}/{oid}.recipe",
        &oid[..2]
    ));
    assert!(
        recipe.is_file(),
        "no recipe after the push; git said: {stderr}"
    );
    let after_v1 = dir_size(&w.server.data_dir);

    // A fresh clone: smudge downloads through the batch API and GET.
    let other = lfs_clone(&w, "other");
    assert_same(&other.join("weights.bin"), &v1);
    assert_eq!(git(&w, &other, &["status", "--porcelain"]).0, "");

    // A second version differing in a small region: the server stores little.
    let v2 = edited(&v1);
    w.commit_file(&repo, "weights.bin", &v2, "v2");
    git(&w, &repo, &["push", "-q", "origin", "main"]);
    let grown = dir_size(&w.server.data_dir) - after_v1;
    assert!(
        grown < (v2.len() / 10) as u64,
        "the second version stored {grown} new bytes for a {}-byte file",
        v2.len()
    );
    git(&w, &other, &["pull", "-q", "origin", "main"]);
    assert_same(&other.join("weights.bin"), &v2);

    // Another fresh clone gets the latest version, and the old one on checkout.
    let third = lfs_clone(&w, "third");
    assert_same(&third.join("weights.bin"), &v2);
    git(
        &w,
        &third,
        &["checkout", "-q", "HEAD~1", "--", "weights.bin"],
    );
    assert_same(&third.join("weights.bin"), &v1);
}

#[test]
fn git_lfs_lock_list_unlock() {
    let w = World::new();
    require_git_lfs(&w);
    let repo = lfs_repo(&w, "work");
    w.commit_file(&repo, "asset.bin", &model(1), "asset");
    git(&w, &repo, &["push", "-q", "origin", "main"]);

    let (out, _) = git(&w, &repo, &["lfs", "lock", "asset.bin"]);
    assert!(out.contains("Locked asset.bin"), "{out}");
    let out = w.env.git_output(&repo, &["lfs", "lock", "asset.bin"]);
    assert!(!out.status.success(), "locking twice must fail");

    let (out, _) = git(&w, &repo, &["lfs", "locks"]);
    assert!(
        out.contains("asset.bin") && out.contains("anonymous"),
        "{out}"
    );
    let (json, _) = git(
        &w,
        &repo,
        &["lfs", "locks", "--json", "--path", "asset.bin"],
    );
    let locks: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(locks[0]["path"], "asset.bin", "{json}");
    // Locks are on the server, so another clone sees them.
    let other = lfs_clone(&w, "other");
    let (out, _) = git(&w, &other, &["lfs", "locks"]);
    assert!(out.contains("asset.bin"), "{out}");

    // Pushing with our own lock in place goes through lock verification.
    w.commit_file(&repo, "asset.bin", &edited(&model(1)), "edit");
    git(&w, &repo, &["push", "-q", "origin", "main"]);

    let (out, _) = git(&w, &repo, &["lfs", "unlock", "asset.bin"]);
    assert!(out.contains("Unlocked asset.bin"), "{out}");
    let (out, _) = git(&w, &repo, &["lfs", "locks"]);
    assert!(!out.contains("asset.bin"), "{out}");
}

#[test]
fn git_model_push_is_fetchable_with_git_lfs() {
    let w = World::new();
    require_git_lfs(&w);
    // Pushed with git-model's own filter and protocol, to acme/vision.
    let repo = w.work_repo("work");
    let v1 = safetensors(3, MIB, &[0, 0, 0, 0]);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    git(&w, &repo, &["push", "-q", "origin", "main"]);

    // A clone that leaves pointers (same pointer format as Git LFS) in place ...
    let home = w.env.home.path();
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "lazy"],
    );
    crate::check_ok("clone with GIT_MODEL_SKIP_SMUDGE", &out);
    let lazy = w.env.path("lazy");
    let pointer = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_same(&lazy.join("model.safetensors"), &pointer);

    // ... fetched by git-lfs from the same repository's LFS endpoint. The clone keeps
    // git-model's hooks (--skip-repo) and filter; git-lfs only downloads.
    git(&w, &lazy, &["lfs", "install", "--local", "--skip-repo"]);
    git(
        &w,
        &lazy,
        &["config", "lfs.url", &lfs_url(&w, "acme", "vision")],
    );
    git(&w, &lazy, &["lfs", "fetch", "origin", "main"]);
    let oid = Oid::of(&v1).to_hex();
    let object = lazy.join(format!(
        ".git/lfs/objects/{}/{}/{oid}",
        &oid[..2],
        &oid[2..4]
    ));
    assert_same(&object, &v1);

    // And git-lfs's smudge turns the pointer into the content.
    let out = w
        .env
        .cmd("git", &lazy)
        .args(["lfs", "smudge", "model.safetensors"])
        .stdin(fs::File::open(lazy.join("model.safetensors")).unwrap())
        .output()
        .unwrap();
    crate::check_ok("git lfs smudge", &out);
    assert!(out.stdout == v1, "smudge gave {} bytes", out.stdout.len());
}

#[test]
fn git_lfs_resumes_an_interrupted_download_with_range() {
    let w = World::new();
    require_git_lfs(&w);
    let repo = lfs_repo(&w, "work");
    let v1 = model(4);
    w.commit_file(&repo, "weights.bin", &v1, "v1");
    git(&w, &repo, &["push", "-q", "origin", "main"]);

    // A clone whose download of the object was cut after 1 MiB and a bit.
    let home = w.env.home.path();
    let out = w.env.git_with(
        home,
        &[("GIT_LFS_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "other"],
    );
    crate::check_ok("clone with GIT_LFS_SKIP_SMUDGE", &out);
    let other = w.env.path("other");
    git(&w, &other, &["lfs", "install", "--local"]);
    let oid = Oid::of(&v1).to_hex();
    let incomplete = other.join(".git/lfs/incomplete");
    fs::create_dir_all(&incomplete).unwrap();
    // Where git-lfs keeps a partial download: `<oid>.part` since 3.0, `<oid>.tmp` before.
    for suffix in ["part", "tmp"] {
        fs::write(incomplete.join(format!("{oid}.{suffix}")), &v1[..MIB + 777]).unwrap();
    }

    let out = w
        .env
        .git_with(&other, &[("GIT_TRACE", "1")], &["lfs", "pull"]);
    crate::check_ok("git lfs pull", &out);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace.contains(&format!(
            "Attempting to resume download of \"{oid}\" from byte {}",
            MIB + 777
        )) && trace.contains("server accepted resume download request"),
        "git-lfs did not resume with a range request:\n{trace}"
    );
    assert_same(&other.join("weights.bin"), &v1);
    let object = other.join(format!(
        ".git/lfs/objects/{}/{}/{oid}",
        &oid[..2],
        &oid[2..4]
    ));
    assert_same(&object, &v1);
}
