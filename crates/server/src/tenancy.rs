//! Isolation between repositories: which packs each repository may read, and the
//! bookkeeping of packs whose storage is still in flight.
//!
//! Packs are stored once for the whole server (content-addressed), but a repository may
//! only *read* the packs it has a `.ref` record for ([`keys::pack_ref_key`]): packs it
//! uploaded itself (`PUT packs`, or packs the server built from its Git LFS uploads), and
//! packs its registered files use. Everything that reveals whether a chunk exists goes
//! through those records: `chunks/exists` answers 1 only for chunks in readable packs,
//! `GET packs` answers 404 for unreadable ones, and registration and Git LFS uploads
//! only place chunks in readable packs. So a repository learns nothing about chunks it
//! did not upload itself, even by guessing their ids. The cost: a chunk that two
//! repositories both upload is stored in both their packs (identical packs are still
//! stored once). `docs/security.md` has the reasoning.
//!
//! The records live in storage, not in memory ([`repo_packs`] lists them), so they are
//! always current, survive restarts, and work the same on every [`Storage`] backend. [`upgrade`] writes them once for data directories from before
//! they existed.
//!
//! [`PackClaims`]: a count of the requests that are storing each pack right now. Git LFS
//! uploads store packs before they know whether the whole object is what the client
//! claimed; a failed upload deletes the packs it stored unless another request claims or
//! has indexed them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use gitmodel_format::{PackId, Recipe};
use gitmodel_proto::RepoName;
use tokio::task::JoinSet;

use crate::index::ChunkIndex;
use crate::keys;
use crate::storage::{Storage, StorageError};

/// Storage requests a check or grant runs at once.
const CONCURRENCY: usize = 16;

/// Every pack `repo` may read. One listing of the repository's records, whatever the
/// question: the cost of answering must not depend on what *other* repositories store,
/// or its timing would tell.
pub async fn repo_packs(
    storage: &dyn Storage,
    repo: &RepoName,
) -> Result<HashSet<PackId>, StorageError> {
    Ok(storage
        .list(&keys::pack_refs_prefix(repo))
        .await?
        .iter()
        .filter_map(|key| keys::parse_pack_ref_key(key))
        .collect())
}

/// Whether `repo` may read `pack`.
pub async fn may_read(
    storage: &dyn Storage,
    repo: &RepoName,
    pack: &PackId,
) -> Result<bool, StorageError> {
    Ok(storage
        .head(&keys::pack_ref_key(repo, pack))
        .await?
        .is_some())
}

/// Records that `repo` may read `packs`. Idempotent; records that exist are not
/// written again.
pub async fn grant(
    storage: &Arc<dyn Storage>,
    repo: &RepoName,
    packs: impl IntoIterator<Item = PackId>,
) -> Result<(), StorageError> {
    let mut pending = packs.into_iter().collect::<HashSet<_>>().into_iter();
    let mut tasks = JoinSet::new();
    let mut missing = Vec::new();
    loop {
        while tasks.len() < CONCURRENCY {
            let Some(pack) = pending.next() else { break };
            let storage = Arc::clone(storage);
            let key = keys::pack_ref_key(repo, &pack);
            tasks.spawn(async move {
                let absent = storage.head(&key).await?.is_none();
                Ok::<_, StorageError>(absent.then_some(key))
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        missing.extend(joined.map_err(|e| task_failed(&e))??);
    }
    let records = missing.into_iter().map(|key| (key, Bytes::new())).collect();
    storage.put_many(records).await
}

fn task_failed(e: &tokio::task::JoinError) -> StorageError {
    StorageError::Io {
        key: String::new(),
        source: std::io::Error::other(format!("storage task failed: {e}")),
    }
}

/// Once per data directory: gives every repository a record for each pack its
/// registered files use (data from before the records existed). Returns how many
/// recipes were read (0 when already done).
pub async fn upgrade(storage: &Arc<dyn Storage>) -> Result<usize, StorageError> {
    if storage.head(keys::PACK_REFS_DONE_KEY).await?.is_some() {
        return Ok(0);
    }
    let mut recipes = 0;
    for key in storage.list(keys::REPOS_PREFIX).await? {
        let Some((repo, oid)) = keys::parse_recipe_key(&key) else {
            continue;
        };
        let bytes = storage.get(&key).await?;
        match Recipe::decode(&bytes) {
            Ok(recipe) => {
                grant(storage, &repo, recipe.segments.iter().map(|s| s.pack)).await?;
                recipes += 1;
            }
            Err(e) => tracing::warn!(%repo, %oid, error = %e, "skipping an unreadable recipe"),
        }
    }
    storage
        .put(keys::PACK_REFS_DONE_KEY, Bytes::from_static(b"1\n"))
        .await?;
    if recipes > 0 {
        tracing::info!(recipes, "recorded which packs each repository may read");
    }
    Ok(recipes)
}

/// Packs that requests are storing right now, and how many requests each.
#[derive(Debug, Default)]
pub struct PackClaims {
    counts: tokio::sync::Mutex<HashMap<PackId, usize>>,
}

impl PackClaims {
    /// Marks `pack` as being stored by one more request: it will not be discarded until
    /// that request [`release`](PackClaims::release)s it.
    pub async fn claim(&self, pack: PackId) {
        *self.counts.lock().await.entry(pack).or_insert(0) += 1;
    }

    pub async fn release(&self, pack: &PackId) {
        let mut counts = self.counts.lock().await;
        release_one(&mut counts, pack);
    }

    /// Releases `pack` and deletes it from storage when nobody else claims it and the
    /// index does not know it (no request stored it for good). Returns whether it was
    /// deleted. The deletion runs under the lock, so a request claiming the pack
    /// meanwhile waits, then finds it absent and stores it again.
    pub async fn release_and_discard(
        &self,
        pack: &PackId,
        index: &ChunkIndex,
        storage: &dyn Storage,
    ) -> Result<bool, StorageError> {
        let mut counts = self.counts.lock().await;
        release_one(&mut counts, pack);
        if counts.contains_key(pack) || index.has_pack(pack) {
            return Ok(false);
        }
        storage.delete(&keys::pack_key(pack)).await?;
        Ok(true)
    }
}

fn release_one(counts: &mut HashMap<PackId, usize>, pack: &PackId) {
    if let Some(n) = counts.get_mut(pack) {
        *n -= 1;
        if *n == 0 {
            counts.remove(pack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;
    use gitmodel_format::{ChunkId, Oid};

    fn storage() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(dir.path()).unwrap());
        (dir, storage)
    }

    #[tokio::test]
    async fn grants_are_per_repository() {
        let (_dir, storage) = storage();
        let a = RepoName::new("acme", "a").unwrap();
        let b = RepoName::new("other", "b").unwrap();
        let (p1, p2) = (PackId([1; 32]), PackId([2; 32]));
        grant(&storage, &a, [p1, p2, p1]).await.unwrap();
        grant(&storage, &a, [p1]).await.unwrap();
        grant(&storage, &b, [p2]).await.unwrap();
        assert_eq!(
            repo_packs(&*storage, &a).await.unwrap(),
            HashSet::from([p1, p2])
        );
        assert_eq!(
            repo_packs(&*storage, &b).await.unwrap(),
            HashSet::from([p2])
        );
        let nobody = RepoName::new("no", "body").unwrap();
        assert!(repo_packs(&*storage, &nobody).await.unwrap().is_empty());
        assert!(may_read(&*storage, &b, &p2).await.unwrap());
        assert!(!may_read(&*storage, &b, &p1).await.unwrap());
    }

    #[tokio::test]
    async fn upgrade_grants_the_packs_of_existing_recipes_once() {
        let (_dir, storage) = storage();
        let repo = RepoName::new("acme", "old").unwrap();
        let mut builder = gitmodel_format::PackBuilder::new();
        let (codec, stored) = gitmodel_format::pack::encode_chunk(b"x");
        builder.push(ChunkId::of(b"x"), 1, codec, &stored);
        let (pack, _, entries) = builder.finish();
        let index = ChunkIndex::new();
        index.add_pack(pack, &entries);
        let unlocated = Recipe {
            chunker: 1,
            oid: Oid::of(b"x"),
            size: 1,
            chunks: vec![gitmodel_format::RecipeChunk {
                id: ChunkId::of(b"x"),
                raw_len: 1,
            }],
            segments: Vec::new(),
        };
        let recipe = crate::register::locate(&index, &unlocated, |_| true)
            .unwrap()
            .recipe;
        storage
            .put(
                &keys::recipe_key(&repo, &recipe.oid),
                recipe.encode().into(),
            )
            .await
            .unwrap();
        assert_eq!(upgrade(&storage).await.unwrap(), 1);
        assert!(may_read(&*storage, &repo, &pack).await.unwrap());
        assert_eq!(upgrade(&storage).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn claimed_or_indexed_packs_are_not_discarded() {
        let (_dir, storage) = storage();
        let index = ChunkIndex::new();
        let claims = PackClaims::default();
        let pack = PackId([9; 32]);
        let key = keys::pack_key(&pack);
        storage.put(&key, Bytes::from_static(b"p")).await.unwrap();
        claims.claim(pack).await;
        claims.claim(pack).await;
        assert!(!claims
            .release_and_discard(&pack, &index, &*storage)
            .await
            .unwrap());
        assert!(storage.head(&key).await.unwrap().is_some());
        index.add_pack(pack, &[]);
        claims.claim(pack).await;
        claims.release(&pack).await;
        assert!(!claims
            .release_and_discard(&pack, &index, &*storage)
            .await
            .unwrap());
        let other = PackId([8; 32]);
        storage
            .put(&keys::pack_key(&other), Bytes::from_static(b"q"))
            .await
            .unwrap();
        claims.claim(other).await;
        assert!(claims
            .release_and_discard(&other, &index, &*storage)
            .await
            .unwrap());
        assert_eq!(storage.head(&keys::pack_key(&other)).await.unwrap(), None);
    }
}
