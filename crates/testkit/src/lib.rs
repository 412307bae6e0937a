//! Test harness for git-model: hermetic `git` runs, the real server binary on a free
//! loopback port, and deterministic synthetic models (safetensors layout); for in-process
//! servers, an HTTP/1.1 client ([`http`]) and hand-made packs and recipes ([`packs`]).
//!
//! Used by the end-to-end tests in `tests/` and by the demo's model generator; never by
//! the product itself.
#![forbid(unsafe_code)]

pub mod http;
pub mod load;
pub mod packs;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rand::{Rng, SeedableRng};

/// A git-model server process on `127.0.0.1:<free port>`, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `exe --listen 127.0.0.1:0 --data-dir <data_dir>` and reads the bound address
    /// from its first line of output: no port is picked before the server binds it.
    pub fn start(exe: &Path, data_dir: &Path) -> Server {
        Self::start_with(exe, data_dir, &[], &[])
    }

    /// Like [`Server::start`], with more arguments (after `--data-dir <data_dir>`) and
    /// environment variables for the server process only: for example
    /// `--store s3://bucket/prefix` with the `AWS_*` variables, or `--tls-cert` and
    /// `--tls-key` (the URL is then `https://`).
    pub fn start_with(
        exe: &Path,
        data_dir: &Path,
        args: &[&str],
        envs: &[(String, String)],
    ) -> Server {
        let mut child = Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("reading the server's address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .unwrap_or_else(|| {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "{} {args:?} printed {line:?} instead of its address (exit: {status:?}; \
                     its stderr is above)",
                    exe.display()
                )
            })
            .to_string();
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// URL of repository `ns/repo` on this server.
    pub fn repo_url(&self, ns: &str, repo: &str) -> String {
        format!("{}/{ns}/{repo}", self.url)
    }

    /// The server's process id (for `/proc/<pid>/status`, see [`peak_rss_kib`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Peak resident memory of process `pid` so far (`VmHWM` in `/proc/<pid>/status`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line in {path}"))
}

/// A tmpfs of a fixed size mounted on a fresh directory (needs root), unmounted on drop:
/// a disk that fills up, for tests of what a full disk does.
pub struct Tmpfs {
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB. Panics (the test fails, it is not skipped) with the
    /// reason when `mount` cannot: the test needs root and a kernel that allows it.
    pub fn mount(mib: u64) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("tmpfs");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("running mount: {e}"));
        check(
            &format!(
                "mount -t tmpfs -o size={mib}m (this test needs root and mount rights to                  make a small disk that fills up; it does not skip itself)"
            ),
            &dir,
            &out,
        );
        Tmpfs {
            dir,
            _parent: parent,
        }
    }

    /// Changes the size in place (`mount -o remount,size=…`): space comes back.
    pub fn resize(&self, mib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.dir)
            .output()
            .unwrap();
        check("mount -o remount", &self.dir, &out);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding a file open must not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// Total size of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The regular files under `dir`, at any depth (none when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A hermetic environment for running git: its own HOME and global config, fixed
/// identity and dates, no prompts, and the git-model binary first on PATH.
pub struct GitEnv {
    pub home: tempfile::TempDir,
    bin_dir: PathBuf,
}

impl GitEnv {
    pub fn new(git_model_exe: &Path) -> GitEnv {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".gitconfig"), "").unwrap();
        GitEnv {
            home,
            bin_dir: git_model_exe.parent().unwrap().to_path_buf(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    /// A command with the hermetic environment, run in `dir`.
    pub fn cmd(&self, program: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.current_dir(dir)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.home.path().join(".gitconfig"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs git in `dir`, returning its output whatever the exit status.
    pub fn git_output(&self, dir: &Path, args: &[&str]) -> Output {
        self.cmd("git", dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running git {args:?}: {e}"))
    }

    /// Runs git in `dir`; panics with its stderr unless it succeeds. Returns stdout.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_output(dir, args);
        check(&format!("git {}", args.join(" ")), dir, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`GitEnv::git`] with extra environment variables.
    pub fn git_with(&self, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.cmd("git", dir);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

/// Panics with context unless `out` is a success.
pub fn check(what: &str, dir: &Path, out: &Output) {
    if !out.status.success() {
        panic!(
            "{what} in {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A synthetic model in safetensors layout: `tensors` float32 tensors of `tensor_bytes`
/// bytes each, values like small trained weights. Tensor `i`'s values come from seed
/// `seed + versions[i]`: bumping one entry of `versions` changes exactly that tensor.
pub fn safetensors(seed: u64, tensor_bytes: usize, versions: &[u64]) -> Vec<u8> {
    let elems = tensor_bytes / 4;
    let mut header = serde_json::Map::new();
    for (i, _) in versions.iter().enumerate() {
        let begin = i * elems * 4;
        header.insert(
            format!("layers.{i}.weight"),
            serde_json::json!({
                "dtype": "F32",
                "shape": [elems],
                "data_offsets": [begin, begin + elems * 4],
            }),
        );
    }
    let mut json = serde_json::Value::Object(header).to_string();
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + versions.len() * elems * 4);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for (i, v) in versions.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ ((i as u64) << 32) ^ v);
        for _ in 0..elems {
            let x: f32 = rng.gen_range(-0.05f32..0.05f32);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift) that do not compress: the same `seed`
/// and `len` give the same bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
