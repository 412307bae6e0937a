//! S3 storage and stateless server nodes, against a real Garage (`scripts/garage`).
//!
//! The gate and the connection settings are those of `crate::backend` (which also runs
//! the core suite on Garage): without `GIT_MODEL_TEST_S3=1` these tests print why and
//! pass; with it, a missing or unreachable Garage is a failure.
//!
//! Every test works under its own random prefix of the bucket, so tests run in parallel
//! and reruns never see each other's objects. The test process's own environment is never
//! changed: the `AWS_*` variables are passed to the server processes only.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitmodel_format::pack::{encode_chunk, verify_pack};
use gitmodel_format::{ChunkId, Oid, PackBuilder, PackId, Pointer, Recipe, RecipeChunk};
use gitmodel_server::{S3Location, S3Options, S3Store, Storage, StorageError};
use gitmodel_testkit::{safetensors, GitEnv, Server};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::backend::{runtime, S3Env};
use crate::git_model_exe;

const MIB: usize = 1 << 20;

fn model(mib: usize, edited: &[usize]) -> Vec<u8> {
    let mut versions = vec![0u64; mib];
    for &i in edited {
        versions[i] += 1;
    }
    safetensors(7, MIB, &versions)
}

fn assert_same(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "{}: {} bytes differ from the expected {} bytes",
        path.display(),
        got.len(),
        want.len()
    );
}

/// A hermetic git environment with git-model installed, a bare origin, and a working
/// repository tracking `*.safetensors` whose committed `.gitmodel` names `model_url`.
struct Repos {
    env: GitEnv,
    origin: PathBuf,
    work: PathBuf,
}

impl Repos {
    fn new(model_url: &str) -> Repos {
        let env = GitEnv::new(&git_model_exe());
        let home = env.home.path().to_path_buf();
        env.git(&home, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        env.git(&home, &["model", "install"]);
        env.git(&home, &["init", "-q", "-b", "main", "work"]);
        let origin = env.path("origin.git");
        let work = env.path("work");
        env.git(
            &work,
            &["remote", "add", "origin", origin.to_str().unwrap()],
        );
        env.git(&work, &["model", "track", "*.safetensors"]);
        env.git(
            &work,
            &["config", "-f", ".gitmodel", "model.url", model_url],
        );
        env.git(&work, &["add", ".gitattributes", ".gitmodel"]);
        env.git(&work, &["commit", "-q", "-m", "set up git-model"]);
        Repos { env, origin, work }
    }

    fn commit_and_push(&self, data: &[u8], msg: &str, via: &str) {
        fs::write(self.work.join("model.safetensors"), data).unwrap();
        self.env.git(&self.work, &["add", "model.safetensors"]);
        self.env.git(&self.work, &["commit", "-q", "-m", msg]);
        let out = self.env.git_with(
            &self.work,
            &[("GIT_MODEL_URL", via)],
            &["push", "-q", "origin", "main"],
        );
        crate::check_ok(&format!("git push ({msg}) via {via}"), &out);
    }

    /// A clone whose smudge filter downloads through `via`.
    fn clone_via(&self, name: &str, via: &str, skip_smudge: bool) -> PathBuf {
        let mut env = vec![("GIT_MODEL_URL", via)];
        if skip_smudge {
            env.push(("GIT_MODEL_SKIP_SMUDGE", "1"));
        }
        let out = self.env.git_with(
            self.env.home.path(),
            &env,
            &["clone", "-q", self.origin.to_str().unwrap(), name],
        );
        crate::check_ok(&format!("git clone via {via}"), &out);
        self.env.path(name)
    }
}

#[test]
fn s3_two_nodes_share_one_bucket_restart_and_dedup() {
    let Some(s3) = S3Env::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, prefix) = s3.fresh_store("share");
    let _cleanup = s3.cleanup(&prefix);
    let mut a = s3.server(dir.path(), &store, &[]);
    // B re-lists packs every second, so it learns of A's pushes on its own.
    let b = s3.server(dir.path(), &store, &["--index-refresh", "1"]);
    let (a_url, b_url) = (a.repo_url("acme", "vision"), b.repo_url("acme", "vision"));
    let repos = Repos::new(&a_url);

    let started = Instant::now();
    let v1 = model(24, &[]);
    repos.commit_and_push(&v1, "v1", &a_url);
    let after_v1 = s3.stored_bytes(&prefix);
    assert!(after_v1 > 12 * MIB as u64, "v1 stored {after_v1} bytes");
    eprintln!(
        "s3: pushed {} MiB through A in {:?}; bucket holds {after_v1} bytes",
        v1.len() / MIB,
        started.elapsed()
    );

    // Node B serves it at once: nothing but the bucket is shared.
    let cloned = repos.clone_via("via-b", &b_url, false);
    assert_same(&cloned.join("model.safetensors"), &v1);

    // A restarted node needs nothing but the bucket.
    a.kill();
    let a2 = s3.server(dir.path(), &store, &[]);
    let a2_url = a2.repo_url("acme", "vision");
    let lazy = repos.clone_via("lazy", &a2_url, true);
    let out = repos
        .env
        .git_with(&lazy, &[("GIT_MODEL_URL", &a2_url)], &["model", "pull"]);
    crate::check_ok("git model pull via the restarted node", &out);
    assert_same(&lazy.join("model.safetensors"), &v1);

    // Its index was rebuilt from the bucket: a one-tensor edit stores little.
    let v2 = model(24, &[5]);
    repos.commit_and_push(&v2, "v2", &a2_url);
    let after_v2 = s3.stored_bytes(&prefix);
    let grown = after_v2 - after_v1;
    assert!(
        grown < (v2.len() / 10) as u64,
        "v2 through the restarted node stored {grown} new bytes for a {}-byte file",
        v2.len()
    );

    // B picked up A's packs by itself (refresh every second): a push through B dedups too.
    let stored_chunks: std::collections::HashSet<_> =
        chunks_in_packs(&s3, &prefix).into_iter().collect();
    wait_for("B to index every pack in the bucket", || {
        indexed_chunks(&b) == stored_chunks.len()
    });
    let v3 = model(24, &[5, 11]);
    repos.commit_and_push(&v3, "v3", &b_url);
    let grown = s3.stored_bytes(&prefix) - after_v2;
    assert!(
        grown < (v3.len() / 10) as u64,
        "v3 through B stored {grown} new bytes for a {}-byte file",
        v3.len()
    );
    let out = repos.env.git_with(
        &cloned,
        &[("GIT_MODEL_URL", &a2_url)],
        &["pull", "-q", "origin", "main"],
    );
    crate::check_ok("git pull via A", &out);
    assert_same(&cloned.join("model.safetensors"), &v3);
    eprintln!(
        "s3: three versions of {} MiB: bucket holds {} bytes",
        v1.len() / MIB,
        s3.stored_bytes(&prefix)
    );
}

/// A pack of `chunks` and the unlocated recipe of their concatenation.
fn pack_and_recipe(chunks: &[Vec<u8>]) -> (gitmodel_format::PackId, Vec<u8>, Recipe) {
    let mut builder = PackBuilder::new();
    let mut file = Vec::new();
    let mut recipe_chunks = Vec::new();
    for raw in chunks {
        let (codec, stored) = encode_chunk(raw);
        builder.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        recipe_chunks.push(RecipeChunk {
            id: ChunkId::of(raw),
            raw_len: raw.len() as u32,
        });
        file.extend_from_slice(raw);
    }
    let (pack, bytes, _) = builder.finish();
    let recipe = Recipe {
        chunker: 1,
        oid: Oid::of(&file),
        size: file.len() as u64,
        chunks: recipe_chunks,
        segments: Vec::new(),
    };
    (pack, bytes, recipe)
}

/// Incompressible bytes (a synthetic tensor file), different for each seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    safetensors(seed, len, &[0])
}

#[test]
fn s3_register_through_another_node_than_the_upload() {
    let Some(s3) = S3Env::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, prefix) = s3.fresh_store("register");
    let _cleanup = s3.cleanup(&prefix);
    // The default refresh interval (30 s): B can only learn of the pack on its miss.
    let a = s3.server(dir.path(), &store, &[]);
    let b = s3.server(dir.path(), &store, &[]);
    let remote = |server: &Server| {
        gitmodel_client::Remote::new(
            &server.repo_url("acme", "vision"),
            gitmodel_client::Auth::None,
        )
        .unwrap()
    };
    let (ra, rb) = (remote(&a), remote(&b));
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| noise(i, 100_000)).collect();
    let (pack, bytes, recipe) = pack_and_recipe(&chunks);

    // A load balancer sends the upload to A and the registration to B.
    let uploaded = ra.put_pack(&pack, &bytes).unwrap();
    assert!(uploaded.created);
    let results = rb.register(std::slice::from_ref(&recipe)).unwrap();
    assert!(results[0].ok, "register through B: {:?}", results[0].error);
    let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId::of(c)).collect();
    assert_eq!(rb.chunks_exist(&ids).unwrap(), vec![true; 3]);
    assert_eq!(ra.files_exist(&[recipe.oid]).unwrap(), vec![true]);
    let located = ra
        .get_recipe(&recipe.oid)
        .unwrap()
        .expect("A serves B's recipe");
    assert_eq!(located.segments[0].pack, pack);

    // A chunk that is nowhere is still refused, after B looked again.
    let (_, _, missing) = pack_and_recipe(&[noise(9, 50_000)]);
    let results = rb.register(&[missing]).unwrap();
    let error = results[0].error.as_ref().expect("refused");
    assert_eq!(error.code, "missing_chunks", "{error:?}");
}

#[test]
fn s3_corrupt_pack_in_the_bucket_fails_the_pull_and_writes_nothing() {
    let Some(s3) = S3Env::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, prefix) = s3.fresh_store("corrupt");
    let _cleanup = s3.cleanup(&prefix);
    let a = s3.server(dir.path(), &store, &[]);
    let b = s3.server(dir.path(), &store, &[]);
    let (a_url, b_url) = (a.repo_url("acme", "vision"), b.repo_url("acme", "vision"));
    let repos = Repos::new(&a_url);
    let v1 = model(4, &[]);
    repos.commit_and_push(&v1, "v1", &a_url);

    // Damage every pack behind the servers' back, through the S3 API.
    let packs = s3.damage_packs(&prefix);
    assert!(!packs.is_empty());

    let lazy = repos.clone_via("lazy", &b_url, true);
    let out = repos
        .env
        .git_with(&lazy, &[("GIT_MODEL_URL", &b_url)], &["model", "pull"]);
    assert!(!out.status.success(), "pull of corrupt content succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = packs.iter().any(|key| {
        let id = key.rsplit('/').next().unwrap().trim_end_matches(".pack");
        stderr.contains(id)
    });
    assert!(named, "the error names no damaged pack: {stderr}");
    assert!(
        stderr.contains("corrupt") || stderr.contains("hashes to"),
        "{stderr}"
    );
    let pointer = Pointer::new(Oid::of(&v1), v1.len() as u64).to_bytes();
    assert_same(&lazy.join("model.safetensors"), &pointer);
}

#[test]
fn s3_store_conformance() {
    let Some(s3) = S3Env::load() else { return };
    let (store_url, prefix) = s3.fresh_store("conformance");
    let _cleanup = s3.cleanup(&prefix);
    let location = S3Location::parse(&store_url).unwrap();
    let mut store = S3Store::with_builder(s3.builder(), location, S3Options::default()).unwrap();
    runtime().block_on(async {
        store.check_access().await.unwrap();
        let conditional = store.probe_conditional_put().await.unwrap();
        eprintln!("s3: the store honours If-None-Match on PUT: {conditional}");
        assert_eq!(store.atomic_create(), conditional);

        assert_eq!(store.head("a/b.bin").await.unwrap(), None);
        assert!(matches!(
            store.get("a/b.bin").await,
            Err(StorageError::NotFound { .. })
        ));
        store.put("a/b.bin", "hello world".into()).await.unwrap();
        store.put("a/b.bin", "hello world".into()).await.unwrap();
        store.put("c.bin", "x".into()).await.unwrap();
        assert_eq!(store.head("a/b.bin").await.unwrap(), Some(11));
        assert_eq!(&store.get("a/b.bin").await.unwrap()[..], b"hello world");
        assert_eq!(
            &store.get_range("a/b.bin", 6..11).await.unwrap()[..],
            b"world"
        );
        assert_eq!(&store.get_range("a/b.bin", 3..3).await.unwrap()[..], b"");
        assert!(matches!(
            store.get_range("a/b.bin", 6..12).await,
            Err(StorageError::InvalidRange { .. })
        ));
        assert!(matches!(
            store.get_range("nope", 0..1).await,
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(store.list("").await.unwrap(), vec!["a/b.bin", "c.bin"]);
        assert_eq!(store.list("a/").await.unwrap(), vec!["a/b.bin"]);
        assert!(store.list("nothing").await.unwrap().is_empty());

        // Create-if-absent (atomic or not, one writer always sees the first object).
        assert!(store.put_if_absent("l/x.json", "one".into()).await.unwrap());
        assert!(!store.put_if_absent("l/x.json", "two".into()).await.unwrap());
        assert_eq!(&store.get("l/x.json").await.unwrap()[..], b"one");

        // Above the threshold: a multipart upload, read back exactly.
        let big = noise(3, 40 * MIB + 12345);
        let started = Instant::now();
        store.put("big.bin", big.clone().into()).await.unwrap();
        let put_time = started.elapsed();
        assert_eq!(store.head("big.bin").await.unwrap(), Some(big.len() as u64));
        let started = Instant::now();
        let back = store.get("big.bin").await.unwrap();
        let get_time = started.elapsed();
        assert!(back[..] == big[..], "multipart object differs");
        let part = 8 * MIB as u64;
        let edge = store
            .get_range("big.bin", part - 5..part + 5)
            .await
            .unwrap();
        assert_eq!(&edge[..], &big[(part - 5) as usize..(part + 5) as usize]);
        eprintln!(
            "s3: {} MiB object: multipart put {put_time:?}, get {get_time:?}",
            big.len() / MIB
        );

        // Latency of the small requests the server makes most (footer and record reads).
        let started = Instant::now();
        for _ in 0..20 {
            store.head("big.bin").await.unwrap();
        }
        let head = started.elapsed() / 20;
        let started = Instant::now();
        for i in 0..20u64 {
            store
                .get_range("big.bin", i * 1000..i * 1000 + 4096)
                .await
                .unwrap();
        }
        let range = started.elapsed() / 20;
        eprintln!("s3: latency (mean of 20): HEAD {head:?}, 4 KiB ranged GET {range:?}");

        let presigned = store
            .presign_get("a/b.bin", Duration::from_secs(60))
            .await
            .unwrap()
            .expect("S3 presigns");
        // The URL works without credentials, ranges included.
        let body = ureq::get(&presigned)
            .set("Range", "bytes=6-10")
            .call()
            .unwrap_or_else(|e| panic!("GET {presigned}: {e}"))
            .into_string()
            .unwrap();
        assert_eq!(body, "world");

        for key in ["a/b.bin", "c.bin", "l/x.json", "big.bin"] {
            store.delete(key).await.unwrap();
        }
        store.delete("a/b.bin").await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
    });
}

#[test]
fn s3_lfs_locks_are_shared_by_the_nodes() {
    let Some(s3) = S3Env::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, prefix) = s3.fresh_store("locks");
    let _cleanup = s3.cleanup(&prefix);
    let a = s3.server(dir.path(), &store, &[]);
    let b = s3.server(dir.path(), &store, &[]);
    let lock = |server: &Server, path: &str| {
        let url = format!("{}/acme/vision.git/info/lfs/locks", server.url);
        match ureq::post(&url)
            .set("Content-Type", "application/vnd.git-lfs+json")
            .send_string(&format!("{{\"path\": \"{path}\"}}"))
        {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(status, _)) => status,
            Err(e) => panic!("POST {url}: {e}"),
        }
    };
    assert_eq!(lock(&a, "weights/a.bin"), 201);
    assert_eq!(lock(&b, "weights/a.bin"), 409, "B must see A's lock");
    assert_eq!(lock(&b, "weights/b.bin"), 201);
    let listed = ureq::get(&format!("{}/acme/vision.git/info/lfs/locks", a.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        listed.contains("weights/a.bin") && listed.contains("weights/b.bin"),
        "{listed}"
    );
}

#[test]
fn s3_presigned_pack_downloads_bypass_the_server() {
    let Some(s3) = S3Env::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, prefix) = s3.fresh_store("presign");
    let _cleanup = s3.cleanup(&prefix);
    let a = s3.server(dir.path(), &store, &[]);
    let b = s3.server(dir.path(), &store, &["--presign-downloads"]);
    let (a_url, b_url) = (a.repo_url("acme", "vision"), b.repo_url("acme", "vision"));
    let repos = Repos::new(&a_url);
    let v1 = model(4, &[]);
    repos.commit_and_push(&v1, "v1", &a_url);
    let (key, _) = s3
        .objects(&format!("{prefix}/packs"))
        .into_iter()
        .next()
        .expect("a pack");
    let pack = key.rsplit('/').next().unwrap().trim_end_matches(".pack");

    // B answers with a redirect into the bucket...
    let no_redirects = ureq::AgentBuilder::new().redirects(0).build();
    let response = no_redirects
        .get(&format!("{b_url}/model/v1/packs/{pack}"))
        .set("Range", "bytes=0-99")
        .call()
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = response.header("Location").unwrap_or_default().to_string();
    assert!(
        location.contains(&format!("/{key}?")) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    // ...whose bytes are exactly what A serves itself.
    let range = |url: &str| {
        let response = ureq::get(url)
            .set("Range", "bytes=100-4195")
            .call()
            .unwrap();
        assert_eq!(response.status(), 206, "{url}");
        let mut bytes = Vec::new();
        response.into_reader().read_to_end(&mut bytes).unwrap();
        bytes
    };
    let direct = range(&format!("{a_url}/model/v1/packs/{pack}"));
    assert_eq!(direct.len(), 4096);
    assert!(direct == range(&format!("{b_url}/model/v1/packs/{pack}")));
    // Another repository gets no URL for a pack it may not read.
    let other = no_redirects
        .get(&format!(
            "{}/model/v1/packs/{pack}",
            b.repo_url("other", "repo")
        ))
        .call();
    assert!(
        matches!(other, Err(ureq::Error::Status(404, _))),
        "{other:?}"
    );

    // The client follows the redirects: a clone through B is byte-exact.
    let cloned = repos.clone_via("via-b", &b_url, false);
    assert_same(&cloned.join("model.safetensors"), &v1);
}

/// A TCP relay in front of a server that lets the first `packs` pack uploads through and
/// then holds every further upload and every file registration: the push it carries can
/// store exactly `packs` packs and can never complete, whatever the timing. When the server
/// goes away, the relay closes the client's connections (and refuses new ones).
///
/// It spots requests by their request line in the client's byte stream (pack bodies are
/// compressed tensors: the 30-odd byte pattern does not occur in them by chance).
struct UploadGate {
    url: String,
    held: Arc<AtomicUsize>,
}

impl UploadGate {
    fn start(server: &Server, repo_path: &str, packs: usize) -> UploadGate {
        let upstream = server.url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let put = format!("PUT /{repo_path}/model/v1/packs/").into_bytes();
        let register = format!("POST /{repo_path}/model/v1/files HTTP/").into_bytes();
        let admitted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let gate = (put, register, packs, admitted, Arc::clone(&held));
        let gate = Arc::new(gate);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue; // the server is gone: dropping the client closes it
                };
                let gate = Arc::clone(&gate);
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let (put, register, packs, admitted, held) = &*gate;
                    UploadGate::pump_up(client_in, server_out, &[put, register], |which| {
                        let pass = which == 0 && admitted.fetch_add(1, Ordering::SeqCst) < *packs;
                        if !pass {
                            held.fetch_add(1, Ordering::SeqCst);
                        }
                        pass
                    });
                });
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    let _ = std::io::copy(&mut from, &mut to);
                    // The server closed or died: so does the client's connection.
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
        });
        UploadGate { url, held }
    }

    /// Copies `from` to `to` until a pattern occurs that `admit` refuses: the bytes before
    /// it are forwarded, the rest is never sent.
    fn pump_up(
        mut from: TcpStream,
        mut to: TcpStream,
        patterns: &[&Vec<u8>],
        mut admit: impl FnMut(usize) -> bool,
    ) {
        let longest = patterns.iter().map(|p| p.len()).max().unwrap();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.write_all(&pending);
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            // Everything may go on except a tail that could begin a pattern.
            let tail = (1..=pending.len().min(longest - 1))
                .rev()
                .find(|&k| {
                    patterns
                        .iter()
                        .any(|p| k < p.len() && pending.ends_with(&p[..k]))
                })
                .unwrap_or(0);
            let mut sendable = pending.len() - tail;
            let mut from_at = 0;
            while let Some((at, which)) = patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| find(&pending[from_at..], p).map(|at| (from_at + at, i)))
                .min()
            {
                if !admit(which) {
                    let _ = to.write_all(&pending[..at]);
                    return; // hold: the request never reaches the server
                }
                from_at = at + 1;
                sendable = sendable.max(from_at);
            }
            if to.write_all(&pending[..sendable]).is_err() {
                return;
            }
            pending.drain(..sendable);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The ids of the chunks in the packs below `prefix` (a chunk stored twice is listed
/// twice), each pack read back and verified.
fn chunks_in_packs(s3: &S3Env, prefix: &str) -> Vec<ChunkId> {
    let bucket = s3.bucket();
    let keys: Vec<String> = s3
        .objects(&format!("{prefix}/packs"))
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    runtime().block_on(async {
        let mut chunks = Vec::new();
        for key in keys {
            let hex = key.rsplit('/').next().unwrap().trim_end_matches(".pack");
            let id = PackId::from_hex(hex).unwrap();
            let bytes = bucket
                .get(&ObjectPath::from(key.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let entries = verify_pack(&id, &bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
            chunks.extend(entries.iter().map(|e| e.id));
        }
        chunks
    })
}

/// `gitmodel_index_chunks` of a node's `/metrics`.
fn indexed_chunks(server: &Server) -> usize {
    let text = ureq::get(&format!("{}/metrics", server.url))
        .call()
        .expect("GET /metrics")
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("gitmodel_index_chunks "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gitmodel_index_chunks in:\n{text}"))
}

/// Waits (polling, up to a minute) until `done` holds; panics naming `what` otherwise.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(chunks sent, chunks needed, packs sent)` from a push's summary line.
fn push_summary(stderr: &str) -> (usize, usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" chunks new, "))
        .unwrap_or_else(|| panic!("no upload summary in: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let before = |word: &str| -> usize {
        let i = words.iter().position(|w| *w == word).unwrap();
        words[i - 1].parse().unwrap()
    };
    let of = words.iter().position(|w| *w == "of").unwrap();
    (
        words[of - 1].parse().unwrap(),
        words[of + 1].parse().unwrap(),
        before("pack(s),"),
    )
}

#[test]
fn s3_node_killed_mid_push_then_the_push_completes_through_another_node() {
    let Some(s3) = S3Env::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, prefix) = s3.fresh_store("killed");
    let _cleanup = s3.cleanup(&prefix);
    let mut a = s3.server(dir.path(), &store, &[]);
    // B re-lists the bucket every second, so it learns of what A stored before it died.
    let b = s3.server(dir.path(), &store, &["--index-refresh", "1"]);
    let b_url = b.repo_url("acme", "vision");
    // The client reaches A through a gate that lets exactly two packs through.
    const PASSED: usize = 2;
    let gate = UploadGate::start(&a, "acme/vision", PASSED);
    let via_gate = format!("{}/acme/vision", gate.url);
    let repos = Repos::new(&via_gate);
    let v1 = model(64, &[]);
    fs::write(repos.work.join("model.safetensors"), &v1).unwrap();
    repos.env.git(&repos.work, &["add", "model.safetensors"]);
    repos.env.git(&repos.work, &["commit", "-q", "-m", "v1"]);
    let local_packs = gitmodel_testkit::dir_size(&repos.work.join(".git/model/packs"));

    let started = Instant::now();
    // Its output goes to a file: a pipe nobody reads while it runs could fill and block it.
    let log = repos.env.path("push.log");
    let push = repos
        .env
        .cmd("git", &repos.work)
        .args(["push", "origin", "main"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Mid-push: two packs and their grants are in the bucket, the next upload is held.
    let grants = format!("{prefix}/repos/acme/vision/packs");
    wait_for("two packs stored through A", || {
        s3.objects(&format!("{prefix}/packs")).len() == PASSED
            && s3.objects(&grants).len() == PASSED
    });
    wait_for("the gate to hold an upload", || {
        gate.held.load(Ordering::SeqCst) > 0
    });
    a.kill(); // SIGKILL
    let status = push.wait_with_output().unwrap().status;
    let stderr = fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "push through the killed node succeeded: {stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot reach {}", gate.url)),
        "the failed push does not say which server it could not reach: {stderr}"
    );
    let refs = repos.env.git(&repos.origin, &["for-each-ref"]);
    assert!(
        !refs.contains("refs/heads/main"),
        "failed push published the branch: {refs}"
    );
    let stored_at_kill = s3.stored_bytes(&format!("{prefix}/packs"));
    let chunks_at_kill = chunks_in_packs(&s3, &prefix).len();
    eprintln!(
        "s3: node A killed {:?} into the push, with {PASSED} packs ({stored_at_kill} bytes, \
         {chunks_at_kill} chunks) of {local_packs} bytes stored; the push said: {}",
        started.elapsed(),
        stderr
            .lines()
            .rfind(|l| l.contains("cannot reach"))
            .unwrap_or_default()
    );

    // B has indexed what A stored (its one-second refresh), then the push goes through B.
    wait_for("B to index A's packs", || {
        indexed_chunks(&b) == chunks_at_kill
    });
    repos.env.git(&repos.work, &["config", "model.url", &b_url]);
    let started = Instant::now();
    let out = repos
        .env
        .git_output(&repos.work, &["push", "origin", "main"]);
    crate::check_ok("git push through B", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (sent, needed, packs) = push_summary(&stderr);
    let stored = s3.stored_bytes(&format!("{prefix}/packs"));
    eprintln!(
        "s3: retry through B in {:?}: {sent} of {needed} chunks, {packs} pack(s), \
         {} bytes",
        started.elapsed(),
        stored - stored_at_kill
    );
    // Only what A had not stored travelled again, and nothing is stored twice.
    assert_eq!(sent, needed - chunks_at_kill, "{stderr}");
    assert!(packs >= 1, "{stderr}");
    let stored_chunks = chunks_in_packs(&s3, &prefix);
    let distinct: std::collections::HashSet<_> = stored_chunks.iter().collect();
    assert_eq!(
        (stored_chunks.len(), distinct.len()),
        (needed, needed),
        "(chunks stored, distinct chunks) after the retry"
    );
    // The bucket's packs hold the local store's records once (per-pack headers differ).
    assert!(
        stored.abs_diff(local_packs) < 4096,
        "bucket packs {stored} bytes, local packs {local_packs} bytes"
    );

    // Byte-exact through B, and through a node started now from nothing but the bucket.
    let c = s3.server(dir.path(), &store, &[]);
    for (name, server) in [("via-b", &b), ("via-c", &c)] {
        let url = server.repo_url("acme", "vision");
        let lazy = repos.clone_via(name, &url, true);
        let out = repos
            .env
            .git_with(&lazy, &[("GIT_MODEL_URL", &url)], &["model", "pull"]);
        crate::check_ok(&format!("git model pull {name}"), &out);
        assert_same(&lazy.join("model.safetensors"), &v1);
        let out = repos.env.git_with(
            &lazy,
            &[("GIT_MODEL_URL", &url)],
            &["model", "fsck", "--remote"],
        );
        crate::check_ok(&format!("git model fsck --remote {name}"), &out);
    }
    let cloned = repos.clone_via("full", &c.repo_url("acme", "vision"), false);
    assert_same(&cloned.join("model.safetensors"), &v1);
}
