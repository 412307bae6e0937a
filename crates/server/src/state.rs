//! [`AppState`]: what every request shares (storage, chunk index, authorizer, limits), and
//! [`ServerConfig`], the knobs it is built from.
//!
//! It owns no sockets: [`crate::server::serve`] runs the HTTP side over an `Arc<AppState>`.
//! Every pack enters storage and the chunk index through [`AppState::store_pack`], whether
//! a client uploaded it whole (native API) or the server built it from a Git LFS upload.
//!
//! **Stateless nodes.** Everything durable is in storage; the chunk index is a cache. When
//! several server processes share one store (an S3 bucket behind a load balancer), each
//! catches up with the packs the others stored ([`ServerConfig::index_refresh`]): every
//! interval, soon after a lookup misses, and always before registration answers
//! `missing_chunks` ([`AppState::locate_fresh`]). A `chunks/exists` answer may lag by up
//! to that bound; a false "missing" only costs a re-upload.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gitmodel_format::{PackEntry, PackId, Recipe};
use gitmodel_proto::RepoName;
use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::auth::{AllowAll, Authorizer};
use crate::index::{ChunkIndex, LoadStats};
use crate::locate::{FileError, Located};
use crate::s3::{S3Location, S3Options, S3Store};
use crate::storage::{LocalDir, Storage, StorageError};
use crate::tenancy::PackClaims;

/// Address the server listens on when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "GIT_MODEL_SERVER_DATA";
/// How often a node on shared (S3) storage re-lists packs when nothing else asks it to.
pub const DEFAULT_SHARED_INDEX_REFRESH: Duration = Duration::from_secs(30);
/// Least time between two index refreshes of one process: bounds the listing load that
/// misses (every push of new content misses) can cause.
pub const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// How long a presigned pack URL stays valid (`--presign-downloads`): clients use it at
/// once, so this only needs to cover a slow range read and clock skew.
pub const PRESIGNED_URL_EXPIRY: Duration = Duration::from_secs(15 * 60);
/// Least time between two refreshes started by lookup misses in the background.
const MISS_REFRESH_GAP: Duration = Duration::from_secs(5);

/// Files one writer (a token) has in verification at once, across all its requests
/// ([`crate::register`]):
/// its batches share these, so one writer never holds every verification permit of the
/// server ([`crate::state::WriterSlots`]). A server without tokens has one trusted
/// party and no such share.
pub const FILES_PER_WRITER: usize = 4;
/// A file may be larger than its distinct chunks by this factor (plus
/// [`crate::register::REPEAT_SLACK_BYTES`]) before its registration is refused: rebuilding it costs a
/// decode and a SHA-256 pass per *reference*, so a tiny recipe naming one stored chunk
/// thousands of times would otherwise buy gigabytes of work. The default of
/// [`crate::ServerConfig::max_repeat_factor`].
pub const MAX_REPEAT_FACTOR: u64 = 16;

/// Server settings. Build with [`ServerConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Root of the [`LocalDir`] storage.
    pub data_dir: PathBuf,
    /// How long a client may take to send a request's headers (also bounds idle
    /// keep-alive connections): protects against slow-header clients holding sockets.
    pub header_read_timeout: Duration,
    /// How long a request body may stall between two reads before the request fails.
    pub body_idle_timeout: Duration,
    /// Most CPU-heavy verifications (pack uploads, file reconstructions) running at once,
    /// across all requests.
    pub verify_concurrency: usize,
    /// How long shutdown waits for open requests before giving up on them.
    pub shutdown_grace: Duration,
    /// When set, the chunk index is shared-storage aware: it re-lists packs at this
    /// interval and after lookup misses, and registration refreshes it before answering
    /// `missing_chunks`. `None` (the default, right for one process per store) never
    /// re-lists after startup.
    pub index_refresh: Option<Duration>,
    /// When set (`--presign-downloads`), `GET packs/<id>` answers `307` with a presigned
    /// URL into the bucket valid this long, so pack bytes flow from the store to the
    /// client directly. Only where the store can presign (S3); packs only, since a pack
    /// range is byte-exact what the client asked for (a Git LFS object is rebuilt from
    /// several packs and always goes through the server).
    pub presign_downloads: Option<Duration>,
    /// Most header lines in one request (more: `431`).
    pub max_headers: usize,
    /// Largest request head, start line and headers together (more: `431`).
    pub max_header_bytes: usize,
    /// Largest Git LFS object accepted (batch: per-object `422`; `PUT`: `413`).
    pub max_lfs_object_bytes: u64,
    /// Whether connections are TLS (`https://` in Git LFS transfer URLs).
    pub tls: bool,
    /// Most connections open at once ([`crate::conn`]; more: `503`, closed).
    pub max_connections: usize,
    /// Most connections open at once from one client IP address (more: `503`, closed).
    pub max_connections_per_ip: usize,
    /// How long a write to a client may make no progress before the connection is cut
    /// (a client that stops reading its answer).
    pub send_timeout: Duration,
    /// Least average rate of a request body, in bytes per second, once
    /// [`ServerConfig::body_rate_grace`] has passed (slower: `408`); 0 turns it off.
    pub body_min_rate: u64,
    /// Time a request body may take before [`ServerConfig::body_min_rate`] applies.
    pub body_rate_grace: Duration,
    /// How long the body of a refused request (`401`/`403`/`404` before its body was
    /// read) is read and dropped so that the client gets the answer; after it, or past
    /// [`crate::api::MAX_DRAIN_BYTES`], the connection is closed instead.
    pub refused_body_drain: Duration,
    /// How many times its distinct chunks' bytes a registered file may be (plus 64 MiB);
    /// more is refused `too_repetitive` ([`crate::register::MAX_REPEAT_FACTOR`]).
    pub max_repeat_factor: u64,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ServerConfig {
            listen,
            data_dir: data_dir.into(),
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            verify_concurrency: cores.max(2),
            shutdown_grace: Duration::from_secs(30),
            index_refresh: None,
            presign_downloads: None,
            max_headers: 64,
            max_header_bytes: 64 * 1024,
            max_lfs_object_bytes: 100 * 1024 * 1024 * 1024,
            tls: false,
            max_connections: 1024,
            max_connections_per_ip: 128,
            send_timeout: Duration::from_secs(60),
            body_min_rate: 16 * 1024,
            body_rate_grace: Duration::from_secs(30),
            refused_body_drain: Duration::from_secs(5),
            max_repeat_factor: MAX_REPEAT_FACTOR,
        }
    }
}

/// The default data directory, from an environment lookup (passed in so tests need not
/// touch the process environment): `$GIT_MODEL_SERVER_DATA`, else
/// `$XDG_DATA_HOME/git-model-server`, else `$HOME/.local/share/git-model-server`.
/// Empty and (for the XDG variable, per its spec) relative values are ignored.
pub fn default_data_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(DATA_DIR_ENV) {
        return Some(dir);
    }
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("git-model-server"));
    }
    var("HOME").map(|home| home.join(".local/share/git-model-server"))
}

/// Buckets of [`WriterSlots`]: writers whose names hash to one bucket share its slots.
const WRITER_BUCKETS: usize = 64;

/// One writer's share of registration work: file verifications in flight (a
/// semaphore its batches take from), and its open registration requests.
#[derive(Debug)]
pub(crate) struct WriterSlots {
    files: Arc<Semaphore>,
    batches: AtomicU64,
}

/// An open registration request of a writer; counted until dropped.
pub(crate) struct OpenBatch<'a>(&'a WriterSlots);

impl Drop for OpenBatch<'_> {
    fn drop(&mut self) {
        self.0.batches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WriterSlots {
    fn new(files: usize) -> WriterSlots {
        WriterSlots {
            files: Arc::new(Semaphore::new(files.max(1))),
            batches: AtomicU64::new(0),
        }
    }

    /// Counts one more open batch, unless `limit` are open already.
    pub(crate) fn open_batch(&self, limit: usize) -> Option<OpenBatch<'_>> {
        let before = self.batches.fetch_add(1, Ordering::Relaxed);
        let batch = OpenBatch(self);
        (before < limit as u64).then_some(batch)
    }

    /// Waits for a slot to verify one file.
    pub(crate) async fn file(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.files)
            .acquire_owned()
            .await
            .expect("writer slots are never closed")
    }
}

/// State shared by all requests.
pub struct AppState {
    storage: Arc<dyn Storage>,
    index: ChunkIndex,
    authorizer: Arc<dyn Authorizer>,
    verify_permits: Arc<Semaphore>,
    /// Hash states of verified files' prefixes ([`crate::prefix`]).
    prefix_states: crate::prefix::PrefixStates,
    /// Serializes Git LFS lock mutations (check-then-write) within this process.
    lock_mutations: Mutex<()>,
    /// Packs being stored right now (see [`crate::tenancy`]).
    claims: PackClaims,
    /// Registration slots per writer ([`WriterSlots`]), by hash of the writer's name.
    writers: Vec<Arc<WriterSlots>>,
    writer_hasher: std::collections::hash_map::RandomState,
    /// When the last index refresh started; held while one runs, so refreshes never
    /// overlap and a caller can tell whether one began after it missed.
    last_refresh: Mutex<Option<Instant>>,
    config: ServerConfig,
    request_tag: u32,
    request_counter: AtomicU64,
    /// Counters served at `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("storage", &self.storage)
            .field("chunks", &self.index.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state over any storage, loading the chunk index from its packs.
    pub async fn open(
        storage: Arc<dyn Storage>,
        authorizer: Arc<dyn Authorizer>,
        config: ServerConfig,
    ) -> Result<Arc<AppState>, StorageError> {
        let started = std::time::Instant::now();
        crate::tenancy::upgrade(&storage).await?;
        let (index, stats) = ChunkIndex::load(Arc::clone(&storage)).await?;
        tracing::info!(
            packs = stats.packs,
            chunks = stats.chunks,
            skipped = stats.skipped,
            ms = started.elapsed().as_millis() as u64,
            "chunk index loaded"
        );
        let refresh = config.index_refresh;
        let state = Arc::new(AppState {
            storage,
            index,
            authorizer,
            verify_permits: Arc::new(Semaphore::new(config.verify_concurrency.max(1))),
            prefix_states: Default::default(),
            lock_mutations: Mutex::new(()),
            claims: PackClaims::default(),
            writers: (0..WRITER_BUCKETS)
                .map(|_| Arc::new(WriterSlots::new(FILES_PER_WRITER)))
                .collect(),
            writer_hasher: Default::default(),
            last_refresh: Mutex::new(Some(started)),
            config,
            request_tag: boot_tag(),
            request_counter: AtomicU64::new(0),
            metrics: Default::default(),
        });
        if let Some(interval) = refresh {
            spawn_refresher(&state, interval);
        }
        spawn_gc_watcher(&state);
        let storage = Arc::clone(&state.storage);
        tokio::spawn(async move {
            match storage.remove_stale_temporaries().await {
                Ok((0, _)) => {}
                Ok((files, bytes)) => {
                    tracing::info!(files, bytes, "removed temporary files of killed writers")
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "could not remove stale temporary files")
                }
            }
        });
        Ok(state)
    }

    /// [`LocalDir`] storage at `config.data_dir`, every request allowed (tests).
    pub async fn open_local(config: ServerConfig) -> Result<Arc<AppState>, StorageError> {
        AppState::open_local_with(config, Arc::new(AllowAll)).await
    }

    /// [`LocalDir`] storage at `config.data_dir`, requests checked by `authorizer`.
    pub async fn open_local_with(
        config: ServerConfig,
        authorizer: Arc<dyn Authorizer>,
    ) -> Result<Arc<AppState>, StorageError> {
        let storage = LocalDir::open(&config.data_dir)?;
        AppState::open(Arc::new(storage), authorizer, config).await
    }

    /// A server on an S3 bucket ([`S3Store::from_env`]: endpoint and credentials from
    /// the `AWS_*` environment), requests checked by `authorizer`. Checks that the bucket answers
    /// and whether it honours conditional writes (logged; see [`crate::locks`]). Turns
    /// on [`ServerConfig::index_refresh`] ([`DEFAULT_SHARED_INDEX_REFRESH`]) unless it
    /// is set, since a bucket is usually shared by several nodes.
    pub async fn open_s3(
        mut config: ServerConfig,
        location: S3Location,
        authorizer: Arc<dyn Authorizer>,
    ) -> Result<Arc<AppState>, StorageError> {
        let mut store = S3Store::from_env(location, S3Options::default())?;
        store.check_access().await?;
        let atomic = store.probe_conditional_put().await?;
        if atomic {
            tracing::info!(store = %store.location(), "conditional writes supported: Git LFS locks are safe across nodes");
        } else {
            tracing::warn!(store = %store.location(), "the store ignores conditional writes (If-None-Match): Git LFS locks are only safe with a single server process");
        }
        config
            .index_refresh
            .get_or_insert(DEFAULT_SHARED_INDEX_REFRESH);
        AppState::open(Arc::new(store), authorizer, config).await
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    pub fn authorizer(&self) -> &dyn Authorizer {
        &*self.authorizer
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Waits for a slot to run a CPU-heavy verification.
    pub(crate) fn prefix_states(&self) -> &crate::prefix::PrefixStates {
        &self.prefix_states
    }

    pub(crate) async fn verify_permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.verify_permits)
            .acquire_owned()
            .await
            .expect("the verification semaphore is never closed")
    }

    /// The registration slots of `writer` (shared with the few writers whose names hash
    /// alike: the table has a fixed size, whatever names clients claim).
    pub(crate) fn writer_slots(&self, writer: &str) -> Arc<WriterSlots> {
        use std::hash::BuildHasher;
        let at = (self.writer_hasher.hash_one(writer) % self.writers.len() as u64) as usize;
        Arc::clone(&self.writers[at])
    }

    /// Packs being stored right now (see [`crate::tenancy`]).
    pub(crate) fn claims(&self) -> &PackClaims {
        &self.claims
    }

    /// Held while a Git LFS lock is created or removed (see [`crate::locks`]).
    pub(crate) async fn lock_mutations(&self) -> MutexGuard<'_, ()> {
        self.lock_mutations.lock().await
    }

    /// A presigned URL from which a client may read the object at `key` directly, when
    /// [`ServerConfig::presign_downloads`] is on and the store can presign; `None`
    /// otherwise. Callers check access first: the URL is a bearer credential for that
    /// one object until it expires.
    pub async fn presigned_url(&self, key: &str) -> Result<Option<String>, StorageError> {
        match self.config.presign_downloads {
            Some(expires) => self.storage.presign_get(key, expires).await,
            None => Ok(None),
        }
    }

    /// Catches the chunk index up with storage ([`ChunkIndex::refresh`]) unless a
    /// refresh started at or after `since` (the moment the caller saw a miss), which
    /// already covers everything stored before the miss. Refreshes never overlap, and
    /// start at least [`MIN_REFRESH_GAP`] apart.
    pub async fn refresh_index(&self, since: Instant) -> Result<LoadStats, StorageError> {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|started| started >= since) {
            return Ok(LoadStats::default());
        }
        if let Some(started) = *last {
            tokio::time::sleep_until((started + MIN_REFRESH_GAP).into()).await;
        }
        let started = Instant::now();
        *last = Some(started);
        let stats = self.index.refresh(Arc::clone(&self.storage)).await?;
        if stats.packs > 0 || stats.skipped > 0 {
            tracing::info!(
                packs = stats.packs,
                chunks = stats.chunks,
                skipped = stats.skipped,
                ms = started.elapsed().as_millis() as u64,
                "chunk index caught up with storage"
            );
        }
        Ok(stats)
    }

    /// [`crate::register::locate`] in the packs `repo` may read ([`crate::tenancy`]);
    /// on shared storage a `missing_chunks` answer is only given after the index caught
    /// up with packs other nodes stored.
    pub async fn locate_fresh(
        &self,
        repo: &RepoName,
        recipe: &Recipe,
    ) -> Result<Result<Located, FileError>, StorageError> {
        self.locate_fresh_in(repo, recipe, None).await
    }

    /// [`AppState::locate_fresh`] with the repository's usable packs already listed
    /// ([`AppState::usable_packs`], once for a whole registration batch); they are listed
    /// again after a refresh.
    pub async fn locate_fresh_in(
        &self,
        repo: &RepoName,
        recipe: &Recipe,
        readable: Option<&HashSet<PackId>>,
    ) -> Result<Result<Located, FileError>, StorageError> {
        let observed = Instant::now();
        let listed;
        let readable = match readable {
            Some(set) => set,
            None => {
                listed = self.usable_packs(repo).await?;
                &listed
            }
        };
        let locate =
            |readable: &HashSet<PackId>| crate::locate::locate_in(&self.index, recipe, readable);
        match locate(readable) {
            Err(e) if e.code == "missing_chunks" && self.config.index_refresh.is_some() => {
                self.refresh_index(observed).await?;
                let relisted = self.usable_packs(repo).await?;
                Ok(locate(&relisted))
            }
            other => Ok(other),
        }
    }

    /// The packs `repo` may read ([`crate::tenancy::repo_packs`]) less those recorded as
    /// damaged ([`crate::scrub`]): the only packs whose chunks are vouched for to `repo`
    /// (`chunks/exists`) or placed in its files (registration, Git LFS uploads). Two
    /// listings, neither depending on what other repositories store.
    pub async fn usable_packs(&self, repo: &RepoName) -> Result<HashSet<PackId>, StorageError> {
        let mut packs = crate::tenancy::repo_packs(&*self.storage, repo).await?;
        let damaged = crate::damage::damaged_packs(&*self.storage).await?;
        if !damaged.is_empty() {
            packs.retain(|p| !damaged.contains(p));
        }
        Ok(packs)
    }

    /// Writes the bytes of `pack` (already verified, or built by the server) unless an
    /// intact copy is stored: absent, it is created; present, the stored copy is compared
    /// with `bytes` (read in windows of [`crate::scrub::WINDOW_BYTES`]) and replaced,
    /// atomically, when it differs (damaged). A damage record of the pack is then
    /// cleared. Returns whether bytes were written. Callers hold a claim on the pack.
    pub async fn write_pack(&self, pack: &PackId, bytes: Bytes) -> Result<bool, StorageError> {
        let key = crate::keys::pack_key(pack);
        let recorded = self
            .storage
            .head(&crate::keys::damaged_key(pack))
            .await?
            .is_some();
        let written = match self.storage.head(&key).await? {
            None => {
                self.storage.put(&key, bytes).await?;
                true
            }
            Some(_) if crate::damage::stored_equals(&*self.storage, &key, &bytes).await? => {
                // Sent again (a retried push, or another repository's copy): whatever GC
                // thought of the stored pack, its clock starts over.
                crate::gc::touch(&*self.storage, pack).await?;
                false
            }
            Some(size) => {
                crate::gc::touch(&*self.storage, pack).await?;
                self.storage.put(&key, bytes).await?;
                tracing::warn!(%pack, stored_bytes = size, "replaced a damaged copy of a pack with verified bytes");
                true
            }
        };
        if recorded {
            crate::damage::clear_damage(&*self.storage, pack).await?;
            tracing::info!(%pack, "pack repaired: its damage record is cleared");
        }
        Ok(written)
    }

    /// Stores a pack whose content is already trusted (`entries` are its verified footer
    /// index: either `verify_pack` checked an upload, or the server built the pack itself)
    /// and makes its chunks visible in the index. Content-addressed: an intact stored
    /// copy is not written again, a damaged one is replaced ([`AppState::write_pack`]).
    /// Returns whether bytes were written.
    pub async fn store_pack(
        &self,
        pack: PackId,
        bytes: Bytes,
        entries: &[PackEntry],
    ) -> Result<bool, StorageError> {
        // Claimed, so that a failed Git LFS upload storing the same pack cannot delete it
        // between our check and the index update.
        self.claims.claim(pack).await;
        let stored = self.write_pack(&pack, bytes).await;
        let added = match &stored {
            Ok(_) => self.index.add_pack(pack, entries),
            Err(_) => 0,
        };
        self.claims.release(&pack).await;
        let created = stored?;
        tracing::info!(%pack, chunks = entries.len(), new_chunks = added, created, "pack stored");
        Ok(created)
    }

    /// Whether `repo` may read `pack`: it uploaded the pack or its files use it (see
    /// [`crate::tenancy`]). `GET packs` answers 404 otherwise.
    pub async fn may_read_pack(
        &self,
        repo: &RepoName,
        pack: &PackId,
    ) -> Result<bool, StorageError> {
        crate::tenancy::may_read(&*self.storage, repo, pack).await
    }

    /// A fresh id for a request: unique within this process, and unlikely to repeat
    /// across restarts thanks to the boot tag.
    pub fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:x}", self.request_tag)
    }
}

/// How often a node looks for packs GC deleted, to forget them in its index.
pub const GC_WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// Makes the index forget packs GC deleted (read from the condemned object, whose
/// tombstones last far longer than this interval): a node never offers a deleted pack's
/// chunks for long. Holds only a weak reference, so it ends with the state.
fn spawn_gc_watcher(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        loop {
            tokio::time::sleep(GC_WATCH_INTERVAL).await;
            let Some(state) = weak.upgrade() else { return };
            match crate::gc::recently_deleted(&*state.storage).await {
                Ok(deleted) => {
                    for (pack, at) in deleted {
                        if !seen.insert((pack, at)) {
                            continue;
                        }
                        // Stored again since? Then its chunks are there.
                        let there = matches!(
                            state.storage.head(&crate::keys::pack_key(&pack)).await,
                            Ok(Some(_))
                        );
                        if !there && state.index.remove_pack(&pack) {
                            tracing::info!(%pack, "forgot a pack GC deleted");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::error_chain(&e), "reading GC's deletions failed; retrying later")
                }
            }
        }
    });
}

/// Keeps the index of a node on shared storage current: refreshes every `interval`, and
/// soon after a lookup misses (at most every [`MISS_REFRESH_GAP`]). Holds only a weak
/// reference, so it ends with the state.
fn spawn_refresher(state: &Arc<AppState>, interval: Duration) {
    let weak = Arc::downgrade(state);
    let missed = state.index.miss_signal();
    tokio::spawn(async move {
        loop {
            let woken_by_miss = tokio::select! {
                () = missed.notified() => true,
                () = tokio::time::sleep(interval) => false,
            };
            let Some(state) = weak.upgrade() else { return };
            if let Err(e) = state.refresh_index(Instant::now()).await {
                tracing::warn!(error = %crate::error::error_chain(&e), "chunk index refresh failed; retrying later");
            }
            drop(state);
            if woken_by_miss {
                tokio::time::sleep(MISS_REFRESH_GAP).await;
            }
        }
    });
}

fn boot_tag() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_has_bounded_batches_and_file_slots() {
        let slots = WriterSlots::new(2);
        let first = slots.open_batch(2).expect("first batch");
        let second = slots.open_batch(2).expect("second batch");
        assert!(slots.open_batch(2).is_none(), "a third batch is refused");
        drop(first);
        let _third = slots.open_batch(2).expect("room again once one ends");
        drop(second);
        let a = slots.file().await;
        let _b = slots.file().await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), slots.file()).await;
        assert!(waiting.is_err(), "a third file waits for a slot");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), slots.file())
            .await
            .expect("a slot frees when a file is done");
    }

    #[test]
    fn data_dir_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        static ALL: [(&str, &str); 3] = [
            (DATA_DIR_ENV, "/srv/gm"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            default_data_dir(env(&ALL[..])),
            Some(PathBuf::from("/srv/gm"))
        );
        assert_eq!(
            default_data_dir(env(&ALL[1..])),
            Some(PathBuf::from("/xdg/git-model-server"))
        );
        assert_eq!(
            default_data_dir(env(&[("XDG_DATA_HOME", "rel"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.local/share/git-model-server"))
        );
        assert_eq!(
            default_data_dir(env(&[(DATA_DIR_ENV, ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/share/git-model-server"))
        );
        assert_eq!(default_data_dir(env(&[])), None);
    }

    /// Two server processes on one data directory, as two nodes on one bucket.
    async fn two_nodes(refresh: Duration) -> (tempfile::TempDir, Arc<AppState>, Arc<AppState>) {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
            config.index_refresh = Some(refresh);
            AppState::open_local(config)
        };
        let a = open().await.unwrap();
        let b = open().await.unwrap();
        (dir, a, b)
    }

    fn pack_of(chunks: &[&[u8]]) -> (PackId, Bytes, Vec<PackEntry>, Recipe) {
        use gitmodel_format::pack::encode_chunk;
        use gitmodel_format::{ChunkId, Oid, PackBuilder, RecipeChunk};
        let mut builder = PackBuilder::new();
        let mut file = Vec::new();
        for raw in chunks {
            let (codec, stored) = encode_chunk(raw);
            builder.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
            file.extend_from_slice(raw);
        }
        let (pack, bytes, entries) = builder.finish();
        let recipe = Recipe {
            chunker: 1,
            oid: Oid::of(&file),
            size: file.len() as u64,
            chunks: chunks
                .iter()
                .map(|raw| RecipeChunk {
                    id: ChunkId::of(raw),
                    raw_len: raw.len() as u32,
                })
                .collect(),
            segments: Vec::new(),
        };
        (pack, bytes.into(), entries, recipe)
    }

    #[tokio::test]
    async fn registration_on_another_node_refreshes_its_index_first() {
        // An interval far longer than the test: only the miss can make B look.
        let (_dir, a, b) = two_nodes(Duration::from_secs(3600)).await;
        let repo = RepoName::new("acme", "vision").unwrap();
        let (pack, bytes, entries, recipe) = pack_of(&[b"alpha", b"beta"]);
        a.store_pack(pack, bytes, &entries).await.unwrap();
        crate::tenancy::grant(a.storage(), &repo, [pack])
            .await
            .unwrap();
        assert!(!b.index().has_pack(&pack));
        let located = b.locate_fresh(&repo, &recipe).await.unwrap().unwrap();
        assert_eq!(located.recipe.segments[0].pack, pack);
        assert!(b.index().has_pack(&pack));

        // Still missing after a refresh: the negative answer stands.
        let (_, _, _, nowhere) = pack_of(&[b"gamma"]);
        let refused = b.locate_fresh(&repo, &nowhere).await.unwrap().unwrap_err();
        assert_eq!(refused.code, "missing_chunks");
    }

    #[tokio::test]
    async fn a_lookup_miss_makes_the_node_catch_up_in_the_background() {
        let (_dir, a, b) = two_nodes(Duration::from_secs(3600)).await;
        let (pack, bytes, entries, recipe) = pack_of(&[b"delta"]);
        a.store_pack(pack, bytes, &entries).await.unwrap();
        let id = recipe.chunks[0].id;
        assert!(!b.index().contains(&id), "B cannot know yet");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !b.index().has_pack(&pack) {
            assert!(
                Instant::now() < deadline,
                "B never caught up after its miss"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(b.index().contains(&id));
    }

    #[tokio::test]
    async fn a_refresh_that_started_after_a_miss_serves_it() {
        let (_dir, _a, b) = two_nodes(Duration::from_secs(3600)).await;
        let since = Instant::now();
        let (first, second) = tokio::join!(b.refresh_index(since), b.refresh_index(since));
        first.unwrap();
        second.unwrap();
        // The second waited for the first, which started after `since`, and reused it.
        let started = b.last_refresh.lock().await.unwrap();
        assert!(started >= since);
        // A caller whose miss predates the last refresh gets it for free.
        let before = Instant::now();
        b.refresh_index(since).await.unwrap();
        assert!(
            before.elapsed() < MIN_REFRESH_GAP,
            "no second refresh was needed"
        );
    }
}
