//! Damaged packs on the server: never vouched for once found, and repaired by a client
//! that uploads the same pack again. A real server on 127.0.0.1:0 in-process, spoken to
//! over real HTTP/1.1 with hyper's client; the damage is done to the files on disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use gitmodel_format::pack::{encode_chunk, PackBuilder, HEADER_LEN, RECORD_HEADER_LEN};
use gitmodel_format::{ChunkId, Oid, PackId, Recipe, RecipeChunk};
use gitmodel_proto::{RegisterResponse, VerifyFile, VerifyRequest, VerifyResponse};
use gitmodel_server::{serve, AppState, ServerConfig};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(data_dir: &Path) -> TestServer {
        let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), data_dir);
        let state = AppState::open_local(config).await.expect("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task");
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        self.request_with(method, path, &[], body).await
    }

    async fn request_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes) {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, "localhost");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body.into())).expect("request");
        let resp = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    async fn ok(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Bytes {
        let (status, body) = self.request(method.clone(), path, body).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }
}

use gitmodel_testkit::noise;

/// A file of fixed-size chunks in one pack, registered in one repository.
struct Fixture {
    base: String,
    data: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    pack: PackId,
    pack_bytes: Vec<u8>,
}

impl Fixture {
    fn new(repo: &str, seed: u64) -> Fixture {
        let data = noise(seed, 300_000);
        let chunks: Vec<Vec<u8>> = data.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
        let mut b = PackBuilder::new();
        for raw in &chunks {
            let (codec, stored) = encode_chunk(raw);
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        }
        let (pack, pack_bytes, _) = b.finish();
        Fixture {
            base: format!("/{repo}/model/v1"),
            data,
            chunks,
            pack,
            pack_bytes,
        }
    }

    fn oid(&self) -> Oid {
        Oid::of(&self.data)
    }

    fn recipe(&self) -> Recipe {
        Recipe {
            chunker: 1,
            oid: self.oid(),
            size: self.data.len() as u64,
            chunks: self
                .chunks
                .iter()
                .map(|c| RecipeChunk {
                    id: ChunkId::of(c),
                    raw_len: c.len() as u32,
                })
                .collect(),
            segments: Vec::new(),
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
        let ids: Vec<u8> = self.chunks.iter().flat_map(|c| ChunkId::of(c).0).collect();
        let path = format!("{}/chunks/exists", self.base);
        s.ok(Method::POST, &path, ids).await.to_vec()
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
    let (status, _) = server.request(Method::PUT, &path, wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
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
        let (status, body) = server
            .request_with(Method::PUT, &object, &headers, fx.data.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    };
    let asks_for_upload = || async {
        let media = "application/vnd.git-lfs+json";
        let batch = serde_json::json!({"operation": "upload", "transfers": ["basic"],
            "objects": [{"oid": fx.oid().to_hex(), "size": fx.data.len()}]});
        let (status, body) = server
            .request_with(
                Method::POST,
                "/acme/vision/info/lfs/objects/batch",
                &[("accept", media), ("content-type", media)],
                serde_json::to_vec(&batch).unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
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
