//! Security: tokens and scopes, credentials through git's credential helpers and
//! `GIT_MODEL_TOKEN`, isolation between namespaces, verification of every upload path,
//! request limits, slow clients, path validation and TLS. The real server binary, the
//! real `git` (and `git lfs`), over loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gitmodel_format::pack::{encode_chunk, PackBuilder};
use gitmodel_format::{ChunkId, Oid, Recipe, RecipeChunk};
use gitmodel_testkit::{safetensors, Server};

use crate::{check_ok, collect, server_exe, World};

const MIB: usize = 1 << 20;

/// Runs `git-model-server <args>` (a subcommand, or a server expected to exit).
fn server_cmd(args: &[&str]) -> Output {
    Command::new(server_exe())
        .args(args)
        .output()
        .expect("running git-model-server")
}

/// Creates a token in `data_dir` and returns its secret.
fn create_token(data_dir: &Path, scope: &str, name: &str) -> String {
    let dir = data_dir.to_str().unwrap();
    let out = server_cmd(&[
        "--data-dir",
        dir,
        "token",
        "create",
        "--scope",
        scope,
        "--name",
        name,
    ]);
    check_ok("git-model-server token create", &out);
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("gmt_"), "{secret:?}");
    secret
}

/// A [`World`] whose server has tokens: requests without one are refused.
struct Secure {
    w: World,
    data: tempfile::TempDir,
    /// `read:acme/*`
    reader: String,
    /// `write:acme/*`, named "CI"
    writer: String,
    /// `write:other/*`
    other: String,
}

impl Secure {
    fn new() -> Secure {
        Secure::with_args(&[])
    }

    fn with_args(args: &[&str]) -> Secure {
        let mut w = World::new();
        let data = tempfile::tempdir().unwrap();
        let reader = create_token(data.path(), "read:acme/*", "reader");
        let writer = create_token(data.path(), "write:acme/*", "CI");
        let other = create_token(data.path(), "write:other/*", "other-team");
        w.server = Server::start_with(&server_exe(), data.path(), args, &[]);
        w.model_url = w.server.repo_url("acme", "vision");
        Secure {
            w,
            data,
            reader,
            writer,
            other,
        }
    }

    fn files(&self, under: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect(&self.data.path().join(under), &mut out);
        out
    }
}

/// A raw HTTP/1.1 exchange (one request per connection), so that tests see exactly what
/// the server answers, headers included.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn addr_of(url: &str) -> &str {
    url.trim_start_matches("http://").split('/').next().unwrap()
}

/// Sends raw bytes and reads the whole answer (the server closes after it).
fn exchange(url: &str, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr_of(url)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (413) before the whole body is sent, then close.
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    Reply {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    }
}

fn request(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr_of(url),
        body.len()
    );
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    exchange(url, &raw)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Standard base64 with padding (for a Basic header by hand).
fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in text.as_bytes().chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn model(seed: u64) -> Vec<u8> {
    safetensors(seed, MIB, &[0, 0, 0])
}

fn assert_same(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "{}: {} bytes differ from the expected {}",
        path.display(),
        got.len(),
        want.len()
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lfs_batch_body(op: &str, oid: &Oid, size: u64) -> Vec<u8> {
    format!(
        r#"{{"operation":"{op}","objects":[{{"oid":"{}","size":{size}}}]}}"#,
        oid.to_hex()
    )
    .into_bytes()
}

const LFS_JSON: &str = "application/vnd.git-lfs+json";

#[test]
fn anonymous_serving_is_refused_on_a_public_address() {
    let data = tempfile::tempdir().unwrap();
    // The check runs before anything is bound or opened.
    let out = server_cmd(&[
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "it must not announce an address");
    let message = stderr(&out);
    assert!(
        message.contains("refusing to serve 0.0.0.0:0 without authentication")
            && message.contains("token create")
            && message.contains("--allow-anonymous"),
        "{message}"
    );
    assert!(!data.path().join("packs").exists());
}

#[test]
fn tokens_are_required_and_scoped() {
    let s = Secure::new();
    let url = &s.w.server.url;
    let exists = "/acme/vision/model/v1/chunks/exists";

    // No credentials: 401, with the headers that make git and git-lfs ask for them.
    let r = request(url, "POST", exists, &[], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"git-model\"")
    );
    let batch = "/acme/vision.git/info/lfs/objects/batch";
    let body = lfs_batch_body("download", &Oid::of(b"x"), 1);
    let r = request(url, "POST", batch, &[("Content-Type", LFS_JSON)], &body);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("lfs-authenticate"),
        Some("Basic realm=\"git-model\"")
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"git-model\"")
    );

    // Unknown tokens, in either scheme, are 401 too; known ones work in both.
    let bad = bearer("gmt_0000");
    let r = request(url, "POST", exists, &[("Authorization", &bad)], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("not valid"), "{}", r.text());
    let basic = |user: &str, token: &str| format!("Basic {}", base64(&format!("{user}:{token}")));
    for auth in [bearer(&s.reader), basic("anyone", &s.reader)] {
        let r = request(url, "POST", exists, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // A read token may not write: 403 with a message naming the missing right.
    let pack = format!("/acme/vision/model/v1/packs/{}", "ab".repeat(32));
    let r = request(
        url,
        "PUT",
        &pack,
        &[("Authorization", &bearer(&s.reader))],
        b"x",
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("read access to acme/vision; this needs write"),
        "{}",
        r.text()
    );
    // Outside its scopes, a token sees what it would see of a repository that does not
    // exist.
    let oid = Oid::of(b"anything");
    for path in [
        format!("/other/secret/model/v1/files/{oid}"),
        format!("/other/never-created/model/v1/files/{oid}"),
    ] {
        let r = request(
            url,
            "GET",
            &path,
            &[("Authorization", &bearer(&s.writer))],
            b"",
        );
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.text().contains("\"not_found\""), "{}", r.text());
    }
    // A token revoked while the server runs stops working within about a second.
    let list = server_cmd(&[
        "--data-dir",
        s.data.path().to_str().unwrap(),
        "token",
        "list",
    ]);
    check_ok("token list", &list);
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    for secret in [&s.reader, &s.writer, &s.other] {
        assert!(
            !listing.contains(secret.as_str()),
            "token list shows a secret"
        );
    }
    let id = listing
        .lines()
        .find(|l| l.contains("\treader\t"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_string();
    let revoke = server_cmd(&[
        "--data-dir",
        s.data.path().to_str().unwrap(),
        "token",
        "revoke",
        &id,
    ]);
    check_ok("token revoke", &revoke);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(
            url,
            "POST",
            exists,
            &[("Authorization", &bearer(&s.reader))],
            b"",
        );
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn read_token_clones_write_token_pushes() {
    let s = Secure::new();
    let w = &s.w;
    let repo = w.work_repo("work");
    let v1 = model(1);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");

    // Without credentials (no helper, no prompts), the push fails and says why.
    let out = w.env.git_output(&repo, &["push", "-q", "origin", "main"]);
    assert!(!out.status.success(), "pushed without credentials");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("authentication required for {}", w.model_url))
            && err.contains("GIT_MODEL_TOKEN"),
        "{err}"
    );

    // A read token: the push is refused, clearly, and the token is not shown.
    let out = w.env.git_with(
        &repo,
        &[("GIT_MODEL_TOKEN", &s.reader)],
        &["push", "-q", "origin", "main"],
    );
    assert!(!out.status.success(), "a read token pushed");
    let err = stderr(&out);
    assert!(
        err.contains("403") && err.contains("read access to acme/vision"),
        "{err}"
    );
    assert!(!err.contains(&s.reader), "the token leaked into: {err}");

    // The write token pushes.
    let out = w.env.git_with(
        &repo,
        &[("GIT_MODEL_TOKEN", &s.writer)],
        &["push", "-q", "origin", "main"],
    );
    check_ok("push with the write token", &out);

    // The read token clones (the smudge filter downloads) and pulls.
    let home = w.env.home.path();
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_TOKEN", &s.reader)],
        &["clone", "-q", w.origin.to_str().unwrap(), "copy"],
    );
    check_ok("clone with the read token", &out);
    let copy = w.env.path("copy");
    assert_same(&copy.join("model.safetensors"), &v1);
    let v2 = safetensors(1, MIB, &[0, 1, 0]);
    w.commit_file(&repo, "model.safetensors", &v2, "v2");
    let out = w.env.git_with(
        &repo,
        &[("GIT_MODEL_TOKEN", &s.writer)],
        &["push", "-q", "origin", "main"],
    );
    check_ok("second push", &out);
    let out = w.env.git_with(
        &copy,
        &[("GIT_MODEL_TOKEN", &s.reader)],
        &["pull", "-q", "origin", "main"],
    );
    check_ok("pull with the read token", &out);
    assert_same(&copy.join("model.safetensors"), &v2);

    // A pointer-only clone without credentials: `git model pull` names the URL.
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "lazy"],
    );
    check_ok("pointer-only clone", &out);
    let out = w.env.git_output(&w.env.path("lazy"), &["model", "pull"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("authentication required for {}", w.model_url)),
        "{err}"
    );

    // `git model env` says a token is set, never which.
    let out = w
        .env
        .git_with(&copy, &[("GIT_MODEL_TOKEN", &s.reader)], &["model", "env"]);
    check_ok("git model env", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("GIT_MODEL_TOKEN") && !text.contains(&s.reader),
        "{text}"
    );
}

#[test]
fn push_and_clone_through_git_credential_helper() {
    let s = Secure::new();
    let w = &s.w;
    let home = w.env.home.path();
    w.env
        .git(home, &["config", "--global", "credential.helper", "store"]);
    let host = addr_of(&w.server.url);
    let store = w.env.path(".git-credentials");
    std::fs::write(&store, format!("http://git:{}@{host}\n", s.writer)).unwrap();

    let repo = w.work_repo("work");
    let v1 = model(2);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let copy = w.clone("copy");
    assert_same(&copy.join("model.safetensors"), &v1);
    // Approved credentials stay stored.
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(stored.contains(&s.writer), "{stored}");

    // Credentials the server refuses are rejected (erased from the store) and the push
    // fails with a clear message.
    std::fs::write(&store, format!("http://git:gmt_revoked@{host}\n")).unwrap();
    w.commit_file(&repo, "model.safetensors", &model(3), "v2");
    let out = w.env.git_output(&repo, &["push", "-q", "origin", "main"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("authentication required for") && err.contains("refused"),
        "{err}"
    );
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(!stored.contains("gmt_revoked"), "not rejected: {stored}");
}

#[test]
fn namespaces_learn_nothing_about_each_other() {
    let s = Secure::new();
    let w = &s.w;
    let url = &w.server.url;
    // acme/vision, pushed by the acme writer.
    let repo = w.work_repo("work");
    let mine = model(4);
    w.commit_file(&repo, "model.safetensors", &mine, "v1");
    let out = w.env.git_with(
        &repo,
        &[("GIT_MODEL_TOKEN", &s.writer)],
        &["push", "-q", "origin", "main"],
    );
    check_ok("acme push", &out);

    // other/secret, pushed by the other team through its own repository.
    let secret_dir = w.env.path("secret");
    let home = w.env.home.path();
    w.env.git(home, &["init", "-q", "-b", "main", "secret"]);
    w.env.git(&secret_dir, &["model", "track", "*.safetensors"]);
    let secret_url = w.server.repo_url("other", "secret");
    w.env.git(
        &secret_dir,
        &["config", "-f", ".gitmodel", "model.url", &secret_url],
    );
    let secret = model(5);
    w.commit_file(&secret_dir, "model.safetensors", &secret, "secret");
    let out = w.env.git_with(
        &secret_dir,
        &[("GIT_MODEL_TOKEN", &s.other)],
        &["model", "push", "--all"],
    );
    check_ok("other push", &out);
    let oid = Oid::of(&secret);

    // What the other team's token sees: its recipe, its packs.
    let theirs = [("Authorization", bearer(&s.other))];
    let theirs: Vec<(&str, &str)> = theirs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = request(
        url,
        "GET",
        &format!("/other/secret/model/v1/files/{oid}"),
        &theirs,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let recipe = Recipe::decode(&r.body).unwrap();
    let ids: Vec<u8> = recipe.chunks.iter().flat_map(|c| c.id.0).collect();
    let pack = recipe.segments[0].pack;
    let r = request(
        url,
        "POST",
        "/other/secret/model/v1/chunks/exists",
        &theirs,
        &ids,
    );
    assert!(r.body.iter().all(|&b| b == 1), "{:?}", r.body);

    // What an acme token sees of it: nothing.
    let acme = bearer(&s.writer);
    let acme = [("Authorization", acme.as_str())];
    for path in [
        format!("/other/secret/model/v1/files/{oid}"),
        format!("/other/secret/model/v1/packs/{pack}"),
        format!("/other/secret.git/info/lfs/objects/{oid}"),
    ] {
        let r = request(url, "GET", &path, &acme, b"");
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let body = lfs_batch_body("download", &oid, secret.len() as u64);
    let lfs_headers = [acme[0], ("Content-Type", LFS_JSON)];
    let r = request(
        url,
        "POST",
        "/other/secret.git/info/lfs/objects/batch",
        &lfs_headers,
        &body,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // ... not through its own repository either: the chunks and the pack exist on the
    // server, but acme/vision never uploaded them.
    let r = request(
        url,
        "POST",
        "/acme/vision/model/v1/chunks/exists",
        &acme,
        &ids,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.iter().all(|&b| b == 0),
        "chunks leaked: {:?}",
        r.body
    );
    let r = request(
        url,
        "GET",
        &format!("/acme/vision/model/v1/packs/{pack}"),
        &acme,
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(
        url,
        "GET",
        &format!("/acme/vision.git/info/lfs/objects/{oid}"),
        &acme,
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // Naming the chunks does not make them its own: registration finds none of them.
    let r = request(
        url,
        "POST",
        "/acme/vision/model/v1/files",
        &acme,
        &recipe.unlocated().encode(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("missing_chunks"), "{}", r.text());
}

#[test]
fn git_lfs_clone_with_basic_credentials() {
    let s = Secure::new();
    let w = &s.w;
    let home = w.env.home.path();
    let out = w.env.git_output(home, &["lfs", "version"]);
    assert!(
        out.status.success(),
        "these tests need git-lfs: {}",
        stderr(&out)
    );
    w.env
        .git(home, &["config", "--global", "credential.helper", "store"]);
    let host = addr_of(&w.server.url);
    std::fs::write(
        w.env.path(".git-credentials"),
        format!("http://ci:{}@{host}\n", s.writer),
    )
    .unwrap();

    w.env.git(home, &["init", "-q", "-b", "main", "lfswork"]);
    let repo = w.env.path("lfswork");
    let lfs_url = format!("{}.git/info/lfs", w.server.repo_url("acme", "lfsrepo"));
    for args in [
        vec!["lfs", "install", "--local"],
        vec!["lfs", "track", "*.bin"],
        vec!["config", "-f", ".lfsconfig", "lfs.url", &lfs_url],
        vec!["remote", "add", "origin", w.origin.to_str().unwrap()],
        vec!["add", ".gitattributes", ".lfsconfig"],
        vec!["commit", "-q", "-m", "lfs"],
    ] {
        w.env.git(&repo, &args);
    }
    let data = model(6);
    w.commit_file(&repo, "weights.bin", &data, "weights");
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    // The lock's owner is the token's name.
    let out = w.env.git(&repo, &["lfs", "lock", "weights.bin"]);
    assert!(out.contains("Locked weights.bin"), "{out}");
    let locks = w.env.git(&repo, &["lfs", "locks"]);
    assert!(locks.contains("CI"), "{locks}");

    w.env.git(
        home,
        &[
            "clone",
            "-q",
            "--no-checkout",
            w.origin.to_str().unwrap(),
            "lfscopy",
        ],
    );
    let copy = w.env.path("lfscopy");
    w.env.git(&copy, &["lfs", "install", "--local"]);
    w.env.git(&copy, &["reset", "-q", "--hard", "HEAD"]);
    assert_same(&copy.join("weights.bin"), &data);

    // Without credentials, git-lfs is refused.
    std::fs::write(w.env.path(".git-credentials"), "").unwrap();
    w.env.git(
        home,
        &[
            "clone",
            "-q",
            "--no-checkout",
            w.origin.to_str().unwrap(),
            "nocreds",
        ],
    );
    let nocreds = w.env.path("nocreds");
    w.env.git(&nocreds, &["lfs", "install", "--local"]);
    let out = w
        .env
        .git_output(&nocreds, &["lfs", "fetch", "origin", "main"]);
    assert!(!out.status.success(), "git lfs fetched without credentials");
}

/// A pack of two chunks, its id, and its chunks' ids.
fn small_pack(seed: u8) -> (gitmodel_format::PackId, Vec<u8>, Vec<RecipeChunk>, Vec<u8>) {
    let raws: Vec<Vec<u8>> = (0..2u8)
        .map(|i| {
            (0..50_000u32)
                .map(|j| (j as u8) ^ seed ^ i.wrapping_mul(77))
                .collect()
        })
        .collect();
    let mut builder = PackBuilder::new();
    let mut chunks = Vec::new();
    let mut data = Vec::new();
    for raw in &raws {
        let (codec, stored) = encode_chunk(raw);
        builder.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        chunks.push(RecipeChunk {
            id: ChunkId::of(raw),
            raw_len: raw.len() as u32,
        });
        data.extend_from_slice(raw);
    }
    let (pack, bytes, _) = builder.finish();
    (pack, bytes, chunks, data)
}

#[test]
fn tampered_uploads_store_nothing() {
    let s = Secure::new();
    let url = &s.w.server.url;
    let auth = bearer(&s.writer);
    let auth = [("Authorization", auth.as_str())];
    let base = "/acme/vision/model/v1";

    // A pack whose bytes do not match its id (one byte flipped): 422, nothing stored.
    let (pack, mut bytes, chunks, data) = small_pack(1);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let r = request(url, "PUT", &format!("{base}/packs/{pack}"), &auth, &bytes);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("bad_pack"), "{}", r.text());
    assert!(s.files("packs").is_empty(), "{:?}", s.files("packs"));
    assert!(s.files("repos").is_empty(), "{:?}", s.files("repos"));

    // A recipe claiming the wrong file: refused per file, no recipe stored.
    let (pack, bytes, chunks2, data2) = small_pack(2);
    let r = request(url, "PUT", &format!("{base}/packs/{pack}"), &auth, &bytes);
    assert_eq!(r.status, 200, "{}", r.text());
    let lie = Recipe {
        chunker: 1,
        oid: Oid::of(b"not these bytes"),
        size: data2.len() as u64,
        chunks: chunks2,
        segments: Vec::new(),
    };
    let r = request(url, "POST", &format!("{base}/files"), &auth, &lie.encode());
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("hash_mismatch"), "{}", r.text());
    let recipes: Vec<PathBuf> = s
        .files("repos")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "recipe"))
        .collect();
    assert!(recipes.is_empty(), "{recipes:?}");
    let _ = (chunks, data);

    // A Git LFS upload whose body does not hash to its oid: 422, and the packs staged
    // while it streamed in are deleted.
    let packs_before = s.files("packs");
    let body = model(7);
    let claimed = Oid::of(b"something else");
    let lfs_headers = [auth[0], ("Content-Type", "application/octet-stream")];
    let r = request(
        url,
        "PUT",
        &format!("/acme/vision.git/info/lfs/objects/{claimed}"),
        &lfs_headers,
        &body,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains(&Oid::of(&body).to_hex()), "{}", r.text());
    assert_eq!(
        s.files("packs"),
        packs_before,
        "the refused upload left packs"
    );
    let recipes: Vec<PathBuf> = s
        .files("repos")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "recipe"))
        .collect();
    assert!(recipes.is_empty(), "{recipes:?}");
}

#[test]
fn oversize_requests_are_refused() {
    let s = Secure::with_args(&["--max-lfs-object-size", "1M"]);
    let url = &s.w.server.url;
    let auth = bearer(&s.writer);

    // A Git LFS object over the limit: refused from its Content-Length, before the body.
    let raw = format!(
        "PUT /acme/vision.git/info/lfs/objects/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: {auth}\r\nContent-Length: {}\r\n\r\npartial",
        Oid::of(b"big"),
        2 * MIB
    );
    let r = exchange(url, raw.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.text()
            .contains("larger than this server's limit of 1048576 bytes"),
        "{}",
        r.text()
    );
    // ... and announced as too large in the batch.
    let body = lfs_batch_body("upload", &Oid::of(b"big"), 2 * MIB as u64);
    let r = request(
        url,
        "POST",
        "/acme/vision.git/info/lfs/objects/batch",
        &[("Authorization", &auth), ("Content-Type", LFS_JSON)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("\"code\":422") && r.text().contains("limit"),
        "{}",
        r.text()
    );
    // A chunked body over the limit is cut off when it passes it.
    let mut raw = format!(
        "PUT /acme/vision.git/info/lfs/objects/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n",
        Oid::of(b"big")
    )
    .into_bytes();
    let block = vec![b'z'; 64 * 1024];
    for _ in 0..20 {
        raw.extend_from_slice(format!("{:x}\r\n", block.len()).as_bytes());
        raw.extend_from_slice(&block);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(url, &raw);
    assert_eq!(r.status, 413, "{}", r.text());

    // A native query body over its limit.
    let raw = format!(
        "POST /acme/vision/model/v1/chunks/exists HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        1 << 30
    );
    let r = exchange(url, raw.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("too_large"), "{}", r.text());

    // Too many header lines, or too large a head: 431 from the HTTP layer.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-Filler-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(exchange(url, many.as_bytes()).status, 431);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "y".repeat(100 * 1024)
    );
    assert_eq!(exchange(url, huge.as_bytes()).status, 431);
    // The server is still fine.
    assert_eq!(request(url, "GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn slow_header_client_is_disconnected() {
    let s = Secure::with_args(&["--header-read-timeout", "2"]);
    let url = &s.w.server.url;
    let mut stream = TcpStream::connect(addr_of(url)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // The server gives up on the head: the connection ends (possibly after a 408).
    let _ = stream.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "disconnected after {waited:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // A prompt client is served as usual.
    assert_eq!(request(url, "GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn traversal_attempts_are_bad_requests() {
    let s = Secure::new();
    let url = &s.w.server.url;
    let oid = Oid::of(b"x");
    for path in [
        format!("/acme/%2e%2e/model/v1/files/{oid}"),
        format!("/acme%2fvision/model/v1/files/{oid}"),
        "/acme/vision/model/v1/packs/..%2f..%2fetc%2fpasswd".to_string(),
        "/acme/vision/model/v1/files/../../../etc/passwd".to_string(),
        format!("/acme/vision/info/lfs/objects/..%2F{oid}"),
        "/acme/vision/info/lfs/locks/%2e%2e/unlock".to_string(),
        format!("/acme\\..\\other/model/v1/files/{oid}"),
        format!("/acme/./vision/model/v1/files/{oid}"),
    ] {
        // Refused before authentication: the answer is the same with or without a token.
        let r = request(url, "GET", &path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    // Traversal in an id or name that routing accepts is still a 400.
    let r = request(
        url,
        "GET",
        "/acme/vision/model/v1/packs/....etc",
        &[("Authorization", &bearer(&s.reader))],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "git-model test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

#[test]
fn tls_push_and_clone_with_ssl_cainfo() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let mut w = World::new();
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    w.server = Server::start_with(&server_exe(), data.path(), &args, &[]);
    assert!(
        w.server.url.starts_with("https://127.0.0.1:"),
        "{}",
        w.server.url
    );
    w.model_url = w.server.repo_url("acme", "vision");

    let repo = w.work_repo("work");
    let v1 = model(8);
    w.commit_file(&repo, "model.safetensors", &v1, "v1");
    // Without the CA the certificate is not trusted, and the push says so.
    let out = w.env.git_output(&repo, &["push", "-q", "origin", "main"]);
    assert!(!out.status.success(), "pushed to an untrusted certificate");
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let home = w.env.home.path();
    w.env.git(
        home,
        &["config", "--global", "http.sslCAInfo", ca.to_str().unwrap()],
    );
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    let copy = w.clone("copy");
    assert_same(&copy.join("model.safetensors"), &v1);

    // http.sslVerify=false connects without the CA (and warns).
    w.env
        .git(home, &["config", "--global", "--unset", "http.sslCAInfo"]);
    w.env
        .git(home, &["config", "--global", "http.sslVerify", "false"]);
    let v2 = model(9);
    w.commit_file(&repo, "model.safetensors", &v2, "v2");
    let out = w.env.git_output(&repo, &["push", "-q", "origin", "main"]);
    check_ok("push with http.sslVerify=false", &out);
    assert!(stderr(&out).contains("not checked"), "{}", stderr(&out));
}

#[test]
fn expired_tokens_are_refused() {
    let s = Secure::new();
    let dir = s.data.path().to_str().unwrap();
    let out = server_cmd(&[
        "--data-dir",
        dir,
        "token",
        "create",
        "--scope",
        "read:acme/*",
        "--name",
        "short",
        "--expires",
        "1s",
    ]);
    check_ok("token create --expires 1s", &out);
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let exists = "/acme/vision/model/v1/chunks/exists";
    let url = &s.w.server.url;
    // Expiry is checked per request: wait it out (the server re-reads tokens.json).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = request(
        url,
        "POST",
        exists,
        &[("Authorization", &bearer(&secret))],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
    // A token without expiry from the same store still works.
    let r = request(
        url,
        "POST",
        exists,
        &[("Authorization", &bearer(&s.reader))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

// Issue 15, "Smaller": the token file failing closed, unique token names, range units
// without regard to case, Git LFS sizes past 2^63.

/// How a server process started by [`spawn_server`] ended up.
enum Started {
    /// Serving at this URL; its log goes to the file.
    Serving {
        child: std::process::Child,
        url: String,
        log: PathBuf,
    },
    /// It exited before announcing an address (its log is in the text).
    Exited { code: Option<i32>, log: String },
}

impl Started {
    fn serving(self) -> (std::process::Child, String, PathBuf) {
        match self {
            Started::Serving { child, url, log } => (child, url, log),
            Started::Exited { code, log } => panic!("the server exited ({code:?}): {log}"),
        }
    }

    fn exited(self) -> (Option<i32>, String) {
        match self {
            Started::Exited { code, log } => (code, log),
            Started::Serving { mut child, url, .. } => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server started at {url}, but it should have refused to")
            }
        }
    }
}

/// Starts `git-model-server --listen 127.0.0.1:0 --data-dir <dir> <args>` with its log
/// in a file, so that a test can read what it logged, and tell a refusal to start from a
/// start (without hanging on a server that was expected to exit).
fn spawn_server(data_dir: &Path, args: &[&str]) -> Started {
    use std::io::BufRead;
    let log = data_dir.with_extension(format!("log-{}", std::process::id()));
    let mut child = Command::new(server_exe())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting git-model-server");
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    match line.trim().rsplit(' ').next() {
        Some(url) if url.starts_with("http://") => Started::Serving {
            child,
            url: url.to_string(),
            log,
        },
        _ => {
            let code = child.wait().unwrap().code();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            Started::Exited { code, log: text }
        }
    }
}

/// Sends the request every 100 ms until `done` holds for its answer (at most 10 s: a
/// running server re-reads the token file within a second).
fn poll(what: &str, send: impl Fn() -> Reply, done: impl Fn(&Reply) -> bool) -> Reply {
    let started = Instant::now();
    loop {
        let r = send();
        if done(&r) {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still {} {} after 10 s",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_lost_token_file_fails_closed_until_it_is_restored() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("srv");
    std::fs::create_dir(&dir).unwrap();
    // A loopback server without tokens serves anonymously, until a token is created.
    let (mut child, url, log) = spawn_server(&dir, &[]).serving();
    let exists = "/acme/vision/model/v1/chunks/exists";
    let anonymous = || request(&url, "POST", exists, &[], b"");
    assert_eq!(anonymous().status, 200);
    let secret = create_token(&dir, "write:acme/*", "CI");
    let auth = bearer(&secret);
    let with_token = || request(&url, "POST", exists, &[("Authorization", &auth)], b"");
    poll("anonymous after token create", anonymous, |r| {
        r.status == 401
    });
    assert_eq!(with_token().status, 200);

    // The file disappears: every request is refused (not served anonymously), with a
    // message saying why, and the log says so as an error.
    let tokens = dir.join("tokens.json");
    let saved = std::fs::read(&tokens).unwrap();
    std::fs::remove_file(&tokens).unwrap();
    let r = poll("anonymous after rm tokens.json", anonymous, |r| {
        r.status != 401
    });
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("token file is missing"), "{}", r.text());
    let r = with_token();
    assert_eq!(r.status, 503, "{}", r.text());
    // The Git LFS endpoints too, in their error shape.
    let batch = request(
        &url,
        "POST",
        "/acme/vision.git/info/lfs/objects/batch",
        &[("Content-Type", LFS_JSON)],
        &lfs_batch_body("download", &Oid::of(b"x"), 1),
    );
    assert_eq!(batch.status, 503, "{}", batch.text());
    assert!(batch.text().contains("\"message\""), "{}", batch.text());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("ERROR") && logged.contains("has disappeared"),
        "{logged}"
    );

    // Restored: the old tokens work again, and anonymous requests are refused again.
    std::fs::write(&tokens, &saved).unwrap();
    poll("the token after restoring", with_token, |r| r.status == 200);
    assert_eq!(anonymous().status, 401);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);

    // A server starting without the file, after tokens existed, refuses to start.
    std::fs::remove_file(&tokens).unwrap();
    let (code, message) = spawn_server(&dir, &[]).exited();
    assert_eq!(code, Some(2), "{message}");
    assert!(
        message.contains("is missing, but tokens existed") && message.contains("token create"),
        "{message}"
    );
    let out = server_cmd(&["--data-dir", dir.to_str().unwrap(), "token", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is missing"), "{}", stderr(&out));

    // Creating a token starts a new file (the old tokens stay invalid).
    let fresh = create_token(&dir, "read:acme/*", "reader");
    let (mut child, url, log) = spawn_server(&dir, &[]).serving();
    let r = request(&url, "POST", exists, &[("Authorization", &auth)], b"");
    assert_eq!(
        r.status,
        401,
        "the lost token must not come back: {}",
        r.text()
    );
    let r = request(
        &url,
        "POST",
        exists,
        &[("Authorization", &bearer(&fresh))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);

    // Revoking the last token is the explicit way to have none: the file is then empty,
    // and a missing file afterwards is no longer a loss.
    let list = server_cmd(&["--data-dir", dir.to_str().unwrap(), "token", "list"]);
    check_ok("token list", &list);
    let id = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    let out = server_cmd(&["--data-dir", dir.to_str().unwrap(), "token", "revoke", &id]);
    check_ok("token revoke", &out);
    std::fs::remove_file(&tokens).unwrap();
    let (mut child, url, log) = spawn_server(&dir, &[]).serving();
    assert_eq!(request(&url, "POST", exists, &[], b"").status, 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
}

#[test]
fn token_names_are_unique() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("srv");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.to_str().unwrap();
    create_token(&dir, "write:acme/*", "CI");
    // A second token of the same name is refused, naming the one that has it.
    let out = server_cmd(&[
        "--data-dir",
        d,
        "token",
        "create",
        "--scope",
        "read:*",
        "--name",
        "CI",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no secret for a refused token");
    assert!(
        stderr(&out).contains("a token named \"CI\" exists already"),
        "{}",
        stderr(&out)
    );
    let list = server_cmd(&["--data-dir", d, "token", "list"]);
    check_ok("token list", &list);
    assert_eq!(String::from_utf8(list.stdout).unwrap().lines().count(), 2);

    // A config-file token of the same name: the server refuses to start.
    let config = data.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[[tokens]]\nid = \"deploy\"\nname = \"CI\"\nscopes = [\"read:*\"]\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let (code, message) = spawn_server(&dir, &["--config", config.to_str().unwrap()]).exited();
    assert_eq!(code, Some(2), "{message}");
    assert!(
        message.contains("token name \"CI\" is used by tokens"),
        "{message}"
    );
    // And `token create` sees the config's names too.
    let out = server_cmd(&[
        "--data-dir",
        d,
        "--config",
        config.to_str().unwrap(),
        "token",
        "create",
        "--scope",
        "read:*",
        "--name",
        "CI",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn range_units_and_header_names_are_case_insensitive() {
    let w = World::new();
    let url = &w.server.url;
    let base = "/acme/vision/model/v1";
    let (pack, bytes, _, _) = small_pack(3);
    let r = request(url, "PUT", &format!("{base}/packs/{pack}"), &[], &bytes);
    assert_eq!(r.status, 200, "{}", r.text());
    let path = format!("{base}/packs/{pack}");
    for (name, value, want) in [
        ("Range", "bytes=0-9", 0..10),
        ("RANGE", "BYTES=0-9", 0..10),
        ("range", "Bytes=-4", bytes.len() - 4..bytes.len()),
    ] {
        let r = request(url, "GET", &path, &[(name, value)], b"");
        assert_eq!(r.status, 206, "{name}: {value}: {}", r.text());
        assert_eq!(r.body, &bytes[want.clone()], "{name}: {value}");
        let content_range = format!("bytes {}-{}/{}", want.start, want.end - 1, bytes.len());
        assert_eq!(r.header("content-range"), Some(content_range.as_str()));
    }
    // Another unit is still refused.
    let r = request(url, "GET", &path, &[("Range", "items=0-9")], b"");
    assert_eq!(r.status, 400, "{}", r.text());

    // Git LFS object downloads parse Range the same way.
    let body = model(11);
    let oid = Oid::of(&body);
    let object = format!("/acme/vision.git/info/lfs/objects/{oid}");
    let r = request(
        url,
        "PUT",
        &object,
        &[("Content-Type", "application/octet-stream")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(url, "GET", &object, &[("RANGE", "BYTES=100-199")], b"");
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, &body[100..200]);
}

#[test]
fn lfs_sizes_past_2_63_are_refused_naming_the_object() {
    let w = World::new();
    let url = &w.server.url;
    let batch = "/acme/vision.git/info/lfs/objects/batch";
    let headers = [("Content-Type", LFS_JSON)];
    let oids: Vec<Oid> = (0..3u8).map(|i| Oid::of(&[i])).collect();
    let body = format!(
        r#"{{"operation":"download","objects":[
            {{"oid":"{}","size":18446744073709551616}},
            {{"oid":"{}","size":9223372036854775808}},
            {{"oid":"{}","size":9223372036854775807}}]}}"#,
        oids[0], oids[1], oids[2]
    );
    let r = request(url, "POST", batch, &headers, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let objects = answer["objects"].as_array().unwrap();
    for (object, oid) in objects.iter().zip(&oids).take(2) {
        assert_eq!(object["error"]["code"], 422, "{object}");
        let message = object["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&oid.to_hex()) && message.contains("2^63"),
            "{message}"
        );
        // Nothing is echoed that a client's signed 64-bit size cannot hold.
        assert!(object.get("size").is_none(), "{object}");
    }
    // 2^63 - 1 is a size (absent here, so a per-object 404), echoed as an integer.
    assert_eq!(objects[2]["error"]["code"], 404, "{}", objects[2]);
    assert_eq!(
        objects[2]["size"].as_i64(),
        Some(i64::MAX),
        "{}",
        objects[2]
    );
    assert!(
        !r.text().contains("e19"),
        "a size was echoed as a float: {}",
        r.text()
    );

    // `verify` refuses them too.
    let verify = "/acme/vision.git/info/lfs/verify";
    let body = format!(r#"{{"oid":"{}","size":18446744073709551616}}"#, oids[0]);
    let r = request(url, "POST", verify, &headers, body.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains(&oids[0].to_hex()), "{}", r.text());
}
