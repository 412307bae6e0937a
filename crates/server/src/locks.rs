//! Git LFS file locking: create, list, verify and remove locks, persisted in storage.
//!
//! One JSON object per locked path at [`keys::lock_key`] (under
//! `repos/<namespace>/<repo>/locks/`), holding the [`Lock`] as the API shows it; the
//! locks survive restarts and live wherever the rest of the repository lives. Lists are
//! sorted by that key (the SHA-256 of the path), which is also the pagination cursor.
//!
//! Owners are [`crate::auth::Authorizer::identity`]: the token's name when the server
//! has tokens; without authentication, the name claimed in `X-Git-Model-User`, else
//! `anonymous` (so without that header every client is the same owner). Force-unlocking
//! another owner's lock needs admin access to the repository.
//!
//! **Several writers.** Creating a lock is a create-if-absent write
//! ([`crate::storage::Storage::put_if_absent`]): of two server processes locking the same
//! path at once, exactly one wins and the other answers 409 with the winner's lock. That
//! holds where the store's create is atomic ([`crate::storage::Storage::atomic_create`]):
//! a local directory, and S3 stores that honour `If-None-Match: *` (AWS S3; the server
//! probes at startup and logs the result). On a store that ignores it, two nodes racing
//! for one path can both succeed (the later write wins), so locks then need a single
//! server process. Within one process, mutations also run under one mutex
//! (`AppState::lock_mutations`). Removing a lock is an unconditional delete, so a forced
//! unlock racing with a re-lock of the same path can remove the new lock.
//!
//! Locks are per repository, not per ref: `ref` in requests is accepted and ignored
//! (the reference client's "single branch locking").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use gitmodel_format::Oid;
use gitmodel_proto::RepoName;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::auth::Access;
use crate::error::ApiError;
use crate::http::parse_json;
use crate::keys;
use crate::state::AppState;
use crate::storage::StorageError;

/// Locks per page when the client does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most locks per page.
pub const MAX_LIMIT: usize = 1000;
/// Longest lockable path.
pub const MAX_PATH_BYTES: usize = 4096;
/// Lock objects read at once while listing.
const READ_CONCURRENCY: usize = 16;

pub use gitmodel_proto::{Lock, LockOwner as Owner};

#[derive(Debug, Deserialize)]
struct CreateRequest {
    path: String,
}

#[derive(Debug, Default, Deserialize)]
struct VerifyRequest {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct UnlockRequest {
    #[serde(default)]
    force: bool,
}

/// Answer to `GET locks`.
#[derive(Debug, Serialize)]
pub struct LockList {
    pub locks: Vec<Lock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Answer to `POST locks/verify`.
#[derive(Debug, Serialize)]
pub struct VerifyAnswer {
    pub ours: Vec<Lock>,
    pub theirs: Vec<Lock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST locks`: locks a path for the caller; [`ApiError::LockExists`] (409, with the
/// existing lock) if anyone, the caller included, holds it already.
pub async fn create(
    state: &AppState,
    repo: &RepoName,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Lock, ApiError> {
    let request: CreateRequest = parse_json(body)?;
    let path = request.path;
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(ApiError::Invalid {
            what: format!("a lock path must be 1 to {MAX_PATH_BYTES} bytes, without NUL"),
        });
    }
    let owner = state.authorizer().identity(headers);
    let key = keys::lock_key(repo, &path);
    let _guard = state.lock_mutations().await;
    if let Some(existing) = read_lock(state, &key).await? {
        return Err(ApiError::LockExists {
            lock: Box::new(existing),
        });
    }
    let lock = Lock {
        id: new_lock_id(&path),
        path,
        locked_at: rfc3339(SystemTime::now()),
        owner: Owner { name: owner },
    };
    if !put_lock(state, &key, &lock).await? {
        // Another server process locked the path since we looked.
        let existing = read_lock(state, &key).await?.ok_or_else(|| {
            ApiError::internal(format!(
                "lock {key} was taken and released while being created"
            ))
        })?;
        return Err(ApiError::LockExists {
            lock: Box::new(existing),
        });
    }
    tracing::info!(%repo, id = lock.id, path = lock.path, owner = lock.owner.name, "locked");
    Ok(lock)
}

/// `GET locks?path=&id=&cursor=&limit=`: the repository's locks, filtered, one page.
pub async fn list(state: &AppState, repo: &RepoName, query: &str) -> Result<LockList, ApiError> {
    let mut path = None;
    let mut id = None;
    let mut cursor = None;
    let mut limit = None;
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "path" if !value.is_empty() => path = Some(value),
            "id" if !value.is_empty() => id = Some(value),
            "cursor" if !value.is_empty() => cursor = Some(value),
            "limit" if !value.is_empty() => {
                limit = Some(value.parse::<u64>().map_err(|_| ApiError::BadRequest {
                    what: format!("limit {value:?} is not a number"),
                })?)
            }
            // `refspec` and anything unknown: locks are not per ref.
            _ => {}
        }
    }
    let all = match &path {
        // One path has at most one lock, at a known key.
        Some(path) => {
            let key = keys::lock_key(repo, path);
            let cursor_key = keys::parse_lock_key(&key).map(str::to_string);
            let lock = read_lock(state, &key).await?;
            cursor_key.into_iter().zip(lock).collect()
        }
        None => read_all(state, repo).await?,
    };
    let matching = all
        .into_iter()
        .filter(|(_, lock)| id.as_ref().is_none_or(|id| &lock.id == id));
    let (locks, next_cursor) = page(matching, cursor.as_deref(), limit);
    Ok(LockList {
        locks: locks.into_iter().map(|(_, lock)| lock).collect(),
        next_cursor,
    })
}

/// `POST locks/verify`: one page of locks, split into the caller's and everyone else's.
pub async fn verify(
    state: &AppState,
    repo: &RepoName,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<VerifyAnswer, ApiError> {
    let request: VerifyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyRequest::default()
    } else {
        parse_json(body)?
    };
    let me = state.authorizer().identity(headers);
    let all = read_all(state, repo).await?;
    let (locks, next_cursor) = page(all.into_iter(), request.cursor.as_deref(), request.limit);
    let (ours, theirs) = locks
        .into_iter()
        .map(|(_, lock)| lock)
        .partition(|lock| lock.owner.name == me);
    Ok(VerifyAnswer {
        ours,
        theirs,
        next_cursor,
    })
}

/// `POST locks/<id>/unlock`: removes a lock and returns it. Another owner's lock needs
/// `force` and admin access (403 otherwise); an unknown id is 404.
pub async fn unlock(
    state: &AppState,
    repo: &RepoName,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
) -> Result<Lock, ApiError> {
    let request: UnlockRequest = if body.iter().all(u8::is_ascii_whitespace) {
        UnlockRequest::default()
    } else {
        parse_json(body)?
    };
    let me = state.authorizer().identity(headers);
    let not_found = || {
        ApiError::not_found(format!(
            "lock {:?}",
            id.chars().take(80).collect::<String>()
        ))
    };
    let _guard = state.lock_mutations().await;
    let lock = read_all(state, repo)
        .await?
        .into_iter()
        .map(|(_, lock)| lock)
        .find(|lock| lock.id == id)
        .ok_or_else(not_found)?;
    if lock.owner.name != me && !request.force {
        return Err(ApiError::Forbidden {
            reason: format!(
                "{} is locked by {}, not {me}; unlocking it needs force",
                lock.path, lock.owner.name
            ),
        });
    }
    if lock.owner.name != me {
        // Breaking someone else's lock is an administrator's call.
        state.authorizer().authorize(headers, repo, Access::Admin)?;
    }
    state
        .storage()
        .delete(&keys::lock_key(repo, &lock.path))
        .await?;
    tracing::info!(%repo, id = lock.id, path = lock.path, by = me, force = request.force, "unlocked");
    Ok(lock)
}

/// The page of `items` (sorted by key) starting at `cursor`, and the cursor of the next
/// page if there is one.
fn page<T>(
    items: impl Iterator<Item = (String, T)>,
    cursor: Option<&str>,
    limit: Option<u64>,
) -> (Vec<(String, T)>, Option<String>) {
    let limit = limit.map_or(DEFAULT_LIMIT, |l| {
        usize::try_from(l).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT)
    });
    let mut rest = items
        .skip_while(|(key, _)| cursor.is_some_and(|c| key.as_str() < c))
        .peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        match rest.next() {
            Some(item) => out.push(item),
            None => break,
        }
    }
    let next = rest.peek().map(|(key, _)| key.clone());
    (out, next)
}

/// Every lock of `repo` with its sort key, in key order. A lock object that cannot be
/// parsed is logged and left out (it can still be replaced by locking its path again).
async fn read_all(state: &AppState, repo: &RepoName) -> Result<Vec<(String, Lock)>, ApiError> {
    let keys = state.storage().list(&keys::locks_prefix(repo)).await?;
    let mut found: Vec<Option<(String, Lock)>> = vec![None; keys.len()];
    let mut pending = keys.into_iter().enumerate();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < READ_CONCURRENCY {
            let Some((i, key)) = pending.next() else {
                break;
            };
            let Some(sort_key) = keys::parse_lock_key(&key).map(str::to_string) else {
                continue;
            };
            let storage = Arc::clone(state.storage());
            tasks.spawn(async move { (i, sort_key, key.clone(), storage.get(&key).await) });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (i, sort_key, key, got) = joined?;
        match got {
            Ok(bytes) => match serde_json::from_slice::<Lock>(&bytes) {
                Ok(lock) => found[i] = Some((sort_key, lock)),
                Err(e) => tracing::warn!(key, error = %e, "ignoring an unreadable lock"),
            },
            // Removed since the listing.
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(found.into_iter().flatten().collect())
}

async fn read_lock(state: &AppState, key: &str) -> Result<Option<Lock>, ApiError> {
    match state.storage().get(key).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::internal(format!("the stored lock {key} is damaged: {e}"))),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes a new lock unless one exists at `key`; `false` when one did.
async fn put_lock(state: &AppState, key: &str, lock: &Lock) -> Result<bool, ApiError> {
    let bytes = serde_json::to_vec(lock)
        .map_err(|e| ApiError::internal(format!("serializing a lock: {e}")))?;
    Ok(state.storage().put_if_absent(key, bytes.into()).await?)
}

/// A fresh lock id: 24 hex digits, unique in practice (time, process, counter and path
/// hashed together).
fn new_lock_id(path: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{nanos}:{}:{n}:{path}", std::process::id());
    // SHA-256 (the oid hash) is just a convenient good hash here.
    Oid::of(seed.as_bytes()).to_hex()[..24].to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    gitmodel_format::time::rfc3339(secs as i64)
}

/// `name=value` pairs of a URL query, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name), percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |secs: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_767_225_600 + 3_723), "2026-01-01T01:02:03Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn queries() {
        let pairs: Vec<(String, String)> =
            query_pairs("path=a%2Fb+c.bin&limit=5&&x&bad=%zz%4").collect();
        assert_eq!(
            pairs,
            vec![
                ("path".into(), "a/b c.bin".into()),
                ("limit".into(), "5".into()),
                ("x".into(), String::new()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
    }

    #[test]
    fn paging() {
        let items = || (0..5).map(|i| (format!("k{i}"), i));
        let (first, next) = page(items(), None, Some(2));
        assert_eq!(first.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(next.as_deref(), Some("k2"));
        let (second, next) = page(items(), next.as_deref(), Some(2));
        assert_eq!(second.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [2, 3]);
        let (last, next) = page(items(), next.as_deref(), Some(2));
        assert_eq!(last.len(), 1);
        assert_eq!(next, None);
        assert_eq!(page(items(), None, Some(0)).0.len(), 1);
        assert_eq!(page(items(), None, None).0.len(), 5);
        let ids: Vec<String> = (0..100).map(|_| new_lock_id("p")).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), 100);
    }
}
