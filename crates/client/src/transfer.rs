//! Moving files between the local store and a server.
//!
//! Upload: ask which files the server has, then which chunks; build packs of only the
//! missing chunks (read as stored, verified, not recompressed) and send several at once;
//! register the files last, so the server never holds a file whose chunks are absent.
//!
//! Download: fetch recipes, work out which chunks the local store lacks, read the packs'
//! footer indexes to turn them into exact byte ranges, fetch ranges in parallel, verify
//! every chunk, store them in local packs, then record each recipe once the file it
//! describes was rebuilt and hashed to its oid (nothing the server said is kept
//! unverified). A bad answer fails the files it concerns; the others go on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use gitmodel_format::pack::{self, PackEntry, TRAILER_LEN};
use gitmodel_format::{ChunkId, Oid, PackBuilder, PackId, Recipe};
use gitmodel_store::{LocalStore, StoredChunk};
use rayon::prelude::*;

use crate::{ClientError, Remote};

/// Requests in flight at once.
const PARALLEL: usize = 4;
/// Largest single range request.
const RANGE_BYTES: u64 = 4 * 1024 * 1024;
/// Files per registration request.
const REGISTER_BATCH: usize = 512;

/// A file to move, with a path for messages.
#[derive(Debug, Clone)]
pub struct FileRef {
    pub oid: Oid,
    pub size: u64,
    pub path: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct UploadReport {
    pub files: usize,
    /// Files the server already had.
    pub files_present: usize,
    pub file_bytes: u64,
    pub chunks: usize,
    pub chunks_sent: usize,
    /// Raw bytes of the chunks sent.
    pub bytes_new: u64,
    /// Bytes on the wire (compressed packs).
    pub bytes_sent: u64,
    pub packs: usize,
}

/// Bytes moved so far, for progress displays; set `total` before the transfer starts.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

/// Makes every file in `files` present on the server.
pub fn upload(
    store: &LocalStore,
    remote: &Remote,
    files: &[FileRef],
) -> Result<UploadReport, ClientError> {
    upload_with_progress(store, remote, files, &Progress::default())
}

/// [`upload`], counting wire bytes in `progress` (its total is set once known).
pub fn upload_with_progress(
    store: &LocalStore,
    remote: &Remote,
    files: &[FileRef],
    progress: &Progress,
) -> Result<UploadReport, ClientError> {
    let mut report = UploadReport::default();
    let mut seen = HashSet::new();
    let files: Vec<&FileRef> = files
        .iter()
        .filter(|f| f.size > 0 && seen.insert(f.oid))
        .collect();
    report.files = files.len();
    if files.is_empty() {
        return Ok(report);
    }
    let oids: Vec<Oid> = files.iter().map(|f| f.oid).collect();
    let present = remote.files_exist(&oids)?;
    let mut recipes = Vec::new();
    for (f, there) in files.iter().zip(present) {
        if there {
            report.files_present += 1;
            continue;
        }
        let recipe = store
            .recipe(&f.oid)?
            .filter(|_| store.has_file(&f.oid))
            .ok_or_else(|| ClientError::MissingLocal {
                oid: f.oid,
                path: f.path.clone(),
            })?;
        report.file_bytes += recipe.size;
        recipes.push((*f, recipe));
    }
    // A file the server refuses with `missing_chunks` although its chunks were sent lost
    // one to the server's GC meanwhile (docs/reliability.md): asking again which chunks
    // are missing and sending those converges, so that is tried a few times.
    let mut round = 0;
    while !recipes.is_empty() {
        round += 1;
        recipes = send_round(store, remote, recipes, progress, &mut report, round)?;
    }
    Ok(report)
}

/// Rounds of [`upload_with_progress`] for files refused with `missing_chunks`.
const UPLOAD_ROUNDS: usize = 3;

/// One round of an upload: sends the chunks of `recipes` the server lacks, registers the
/// files, and returns those to send again (refused with `missing_chunks`, while rounds
/// remain); any other refusal is an error.
fn send_round<'f>(
    store: &LocalStore,
    remote: &Remote,
    recipes: Vec<(&'f FileRef, Recipe)>,
    progress: &Progress,
    report: &mut UploadReport,
    round: usize,
) -> Result<Vec<(&'f FileRef, Recipe)>, ClientError> {
    let mut chunk_set = HashSet::new();
    let chunks: Vec<ChunkId> = recipes
        .iter()
        .flat_map(|(_, r)| r.chunks.iter().map(|c| c.id))
        .filter(|id| chunk_set.insert(*id))
        .collect();
    if round == 1 {
        report.chunks = chunks.len();
    }
    let have = remote.chunks_exist(&chunks)?;
    let missing: Vec<ChunkId> = chunks
        .iter()
        .zip(have)
        .filter(|(_, h)| !h)
        .map(|(c, _)| *c)
        .collect();
    report.chunks_sent += missing.len();
    let estimate: u64 = missing
        .iter()
        .filter_map(|id| store.locate(id))
        .map(|l| l.entry.record_len())
        .sum();
    progress.total.store(estimate, Ordering::Relaxed);

    // Build packs here; send them from PARALLEL threads.
    let (tx, rx) = mpsc::sync_channel::<(PackId, Vec<u8>)>(1);
    // Each worker holds the receiver: when every worker has stopped (e.g. the server
    // went away), the receiver is gone and the builder's send fails instead of blocking.
    let rx = std::sync::Arc::new(Mutex::new(rx));
    let receivers: Vec<_> = (0..PARALLEL).map(|_| std::sync::Arc::clone(&rx)).collect();
    drop(rx);
    let sent = std::thread::scope(|scope| -> Result<(u64, usize), ClientError> {
        let workers: Vec<_> = receivers
            .into_iter()
            .map(|rx| {
                scope.spawn(move || -> Result<(u64, usize), ClientError> {
                    let (mut bytes, mut packs) = (0u64, 0usize);
                    loop {
                        let next = rx.lock().unwrap().recv();
                        let Ok((id, data)) = next else { break };
                        remote.put_pack(&id, &data)?;
                        bytes += data.len() as u64;
                        progress
                            .done
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        packs += 1;
                    }
                    Ok((bytes, packs))
                })
            })
            .collect();
        let build = (|| -> Result<u64, ClientError> {
            // Local packs whose every chunk is missing go as they are, verified by their
            // id (one BLAKE3 pass over the compressed bytes); the other missing chunks
            // are read one by one and packed anew.
            let (whole, singles) = split_whole_packs(store, &missing);
            let mut raw = 0u64;
            for (pack, raw_len) in whole {
                let bytes = store.read_pack(&pack)?;
                raw += raw_len;
                if tx.send((pack, bytes)).is_err() {
                    return Ok(raw); // a worker failed; its error is reported below
                }
            }
            let mut builder = PackBuilder::new();
            // Reading a chunk verifies it (decompress + BLAKE3): done for a window of
            // chunks at once on the rayon pool, then packed in order here.
            'windows: for window in singles.chunks(256) {
                let read: Vec<_> = window.par_iter().map(|id| store.read_stored(id)).collect();
                for (id, chunk) in window.iter().zip(read) {
                    let chunk = chunk?.ok_or_else(|| {
                        let (f, _) = recipes
                            .iter()
                            .find(|(_, r)| r.chunks.iter().any(|c| c.id == *id))
                            .expect("chunk comes from a recipe");
                        ClientError::MissingLocal {
                            oid: f.oid,
                            path: f.path.clone(),
                        }
                    })?;
                    if !builder.fits(chunk.stored.len()) {
                        let (pid, bytes, _) =
                            std::mem::replace(&mut builder, PackBuilder::new()).finish();
                        if tx.send((pid, bytes)).is_err() {
                            break 'windows; // a worker failed; its error is reported below
                        }
                    }
                    raw += chunk.entry.raw_len as u64;
                    builder.push(*id, chunk.entry.raw_len, chunk.entry.codec, &chunk.stored);
                }
            }
            if !builder.is_empty() {
                let (pid, bytes, _) = builder.finish();
                let _ = tx.send((pid, bytes));
            }
            Ok(raw)
        })();
        drop(tx);
        let mut total = (0u64, 0usize);
        let mut first_err = None;
        for w in workers {
            match w.join().expect("upload worker panicked") {
                Ok((b, p)) => {
                    total.0 += b;
                    total.1 += p;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        report.bytes_new += build?;
        Ok(total)
    })?;
    report.bytes_sent += sent.0;
    report.packs += sent.1;

    let mut again = Vec::new();
    for batch in recipes.chunks(REGISTER_BATCH) {
        let rs: Vec<Recipe> = batch.iter().map(|(_, r)| r.clone()).collect();
        let results = remote.register(&rs)?;
        for ((f, recipe), res) in batch.iter().zip(results) {
            if res.ok {
                continue;
            }
            let code = res.error.as_ref().map(|e| e.code.as_str());
            if code == Some("missing_chunks") && round < UPLOAD_ROUNDS {
                again.push((*f, recipe.clone()));
                continue;
            }
            let message = res
                .error
                .map(|e| format!("{} ({})", e.message, e.code))
                .unwrap_or_default();
            return Err(ClientError::Rejected {
                oid: f.oid,
                path: f.path.clone(),
                message,
            });
        }
    }
    Ok(again)
}

/// Splits the chunks to send into local packs that hold nothing else (sent whole, with
/// the raw bytes they carry), in order of first use, and the remaining chunks, in order.
/// Chunks not in the local store stay among the remaining ones (reported missing there).
fn split_whole_packs(
    store: &LocalStore,
    missing: &[ChunkId],
) -> (Vec<(PackId, u64)>, Vec<ChunkId>) {
    let counts = store.pack_chunk_counts();
    let mut wanted: HashMap<PackId, (usize, u64)> = HashMap::new();
    for loc in missing.iter().filter_map(|id| store.locate(id)) {
        let w = wanted.entry(loc.pack).or_insert((0, 0));
        w.0 += 1;
        w.1 += loc.entry.raw_len as u64;
    }
    let is_whole = |pack: &PackId| wanted.get(pack).map(|w| w.0) == counts.get(pack).copied();
    let mut whole = Vec::new();
    let mut listed = HashSet::new();
    let mut singles = Vec::new();
    for id in missing {
        match store.locate(id) {
            Some(loc) if is_whole(&loc.pack) => {
                if listed.insert(loc.pack) {
                    whole.push((loc.pack, wanted[&loc.pack].1));
                }
            }
            _ => singles.push(*id),
        }
    }
    (whole, singles)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DownloadReport {
    pub files: usize,
    /// Files already complete in the local store.
    pub files_local: usize,
    pub file_bytes: u64,
    pub chunks_fetched: usize,
    /// Raw bytes of the fetched chunks.
    pub bytes_new: u64,
    /// Bytes received (compressed records).
    pub bytes_received: u64,
    pub requests: usize,
}

/// A file a download could not bring, and why. The other files of the download are
/// unaffected.
#[derive(Debug)]
pub struct FileFailure {
    pub oid: Oid,
    pub path: String,
    pub error: ClientError,
}

impl std::fmt::Display for FileFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.path, self.oid, self.error)
    }
}

/// What [`run_download`] did: its figures, the files it could not bring, and the server's
/// recipes of the files whose chunks all arrived when a sink took the content (not kept
/// in the store: the caller keeps each once it has checked the content against the oid).
#[derive(Debug, Default)]
pub struct Downloaded {
    pub report: DownloadReport,
    pub failed: Vec<FileFailure>,
    pub unverified: Vec<Recipe>,
}

/// A range read planned from pack indexes.
struct RangeTask {
    pack: PackId,
    offset: u64,
    length: u64,
    entries: Vec<PackEntry>,
}

/// Brings every file in `files` into the local store. Each server recipe is kept only
/// once the content it describes was rebuilt from verified chunks and hashed to the oid;
/// a file that fails leaves nothing behind and does not stop the others, which are kept
/// before [`ClientError::Incomplete`] lists the failures.
pub fn download(
    store: &LocalStore,
    remote: &Remote,
    files: &[FileRef],
) -> Result<DownloadReport, ClientError> {
    download_with_progress(store, remote, files, &Progress::default())
}

/// [`download`], counting received bytes in `progress` (its total is set once known).
pub fn download_with_progress(
    store: &LocalStore,
    remote: &Remote,
    files: &[FileRef],
    progress: &Progress,
) -> Result<DownloadReport, ClientError> {
    let plan = plan_download(store, remote, files)?;
    let done = run_download(store, remote, plan, progress, None)?;
    if !done.failed.is_empty() {
        return Err(ClientError::Incomplete {
            failed: done.failed,
        });
    }
    Ok(done.report)
}

/// Called with each downloaded chunk's content, already checked against its id, from
/// the download's worker threads.
pub type ChunkSink<'a> =
    dyn Fn(&ChunkId, &[u8]) -> Result<(), gitmodel_store::StoreError> + Sync + 'a;

/// The files of a download the local store lacks, and their recipes from the server.
pub struct DownloadPlan<'a> {
    report: DownloadReport,
    wanted: Vec<&'a FileRef>,
    recipes: Vec<Recipe>,
    failed: Vec<FileFailure>,
}

impl DownloadPlan<'_> {
    /// The recipes of the files to download (located: with the server's packs). They are
    /// the server's word, not checked against the files' content yet.
    pub fn recipes(&self) -> &[Recipe] {
        &self.recipes
    }

    /// Files whose recipe could not be had (absent, malformed, not matching the pointer).
    pub fn failed(&self) -> &[FileFailure] {
        &self.failed
    }
}

/// Whether an error concerns the server as a whole (unreachable, refusing us, too slow)
/// rather than one answer: it ends the whole download instead of failing one file.
fn fatal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Transport { .. }
            | ClientError::Timeout { .. }
            | ClientError::AuthRequired { .. }
            | ClientError::Tls { .. }
            | ClientError::BadUrl { .. }
            | ClientError::Store(_)
    ) || matches!(e, ClientError::Http { status, .. } if *status == 429 || *status >= 500)
}

/// First step of [`download`]: which files are missing locally, and what they are made
/// of (one recipe request per file, in parallel). A file whose recipe is absent or bad
/// is listed in [`DownloadPlan::failed`]; only errors of the server as a whole fail here.
pub fn plan_download<'a>(
    store: &LocalStore,
    remote: &Remote,
    files: &'a [FileRef],
) -> Result<DownloadPlan<'a>, ClientError> {
    let mut report = DownloadReport::default();
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    for f in files.iter().filter(|f| f.size > 0 && seen.insert(f.oid)) {
        report.files += 1;
        if store.has_file(&f.oid) {
            report.files_local += 1;
        } else {
            candidates.push(f);
        }
    }
    let answers = parallel_map(&candidates, |f| {
        let r = match remote.get_recipe_sized(&f.oid, f.size) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Ok(Err(ClientError::NotOnServer {
                    oid: f.oid,
                    path: f.path.clone(),
                }))
            }
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => return Ok(Err(e)),
        };
        if r.size != f.size {
            return Ok(Err(ClientError::Corrupt {
                oid: f.oid,
                path: f.path.clone(),
                what: format!(
                    "server recipe has {} bytes, the pointer says {}",
                    r.size, f.size
                ),
            }));
        }
        Ok(Ok(r))
    })?;
    let mut plan = DownloadPlan {
        report,
        wanted: Vec::new(),
        recipes: Vec::new(),
        failed: Vec::new(),
    };
    for (f, answer) in candidates.into_iter().zip(answers) {
        match answer {
            Ok(r) => {
                plan.wanted.push(f);
                plan.recipes.push(r);
            }
            Err(error) => plan.failed.push(FileFailure {
                oid: f.oid,
                path: f.path.clone(),
                error,
            }),
        }
    }
    Ok(plan)
}

/// Second step of [`download`]: fetches the chunks of `plan`'s files that the store
/// lacks and stores them (each checked against its id). Without a `sink`, each file is
/// then rebuilt from the store and hashed, and its recipe kept only if that gives its
/// oid; with one (e.g. an [`gitmodel_store::Assembly`] writing the files directly), each
/// chunk's content also goes to `sink`, and the recipes come back in
/// [`Downloaded::unverified`] for the caller to keep once it has checked the files.
/// A bad answer fails the files it concerns ([`Downloaded::failed`]), not the others.
pub fn run_download(
    store: &LocalStore,
    remote: &Remote,
    plan: DownloadPlan<'_>,
    progress: &Progress,
    sink: Option<&ChunkSink<'_>>,
) -> Result<Downloaded, ClientError> {
    let DownloadPlan {
        report,
        wanted,
        recipes,
        failed,
    } = plan;
    let mut done = Downloaded {
        report,
        failed,
        unverified: Vec::new(),
    };
    let report = &mut done.report;
    if wanted.is_empty() {
        return Ok(done);
    }
    let protocol = |what: String| ClientError::Protocol {
        url: remote.url().to_string(),
        what,
    };

    // Which chunks of which packs are needed.
    // Packs are listed in the order the files first need them, so that chunks arrive
    // roughly in file order (a sink writing files can then hash them as they land).
    let mut needed: HashMap<PackId, Vec<u32>> = HashMap::new();
    let mut order: Vec<PackId> = Vec::new();
    let mut expect: HashSet<ChunkId> = HashSet::new();
    for r in &recipes {
        report.file_bytes += r.size;
        for (seg, chunks) in r.segment_chunks() {
            for (k, c) in chunks.iter().enumerate() {
                if !store.has_chunk(&c.id) && expect.insert(c.id) {
                    needed
                        .entry(seg.pack)
                        .or_insert_with(|| {
                            order.push(seg.pack);
                            Vec::new()
                        })
                        .push(seg.first + k as u32);
                }
            }
        }
    }

    // Exact ranges from each pack's footer index. A pack whose index is bad fails the
    // files that need it.
    let packs: Vec<(PackId, Vec<u32>)> = order
        .into_iter()
        .map(|p| (p, needed.remove(&p).expect("listed pack")))
        .collect();
    let indexes = parallel_map(&packs, |(pack, _)| match pack_index(remote, pack) {
        Err(e) if fatal(&e) => Err(e),
        other => Ok(other),
    })?;
    // Why a chunk did not arrive, for the files that need it.
    let mut undelivered: HashMap<ChunkId, String> = HashMap::new();
    let mut tasks = Vec::new();
    let mut entries_of: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for ((pack, mut wanted), index) in packs.into_iter().zip(indexes) {
        let index = match index {
            Ok(index) => index,
            Err(e) => {
                let why = e.to_string();
                for r in &recipes {
                    for (seg, chunks) in r.segment_chunks() {
                        if seg.pack == pack {
                            for c in chunks {
                                undelivered.entry(c.id).or_insert_with(|| why.clone());
                            }
                        }
                    }
                }
                continue;
            }
        };
        // Records the index lacks are reported for the files whose recipes name them,
        // below.
        tasks.extend(range_tasks(pack, &index, &mut wanted));
        entries_of.insert(pack, index);
    }
    // Every recipe chunk must be the record its segment names: same id, same length. A
    // recipe that says otherwise fails its file before anything is fetched for it.
    let mut bad_recipe: HashMap<Oid, String> = HashMap::new();
    for r in &recipes {
        'segs: for (seg, chunks) in r.segment_chunks() {
            let Some(index) = entries_of.get(&seg.pack) else {
                continue;
            };
            for (k, c) in chunks.iter().enumerate() {
                let i = seg.first as u64 + k as u64;
                let why = match index.get(i as usize) {
                    None => format!("pack {} has no record {i}", seg.pack),
                    Some(e) if e.id != c.id || e.raw_len != c.raw_len => format!(
                        "record {i} of pack {} is chunk {} ({} bytes), the recipe says {} \
                         ({} bytes)",
                        seg.pack, e.id, e.raw_len, c.id, c.raw_len
                    ),
                    Some(_) => continue,
                };
                bad_recipe.insert(r.oid, why);
                break 'segs;
            }
        }
    }
    report.requests = tasks.len();
    // Added, not set: a command may run several downloads under one progress display.
    progress
        .total
        .fetch_add(tasks.iter().map(|t| t.length).sum(), Ordering::Relaxed);

    // Fetch in parallel; store in this thread as results arrive.
    let queue = Mutex::new(tasks.into_iter());
    type Fetched = (Vec<PackEntry>, Result<(u64, Vec<StoredChunk>), ClientError>);
    let (tx, rx) = mpsc::sync_channel::<Fetched>(1);
    std::thread::scope(|scope| -> Result<(), ClientError> {
        for _ in 0..PARALLEL {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || loop {
                let Some(task) = queue.lock().unwrap().next() else {
                    break;
                };
                let result = fetch_range(remote, &task, sink);
                let stop = result.as_ref().is_err_and(fatal);
                if tx.send((task.entries, result)).is_err() || stop {
                    break;
                }
            });
        }
        drop(tx);
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        for (entries, result) in rx {
            let (received, chunks) = match result {
                Ok(r) => r,
                Err(e) if fatal(&e) => {
                    // Stop the other workers from taking more work.
                    queue.lock().unwrap().by_ref().for_each(drop);
                    return Err(e);
                }
                Err(e) => {
                    let why = e.to_string();
                    for entry in entries {
                        undelivered.entry(entry.id).or_insert_with(|| why.clone());
                    }
                    continue;
                }
            };
            report.bytes_received += received;
            progress.done.fetch_add(received, Ordering::Relaxed);
            for c in chunks {
                report.chunks_fetched += 1;
                report.bytes_new += c.entry.raw_len as u64;
                batch_bytes += c.stored.len() as u64;
                batch.push(c);
            }
            // Flush to disk in pack-sized batches, so an interrupted pull keeps its work.
            if batch_bytes >= pack::TARGET_PACK_BYTES {
                store.import(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        store.import(batch)?;
        Ok(())
    })?;

    for (f, r) in wanted.into_iter().zip(recipes) {
        let fail = |what: String| FileFailure {
            oid: f.oid,
            path: f.path.clone(),
            error: ClientError::Corrupt {
                oid: f.oid,
                path: f.path.clone(),
                what,
            },
        };
        if let Some(why) = bad_recipe.remove(&r.oid) {
            done.failed.push(FileFailure {
                oid: f.oid,
                path: f.path.clone(),
                error: protocol(format!("recipe of {}: {why}", r.oid)),
            });
            continue;
        }
        if let Some(c) = r.chunks.iter().find(|c| !store.has_chunk(&c.id)) {
            let why = undelivered
                .get(&c.id)
                .map_or_else(String::new, |w| format!(": {w}"));
            done.failed
                .push(fail(format!("chunk {} was not delivered{why}", c.id)));
            continue;
        }
        if sink.is_some() {
            done.unverified.push(r);
            continue;
        }
        // The chunks are verified; the recipe is the server's word until the content it
        // describes hashes to the oid.
        match store.verify_recipe(&r) {
            Ok(_) => store.put_recipe(&r)?,
            Err(e) => done
                .failed
                .push(fail(format!("the server's recipe is wrong: {e}"))),
        }
    }
    Ok(done)
}

/// The range reads that fetch `records` (indexes into `index`, the footer index of
/// `pack`): adjacent records coalesced up to [`RANGE_BYTES`] a request. Records the
/// index lacks are left out.
fn range_tasks(pack: PackId, index: &[PackEntry], records: &mut Vec<u32>) -> Vec<RangeTask> {
    records.sort_unstable();
    records.dedup();
    let mut tasks = Vec::new();
    let mut current: Option<RangeTask> = None;
    for &i in records.iter() {
        let Some(entry) = index.get(i as usize).copied() else {
            continue;
        };
        match &mut current {
            Some(t) if t.offset + t.length == entry.offset && t.length < RANGE_BYTES => {
                t.length += entry.record_len();
                t.entries.push(entry);
            }
            _ => {
                tasks.extend(current.take());
                current = Some(RangeTask {
                    pack,
                    offset: entry.offset,
                    length: entry.record_len(),
                    entries: vec![entry],
                });
            }
        }
    }
    tasks.extend(current);
    tasks
}

/// What [`fetch_chunks`] brought.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChunksFetched {
    pub chunks: usize,
    /// Raw bytes of the fetched chunks.
    pub raw_bytes: u64,
    /// Bytes received (compressed records).
    pub bytes_received: u64,
    pub requests: usize,
}

/// Brings the chunks `wanted` of one file into the local store, for reads of parts of a
/// file (the ML commands read tensors, not whole models): `recipe` is the server's
/// located recipe of the file (see [`Remote::get_recipe`]). Only chunks the store lacks
/// are fetched, from the packs' footer indexes as exact byte ranges, several requests in
/// flight; each record must be the chunk the recipe names there, and each chunk is
/// checked against its id before it is stored. The recipe itself is not kept (the
/// whole file was not hashed). A wanted chunk that does not arrive is an error.
pub fn fetch_chunks(
    store: &LocalStore,
    remote: &Remote,
    recipe: &Recipe,
    wanted: &HashSet<ChunkId>,
) -> Result<ChunksFetched, ClientError> {
    let protocol = |what: String| ClientError::Protocol {
        url: remote.url().to_string(),
        what,
    };
    let mut needed: HashMap<PackId, Vec<u32>> = HashMap::new();
    let mut order = Vec::new();
    let mut expect: HashMap<(PackId, u32), (ChunkId, u32)> = HashMap::new();
    let mut seen = HashSet::new();
    for (seg, chunks) in recipe.segment_chunks() {
        for (k, c) in chunks.iter().enumerate() {
            if wanted.contains(&c.id) && !store.has_chunk(&c.id) && seen.insert(c.id) {
                let record = seg.first + k as u32;
                needed
                    .entry(seg.pack)
                    .or_insert_with(|| {
                        order.push(seg.pack);
                        Vec::new()
                    })
                    .push(record);
                expect.insert((seg.pack, record), (c.id, c.raw_len));
            }
        }
    }
    let packs: Vec<(PackId, Vec<u32>)> = order
        .into_iter()
        .map(|p| (p, needed.remove(&p).expect("listed pack")))
        .collect();
    let indexes = parallel_map(&packs, |(pack, _)| pack_index(remote, pack))?;
    let mut tasks = Vec::new();
    for ((pack, mut records), index) in packs.into_iter().zip(indexes) {
        for &i in &records {
            let (id, raw_len) = expect[&(pack, i)];
            match index.get(i as usize) {
                None => return Err(protocol(format!("pack {pack} has no record {i}"))),
                Some(e) if e.id != id || e.raw_len != raw_len => {
                    return Err(protocol(format!(
                        "record {i} of pack {pack} is chunk {} ({} bytes), the recipe of {} \
                         says {id} ({raw_len} bytes)",
                        e.id, e.raw_len, recipe.oid
                    )))
                }
                Some(_) => {}
            }
        }
        tasks.extend(range_tasks(pack, &index, &mut records));
    }
    let fetched = parallel_map(&tasks, |task| fetch_range(remote, task, None))?;
    let mut report = ChunksFetched {
        requests: tasks.len(),
        ..Default::default()
    };
    let mut got = Vec::new();
    for (received, chunks) in fetched {
        report.bytes_received += received;
        for c in chunks {
            report.chunks += 1;
            report.raw_bytes += c.entry.raw_len as u64;
            got.push(c);
        }
    }
    store.import(got)?;
    if let Some(id) = wanted.iter().find(|id| !store.has_chunk(id)) {
        return Err(protocol(format!(
            "{}: chunk {id} is not on the server",
            recipe.oid
        )));
    }
    Ok(report)
}

fn pack_index(remote: &Remote, pack: &PackId) -> Result<Vec<PackEntry>, ClientError> {
    let protocol = |what: String| ClientError::Protocol {
        url: remote.url().to_string(),
        what: format!("pack {pack}: {what}"),
    };
    let len = remote.pack_len(pack)?;
    if !(TRAILER_LEN..=pack::MAX_PACK_BYTES).contains(&len) {
        return Err(protocol(format!("implausible length {len}")));
    }
    let trailer = remote.get_range(pack, len - TRAILER_LEN, TRAILER_LEN)?;
    let (index_offset, _) =
        pack::parse_trailer(&trailer, len).map_err(|e| protocol(e.to_string()))?;
    let index = remote.get_range(pack, index_offset, len - TRAILER_LEN - index_offset)?;
    pack::parse_index(&index, index_offset).map_err(|e| protocol(e.to_string()))
}

fn fetch_range(
    remote: &Remote,
    task: &RangeTask,
    sink: Option<&ChunkSink<'_>>,
) -> Result<(u64, Vec<StoredChunk>), ClientError> {
    let bytes = remote.get_range(&task.pack, task.offset, task.length)?;
    let corrupt = |what: String| ClientError::Protocol {
        url: remote.url().to_string(),
        what: format!("pack {} at {}: {what}", task.pack, task.offset),
    };
    let records = pack::parse_records(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if records.len() != task.entries.len() {
        return Err(corrupt("record count differs from the index".into()));
    }
    let mut out = Vec::with_capacity(records.len());
    for (rec, entry) in records.iter().zip(&task.entries) {
        if rec.id != entry.id {
            return Err(corrupt(format!(
                "found chunk {} where {} was expected",
                rec.id, entry.id
            )));
        }
        let raw = rec.decode().map_err(|e| ClientError::CorruptChunk {
            url: remote.url().to_string(),
            what: format!("pack {} at {}: {e}", task.pack, task.offset),
        })?;
        if let Some(sink) = sink {
            sink(&rec.id, &raw)?;
        }
        out.push(StoredChunk {
            entry: *entry,
            stored: rec.stored.to_vec(),
        });
    }
    Ok((bytes.len() as u64, out))
}

/// Runs `f` over `items` on up to PARALLEL threads, keeping order; first error wins.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, ClientError> + Sync,
) -> Result<Vec<R>, ClientError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<R, ClientError>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                let failed = r.is_err();
                *results[i].lock().unwrap() = Some(r);
                if failed {
                    next.store(items.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for r in results {
        match r.into_inner().unwrap() {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => {} // skipped after an earlier error, which is returned first
        }
    }
    Ok(out)
}
