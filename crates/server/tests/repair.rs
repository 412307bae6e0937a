//! Damaged packs on the server: never vouched for once found, and repaired by a client
//! that uploads the same pack again. A real server on 127.0.0.1:0 in-process, spoken to
//! over real HTTP/1.1 with hyper's client; the damage is done to the files on disk.

mod common;

use std::ops::Deref;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use gitmodel_format::pack::{HEADER_LEN, RECORD_HEADER_LEN};
use gitmodel_proto::{RegisterResponse, VerifyFile, VerifyRequest, VerifyResponse};
use gitmodel_testkit::noise;
use gitmodel_testkit::packs::PackedFile;
use http::{Method, StatusCode};

use common::TestServer;

impl TestServer {
    /// `method path` with `body`, which must answer 200: the answer's body.
    async fn ok(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Bytes {
        self.request(method, path, body)
            .await
            .expect_status(StatusCode::OK)
            .body
    }
}

/// A file of fixed-size chunks in one pack, registered in one repository.
struct Fixture {
    base: String,
    file: PackedFile,
}

impl Deref for Fixture {
    type Target = PackedFile;

    fn deref(&self) -> &PackedFile {
        &self.file
    }
}

impl Fixture {
    fn new(repo: &str, seed: u64) -> Fixture {
        Fixture {
            base: format!("/{repo}/model/v1"),
            file: PackedFile::split(&noise(seed, 300_000), 64 * 1024),
        }
    }

    async fn put(&self, s: &TestServer) {
        let path = format!("{}/packs/{}", self.base, self.pack);
        s.ok(Method::PUT, &path, self.pack_bytes.clone()).await;
    }

    async fn register(&self, s: &TestServer) -> RegisterResponse {
        let path = format!("{}/files", self.base);
        let body = s.ok(Method::POST, &path, self.recipe().encode()).await;
        serde_json::from_slice(&body).unwrap()
    }

    async fn chunks_present(&self, s: &TestServer) -> Vec<u8> {
        let path = format!("{}/chunks/exists", self.base);
        s.ok(Method::POST, &path, self.chunk_ids()).await.to_vec()
    }

    async fn file_present(&self, s: &TestServer) -> u8 {
        let path = format!("{}/files/exists", self.base);
        s.ok(Method::POST, &path, self.oid().0.to_vec()).await[0]
    }

    async fn verify(&self, s: &TestServer) -> gitmodel_proto::VerifyResult {
        let request = VerifyRequest {
            files: vec![VerifyFile {
                oid: self.oid().to_hex(),
                from: 0,
            }],
        };
        let path = format!("{}/files/verify", self.base);
        let body = s
            .ok(Method::POST, &path, serde_json::to_vec(&request).unwrap())
            .await;
        let mut answer: VerifyResponse = serde_json::from_slice(&body).unwrap();
        answer.files.remove(0)
    }

    fn stored(&self, dir: &Path) -> PathBuf {
        let hex = self.pack.to_hex();
        dir.join("packs")
            .join(&hex[..2])
            .join(format!("{hex}.pack"))
    }

    /// Flips a bit inside the second record's data, behind the server's back.
    fn damage(&self, dir: &Path) {
        let path = self.stored(dir);
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes == self.pack_bytes, "the stored copy is intact before");
        let at = (HEADER_LEN + RECORD_HEADER_LEN) as usize + 64 * 1024 + 100;
        bytes[at] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
}

fn damage_records(dir: &Path) -> usize {
    let mut n = 0;
    for fan in std::fs::read_dir(dir.join("damaged"))
        .into_iter()
        .flatten()
        .flatten()
    {
        n += std::fs::read_dir(fan.path()).unwrap().count();
    }
    n
}

#[tokio::test]
async fn a_re_put_of_a_damaged_pack_replaces_it_once_the_new_bytes_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = Fixture::new("acme/vision", 1);
    fx.put(&server).await;
    assert!(fx.register(&server).await.files[0].ok);

    // Damaged on disk, nobody has noticed yet: the same pack uploaded again repairs it.
    fx.damage(dir.path());
    fx.put(&server).await;
    assert!(
        std::fs::read(fx.stored(dir.path())).unwrap() == fx.pack_bytes,
        "the re-upload must replace the damaged copy"
    );

    // Wrong bytes under the pack's id are refused and change nothing.
    let mut wrong = fx.pack_bytes.clone();
    wrong[40] ^= 1;
    let path = format!("{}/packs/{}", fx.base, fx.pack);
    let r = server.request(Method::PUT, &path, wrong).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(std::fs::read(fx.stored(dir.path())).unwrap() == fx.pack_bytes);
    server.stop().await;
}

#[tokio::test]
async fn a_pack_found_damaged_is_not_vouched_for_until_it_is_uploaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = Fixture::new("acme/vision", 2);
    let other = Fixture::new("other/b", 3);
    for f in [&fx, &other] {
        f.put(&server).await;
        assert!(f.register(&server).await.files[0].ok);
        assert_eq!(f.verify(&server).await.status, "ok");
    }
    let all = vec![1u8; fx.chunks.len()];
    assert_eq!(fx.chunks_present(&server).await, all);
    assert_eq!(fx.file_present(&server).await, 1);

    // files/verify reads the stored copy, finds the damage, names the pack, records it.
    fx.damage(dir.path());
    let found = fx.verify(&server).await;
    assert_eq!(found.status, "damaged", "{found:?}");
    assert_eq!(found.pack.as_deref(), Some(&*fx.pack.to_hex()));
    assert_eq!(damage_records(dir.path()), 1);

    // No longer vouched for: a push sends the chunks and registers the file again.
    assert_eq!(fx.chunks_present(&server).await, vec![0u8; fx.chunks.len()]);
    assert_eq!(fx.file_present(&server).await, 0);
    let refused = fx.register(&server).await;
    assert_eq!(
        refused.files[0].error.as_ref().map(|e| e.code.as_str()),
        Some("missing_chunks")
    );
    // Another repository's answers are its own business: unchanged.
    assert_eq!(other.file_present(&server).await, 1);
    assert_eq!(other.verify(&server).await.status, "ok");

    // The repair: the same pack again, then the registration.
    fx.put(&server).await;
    assert!(std::fs::read(fx.stored(dir.path())).unwrap() == fx.pack_bytes);
    assert_eq!(damage_records(dir.path()), 0);
    assert_eq!(fx.chunks_present(&server).await, all);
    assert!(fx.register(&server).await.files[0].ok);
    assert_eq!(fx.file_present(&server).await, 1);
    assert_eq!(fx.verify(&server).await.status, "ok");
    let got = server
        .ok(
            Method::GET,
            &format!("/acme/vision/info/lfs/objects/{}", fx.oid()),
            "",
        )
        .await;
    assert_eq!(got.len(), fx.data.len());
    assert!(
        got[..] == fx.data[..],
        "the repaired file downloads byte-exact"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_git_lfs_upload_repairs_a_file_whose_pack_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = Fixture::new("acme/vision", 4);
    let object = format!("/acme/vision/info/lfs/objects/{}", fx.oid());
    let put = || async {
        let headers = [("content-type", "application/octet-stream")];
        server
            .request_with(Method::PUT, &object, &headers, fx.data.clone())
            .await
            .expect_status(StatusCode::OK);
    };
    let asks_for_upload = || async {
        let media = "application/vnd.git-lfs+json";
        let batch = serde_json::json!({"operation": "upload", "transfers": ["basic"],
            "objects": [{"oid": fx.oid().to_hex(), "size": fx.data.len()}]});
        let answer = server
            .request_with(
                Method::POST,
                "/acme/vision/info/lfs/objects/batch",
                &[("accept", media), ("content-type", media)],
                serde_json::to_vec(&batch).unwrap(),
            )
            .await
            .expect_status(StatusCode::OK)
            .json_value();
        !answer["objects"][0]["actions"]["upload"].is_null()
    };
    put().await;
    assert!(!asks_for_upload().await, "stored: no upload needed");

    // The server built the pack; damage it, and let a verification find it.
    let mut packs = Vec::new();
    for fan in std::fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .flatten()
    {
        packs.extend(
            std::fs::read_dir(fan.path())
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        );
    }
    assert_eq!(packs.len(), 1);
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&packs[0], bytes).unwrap();
    assert_eq!(fx.verify(&server).await.status, "damaged");

    // The Git LFS client is asked for the object again, and its upload repairs the file.
    assert!(
        asks_for_upload().await,
        "a damaged copy must be asked for again"
    );
    put().await;
    assert_eq!(fx.verify(&server).await.status, "ok");
    assert_eq!(fx.file_present(&server).await, 1);
    assert!(!asks_for_upload().await);
    let got = server.ok(Method::GET, &object, "").await;
    assert!(
        got[..] == fx.data[..],
        "the repaired object downloads byte-exact"
    );
    server.stop().await;
}
