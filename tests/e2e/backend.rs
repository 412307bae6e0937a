//! Where a test's server keeps its objects: a local directory (the default) or a fresh
//! prefix of the S3 test bucket on a real Garage (`scripts/garage`).
//!
//! Main types: [`Backend`] (what `World` starts its servers on) and [`S3Env`] (the Garage
//! connection settings, read from the env file `scripts/garage` writes). The macro
//! [`on_each_backend!`] turns one test body into `local::<name>` and `s3::<name>`.
//!
//! Gate: `GIT_MODEL_TEST_S3=1` (`.ci/run` always sets it and starts Garage). Without the
//! gate the S3 variants print why and pass, so `cargo test` works without Garage; with it,
//! a missing or unreachable Garage is a failure that says to run `scripts/garage`. The
//! settings come from `$GIT_MODEL_TEST_S3_ENV`, else `${TMPDIR:-/tmp}/git-model-garage/env`.
//! The test process's own environment is never changed: the `AWS_*` variables go to the
//! server processes only.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use gitmodel_testkit::{dir_size, Server};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::server_exe;

/// Defines `mod local` and `mod s3`, each with one `#[test]` per name that calls the
/// function of that name (in the enclosing module) with a `World` on that backend.
/// A body written once runs on both; a function left out of the list is dead code, which
/// clippy refuses, so no test is silently run on one backend only.
macro_rules! on_each_backend {
    ($($name:ident),+ $(,)?) => {
        /// The tests above with the server on a local directory.
        mod local {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::World::new())
                }
            )+
        }
        /// The tests above with the server on a fresh prefix of the Garage bucket.
        mod s3 {
            $(
                #[test]
                fn $name() {
                    if let Some(world) = $crate::World::on_s3(stringify!($name)) {
                        super::$name(world)
                    }
                }
            )+
        }
    };
}

/// Connection settings for the test bucket.
pub struct S3Env {
    pub vars: Vec<(String, String)>,
    pub bucket: String,
}

impl S3Env {
    /// The settings, or `None` (after saying so) when the S3 tests are not enabled.
    pub fn load() -> Option<S3Env> {
        let gate = std::env::var("GIT_MODEL_TEST_S3").unwrap_or_default();
        if gate.is_empty() || gate == "0" {
            eprintln!(
                "S3 tests not run: they need Garage. Run `scripts/garage`, then \
                 `GIT_MODEL_TEST_S3=1 cargo test --test e2e s3` (.ci/run does both)."
            );
            return None;
        }
        let path = std::env::var_os("GIT_MODEL_TEST_S3_ENV")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("git-model-garage").join("env"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "GIT_MODEL_TEST_S3 is set but the Garage env file {} cannot be read ({e}): \
                 run scripts/garage to start Garage and write it",
                path.display()
            )
        });
        let vars: Vec<(String, String)> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no {name}: run scripts/garage to rewrite it",
                        path.display()
                    )
                })
        };
        let endpoint = get("AWS_ENDPOINT_URL");
        for name in ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            get(name);
        }
        let bucket = get("GIT_MODEL_TEST_S3_BUCKET");
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let reachable = addr.parse().ok().is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
        assert!(
            reachable,
            "Garage does not answer at {endpoint} (from {}): run scripts/garage",
            path.display()
        );
        Some(S3Env { vars, bucket })
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// `s3://<bucket>/<prefix>` for a fresh random prefix, and the prefix.
    pub fn fresh_store(&self, what: &str) -> (String, String) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("e2e/{what}-{nanos:x}-{:x}", std::process::id());
        (format!("s3://{}/{prefix}", self.bucket), prefix)
    }

    /// A server process on `store` (its data directory holds no objects but must exist).
    pub fn server(&self, dir: &Path, store: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--store", store];
        args.extend_from_slice(extra);
        Server::start_with(&server_exe(), dir, &args, &self.vars)
    }

    pub fn builder(&self) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(self.var("AWS_ENDPOINT_URL"))
            .with_region(self.var("AWS_REGION"))
            .with_access_key_id(self.var("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(self.var("AWS_SECRET_ACCESS_KEY"))
    }

    /// A raw client of the bucket, to look behind the server's back.
    pub fn bucket(&self) -> Arc<AmazonS3> {
        Arc::new(
            self.builder()
                .with_bucket_name(&self.bucket)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .expect("an S3 client for the test bucket"),
        )
    }

    /// Every object below `prefix` with its size.
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let bucket = self.bucket();
        let prefix = ObjectPath::from(prefix);
        runtime().block_on(async {
            let metas: Vec<_> = bucket.list(Some(&prefix)).try_collect().await.unwrap();
            metas
                .into_iter()
                .map(|m| (m.location.to_string(), m.size))
                .collect()
        })
    }

    pub fn stored_bytes(&self, prefix: &str) -> u64 {
        self.objects(prefix).iter().map(|(_, size)| size).sum()
    }

    /// Flips a byte in the middle of every pack below `prefix`, through the S3 API.
    /// Returns the damaged objects' keys.
    pub fn damage_packs(&self, prefix: &str) -> Vec<String> {
        let packs: Vec<String> = self
            .objects(&format!("{prefix}/packs"))
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let bucket = self.bucket();
        runtime().block_on(async {
            for key in &packs {
                let path = ObjectPath::from(key.as_str());
                let mut bytes = bucket
                    .get(&path)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .to_vec();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
                bucket.put(&path, PutPayload::from(bytes)).await.unwrap();
            }
        });
        packs
    }

    /// A guard that empties `prefix` when dropped, unless the test is failing (the
    /// objects are then kept to look at). Declare it before the servers that use the
    /// prefix: it is dropped after them.
    pub fn cleanup(&self, prefix: &str) -> Cleanup<'_> {
        Cleanup {
            s3: self,
            prefix: prefix.to_string(),
        }
    }

    /// Deletes every object below `prefix` (best effort).
    pub fn delete_prefix(&self, prefix: &str) {
        let bucket = self.bucket();
        let prefix = ObjectPath::from(prefix);
        runtime().block_on(async {
            let Ok(metas) = bucket.list(Some(&prefix)).try_collect::<Vec<_>>().await else {
                return;
            };
            for meta in metas {
                let _ = bucket.delete(&meta.location).await;
            }
        });
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// See [`S3Env::cleanup`].
pub struct Cleanup<'a> {
    s3: &'a S3Env,
    prefix: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.s3.delete_prefix(&self.prefix);
        }
    }
}

/// A prefix of the test bucket that one test owns; its objects are deleted when the test
/// is done, unless it failed (they are kept to look at).
pub struct S3Prefix {
    pub s3: S3Env,
    /// `s3://bucket/prefix`, for `--store`.
    pub store: String,
    pub prefix: String,
}

impl Drop for S3Prefix {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.s3.delete_prefix(&self.prefix);
        }
    }
}

/// Where a `World`'s servers keep their objects.
pub enum Backend {
    /// The server's `--data-dir`.
    Local,
    /// A fresh prefix of the Garage bucket; `--data-dir` then holds no objects.
    S3(S3Prefix),
}

impl Backend {
    /// A fresh prefix of the test bucket named after `what`, or `None` (after saying so)
    /// when the S3 tests are not enabled (see the module header).
    pub fn s3(what: &str) -> Option<Backend> {
        let s3 = S3Env::load()?;
        let (store, prefix) = s3.fresh_store(what);
        Some(Backend::S3(S3Prefix { s3, store, prefix }))
    }

    /// A server process on this backend, with `extra` arguments.
    pub fn server(&self, data_dir: &Path, extra: &[&str]) -> Server {
        match self {
            Backend::Local => Server::start_with(&server_exe(), data_dir, extra, &[]),
            Backend::S3(p) => p.s3.server(data_dir, &p.store, extra),
        }
    }

    /// A `git-model-server` maintenance command (`gc`, `delete-repo`, ...) on this
    /// backend's objects: on S3 `--store` (a top-level option: before the subcommand)
    /// and the `AWS_*` variables, then `args` and the data directory.
    pub fn maintenance(&self, data_dir: &Path, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(server_exe());
        if let Backend::S3(p) = self {
            cmd.args(["--store", &p.store]);
            cmd.envs(p.s3.vars.iter().map(|(k, v)| (k, v)));
        }
        cmd.args(args).arg("--data-dir").arg(data_dir);
        cmd
    }

    /// Bytes of every stored object (packs, recipes, grants, locks).
    pub fn stored_bytes(&self, data_dir: &Path) -> u64 {
        match self {
            Backend::Local => dir_size(data_dir),
            Backend::S3(p) => p.s3.stored_bytes(&p.prefix),
        }
    }

    /// Flips a byte in the middle of every stored pack; returns how many there were.
    pub fn damage_packs(&self, data_dir: &Path) -> usize {
        match self {
            Backend::Local => {
                let mut packs = Vec::new();
                crate::collect(&data_dir.join("packs"), &mut packs);
                for p in &packs {
                    let mut b = fs::read(p).unwrap();
                    let at = b.len() / 2;
                    b[at] ^= 0x40;
                    fs::write(p, b).unwrap();
                }
                packs.len()
            }
            Backend::S3(p) => p.s3.damage_packs(&p.prefix).len(),
        }
    }
}
