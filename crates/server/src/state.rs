//! [`AppState`]: what every request shares (storage, chunk index, authorizer, limits), and
//! [`ServerConfig`], the knobs it is built from.
//!
//! It owns no sockets: [`crate::server::serve`] runs the HTTP side over an `Arc<AppState>`.
//! Every pack enters storage and the chunk index through [`AppState::store_pack`], whether
//! a client uploaded it whole (native API) or the server built it from a Git LFS upload.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gitmodel_format::{PackEntry, PackId};
use gitmodel_proto::RepoName;
use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::auth::{AllowAll, Authorizer};
use crate::index::ChunkIndex;
use crate::storage::{LocalDir, Storage, StorageError};

/// Address the server listens on when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "GIT_MODEL_SERVER_DATA";

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

/// State shared by all requests.
pub struct AppState {
    storage: Arc<dyn Storage>,
    index: ChunkIndex,
    authorizer: Arc<dyn Authorizer>,
    verify_permits: Arc<Semaphore>,
    /// Serializes Git LFS lock mutations (check-then-write) within this process.
    lock_mutations: Mutex<()>,
    config: ServerConfig,
    request_tag: u32,
    request_counter: AtomicU64,
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
        let (index, stats) = ChunkIndex::load(Arc::clone(&storage)).await?;
        tracing::info!(
            packs = stats.packs,
            chunks = stats.chunks,
            skipped = stats.skipped,
            ms = started.elapsed().as_millis() as u64,
            "chunk index loaded"
        );
        Ok(Arc::new(AppState {
            storage,
            index,
            authorizer,
            verify_permits: Arc::new(Semaphore::new(config.verify_concurrency.max(1))),
            lock_mutations: Mutex::new(()),
            config,
            request_tag: boot_tag(),
            request_counter: AtomicU64::new(0),
        }))
    }

    /// The usual server: [`LocalDir`] storage at `config.data_dir`, every request allowed.
    pub async fn open_local(config: ServerConfig) -> Result<Arc<AppState>, StorageError> {
        let storage = LocalDir::open(&config.data_dir)?;
        AppState::open(Arc::new(storage), Arc::new(AllowAll), config).await
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
    pub(crate) async fn verify_permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.verify_permits)
            .acquire_owned()
            .await
            .expect("the verification semaphore is never closed")
    }

    /// Held while a Git LFS lock is created or removed (see [`crate::locks`]).
    pub(crate) async fn lock_mutations(&self) -> MutexGuard<'_, ()> {
        self.lock_mutations.lock().await
    }

    /// Stores a pack whose content is already trusted (`entries` are its verified footer
    /// index: either `verify_pack` checked an upload, or the server built the pack itself)
    /// and makes its chunks visible in the index. Content-addressed: an existing pack with
    /// this id has exactly these bytes, so it is not written again. Returns whether the
    /// pack was new.
    pub async fn store_pack(
        &self,
        pack: PackId,
        bytes: Bytes,
        entries: &[PackEntry],
    ) -> Result<bool, StorageError> {
        let key = crate::keys::pack_key(&pack);
        let created = if self.storage.head(&key).await?.is_some() {
            false
        } else {
            self.storage.put(&key, bytes).await?;
            true
        };
        let added = self.index.add_pack(pack, entries);
        tracing::info!(%pack, chunks = entries.len(), new_chunks = added, created, "pack stored");
        Ok(created)
    }

    /// Whether `repo` may read `pack`. Every pack is readable by every repository today;
    /// when packs become restricted to the repositories that reference them, this is the
    /// one place to change (GET pack and, later, `chunks/exists` and registration go
    /// through it).
    pub async fn may_read_pack(
        &self,
        repo: &RepoName,
        pack: &PackId,
    ) -> Result<bool, StorageError> {
        let _ = (repo, pack);
        Ok(true)
    }

    /// A fresh id for a request: unique within this process, and unlikely to repeat
    /// across restarts thanks to the boot tag.
    pub fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:x}", self.request_tag)
    }
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
}
