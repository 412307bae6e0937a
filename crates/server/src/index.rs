//! The in-memory chunk index: which pack holds each chunk, and where in it.
//!
//! [`ChunkIndex`] is only a cache of what the stored packs say about themselves (their
//! footer indexes): it is rebuilt from storage at startup by [`ChunkIndex::load`] and
//! extended when a verified pack is uploaded. Losing it loses nothing. It does not verify
//! packs (uploads are verified before they are stored) and holds no chunk data.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use gitmodel_format::pack::{self, PackEntry, TRAILER_LEN};
use gitmodel_format::{ChunkId, PackId};
use tokio::task::JoinSet;

use crate::keys;
use crate::storage::{Storage, StorageError};

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    /// Position of the chunk's record among the pack's records.
    pub index_in_pack: u32,
    pub entry: PackEntry,
}

/// How many packs' indexes are read at once at startup: enough to hide the latency of an
/// object store, few enough not to flood it.
const LOAD_CONCURRENCY: usize = 16;

/// Chunk id → location, shared by all requests.
#[derive(Debug, Default)]
pub struct ChunkIndex {
    map: RwLock<HashMap<ChunkId, Location>>,
}

/// What [`ChunkIndex::load`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub packs: usize,
    pub chunks: usize,
    /// Packs whose footer could not be read or parsed; logged and left out.
    pub skipped: usize,
}

impl ChunkIndex {
    pub fn new() -> Self {
        Self::default()
    }

    // A panic elsewhere while holding the lock cannot leave the map half-updated in a way
    // that matters (inserts are independent), so a poisoned lock is simply taken over.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ChunkId, Location>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ChunkId, Location>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a pack's entries. A chunk already known keeps its first location, so the
    /// locations of registered files stay stable. Returns how many chunks were new.
    pub fn add_pack(&self, pack: PackId, entries: &[PackEntry]) -> usize {
        let mut map = self.write();
        let mut added = 0;
        for (i, entry) in entries.iter().enumerate() {
            let Ok(index_in_pack) = u32::try_from(i) else {
                break;
            };
            map.entry(entry.id).or_insert_with(|| {
                added += 1;
                Location {
                    pack,
                    index_in_pack,
                    entry: *entry,
                }
            });
        }
        added
    }

    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        self.read().get(id).copied()
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.read().contains_key(id)
    }

    /// Locations of many chunks under one lock acquisition.
    pub fn get_many<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ChunkId>,
    ) -> Vec<Option<Location>> {
        let map = self.read();
        ids.into_iter().map(|id| map.get(id).copied()).collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the index from every pack in `storage`, reading only each pack's trailer and
    /// footer index (two range reads per pack). A pack whose footer is unreadable is
    /// logged and skipped rather than failing startup: its chunks then look absent, and
    /// clients upload them again. Storage errors on the listing itself are fatal.
    pub async fn load(storage: Arc<dyn Storage>) -> Result<(ChunkIndex, LoadStats), StorageError> {
        let index = ChunkIndex::new();
        let mut stats = LoadStats::default();
        let mut keys = storage.list(keys::PACKS_PREFIX).await?.into_iter();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < LOAD_CONCURRENCY {
                let Some(key) = keys.next() else { break };
                let Some(pack) = keys::parse_pack_key(&key) else {
                    tracing::warn!(key, "ignoring a file under packs/ that is not a pack key");
                    continue;
                };
                let storage = Arc::clone(&storage);
                tasks.spawn(async move {
                    let result = read_footer(&*storage, &key).await;
                    (pack, key, result)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok((pack, _, Ok(entries))) => {
                    stats.packs += 1;
                    stats.chunks += index.add_pack(pack, &entries);
                }
                Ok((_, key, Err(e))) => {
                    stats.skipped += 1;
                    tracing::warn!(key, error = %crate::error::error_chain(&e), "skipping a pack whose index cannot be read");
                }
                Err(e) => {
                    stats.skipped += 1;
                    tracing::error!(error = %e, "index loading task failed");
                }
            }
        }
        Ok((index, stats))
    }
}

/// Why a stored pack's footer could not be used.
#[derive(Debug, thiserror::Error)]
enum FooterError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("pack vanished during the listing")]
    Vanished,
    #[error(transparent)]
    Pack(#[from] pack::PackError),
}

async fn read_footer(storage: &dyn Storage, key: &str) -> Result<Vec<PackEntry>, FooterError> {
    let size = storage.head(key).await?.ok_or(FooterError::Vanished)?;
    if size < pack::HEADER_LEN + TRAILER_LEN {
        return Err(pack::PackError::Malformed {
            what: format!("only {size} bytes"),
        }
        .into());
    }
    let trailer_at = size - TRAILER_LEN;
    let trailer = storage.get_range(key, trailer_at..size).await?;
    let (index_offset, _count) = pack::parse_trailer(&trailer, size)?;
    let index = storage.get_range(key, index_offset..trailer_at).await?;
    Ok(pack::parse_index(&index, index_offset)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;
    use bytes::Bytes;
    use gitmodel_format::pack::{encode_chunk, PackBuilder};

    fn pack_of(chunks: &[&[u8]]) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for raw in chunks {
            let (codec, stored) = encode_chunk(raw);
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        }
        b.finish()
    }

    #[tokio::test]
    async fn load_reads_footers_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(dir.path()).unwrap());
        let (p1, bytes1, _) = pack_of(&[b"one", b"two"]);
        let (p2, bytes2, _) = pack_of(&[b"two", b"three"]);
        storage
            .put(&keys::pack_key(&p1), bytes1.into())
            .await
            .unwrap();
        storage
            .put(&keys::pack_key(&p2), bytes2.into())
            .await
            .unwrap();
        let junk = PackId([7; 32]);
        storage
            .put(
                &keys::pack_key(&junk),
                Bytes::from_static(b"not a pack at all, sorry!!!!!!!!!!!!!!!!!"),
            )
            .await
            .unwrap();
        storage.put("packs/zz/stray", Bytes::new()).await.unwrap();

        let (index, stats) = ChunkIndex::load(storage).await.unwrap();
        assert_eq!(stats.packs, 2);
        assert_eq!(stats.skipped, 1);
        assert_eq!(stats.chunks, 3);
        assert_eq!(index.len(), 3);
        let three = index.get(&ChunkId::of(b"three")).unwrap();
        assert_eq!(three.pack, p2);
        assert_eq!(three.index_in_pack, 1);
        assert!(index.contains(&ChunkId::of(b"one")));
        assert!(!index.contains(&ChunkId::of(b"four")));
    }

    #[tokio::test]
    async fn load_of_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(dir.path()).unwrap());
        let (index, stats) = ChunkIndex::load(storage).await.unwrap();
        assert!(index.is_empty());
        assert_eq!(stats, LoadStats::default());
    }
}
