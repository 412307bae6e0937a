//! File registration: turning a client's unlocated recipes into located, verified ones.
//!
//! For each recipe of a batch: find every chunk in the [`ChunkIndex`], group consecutive
//! records of one pack into [`Segment`]s, then *rebuild the file* from storage (read the
//! records, check each against the recipe, decode, which checks the chunk's BLAKE3, and
//! hash everything with SHA-256) and compare with the claimed oid and size. Only a recipe
//! that passes is stored, so a registered file can always be downloaded and always hashes
//! to its oid. Failures of one file are answered per file; they never fail the batch.
//!
//! Memory stays bounded however large the file: reads are windows of at most
//! [`WINDOW_BYTES`] (split at record boundaries), with one window verified while the next
//! is fetched.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use gitmodel_format::id::OidHasher;

use crate::prefix;
use gitmodel_format::pack::{parse_records, MAX_CHUNK_BYTES, RECORD_HEADER_LEN};
use gitmodel_format::{Oid, PackId, Recipe, RecipeChunk};
use gitmodel_proto::{ErrorDetail, RegisterResponse, RegisterResult, RepoName};
use tokio::task::JoinSet;

use crate::error::ApiError;
use crate::keys;
pub use crate::locate::{locate, locate_in, FileError, Located, Window};
use crate::state::AppState;

/// Largest read while verifying (one record may exceed it by itself; it is then read
/// alone). Two windows per file are in memory at once.
pub const WINDOW_BYTES: u64 = crate::storage::READ_WINDOW_BYTES;
/// Files of one batch verified at once.
const FILE_CONCURRENCY: usize = 4;
pub use crate::state::{FILES_PER_WRITER, MAX_REPEAT_FACTOR};
/// Registration requests one writer may have open at once (waiting for its file slots
/// or verifying); more are answered `429`.
pub const BATCHES_PER_WRITER: usize = 8;
/// Bytes of repetition any file may have, however few its distinct chunks.
pub const REPEAT_SLACK_BYTES: u64 = 64 * 1024 * 1024;

// A window must always be able to hold one whole record.
const _: () = assert!(WINDOW_BYTES >= RECORD_HEADER_LEN + MAX_CHUNK_BYTES as u64);

/// Splits a registration body into recipes. A malformed recipe fails the whole batch:
/// nothing after it can be framed, so nothing of the batch is registered.
pub fn decode_batch(body: &[u8]) -> Result<Vec<Recipe>, ApiError> {
    let mut recipes = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        let (recipe, used) =
            Recipe::decode_prefix(&body[offset..]).map_err(|source| ApiError::BadRecipe {
                index: recipes.len(),
                offset,
                source,
            })?;
        recipes.push(recipe);
        offset += used;
    }
    Ok(recipes)
}

/// Registers every recipe of a batch in `repo`; one result per recipe, in order.
/// Files are verified a few at a time; the recipes of those that pass are then stored
/// together (one sync for the lot on a local directory, parallel requests on a bucket)
/// before the batch is answered. Server-side failures (storage errors) fail the request
/// and nothing of it is answered as registered; the client sends it again.
///
/// `writer` names the authenticated sender, if any (see [`FILES_PER_WRITER`]); a
/// writer with [`BATCHES_PER_WRITER`] batches open already is refused `429`.
pub async fn register_batch(
    state: Arc<AppState>,
    repo: RepoName,
    writer: Option<&str>,
    recipes: Vec<Recipe>,
) -> Result<RegisterResponse, ApiError> {
    // When this registration starts reading packs (for GC's protocol, [`crate::gc`]).
    let read_at = std::time::Instant::now();
    let slots = writer.map(|w| state.writer_slots(w));
    let _open = match &slots {
        Some(slots) => match slots.open_batch(BATCHES_PER_WRITER) {
            Some(open) => Some(open),
            None => return Err(ApiError::RateLimited { retry_after: 1 }),
        },
        None => None,
    };
    // The packs this repository may read, less damaged ones, listed once for the batch.
    let readable = Arc::new(state.usable_packs(&repo).await?);
    let repo = Arc::new(repo);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; recipes.len()];
    let mut pending = recipes.into_iter().enumerate();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < FILE_CONCURRENCY {
            let Some((i, recipe)) = pending.next() else {
                break;
            };
            let (state, repo, readable) =
                (Arc::clone(&state), Arc::clone(&repo), Arc::clone(&readable));
            let slots = slots.clone();
            tasks.spawn(async move {
                let (oid, size) = (recipe.oid, recipe.size);
                let _slot = match &slots {
                    Some(slots) => Some(slots.file().await),
                    None => None,
                };
                let checked = check_one(&state, &repo, &readable, recipe).await;
                (i, checked.map(|c| (oid, size, c)))
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (i, outcome) = joined?;
        outcomes[i] = Some(outcome?);
    }
    let mut outcomes = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| ApiError::internal("a registration result went missing")))
        .collect::<Result<Vec<_>, _>>()?;
    let verified: Vec<&Recipe> = outcomes
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok())
        .collect();
    let items = recipe_objects(&repo, &verified);
    let used: HashSet<PackId> = verified
        .iter()
        .flat_map(|r| r.segments.iter().map(|s| s.pack))
        .collect();
    store_recipes(&state, items).await?;
    // Only now may the files be answered as registered: GC must not be deleting a pack
    // they use ([`crate::gc::secure`]). Files that lost one are undone and answered
    // `missing_chunks`: the client uploads those chunks again.
    let lost = crate::gc::secure(&**state.storage(), &used, read_at).await?;
    for (_, _, outcome) in outcomes.iter_mut() {
        let Ok(recipe) = outcome else { continue };
        let Some(gone) = recipe.segments.iter().find(|s| lost.contains(&s.pack)) else {
            continue;
        };
        let message = collected_message(&gone.pack);
        state
            .storage()
            .delete(&keys::recipe_key(&repo, &recipe.oid))
            .await?;
        *outcome = Err(FileError {
            code: "missing_chunks",
            message,
        });
    }
    for pack in &lost {
        state.index().remove_pack(pack);
    }
    // The packs are readable already (`locate` used only those); granting them keeps
    // "the packs its files use" true even for records lost or never written.
    let packs = used.into_iter().filter(|p| !lost.contains(p));
    crate::tenancy::grant(state.storage(), &repo, packs).await?;
    let files = outcomes
        .into_iter()
        .map(|(oid, size, outcome)| answer(&repo, oid, size, outcome))
        .collect();
    Ok(RegisterResponse { files })
}

/// What became of one file of a batch: its oid and size, and the located recipe to store
/// or why it is refused.
type Outcome = (Oid, u64, Result<Recipe, FileError>);

/// Why a file is answered `missing_chunks` when GC deleted a pack it would have used.
fn collected_message(pack: &PackId) -> String {
    format!(
        "pack {pack}, which held chunks of this file, was collected by the server's GC \
         meanwhile; upload the missing chunks again"
    )
}

/// Locates and verifies one file; the located recipe to store, or why it is refused.
/// A pack that turns out to be gone from storage (GC deleted it after this node indexed
/// it) is dropped from the index and the file located once more, elsewhere or as
/// `missing_chunks`.
async fn check_one(
    state: &AppState,
    repo: &RepoName,
    readable: &HashSet<PackId>,
    recipe: Recipe,
) -> Result<Result<Recipe, FileError>, ApiError> {
    let mut retried = false;
    loop {
        let located = match state.locate_fresh_in(repo, &recipe, Some(readable)).await? {
            Err(e) => return Ok(Err(e)),
            Ok(located) => located,
        };
        if let Some(refused) = too_repetitive(&located.recipe, state.config().max_repeat_factor) {
            return Ok(Err(refused));
        }
        match verify(state, repo, &located).await {
            Ok(checked) => return Ok(checked.map(|()| located.recipe)),
            Err(ApiError::Storage(crate::storage::StorageError::NotFound { key })) => {
                let Some(pack) = keys::parse_pack_key(&key) else {
                    return Err(ApiError::Storage(crate::storage::StorageError::NotFound {
                        key,
                    }));
                };
                tracing::info!(%pack, "an indexed pack is gone from storage (collected); forgetting it");
                state.index().remove_pack(&pack);
                if retried {
                    return Ok(Err(FileError {
                        code: "missing_chunks",
                        message: collected_message(&pack),
                    }));
                }
                retried = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Refuses a file whose size exceeds `factor` times its distinct chunks' bytes plus
/// [`REPEAT_SLACK_BYTES`]: the work of rebuilding it is bounded by what the repository
/// stored, not by how often a recipe repeats one chunk.
fn too_repetitive(recipe: &Recipe, factor: u64) -> Option<FileError> {
    let mut seen = HashSet::with_capacity(recipe.chunks.len());
    let distinct: u64 = recipe
        .chunks
        .iter()
        .filter(|c| seen.insert(c.id))
        .map(|c| u64::from(c.raw_len))
        .sum();
    let limit = distinct
        .saturating_mul(factor)
        .saturating_add(REPEAT_SLACK_BYTES);
    (recipe.size > limit).then(|| FileError {
        code: "too_repetitive",
        message: format!(
            "the file's {} bytes repeat its {} distinct chunks ({distinct} bytes) more than \
             this server verifies: at most {factor} times their size plus {} MiB ({limit} \
             bytes)",
            recipe.size,
            seen.len(),
            REPEAT_SLACK_BYTES >> 20
        ),
    })
}

/// The answer for one file of a batch, logged.
fn answer(
    repo: &RepoName,
    oid: Oid,
    size: u64,
    outcome: Result<Recipe, FileError>,
) -> RegisterResult {
    match outcome {
        Ok(recipe) => {
            let segments = recipe.segments.len();
            tracing::info!(%repo, %oid, size, segments, "file registered");
            RegisterResult {
                oid: oid.to_hex(),
                ok: true,
                error: None,
            }
        }
        Err(e) => {
            if e.code == "corrupt_chunk" {
                tracing::error!(%repo, %oid, message = e.message, "stored data is corrupt");
            } else {
                tracing::info!(%repo, %oid, code = e.code, message = e.message, "file refused");
            }
            RegisterResult {
                oid: oid.to_hex(),
                ok: false,
                error: Some(ErrorDetail {
                    code: e.code.to_string(),
                    message: e.message,
                    request_id: None,
                }),
            }
        }
    }
}

/// Stores a located, verified recipe as `repo`'s copy of its file (replacing any earlier
/// one, which describes the same bytes). Native registration ([`store_recipes`]) and Git
/// LFS uploads ([`crate::upload`]) both end here.
/// `read_at` is when the caller first read the packs it uses (see [`crate::gc::secure`]);
/// if GC took one of them meanwhile, nothing is kept and the answer is
/// [`ApiError::PackCollected`].
pub async fn store_recipe(
    state: &AppState,
    repo: &RepoName,
    recipe: &Recipe,
    read_at: std::time::Instant,
) -> Result<(), ApiError> {
    store_recipes(state, recipe_objects(repo, &[recipe])).await?;
    let used: HashSet<PackId> = recipe.segments.iter().map(|s| s.pack).collect();
    let lost = crate::gc::secure(&**state.storage(), &used, read_at).await?;
    if let Some(pack) = lost.iter().next() {
        state
            .storage()
            .delete(&keys::recipe_key(repo, &recipe.oid))
            .await?;
        for p in &lost {
            state.index().remove_pack(p);
        }
        return Err(ApiError::PackCollected { pack: *pack });
    }
    Ok(())
}

/// The objects (key, bytes) that store `recipes` as `repo`'s.
fn recipe_objects(repo: &RepoName, recipes: &[&Recipe]) -> Vec<(String, Bytes)> {
    recipes
        .iter()
        .map(|r| (keys::recipe_key(repo, &r.oid), r.encode().into()))
        .collect()
}

/// Stores recipe objects, many at once through [`crate::storage::Storage::put_many`].
async fn store_recipes(state: &AppState, items: Vec<(String, Bytes)>) -> Result<(), ApiError> {
    match items.len() {
        0 => {}
        1 => {
            let (key, data) = items.into_iter().next().expect("one item");
            state.storage().put(&key, data).await?;
        }
        _ => state.storage().put_many(items).await?,
    }
    Ok(())
}

/// Rebuilds the file from storage and checks it against the recipe. The outer error is
/// the server's failure (storage), the inner one the file's. Every record is read and
/// checked, always: a prefix of chunks whose hash state this node remembers from an
/// earlier verified file of the same repository ([`crate::prefix`]) is not hashed with
/// SHA-256 again, but each of its chunks is decoded and checked against its id (BLAKE3),
/// so a pack damaged since that file verified is never vouched for.
async fn verify(
    state: &AppState,
    repo: &RepoName,
    located: &Located,
) -> Result<Result<(), FileError>, ApiError> {
    let recipe = &located.recipe;
    let fps = Arc::new(prefix::fingerprints(&recipe.chunks));
    let (skip, hasher) = state
        .prefix_states()
        .longest(repo, &fps)
        .unwrap_or_else(|| (0, OidHasher::new()));
    let resumed = hasher.len();
    let mut progress = Progress {
        hasher,
        fps: Arc::clone(&fps),
        states: Vec::new(),
    };
    let windows: Vec<&Window> = located.windows.iter().collect();
    let fetch = |w: &Window| fetch_window(state, w);
    // Three stages overlap: fetching window i + 2, decoding window i + 1 and hashing
    // window i (SHA-256 is sequential; decoding is not), each CPU stage on a blocking
    // thread under a verification permit.
    let decode = |i: usize, bytes: Bytes| {
        let w: &Window = windows[i];
        let chunks = recipe.chunks[w.chunks.clone()].to_vec();
        let (first, pack) = (w.chunks.start, w.pack);
        async move {
            let permit = state.verify_permit().await;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                decode_window(pack, first, skip, &chunks, &bytes, Ids::Unchecked)
            })
            .await
        }
    };
    let mut fetched = match windows.first() {
        Some(w) => Some(fetch(w).await?),
        None => None,
    };
    let mut decoded: Option<Vec<(usize, Vec<u8>)>> = None;
    let mut i = 0;
    loop {
        let to_decode = fetched.take().map(|b| (i, b));
        let to_hash = decoded.take();
        if to_decode.is_none() && to_hash.is_none() {
            break;
        }
        let hash = async {
            match to_hash {
                Some(raw) => {
                    let permit = state.verify_permit().await;
                    let mut p = progress;
                    let back = tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        p.hash(raw);
                        p
                    })
                    .await;
                    back
                }
                None => Ok(progress),
            }
        };
        let dec = async {
            match to_decode {
                Some((k, bytes)) => Some(decode(k, bytes).await),
                None => None,
            }
        };
        let next = async {
            match windows.get(i + 1) {
                Some(w) => Some(fetch(w).await),
                None => None,
            }
        };
        let (hashed, dec, next) = tokio::join!(hash, dec, next);
        progress = hashed?;
        if let Some(result) = dec {
            match result? {
                Ok(raw) => decoded = Some(raw),
                Err(e) => return Ok(Err(e)),
            }
        }
        fetched = next.transpose()?;
        i += 1;
    }
    let size = progress.hasher.len();
    state
        .metrics
        .record_verification(size.saturating_sub(resumed), resumed);
    let actual = progress.hasher.finish();
    if actual != recipe.oid || size != recipe.size {
        if let Some(corrupt) = find_corrupt(state, recipe, &windows, skip).await? {
            return Ok(Err(corrupt));
        }
        return Ok(Err(FileError::hash_mismatch(format!(
            "the chunks rebuild a file of {size} bytes hashing to {actual}, not the claimed {} \
             ({} bytes)",
            recipe.oid, recipe.size
        ))));
    }
    state.prefix_states().remember(repo, progress.states);
    Ok(Ok(()))
}

/// Reads one window's records from storage.
fn fetch_window(
    state: &AppState,
    w: &Window,
) -> impl std::future::Future<Output = Result<Bytes, crate::storage::StorageError>> + 'static {
    let storage = Arc::clone(state.storage());
    let key = keys::pack_key(&w.pack);
    let range = w.offset..w.offset.saturating_add(w.length);
    async move { storage.get_range(&key, range).await }
}

/// After a file failed its SHA-256, checks every chunk read against its id, to tell a
/// damaged copy on the server (`corrupt_chunk`) from a wrong claim by the client. The
/// first pass skips those checks: the SHA-256 covers every byte, so they only matter here.
async fn find_corrupt(
    state: &AppState,
    recipe: &Recipe,
    windows: &[&Window],
    skip: usize,
) -> Result<Option<FileError>, ApiError> {
    for w in windows {
        let bytes = fetch_window(state, w).await?;
        let chunks = recipe.chunks[w.chunks.clone()].to_vec();
        let (first, pack) = (w.chunks.start, w.pack);
        let checked = tokio::task::spawn_blocking(move || {
            decode_window(pack, first, skip, &chunks, &bytes, Ids::Checked)
        })
        .await?;
        if let Err(e) = checked {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Whether decoding checks each chunk against its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    Checked,
    Unchecked,
}

/// The running hash of a file being rebuilt.
struct Progress {
    /// Starts with the state of a remembered prefix, if any.
    hasher: OidHasher,
    fps: Arc<Vec<prefix::Fingerprint>>,
    /// Hash states at every [`prefix::STRIDE`]th chunk boundary, to remember on success.
    states: Vec<(prefix::Fingerprint, OidHasher)>,
}

impl Progress {
    /// Hashes decoded chunks (recipe index, bytes), in order.
    fn hash(&mut self, chunks: Vec<(usize, Vec<u8>)>) {
        for (index, raw) in chunks {
            self.hasher.update(&raw);
            if (index + 1).is_multiple_of(prefix::STRIDE) {
                let fp = self.fps[(index + 1) / prefix::STRIDE];
                self.states.push((fp, self.hasher.clone()));
            }
        }
    }
}

/// Checks the records in `span` (chunks `first..` of the recipe) against `chunks` and
/// decodes those from index `skip` on (each checked against its id if `ids` says so).
fn decode_window(
    pack: PackId,
    first: usize,
    skip: usize,
    chunks: &[RecipeChunk],
    span: &Bytes,
    ids: Ids,
) -> Result<Vec<(usize, Vec<u8>)>, FileError> {
    // The index says these records hold these chunks; if the pack disagrees, the
    // server's copy (or its index) is damaged: not the client's fault.
    let corrupt = |what: String| FileError {
        code: "corrupt_chunk",
        message: format!("the server's copy of pack {pack} is damaged: {what}"),
    };
    let records = parse_records(span).map_err(|e| corrupt(e.to_string()))?;
    if records.len() != chunks.len() {
        return Err(corrupt(format!(
            "{} records where {} were expected",
            records.len(),
            chunks.len()
        )));
    }
    let mut out = Vec::with_capacity(records.len());
    for (j, (record, chunk)) in records.iter().zip(chunks).enumerate() {
        let index = first + j;
        if record.id != chunk.id {
            return Err(corrupt(format!(
                "record {} where chunk {} was expected",
                record.id, chunk.id
            )));
        }
        // The prefix whose SHA-256 state is known is not hashed again, so each of its
        // chunks is checked against its id instead: nothing read goes unverified.
        let raw = match ids {
            _ if index < skip => record.decode(),
            Ids::Checked => record.decode(),
            Ids::Unchecked => record.decode_unhashed(),
        }
        .map_err(|e| corrupt(e.to_string()))?;
        if raw.len() != chunk.raw_len as usize {
            return Err(FileError::hash_mismatch(format!(
                "chunk {} has {} bytes, the recipe says {}",
                chunk.id,
                raw.len(),
                chunk.raw_len
            )));
        }
        if index >= skip {
            out.push((index, raw));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ChunkIndex;
    use gitmodel_format::pack::{encode_chunk, PackBuilder};
    use gitmodel_format::ChunkId;
    use gitmodel_format::Oid;

    fn chunk_bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn consecutive_records_merge_into_segments() {
        let raws: Vec<Vec<u8>> = (0..4).map(|s| chunk_bytes(s, 100 + s as usize)).collect();
        let mut b = PackBuilder::new();
        for raw in &raws {
            let (codec, stored) = encode_chunk(raw);
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        }
        let (pack, _, entries) = b.finish();
        let index = ChunkIndex::new();
        index.add_pack(pack, &entries);
        // File order 0 1 3 2 2: segments [0,1], [3], [2], [2].
        let order = [0usize, 1, 3, 2, 2];
        let mut data = Vec::new();
        let chunks = order
            .iter()
            .map(|&i| {
                data.extend_from_slice(&raws[i]);
                RecipeChunk {
                    id: ChunkId::of(&raws[i]),
                    raw_len: raws[i].len() as u32,
                }
            })
            .collect();
        let recipe = Recipe {
            chunker: 1,
            oid: Oid::of(&data),
            size: data.len() as u64,
            chunks,
            segments: Vec::new(),
        };
        let located = locate(&index, &recipe, |_| true).unwrap();
        let segs: Vec<(u32, u32)> = located
            .recipe
            .segments
            .iter()
            .map(|s| (s.first, s.count))
            .collect();
        assert_eq!(segs, vec![(0, 2), (3, 1), (2, 1), (2, 1)]);
        let first = &located.recipe.segments[0];
        assert_eq!(first.offset, entries[0].offset);
        assert_eq!(
            first.length,
            entries[0].record_len() + entries[1].record_len()
        );
        located.recipe.validate().unwrap();
        assert_eq!(located.windows.len(), 4);
        assert_eq!(located.windows[0].chunks, 0..2);

        let mut missing = recipe.clone();
        missing.chunks[2].id = ChunkId::of(b"nope");
        let err = locate(&index, &missing, |_| true).unwrap_err();
        let unreadable = locate(&index, &recipe, |p| *p != pack).unwrap_err();
        assert_eq!(unreadable.code, "missing_chunks");
        assert_eq!(err.code, "missing_chunks");
        assert!(
            err.message.starts_with("1 of the file's 5 chunks"),
            "{}",
            err.message
        );
    }

    #[test]
    fn batch_decoding() {
        let r = Recipe {
            chunker: 1,
            oid: Oid::empty(),
            size: 0,
            chunks: Vec::new(),
            segments: Vec::new(),
        };
        let mut body = r.encode();
        r.encode_into(&mut body);
        assert_eq!(decode_batch(&body).unwrap().len(), 2);
        assert!(decode_batch(&[]).unwrap().is_empty());
        body.push(0);
        assert!(matches!(
            decode_batch(&body),
            Err(ApiError::BadRecipe { index: 2, .. })
        ));
    }
}
