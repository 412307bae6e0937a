//! The fault and load suite: `--json` reports checked against what happened, injected
//! 5xx/429 and cut connections (a proxy in front of the real server), a server whose disk
//! fills up (a small tmpfs), and 32 clients at once with the server's memory measured.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gitmodel_testkit::proxy::{Fault, Logged, Outcome, Proxy, Rule};
use gitmodel_testkit::{safetensors, Server, Tmpfs};
use serde_json::Value;

use crate::World;

fn model(seed: u64, mib: usize) -> Vec<u8> {
    safetensors(seed, 1 << 20, &vec![0; mib])
}

/// Runs `git model <args> --json` in `dir` and parses its stdout (which must be one JSON
/// object), whatever the exit status.
fn json(w: &World, dir: &Path, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["model"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = w.env.git_output(dir, &all);
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "git {all:?}: stdout is not one JSON object ({e}):\n{text}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), value)
}

fn ok_json(w: &World, dir: &Path, args: &[&str]) -> Value {
    let (ok, v) = json(w, dir, args);
    assert!(ok, "git model {args:?} --json failed: {v}");
    v
}

/// The pack files the server stores, with their sizes.
fn server_packs(data: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    crate::collect(&data.join("packs"), &mut files);
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| {
            let n = fs::metadata(&p).unwrap().len();
            (p, n)
        })
        .collect()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key:?} in {v}"))
}

#[test]
fn json_reports_match_what_happened() {
    let w = World::new();
    let repo = w.work_repo("work");
    let a = model(30, 6);
    w.commit_file(&repo, "a.safetensors", &a, "a");

    // push: the figures are the packs the server now holds.
    let push = ok_json(&w, &repo, &["push"]);
    assert_eq!(push["command"], "push");
    assert_eq!(push["url"], w.model_url.as_str());
    assert_eq!(
        (u(&push, "files"), u(&push, "files_uploaded")),
        (1, 1),
        "{push}"
    );
    assert_eq!(u(&push, "file_bytes"), a.len() as u64);
    let packs = server_packs(&w.server.data_dir);
    assert_eq!(u(&push, "packs"), packs.len() as u64, "{push}");
    assert_eq!(
        u(&push, "bytes_sent"),
        packs.iter().map(|(_, n)| n).sum::<u64>(),
        "{push}"
    );
    assert_eq!(u(&push, "chunks_sent"), u(&push, "chunks"));
    assert!(u(&push, "bytes_new") >= a.len() as u64 - 4096, "{push}");
    // A second push sends nothing.
    let again = ok_json(&w, &repo, &["push"]);
    assert_eq!(
        (
            u(&again, "files_present"),
            u(&again, "files_uploaded"),
            u(&again, "bytes_sent"),
            u(&again, "packs")
        ),
        (1, 0, 0, 0),
        "{again}"
    );
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    // fetch, then pull in a pointers-only clone.
    let lazy = w.clone_pointers_only("lazy");
    let status = ok_json(&w, &lazy, &["status"]);
    assert_eq!(status["files"][0]["state"], "not_downloaded", "{status}");
    assert_eq!(status["files"][0]["in_working_tree"], false);
    let fetch = ok_json(&w, &lazy, &["fetch"]);
    assert_eq!(fetch["command"], "fetch");
    assert_eq!(
        (
            u(&fetch, "files"),
            u(&fetch, "files_fetched"),
            u(&fetch, "file_bytes")
        ),
        (1, 1, a.len() as u64),
        "{fetch}"
    );
    assert!(u(&fetch, "bytes_received") > 0 && u(&fetch, "requests") > 0);
    let fetch2 = ok_json(&w, &lazy, &["fetch"]);
    assert_eq!(
        (u(&fetch2, "files_local"), u(&fetch2, "bytes_received")),
        (1, 0),
        "{fetch2}"
    );
    let pull = ok_json(&w, &lazy, &["pull"]);
    assert_eq!(
        (u(&pull, "files_written"), u(&pull, "bytes_written")),
        (1, a.len() as u64),
        "{pull}"
    );
    assert_eq!(pull["written"][0], "a.safetensors");
    assert_eq!(
        pull["fetch"]["bytes_received"], 0,
        "already fetched: {pull}"
    );
    assert!(fs::read(lazy.join("a.safetensors")).unwrap() == a);

    let status = ok_json(&w, &lazy, &["status"]);
    assert_eq!(
        (
            u(&status, "tracked_files"),
            u(&status, "present"),
            u(&status, "tracked_bytes")
        ),
        (1, 1, a.len() as u64),
        "{status}"
    );
    assert_eq!(status["files"][0]["state"], "ok");
    assert_eq!(
        status["files"][0]["oid"],
        gitmodel_format::Oid::of(&a).to_hex()
    );
    assert!(u(&status["store"], "raw_bytes") >= a.len() as u64);
    let ls = ok_json(&w, &lazy, &["ls-files"]);
    assert_eq!(ls["files"][0]["path"], "a.safetensors", "{ls}");
    assert_eq!(ls["files"][0]["size"], a.len() as u64);
    assert_eq!(ls["files"][0]["in_working_tree"], true);

    let fsck = ok_json(&w, &lazy, &["fsck", "--remote"]);
    assert_eq!(
        (
            u(&fsck, "files_checked"),
            u(&fsck, "bytes_verified"),
            u(&fsck, "files_on_server")
        ),
        (1, a.len() as u64, 1),
        "{fsck}"
    );
    assert_eq!(fsck["ok"], true);

    let env = ok_json(&w, &lazy, &["env"]);
    assert_eq!(env["model_url"]["value"], w.model_url.as_str(), "{env}");
    assert_eq!(env["pre_push_hook"], true);
    assert_eq!(env["tracked_patterns"][0], "*.safetensors");

    // prune: the dry run's figures are what the real run then removes.
    let b = model(31, 4);
    w.commit_file(&repo, "a.safetensors", &b, "b");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let dry = ok_json(&w, &repo, &["prune", "--age", "0", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(u(&dry, "chunks") > 0 && u(&dry, "pack_bytes") > 0, "{dry}");
    let before = gitmodel_testkit::dir_size(&repo.join(".git/model/packs"));
    let real = ok_json(&w, &repo, &["prune", "--age", "0"]);
    assert_eq!(real["dry_run"], false);
    for k in ["chunks", "raw_bytes", "packs", "pack_bytes", "recipes"] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} vs real {real}");
    }
    let after = gitmodel_testkit::dir_size(&repo.join(".git/model/packs"));
    assert!(
        before - after <= u(&real, "pack_bytes"),
        "{before} -> {after}: {real}"
    );

    // A failing fsck still answers in JSON, naming the problem.
    let corrupt = w.clone_pointers_only("corrupt");
    let (ok, fsck) = json(&w, &corrupt, &["fsck"]);
    assert!(!ok);
    assert_eq!(fsck["ok"], false);
    assert_eq!(fsck["problems"][0]["path"], "a.safetensors", "{fsck}");
    assert_eq!(
        fsck["problems"][0]["oid"],
        gitmodel_format::Oid::of(&b).to_hex()
    );

    // A command without a result to report refuses the flag instead of ignoring it.
    let out = w.env.git_output(&repo, &["model", "track", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json is not supported"));

    // The server's gc dry run, against the packs on disk.
    let out = std::process::Command::new(crate::server_exe())
        .args(["gc", "--dry-run", "--json", "--data-dir"])
        .arg(&w.server.data_dir)
        .output()
        .unwrap();
    crate::check_ok("git-model-server gc --dry-run --json", &out);
    let gc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packs = server_packs(&w.server.data_dir).len() as u64;
    assert_eq!(gc["command"], "gc");
    assert_eq!((u(&gc, "packs"), u(&gc, "live")), (packs, packs), "{gc}");
    assert_eq!((u(&gc, "deleted"), u(&gc, "bytes_freed")), (0, 0), "{gc}");
}

/// Every faulted request was retried (a later request to the same method and path that
/// the server answered 2xx); a `Retry-After: N` answer was followed by a gap of at least
/// N seconds at the proxy. Returns how many requests were faulted.
fn check_retried(log: &[Logged]) -> usize {
    let mut faulted = 0;
    for (i, l) in log.iter().enumerate() {
        let Outcome::Faulted(fault) = &l.outcome else {
            continue;
        };
        faulted += 1;
        let next = log[i + 1..]
            .iter()
            .find(|n| n.same_request(l))
            .unwrap_or_else(|| panic!("{} {} ({fault:?}) was never retried", l.method, l.path));
        let later_ok = log[i + 1..]
            .iter()
            .any(|n| n.same_request(l) && matches!(n.outcome, Outcome::Forwarded(200..=299)));
        assert!(
            later_ok,
            "{} {} never succeeded after {fault:?}",
            l.method, l.path
        );
        if let Fault::Status {
            retry_after: Some(secs),
            ..
        } = fault
        {
            let gap = next.arrived.duration_since(l.answered);
            assert!(
                gap >= Duration::from_secs(*secs),
                "Retry-After: {secs} not honoured: retried {} {} after {gap:?}",
                l.method,
                l.path
            );
        }
    }
    faulted
}

#[test]
fn push_and_pull_complete_through_injected_5xx_429_and_cut_connections() {
    let w = World::new();
    let repo = w.work_repo("work");
    let big = model(32, 12);
    w.commit_file(&repo, "big.safetensors", &big, "big");
    let status = |status, retry_after| Fault::Status {
        status,
        retry_after,
    };
    let rule = |method, path_contains, hits: &[usize], fault| Rule {
        method: Some(method),
        path_contains,
        hits: hits.to_vec(),
        fault,
    };
    let push_proxy = Proxy::start(
        &w.server.url,
        vec![
            rule("POST", "/files/exists", &[1], status(503, None)),
            rule("POST", "/chunks/exists", &[1], status(429, Some(1))),
            rule("PUT", "/packs/", &[1], status(503, None)),
            rule("PUT", "/packs/", &[2], Fault::DropRequestBody),
            rule("PUT", "/packs/", &[3], status(429, Some(1))),
            rule("POST", "/files$", &[1], status(502, None)),
        ],
    );
    w.env.git(
        &repo,
        &[
            "config",
            "model.url",
            &push_proxy.repo_url("acme", "vision"),
        ],
    );
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let log = push_proxy.log();
    let faulted = check_retried(&log);
    assert_eq!(faulted, 6, "{log:#?}");
    eprintln!(
        "push through the fault proxy: {} requests, {faulted} faulted and retried",
        log.len()
    );
    // Straight to the server: everything arrived.
    w.env.git(&repo, &["config", "model.url", &w.model_url]);
    w.env.git(&repo, &["model", "fsck", "--remote"]);

    let pull_proxy = Proxy::start(
        &w.server.url,
        vec![
            rule("GET", "/files/", &[1], status(500, None)),
            rule("GET", "/packs/", &[1], Fault::DropResponseBody),
            rule("GET", "/packs/", &[3], status(503, None)),
            rule("GET", "/packs/", &[4], status(429, Some(1))),
            rule("GET", "/packs/", &[6], Fault::DropResponseBody),
        ],
    );
    let lazy = w.clone_pointers_only("lazy");
    w.env.git(
        &lazy,
        &[
            "config",
            "model.url",
            &pull_proxy.repo_url("acme", "vision"),
        ],
    );
    w.env.git(&lazy, &["model", "pull"]);
    assert!(fs::read(lazy.join("big.safetensors")).unwrap() == big);
    w.env.git(&lazy, &["model", "fsck"]);
    let log = pull_proxy.log();
    let faulted = check_retried(&log);
    assert_eq!(faulted, 5, "{log:#?}");
    eprintln!(
        "pull through the fault proxy: {} requests, {faulted} faulted and retried",
        log.len()
    );
}

#[test]
fn a_persistent_500_fails_the_push_naming_status_and_url_in_bounded_time() {
    let w = World::new();
    let repo = w.work_repo("work");
    w.commit_file(&repo, "m.safetensors", &model(33, 1), "m");
    let proxy = Proxy::start(
        &w.server.url,
        vec![Rule {
            method: Some("POST"),
            path_contains: "/files/exists",
            hits: Vec::new(),
            fault: Fault::Status {
                status: 500,
                retry_after: None,
            },
        }],
    );
    let url = proxy.repo_url("acme", "vision");
    w.env.git(&repo, &["config", "model.url", &url]);
    let mut child = w
        .env
        .cmd("git-model", &repo)
        .arg("push")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog, not a measurement: a hang fails the test instead of stalling the suite.
    let mut waited = Duration::ZERO;
    while child.try_wait().unwrap().is_none() {
        if waited > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("git model push still running after 120 s against a persistent 500");
        }
        std::thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("server answered 500")
            && last.contains(&url)
            && last.contains("/files/exists"),
        "{stderr}"
    );
    // Bounded: the same few attempts every time, then the error.
    let attempts = proxy
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/files/exists"))
        .count();
    assert_eq!(attempts, 5, "{:#?}", proxy.log());
    assert!(proxy.log().iter().all(Logged::faulted));
}

#[test]
fn server_disk_full_fails_the_push_cleanly_and_recovers_when_space_returns() {
    let disk = Tmpfs::mount(24);
    let data = disk.dir.join("data");
    let mut w = World::new();
    let server = Server::start(&crate::server_exe(), &data);
    let url = server.repo_url("acme", "vision");
    w.server = server;
    let repo = w.work_repo("work");
    w.env.git(&repo, &["config", "model.url", &url]);
    let small = model(34, 4);
    w.commit_file(&repo, "small.safetensors", &small, "small");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);

    // 48 MiB of weights do not fit in what is left of 24 MiB.
    let big = model(35, 48);
    w.commit_file(&repo, "big.safetensors", &big, "big");
    let out = w.env.git_output(&repo, &["push", "origin", "main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "push to a full disk succeeded");
    assert!(
        stderr.contains("507") && stderr.contains("out of storage space"),
        "{stderr}"
    );
    eprintln!(
        "push to a full disk: {}",
        stderr.lines().rfind(|l| l.contains("507")).unwrap_or("")
    );
    let published = w.env.git(&w.origin, &["rev-parse", "main"]);
    assert_eq!(
        published.trim(),
        w.env.git(&repo, &["rev-parse", "HEAD~1"]).trim(),
        "the failed push published the branch"
    );
    // Nothing partial: no temp file left behind, every pack on disk whole (a restarted
    // server indexes them all), the earlier file intact and the new one absent.
    let mut files = Vec::new();
    crate::collect(&data, &mut files);
    let stray: Vec<_> = files
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "temp files left: {stray:?}");
    w.server.kill();
    let server = Server::start(&crate::server_exe(), &data);
    let url = server.repo_url("acme", "vision");
    w.server = server;
    w.env.git(&repo, &["config", "model.url", &url]);
    w.env.git(&repo, &["model", "fsck", "--remote", "HEAD~1"]);
    let out = w
        .env
        .git_output(&repo, &["model", "fsck", "--remote", "HEAD"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("big.safetensors ("));

    // Space comes back: the same push completes and a clone is byte-exact.
    disk.resize(256);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    w.env.git(&repo, &["model", "fsck", "--remote", "HEAD"]);
    let other = w.clone_pointers_only("other");
    w.env.git(&other, &["config", "model.url", &url]);
    w.env.git(&other, &["model", "pull"]);
    assert!(fs::read(other.join("big.safetensors")).unwrap() == big);
    assert!(fs::read(other.join("small.safetensors")).unwrap() == small);
    // The server goes before the mount does.
    w.server.kill();
    drop(disk);
}

#[test]
fn thirty_two_clients_push_overlapping_models_and_pull_byte_exact() {
    let work = tempfile::tempdir().unwrap();
    let spec = gitmodel_testkit::load::LoadSpec {
        clients: 32,
        tensors: 16,
        tensor_bytes: 256 << 10,
    };
    let r = gitmodel_testkit::load::run(
        &crate::git_model_exe(),
        &crate::server_exe(),
        work.path(),
        spec,
    );
    eprintln!("{r:?}");
    // Overlap: the server stores far less than was pushed.
    assert!(r.server_bytes < r.bytes_pushed / 3, "{r:?}");
    assert!(r.server_bytes > r.base_server_bytes, "{r:?}");
    assert_eq!(r.bytes_pulled, r.bytes_pushed);
    // Memory bounded: a generous ceiling, far above what was measured (docs/reliability.md).
    for kib in [r.push_peak_rss_kib, r.pull_peak_rss_kib] {
        assert!(kib <= 512 * 1024, "server peak RSS {kib} KiB: {r:?}");
    }
}

/// The client's disk fills up during `git add`: the add fails naming the cause, the file
/// is not staged, the working file and the store are intact, and the same add succeeds
/// once there is room.
#[test]
fn client_disk_full_fails_git_add_cleanly_and_recovers() {
    let disk = Tmpfs::mount(40);
    let w = World::new();
    w.env.git(&disk.dir, &["init", "-q", "-b", "main", "work"]);
    let repo = disk.dir.join("work");
    w.env.git(&repo, &["model", "track", "*.safetensors"]);
    w.env.git(&repo, &["add", ".gitattributes"]);
    w.env.git(&repo, &["commit", "-q", "-m", "track"]);
    // 24 MiB of weights fit on the 40 MiB disk; their ~20 MiB of chunks do not as well.
    let big = model(36, 24);
    fs::write(repo.join("m.safetensors"), &big).unwrap();
    let out = w.env.git_output(&repo, &["add", "m.safetensors"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "git add succeeded on a full disk: {stderr}"
    );
    assert!(
        stderr.contains("No space left on device") && stderr.contains("m.safetensors"),
        "{stderr}"
    );
    assert_eq!(w.env.git(&repo, &["diff", "--cached", "--name-only"]), "");
    assert!(fs::read(repo.join("m.safetensors")).unwrap() == big);
    let mut files = Vec::new();
    crate::collect(&repo.join(".git/model"), &mut files);
    let leftovers: Vec<_> = files
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    w.env.git(&repo, &["model", "fsck"]);

    disk.resize(128);
    w.env.git(&repo, &["add", "m.safetensors"]);
    w.env.git(&repo, &["commit", "-q", "-m", "model"]);
    let pointer = w.env.git(&repo, &["cat-file", "-p", "HEAD:m.safetensors"]);
    assert!(
        pointer.contains(&gitmodel_format::Oid::of(&big).to_hex()),
        "{pointer}"
    );
    w.env.git(&repo, &["model", "fsck"]);
    fs::remove_file(repo.join("m.safetensors")).unwrap();
    w.env.git(&repo, &["checkout", "m.safetensors"]);
    assert!(fs::read(repo.join("m.safetensors")).unwrap() == big);
}
