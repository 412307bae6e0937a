//! Integrity under maintenance and damage: GC running while servers serve, leftovers of
//! killed writers, damaged packs behind remembered hash states, and registration work
//! that never depends on other repositories.
//!
//! The GC test runs on both backends (`integrity::local::<name>`, `integrity::s3::<name>`
//! on Garage; see `crate::backend`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gitmodel_testkit::proxy::{Fault, Proxy, Rule};
use gitmodel_testkit::safetensors;

use crate::{check_ok, World};

on_each_backend!(gc_beside_pushes_on_two_nodes_loses_nothing);

fn model(seed: u64, mib: usize) -> Vec<u8> {
    safetensors(seed, 1 << 20, &vec![0; mib])
}

/// `git-model-server gc` run over and over (grace 1 s) while pushes go to two server
/// nodes on the same store. Each push's registration is held back by three injected 503s
/// (the client's backoff: 0.2 + 0.4 + 0.8 s), so its packs sit unreferenced past the grace
/// period and GC condemns and deletes them around the registration. Nothing may be lost:
/// every push succeeds, `fsck --remote` is clean, and every version checks out byte-exact.
fn gc_beside_pushes_on_two_nodes_loses_nothing(w: World) {
    let second = w.start_server(&[]);
    let repo = w.work_repo("work");
    let stop = AtomicBool::new(false);
    let mut versions = Vec::new();
    let (runs, deleted, rescued) = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            let (mut runs, mut deleted, mut rescued) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let out = w
                    .server_command(&["gc", "--grace", "1s", "--rescue-wait", "1s", "--json"])
                    .output()
                    .unwrap();
                check_ok("git-model-server gc", &out);
                let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("gc --json printed no JSON ({e})"));
                runs += 1;
                deleted += report["deleted"].as_u64().unwrap();
                rescued += report["rescued"].as_u64().unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            (runs, deleted, rescued)
        });
        // A failed push must still stop the GC loop, or the scope would wait for it.
        let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            push_versions(&w, &second, &repo, &mut versions)
        }));
        stop.store(true, Ordering::SeqCst);
        let counts = gc.join().unwrap();
        if let Err(panic) = pushed {
            std::panic::resume_unwind(panic);
        }
        counts
    });
    eprintln!("{runs} GC runs beside 4 pushes: {deleted} packs deleted, {rescued} kept as rescued");
    assert!(
        deleted > 0,
        "GC deleted nothing: the test did not put any pack at risk"
    );
    // Straight to the server from here on.
    w.env.git(&repo, &["config", "--unset", "model.url"]);
    w.env.git(&repo, &["model", "fsck", "--remote"]);
    let clone = w.clone("other");
    for (commit, data) in &versions {
        w.env.git(&clone, &["checkout", "-q", commit]);
        assert!(
            fs::read(clone.join("m.safetensors")).unwrap() == *data,
            "version at {commit} is not byte-exact"
        );
    }
}

/// Pushes four versions, alternately through `w.server` and `second`, each through a
/// proxy that answers the first three registration requests `503`.
fn push_versions(
    w: &World,
    second: &gitmodel_testkit::Server,
    repo: &Path,
    versions: &mut Vec<(String, Vec<u8>)>,
) {
    for v in 0..4u64 {
        let node = if v % 2 == 0 { &w.server } else { second };
        let data = model(100 + v, 6);
        w.commit_file(repo, "m.safetensors", &data, &format!("v{v}"));
        let proxy = Proxy::start(
            &node.url,
            vec![Rule {
                method: Some("POST"),
                path_contains: "/files$",
                hits: vec![1, 2, 3],
                fault: Fault::Status {
                    status: 503,
                    retry_after: None,
                },
            }],
        );
        let url = proxy.repo_url("acme", "vision");
        w.env.git(repo, &["config", "model.url", &url]);
        let out = w.env.git_output(repo, &["push", "-q", "origin", "main"]);
        check_ok(&format!("push of v{v} while GC runs"), &out);
        let head = w.env.git(repo, &["rev-parse", "HEAD"]);
        versions.push((head.trim().to_string(), data));
    }
}

/// Temp files below `dir` (the server's data directory): `(path, bytes)`.
fn temp_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut all = Vec::new();
    crate::collect(dir, &mut all);
    all.into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".tmp-gitmodel-"))
        })
        .map(|p| {
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

/// The id of a process that has exited: what a killed writer's temp files carry.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Leaves `mib` MiB in a temp file of process `pid` beside the server's packs, as a
/// server killed in the middle of writing a pack does.
fn leave_temp(data_dir: &Path, pid: u32, mib: usize) -> PathBuf {
    let dir = data_dir.join("packs").join("ab");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(".tmp-gitmodel-{pid}-x{mib}"));
    fs::write(&path, vec![7u8; mib << 20]).unwrap();
    path
}

#[test]
fn temp_files_of_killed_writers_are_removed_by_gc_and_at_startup() {
    let mut w = World::new();
    let repo = w.work_repo("work");
    let data = model(7, 24);
    w.commit_file(&repo, "m.safetensors", &data, "m");
    // A real kill in the middle of a push first: whatever it leaves is a dead process's.
    let mut push = w
        .env
        .cmd("git", &repo)
        .args(["push", "-q", "origin", "main"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    w.server.kill();
    let _ = push.wait();
    let data_dir = w.server.data_dir.clone();
    // And the leftovers of writers killed mid-pack, tens of MB, one of them a live
    // process's (this test's own), which must stay.
    let dead = leave_temp(&data_dir, dead_pid(), 24);
    let live = leave_temp(&data_dir, std::process::id(), 1);
    let before: u64 = temp_files(&data_dir).iter().map(|(_, n)| n).sum();

    let out = w
        .server_command(&["gc", "--dry-run", "--json"])
        .output()
        .unwrap();
    check_ok("gc --dry-run", &out);
    assert!(dead.exists(), "a dry run removed a temp file");
    let out = w.server_command(&["gc", "--json"]).output().unwrap();
    check_ok("gc", &out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = report["temp_files_removed"].as_u64().unwrap();
    let freed = report["temp_bytes_freed"].as_u64().unwrap();
    eprintln!(
        "temp files after a killed push: {before} bytes; gc removed {removed} ({freed} bytes)"
    );
    assert!(!dead.exists(), "gc left a dead writer's temp file");
    assert!(live.exists(), "gc removed a running process's temp file");
    assert!(freed >= 24 << 20, "{report}");
    assert_eq!(
        temp_files(&data_dir)
            .iter()
            .map(|(p, _)| p.clone())
            .collect::<Vec<_>>(),
        vec![live.clone()]
    );

    // A server starting on the directory removes them too.
    let dead = leave_temp(&data_dir, dead_pid(), 8);
    w.server = w.start_server(&[]);
    let mut waited = Duration::ZERO;
    while dead.exists() {
        assert!(
            waited < Duration::from_secs(30),
            "a started server left a dead writer's temp file for 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    assert!(live.exists());
    fs::remove_file(&live).unwrap();
    // The push completes against the restarted server, byte-exact.
    let url = w.server.repo_url("acme", "vision");
    w.env.git(&repo, &["config", "model.url", &url]);
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    w.env.git(&repo, &["model", "fsck", "--remote"]);
    let other = w.clone("other");
    w.env.git(&other, &["config", "model.url", &url]);
    w.env.git(&other, &["model", "pull"]);
    assert!(fs::read(other.join("m.safetensors")).unwrap() == data);
}

/// A verified version leaves hash states of its prefix in the server's memory. Damage
/// the stored packs, then push a second version sharing that prefix: the registration
/// must read and check the prefix anyway, refuse the file as damaged on the server, and
/// never answer it as registered.
#[test]
fn a_damaged_pack_under_a_remembered_prefix_is_never_vouched_for() {
    let w = World::new();
    let repo = w.work_repo("work");
    let mut versions = vec![0u64; 12];
    let v1 = safetensors(5, 1 << 20, &versions);
    w.commit_file(&repo, "m.safetensors", &v1, "v1");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    assert!(w.damage_packs() > 0);
    versions[11] = 1;
    let v2 = safetensors(5, 1 << 20, &versions);
    w.commit_file(&repo, "m.safetensors", &v2, "v2");
    let out = w.env.git_output(&repo, &["model", "push"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a file whose prefix sits in a damaged pack was registered"
    );
    assert!(
        stderr.contains("corrupt_chunk") && stderr.contains("damaged"),
        "the refusal does not name the damage: {stderr}"
    );
    // Nothing vouches for v2: a fresh clone of its pointer cannot get it.
    let oid = gitmodel_format::Oid::of(&v2);
    let mut answer = Vec::new();
    ureq::post(&format!("{}/model/v1/files/exists", w.model_url))
        .send_bytes(&oid.0)
        .unwrap()
        .into_reader()
        .read_to_end(&mut answer)
        .unwrap();
    assert_eq!(answer, [0], "files/exists says v2 is there");
}

fn metric(server_url: &str, name: &str) -> u64 {
    let text = ureq::get(&format!("{server_url}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// The same model registered in a second repository costs the same work as the first
/// time (every byte hashed), not less because another repository verified it: timing
/// tells nothing across repositories. Within one repository a new version still resumes
/// its unchanged prefix.
#[test]
fn registration_work_never_depends_on_other_repositories() {
    let w = World::new();
    let data = model(11, 16);
    let hashed = |w: &World| metric(&w.server.url, "gitmodel_verify_hashed_bytes_total");
    let resumed = |w: &World| metric(&w.server.url, "gitmodel_verify_resumed_bytes_total");

    let a = w.work_repo("a");
    w.commit_file(&a, "m.safetensors", &data, "m");
    let (h0, r0) = (hashed(&w), resumed(&w));
    let started = std::time::Instant::now();
    w.env.git(&a, &["model", "push"]);
    let first = started.elapsed();
    let (h1, r1) = (hashed(&w), resumed(&w));
    assert_eq!((h1 - h0, r1 - r0), (data.len() as u64, 0));

    // The same bytes into another repository: nothing resumed from acme/vision's states.
    let b = w.work_repo("b");
    let url_b = w.server.repo_url("team-b", "copy");
    w.env.git(&b, &["config", "model.url", &url_b]);
    w.commit_file(&b, "m.safetensors", &data, "same bytes");
    let started = std::time::Instant::now();
    w.env.git(&b, &["model", "push"]);
    let second = started.elapsed();
    let (h2, r2) = (hashed(&w), resumed(&w));
    eprintln!(
        "push of 16 MiB into acme/vision {:.3} s, the same into team-b/copy {:.3} s",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
    assert_eq!(
        (h2 - h1, r2 - r1),
        (data.len() as u64, 0),
        "team-b/copy's registration resumed from another repository's hash states"
    );

    // acme/vision's next version resumes its own unchanged prefix.
    let mut versions = vec![0u64; 16];
    versions[15] = 1;
    let v2 = safetensors(11, 1 << 20, &versions);
    w.commit_file(&a, "m.safetensors", &v2, "v2");
    w.env.git(&a, &["model", "push"]);
    let r3 = resumed(&w);
    assert!(
        r3 - r2 >= 8 << 20,
        "a new version resumed only {} bytes of its own prefix",
        r3 - r2
    );
}
