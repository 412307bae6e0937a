//! Robustness under hostile input, in the style of a fuzzer but seeded and fast enough for
//! every test run: valid inputs are mutated (bit flips, truncations, insertions, splices,
//! random bytes) and fed to every parser that reads bytes from the other side, and random
//! requests are fed to the whole request handler. The only assertion is the important
//! one: nothing panics, and the server never answers with a server error for what is
//! the client's fault.
//!
//! Parsers covered: pointer, pkt-line, pack (trailer, index, records, whole-pack
//! verification), recipe (single and batch), Range headers, credentials, scopes, sizes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use gitmodel_format::pack::{parse_index, parse_records, parse_trailer, verify_pack, TRAILER_LEN};
use gitmodel_format::{Oid, PackId, Pointer, Recipe};
use gitmodel_server::{AppState, ServerConfig};
use gitmodel_testkit::packs::PackedFile;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One random mutation of `input`.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        match rng.gen_range(0..6) {
            0 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out[i] = rng.gen();
            }
            2 => out.truncate(rng.gen_range(0..=out.len())),
            3 => {
                let i = rng.gen_range(0..=out.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                out.splice(i..i, junk);
            }
            4 if out.len() > 1 => {
                // Duplicate a slice somewhere else (length fields then disagree).
                let a = rng.gen_range(0..out.len());
                let b = rng.gen_range(a..out.len());
                let piece = out[a..b].to_vec();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, piece);
            }
            _ => {
                // Interesting integers at a random place.
                let value: u64 =
                    [0, 1, u64::MAX, u64::from(u32::MAX), 1 << 31][rng.gen_range(0..5)];
                if out.len() >= 8 {
                    let i = rng.gen_range(0..=out.len() - 8);
                    out[i..i + 8].copy_from_slice(&value.to_le_bytes());
                }
            }
        }
    }
    out
}

/// A pack of four small chunks, compressible and incompressible ones, so both codecs
/// appear.
fn sample_pack() -> PackedFile {
    PackedFile::of_chunks((0..4u8).map(|i| -> Vec<u8> {
        if i % 2 == 0 {
            vec![i; 3000]
        } else {
            (0..3000u32)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
                .collect()
        }
    }))
}

const ROUNDS: usize = 3000;

#[test]
fn format_parsers_survive_mutated_input() {
    let mut rng = StdRng::seed_from_u64(0x006d_6f64_656c);
    let fx = sample_pack();
    let (pack_id, pack, data) = (fx.pack, &fx.pack_bytes, &fx.data);
    let pointer = Pointer::new(Oid::of(data), data.len() as u64).to_bytes();
    let recipe = fx.recipe();
    let recipe_bytes = recipe.encode();
    let mut batch = recipe_bytes.clone();
    recipe.encode_into(&mut batch);
    for _ in 0..ROUNDS {
        let p = mutate(&mut rng, &pointer);
        if let Some(parsed) = Pointer::parse(&p) {
            // Whatever parses prints as a canonical pointer that parses back the same
            // (the parser tolerates what git-lfs tolerates, such as a missing final
            // newline, but never yields something it cannot write).
            let canonical = parsed.to_bytes();
            let again = Pointer::parse(&canonical).expect("a canonical pointer parses");
            assert_eq!(again.to_bytes(), canonical);
        }

        let m = mutate(&mut rng, pack);
        let verified = verify_pack(&pack_id, &m);
        assert!(verified.is_err() || m == *pack, "a damaged pack verified");
        let _ = verify_pack(&PackId::of(&m), &m);
        let _ = parse_records(&m);
        if m.len() as u64 >= TRAILER_LEN {
            let len = m.len() as u64;
            let trailer = &m[m.len() - TRAILER_LEN as usize..];
            if let Ok((offset, _)) = parse_trailer(trailer, len) {
                if let Some(index) = m.get(offset as usize..m.len() - TRAILER_LEN as usize) {
                    let _ = parse_index(index, offset);
                }
            }
        }

        let r = mutate(&mut rng, &recipe_bytes);
        if let Ok(decoded) = Recipe::decode(&r) {
            decoded.validate().expect("a decoded recipe is valid");
        }
        let b = mutate(&mut rng, &batch);
        let mut offset = 0;
        while offset < b.len() {
            match Recipe::decode_prefix(&b[offset..]) {
                Ok((_, used)) if used > 0 => offset += used,
                _ => break,
            }
        }
    }
}

#[test]
fn pkt_line_reader_survives_mutated_input() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut stream = Vec::new();
    gitmodel_git::pktline::write_text(&mut stream, "git-filter-client").unwrap();
    gitmodel_git::pktline::write_text(&mut stream, "version=2").unwrap();
    gitmodel_git::pktline::write_flush(&mut stream).unwrap();
    gitmodel_git::pktline::write_data(&mut stream, &[0u8; 300]).unwrap();
    gitmodel_git::pktline::write_flush(&mut stream).unwrap();
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, &stream);
        let mut reader = &m[..];
        for _ in 0..16 {
            match gitmodel_git::pktline::read_packet(&mut reader) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let mut reader = &m[..];
        let _ = gitmodel_git::pktline::read_text_list(&mut reader);
    }
}

#[test]
fn header_parsers_survive_random_text() {
    let mut rng = StdRng::seed_from_u64(11);
    let seeds = [
        "bytes=0-99",
        "bytes=-5",
        "bytes=10-",
        "read:acme/*",
        "write:acme/vision",
        "50G",
        "30d",
        "Basic Z2l0OmdtdF94",
        "Bearer gmt_abc",
    ];
    for _ in 0..ROUNDS {
        let seed = seeds[rng.gen_range(0..seeds.len())].as_bytes();
        let text = String::from_utf8_lossy(&mutate(&mut rng, seed)).into_owned();
        let size = rng.gen_range(0..1000u64);
        if let Ok(range) = gitmodel_server::range::parse_range(&text, size) {
            assert!(
                range.start < range.end && range.end <= size,
                "{text:?} {range:?}"
            );
        }
        let _ = gitmodel_server::tokens::Scope::parse(&text);
        let _ = gitmodel_server::security::parse_size(&text);
        let _ = gitmodel_server::tokens::parse_duration(&text);
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value);
            let _ = gitmodel_server::tokens::credentials(&headers);
        }
    }
}

/// Random requests through the whole handler (routing, path checks, body limits,
/// JSON, ids, recipes, packs, Git LFS): never a panic, never a 5xx.
#[tokio::test]
async fn handler_answers_hostile_requests_without_server_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.path());
    let state = AppState::open_local(config).await.unwrap();
    let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
    let mut rng = StdRng::seed_from_u64(0x5eed);

    let fx = sample_pack();
    let (pack_id, pack, data) = (fx.pack, fx.pack_bytes.clone(), &fx.data);
    let oid = fx.oid();
    let recipe = fx.recipe();
    // Something real to find, so that handlers get past their lookups.
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/acme/vision/model/v1/packs/{pack_id}"),
            pack.clone(),
        ),
        (
            Method::POST,
            "/acme/vision/model/v1/files".to_string(),
            recipe.encode(),
        ),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(&path)
            .header("host", "localhost")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = gitmodel_server::api::handle(Arc::clone(&state), req, peer).await;
        assert_eq!(resp.status(), 200, "{path}");
    }

    let ids = fx.chunk_ids();
    let batch = format!(
        r#"{{"operation":"download","objects":[{{"oid":"{oid}","size":{}}}]}}"#,
        data.len()
    );
    let lock = r#"{"path":"weights/model.bin","ref":{"name":"refs/heads/main"}}"#;
    let segments = [
        "acme",
        "vision",
        "vision.git",
        "model",
        "v1",
        "files",
        "exists",
        "chunks",
        "packs",
        "info",
        "lfs",
        "objects",
        "batch",
        "verify",
        "locks",
        "unlock",
        "..",
        ".",
        "%2e%2e",
        "%2f",
        "a\\b",
        "",
        "healthz",
    ];
    let bodies: Vec<Vec<u8>> = vec![
        ids,
        recipe.encode(),
        pack,
        batch.into_bytes(),
        lock.as_bytes().to_vec(),
        Vec::new(),
    ];
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    let mut seen = std::collections::BTreeMap::new();
    for round in 0..1500 {
        let mut path = String::new();
        if round % 3 == 0 {
            // Mostly-valid paths reach the handlers.
            let tails = [
                "model/v1/chunks/exists".to_string(),
                "model/v1/files/exists".to_string(),
                "model/v1/files".to_string(),
                format!("model/v1/files/{oid}"),
                format!("model/v1/packs/{pack_id}"),
                "info/lfs/objects/batch".to_string(),
                format!("info/lfs/objects/{oid}"),
                "info/lfs/verify".to_string(),
                "info/lfs/locks".to_string(),
                "info/lfs/locks/verify".to_string(),
                "info/lfs/locks/1/unlock".to_string(),
            ];
            path = format!("/acme/vision/{}", tails[rng.gen_range(0..tails.len())]);
        } else {
            for _ in 0..rng.gen_range(1..8) {
                path.push('/');
                path.push_str(segments[rng.gen_range(0..segments.len())]);
            }
        }
        let Ok(uri) = path.parse::<http::Uri>() else {
            continue;
        };
        let body = {
            let base = &bodies[rng.gen_range(0..bodies.len())];
            if rng.gen_bool(0.5) {
                mutate(&mut rng, base)
            } else {
                base.clone()
            }
        };
        let mut req = Request::builder()
            .method(methods[rng.gen_range(0..methods.len())].clone())
            .uri(uri)
            .header("host", "localhost");
        if rng.gen_bool(0.3) {
            let ranges = [
                "bytes=0-10",
                "bytes=-3",
                "bytes=5-",
                "bytes=9-2",
                "bytes=0-1,4-5",
                "x",
            ];
            req = req.header("range", ranges[rng.gen_range(0..ranges.len())]);
        }
        if rng.gen_bool(0.3) {
            let types = [
                "application/vnd.git-lfs+json",
                "text/plain",
                "application/json",
            ];
            req = req.header("content-type", types[rng.gen_range(0..types.len())]);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let method = req.method().clone();
        let resp = gitmodel_server::api::handle(Arc::clone(&state), req, peer).await;
        let status = resp.status();
        *seen.entry(status.as_u16()).or_insert(0) += 1;
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        assert!(
            !status.is_server_error(),
            "{method} {path} answered {status}: {:?}",
            body.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
    }
    // The requests reached the handlers, not only the router.
    for status in [200, 206, 400, 404, 405, 422] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
}
