//! Records of damaged packs (`damaged/<ab>/<pack>.json`): written when a scrub or a
//! `files/verify` finds a pack damaged ([`crate::scrub`]), read by every answer that
//! vouches for chunks or files, cleared when a client uploads the pack again and its
//! bytes verify ([`crate::state::AppState::write_pack`]). Storage-level only, below the
//! state and the handlers.

use std::collections::HashSet;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gitmodel_format::PackId;

use crate::keys;
use crate::storage::{Storage, StorageError, READ_WINDOW_BYTES as WINDOW_BYTES};

/// What a damage record holds (`docs/json.md` shape, informative only: the key is the
/// record).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DamageRecord {
    pub pack: String,
    pub what: String,
    /// `scrub` or `files/verify`.
    pub found_by: String,
    /// Unix seconds.
    pub found_at: u64,
}

/// Records durably that `pack` is damaged.
pub async fn record_damage(
    storage: &dyn Storage,
    pack: &PackId,
    what: &str,
    found_by: &str,
) -> Result<(), StorageError> {
    let record = DamageRecord {
        pack: pack.to_hex(),
        what: what.to_string(),
        found_by: found_by.to_string(),
        found_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    storage.put(&keys::damaged_key(pack), bytes.into()).await?;
    tracing::error!(%pack, what, found_by, "pack recorded as damaged: no longer vouched for");
    Ok(())
}

/// Removes the damage record of `pack` (absent: nothing to do).
pub async fn clear_damage(storage: &dyn Storage, pack: &PackId) -> Result<(), StorageError> {
    storage.delete(&keys::damaged_key(pack)).await
}

/// Every pack with a damage record: one listing of `damaged/`.
pub async fn damaged_packs(storage: &dyn Storage) -> Result<HashSet<PackId>, StorageError> {
    Ok(storage
        .list(keys::DAMAGED_PREFIX)
        .await?
        .iter()
        .filter_map(|key| keys::parse_damaged_key(key))
        .collect())
}

/// Recipe layout (`docs/formats.md`): a 64-byte header (magic, version, chunker, oid,
/// size, chunk count, segment count), 36 bytes per chunk, then 56 per segment (pack id
/// first).
const RECIPE_HEADER_LEN: u64 = 64;
const RECIPE_CHUNK_LEN: u64 = 36;
const RECIPE_SEGMENT_LEN: u64 = 56;

/// Whether the recipe at `key` exists and names none of the `damaged` packs (which are
/// the repository's own). Only a `HEAD` while nothing it may read is damaged; otherwise
/// its header and its segments are read (not its chunk list: memory stays small even for
/// the recipe of a huge file). A recipe whose layout does not add up is not vouched for.
pub async fn recipe_vouched(
    storage: &dyn Storage,
    key: &str,
    damaged: &HashSet<PackId>,
) -> Result<bool, StorageError> {
    let Some(size) = storage.head(key).await? else {
        return Ok(false);
    };
    if damaged.is_empty() {
        return Ok(true);
    }
    let read = |range: Range<u64>| async move {
        match storage.get_range(key, range).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound { .. } | StorageError::InvalidRange { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    if size < RECIPE_HEADER_LEN {
        return Ok(false);
    }
    let Some(header) = read(0..RECIPE_HEADER_LEN).await? else {
        return Ok(false);
    };
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(header[at..at + 4].try_into().unwrap()));
    if &header[..8] != gitmodel_format::recipe::RECIPE_MAGIC
        || u32_at(8) != u64::from(gitmodel_format::recipe::RECIPE_VERSION)
    {
        return Ok(false);
    }
    let segments_at = RECIPE_HEADER_LEN + u32_at(56) * RECIPE_CHUNK_LEN;
    if segments_at + u32_at(60) * RECIPE_SEGMENT_LEN != size {
        return Ok(false);
    }
    let Some(segments) = read(segments_at..size).await? else {
        return Ok(false);
    };
    Ok(!segments
        .chunks_exact(RECIPE_SEGMENT_LEN as usize)
        .filter_map(PackId::from_slice)
        .any(|pack| damaged.contains(&pack)))
}

/// Whether the stored object at `key` holds exactly `bytes`, read in windows.
pub async fn stored_equals(
    storage: &dyn Storage,
    key: &str,
    bytes: &Bytes,
) -> Result<bool, StorageError> {
    let len = bytes.len() as u64;
    if storage.head(key).await? != Some(len) {
        return Ok(false);
    }
    let mut at = 0u64;
    while at < len {
        let end = (at + WINDOW_BYTES).min(len);
        match storage.get_range(key, at..end).await {
            Ok(stored) if stored[..] == bytes[at as usize..end as usize] => at = end,
            Ok(_) | Err(StorageError::NotFound { .. } | StorageError::InvalidRange { .. }) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
