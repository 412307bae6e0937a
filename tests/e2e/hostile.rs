//! Hostile servers, seen from the client: a server (the proxy in front of the real one,
//! playing its part) that answers a lying recipe, drips its answer, sends a huge garbage
//! recipe, or serves a tiny pack for a pointer that claims 2 GiB. The client keeps
//! nothing unverified, fails only the files concerned, and stays within the bounds of
//! docs/security.md ("What the client trusts of a server").

use std::path::Path;
use std::process::Output;

use gitmodel_format::pack::RECORD_HEADER_LEN;
use gitmodel_format::{Oid, Recipe, Segment};
use gitmodel_testkit::proxy::{Fault, Proxy, Rewrite, Rule};
use gitmodel_testkit::safetensors;

use crate::World;

fn model(seed: u64) -> Vec<u8> {
    safetensors(seed, 256 * 1024, &[0; 6])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A rule for the GET of `oid`'s recipe.
fn recipe_get(oid: &Oid, fault: Fault) -> Rule {
    let path: &'static str = Box::leak(format!("/files/{oid}$").into_boxed_str());
    Rule {
        method: Some("GET"),
        path_contains: path,
        hits: Vec::new(),
        fault,
    }
}

/// A well-formed located recipe of the right file and size whose chunks are in the wrong
/// order, each with a segment naming its true record: every chunk it names is real and
/// where it says, so only rebuilding the file and hashing it shows the lie.
fn reordered(body: &[u8]) -> Vec<u8> {
    let r = Recipe::decode(body).expect("the server's answer is a recipe");
    assert!(
        r.chunks.len() > 1,
        "the test needs a file of several chunks"
    );
    let mut pairs = Vec::new();
    for (seg, chunks) in r.segment_chunks() {
        for (k, c) in chunks.iter().enumerate() {
            let one = Segment {
                first: seg.first + k as u32,
                count: 1,
                length: RECORD_HEADER_LEN + c.raw_len as u64,
                ..*seg
            };
            pairs.push((*c, one));
        }
    }
    pairs.reverse();
    Recipe {
        chunks: pairs.iter().map(|p| p.0).collect(),
        segments: pairs.iter().map(|p| p.1).collect(),
        ..r
    }
    .encode()
}

/// The same lie, but the recipe's chunks no longer match the records its segments name:
/// caught before anything is fetched.
fn reversed(body: &[u8]) -> Vec<u8> {
    let mut r = Recipe::decode(body).expect("the server's answer is a recipe");
    r.chunks.reverse();
    r.encode()
}

/// Pushes `files` (path, content) from a fresh repository; returns the oids.
fn push(w: &World, files: &[(&str, &[u8])]) -> Vec<Oid> {
    let repo = w.work_repo("src");
    for (path, data) in files {
        w.commit_file(&repo, path, data, path);
    }
    w.env.git(&repo, &["push", "-q", "origin", "main"]);
    files.iter().map(|(_, d)| Oid::of(d)).collect()
}

fn assert_content(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        got == want,
        "{}: {} bytes, not the {} expected",
        path.display(),
        got.len(),
        want.len()
    );
}

#[test]
fn one_lying_recipe_fails_its_file_only_and_an_honest_server_repairs_the_clone() {
    let w = World::new();
    let (a, b) = (model(1), model(2));
    let oids = push(&w, &[("a.safetensors", &a), ("b.safetensors", &b)]);
    let liar = Proxy::start(
        &w.server.url,
        vec![recipe_get(&oids[0], Fault::RewriteBody(Rewrite(reordered)))],
    );
    let via_liar = liar.repo_url("acme", "vision");
    let home = w.env.home.path();

    // A clone through the liar: b arrives, a does not, and nothing of a is kept.
    let out = w.env.git_with(
        home,
        &[("GIT_MODEL_URL", &via_liar)],
        &["clone", "-q", w.origin.to_str().unwrap(), "clone"],
    );
    let clone = w.env.path("clone");
    assert!(clone.join(".git").is_dir(), "no clone: {}", stderr(&out));
    assert_content(&clone.join("b.safetensors"), &b);
    assert!(
        std::fs::read(clone.join("a.safetensors")).ok().as_deref() != Some(&a[..]),
        "a.safetensors was written from a lying recipe"
    );
    let mut recipes = Vec::new();
    crate::collect(&clone.join(".git/model/recipes"), &mut recipes);
    assert!(
        !recipes
            .iter()
            .any(|p| p.to_string_lossy().contains(&oids[0].to_hex())),
        "the lying recipe of a was kept: {recipes:?}"
    );

    // `git model pull` through the liar: fails, naming a's path and oid, and says so.
    let out = w
        .env
        .git_with(&clone, &[("GIT_MODEL_URL", &via_liar)], &["model", "pull"]);
    let text = stderr(&out);
    assert!(
        !out.status.success(),
        "pull through the liar succeeded: {text}"
    );
    assert!(
        text.contains("a.safetensors") && text.contains(&oids[0].to_hex()),
        "the failure does not name the file and its oid: {text}"
    );
    assert!(!text.contains("already in the working tree"), "{text}");
    assert_content(&clone.join("b.safetensors"), &b);

    // The same clone pulls byte-exact from an honest server.
    let out = w.env.git_with(&clone, &[], &["model", "pull"]);
    crate::check_ok("git model pull from the honest server", &out);
    assert_content(&clone.join("a.safetensors"), &a);
    assert_content(&clone.join("b.safetensors"), &b);
    let status = w.env.git(&clone, &["status", "--porcelain"]);
    assert!(status.trim().is_empty(), "working tree not clean: {status}");
}

#[test]
fn a_failed_file_does_not_stop_the_others_in_one_pull() {
    let w = World::new();
    let (a, b, c) = (model(3), model(4), model(5));
    let oids = push(
        &w,
        &[
            ("a.safetensors", &a),
            ("b.safetensors", &b),
            ("c.safetensors", &c),
        ],
    );
    let clone = w.clone_pointers_only("clone");
    // b's recipe lies in a way only its hash shows, c's in a way its pack index shows.
    let liar = Proxy::start(
        &w.server.url,
        vec![
            recipe_get(&oids[1], Fault::RewriteBody(Rewrite(reordered))),
            recipe_get(&oids[2], Fault::RewriteBody(Rewrite(reversed))),
        ],
    );
    let via_liar = liar.repo_url("acme", "vision");
    let out = w
        .env
        .git_with(&clone, &[("GIT_MODEL_URL", &via_liar)], &["model", "pull"]);
    let text = stderr(&out);
    eprintln!("git model pull said:\n{text}");
    assert!(!out.status.success(), "{text}");
    for (path, oid) in [("b.safetensors", oids[1]), ("c.safetensors", oids[2])] {
        assert!(
            text.contains(&format!("{path} ({oid})")),
            "the failure does not name {path} and its oid: {text}"
        );
    }
    assert_content(&clone.join("a.safetensors"), &a);
    // b and c are still pointers, and status says so: their chunks arrived, their
    // recipes were not kept.
    let st = w.env.git(&clone, &["model", "status"]);
    assert!(st.contains("b.safetensors not downloaded"), "{st}");
    assert!(st.contains("c.safetensors not downloaded"), "{st}");
    let out = w.env.git_with(&clone, &[], &["model", "pull"]);
    crate::check_ok("git model pull from the honest server", &out);
    assert_content(&clone.join("b.safetensors"), &b);
    assert_content(&clone.join("c.safetensors"), &c);
}

#[test]
fn a_dripping_server_fails_the_pull_within_the_transfer_timeout() {
    let w = World::new();
    let a = model(6);
    let oids = push(&w, &[("a.safetensors", &a)]);
    let clone = w.clone_pointers_only("clone");
    let drip = Proxy::start(
        &w.server.url,
        vec![recipe_get(
            &oids[0],
            Fault::DripResponseBody { every_ms: 200 },
        )],
    );
    let url = drip.repo_url("acme", "vision");
    let started = std::time::Instant::now();
    let out = w.env.git_with(
        &clone,
        &[("GIT_MODEL_URL", &url), ("GIT_MODEL_TRANSFER_TIMEOUT", "2")],
        &["model", "pull"],
    );
    let text = stderr(&out);
    eprintln!("git model pull said:\n{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("transfer timeout of 2 s") && text.contains(&drip.url),
        "the error does not name the timeout and the URL: {text}"
    );
    // Not a timing assertion: only that it returned rather than hang for the idle limit.
    eprintln!(
        "dripping server: the pull failed after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_huge_garbage_recipe_is_refused_by_its_header() {
    let w = World::new();
    let a = model(7);
    let oids = push(&w, &[("a.safetensors", &a)]);
    let clone = w.clone_pointers_only("clone");
    const GARBAGE: u64 = 900 << 20;
    let liar = Proxy::start(
        &w.server.url,
        vec![recipe_get(&oids[0], Fault::Garbage { bytes: GARBAGE })],
    );
    let url = liar.repo_url("acme", "vision");
    let out = w
        .env
        .git_with(&clone, &[("GIT_MODEL_URL", &url)], &["model", "pull"]);
    let text = stderr(&out);
    eprintln!("git model pull said:\n{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("bad header"),
        "the error does not name the header: {text}"
    );
    let sent: u64 = liar
        .log()
        .iter()
        .filter(|l| l.path.ends_with(&format!("/files/{}", oids[0])))
        .map(|l| l.body_sent)
        .max()
        .unwrap_or(0);
    // What the kernel's socket buffers took before the client closed: far from 900 MiB.
    assert!(
        sent < 64 << 20,
        "the client read {sent} bytes of a garbage recipe"
    );
    eprintln!("garbage recipe: {sent} of {GARBAGE} bytes sent before the client hung up");
}

/// The recipe [`tiny_pack_claiming_2_gib_writes_nothing_large`] answers.
static CLAIM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

fn claimed_recipe(_: &[u8]) -> Vec<u8> {
    CLAIM.get().expect("set before the pull").clone()
}

#[test]
fn tiny_pack_claiming_2_gib_writes_nothing_large() {
    use gitmodel_format::pack::{encode_chunk, MAX_CHUNK_BYTES};
    use gitmodel_format::{ChunkId, PackBuilder, Pointer, RecipeChunk, Segment};

    let w = World::new();
    // One 1 MiB chunk of zeros in a pack of about 200 bytes, stored on the real server.
    let zeros = vec![0u8; MAX_CHUNK_BYTES as usize];
    let id = ChunkId::of(&zeros);
    let (codec, stored) = encode_chunk(&zeros);
    let mut builder = PackBuilder::new();
    let entry = builder.push(id, MAX_CHUNK_BYTES, codec, &stored);
    let (pack, bytes, _) = builder.finish();
    eprintln!("the pack is {} bytes", bytes.len());
    let server = gitmodel_client::Remote::new(&w.model_url, gitmodel_client::Auth::None).unwrap();
    server.put_pack(&pack, &bytes).unwrap();
    // A pointer claiming 2 GiB, and a recipe naming that chunk 2048 times: sizes agree,
    // every chunk is real, only the oid cannot be right.
    const CLAIMED: u64 = 2 << 30;
    let n = (CLAIMED / MAX_CHUNK_BYTES as u64) as usize;
    let pointer = Pointer {
        oid: Oid::of(b"a file the server never had"),
        size: CLAIMED,
    };
    let recipe = Recipe {
        chunker: 1,
        oid: pointer.oid,
        size: CLAIMED,
        chunks: vec![
            RecipeChunk {
                id,
                raw_len: MAX_CHUNK_BYTES
            };
            n
        ],
        segments: vec![
            Segment {
                pack,
                first: 0,
                count: 1,
                offset: entry.offset,
                length: entry.record_len(),
            };
            n
        ],
    };
    CLAIM.set(recipe.encode()).unwrap();
    let repo = w.work_repo("src");
    w.commit_file(
        &repo,
        "big.safetensors",
        &pointer.to_bytes(),
        "a pointer only",
    );
    // The pre-push hook would look for content nobody has.
    w.env
        .git(&repo, &["push", "-q", "--no-verify", "origin", "main"]);

    // The clone lives on a 64 MiB disk: writing the claimed 2 GiB would fill it.
    let disk = gitmodel_testkit::Tmpfs::mount(64);
    let out = w.env.git_with(
        &disk.dir,
        &[("GIT_MODEL_SKIP_SMUDGE", "1")],
        &["clone", "-q", w.origin.to_str().unwrap(), "clone"],
    );
    crate::check_ok("clone onto the small disk", &out);
    let clone = disk.dir.join("clone");
    let liar = Proxy::start(
        &w.server.url,
        vec![recipe_get(
            &pointer.oid,
            Fault::Answer(Rewrite(claimed_recipe)),
        )],
    );
    let url = liar.repo_url("acme", "vision");
    let before = gitmodel_testkit::dir_size(&disk.dir);
    let out = w
        .env
        .git_with(&clone, &[("GIT_MODEL_URL", &url)], &["model", "pull"]);
    let text = stderr(&out);
    eprintln!("git model pull said:\n{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("big.safetensors") && text.contains("hashes to"),
        "the error does not say the content is wrong: {text}"
    );
    assert!(
        !text.contains("No space left"),
        "the pull filled the disk: {text}"
    );
    let after = gitmodel_testkit::dir_size(&disk.dir);
    assert!(
        after < before + (4 << 20),
        "the pull left {} bytes on the disk",
        after - before
    );
    assert_eq!(
        std::fs::read(clone.join("big.safetensors")).unwrap(),
        pointer.to_bytes()
    );
}

#[test]
fn a_wrong_recipe_kept_by_an_older_client_is_dropped_and_fetched_again() {
    let w = World::new();
    let a = model(8);
    let oids = push(&w, &[("a.safetensors", &a)]);
    let clone = w.clone_pointers_only("clone");
    w.env.git(&clone, &["model", "fetch"]);
    // What an older git-model kept from a lying server: the right chunks, the wrong list.
    let mut recipes = Vec::new();
    crate::collect(&clone.join(".git/model/recipes"), &mut recipes);
    let kept = recipes
        .iter()
        .find(|p| p.to_string_lossy().contains(&oids[0].to_hex()))
        .expect("fetch kept the recipe");
    let mut r = Recipe::decode(&std::fs::read(kept).unwrap()).unwrap();
    r.chunks.reverse();
    std::fs::write(kept, r.encode()).unwrap();

    let out = w.env.git_with(&clone, &[], &["model", "pull"]);
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("hashes to"), "{text}");
    assert!(!kept.exists(), "the wrong recipe was kept");
    let out = w.env.git_with(&clone, &[], &["model", "pull"]);
    crate::check_ok("git model pull after the wrong recipe was dropped", &out);
    assert_content(&clone.join("a.safetensors"), &a);
}
