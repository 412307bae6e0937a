//! The application layer's operations through the library, without the `git-model`
//! binary: real git repositories (the `git` binary and libgit2), the real server
//! in-process on a free loopback port, the clean/smudge filter driven through its
//! library entry points.

use std::path::{Path, PathBuf};
use std::process::Command;

use gitmodel_client::{ClientError, Progress};
use gitmodel_format::{Oid, Pointer};
use gitmodel_repo::checkout::{self, Destination};
use gitmodel_repo::content::{Ctx, Side};
use gitmodel_repo::status::{self, FileStatus};
use gitmodel_repo::{filter, maint, registry, transfer, PathFilter, Repo, UsageError};
use gitmodel_server::{serve, AppState, ServerConfig};

/// The real server on `127.0.0.1:<free port>`, on its own runtime; stopped on drop.
struct TestServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start(data_dir: &Path) -> TestServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let data_dir = data_dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), &data_dir);
                let state = AppState::open_local(config).await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv().expect("the server's address");
        TestServer {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// git with a private HOME and fixed identities and dates; no git-model on PATH and no
/// filter configured: the tests drive the filter through the library.
fn git(home: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct World {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    server: TestServer,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join(".gitconfig"), "").unwrap();
        let server = TestServer::start(&tmp.path().join("server"));
        World {
            home,
            server,
            _tmp: tmp,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.home.parent().unwrap().join(name)
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        git(&self.home, dir, args)
    }

    /// A new repository at `name` whose server is `acme/vision`.
    fn init(&self, name: &str) -> PathBuf {
        let dir = self.dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.git(&dir, &["init", "-q", "-b", "main"]);
        self.configure(&dir);
        dir
    }

    /// The server, and an identity in the repository's own config: the library runs
    /// git with this process's environment.
    fn configure(&self, dir: &Path) {
        let url = format!("{}/acme/vision", self.server.url);
        self.git(dir, &["config", "model.url", &url]);
        self.git(dir, &["config", "user.name", "Test Committer"]);
        self.git(dir, &["config", "user.email", "committer@example.com"]);
    }

    /// Cleans `content` as `path` through the library filter, writes the pointer in its
    /// place and commits it: what `git add` + `git commit` do with the filter installed.
    fn commit_file(&self, dir: &Path, path: &str, content: &[u8], msg: &str) -> Pointer {
        let mut pointer = Vec::new();
        filter::clean_once(open(dir), path, content, &mut pointer, quiet()).unwrap();
        let p = Pointer::parse(&pointer).expect("clean answers a pointer");
        assert_eq!(p.oid, Oid::of(content));
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, &pointer).unwrap();
        self.git(dir, &["add", path]);
        self.git(dir, &["commit", "-q", "-m", msg]);
        p
    }
}

fn open(dir: &Path) -> Repo {
    Repo::open_at(dir).unwrap()
}

fn quiet() -> filter::Notices {
    Box::new(|_| {})
}

fn model(versions: &[u64]) -> Vec<u8> {
    gitmodel_testkit::safetensors(7, 1 << 20, versions)
}

#[test]
fn push_clone_pull_read_and_registry_through_the_library() {
    let w = World::new();
    let a = w.init("a");
    let v1 = model(&[0, 0, 0, 0, 0, 0, 0, 0]);
    let p1 = w.commit_file(&a, "model.safetensors", &v1, "v1");

    // Push: everything is new; pushing again sends nothing.
    let repo_a = open(&a);
    let pushed = transfer::push(&repo_a, None, &[], false, &Progress::default()).unwrap();
    assert_eq!(
        pushed.url.as_deref(),
        Some(&*format!("{}/acme/vision", w.server.url))
    );
    assert_eq!((pushed.report.files, pushed.report.files_present), (1, 0));
    assert!(pushed.report.bytes_sent > 0);
    let again = transfer::push(&repo_a, None, &[], false, &Progress::default()).unwrap();
    assert_eq!(
        (again.report.files_present, again.report.bytes_sent),
        (1, 0)
    );

    // v2 changes one tensor of eight: the push sends about that much.
    let v2 = model(&[0, 0, 0, 1, 0, 0, 0, 0]);
    let p2 = w.commit_file(&a, "model.safetensors", &v2, "v2");
    // (The push covers every commit reachable from HEAD: v1 is on the server already.)
    let pushed = transfer::push(&repo_a, None, &[], false, &Progress::default()).unwrap();
    assert_eq!((pushed.report.files, pushed.report.files_present), (2, 1));
    assert!(
        pushed.report.bytes_new < v2.len() as u64 / 4,
        "{} new bytes of {}",
        pushed.report.bytes_new,
        v2.len()
    );

    // A clone without the filter holds pointers; pull writes the content.
    let b = w.dir("b");
    w.git(
        &w.home,
        &["clone", "-q", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    w.configure(&b);
    let repo_b = open(&b);
    let st = status::status(&repo_b).unwrap();
    assert_eq!(st.files.len(), 1);
    assert_eq!(st.files[0].1, FileStatus::NotDownloaded);
    let pulled = checkout::pull(&repo_b, &PathFilter::default(), &Progress::default()).unwrap();
    assert_eq!(pulled.written, vec!["model.safetensors".to_string()]);
    assert!(pulled.failed.is_empty());
    assert_eq!(pulled.bytes_written, v2.len() as u64);
    assert_eq!(std::fs::read(b.join("model.safetensors")).unwrap(), v2);
    let st = status::status(&repo_b).unwrap();
    assert_eq!(st.files[0].1, FileStatus::Ok);
    // The index entry was refreshed: git sees no change.
    assert_eq!(w.git(&b, &["status", "--porcelain"]), "");

    // fsck, locally and on the server.
    let checked = maint::fsck(&repo_b, &[], false, true).unwrap();
    assert_eq!(checked.files_checked, 1);
    assert_eq!(checked.bytes_verified, v2.len() as u64);
    assert_eq!(checked.files_on_server, Some(1));
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);

    // Reading a range of v1 in b, which never had v1: only the chunks it covers come.
    let ctx = Ctx::new(open(&b)).unwrap();
    let head1 = ctx.commit("HEAD~1").unwrap().id();
    let content = ctx
        .content_at(Side::Rev(head1), "model.safetensors")
        .unwrap()
        .unwrap();
    assert_eq!(content.pointer(), Some(&p1));
    let (from, len) = (3 << 20, 1000);
    let bytes = ctx.read_at(&content, from, len).unwrap();
    assert_eq!(bytes, &v1[from as usize..(from + len) as usize]);
    // The tensor bytes of v1 that differ from v2 are one tensor: fetched only as needed.
    let fetched = ctx.bytes_fetched.get();
    assert!(
        fetched < 2 << 20,
        "fetched {fetched} bytes for a 1000-byte read"
    );

    // The smudge filter through the library writes v1's content to a stream.
    let mut out = Vec::new();
    filter::smudge_once(
        open(&b),
        "model.safetensors",
        &p1.to_bytes()[..],
        &mut out,
        quiet(),
    )
    .unwrap();
    assert_eq!(out, v1);

    // The registry: promote v2 locally, then export it.
    std::fs::write(
        a.join("models.toml"),
        "[models.vision]\npath = \"model.safetensors\"\n",
    )
    .unwrap();
    w.git(&a, &["add", "models.toml"]);
    w.git(&a, &["commit", "-q", "-m", "manifest"]);
    let ctx_a = Ctx::new(open(&a)).unwrap();
    let mut told = None;
    let promoted = registry::promote(
        &ctx_a,
        "vision",
        "HEAD",
        "production",
        Some("first".into()),
        false,
        None,
        true,
        |p| told = Some(p.event.id.clone()),
    )
    .unwrap();
    assert_eq!(told.as_deref(), Some(promoted.event.id.as_str()));
    assert_eq!(promoted.event.version.oid, p2.oid.to_hex());
    let events = registry::view(&ctx_a).unwrap();
    assert_eq!(events.len(), 1);
    let out_path = w.dir("exported.safetensors");
    let exported = registry::export(&ctx_a, "vision@production", &out_path, None, |_| {}).unwrap();
    assert_eq!(exported.version.oid, p2.oid.to_hex());
    assert_eq!(std::fs::read(&out_path).unwrap(), v2);
    // Promoting the same version again is refused, naming it.
    let again = registry::promote(
        &ctx_a,
        "vision",
        "HEAD",
        "production",
        None,
        false,
        None,
        true,
        |_| {},
    )
    .unwrap_err();
    assert!(
        format!("{again:#}").contains("already in production"),
        "{again:#}"
    );
}

#[test]
fn errors_say_what_was_wrong_and_are_typed() {
    let w = World::new();
    let a = w.init("a");
    let repo = open(&a);
    // Bad pre-push input is a usage error naming the line.
    let e = transfer::pre_push_range(&repo, "origin", "just three fields\n").unwrap_err();
    let usage = e.downcast_ref::<UsageError>().expect("a usage error");
    assert!(usage.0.contains("just three fields"), "{}", usage.0);
    // An unknown ref.
    let e = transfer::commits_of(&repo, &["nope".into()]).unwrap_err();
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
    // Not a repository.
    let e = Repo::open_at(&w.dir("nowhere-else"))
        .err()
        .expect("no repository");
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");

    // A pointer whose content is nowhere: checkout fails with the server's typed error,
    // and nothing is written.
    let p = Pointer::new(Oid::of(b"never stored"), 12);
    let store = repo.store().unwrap();
    let target = a.join("never.bin");
    let e = checkout::checkout(
        &repo,
        &store,
        || repo.remote(),
        &p,
        "never.bin",
        Destination::File {
            target: &target,
            executable: false,
        },
    )
    .unwrap_err();
    let client = e
        .chain()
        .find_map(|c| c.downcast_ref::<ClientError>())
        .unwrap_or_else(|| panic!("a client error in {e:#}"));
    assert!(
        matches!(
            client,
            ClientError::Incomplete { .. } | ClientError::NotOnServer { .. }
        ),
        "{client:?}"
    );
    assert!(!target.exists());

    // A pull of a file the server lacks reports it and leaves the pointer.
    let pointer = w.commit_file(&a, "w.bin", b"local only content", "local");
    let b = w.dir("b");
    w.git(
        &w.home,
        &["clone", "-q", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    w.configure(&b);
    let pulled = checkout::pull(&open(&b), &PathFilter::default(), &Progress::default()).unwrap();
    assert!(pulled.written.is_empty());
    assert_eq!(pulled.failed.len(), 1);
    assert_eq!(pulled.failed[0].path, "w.bin");
    assert_eq!(
        std::fs::read(b.join("w.bin")).unwrap(),
        pointer.to_bytes(),
        "the pointer stays"
    );
}
