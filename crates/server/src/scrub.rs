//! Integrity of what is stored, after it was stored: [`scrub`] (`git-model-server scrub`)
//! reads every pack and checks every recipe against the packs it names; [`verify_files`]
//! (`POST files/verify`) checks one repository's files for `git model fsck --remote`;
//! both write *damage records* (`damaged/<ab>/<pack>.json`, [`keys::damaged_key`]) that
//! tell every server on the store to stop vouching for a damaged pack.
//!
//! **Not vouching, then repair.** A pack with a damage record is left out of
//! [`crate::state::AppState::usable_packs`]: `chunks/exists` answers 0 for chunks found
//! only there, `files/exists` answers 0 for files whose recipes name it, and registration
//! places no chunk in it. So a `git model push` from any clone holding the bytes sends
//! them again: a `PUT` of the same pack replaces the damaged copy once the new bytes
//! verify ([`crate::state::AppState::write_pack`]) and clears the record; chunks sent in
//! other packs are registered there instead. The records are read from storage on each
//! request (one listing of `damaged/`, normally empty), so a scrub run by another process
//! takes effect at once on every node.
//!
//! **Bounded memory.** A pack is read in windows of at most [`WINDOW_BYTES`], split at
//! record boundaries (its footer index says where), and hashed incrementally; a pack
//! larger than `MAX_PACK_BYTES` is damaged without being read. Recipes are checked
//! against the packs' footers (which the pack pass matched to the records), kept for at
//! most [`FOOTER_CACHE_PACKS`] packs at once. `files/verify` reads at most
//! [`VERIFY_BUDGET_BYTES`] (plus one segment) per request and says where to resume.
//!
//! What is checked, per pack: size, header, trailer and footer index, every record
//! against its index entry, every chunk decoded and hashed against its id, and the BLAKE3
//! of all the bytes against the pack's id. Per recipe: it decodes, its segments lie
//! inside the packs they name, and the records there are its chunks, in order.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gitmodel_format::pack::{
    parse_index, parse_records, parse_trailer, PackEntry, HEADER_LEN, MAX_PACK_BYTES, PACK_MAGIC,
    PACK_VERSION, TRAILER_LEN,
};
use gitmodel_format::{Oid, PackId, Recipe, RecipeChunk, Segment};
use gitmodel_proto::{ErrorDetail, RepoName, VerifyFile, VerifyResult};
use tokio::task::JoinSet;

use crate::error::ApiError;
use crate::keys;
use crate::state::AppState;
use crate::storage::{Storage, StorageError};

/// Largest read while checking a pack (a record larger than this is read alone; records
/// are at most 1 MiB + 48 bytes).
pub const WINDOW_BYTES: u64 = crate::storage::READ_WINDOW_BYTES;
/// Footer indexes kept in memory at once by the recipe pass of [`scrub`].
pub const FOOTER_CACHE_PACKS: usize = 64;
/// Pack bytes one `files/verify` request reads before it stops and answers `pending`
/// (it always finishes the segment it is in, at most one pack).
pub const VERIFY_BUDGET_BYTES: u64 = 256 * 1024 * 1024;
/// Most files named in one `files/verify` request.
pub use gitmodel_proto::MAX_VERIFY_FILES;

/// What a check found in one stored pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackState {
    /// Everything checked; its footer index.
    Intact(Vec<PackEntry>),
    /// What is wrong.
    Damaged(String),
    /// No object at its key.
    Missing,
}

/// A run of consecutive records read at once: which index entries, which bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordWindow {
    entries: Range<usize>,
    bytes: Range<u64>,
}

/// Splits the records `range` of `entries` into reads of at most [`WINDOW_BYTES`].
fn record_windows(entries: &[PackEntry], range: Range<usize>) -> Vec<RecordWindow> {
    let mut out: Vec<RecordWindow> = Vec::new();
    for i in range {
        let e = &entries[i];
        let end = e.offset + e.record_len();
        match out.last_mut() {
            Some(w) if w.bytes.end == e.offset && end - w.bytes.start <= WINDOW_BYTES => {
                w.entries.end = i + 1;
                w.bytes.end = end;
            }
            _ => out.push(RecordWindow {
                entries: i..i + 1,
                bytes: e.offset..end,
            }),
        }
    }
    out
}

/// Checks a span of records against the index entries that describe it, decoding every
/// chunk (which checks it against its id).
fn check_records(span: &[u8], entries: &[PackEntry]) -> Result<(), String> {
    let records = parse_records(span).map_err(|e| e.to_string())?;
    if records.len() != entries.len() {
        return Err(format!(
            "{} records where the index lists {}",
            records.len(),
            entries.len()
        ));
    }
    for (record, entry) in records.iter().zip(entries) {
        if record.id != entry.id
            || record.raw_len != entry.raw_len
            || record.codec != entry.codec
            || record.stored.len() != entry.stored_len as usize
        {
            return Err(format!(
                "the record at offset {} ({}) differs from its index entry ({})",
                entry.offset, record.id, entry.id
            ));
        }
        record
            .decode()
            .map_err(|e| format!("the record at offset {}: {e}", entry.offset))?;
    }
    Ok(())
}

/// Why a footer could not be read: damage, or a storage failure.
enum FooterError {
    Damaged(String),
    Missing,
    Storage(StorageError),
}

impl From<StorageError> for FooterError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound { .. } => FooterError::Missing,
            other => FooterError::Storage(other),
        }
    }
}

/// A pack's header, trailer and index bytes, and the parsed index.
struct Footer {
    size: u64,
    header: Bytes,
    index: Bytes,
    trailer: Bytes,
    entries: Vec<PackEntry>,
}

async fn read_footer(storage: &dyn Storage, pack: &PackId) -> Result<Footer, FooterError> {
    let key = keys::pack_key(pack);
    let size = storage.head(&key).await?.ok_or(FooterError::Missing)?;
    let damaged = |what: String| Err(FooterError::Damaged(what));
    if size > MAX_PACK_BYTES {
        return damaged(format!(
            "{size} bytes, more than a pack may hold ({MAX_PACK_BYTES})"
        ));
    }
    if size < HEADER_LEN + TRAILER_LEN {
        return damaged(format!("only {size} bytes"));
    }
    let header = storage.get_range(&key, 0..HEADER_LEN).await?;
    if &header[..8] != PACK_MAGIC || header[8..12] != PACK_VERSION.to_le_bytes() {
        return damaged("bad header".into());
    }
    let trailer = storage.get_range(&key, size - TRAILER_LEN..size).await?;
    let (index_offset, _) = match parse_trailer(&trailer, size) {
        Ok(t) => t,
        Err(e) => return damaged(format!("trailer: {e}")),
    };
    let index = storage
        .get_range(&key, index_offset..size - TRAILER_LEN)
        .await?;
    let entries = match parse_index(&index, index_offset) {
        Ok(entries) => entries,
        Err(e) => return damaged(format!("index: {e}")),
    };
    Ok(Footer {
        size,
        header,
        index,
        trailer,
        entries,
    })
}

/// Reads and checks one stored pack (see the module header); also returns its size.
/// Storage failures other than a missing object are errors, not damage.
pub async fn check_pack(
    storage: &dyn Storage,
    pack: &PackId,
) -> Result<(PackState, u64), StorageError> {
    let footer = match read_footer(storage, pack).await {
        Ok(footer) => footer,
        Err(FooterError::Missing) => return Ok((PackState::Missing, 0)),
        Err(FooterError::Storage(e)) => return Err(e),
        Err(FooterError::Damaged(what)) => {
            let size = storage.head(&keys::pack_key(pack)).await?.unwrap_or(0);
            return Ok((PackState::Damaged(what), size));
        }
    };
    let key = keys::pack_key(pack);
    let entries = Arc::new(footer.entries);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&footer.header);
    let mut first_damage = None;
    for window in record_windows(&entries, 0..entries.len()) {
        let bytes = match storage.get_range(&key, window.bytes.clone()).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Ok((PackState::Missing, 0)),
            Err(e) => return Err(e),
        };
        let entries = Arc::clone(&entries);
        let checked = tokio::task::spawn_blocking(move || {
            hasher.update(&bytes);
            let result = check_records(&bytes, &entries[window.entries]);
            (hasher, result)
        })
        .await;
        let (back, result) = checked.map_err(|e| StorageError::Io {
            key: key.clone(),
            source: std::io::Error::other(format!("check task failed: {e}")),
        })?;
        hasher = back;
        if let (None, Err(what)) = (&first_damage, result) {
            first_damage = Some(what);
        }
    }
    hasher.update(&footer.index);
    hasher.update(&footer.trailer);
    let actual = PackId(*hasher.finalize().as_bytes());
    let state = match first_damage {
        Some(what) => PackState::Damaged(what),
        None if actual != *pack => {
            PackState::Damaged(format!("its bytes hash to {actual}, not to its id"))
        }
        None => PackState::Intact(Arc::try_unwrap(entries).unwrap_or_else(|a| (*a).clone())),
    };
    Ok((state, footer.size))
}

/// Checks that `segment` lies inside a pack with index `entries` and that the records
/// there are `chunks`, in order.
pub fn check_segment(
    segment: &Segment,
    chunks: &[RecipeChunk],
    entries: &[PackEntry],
) -> Result<(), String> {
    let first = segment.first as usize;
    let end = first.saturating_add(segment.count as usize);
    if end > entries.len() || chunks.len() != segment.count as usize {
        return Err(format!(
            "names records {first}..{end} of a pack of {} records",
            entries.len()
        ));
    }
    let run = &entries[first..end];
    if run[0].offset != segment.offset {
        return Err(format!(
            "starts at offset {}, the record is at {}",
            segment.offset, run[0].offset
        ));
    }
    let length: u64 = run.iter().map(PackEntry::record_len).sum();
    if length != segment.length {
        return Err(format!(
            "is {} bytes long, its records {length}",
            segment.length
        ));
    }
    for (j, (entry, chunk)) in run.iter().zip(chunks).enumerate() {
        if entry.id != chunk.id || entry.raw_len != chunk.raw_len {
            return Err(format!(
                "record {} holds chunk {} ({} bytes) where the recipe has {} ({} bytes)",
                first + j,
                entry.id,
                entry.raw_len,
                chunk.id,
                chunk.raw_len
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Damage records (kept in [`crate::damage`])

pub use crate::damage::{
    clear_damage, damaged_packs, recipe_vouched, record_damage, stored_equals, DamageRecord,
};

/// The packs `repo` may read that are recorded as damaged: one listing of `damaged/`,
/// and, only when it is not empty, one of the repository's pack records.
pub async fn damaged_for(
    state: &AppState,
    repo: &RepoName,
) -> Result<HashSet<PackId>, StorageError> {
    let mut damaged = damaged_packs(&**state.storage()).await?;
    if !damaged.is_empty() {
        let readable = crate::tenancy::repo_packs(&**state.storage(), repo).await?;
        damaged.retain(|p| readable.contains(p));
    }
    Ok(damaged)
}

// ---------------------------------------------------------------------------------------
// The scrub

/// A file of a repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName {
    pub repo: String,
    pub oid: Oid,
}

/// A damaged (or missing) pack and the files whose recipes name it.
#[derive(Debug, Clone)]
pub struct DamagedPack {
    pub pack: PackId,
    pub what: String,
    pub files: BTreeSet<FileName>,
}

/// A recipe that is wrong in itself (unreadable, or not matching intact packs).
#[derive(Debug, Clone)]
pub struct BadRecipe {
    pub file: FileName,
    pub what: String,
}

/// What a scrub found.
#[derive(Debug, Default, Clone)]
pub struct ScrubReport {
    pub packs: usize,
    pub pack_bytes: u64,
    pub recipes: usize,
    pub damaged: Vec<DamagedPack>,
    pub bad_recipes: Vec<BadRecipe>,
    pub records_written: usize,
    pub records_cleared: usize,
    pub seconds: f64,
}

impl ScrubReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.bad_recipes.is_empty()
    }

    /// Files affected by any damage, sorted, each once.
    pub fn affected_files(&self) -> BTreeSet<FileName> {
        let mut out: BTreeSet<FileName> =
            self.damaged.iter().flat_map(|d| d.files.clone()).collect();
        out.extend(self.bad_recipes.iter().map(|b| b.file.clone()));
        out
    }
}

/// Footer indexes of recently used packs, at most [`FOOTER_CACHE_PACKS`].
#[derive(Default)]
struct FooterCache {
    entries: HashMap<PackId, Arc<Vec<PackEntry>>>,
    order: VecDeque<PackId>,
}

impl FooterCache {
    async fn get(
        &mut self,
        storage: &dyn Storage,
        pack: &PackId,
    ) -> Result<Result<Arc<Vec<PackEntry>>, String>, StorageError> {
        if let Some(e) = self.entries.get(pack) {
            return Ok(Ok(Arc::clone(e)));
        }
        let entries = match read_footer(storage, pack).await {
            Ok(footer) => Arc::new(footer.entries),
            Err(FooterError::Storage(e)) => return Err(e),
            Err(FooterError::Missing) => return Ok(Err("missing".into())),
            Err(FooterError::Damaged(what)) => return Ok(Err(what)),
        };
        if self.order.len() >= FOOTER_CACHE_PACKS {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        self.order.push_back(*pack);
        self.entries.insert(*pack, Arc::clone(&entries));
        Ok(Ok(entries))
    }
}

/// One scrub over `storage`: every pack read and checked (`jobs` at once), then every
/// recipe checked against its packs. With `record`, damaged and missing packs get damage
/// records and records of packs now intact (or gone, and named by no recipe) are removed.
pub async fn scrub(
    storage: Arc<dyn Storage>,
    jobs: usize,
    record: bool,
) -> Result<ScrubReport, StorageError> {
    let started = Instant::now();
    let mut report = ScrubReport::default();
    // Pack pass. Only the verdicts are kept: a few bytes per pack.
    let mut verdicts: HashMap<PackId, Option<String>> = HashMap::new();
    let mut keys_iter = storage.list(keys::PACKS_PREFIX).await?.into_iter();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < jobs.max(1) {
            let Some(key) = keys_iter.next() else { break };
            let Some(pack) = keys::parse_pack_key(&key) else {
                tracing::warn!(key, "ignoring a file under packs/ that is not a pack key");
                continue;
            };
            let storage = Arc::clone(&storage);
            tasks.spawn(async move { (pack, check_pack(&*storage, &pack).await) });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (pack, checked) = joined.map_err(|e| StorageError::Io {
            key: keys::PACKS_PREFIX.into(),
            source: std::io::Error::other(format!("scrub task failed: {e}")),
        })?;
        let (state, size) = checked?;
        match state {
            // Deleted since the listing (gc, or a refused Git LFS upload): not damage.
            PackState::Missing => continue,
            PackState::Intact(_) => {
                verdicts.insert(pack, None);
            }
            PackState::Damaged(what) => {
                tracing::error!(%pack, what, "damaged pack");
                verdicts.insert(pack, Some(what));
            }
        }
        report.packs += 1;
        report.pack_bytes += size;
    }

    // Recipe pass.
    let mut damaged: BTreeMap<PackId, DamagedPack> = verdicts
        .iter()
        .filter_map(|(pack, v)| {
            v.as_ref().map(|what| {
                (
                    *pack,
                    DamagedPack {
                        pack: *pack,
                        what: what.clone(),
                        files: BTreeSet::new(),
                    },
                )
            })
        })
        .collect();
    let mut footers = FooterCache::default();
    for key in storage.list(keys::REPOS_PREFIX).await? {
        let Some((repo, oid)) = keys::parse_recipe_key(&key) else {
            continue;
        };
        let bytes = match storage.get(&key).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        report.recipes += 1;
        let file = FileName {
            repo: repo.to_string(),
            oid,
        };
        let bad = |what: String| BadRecipe {
            file: file.clone(),
            what,
        };
        let recipe = match Recipe::decode(&bytes) {
            Ok(r) if r.oid == oid && (r.is_located() || r.chunks.is_empty()) => r,
            Ok(_) => {
                report
                    .bad_recipes
                    .push(bad("the recipe is not a located recipe of its file".into()));
                continue;
            }
            Err(e) => {
                report
                    .bad_recipes
                    .push(bad(format!("unreadable recipe: {e}")));
                continue;
            }
        };
        for (i, (segment, chunks)) in recipe.segment_chunks().enumerate() {
            let pack = segment.pack;
            if let Entry::Vacant(slot) = verdicts.entry(pack) {
                // Stored after the listing, or not at all.
                let (state, _) = check_pack(&*storage, &pack).await?;
                let verdict = match state {
                    PackState::Intact(_) => None,
                    PackState::Damaged(what) => Some(what),
                    PackState::Missing => {
                        Some("missing: a recipe names it, it is not stored".into())
                    }
                };
                if let Some(what) = &verdict {
                    damaged.insert(
                        pack,
                        DamagedPack {
                            pack,
                            what: what.clone(),
                            files: BTreeSet::new(),
                        },
                    );
                }
                slot.insert(verdict);
            }
            if let Some(d) = damaged.get_mut(&pack) {
                d.files.insert(file.clone());
                continue;
            }
            match footers.get(&*storage, &pack).await? {
                Ok(entries) => {
                    if let Err(what) = check_segment(segment, chunks, &entries) {
                        report
                            .bad_recipes
                            .push(bad(format!("segment {i} in pack {pack} {what}")));
                        break;
                    }
                }
                // Changed since its check: report it with the recipe.
                Err(what) => {
                    report
                        .bad_recipes
                        .push(bad(format!("pack {pack} changed during the scrub: {what}")));
                    break;
                }
            }
        }
    }
    report.damaged = damaged.into_values().collect();

    if record {
        let recorded = damaged_packs(&*storage).await?;
        for d in &report.damaged {
            record_damage(&*storage, &d.pack, &d.what, "scrub").await?;
            report.records_written += 1;
        }
        for pack in recorded {
            // Intact now (repaired), or gone and named by no recipe (collected).
            let clean = match verdicts.get(&pack) {
                Some(verdict) => verdict.is_none(),
                None => true,
            };
            if clean {
                clear_damage(&*storage, &pack).await?;
                report.records_cleared += 1;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// files/verify

/// `POST files/verify`: checks the files `files` of `repo` against storage, from the
/// segment each names, reading at most [`VERIFY_BUDGET_BYTES`] (plus one segment); files
/// not reached are answered `pending` with where to resume. Damage found is recorded.
/// Only `repo`'s own recipes and the packs they name are read.
pub async fn verify_files(
    state: &AppState,
    repo: &RepoName,
    files: &[VerifyFile],
) -> Result<Vec<VerifyResult>, ApiError> {
    verify_files_within(state, repo, files, VERIFY_BUDGET_BYTES).await
}

/// [`verify_files`] with a budget of `budget` bytes.
async fn verify_files_within(
    state: &AppState,
    repo: &RepoName,
    files: &[VerifyFile],
    budget: u64,
) -> Result<Vec<VerifyResult>, ApiError> {
    if files.len() > MAX_VERIFY_FILES {
        return Err(ApiError::BadRequest {
            what: format!(
                "{} files in one verification, more than the limit of {MAX_VERIFY_FILES}",
                files.len()
            ),
        });
    }
    let storage = &**state.storage();
    let mut spent = 0u64;
    // At least one segment is checked per request, whatever its size: progress.
    let mut worked = false;
    let mut footers: HashMap<PackId, Result<Arc<Vec<PackEntry>>, String>> = HashMap::new();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let oid = Oid::from_hex(&file.oid)?;
        let result =
            |status: &str, next: u32, error: Option<(String, &str)>, pack: Option<PackId>| {
                VerifyResult {
                    oid: oid.to_hex(),
                    status: status.to_string(),
                    next,
                    pack: pack.map(|p| p.to_hex()),
                    error: error.map(|(message, code)| ErrorDetail {
                        code: code.to_string(),
                        message,
                        request_id: None,
                    }),
                }
            };
        if spent >= budget && worked {
            out.push(result("pending", file.from, None, None));
            continue;
        }
        let bytes = match storage.get(&keys::recipe_key(repo, &oid)).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => {
                out.push(result("missing", 0, None, None));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        spent += bytes.len() as u64;
        let recipe = match Recipe::decode(&bytes) {
            Ok(r) if r.oid == oid && (r.is_located() || r.chunks.is_empty()) => r,
            Ok(_) => {
                let what = "the stored recipe is not a located recipe of this file".to_string();
                out.push(result("damaged", 0, Some((what, "damaged_recipe")), None));
                continue;
            }
            Err(e) => {
                let what = format!("the stored recipe is unreadable: {e}");
                out.push(result("damaged", 0, Some((what, "damaged_recipe")), None));
                continue;
            }
        };
        let mut verdict = result("ok", 0, None, None);
        for (i, (segment, chunks)) in recipe.segment_chunks().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            if i < file.from {
                continue;
            }
            if spent >= budget && worked {
                verdict = result("pending", i, None, None);
                break;
            }
            worked = true;
            let pack = segment.pack;
            let damaged =
                |what: String| result("damaged", 0, Some((what, "damaged_pack")), Some(pack));
            if let Entry::Vacant(slot) = footers.entry(pack) {
                let read = match read_footer(storage, &pack).await {
                    Ok(footer) => {
                        spent += footer.index.len() as u64;
                        Ok(Arc::new(footer.entries))
                    }
                    Err(FooterError::Storage(e)) => return Err(e.into()),
                    Err(FooterError::Missing) => Err("it is missing from storage".to_string()),
                    Err(FooterError::Damaged(what)) => Err(what),
                };
                if let Err(what) = &read {
                    record_damage(storage, &pack, what, "files/verify").await?;
                }
                slot.insert(read);
            }
            let entries = match &footers[&pack] {
                Ok(entries) => Arc::clone(entries),
                Err(what) => {
                    verdict = damaged(format!("pack {pack}: {what}"));
                    break;
                }
            };
            if let Err(what) = check_segment(segment, chunks, &entries) {
                // The pack's index or the recipe: only the whole pack's id can tell.
                let (pack_state, size) = check_pack(storage, &pack).await?;
                spent += size;
                verdict = match pack_state {
                    PackState::Intact(_) => result(
                        "damaged",
                        0,
                        Some((
                            format!("the stored recipe's segment {i} {what}"),
                            "damaged_recipe",
                        )),
                        None,
                    ),
                    PackState::Damaged(why) => {
                        record_damage(storage, &pack, &why, "files/verify").await?;
                        damaged(format!("pack {pack}: {why}"))
                    }
                    PackState::Missing => {
                        let why = "it is missing from storage";
                        record_damage(storage, &pack, why, "files/verify").await?;
                        damaged(format!("pack {pack}: {why}"))
                    }
                };
                break;
            }
            let first = segment.first as usize;
            let range = first..first + segment.count as usize;
            let mut failed = None;
            for window in record_windows(&entries, range) {
                let key = keys::pack_key(&pack);
                let bytes = match storage.get_range(&key, window.bytes.clone()).await {
                    Ok(bytes) => bytes,
                    Err(StorageError::NotFound { .. } | StorageError::InvalidRange { .. }) => {
                        failed = Some("it changed or vanished while being read".to_string());
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                spent += bytes.len() as u64;
                let permit = state.verify_permit().await;
                let entries = Arc::clone(&entries);
                let checked = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    check_records(&bytes, &entries[window.entries])
                })
                .await?;
                if let Err(what) = checked {
                    failed = Some(what);
                    break;
                }
            }
            if let Some(what) = failed {
                record_damage(storage, &pack, &what, "files/verify").await?;
                verdict = damaged(format!("pack {pack}: {what}"));
                break;
            }
        }
        out.push(verdict);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;
    use gitmodel_format::pack::{encode_chunk, PackBuilder};
    use gitmodel_format::ChunkId;

    use gitmodel_testkit::noise;

    fn pack_of(chunks: &[Vec<u8>]) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for raw in chunks {
            let (codec, stored) = encode_chunk(raw);
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        }
        b.finish()
    }

    #[test]
    fn windows_split_at_records_and_cover_them() {
        let chunks: Vec<Vec<u8>> = (0..40).map(|i| noise(i, 600 * 1024)).collect();
        let (_, bytes, entries) = pack_of(&chunks);
        let windows = record_windows(&entries, 0..entries.len());
        assert!(windows.len() > 1);
        assert_eq!(windows[0].bytes.start, HEADER_LEN);
        for pair in windows.windows(2) {
            assert_eq!(pair[0].bytes.end, pair[1].bytes.start);
            assert_eq!(pair[0].entries.end, pair[1].entries.start);
        }
        for w in &windows {
            assert!(w.bytes.end - w.bytes.start <= WINDOW_BYTES);
            let span = &bytes[w.bytes.start as usize..w.bytes.end as usize];
            check_records(span, &entries[w.entries.clone()]).unwrap();
        }
        assert_eq!(windows.last().unwrap().entries.end, entries.len());
    }

    #[tokio::test]
    async fn a_flipped_byte_anywhere_is_damage_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(dir.path()).unwrap());
        let chunks: Vec<Vec<u8>> = (0..3).map(|i| noise(i, 50_000)).collect();
        let (pack, bytes, entries) = pack_of(&chunks);
        let key = keys::pack_key(&pack);
        storage.put(&key, bytes.clone().into()).await.unwrap();
        let (state, size) = check_pack(&*storage, &pack).await.unwrap();
        assert_eq!(state, PackState::Intact(entries.clone()));
        assert_eq!(size, bytes.len() as u64);
        // A record's data, a reserved byte of the header, the index, the trailer.
        for at in [
            entries[1].offset as usize + 100,
            13,
            bytes.len() - TRAILER_LEN as usize - 3,
            bytes.len() - 9,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            storage.put(&key, bad.into()).await.unwrap();
            let (state, _) = check_pack(&*storage, &pack).await.unwrap();
            assert!(
                matches!(state, PackState::Damaged(_)),
                "byte {at}: {state:?}"
            );
        }
        storage.delete(&key).await.unwrap();
        assert_eq!(
            check_pack(&*storage, &pack).await.unwrap().0,
            PackState::Missing
        );

        assert!(damaged_packs(&*storage).await.unwrap().is_empty());
        record_damage(&*storage, &pack, "test", "scrub")
            .await
            .unwrap();
        assert_eq!(
            damaged_packs(&*storage).await.unwrap(),
            HashSet::from([pack])
        );
        clear_damage(&*storage, &pack).await.unwrap();
        assert!(damaged_packs(&*storage).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn verification_resumes_where_its_budget_ran_out() {
        use crate::state::ServerConfig;
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir.path());
        let state = AppState::open_local(config).await.unwrap();
        let repo = RepoName::new("acme", "vision").unwrap();
        // A file over three packs: three segments.
        let raws: Vec<Vec<u8>> = (0..6).map(|i| noise(i, 40_000)).collect();
        let mut packs = Vec::new();
        for pair in raws.chunks(2) {
            let (pack, bytes, entries) = pack_of(pair);
            state
                .store_pack(pack, bytes.into(), &entries)
                .await
                .unwrap();
            packs.push(pack);
        }
        crate::tenancy::grant(state.storage(), &repo, packs.clone())
            .await
            .unwrap();
        let data: Vec<u8> = raws.concat();
        let unlocated = Recipe {
            chunker: 1,
            oid: Oid::of(&data),
            size: data.len() as u64,
            chunks: raws
                .iter()
                .map(|r| RecipeChunk {
                    id: ChunkId::of(r),
                    raw_len: r.len() as u32,
                })
                .collect(),
            segments: Vec::new(),
        };
        let located = state
            .locate_fresh(&repo, &unlocated)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(located.recipe.segments.len(), 3);
        crate::register::store_recipe(&state, &repo, &located.recipe, std::time::Instant::now())
            .await
            .unwrap();
        let absent = Oid::of(b"absent");
        let ask = |from: u32| {
            vec![
                VerifyFile {
                    oid: unlocated.oid.to_hex(),
                    from,
                },
                VerifyFile {
                    oid: absent.to_hex(),
                    from: 0,
                },
            ]
        };
        // A budget of one byte: one segment per request, then `pending`.
        let mut from = 0;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let got = verify_files_within(&state, &repo, &ask(from), 1)
                .await
                .unwrap();
            match got[0].status.as_str() {
                "pending" => {
                    assert_eq!(got[0].next, from + 1, "one segment per request");
                    assert_eq!(got[1].status, "pending", "not reached");
                    from = got[0].next;
                }
                "ok" => {
                    assert_eq!(got[1].status, "pending");
                    break;
                }
                other => panic!("{other}: {got:?}"),
            }
        }
        assert_eq!(rounds, 3);
        let whole = verify_files(&state, &repo, &ask(0)).await.unwrap();
        assert_eq!((&*whole[0].status, &*whole[1].status), ("ok", "missing"));

        // Damage in the last pack is found from where the client resumes, and recorded.
        let key = keys::pack_key(&packs[2]);
        let mut bytes = state.storage().get(&key).await.unwrap().to_vec();
        bytes[HEADER_LEN as usize + 48 + 10] ^= 1;
        state.storage().put(&key, bytes.into()).await.unwrap();
        let got = verify_files_within(&state, &repo, &ask(2), 1)
            .await
            .unwrap();
        assert_eq!(got[0].status, "damaged", "{got:?}");
        assert_eq!(got[0].pack.as_deref(), Some(&*packs[2].to_hex()));
        assert_eq!(
            damaged_packs(&**state.storage()).await.unwrap(),
            HashSet::from([packs[2]])
        );
        assert!(!state.usable_packs(&repo).await.unwrap().contains(&packs[2]));
    }

    #[test]
    fn segments_are_checked_against_the_index() {
        let chunks: Vec<Vec<u8>> = (0..4).map(|i| noise(i, 1000)).collect();
        let (pack, _, entries) = pack_of(&chunks);
        let rc = |i: usize| RecipeChunk {
            id: ChunkId::of(&chunks[i]),
            raw_len: 1000,
        };
        let seg = |first: u32, count: u32| Segment {
            pack,
            first,
            count,
            offset: entries[first as usize].offset,
            length: entries[first as usize..(first + count) as usize]
                .iter()
                .map(PackEntry::record_len)
                .sum(),
        };
        check_segment(&seg(1, 2), &[rc(1), rc(2)], &entries).unwrap();
        assert!(check_segment(&seg(1, 2), &[rc(2), rc(1)], &entries).is_err());
        let mut off = seg(1, 2);
        off.offset += 1;
        assert!(check_segment(&off, &[rc(1), rc(2)], &entries).is_err());
        let mut beyond = seg(3, 1);
        beyond.count = 2;
        assert!(check_segment(&beyond, &[rc(3), rc(3)], &entries).is_err());
    }
}
