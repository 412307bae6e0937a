//! End-to-end tests of the server's HTTP API: a real server on 127.0.0.1:0 in-process,
//! spoken to over real HTTP/1.1 connections with hyper's client.

mod common;

use std::path::PathBuf;

use gitmodel_format::pack::{parse_records, RECORD_HEADER_LEN};
use gitmodel_format::{ChunkId, Oid, PackId, Recipe};
use gitmodel_proto::{ErrorBody, PackUploaded, RegisterResponse};
use gitmodel_testkit::packs::PackedFile;
use gitmodel_testkit::{files_under, noise};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::TestServer;

const BASE: &str = "/acme/vision/model/v1";

impl TestServer {
    /// Uploads the fixture's pack to [`BASE`], which must accept it.
    async fn upload(&self, fx: &PackedFile) {
        self.request(
            Method::PUT,
            &format!("{BASE}/packs/{}", fx.pack),
            fx.pack_bytes.clone(),
        )
        .await
        .expect(StatusCode::OK);
    }
}

/// A file split into 64 KiB chunks, packed in one pack. Half noise, half zeros: one raw
/// and some zstd records.
fn fixture(seed: u64) -> PackedFile {
    let mut data = noise(seed, 150_000);
    data.extend(std::iter::repeat_n(0u8, 100_000));
    data.extend(noise(seed + 1, 12_345));
    PackedFile::split(&data, 64 * 1024)
}

#[tokio::test]
async fn upload_register_and_download() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = fixture(1);
    let n = fx.chunks.len();

    let health = server
        .request(Method::GET, "/healthz", "")
        .await
        .expect(StatusCode::OK);
    assert_eq!(&health.body[..], b"ok");

    let exists = server
        .request(
            Method::POST,
            &format!("{BASE}/chunks/exists"),
            fx.chunk_ids(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(&exists.body[..], vec![0u8; n]);

    let pack_path = format!("{BASE}/packs/{}", fx.pack);
    let up: PackUploaded = server
        .request(Method::PUT, &pack_path, fx.pack_bytes.clone())
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        (up.pack.as_str(), up.chunks, up.created),
        (&*fx.pack.to_hex(), n as u32, true)
    );
    let again: PackUploaded = server
        .request(Method::PUT, &pack_path, fx.pack_bytes.clone())
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(!again.created);

    // The uploading repository sees its chunks; another repository learns nothing:
    // its answers are those for chunks and packs that do not exist.
    let mut query = fx.chunk_ids();
    query.extend_from_slice(&[9u8; 32]);
    for (base, present) in [(BASE, 1u8), ("/other/repo.git/model/v1", 0)] {
        let exists = server
            .request(
                Method::POST,
                &format!("{base}/chunks/exists"),
                query.clone(),
            )
            .await
            .expect(StatusCode::OK);
        let mut want = vec![present; n];
        want.push(0);
        assert_eq!(&exists.body[..], want, "{base}");
    }
    let r = server
        .request(
            Method::GET,
            &format!("/other/repo/model/v1/packs/{}", fx.pack),
            "",
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");

    let recipe = fx.recipe();
    let empty = Recipe {
        chunker: 1,
        oid: Oid::empty(),
        size: 0,
        chunks: Vec::new(),
        segments: Vec::new(),
    };
    let oids: Vec<u8> = [recipe.oid.0, empty.oid.0].concat();
    let files_exist = server
        .request(Method::POST, &format!("{BASE}/files/exists"), oids.clone())
        .await
        .expect(StatusCode::OK);
    assert_eq!(&files_exist.body[..], [0, 0]);

    let mut batch = recipe.encode();
    empty.encode_into(&mut batch);
    let reg: RegisterResponse = server
        .request(Method::POST, &format!("{BASE}/files"), batch)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(reg.files.len(), 2);
    for (result, oid) in reg.files.iter().zip([recipe.oid, empty.oid]) {
        assert!(result.ok, "{result:?}");
        assert_eq!(result.oid, oid.to_hex());
    }
    let files_exist = server
        .request(Method::POST, &format!("{BASE}/files/exists"), oids.clone())
        .await
        .expect(StatusCode::OK);
    assert_eq!(&files_exist.body[..], [1, 1]);
    // Recipes are per repository.
    let elsewhere = server
        .request(Method::POST, "/other/repo/model/v1/files/exists", oids)
        .await
        .expect(StatusCode::OK);
    assert_eq!(&elsewhere.body[..], [0, 0]);

    // Download as a client would: recipe, then one range read per segment.
    let got = server
        .request(Method::GET, &format!("{BASE}/files/{}", recipe.oid), "")
        .await
        .expect(StatusCode::OK);
    assert_eq!(got.headers["content-type"], "application/octet-stream");
    let located = Recipe::decode(&got.body).expect("stored recipe decodes");
    assert_eq!(located.unlocated(), recipe);
    assert_eq!(located.segments.len(), 1, "one pack, records in order");
    let mut rebuilt = Vec::new();
    for (segment, chunks) in located.segment_chunks() {
        assert_eq!(segment.pack, fx.pack);
        let last = segment.offset + segment.length - 1;
        let part = server
            .request_with(
                Method::GET,
                &format!("{BASE}/packs/{}", segment.pack),
                &[("range", &format!("bytes={}-{last}", segment.offset))],
                "",
            )
            .await
            .expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers["content-range"],
            format!("bytes {}-{last}/{}", segment.offset, fx.pack_bytes.len()).as_str()
        );
        assert_eq!(
            &part.body[..],
            &fx.pack_bytes[segment.offset as usize..=last as usize]
        );
        let records = parse_records(&part.body).unwrap();
        assert_eq!(records.len(), chunks.len());
        for (record, chunk) in records.iter().zip(chunks) {
            assert_eq!(record.id, chunk.id);
            rebuilt.extend(record.decode().unwrap());
        }
    }
    assert_eq!(Oid::of(&rebuilt), recipe.oid);

    // The other range forms, the whole pack, and errors.
    let whole = server
        .request(Method::GET, &pack_path, "")
        .await
        .expect(StatusCode::OK);
    assert_eq!(&whole.body[..], &fx.pack_bytes[..]);
    let tail = server
        .request_with(Method::GET, &pack_path, &[("range", "bytes=-24")], "")
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&tail.body[..], &fx.pack_bytes[fx.pack_bytes.len() - 24..]);
    let from = fx.pack_bytes.len() - 100;
    let open_ended = server
        .request_with(
            Method::GET,
            &pack_path,
            &[("range", &format!("bytes={from}-"))],
            "",
        )
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(&open_ended.body[..], &fx.pack_bytes[from..]);
    let beyond = format!("bytes={}-", fx.pack_bytes.len());
    let r = server
        .request_with(Method::GET, &pack_path, &[("range", &beyond)], "")
        .await
        .expect(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.error_code(), "range_not_satisfiable");
    let r = server
        .request_with(Method::GET, &pack_path, &[("range", "bytes=0-1,4-5")], "")
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "bad_range");
    let unknown = format!("{BASE}/packs/{}", PackId::of(b"nothing"));
    let r = server
        .request(Method::GET, &unknown, "")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");

    server.stop().await;
}

#[tokio::test]
async fn corrupt_pack_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = fixture(2);
    let mut bad = fx.pack_bytes.clone();
    // Flip a byte inside the first record's stored data and recompute the pack id, so
    // only the chunk hash can catch it.
    bad[(gitmodel_format::pack::HEADER_LEN + RECORD_HEADER_LEN) as usize + 10] ^= 0x40;
    let bad_id = PackId::of(&bad);
    let r = server
        .request(Method::PUT, &format!("{BASE}/packs/{bad_id}"), bad.clone())
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error_code(), "bad_pack");
    let message = r.json::<ErrorBody>().error.message;
    assert!(message.contains("corrupt"), "{message}");
    assert!(message.contains(&fx.chunks[0].id.to_hex()), "{message}");

    // Right bytes under the wrong id.
    let r = server
        .request(
            Method::PUT,
            &format!("{BASE}/packs/{bad_id}"),
            fx.pack_bytes.clone(),
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error_code(), "bad_pack");
    // Not a pack at all.
    let junk = b"junk".to_vec();
    let r = server
        .request(
            Method::PUT,
            &format!("{BASE}/packs/{}", PackId::of(&junk)),
            junk,
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error_code(), "bad_pack");

    assert!(
        files_under(&dir.path().join("packs")).is_empty(),
        "{:?}",
        files_under(dir.path())
    );
    let exists = server
        .request(
            Method::POST,
            &format!("{BASE}/chunks/exists"),
            fx.chunk_ids(),
        )
        .await
        .expect(StatusCode::OK);
    assert!(exists.body.iter().all(|&b| b == 0));
    server.stop().await;
}

#[tokio::test]
async fn registration_refusals_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = fixture(3);
    server.upload(&fx).await;

    // Right chunks, wrong oid.
    let mut wrong_oid = fx.recipe();
    wrong_oid.oid = Oid::of(b"something else");
    // A chunk the server does not have (sizes still add up).
    let mut missing = fx.recipe();
    let unknown = ChunkId::of(b"never uploaded");
    missing.chunks[1].id = unknown;
    // Chunks in the wrong order: every chunk exists, the content differs.
    let mut reordered = fx.recipe();
    reordered.chunks.swap(0, 1);
    let good = fx.recipe();

    let mut batch = wrong_oid.encode();
    missing.encode_into(&mut batch);
    reordered.encode_into(&mut batch);
    good.encode_into(&mut batch);
    let reg: RegisterResponse = server
        .request(Method::POST, &format!("{BASE}/files"), batch)
        .await
        .expect(StatusCode::OK)
        .json();
    let codes: Vec<Option<String>> = reg
        .files
        .iter()
        .map(|f| f.error.as_ref().map(|e| e.code.clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            Some("hash_mismatch".to_string()),
            Some("missing_chunks".to_string()),
            Some("hash_mismatch".to_string()),
            None
        ]
    );
    assert!(!reg.files[0].ok && !reg.files[1].ok && !reg.files[2].ok && reg.files[3].ok);
    let message = &reg.files[1].error.as_ref().unwrap().message;
    assert!(
        message.contains(&unknown.to_hex()) && message.starts_with("1 of"),
        "{message}"
    );

    let r = server
        .request(Method::GET, &format!("{BASE}/files/{}", wrong_oid.oid), "")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");
    let recipes: Vec<PathBuf> = files_under(&dir.path().join("repos"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "recipe"))
        .collect();
    assert_eq!(recipes.len(), 1, "{recipes:?}");
    assert!(recipes[0].ends_with(format!("{}.recipe", good.oid)));

    // A malformed batch registers nothing at all.
    let mut broken = good.encode();
    broken.extend_from_slice(b"GMRECIP\n garbage");
    let r = server
        .request(Method::POST, "/acme/fresh/model/v1/files", broken)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "bad_recipe");
    assert!(files_under(&dir.path().join("repos/acme/fresh")).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_pack_damaged_on_the_server_after_upload_is_named_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fx = fixture(5);
    server.upload(&fx).await;
    // The disk flips a bit inside the first record's data after the upload verified.
    let stored = files_under(dir.path())
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains(&fx.pack.to_hex())
                && std::fs::metadata(p).unwrap().len() == fx.pack_bytes.len() as u64
        })
        .expect("the pack's file");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[(gitmodel_format::pack::HEADER_LEN + RECORD_HEADER_LEN) as usize + 10] ^= 0x40;
    std::fs::write(&stored, bytes).unwrap();

    let reg: RegisterResponse = server
        .request(Method::POST, &format!("{BASE}/files"), fx.recipe().encode())
        .await
        .expect(StatusCode::OK)
        .json();
    let error = reg.files[0]
        .error
        .as_ref()
        .expect("a damaged file registered");
    // Not the client's fault: the server's copy is named, not a hash mismatch.
    assert_eq!(error.code, "corrupt_chunk", "{}", error.message);
    assert!(
        error.message.contains(&fx.pack.to_hex()) && error.message.contains("damaged"),
        "{}",
        error.message
    );
    server
        .request(
            Method::GET,
            &format!("{BASE}/files/{}", fx.recipe().oid),
            "",
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn a_new_server_rebuilds_its_index_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture(4);
    let first = TestServer::start(dir.path()).await;
    first.upload(&fx).await;
    let reg: RegisterResponse = first
        .request(Method::POST, &format!("{BASE}/files"), fx.recipe().encode())
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(reg.files[0].ok);
    first.stop().await;

    let second = TestServer::start(dir.path()).await;
    let mut query = fx.chunk_ids();
    query.extend_from_slice(ChunkId::of(b"absent").as_bytes());
    let exists = second
        .request(Method::POST, &format!("{BASE}/chunks/exists"), query)
        .await
        .expect(StatusCode::OK);
    let mut want = vec![1u8; fx.chunks.len()];
    want.push(0);
    assert_eq!(&exists.body[..], want);
    let files = second
        .request(
            Method::POST,
            &format!("{BASE}/files/exists"),
            fx.recipe().oid.0.to_vec(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(&files.body[..], [1]);
    // Which repository may read which pack survives the restart: another repository
    // cannot register the file by naming its chunks ...
    let copy = "/acme/copy/model/v1";
    let reg: RegisterResponse = second
        .request(Method::POST, &format!("{copy}/files"), fx.recipe().encode())
        .await
        .expect(StatusCode::OK)
        .json();
    let code = reg.files[0].error.as_ref().map(|e| e.code.as_str());
    assert_eq!(code, Some("missing_chunks"), "{:?}", reg.files[0]);
    // ... until it uploads them itself. The pack is stored once, but the answer does not
    // say that another repository had it: `created` is from this repository's view.
    let packs_size = || -> u64 {
        files_under(&dir.path().join("packs"))
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    let before = packs_size();
    let up: PackUploaded = second
        .request(
            Method::PUT,
            &format!("{copy}/packs/{}", fx.pack),
            fx.pack_bytes.clone(),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(up.created);
    assert_eq!(packs_size(), before);
    // ... and then the rebuilt index is good enough to register it.
    let reg: RegisterResponse = second
        .request(Method::POST, &format!("{copy}/files"), fx.recipe().encode())
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(reg.files[0].ok, "{:?}", reg.files[0]);
    second.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let oid = Oid::of(b"x");
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/../x/model/v1/chunks/exists".into(),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            format!("/a/..%2f/model/v1/files/{oid}"),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            format!("/%2e%2e/x/model/v1/files/{oid}"),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            format!("/acme%2fvision/model/v1/files/{oid}"),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            format!("/.hidden/x/model/v1/files/{oid}"),
            StatusCode::BAD_REQUEST,
            "bad_name",
        ),
        (
            Method::GET,
            format!("{BASE}/files/{}", "A".repeat(64)),
            StatusCode::BAD_REQUEST,
            "bad_id",
        ),
        (
            Method::GET,
            format!("{BASE}/packs/../../etc"),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            format!("{BASE}/packs/..%2f..%2fetc"),
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            Method::GET,
            format!("{BASE}/files/{oid}"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/nope".into(),
            StatusCode::NOT_FOUND,
            "unknown_route",
        ),
        (
            Method::GET,
            format!("{BASE}/chunks/exists"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::DELETE,
            format!("{BASE}/packs/{}", PackId::of(b"")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/healthz".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = server.request(method.clone(), &path, "").await;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        assert_eq!(r.error_code(), code, "{method} {path}");
    }
    let r = server
        .request(Method::GET, &format!("{BASE}/chunks/exists"), "")
        .await;
    assert_eq!(r.headers["allow"], "POST");

    // Ragged id list, too many ids.
    let r = server
        .request(
            Method::POST,
            &format!("{BASE}/chunks/exists"),
            vec![0u8; 33],
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "bad_body");
    let too_many = vec![0u8; (gitmodel_proto::MAX_QUERY_IDS + 1) * 32];
    let r = server
        .request(Method::POST, &format!("{BASE}/files/exists"), too_many)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "too_large");
    // Nothing was created by any of this (`meta/` is the server's own, from startup).
    let created: Vec<PathBuf> = files_under(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(dir.path().join("meta")))
        .collect();
    assert!(created.is_empty(), "{created:?}");
    server.stop().await;
}

#[tokio::test]
async fn oversized_pack_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    // Raw HTTP: announce a body one byte over the limit and send none of it. The server
    // must answer from the headers alone.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT {BASE}/packs/{} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        PackId::of(b"big"),
        gitmodel_format::pack::MAX_PACK_BYTES + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer: {}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"too_large\""), "{text}");
    server.stop().await;
}
