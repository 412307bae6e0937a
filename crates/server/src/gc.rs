//! Server garbage collection: finding packs no registered file uses and removing them,
//! safely, while servers serve.
//!
//! The live set is every pack named by a segment of a recipe of any repository. A pack
//! outside it is not deleted at once: the first run records it as a *candidate* (in
//! [`keys::GC_CANDIDATES_KEY`], with the time it was first seen unreferenced), and a later
//! run deletes it only if it stayed unreferenced for the grace period. An upload in
//! progress (packs stored, files not yet registered) therefore survives: its registration
//! makes the packs live long before the grace period ends. A pack uploaded again while
//! stored already (a retried push) leaves a *touch* marker ([`keys::gc_touched_key`]) that
//! starts its clock over.
//!
//! **Against registrations running at the same time** (on any number of nodes, on a
//! directory or a bucket), deletion is a protocol with [`secure`], which registration runs
//! after writing its recipes and before answering:
//!
//! 1. GC *condemns* the packs it is about to delete: it writes them to
//!    [`keys::GC_CONDEMNED_KEY`] (with the rescue wait, below), then lists the recipes
//!    again. A registration whose check ([`secure`]) ran before that write had already
//!    written its recipe, so the second listing sees it and the pack is kept.
//! 2. A registration whose check finds one of its packs condemned writes a *rescue*
//!    marker ([`keys::gc_rescued_key`]), waits the rescue wait, and then looks for the
//!    pack. GC reads a pack's rescue marker right before deleting it, and issues the
//!    delete within half the rescue wait of that read (or leaves the pack for its next
//!    run). So either GC saw the marker and kept the pack, or the delete was done before
//!    the registration looks: a registration never vouches for a pack that goes.
//! 3. A registration that finds its pack gone answers `missing_chunks` for the file and
//!    removes the recipe it wrote; the client uploads the chunks again.
//!
//! Deleted packs stay listed in the condemned object for [`TOMBSTONE_SECS`], so a
//! registration that read a pack just before GC deleted it still takes the careful path;
//! a registration slower than half that between its reads and its check takes it for all
//! its packs. A node whose chunk index still lists a deleted pack finds out at its next
//! read of it (registration answers `missing_chunks`, and the index forgets the pack) or at
//! its next refresh.
//!
//! Each run also removes the temporary files of writers killed mid-write
//! ([`Storage::remove_stale_temporaries`]). The cost of a run: one listing of `repos/` and
//! a read of every recipe (twice when something is deleted), 16 reads in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use gitmodel_format::{PackId, Recipe};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::storage::{Storage, StorageError};

/// How long a deleted pack stays in the condemned object.
pub const TOMBSTONE_SECS: u64 = 3600;
/// Packs one run deletes at most (the rest wait for the next run); bounds the size of the
/// condemned object every registration reads.
pub const MAX_DELETIONS_PER_RUN: usize = 50_000;
/// The rescue wait when none is given (`git-model-server gc --rescue-wait`).
pub const DEFAULT_RESCUE_WAIT: Duration = Duration::from_secs(5);
/// Storage requests in flight while reading recipes or checking packs.
const IN_FLIGHT: usize = 16;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How long a pack must stay unreferenced, between two runs, before it goes.
    pub grace: Duration,
    /// How long a registration that needs a condemned pack waits before it looks for
    /// it; GC issues each delete within half of it after checking for a rescue.
    pub rescue_wait: Duration,
    /// Say what would be deleted; change nothing.
    pub dry_run: bool,
}

impl GcOptions {
    pub fn new(grace: Duration) -> GcOptions {
        GcOptions {
            grace,
            rescue_wait: DEFAULT_RESCUE_WAIT,
            dry_run: false,
        }
    }
}

/// What a run found and did.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub packs: usize,
    pub live: usize,
    /// Unreferenced packs still inside their grace period.
    pub waiting: usize,
    /// Packs deleted (or, in a dry run, that would be).
    pub deleted: Vec<PackId>,
    pub bytes_freed: u64,
    pub recipes_unreadable: usize,
    /// Condemned packs kept because a registration used or rescued them meanwhile.
    pub rescued: usize,
    /// Temporary files of killed writers removed, and their bytes.
    pub temp_files_removed: usize,
    pub temp_bytes_freed: u64,
}

/// The condemned object: packs GC is deleting or deleted lately.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Condemned {
    /// How long a registration that needs one of these packs waits before looking.
    rescue_wait_ms: u64,
    /// Pack hex -> what happened to it.
    packs: BTreeMap<String, Doom>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doom {
    condemned_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<u64>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn read_condemned(storage: &dyn Storage) -> Result<Condemned, StorageError> {
    match storage.get(keys::GC_CONDEMNED_KEY).await {
        // Written only by GC, whole; an unreadable one is treated as "everything is at
        // risk" by [`secure`] through its error, never as "nothing is".
        Ok(b) => serde_json::from_slice(&b).map_err(|e| StorageError::Corrupt {
            key: keys::GC_CONDEMNED_KEY.to_string(),
            reason: e.to_string(),
        }),
        Err(StorageError::NotFound { .. }) => Ok(Condemned::default()),
        Err(e) => Err(e),
    }
}

async fn write_condemned(storage: &dyn Storage, c: &Condemned) -> Result<(), StorageError> {
    let body = serde_json::to_vec(c).expect("a map of strings to numbers");
    storage.put(keys::GC_CONDEMNED_KEY, Bytes::from(body)).await
}

/// The packs every readable recipe under `repo_keys` uses, and how many recipes could not
/// be read (any of which could name any pack).
async fn live_packs(
    storage: &dyn Storage,
    repo_keys: &[String],
) -> Result<(HashSet<PackId>, usize), StorageError> {
    // Owned keys and ids in these streams: borrowed items make the futures not `Send`
    // for every lifetime, which the server's spawned tasks need.
    let recipes: Vec<String> = repo_keys
        .iter()
        .filter(|k| keys::parse_recipe_key(k).is_some())
        .cloned()
        .collect();
    let decoded: Vec<Option<Vec<PackId>>> = futures_util::stream::iter(recipes)
        .map(|key| async move {
            match storage.get(&key).await {
                Ok(bytes) => Ok(match Recipe::decode(&bytes) {
                    Ok(r) => Some(r.segments.iter().map(|s| s.pack).collect()),
                    Err(e) => {
                        tracing::error!(key, error = %e, "unreadable recipe; nothing will be deleted");
                        None
                    }
                }),
                // Removed since the listing (a repository deleted, a registration undone).
                Err(StorageError::NotFound { .. }) => Ok(Some(Vec::new())),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let unreadable = decoded.iter().filter(|d| d.is_none()).count();
    Ok((
        decoded.into_iter().flatten().flatten().collect(),
        unreadable,
    ))
}

/// Packs named by the markers under `prefix`, with the markers' keys.
async fn markers(
    storage: &dyn Storage,
    prefix: &str,
    parse: fn(&str) -> Option<PackId>,
) -> Result<Vec<(PackId, String)>, StorageError> {
    Ok(storage
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|k| parse(&k).map(|p| (p, k)))
        .collect())
}

/// One GC pass over `storage` at time `now`.
pub async fn collect(
    storage: &dyn Storage,
    options: &GcOptions,
    now: SystemTime,
) -> Result<GcReport, StorageError> {
    let mut report = GcReport::default();
    if !options.dry_run {
        let (files, bytes) = storage.remove_stale_temporaries().await?;
        (report.temp_files_removed, report.temp_bytes_freed) = (files, bytes);
    }
    let repo_keys = storage.list(keys::REPOS_PREFIX).await?;
    let (live, unreadable) = live_packs(storage, &repo_keys).await?;
    report.recipes_unreadable = unreadable;
    let packs: Vec<PackId> = storage
        .list(keys::PACKS_PREFIX)
        .await?
        .iter()
        .filter_map(|k| keys::parse_pack_key(k))
        .collect();
    report.packs = packs.len();
    report.live = packs.iter().filter(|p| live.contains(p)).count();

    let previous: BTreeMap<String, u64> = match storage.get(keys::GC_CANDIDATES_KEY).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(StorageError::NotFound { .. }) => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let touched = markers(storage, keys::GC_TOUCHED_PREFIX, keys::parse_gc_touched_key).await?;
    let rescued = markers(storage, keys::GC_RESCUED_PREFIX, keys::parse_gc_rescued_key).await?;
    let fresh: HashSet<PackId> = touched.iter().chain(&rescued).map(|(p, _)| *p).collect();
    let mut condemned = read_condemned(storage).await?;
    let now_s = unix(now);
    let grace = options.grace.as_secs();

    let mut candidates = BTreeMap::new();
    let mut deletable: Vec<(PackId, u64)> = Vec::new();
    for pack in packs.iter().filter(|p| !live.contains(p)) {
        let hex = pack.to_hex();
        // Uploaded again, or needed by a registration, since the last run: its clock
        // starts over.
        let first_seen = match fresh.contains(pack) {
            true => now_s,
            false => previous.get(&hex).copied().unwrap_or(now_s),
        };
        if report.recipes_unreadable == 0
            && previous.contains_key(&hex)
            && !fresh.contains(pack)
            && now_s.saturating_sub(first_seen) >= grace
            && deletable.len() < MAX_DELETIONS_PER_RUN
        {
            deletable.push((*pack, first_seen));
        } else {
            report.waiting += 1;
            candidates.insert(hex, first_seen);
        }
    }
    if options.dry_run {
        for (pack, _) in &deletable {
            report.bytes_freed += storage.head(&keys::pack_key(pack)).await?.unwrap_or(0);
            report.deleted.push(*pack);
        }
        return Ok(report);
    }

    // Announce, then look again: a registration that did not see the announcement had
    // written its recipe before it, so this listing has it.
    let mut dooming: HashSet<String> = HashSet::new();
    if !deletable.is_empty() {
        condemned.rescue_wait_ms = options.rescue_wait.as_millis() as u64;
        for (pack, _) in &deletable {
            let hex = pack.to_hex();
            condemned.packs.insert(
                hex.clone(),
                Doom {
                    condemned_at: now_s,
                    deleted_at: None,
                },
            );
            dooming.insert(hex);
        }
        write_condemned(storage, &condemned).await?;
        let repo_keys = storage.list(keys::REPOS_PREFIX).await?;
        let (live, unreadable) = live_packs(storage, &repo_keys).await?;
        // Every repository's grants of each pack, from one pass over the listing.
        let mut grants: HashMap<PackId, Vec<&String>> = HashMap::new();
        for key in &repo_keys {
            if let Some(pack) = keys::parse_pack_ref_key(key) {
                grants.entry(pack).or_default().push(key);
            }
        }
        let half_wait = options.rescue_wait / 2;
        for (pack, first_seen) in &deletable {
            let hex = pack.to_hex();
            if unreadable > 0 || live.contains(pack) {
                report.rescued += 1;
                continue;
            }
            let checked = Instant::now();
            if storage.head(&keys::gc_rescued_key(pack)).await?.is_some() {
                report.rescued += 1;
                report.waiting += 1;
                candidates.insert(hex, now_s);
                continue;
            }
            let key = keys::pack_key(pack);
            let size = storage.head(&key).await?;
            if checked.elapsed() >= half_wait {
                // Too slow to promise the delete lands before a rescuer looks: next run.
                report.waiting += 1;
                candidates.insert(hex, *first_seen);
                continue;
            }
            storage.delete(&key).await?;
            if let Some(doom) = condemned.packs.get_mut(&hex) {
                doom.deleted_at = Some(now_s);
            }
            for grant in grants.get(pack).into_iter().flatten() {
                storage.delete(grant).await?;
            }
            report.bytes_freed += size.unwrap_or(0);
            report.deleted.push(*pack);
        }
    }
    // Keep only the tombstones of recent deletions: a pack condemned but kept (or
    // condemned by a run that died) is no longer at risk.
    let before = condemned.packs.len();
    condemned.packs.retain(|_, doom| {
        doom.deleted_at
            .is_some_and(|at| now_s.saturating_sub(at) < TOMBSTONE_SECS)
    });
    if condemned.packs.len() != before || !dooming.is_empty() {
        write_condemned(storage, &condemned).await?;
    }
    let body = serde_json::to_vec(&candidates).expect("a map of strings to numbers");
    storage
        .put(keys::GC_CANDIDATES_KEY, Bytes::from(body))
        .await?;
    // The markers read at the start have done their work (the clocks they reset are
    // saved); markers written since stay for the next run.
    for (_, key) in touched.iter().chain(&rescued) {
        storage.delete(key).await?;
    }
    Ok(report)
}

/// Registration's half of the protocol above: called after the recipes using `packs` are
/// written, before the registration answers. Returns the packs that are gone (or going):
/// the files using them must not be answered as registered. `read_at` is when the
/// registration first read its packs (verification); a registration slower than half of
/// [`TOMBSTONE_SECS`] since then checks every pack.
pub async fn secure(
    storage: &dyn Storage,
    packs: &HashSet<PackId>,
    read_at: Instant,
) -> Result<HashSet<PackId>, StorageError> {
    if packs.is_empty() {
        return Ok(HashSet::new());
    }
    let condemned = read_condemned(storage).await?;
    let slow = read_at.elapsed() >= Duration::from_secs(TOMBSTONE_SECS / 2);
    let at_risk: Vec<PackId> = packs
        .iter()
        .filter(|p| slow || condemned.packs.contains_key(&p.to_hex()))
        .copied()
        .collect();
    if at_risk.is_empty() {
        return Ok(HashSet::new());
    }
    tracing::info!(
        packs = at_risk.len(),
        slow,
        "a registration needs packs GC condemned; rescuing them"
    );
    futures_util::stream::iter(at_risk.clone())
        .map(|p| async move { storage.put(&keys::gc_rescued_key(&p), Bytes::new()).await })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    let wait = match condemned.rescue_wait_ms {
        0 => DEFAULT_RESCUE_WAIT,
        ms => Duration::from_millis(ms),
    };
    tokio::time::sleep(wait).await;
    let present: Vec<(PackId, bool)> = futures_util::stream::iter(at_risk)
        .map(|p| async move {
            let there = storage.head(&keys::pack_key(&p)).await?.is_some();
            Ok::<_, StorageError>((p, there))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(present
        .into_iter()
        .filter(|(_, there)| !there)
        .map(|(p, _)| p)
        .collect())
}

/// Packs GC deleted lately, with when (for nodes to forget them in their index).
pub async fn recently_deleted(storage: &dyn Storage) -> Result<Vec<(PackId, u64)>, StorageError> {
    Ok(read_condemned(storage)
        .await?
        .packs
        .iter()
        .filter_map(|(hex, doom)| Some((PackId::from_hex(hex).ok()?, doom.deleted_at?)))
        .collect())
}

/// Records that `pack`, stored already, was uploaded again: GC starts its clock over.
pub async fn touch(storage: &dyn Storage, pack: &PackId) -> Result<(), StorageError> {
    storage.put(&keys::gc_touched_key(pack), Bytes::new()).await
}

/// Removes everything a repository owns (recipes, pack references, locks); returns how
/// many objects went. Packs are shared and left to [`collect`].
pub async fn delete_repo(
    storage: &dyn Storage,
    repo: &gitmodel_proto::RepoName,
) -> Result<usize, StorageError> {
    let prefix = format!("repos/{}/{}/", repo.namespace, repo.repo);
    let keys = storage.list(&prefix).await?;
    for k in &keys {
        storage.delete(k).await?;
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;
    use gitmodel_format::pack::encode_chunk;
    use gitmodel_format::recipe::{RecipeChunk, Segment};
    use gitmodel_format::{ChunkId, Oid, PackBuilder};
    use std::time::Duration;

    fn opts(grace_secs: u64, dry_run: bool) -> GcOptions {
        GcOptions {
            grace: Duration::from_secs(grace_secs),
            rescue_wait: Duration::from_millis(200),
            dry_run,
        }
    }

    async fn put_pack(s: &dyn Storage, data: &[u8]) -> (PackId, u64, u32) {
        let mut b = PackBuilder::new();
        let (codec, stored) = encode_chunk(data);
        let e = b.push(ChunkId::of(data), data.len() as u32, codec, &stored);
        let (id, bytes, _) = b.finish();
        s.put(&keys::pack_key(&id), Bytes::from(bytes))
            .await
            .unwrap();
        (id, e.record_len(), data.len() as u32)
    }

    /// Registers `data` (one chunk, stored whole in `pack`) as a file of acme/vision.
    async fn put_recipe(s: &dyn Storage, data: &[u8], pack: PackId, len: u64, raw: u32) {
        let repo = gitmodel_proto::RepoName::new("acme", "vision").unwrap();
        let recipe = Recipe {
            chunker: 1,
            oid: Oid::of(data),
            size: raw as u64,
            chunks: vec![RecipeChunk {
                id: ChunkId::of(data),
                raw_len: raw,
            }],
            segments: vec![Segment {
                pack,
                first: 0,
                count: 1,
                offset: 16,
                length: len,
            }],
        };
        s.put(
            &keys::recipe_key(&repo, &recipe.oid),
            Bytes::from(recipe.encode()),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn two_passes_and_live_packs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::open(dir.path()).unwrap();
        let (live, len, raw) = put_pack(&s, b"used by a file").await;
        let (dead, _, _) = put_pack(&s, b"nobody uses this").await;
        put_recipe(&s, b"used by a file", live, len, raw).await;
        let t0 = SystemTime::now();
        // First pass: the dead pack becomes a candidate, nothing is deleted.
        let r = collect(&s, &opts(3600, false), t0).await.unwrap();
        assert_eq!((r.packs, r.live, r.waiting, r.deleted.len()), (2, 1, 1, 0));
        // Within the grace period: still waiting.
        let r = collect(&s, &opts(3600, false), t0 + Duration::from_secs(60))
            .await
            .unwrap();
        assert!(r.deleted.is_empty());
        // A dry run after the grace period says what would go and deletes nothing.
        let later = t0 + Duration::from_secs(7200);
        let r = collect(&s, &opts(3600, true), later).await.unwrap();
        assert_eq!(r.deleted, vec![dead]);
        assert!(s.head(&keys::pack_key(&dead)).await.unwrap().is_some());
        let r = collect(&s, &opts(3600, false), later).await.unwrap();
        assert_eq!(r.deleted, vec![dead]);
        assert!(r.bytes_freed > 0);
        assert!(s.head(&keys::pack_key(&dead)).await.unwrap().is_none());
        assert!(s.head(&keys::pack_key(&live)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_pack_registered_before_the_grace_ends_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::open(dir.path()).unwrap();
        let (pack, len, raw) = put_pack(&s, b"uploaded, registration pending").await;
        let t0 = SystemTime::now();
        collect(&s, &opts(3600, false), t0).await.unwrap();
        put_recipe(&s, b"uploaded, registration pending", pack, len, raw).await;
        let r = collect(&s, &opts(3600, false), t0 + Duration::from_secs(7200))
            .await
            .unwrap();
        assert!(r.deleted.is_empty());
        assert_eq!(r.live, 1);
    }

    /// A local directory that stops before the `nth` call of `op` on a key starting with
    /// `prefix`, until the test lets it go on: to put a registration at an exact point of
    /// a GC run.
    #[derive(Debug)]
    struct Gated {
        inner: LocalDir,
        op: &'static str,
        prefix: &'static str,
        nth: usize,
        seen: std::sync::atomic::AtomicUsize,
        reached: tokio::sync::Notify,
        resume: tokio::sync::Notify,
    }

    impl Gated {
        fn new(inner: LocalDir, op: &'static str, prefix: &'static str, nth: usize) -> Gated {
            Gated {
                inner,
                op,
                prefix,
                nth,
                seen: Default::default(),
                reached: Default::default(),
                resume: Default::default(),
            }
        }

        async fn gate(&self, op: &str, key: &str) {
            if op == self.op && key.starts_with(self.prefix) {
                let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if n == self.nth {
                    self.reached.notify_one();
                    self.resume.notified().await;
                }
            }
        }
    }

    #[async_trait::async_trait]
    impl Storage for Gated {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
            self.inner.put(key, data).await
        }
        async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
            self.inner.put_if_absent(key, data).await
        }
        fn atomic_create(&self) -> bool {
            self.inner.atomic_create()
        }
        async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, StorageError> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
            self.gate("head", key).await;
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
            self.gate("list", prefix).await;
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.gate("delete", key).await;
            self.inner.delete(key).await
        }
    }

    /// A store with one pack no file uses, first seen by a GC run at `t0`.
    async fn condemnable(gated: &Gated, data: &[u8], t0: SystemTime) -> (PackId, u64, u32) {
        let (pack, len, raw) = put_pack(gated, data).await;
        let r = collect(gated, &opts(3600, false), t0).await.unwrap();
        assert_eq!((r.waiting, r.deleted.len()), (1, 0));
        (pack, len, raw)
    }

    fn gated(
        dir: &tempfile::TempDir,
        op: &'static str,
        prefix: &'static str,
        nth: usize,
    ) -> Arc<Gated> {
        Arc::new(Gated::new(
            LocalDir::open(dir.path()).unwrap(),
            op,
            prefix,
            nth,
        ))
    }

    use std::sync::Arc;

    /// A registration that writes its recipe after GC condemned the pack but before GC
    /// lists the recipes again: the second listing sees it, the pack stays.
    #[tokio::test]
    async fn a_recipe_written_before_the_relisting_keeps_its_pack() {
        let dir = tempfile::tempdir().unwrap();
        // The run's second listing of `repos/` (the first run lists once, this one twice).
        let s = gated(&dir, "list", "repos/", 3);
        let data = b"registered while gc condemns it";
        let t0 = SystemTime::now();
        let (pack, len, raw) = condemnable(&s, data, t0).await;
        let run = tokio::spawn({
            let s = Arc::clone(&s);
            async move { collect(&*s, &opts(3600, false), t0 + Duration::from_secs(7200)).await }
        });
        s.reached.notified().await;
        put_recipe(&*s, data, pack, len, raw).await;
        let used = HashSet::from([pack]);
        let secured = tokio::spawn({
            let s = Arc::clone(&s);
            async move { secure(&*s, &used, Instant::now()).await }
        });
        s.resume.notify_one();
        let report = run.await.unwrap().unwrap();
        assert!(report.deleted.is_empty());
        assert_eq!(report.rescued, 1);
        assert!(secured.await.unwrap().unwrap().is_empty());
        assert!(s.head(&keys::pack_key(&pack)).await.unwrap().is_some());
    }

    /// A registration whose recipe GC's relisting missed, while GC is about to delete:
    /// its rescue marker is seen by GC's last check and the pack stays.
    #[tokio::test]
    async fn a_rescue_before_the_last_check_keeps_the_pack() {
        let dir = tempfile::tempdir().unwrap();
        // The rescue-marker check of the deleting run: the first `head` of gc/rescued/.
        let s = gated(&dir, "head", keys::GC_RESCUED_PREFIX, 1);
        let data = b"rescued just in time";
        let t0 = SystemTime::now();
        let (pack, len, raw) = condemnable(&s, data, t0).await;
        let run = tokio::spawn({
            let s = Arc::clone(&s);
            async move { collect(&*s, &opts(3600, false), t0 + Duration::from_secs(7200)).await }
        });
        s.reached.notified().await;
        put_recipe(&*s, data, pack, len, raw).await;
        let used = HashSet::from([pack]);
        let secured = tokio::spawn({
            let s = Arc::clone(&s);
            async move { secure(&*s, &used, Instant::now()).await }
        });
        // GC goes on once the marker is there (the registration is then waiting).
        while s
            .inner
            .head(&keys::gc_rescued_key(&pack))
            .await
            .unwrap()
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.resume.notify_one();
        let report = run.await.unwrap().unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
        assert_eq!(report.rescued, 1);
        assert!(secured.await.unwrap().unwrap().is_empty());
        assert!(s.head(&keys::pack_key(&pack)).await.unwrap().is_some());
        // The next run sees the recipe: live, and the marker is gone after it.
        let r = collect(&*s, &opts(3600, false), t0 + Duration::from_secs(7300))
            .await
            .unwrap();
        assert_eq!((r.live, r.deleted.len()), (1, 0));
    }

    /// A registration that needed a pack GC has just deleted is told it is gone (the
    /// caller then answers `missing_chunks`), never that it is registered.
    #[tokio::test]
    async fn a_registration_after_the_delete_is_told_the_pack_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let s = gated(&dir, "none", "", 0);
        let data = b"deleted before its registration";
        let t0 = SystemTime::now();
        let (pack, len, raw) = condemnable(&s, data, t0).await;
        let r = collect(&*s, &opts(3600, false), t0 + Duration::from_secs(7200))
            .await
            .unwrap();
        assert_eq!(r.deleted, vec![pack]);
        put_recipe(&*s, data, pack, len, raw).await;
        let lost = secure(&*s, &HashSet::from([pack]), Instant::now())
            .await
            .unwrap();
        assert_eq!(lost, HashSet::from([pack]));
        // Nodes learn of the deletion from the tombstone.
        let deleted = recently_deleted(&*s).await.unwrap();
        assert_eq!(
            deleted.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![pack]
        );
        // Packs nobody condemned cost a registration nothing but one read.
        let (other, _, _) = put_pack(&*s, b"never condemned").await;
        let started = Instant::now();
        assert!(secure(&*s, &HashSet::from([other]), started)
            .await
            .unwrap()
            .is_empty());
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "it waited the rescue wait"
        );
    }

    /// A pack sent again (a retried push) starts its grace period over.
    #[tokio::test]
    async fn a_pack_uploaded_again_starts_its_grace_period_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = gated(&dir, "none", "", 0);
        let t0 = SystemTime::now();
        let (pack, _, _) = condemnable(&s, b"retried", t0).await;
        touch(&*s, &pack).await.unwrap();
        let at = |secs| t0 + Duration::from_secs(secs);
        let r = collect(&*s, &opts(3600, false), at(7200)).await.unwrap();
        assert!(r.deleted.is_empty(), "deleted although sent again");
        let r = collect(&*s, &opts(3600, false), at(7200 + 1800))
            .await
            .unwrap();
        assert!(r.deleted.is_empty(), "deleted inside its new grace period");
        let r = collect(&*s, &opts(3600, false), at(7200 + 3600))
            .await
            .unwrap();
        assert_eq!(r.deleted, vec![pack]);
    }
}
