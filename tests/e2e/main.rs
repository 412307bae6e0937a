//! End-to-end tests: the real `git` binary with git-model as its filter and hook, and
//! the real `git-model-server` on a free loopback port (on a local directory, or on a
//! real Garage for the S3 variants: see `backend`).

#[macro_use]
mod backend;

mod adopt;
mod bounds;
mod core;
mod daily;
mod hostile;
mod integrity;
mod lfs;
mod ml;
mod registry;
mod reliability;
mod repair;
mod s3;
mod security;

use std::path::{Path, PathBuf};

use backend::Backend;
use gitmodel_testkit::{GitEnv, Server};

pub fn git_model_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-model"))
}

pub fn server_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-model-server"))
}

/// A server, a bare "origin", and a hermetic git environment with git-model installed.
pub struct World {
    pub env: GitEnv,
    pub server: Server,
    pub origin: PathBuf,
    pub model_url: String,
    _server_dir: tempfile::TempDir,
    /// Dropped after the server: an S3 prefix is emptied once no node uses it.
    pub backend: Backend,
}

impl World {
    /// A world whose server keeps its objects in a local directory.
    #[allow(clippy::new_without_default)] // starts a server: not a default value
    pub fn new() -> World {
        World::on(Backend::Local)
    }

    /// A world whose server keeps its objects under a fresh prefix (named after `what`)
    /// of the Garage test bucket; `None` when the S3 tests are not enabled (see `backend`).
    pub fn on_s3(what: &str) -> Option<World> {
        Backend::s3(what).map(World::on)
    }

    pub fn on(backend: Backend) -> World {
        let env = GitEnv::new(&git_model_exe());
        let server_dir = tempfile::tempdir().unwrap();
        let server = backend.server(server_dir.path(), &[]);
        let origin = env.path("origin.git");
        env.git(
            env.home.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        let home = env.home.path().to_path_buf();
        env.git(&home, &["model", "install"]);
        let model_url = server.repo_url("acme", "vision");
        World {
            env,
            server,
            origin,
            model_url,
            _server_dir: server_dir,
            backend,
        }
    }

    /// Another server process on the same objects (a restart, or a second node).
    pub fn start_server(&self, extra: &[&str]) -> Server {
        self.backend.server(&self.server.data_dir, extra)
    }

    /// A `git-model-server` maintenance command (`gc`, `delete-repo`, ...) on the same
    /// objects as the server.
    pub fn server_command(&self, args: &[&str]) -> std::process::Command {
        self.backend.maintenance(&self.server.data_dir, args)
    }

    /// Bytes of every object the server stored.
    pub fn stored_bytes(&self) -> u64 {
        self.backend.stored_bytes(&self.server.data_dir)
    }

    /// Flips a byte in the middle of every pack the server stored; returns their count.
    pub fn damage_packs(&self) -> usize {
        self.backend.damage_packs(&self.server.data_dir)
    }

    /// A fresh working repository pushing to origin, tracking `*.safetensors`, with the
    /// server configured in a committed `.gitmodel`.
    pub fn work_repo(&self, name: &str) -> PathBuf {
        let dir = self.env.path(name);
        let home = self.env.home.path();
        self.env.git(home, &["init", "-q", "-b", "main", name]);
        self.env.git(
            &dir,
            &["remote", "add", "origin", self.origin.to_str().unwrap()],
        );
        self.env.git(&dir, &["model", "track", "*.safetensors"]);
        self.env.git(
            &dir,
            &["config", "-f", ".gitmodel", "model.url", &self.model_url],
        );
        self.env.git(&dir, &["add", ".gitattributes", ".gitmodel"]);
        self.env
            .git(&dir, &["commit", "-q", "-m", "set up git-model"]);
        dir
    }

    pub fn commit_file(&self, repo: &Path, rel: &str, data: &[u8], msg: &str) {
        let path = repo.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        self.env.git(repo, &["add", rel]);
        self.env.git(repo, &["commit", "-q", "-m", msg]);
    }

    /// A clone whose tracked files stay pointers (`GIT_MODEL_SKIP_SMUDGE=1`).
    pub fn clone_pointers_only(&self, name: &str) -> PathBuf {
        let out = self.env.git_with(
            self.env.home.path(),
            &[("GIT_MODEL_SKIP_SMUDGE", "1")],
            &["clone", "-q", self.origin.to_str().unwrap(), name],
        );
        check_ok("clone with GIT_MODEL_SKIP_SMUDGE=1", &out);
        self.env.path(name)
    }

    pub fn clone(&self, name: &str) -> PathBuf {
        let home = self.env.home.path();
        self.env
            .git(home, &["clone", "-q", self.origin.to_str().unwrap(), name]);
        self.env.path(name)
    }
}

/// The blob git stores for `rel` at `rev` (a pointer for tracked files).
pub fn stored_blob(env: &GitEnv, repo: &Path, rev: &str, rel: &str) -> String {
    env.git(repo, &["cat-file", "-p", &format!("{rev}:{rel}")])
}

pub fn check_ok(what: &str, out: &std::process::Output) {
    gitmodel_testkit::check(what, Path::new("."), out);
}

/// Every file under `dir`, recursively.
pub fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
