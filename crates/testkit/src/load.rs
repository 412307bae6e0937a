//! A load run: one client pushes a base model; then N clients push models derived from it
//! to one server at once (each changes two tensors of its own and one that all of them
//! change the same way, so they also race to upload the same new chunks); then (after a
//! server restart, so the pull has its own memory figure) N clients pull others' models
//! at once. Every byte is compared; the server's peak RSS (`VmHWM`) is read after each
//! phase. Used by the end-to-end load test and by `scripts/load`.

use std::path::Path;
use std::sync::Barrier;
use std::time::Instant;

use crate::{check, peak_rss_kib, safetensors, GitEnv, Server};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub clients: usize,
    /// Tensors per model (at least 2), and bytes per tensor. Client `i` changes tensors
    /// `i % (tensors - 1)` and `(i * 7 + 3) % (tensors - 1)` its own way, and the last
    /// one as every client does: most chunks are shared.
    pub tensors: usize,
    pub tensor_bytes: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    pub clients: usize,
    /// Bytes of model files pushed (all clients together).
    pub bytes_pushed: u64,
    /// Bytes of model files pulled and compared (all clients together).
    pub bytes_pulled: u64,
    /// Bytes the server stores after the base model (its data directory).
    pub base_server_bytes: u64,
    /// Bytes the server stores after the concurrent pushes.
    pub server_bytes: u64,
    pub push_seconds: f64,
    pub pull_seconds: f64,
    /// The server's peak RSS while the clients pushed at once, in KiB.
    pub push_peak_rss_kib: u64,
    /// The restarted server's peak RSS while the clients pulled at once, in KiB.
    pub pull_peak_rss_kib: u64,
}

/// The base model every client starts from.
pub fn base_model(spec: &LoadSpec) -> Vec<u8> {
    safetensors(4242, spec.tensor_bytes, &vec![0u64; spec.tensors])
}

/// Client `i`'s model.
pub fn client_model(spec: &LoadSpec, i: usize) -> Vec<u8> {
    let own = spec.tensors - 1;
    let mut versions = vec![0u64; spec.tensors];
    versions[i % own] = 1 + i as u64;
    versions[(i * 7 + 3) % own] = 1000 + i as u64;
    versions[own] = 999_999;
    safetensors(4242, spec.tensor_bytes, &versions)
}

fn run_ok(env: &GitEnv, dir: &Path, extra: &[(&str, &str)], args: &[&str]) {
    let mut cmd = env.cmd("git", dir);
    cmd.args(args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running git {args:?}: {e}"));
    check(&format!("git {}", args.join(" ")), dir, &out);
}

/// Runs the load: `git_model` and `server_exe` are the binaries, `work` an empty scratch
/// directory (the server's data and every client's repository go there).
pub fn run(git_model: &Path, server_exe: &Path, work: &Path, spec: LoadSpec) -> LoadReport {
    assert!(
        spec.tensors >= 2,
        "a load run needs at least 2 tensors per model"
    );
    let env = GitEnv::new(git_model);
    let home = env.home.path().to_path_buf();
    run_ok(&env, &home, &[], &["model", "install"]);
    let origin = work.join("origin.git");
    run_ok(
        &env,
        work,
        &[],
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    let data = work.join("server");
    let mut server = Server::start(server_exe, &data);
    let url = server.repo_url("load", "shared");
    let origin_s = origin.to_str().unwrap().to_string();

    // The base model, pushed once before the load.
    let seed = work.join("seed");
    let vars = [("GIT_MODEL_URL", url.as_str()), ("GIT_MODEL_QUIET", "1")];
    run_ok(&env, work, &[], &["init", "-q", "-b", "main", "seed"]);
    run_ok(&env, &seed, &[], &["remote", "add", "origin", &origin_s]);
    run_ok(&env, &seed, &[], &["model", "track", "*.safetensors"]);
    std::fs::write(seed.join("model.safetensors"), base_model(&spec)).unwrap();
    run_ok(
        &env,
        &seed,
        &vars,
        &["add", ".gitattributes", "model.safetensors"],
    );
    run_ok(&env, &seed, &vars, &["commit", "-q", "-m", "base"]);
    run_ok(&env, &seed, &vars, &["push", "-q", "origin", "main"]);
    let base_server_bytes = crate::dir_size(&data);

    // Set up each client's repository (not measured), then push all at once.
    let vars = |url: &str| {
        [
            ("GIT_MODEL_URL", url.to_string()),
            ("GIT_MODEL_QUIET", "1".into()),
        ]
    };
    let push_vars = vars(&url);
    let push_vars: Vec<(&str, &str)> = push_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let repo = |i: usize| work.join(format!("client-{i}"));
    let push_seconds = at_once(
        spec.clients,
        |i| {
            let name = format!("client-{i}");
            let skip = [("GIT_MODEL_SKIP_SMUDGE", "1")];
            run_ok(&env, work, &skip, &["clone", "-q", &origin_s, &name]);
            std::fs::write(repo(i).join("model.safetensors"), client_model(&spec, i)).unwrap();
            run_ok(&env, &repo(i), &push_vars, &["add", "model.safetensors"]);
            let message = format!("client {i}");
            run_ok(
                &env,
                &repo(i),
                &push_vars,
                &["commit", "-q", "-m", &message],
            );
        },
        |i| {
            let branch = format!("main:client-{i}");
            run_ok(
                &env,
                &repo(i),
                &push_vars,
                &["push", "-q", "origin", &branch],
            );
        },
    );
    let push_peak_rss_kib = peak_rss_kib(server.pid());
    let server_bytes = crate::dir_size(&data);

    // A fresh server process on the same data: the pull phase's memory on its own. Client
    // i pulls the model client i+1 pushed.
    server.kill();
    let server = Server::start(server_exe, &data);
    let pull_vars = vars(&server.repo_url("load", "shared"));
    let pull_vars: Vec<(&str, &str)> = pull_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let other = |i: usize| (i + 1) % spec.clients;
    let clone = |i: usize| work.join(format!("pull-{i}"));
    let pull_seconds = at_once(
        spec.clients,
        |i| {
            let (name, branch) = (format!("pull-{i}"), format!("client-{}", other(i)));
            let skip = [("GIT_MODEL_SKIP_SMUDGE", "1")];
            let args = ["clone", "-q", "-b", &branch, &origin_s, &name];
            run_ok(&env, work, &skip, &args);
        },
        |i| run_ok(&env, &clone(i), &pull_vars, &["model", "pull"]),
    );
    let mut bytes_pulled = 0;
    for i in 0..spec.clients {
        let got = std::fs::read(clone(i).join("model.safetensors")).unwrap();
        assert!(
            got == client_model(&spec, other(i)),
            "client {i}: the model of client {} is not byte-exact",
            other(i)
        );
        bytes_pulled += got.len() as u64;
    }
    let pull_peak_rss_kib = peak_rss_kib(server.pid());
    LoadReport {
        clients: spec.clients,
        bytes_pushed: (0..spec.clients)
            .map(|i| client_model(&spec, i).len() as u64)
            .sum(),
        bytes_pulled,
        base_server_bytes,
        server_bytes,
        push_seconds,
        pull_seconds,
        push_peak_rss_kib,
        pull_peak_rss_kib,
    }
}

/// Runs `setup(i)` for every client (in parallel, not timed), then `work(i)` for every
/// client at once; returns the longest `work` in seconds. Nothing that can fail runs
/// between the start line and the work, so a failing client cannot leave the others
/// waiting at it.
fn at_once(clients: usize, setup: impl Fn(usize) + Sync, work: impl Fn(usize) + Sync) -> f64 {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let setup = &setup;
                scope.spawn(move || setup(i))
            })
            .collect();
        for h in handles {
            h.join().expect("a client's set-up failed");
        }
    });
    let start = Barrier::new(clients);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (start, work) = (&start, &work);
                scope.spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    work(i);
                    t.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client failed"))
            .fold(0.0, f64::max)
    })
}
