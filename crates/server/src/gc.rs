//! Server garbage collection: finding packs no registered file uses and removing them,
//! safely, in two passes.
//!
//! The live set is every pack named by a segment of a recipe of any repository. A pack
//! outside it is not deleted at once: the first run records it as a *candidate* (in
//! `gc/candidates.json`, with the time it was first seen unreferenced), and a later run
//! deletes it only if it is still unreferenced after the grace period. An upload in
//! progress (packs stored, files not yet registered) therefore survives any run: its
//! registration makes the packs live long before the grace period ends. The two passes
//! need no timestamps from the store, so they work the same on a directory and a bucket.
//!
//! Deleting a file from a repository (so its packs can go) is removing its recipe. Run GC
//! while no server serves the store, or restart the servers afterwards: a running server's
//! chunk index would still list the deleted packs' chunks.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gitmodel_format::{PackId, Recipe};

use crate::keys;
use crate::storage::{Storage, StorageError};

/// Where candidates are remembered between runs.
pub const CANDIDATES_KEY: &str = "gc/candidates.json";

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
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One GC pass over `storage` at time `now`; nothing is changed when `dry_run`.
pub async fn collect(
    storage: &dyn Storage,
    grace_secs: u64,
    now: SystemTime,
    dry_run: bool,
) -> Result<GcReport, StorageError> {
    let mut report = GcReport::default();
    let mut live: HashSet<PackId> = HashSet::new();
    let repo_keys = storage.list("repos/").await?;
    for key in &repo_keys {
        if keys::parse_recipe_key(key).is_none() {
            continue;
        }
        match Recipe::decode(&storage.get(key).await?) {
            Ok(r) => live.extend(r.segments.iter().map(|s| s.pack)),
            Err(e) => {
                // An unreadable recipe could name any pack: keep everything.
                tracing::error!(key, error = %e, "unreadable recipe; nothing will be deleted");
                report.recipes_unreadable += 1;
            }
        }
    }
    let packs: Vec<PackId> = storage
        .list("packs/")
        .await?
        .iter()
        .filter_map(|k| keys::parse_pack_key(k))
        .collect();
    report.packs = packs.len();
    report.live = packs.iter().filter(|p| live.contains(p)).count();

    let previous: BTreeMap<String, u64> = match storage.get(CANDIDATES_KEY).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(StorageError::NotFound { .. }) => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let now_s = unix(now);
    let mut candidates = BTreeMap::new();
    for pack in packs.iter().filter(|p| !live.contains(p)) {
        let hex = pack.to_hex();
        let first_seen = previous.get(&hex).copied().unwrap_or(now_s);
        if report.recipes_unreadable == 0
            && now_s.saturating_sub(first_seen) >= grace_secs
            && previous.contains_key(&hex)
        {
            let key = keys::pack_key(pack);
            report.bytes_freed += storage.head(&key).await?.unwrap_or(0);
            report.deleted.push(*pack);
            if !dry_run {
                storage.delete(&key).await?;
                for ref_key in repo_keys
                    .iter()
                    .filter(|k| keys::parse_pack_ref_key(k) == Some(*pack))
                {
                    storage.delete(ref_key).await?;
                }
            }
        } else {
            report.waiting += 1;
            candidates.insert(hex, first_seen);
        }
    }
    if !dry_run {
        let body = serde_json::to_vec(&candidates).expect("a map of strings to numbers");
        storage.put(CANDIDATES_KEY, Bytes::from(body)).await?;
    }
    Ok(report)
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

    async fn put_pack(s: &LocalDir, data: &[u8]) -> (PackId, u64, u32) {
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
    async fn put_recipe(s: &LocalDir, data: &[u8], pack: PackId, len: u64, raw: u32) {
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
        let r = collect(&s, 3600, t0, false).await.unwrap();
        assert_eq!((r.packs, r.live, r.waiting, r.deleted.len()), (2, 1, 1, 0));
        // Within the grace period: still waiting.
        let r = collect(&s, 3600, t0 + Duration::from_secs(60), false)
            .await
            .unwrap();
        assert!(r.deleted.is_empty());
        // A dry run after the grace period says what would go and deletes nothing.
        let later = t0 + Duration::from_secs(7200);
        let r = collect(&s, 3600, later, true).await.unwrap();
        assert_eq!(r.deleted, vec![dead]);
        assert!(s.head(&keys::pack_key(&dead)).await.unwrap().is_some());
        let r = collect(&s, 3600, later, false).await.unwrap();
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
        collect(&s, 3600, t0, false).await.unwrap();
        put_recipe(&s, b"uploaded, registration pending", pack, len, raw).await;
        let r = collect(&s, 3600, t0 + Duration::from_secs(7200), false)
            .await
            .unwrap();
        assert!(r.deleted.is_empty());
        assert_eq!(r.live, 1);
    }
}
