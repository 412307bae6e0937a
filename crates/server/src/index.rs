//! The in-memory chunk index: which pack holds each chunk, and where in it.
//!
//! [`ChunkIndex`] is only a cache of what the stored packs say about themselves (their
//! footer indexes): it is rebuilt from storage at startup by [`ChunkIndex::load`],
//! extended when a verified pack is uploaded, and caught up with packs that other server
//! processes stored in the same bucket by [`ChunkIndex::refresh`] (which reads only the
//! footers of packs it has not loaded yet). Losing it loses nothing. A lookup that misses
//! wakes whoever waits on [`ChunkIndex::miss_signal`] (the refresher of
//! [`crate::state::AppState`]). It does not verify packs (uploads are verified before they
//! are stored) and holds no chunk data. It knows
//! every pack a chunk is in, but not who may read which pack: callers filter with
//! [`ChunkIndex::get_many_where`] (see [`crate::tenancy`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use gitmodel_format::pack::{self, PackEntry, TRAILER_LEN};
use gitmodel_format::{ChunkId, PackId};
use tokio::sync::Notify;
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
/// object store (two small reads per pack, ~10–50 ms each), few enough not to flood it.
const LOAD_CONCURRENCY: usize = 64;

/// Distinct chunks looked up per acquisition of the index lock: a query of many ids
/// lets writers (and other readers' turns) in between slices, so no request holds the
/// lock for long whatever it asks.
const LOOKUP_SLICE: usize = 512;

/// Every known location of one chunk. Almost always one: a chunk is stored a second time
/// only when a repository that may not read its first pack uploads it too (see
/// [`crate::tenancy`]), and then each repository must find the copy it may read. One
/// writer can store the same chunk in any number of packs, so a chunk with several
/// locations also maps each pack to its position: a lookup for a repository costs the
/// smaller of the chunk's location count and the repository's pack count
/// ([`ChunkIndex::get_many_in`]), never another repository's pile of copies.
#[derive(Debug, Clone)]
enum Locations {
    One(Location),
    Many {
        list: Vec<Location>,
        /// Pack → position in `list`.
        by_pack: HashMap<PackId, u32>,
    },
}

impl Locations {
    fn as_slice(&self) -> &[Location] {
        match self {
            Locations::One(one) => std::slice::from_ref(one),
            Locations::Many { list, .. } => list,
        }
    }

    fn has_pack(&self, pack: &PackId) -> bool {
        match self {
            Locations::One(one) => one.pack == *pack,
            Locations::Many { by_pack, .. } => by_pack.contains_key(pack),
        }
    }

    fn push(&mut self, location: Location) {
        match self {
            Locations::One(one) => {
                let list = vec![*one, location];
                let by_pack = HashMap::from([(one.pack, 0), (location.pack, 1)]);
                *self = Locations::Many { list, by_pack };
            }
            Locations::Many { list, by_pack } => {
                let at = u32::try_from(list.len()).unwrap_or(u32::MAX);
                by_pack.entry(location.pack).or_insert(at);
                list.push(location);
            }
        }
    }

    /// The first location in a pack of `readable`, in
    /// `min(locations, readable.len())` set lookups.
    fn first_in(&self, readable: &HashSet<PackId>) -> Option<Location> {
        match self {
            Locations::One(one) => readable.contains(&one.pack).then_some(*one),
            Locations::Many { list, .. } if list.len() <= readable.len() => {
                list.iter().find(|l| readable.contains(&l.pack)).copied()
            }
            Locations::Many { list, by_pack } => readable
                .iter()
                .filter_map(|p| by_pack.get(p))
                .min()
                .map(|&at| list[at as usize]),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    chunks: HashMap<ChunkId, Locations>,
    packs: HashSet<PackId>,
    /// Packs found gone from storage (collected by GC): their locations stay in `chunks`
    /// (removing them would mean a scan of every chunk under the write lock) but no lookup
    /// returns them, until the same pack is stored again. Almost always empty.
    removed: HashSet<PackId>,
}

impl Inner {
    fn live<'a>(&'a self, locations: &'a Locations) -> impl Iterator<Item = &'a Location> {
        locations
            .as_slice()
            .iter()
            .filter(|l| self.removed.is_empty() || !self.removed.contains(&l.pack))
    }

    fn first(&self, id: &ChunkId) -> Option<Location> {
        self.chunks
            .get(id)
            .and_then(|l| self.live(l).next().copied())
    }
}

/// Chunk id → locations, shared by all requests.
#[derive(Debug, Default)]
pub struct ChunkIndex {
    map: RwLock<Inner>,
    /// Notified when a lookup finds a chunk missing (see [`ChunkIndex::miss_signal`]).
    missed: Arc<Notify>,
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
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a pack's entries (a pack already recorded is ignored). A chunk already
    /// known keeps its earlier locations first, so the locations of registered files stay
    /// stable. Returns how many chunks were new to the index.
    pub fn add_pack(&self, pack: PackId, entries: &[PackEntry]) -> usize {
        let mut inner = self.write();
        if !inner.packs.insert(pack) {
            return 0;
        }
        // Stored again after it was collected: its old locations (the same bytes, since
        // packs are content-addressed) are valid again and are not added twice below.
        inner.removed.remove(&pack);
        let mut added = 0;
        for (i, entry) in entries.iter().enumerate() {
            let Ok(index_in_pack) = u32::try_from(i) else {
                break;
            };
            let location = Location {
                pack,
                index_in_pack,
                entry: *entry,
            };
            match inner.chunks.get_mut(&entry.id) {
                // A pack listing one chunk twice keeps its first record.
                Some(known) if known.has_pack(&pack) => {}
                Some(known) => known.push(location),
                None => {
                    inner.chunks.insert(entry.id, Locations::One(location));
                    added += 1;
                }
            }
        }
        added
    }

    /// Whether `pack` is recorded (it is stored and its chunks are visible).
    pub fn has_pack(&self, pack: &PackId) -> bool {
        self.read().packs.contains(pack)
    }

    /// Forgets a pack that is gone from storage (GC deleted it): no lookup returns its
    /// chunks until it is added again. Returns whether it was recorded.
    pub fn remove_pack(&self, pack: &PackId) -> bool {
        let mut inner = self.write();
        let had = inner.packs.remove(pack);
        if had {
            inner.removed.insert(*pack);
        }
        had
    }

    /// The first location of a chunk, whatever the pack.
    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        let found = self.read().first(id);
        self.note_miss(found.is_none());
        found
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        let found = self.read().first(id).is_some();
        self.note_miss(!found);
        found
    }

    fn note_miss(&self, missed: bool) {
        if missed {
            // Stores one permit when nobody waits: the next wait returns at once.
            self.missed.notify_one();
        }
    }

    /// Notified (at most one stored permit) whenever a lookup misses: on storage shared
    /// by several servers, a miss may mean another server stored the chunk.
    pub fn miss_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.missed)
    }

    /// How many packs the index has loaded.
    pub fn pack_count(&self) -> usize {
        self.read().packs.len()
    }

    /// Every location of a chunk.
    pub fn locations(&self, id: &ChunkId) -> Vec<Location> {
        let inner = self.read();
        inner
            .chunks
            .get(id)
            .map(|l| inner.live(l).copied().collect())
            .unwrap_or_default()
    }

    /// First locations of many chunks under one lock acquisition, whatever the pack.
    pub fn get_many<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ChunkId>,
    ) -> Vec<Option<Location>> {
        self.get_many_where(ids, |_| true)
    }

    /// For each chunk, its first location in a pack that `usable` accepts. Scans every
    /// location of each distinct chunk asked for: for a repository's lookups use
    /// [`ChunkIndex::get_many_in`], whose cost does not grow with copies it cannot read.
    pub fn get_many_where<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ChunkId>,
        usable: impl Fn(&PackId) -> bool,
    ) -> Vec<Option<Location>> {
        self.lookup(ids, |locations, removed| {
            locations
                .as_slice()
                .iter()
                .find(|l| usable(&l.pack) && !removed.contains(&l.pack))
                .copied()
        })
    }

    /// For each chunk, its first location in a pack of `readable` (the packs a
    /// repository may read, [`crate::tenancy::repo_packs`]). Each distinct chunk is
    /// looked up once per call, in at most `min(its locations, readable.len())` set
    /// lookups, and the lock is taken per [`LOOKUP_SLICE`] distinct chunks.
    pub fn get_many_in<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ChunkId>,
        readable: &HashSet<PackId>,
    ) -> Vec<Option<Location>> {
        self.lookup(ids, |locations, removed| match removed.is_empty() {
            true => locations.first_in(readable),
            // Collected packs exist only between a GC run and the next restart: the plain
            // scan then, which skips them.
            false => locations
                .as_slice()
                .iter()
                .find(|l| readable.contains(&l.pack) && !removed.contains(&l.pack))
                .copied(),
        })
    }

    /// Answers `pick` once per distinct id, a slice of ids per lock acquisition.
    fn lookup<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ChunkId>,
        pick: impl Fn(&Locations, &HashSet<PackId>) -> Option<Location>,
    ) -> Vec<Option<Location>> {
        let ids: Vec<&ChunkId> = ids.into_iter().collect();
        let mut answers: HashMap<&ChunkId, Option<Location>> = HashMap::new();
        let mut distinct: Vec<&ChunkId> = Vec::new();
        for id in &ids {
            if let std::collections::hash_map::Entry::Vacant(v) = answers.entry(*id) {
                v.insert(None);
                distinct.push(id);
            }
        }
        for slice in distinct.chunks(LOOKUP_SLICE) {
            let inner = self.read();
            for id in slice {
                let found = inner.chunks.get(*id).and_then(|l| pick(l, &inner.removed));
                answers.insert(id, found);
            }
        }
        let found: Vec<Option<Location>> = ids.iter().map(|id| answers[id]).collect();
        self.note_miss(found.iter().any(Option::is_none));
        found
    }

    /// Number of distinct chunks.
    pub fn len(&self) -> usize {
        self.read().chunks.len()
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
        let stats = index.refresh(storage).await?;
        Ok((index, stats))
    }

    /// Adds the packs in `storage` that the index has not loaded yet (stored by another
    /// server process on the same storage, or skipped earlier): one listing, then two
    /// range reads per new pack, as in [`ChunkIndex::load`]. `stats` counts only the new
    /// packs.
    pub async fn refresh(&self, storage: Arc<dyn Storage>) -> Result<LoadStats, StorageError> {
        let index = self;
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
                if index.has_pack(&pack) {
                    continue;
                }
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
        Ok(stats)
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
        // "two" is in both packs; each copy can be asked for.
        let two = ChunkId::of(b"two");
        let mut in_packs: Vec<PackId> = index.locations(&two).iter().map(|l| l.pack).collect();
        in_packs.sort_by_key(|p| p.0);
        let mut want = vec![p1, p2];
        want.sort_by_key(|p| p.0);
        assert_eq!(in_packs, want);
        for pack in [p1, p2] {
            let got = index.get_many_where([&two], |p| *p == pack);
            assert_eq!(got[0].map(|l| l.pack), Some(pack));
        }
        assert_eq!(index.get_many_where([&two], |_| false), vec![None]);
        assert!(index.has_pack(&p1) && !index.has_pack(&junk));
        // Recording a pack again changes nothing.
        let (_, _, entries1) = pack_of(&[b"one", b"two"]);
        assert_eq!(index.add_pack(p1, &entries1), 0);
        assert_eq!(index.locations(&ChunkId::of(b"one")).len(), 1);
    }

    #[test]
    fn lookups_in_a_pack_set_find_the_first_readable_copy() {
        let index = ChunkIndex::new();
        let raw = b"shared";
        let (codec, stored) = encode_chunk(raw);
        let mut packs = Vec::new();
        for i in 0..50u32 {
            let mut b = PackBuilder::new();
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
            let other = i.to_le_bytes();
            let (c2, s2) = encode_chunk(&other);
            b.push(ChunkId::of(&other), 4, c2, &s2);
            let (pack, _, entries) = b.finish();
            index.add_pack(pack, &entries);
            packs.push(pack);
        }
        let id = ChunkId::of(raw);
        // Fewer readable packs than copies, and more: the same first copy either way.
        let few: HashSet<PackId> = [packs[7], packs[30]].into();
        assert_eq!(index.get_many_in([&id], &few)[0].unwrap().pack, packs[7]);
        let mut many: HashSet<PackId> = (0..100u8).map(|i| PackId([i; 32])).collect();
        many.insert(packs[42]);
        many.insert(packs[44]);
        assert_eq!(index.get_many_in([&id], &many)[0].unwrap().pack, packs[42]);
        assert_eq!(index.get_many_in([&id], &HashSet::new()), vec![None]);
        // Repeated ids are answered alike, in order.
        let missing = ChunkId::of(b"missing");
        let got = index.get_many_in([&id, &missing, &id], &few);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], got[2]);
        assert_eq!(got[1], None);
    }

    #[tokio::test]
    async fn load_of_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(dir.path()).unwrap());
        let (index, stats) = ChunkIndex::load(storage).await.unwrap();
        assert!(index.is_empty());
        assert_eq!(stats, LoadStats::default());
    }

    #[tokio::test]
    async fn refresh_reads_only_new_packs_and_misses_are_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(dir.path()).unwrap());
        let (p1, bytes1, _) = pack_of(&[b"one", b"two"]);
        storage
            .put(&keys::pack_key(&p1), bytes1.into())
            .await
            .unwrap();
        let (index, _) = ChunkIndex::load(Arc::clone(&storage)).await.unwrap();
        let signal = index.miss_signal();
        assert!(index.contains(&ChunkId::of(b"one")));
        // Another process stores a pack: a lookup misses and says so.
        let (p2, bytes2, _) = pack_of(&[b"two", b"three"]);
        storage
            .put(&keys::pack_key(&p2), bytes2.into())
            .await
            .unwrap();
        assert_eq!(index.get_many([&ChunkId::of(b"three")]), vec![None]);
        tokio::time::timeout(std::time::Duration::from_secs(1), signal.notified())
            .await
            .expect("a miss is signalled");
        let stats = index.refresh(Arc::clone(&storage)).await.unwrap();
        assert_eq!((stats.packs, stats.chunks), (1, 1));
        assert_eq!(index.get(&ChunkId::of(b"three")).unwrap().pack, p2);
        // Nothing new: nothing read.
        let again = index.refresh(storage).await.unwrap();
        assert_eq!(again, LoadStats::default());
        assert_eq!(index.pack_count(), 2);
    }
}
