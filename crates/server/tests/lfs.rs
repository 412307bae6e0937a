//! The Git LFS API of the server: a real server on 127.0.0.1:0 in-process, spoken to over
//! real HTTP/1.1 with hyper's client, as the reference client would (batch, PUT, GET with
//! ranges, verify, locks), plus its interplay with the native API.

mod common;

use std::path::Path;
use std::sync::Arc;

use gitmodel_format::{Oid, Recipe};
use gitmodel_proto::{RegisterResponse, RepoName};
use gitmodel_server::{Access, ApiError, Authorizer};
use gitmodel_testkit::http::{Reply, LFS_MEDIA};
use gitmodel_testkit::packs::PackedFile;
use gitmodel_testkit::{dir_size, noise};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use common::TestServer;

const LFS: &str = "/acme/lfsrepo.git/info/lfs";

impl TestServer {
    /// A Git LFS JSON request, as the reference client sends it.
    async fn lfs(&self, method: Method, path: &str, body: Value) -> Reply {
        self.lfs_as(method, path, None, body).await
    }

    async fn lfs_as(&self, method: Method, path: &str, user: Option<&str>, body: Value) -> Reply {
        let content_type = format!("{LFS_MEDIA}; charset=utf-8");
        let mut headers = vec![
            ("accept", LFS_MEDIA),
            ("content-type", content_type.as_str()),
        ];
        if let Some(user) = user {
            headers.push(("x-git-model-user", user));
        }
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        self.request_with(method, path, &headers, body).await
    }

    async fn batch(&self, operation: &str, objects: Value) -> Reply {
        self.lfs(
            Method::POST,
            &format!("{LFS}/objects/batch"),
            json!({"operation": operation, "transfers": ["basic"],
                   "ref": {"name": "refs/heads/main"}, "objects": objects}),
        )
        .await
    }

    async fn put(&self, oid: &Oid, data: &[u8]) -> Reply {
        self.request_with(
            Method::PUT,
            &format!("{LFS}/objects/{oid}"),
            &[("content-type", "application/octet-stream")],
            data.to_vec(),
        )
        .await
    }
}

/// Half noise, half zeros: some chunks compress, some do not.
fn object(seed: u64, len: usize) -> Vec<u8> {
    let mut data = noise(seed, len / 2);
    data.resize(len, 0);
    data
}

fn recipe_path(dir: &Path, repo: &str, oid: &Oid) -> std::path::PathBuf {
    let hex = oid.to_hex();
    dir.join(format!(
        "repos/acme/{repo}/files/{}/{hex}.recipe",
        &hex[..2]
    ))
}

fn href_path(action: &Value) -> String {
    let href = action["href"].as_str().expect("href");
    href.strip_prefix("http://localhost")
        .unwrap_or_else(|| panic!("href {href} is not on the request's host"))
        .to_string()
}

#[tokio::test]
async fn batch_answers_follow_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let data = object(1, 300_000);
    let oid = Oid::of(&data);
    let size = data.len();

    // Upload of an absent object: upload and verify actions, absolute hrefs.
    let r = server
        .batch("upload", json!([{"oid": oid.to_hex(), "size": size}]))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.headers["content-type"], LFS_MEDIA);
    let answer = r.json_value();
    assert_eq!(answer["transfer"], "basic");
    assert_eq!(answer["hash_algo"], "sha256");
    let obj = &answer["objects"][0];
    assert_eq!(
        (obj["oid"].as_str(), obj["size"].as_u64()),
        (Some(&*oid.to_hex()), Some(size as u64))
    );
    assert_eq!(
        obj["actions"]["upload"]["href"],
        format!("http://localhost/acme/lfsrepo.git/info/lfs/objects/{oid}")
    );
    assert_eq!(
        obj["actions"]["verify"]["href"],
        "http://localhost/acme/lfsrepo.git/info/lfs/verify"
    );
    assert!(obj["actions"]["upload"]["expires_in"].as_i64().unwrap() > 0);
    assert!(obj.get("error").is_none());

    // Download of an absent object: a per-object 404 in a 200 answer.
    let answer = server
        .batch("download", json!([{"oid": oid.to_hex(), "size": size}]))
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(answer["objects"][0]["error"]["code"], 404);
    assert!(answer["objects"][0].get("actions").is_none());

    // Per-object validation: bad oids and sizes are 422; size 0 is fine.
    let answer = server
        .batch(
            "upload",
            json!([
                {"oid": "abc", "size": 1},
                {"oid": oid.to_hex().to_uppercase(), "size": 1},
                {"oid": oid.to_hex(), "size": -1},
                {"oid": oid.to_hex(), "size": 1.5},
                {"oid": Oid::empty().to_hex(), "size": 0},
            ]),
        )
        .await
        .expect(StatusCode::OK)
        .json_value();
    let objects = answer["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 5);
    for bad in &objects[..4] {
        assert_eq!(bad["error"]["code"], 422, "{bad}");
        assert!(bad.get("actions").is_none());
    }
    assert_eq!(objects[0]["oid"], "abc");
    assert_eq!(objects[2]["size"], -1);
    assert!(
        objects[4]["actions"]["upload"].is_object(),
        "{}",
        objects[4]
    );

    // Request-level errors, in the LFS error shape.
    let path = format!("{LFS}/objects/batch");
    let r = server
        .lfs(
            Method::POST,
            &path,
            json!({"operation": "delete", "objects": []}),
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.lfs_error().contains("unknown operation"));
    let r = server
        .request_with(
            Method::POST,
            &path,
            &[("content-type", LFS_MEDIA)],
            "{not json",
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    r.lfs_error();
    let r = server
        .lfs(Method::POST, &path, json!({"operation": "download"}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(r.lfs_error().contains("objects"), "names the missing field");
    let many: Vec<Value> = (0..=gitmodel_server::lfs::MAX_BATCH_OBJECTS)
        .map(|_| json!({"oid": oid.to_hex(), "size": 1}))
        .collect();
    let r = server
        .batch("download", Value::Array(many))
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.lfs_error().contains("objects in one batch"));
    let r = server
        .lfs(
            Method::POST,
            &path,
            json!({"operation": "download", "objects": [], "hash_algo": "sha512"}),
        )
        .await
        .expect(StatusCode::CONFLICT);
    r.lfs_error();
    let r = server
        .lfs(
            Method::POST,
            &path,
            json!({"operation": "download", "objects": [], "transfers": ["tus"]}),
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    r.lfs_error();
    let r = server
        .request_with(Method::POST, &path, &[("content-type", "text/plain")], "{}")
        .await
        .expect(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    r.lfs_error();
    let r = server
        .request(Method::GET, &path, "")
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    r.lfs_error();
    let too_big = vec![b' '; gitmodel_server::lfs::MAX_JSON_BODY + 1];
    server
        .request_with(Method::POST, &path, &[("content-type", LFS_MEDIA)], too_big)
        .await
        .expect(StatusCode::PAYLOAD_TOO_LARGE)
        .lfs_error();

    // Once uploaded: no actions on upload (the client skips it), a download action, and
    // verify agrees. The repository path works with and without `.git`.
    server.put(&oid, &data).await.expect(StatusCode::OK);
    let answer = server
        .batch("upload", json!([{"oid": oid.to_hex(), "size": size}]))
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert!(answer["objects"][0].get("actions").is_none(), "{answer}");
    assert!(answer["objects"][0].get("error").is_none(), "{answer}");
    let answer = server
        .lfs(
            Method::POST,
            "/acme/lfsrepo/info/lfs/objects/batch",
            json!({"operation": "download", "objects": [{"oid": oid.to_hex(), "size": size}]}),
        )
        .await
        .expect(StatusCode::OK)
        .json_value();
    let download = &answer["objects"][0]["actions"]["download"];
    let got = server
        .request(Method::GET, &href_path(download), "")
        .await
        .expect(StatusCode::OK);
    assert!(got.body == data);
    // A size that disagrees with the stored object is a validation error.
    let answer = server
        .batch("download", json!([{"oid": oid.to_hex(), "size": size + 1}]))
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(answer["objects"][0]["error"]["code"], 422);

    let verify = format!("{LFS}/verify");
    server
        .lfs(
            Method::POST,
            &verify,
            json!({"oid": oid.to_hex(), "size": size}),
        )
        .await
        .expect(StatusCode::OK);
    server
        .lfs(
            Method::POST,
            &verify,
            json!({"oid": oid.to_hex(), "size": 1}),
        )
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY)
        .lfs_error();
    server
        .lfs(
            Method::POST,
            &verify,
            json!({"oid": Oid::of(b"x").to_hex(), "size": 1}),
        )
        .await
        .expect(StatusCode::NOT_FOUND)
        .lfs_error();
    // Other repositories do not see it.
    let answer = server
        .lfs(
            Method::POST,
            "/acme/other.git/info/lfs/objects/batch",
            json!({"operation": "download", "objects": [{"oid": oid.to_hex(), "size": size}]}),
        )
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(answer["objects"][0]["error"]["code"], 404);
    server.stop().await;
}

#[tokio::test]
async fn put_then_get_byte_exact_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let data = object(2, 3 * 1024 * 1024 + 4321);
    let oid = Oid::of(&data);
    let size = data.len() as u64;
    server.put(&oid, &data).await.expect(StatusCode::OK);
    assert!(recipe_path(dir.path(), "lfsrepo", &oid).is_file());

    let path = format!("{LFS}/objects/{oid}");
    let whole = server
        .request(Method::GET, &path, "")
        .await
        .expect(StatusCode::OK);
    assert_eq!(whole.headers["content-length"], size.to_string().as_str());
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert!(whole.body == data, "whole object differs");

    // Resume forms: a-b, a- (what the reference client sends), -n; across chunk edges.
    for (spec, from, to) in [
        ("bytes=0-0".to_string(), 0, 1),
        (format!("bytes=1000000-{}", size - 1), 1_000_000, size),
        ("bytes=65000-200000".to_string(), 65_000, 200_001),
        (format!("bytes={}-", size - 10), size - 10, size),
        ("bytes=-100".to_string(), size - 100, size),
        (format!("bytes=5-{}", size * 2), 5, size),
    ] {
        let part = server
            .request_with(Method::GET, &path, &[("range", &spec)], "")
            .await
            .expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers["content-range"],
            format!("bytes {from}-{}/{size}", to - 1).as_str(),
            "{spec}"
        );
        assert!(
            part.body[..] == data[from as usize..to as usize],
            "{spec}: wrong bytes"
        );
    }
    let r = server
        .request_with(
            Method::GET,
            &path,
            &[("range", &format!("bytes={size}-"))],
            "",
        )
        .await
        .expect(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers["content-range"],
        format!("bytes */{size}").as_str()
    );
    r.lfs_error();
    server
        .request_with(Method::GET, &path, &[("range", "bytes=0-1,5-6")], "")
        .await
        .expect(StatusCode::BAD_REQUEST)
        .lfs_error();

    // Unknown objects, other repositories, bad oids.
    server
        .request(
            Method::GET,
            &format!("{LFS}/objects/{}", Oid::of(b"no")),
            "",
        )
        .await
        .expect(StatusCode::NOT_FOUND)
        .lfs_error();
    server
        .request(
            Method::GET,
            &format!("/acme/else/info/lfs/objects/{oid}"),
            "",
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    server
        .request(
            Method::GET,
            &format!("{LFS}/objects/{}", "A".repeat(64)),
            "",
        )
        .await
        .expect(StatusCode::BAD_REQUEST)
        .lfs_error();

    // The empty object.
    server.put(&Oid::empty(), b"").await.expect(StatusCode::OK);
    let empty = server
        .request(Method::GET, &format!("{LFS}/objects/{}", Oid::empty()), "")
        .await
        .expect(StatusCode::OK);
    assert!(empty.body.is_empty());
    assert_eq!(empty.headers["content-length"], "0");

    // A second upload of the same object is harmless and stores nothing.
    let before = dir_size(&dir.path().join("packs"));
    server.put(&oid, &data).await.expect(StatusCode::OK);
    assert_eq!(dir_size(&dir.path().join("packs")), before);
    server.stop().await;
}

#[tokio::test]
async fn wrong_body_is_refused_and_no_recipe_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let data = object(3, 500_000);
    let claimed = Oid::of(b"something else entirely");
    let r = server
        .put(&claimed, &data)
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    let message = r.lfs_error();
    assert!(message.contains(&Oid::of(&data).to_hex()), "{message}");
    assert!(!recipe_path(dir.path(), "lfsrepo", &claimed).exists());
    assert!(!recipe_path(dir.path(), "lfsrepo", &Oid::of(&data)).exists());
    // The packs staged while the body streamed in are gone too, and no chunk shows.
    assert_eq!(dir_size(&dir.path().join("packs")), 0, "packs were kept");
    assert_eq!(dir_size(&dir.path().join("repos")), 0, "records were kept");
    let answer = server
        .batch(
            "download",
            json!([{"oid": claimed.to_hex(), "size": data.len()}]),
        )
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(answer["objects"][0]["error"]["code"], 404);
    server.stop().await;
}

#[tokio::test]
async fn objects_sharing_most_bytes_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let v1 = noise(4, 8 * 1024 * 1024);
    server.put(&Oid::of(&v1), &v1).await.expect(StatusCode::OK);
    let after_v1 = dir_size(&dir.path().join("packs"));
    assert!(after_v1 > 7 * 1024 * 1024, "v1 stored {after_v1} bytes");

    // A small edit in the middle, and an insertion near the start.
    let mut v2 = v1.clone();
    v2[4_000_000..4_000_100].fill(7);
    v2.splice(100_000..100_000, b"inserted".iter().copied());
    // Uploaded to the same repository: only the chunks around the edits are new.
    server.put(&Oid::of(&v2), &v2).await.expect(StatusCode::OK);
    let after_v2 = dir_size(&dir.path().join("packs"));
    let grown = after_v2 - after_v1;
    assert!(
        grown < (v2.len() / 10) as u64,
        "the second version stored {grown} new bytes for a {}-byte object",
        v2.len()
    );
    // Another repository may not read this one's packs, so it stores its own copy
    // (and learns nothing about what else is stored).
    let r = server
        .request(
            Method::PUT,
            &format!("/acme/fork/info/lfs/objects/{}", Oid::of(&v2)),
            v2.clone(),
        )
        .await
        .expect(StatusCode::OK);
    drop(r);
    let grown = dir_size(&dir.path().join("packs")) - after_v2;
    assert!(
        grown > (v2.len() as u64) * 9 / 10,
        "the fork stored only {grown} bytes for a {}-byte object",
        v2.len()
    );
    for repo in ["lfsrepo", "fork"] {
        let got = server
            .request(
                Method::GET,
                &format!("/acme/{repo}.git/info/lfs/objects/{}", Oid::of(&v2)),
                "",
            )
            .await
            .expect(StatusCode::OK);
        assert!(got.body == v2, "{repo}");
    }
    server.stop().await;
}

#[tokio::test]
async fn native_and_lfs_objects_are_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    // Native push: a pack of the file's chunks, then registration.
    let data = object(5, 400_000);
    let packed = PackedFile::split(&data, 64 * 1024);
    let recipe = packed.recipe();
    let (pack, pack_bytes) = (packed.pack, packed.pack_bytes);
    let native = "/acme/lfsrepo/model/v1";
    server
        .request(Method::PUT, &format!("{native}/packs/{pack}"), pack_bytes)
        .await
        .expect(StatusCode::OK);
    let reg: RegisterResponse = serde_json::from_slice(
        &server
            .request(Method::POST, &format!("{native}/files"), recipe.encode())
            .await
            .expect(StatusCode::OK)
            .body,
    )
    .unwrap();
    assert!(reg.files[0].ok, "{:?}", reg.files[0]);

    // ... is an LFS object: present for upload, downloadable, byte-exact.
    let objects = json!([{"oid": recipe.oid.to_hex(), "size": data.len()}]);
    let answer = server.batch("upload", objects.clone()).await.json_value();
    assert!(answer["objects"][0].get("actions").is_none(), "{answer}");
    let answer = server.batch("download", objects).await.json_value();
    let got = server
        .request(
            Method::GET,
            &href_path(&answer["objects"][0]["actions"]["download"]),
            "",
        )
        .await
        .expect(StatusCode::OK);
    assert!(got.body == data);

    // An LFS upload is a registered file for native clients.
    let lfs_data = object(6, 700_000);
    let lfs_oid = Oid::of(&lfs_data);
    server.put(&lfs_oid, &lfs_data).await.expect(StatusCode::OK);
    let exists = server
        .request(
            Method::POST,
            &format!("{native}/files/exists"),
            lfs_oid.0.to_vec(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(&exists.body[..], [1]);
    let located = Recipe::decode(
        &server
            .request(Method::GET, &format!("{native}/files/{lfs_oid}"), "")
            .await
            .expect(StatusCode::OK)
            .body,
    )
    .expect("a recipe in the native format");
    assert_eq!(
        (located.oid, located.size),
        (lfs_oid, lfs_data.len() as u64)
    );
    assert!(located.is_located());
    // A native client can register it again in this repository from the chunks the LFS
    // upload stored, but not in another one: those chunks are not its to name.
    for (repo, ok) in [("lfsrepo", true), ("copy", false)] {
        let reg: RegisterResponse = serde_json::from_slice(
            &server
                .request(
                    Method::POST,
                    &format!("/acme/{repo}/model/v1/files"),
                    located.unlocated().encode(),
                )
                .await
                .expect(StatusCode::OK)
                .body,
        )
        .unwrap();
        assert_eq!(reg.files[0].ok, ok, "{repo}: {:?}", reg.files[0]);
    }
    server.stop().await;
}

#[tokio::test]
async fn locks_create_conflict_list_verify_unlock_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let locks = format!("{LFS}/locks");

    let created = server
        .lfs_as(
            Method::POST,
            &locks,
            Some("alice"),
            json!({"path": "weights/model.bin", "ref": {"name": "refs/heads/main"}}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created.headers["content-type"], LFS_MEDIA);
    let lock = created.json_value()["lock"].clone();
    let id = lock["id"].as_str().unwrap().to_string();
    assert_eq!(lock["path"], "weights/model.bin");
    assert_eq!(lock["owner"]["name"], "alice");
    let at = lock["locked_at"].as_str().unwrap();
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );

    // The same path again, by anyone: 409 with the existing lock.
    let conflict = server
        .lfs_as(
            Method::POST,
            &locks,
            Some("bob"),
            json!({"path": "weights/model.bin"}),
        )
        .await
        .expect(StatusCode::CONFLICT);
    assert_eq!(conflict.json_value()["lock"], lock);
    assert!(conflict.lfs_error().contains("already locked"));
    server
        .lfs(Method::POST, &locks, json!({"path": ""}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY)
        .lfs_error();

    // Two more locks by an anonymous client (no identity header).
    for path in ["a.bin", "dir/b c.bin"] {
        let r = server
            .lfs(Method::POST, &locks, json!({"path": path}))
            .await
            .expect(StatusCode::CREATED);
        assert_eq!(r.json_value()["lock"]["owner"]["name"], "anonymous");
    }

    // Listing: all, by path (URL-encoded), by id, page by page.
    let all = server
        .request_with(Method::GET, &locks, &[("accept", LFS_MEDIA)], "")
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(all["locks"].as_array().unwrap().len(), 3);
    assert!(all.get("next_cursor").is_none());
    let by_path = server
        .request(
            Method::GET,
            &format!("{locks}?path=dir%2Fb+c.bin&refspec=refs%2Fheads%2Fmain"),
            "",
        )
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(by_path["locks"].as_array().unwrap().len(), 1);
    assert_eq!(by_path["locks"][0]["path"], "dir/b c.bin");
    let by_id = server
        .request(Method::GET, &format!("{locks}?id={id}"), "")
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(by_id["locks"][0], lock);
    let none = server
        .request(Method::GET, &format!("{locks}?path=nope"), "")
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(none["locks"], json!([]));
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .request(Method::GET, &format!("{locks}?limit=1&cursor={cursor}"), "")
            .await
            .expect(StatusCode::OK)
            .json_value();
        let items = page["locks"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        seen.push(items[0]["path"].as_str().unwrap().to_string());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["a.bin", "dir/b c.bin", "weights/model.bin"]);

    // Verify splits ours from theirs.
    let verify = format!("{locks}/verify");
    let mine = server
        .lfs_as(
            Method::POST,
            &verify,
            Some("alice"),
            json!({"ref": {"name": "refs/heads/main"}}),
        )
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(mine["ours"].as_array().unwrap().len(), 1);
    assert_eq!(mine["theirs"].as_array().unwrap().len(), 2);
    let page = server
        .lfs_as(Method::POST, &verify, Some("bob"), json!({"limit": 2}))
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(page["ours"], json!([]));
    assert_eq!(page["theirs"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());

    // Unlocking: another owner's lock needs force.
    let unlock = format!("{locks}/{id}/unlock");
    let r = server
        .lfs_as(Method::POST, &unlock, Some("bob"), json!({"force": false}))
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(r.lfs_error().contains("alice"));
    let r = server
        .lfs_as(Method::POST, &unlock, Some("bob"), json!({"force": true}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.json_value()["lock"], lock);
    server
        .lfs_as(Method::POST, &unlock, Some("alice"), json!({}))
        .await
        .expect(StatusCode::NOT_FOUND)
        .lfs_error();
    // The path can be locked again, under a new id.
    let again = server
        .lfs_as(
            Method::POST,
            &locks,
            Some("alice"),
            json!({"path": "weights/model.bin"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json_value();
    assert_ne!(again["lock"]["id"].as_str(), Some(id.as_str()));
    // The owner unlocks without force.
    let own = format!("{locks}/{}/unlock", again["lock"]["id"].as_str().unwrap());
    server
        .lfs_as(Method::POST, &own, Some("alice"), Value::Null)
        .await
        .expect(StatusCode::OK);
    server.stop().await;

    // Locks are in storage: a new server process sees them.
    let server = TestServer::start(dir.path()).await;
    let all = server
        .request(Method::GET, &locks, "")
        .await
        .expect(StatusCode::OK)
        .json_value();
    let mut paths: Vec<&str> = all["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["a.bin", "dir/b c.bin"]);
    // Locks are per repository.
    let other = server
        .request(Method::GET, "/acme/other/info/lfs/locks", "")
        .await
        .expect(StatusCode::OK)
        .json_value();
    assert_eq!(other["locks"], json!([]));
    server.stop().await;
}

/// Refuses everything without `authorization: Bearer good`, and writes to anyone.
struct ReadOnlyForGood;

impl Authorizer for ReadOnlyForGood {
    fn authorize(&self, headers: &HeaderMap, _: &RepoName, access: Access) -> Result<(), ApiError> {
        let good = headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == b"Bearer good");
        match (good, access) {
            (false, _) => Err(ApiError::Unauthorized {
                reason: "no credentials".into(),
            }),
            (true, Access::Read) => Ok(()),
            (true, Access::Write | Access::Admin) => Err(ApiError::Forbidden {
                reason: "read-only".into(),
            }),
        }
    }
}

#[tokio::test]
async fn authorization_answers_401_with_lfs_authenticate_and_403() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), Arc::new(ReadOnlyForGood)).await;
    let path = format!("{LFS}/objects/batch");
    let body = |op: &str| {
        serde_json::to_vec(
            &json!({"operation": op, "objects": [{"oid": Oid::empty().to_hex(), "size": 0}]}),
        )
        .unwrap()
    };
    let r = server
        .request_with(
            Method::POST,
            &path,
            &[("content-type", LFS_MEDIA)],
            body("download"),
        )
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["lfs-authenticate"], "Basic realm=\"git-model\"");
    r.lfs_error();
    let auth = [
        ("content-type", LFS_MEDIA),
        ("authorization", "Bearer good"),
    ];
    let answer = server
        .request_with(Method::POST, &path, &auth, body("download"))
        .await
        .expect(StatusCode::OK)
        .json_value();
    // Credentials are handed back for the transfer requests.
    assert_eq!(answer["objects"][0]["error"]["code"], 404);
    let r = server
        .request_with(Method::POST, &path, &auth, body("upload"))
        .await
        .expect(StatusCode::FORBIDDEN);
    r.lfs_error();
    server
        .request_with(
            Method::PUT,
            &format!("{LFS}/objects/{}", Oid::empty()),
            &auth,
            "",
        )
        .await
        .expect(StatusCode::FORBIDDEN);
    server
        .request_with(
            Method::POST,
            &format!("{LFS}/locks"),
            &auth,
            r#"{"path":"x"}"#,
        )
        .await
        .expect(StatusCode::FORBIDDEN);
    server
        .request_with(Method::GET, &format!("{LFS}/locks"), &auth, "")
        .await
        .expect(StatusCode::OK);
    // Native endpoints keep their own error shape, without LFS-Authenticate.
    let r = server
        .request(Method::POST, "/acme/lfsrepo/model/v1/files/exists", "")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert!(!r.headers.contains_key("lfs-authenticate"));
    assert!(r.json_value()["error"]["code"].is_string());
    server.stop().await;
}

/// A download action carries the batch's credentials when it had some.
struct AllowBearer;

impl Authorizer for AllowBearer {
    fn authorize(&self, headers: &HeaderMap, _: &RepoName, _: Access) -> Result<(), ApiError> {
        if headers.contains_key("authorization") {
            Ok(())
        } else {
            Err(ApiError::Unauthorized {
                reason: "no credentials".into(),
            })
        }
    }
}

#[tokio::test]
async fn transfer_actions_carry_the_batch_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), Arc::new(AllowBearer)).await;
    let data = object(7, 100_000);
    let oid = Oid::of(&data);
    let auth = [("content-type", LFS_MEDIA), ("authorization", "Bearer t0k")];
    let batch = serde_json::to_vec(
        &json!({"operation": "upload", "objects": [{"oid": oid.to_hex(), "size": data.len()}]}),
    )
    .unwrap();
    let answer = server
        .request_with(Method::POST, &format!("{LFS}/objects/batch"), &auth, batch)
        .await
        .expect(StatusCode::OK)
        .json_value();
    let obj = &answer["objects"][0];
    assert_eq!(obj["authenticated"], true);
    let upload = &obj["actions"]["upload"];
    assert_eq!(upload["header"]["Authorization"], "Bearer t0k");
    server
        .request_with(
            Method::PUT,
            &href_path(upload),
            &[(
                "authorization",
                upload["header"]["Authorization"].as_str().unwrap(),
            )],
            data.clone(),
        )
        .await
        .expect(StatusCode::OK);
    server
        .request(Method::PUT, &href_path(upload), data)
        .await
        .expect(StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_damaged_pack_never_yields_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let data = noise(8, 2 * 1024 * 1024);
    let oid = Oid::of(&data);
    server.put(&oid, &data).await.expect(StatusCode::OK);
    let mut packs = Vec::new();
    let mut stack = vec![dir.path().join("packs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                packs.push(e.path());
            }
        }
    }
    assert_eq!(packs.len(), 1);
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&packs[0], bytes).unwrap();

    match server
        .try_request_with(Method::GET, &format!("{LFS}/objects/{oid}"), &[], "")
        .await
    {
        Err(_) => {}
        Ok(Reply { status, body, .. }) => assert!(
            !status.is_success(),
            "a damaged object was served: {status}, {} bytes, intact: {}",
            body.len(),
            body == data
        ),
    }
    // A range before the damage is still served (each chunk is checked on its own).
    let head = server
        .request_with(
            Method::GET,
            &format!("{LFS}/objects/{oid}"),
            &[("range", "bytes=0-999")],
            "",
        )
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert!(head.body[..] == data[..1000]);
    server.stop().await;
}
