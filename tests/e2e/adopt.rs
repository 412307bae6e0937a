//! Adopting git-model in Git LFS repositories, with the real git-lfs client: git-model as
//! the `filter=lfs` driver, as a git-lfs custom transfer agent, and `git model migrate`.

use std::fs;

use gitmodel_testkit::{dir_size, safetensors};

use crate::lfs::{assert_same, git, lfs_clone, lfs_repo, lfs_url, require_git_lfs};
use crate::World;

fn model(seed: u64, tensors: usize, edited: &[usize]) -> Vec<u8> {
    let mut v = vec![0u64; tensors];
    for &i in edited {
        v[i] += 1;
    }
    safetensors(seed, 1 << 20, &v)
}

#[test]
fn install_lfs_drives_filter_lfs_without_rewriting_history() {
    let w = World::new();
    require_git_lfs(&w);
    let repo = lfs_repo(&w, "legacy");
    let v1 = model(21, 16, &[]);
    fs::write(repo.join("model.bin"), &v1).unwrap();
    git(&w, &repo, &["add", "model.bin"]);
    git(&w, &repo, &["commit", "-q", "-m", "v1 with git-lfs"]);
    git(&w, &repo, &["push", "-q", "origin", "main"]);

    // A git-lfs clone switches to git-model: v1 is read from .git/lfs/objects.
    let clone = lfs_clone(&w, "switched");
    let (out, _) = git(&w, &clone, &["model", "install", "--lfs"]);
    assert!(out.contains("filter=lfs driver"), "{out}");
    let (env, _) = git(&w, &clone, &["model", "env"]);
    assert!(
        env.contains(&format!(
            "model.url = {}",
            w.server.repo_url("acme", "lfsrepo")
        )),
        "{env}"
    );
    let before = dir_size(&w.server.data_dir);
    let v2 = model(21, 16, &[2]);
    fs::write(clone.join("model.bin"), &v2).unwrap();
    git(&w, &clone, &["add", "model.bin"]);
    git(&w, &clone, &["commit", "-q", "-m", "v2 with git-model"]);
    let (_, err) = git(&w, &clone, &["push", "origin", "main"]);
    assert!(
        err.contains("deduplicated"),
        "git-model's hook uploaded: {err}"
    );
    let grown = dir_size(&w.server.data_dir) - before;
    assert!(
        grown < (v2.len() / 10) as u64,
        "v2 stored {grown} bytes anew"
    );

    // A plain git-lfs clone gets v2 from the same server through the LFS API.
    let plain = lfs_clone(&w, "plain");
    assert_same(&plain.join("model.bin"), &v2);
    git(&w, &plain, &["checkout", "-q", "HEAD~1", "--", "model.bin"]);
    assert_same(&plain.join("model.bin"), &v1);
    git(&w, &plain, &["checkout", "-q", "HEAD", "--", "model.bin"]);

    // And the other way: git-lfs pushes v3, the git-model clone pulls it.
    let v3 = model(21, 16, &[2, 9]);
    fs::write(plain.join("model.bin"), &v3).unwrap();
    git(&w, &plain, &["add", "model.bin"]);
    git(&w, &plain, &["commit", "-q", "-m", "v3 with git-lfs"]);
    git(&w, &plain, &["push", "-q", "origin", "main"]);
    git(&w, &clone, &["pull", "-q", "origin", "main"]);
    assert_same(&clone.join("model.bin"), &v3);
    assert_eq!(git(&w, &clone, &["status", "--porcelain"]).0, "");
}

#[test]
fn git_lfs_push_and_fetch_include() {
    let w = World::new();
    require_git_lfs(&w);
    let repo = lfs_repo(&w, "inc");
    let a = model(24, 2, &[]);
    let b = model(25, 2, &[]);
    fs::create_dir_all(repo.join("a")).unwrap();
    fs::create_dir_all(repo.join("b")).unwrap();
    fs::write(repo.join("a/x.bin"), &a).unwrap();
    fs::write(repo.join("b/y.bin"), &b).unwrap();
    git(&w, &repo, &["add", "."]);
    git(&w, &repo, &["commit", "-q", "-m", "two"]);
    // Objects first with `git lfs push`, then the commits without the hook.
    git(&w, &repo, &["lfs", "push", "origin", "main"]);
    git(&w, &repo, &["push", "-q", "--no-verify", "origin", "main"]);

    let home = w.env.home.path();
    let out = w.env.git_with(
        home,
        &[("GIT_LFS_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "inc-clone"],
    );
    crate::check_ok("clone", &out);
    let clone = w.env.path("inc-clone");
    git(&w, &clone, &["lfs", "install", "--local"]);
    git(
        &w,
        &clone,
        &["lfs", "fetch", "--include", "a/*", "origin", "main"],
    );
    git(&w, &clone, &["lfs", "checkout"]);
    assert_same(&clone.join("a/x.bin"), &a);
    let y = fs::read(clone.join("b/y.bin")).unwrap();
    assert!(
        y.starts_with(b"version https://git-lfs.github.com/spec/v1"),
        "b/ was not fetched"
    );
    git(&w, &clone, &["lfs", "pull"]);
    assert_same(&clone.join("b/y.bin"), &b);
}

#[test]
fn custom_transfer_agent_dedups_uploads_and_downloads() {
    let w = World::new();
    require_git_lfs(&w);
    let home = w.env.home.path().to_path_buf();
    for (k, v) in [
        ("lfs.standalonetransferagent", "git-model"),
        ("lfs.customtransfer.git-model.path", "git-model"),
        ("lfs.customtransfer.git-model.args", "lfs-agent"),
    ] {
        git(&w, &home, &["config", "--global", k, v]);
    }
    let repo = lfs_repo(&w, "agent");
    let v1 = model(22, 16, &[]);
    fs::write(repo.join("model.bin"), &v1).unwrap();
    git(&w, &repo, &["add", "model.bin"]);
    git(&w, &repo, &["commit", "-q", "-m", "v1"]);
    git(&w, &repo, &["push", "-q", "origin", "main"]);
    let after_v1 = dir_size(&w.server.data_dir);
    let v2 = model(22, 16, &[7]);
    fs::write(repo.join("model.bin"), &v2).unwrap();
    git(&w, &repo, &["add", "model.bin"]);
    git(&w, &repo, &["commit", "-q", "-m", "v2"]);
    git(&w, &repo, &["push", "-q", "origin", "main"]);
    let grown = dir_size(&w.server.data_dir) - after_v1;
    assert!(
        grown < (v2.len() / 10) as u64,
        "v2 upload stored {grown} bytes anew"
    );

    let clone = lfs_clone(&w, "agent-clone");
    assert_same(&clone.join("model.bin"), &v2);
    git(&w, &clone, &["checkout", "-q", "HEAD~1", "--", "model.bin"]);
    assert_same(&clone.join("model.bin"), &v1);
    // The agent kept chunks once: both versions cost little more than one.
    let chunks = dir_size(&clone.join(".git/model/packs"));
    assert!(
        chunks < (v1.len() + v1.len() / 5) as u64,
        "clone's chunk store {chunks} bytes"
    );
}

#[test]
fn migrate_moves_lfs_objects_resumably() {
    let w = World::new();
    require_git_lfs(&w);
    let repo = lfs_repo(&w, "old");
    let a = model(23, 4, &[]);
    let b = model(23, 4, &[1]);
    fs::write(repo.join("a.bin"), &a).unwrap();
    git(&w, &repo, &["add", "a.bin"]);
    git(&w, &repo, &["commit", "-q", "-m", "a"]);
    fs::write(repo.join("a.bin"), &b).unwrap();
    git(&w, &repo, &["add", "a.bin"]);
    git(&w, &repo, &["commit", "-q", "-m", "b"]);
    git(&w, &repo, &["push", "-q", "origin", "main"]);

    // A fresh clone without the content, migrating into a git-model repository.
    let home = w.env.home.path();
    git(
        &w,
        home,
        &[
            "clone",
            "-q",
            "--no-checkout",
            w.origin.to_str().unwrap(),
            "mig",
        ],
    );
    let mig = w.env.path("mig");
    git(&w, &mig, &["config", "model.url", &w.model_url]);
    assert!(lfs_url(&w, "acme", "lfsrepo").ends_with("/info/lfs"));
    let before = dir_size(&w.server.data_dir);
    let (out, _) = git(&w, &mig, &["model", "migrate"]);
    assert!(out.contains("migrated 2 object(s)"), "{out}");
    // Both versions are now git-model files of another repository (which may not see the
    // LFS repository's chunks); the second shares all but one tensor with the first, so the
    // two together cost little more than one.
    let grown = dir_size(&w.server.data_dir) - before;
    assert!(
        grown < (a.len() + a.len() / 2) as u64,
        "migration stored {grown} bytes for 2 × {}",
        a.len()
    );
    let (out, err) = git(&w, &mig, &["model", "migrate"]);
    assert!(
        out.contains("migrated 0 object(s)") && err.contains("2 already migrated"),
        "{out}{err}"
    );
    // The same, as JSON (docs/json.md).
    let (out, _) = git(&w, &mig, &["model", "migrate", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(
        (
            &v["command"],
            &v["objects"],
            &v["already_migrated"],
            &v["migrated"]
        ),
        (&"migrate".into(), &2.into(), &2.into(), &0.into()),
        "{v}"
    );
    assert_eq!(v["bytes_sent"], 0, "{v}");
    git(&w, &mig, &["model", "fsck", "--remote", "--all"]);
}
