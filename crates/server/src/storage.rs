//! Object storage behind the server: the [`Storage`] trait and its [`LocalDir`] backend.
//!
//! Keys are `/`-separated relative paths such as `packs/ab/<hex>.pack`. The trait is shaped
//! like an object store (whole-object put, ranged get, list by prefix, create-if-absent), so
//! the S3 backend ([`crate::s3::S3Store`]) sits beside [`LocalDir`] without any caller
//! knowing which one it talks to. This module knows nothing about packs or recipes: the key
//! layout lives in [`crate::keys`], and verification of content is the callers' job.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gitmodel_fsutil as fsutil;

/// Why a storage operation failed.
/// Bytes one ranged read of a stored object takes at most when the server reads a pack in
/// windows (registration, downloads, scrubbing, comparing a re-upload): a record header
/// plus the largest chunk fit.
pub const READ_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no object at key {key:?}")]
    NotFound { key: String },
    #[error("invalid storage key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("range {start}..{end} is outside object {key:?} of {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("I/O error on {key:?}")]
    Io {
        key: String,
        #[source]
        source: io::Error,
    },
    /// An object the server wrote itself that it cannot parse (never a client's input).
    #[error("object {key:?} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    /// A `--store` location that cannot be used (for example a malformed `s3://` URL).
    #[error("invalid storage location {location:?}: {reason}")]
    InvalidLocation {
        location: String,
        reason: &'static str,
    },
    /// A failure of a non-filesystem backend (kept open so new backends need no new
    /// variant, and callers no new match arm).
    #[error("storage backend error on {key:?}")]
    Backend {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// The filesystem under the store is full (`ENOSPC`) or over its quota (`EDQUOT`):
    /// answered `507 Insufficient Storage`, and not worth retrying until space is freed.
    pub fn is_out_of_space(&self) -> bool {
        let StorageError::Io { source, .. } = self else {
            return false;
        };
        // By number (Linux), and by kind for errors wrapped with a path (tempfile's);
        // the kinds are named through `Debug` because they are newer than our MSRV.
        matches!(source.raw_os_error(), Some(28 | 122))
            || matches!(
                format!("{:?}", source.kind()).as_str(),
                "StorageFull" | "QuotaExceeded"
            )
    }
}

/// A temporary file this old is a dead writer's, whatever its process id says (ids are
/// reused): no request writes for this long.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Requests in flight in the default [`Storage::put_many`].
pub const PUT_MANY_IN_FLIGHT: usize = 16;

/// An object store. Objects are immutable blobs addressed by key; every method is safe to
/// call concurrently.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Stores `data` at `key`, atomically (readers see the old object or the new one, never
    /// a mix) and durably (it survives a crash once this returns). Putting the same content
    /// again is harmless.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Stores many objects as [`Storage::put`] stores each: every one atomic, all durable
    /// once this returns (on failure, some may be stored). Backends make it cheaper than
    /// as many calls: several requests in flight on object stores, one file-system sync
    /// for a local directory.
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<(), StorageError> {
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(items)
            .map(|(key, data)| async move { self.put(&key, data).await })
            .buffer_unordered(PUT_MANY_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    /// Stores `data` at `key` only if no object is there yet: `Ok(true)` when it was
    /// created, `Ok(false)` (and nothing written) when an object already existed. Atomic
    /// against other writers, even in other processes, when [`Storage::atomic_create`]
    /// says so; otherwise a check followed by a write.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StorageError>;

    /// Whether [`Storage::put_if_absent`] is atomic across processes sharing this store.
    fn atomic_create(&self) -> bool;

    /// The whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;

    /// Bytes `range.start .. range.end` of the object, which must lie inside it.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError>;

    /// The object's size, or `None` when there is no object at `key`.
    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Every key below the directory-like `prefix` (`""` for all), recursively, sorted.
    /// `prefix` is a key path such as `packs` or `packs/`, not an arbitrary string prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// Removes the object. Deleting a missing key succeeds, as on object stores.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Removes the temporary files of writers that were killed mid-write: for a local
    /// directory, files named [`fsutil::TEMP_PREFIX`]`<pid>-…` whose process no longer
    /// runs, or older than [`STALE_TEMP_AGE`] whatever their process. Returns how many
    /// went and their bytes. Object stores have none (an object appears whole or not).
    async fn remove_stale_temporaries(&self) -> Result<(usize, u64), StorageError> {
        Ok((0, 0))
    }

    /// A URL from which a client may `GET` the object (with `Range`) directly for
    /// `expires`, bypassing the server, or `None` when the backend has no such thing.
    async fn presign_get(
        &self,
        key: &str,
        expires: Duration,
    ) -> Result<Option<String>, StorageError> {
        let _ = (key, expires);
        Ok(None)
    }
}

/// Checks that `key` is a relative `/`-separated path that cannot leave the storage root
/// or collide with temp files: segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`,
/// none starting with [`fsutil::TEMP_PREFIX`].
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let invalid = |reason| {
        Err(StorageError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > 1024 {
        return invalid("longer than 1024 bytes");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("empty path segment (or absolute path)");
        }
        if segment == "." || segment == ".." {
            return invalid("'.' or '..' segment");
        }
        if segment.starts_with(fsutil::TEMP_PREFIX) {
            return invalid("reserved temp-file name");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return invalid("characters outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

/// Storage in a local directory: key `a/b/c` is the file `<root>/a/b/c`.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: Arc<PathBuf>,
}

impl LocalDir {
    /// Opens (creating it if needed) a storage directory, and checks that it is writable
    /// so a misconfigured data directory fails at startup, not on the first upload.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalDir, StorageError> {
        let root = root.into();
        let io_err = |source| StorageError::Io {
            key: root.display().to_string(),
            source,
        };
        if root.exists() && !root.is_dir() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        std::fs::create_dir_all(&root).map_err(io_err)?;
        // A temp file with our prefix: removed on drop, and ignored by `list` if a crash
        // leaves it behind.
        tempfile::Builder::new()
            .prefix(fsutil::TEMP_PREFIX)
            .tempfile_in(&root)
            .map_err(io_err)?;
        Ok(LocalDir {
            root: Arc::new(root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Runs blocking filesystem work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| StorageError::Io {
                key: key.to_string(),
                source: io::Error::other(format!("blocking task failed: {e}")),
            })?
    }
}

fn io_error(key: &str, source: io::Error) -> StorageError {
    if source.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound {
            key: key.to_string(),
        }
    } else {
        StorageError::Io {
            key: key.to_string(),
            source,
        }
    }
}

#[async_trait]
impl Storage for LocalDir {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let owned = key.to_string();
        self.blocking(key, move || {
            fsutil::write_atomic(&path, &data)
                .map_err(|source| StorageError::Io { key: owned, source })
        })
        .await
    }

    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<(), StorageError> {
        let Some((first, _)) = items.first() else {
            return Ok(());
        };
        let (label, first) = (first.clone(), first.clone());
        let items = items
            .into_iter()
            .map(|(key, data)| Ok((self.path_of(&key)?, key, data)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        self.blocking(&label, move || {
            // Each file atomic on its own, all made durable by one sync at the end.
            let mut paths = Vec::with_capacity(items.len());
            for (path, key, data) in items {
                fsutil::write_atomic_unsynced(&path, &data)
                    .map_err(|source| StorageError::Io { key, source })?;
                paths.push(path);
            }
            fsutil::sync_paths(&paths).map_err(|source| StorageError::Io { key: first, source })
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        let path = self.path_of(key)?;
        let owned = key.to_string();
        self.blocking(key, move || {
            let io_err = |source| StorageError::Io {
                key: owned.clone(),
                source,
            };
            let mut tmp = fsutil::temp_beside(&path).map_err(io_err)?;
            fsutil::write_sliced(&mut tmp, &data)
                .and_then(|()| tmp.as_file().sync_all())
                .map_err(io_err)?;
            // A hard link never replaces an existing file: atomic create-if-absent.
            match tmp.persist_noclobber(&path) {
                Ok(_) => {}
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(io_err(e.error)),
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            fsutil::sync_dir(dir).map_err(io_err)?;
            Ok(true)
        })
        .await
    }

    fn atomic_create(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        let owned = key.to_string();
        self.blocking(key, move || {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_error(&owned, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        let owned = key.to_string();
        self.blocking(key, move || {
            let mut file = std::fs::File::open(&path).map_err(|e| io_error(&owned, e))?;
            let size = file.metadata().map_err(|e| io_error(&owned, e))?.len();
            let len = range
                .end
                .checked_sub(range.start)
                .filter(|_| range.end <= size);
            let Some(len) = len.and_then(|l| usize::try_from(l).ok()) else {
                return Err(StorageError::InvalidRange {
                    key: owned,
                    start: range.start,
                    end: range.end,
                    size,
                });
            };
            // Read into spare capacity: no zeroing of a buffer about to be overwritten.
            let mut buf = Vec::with_capacity(len);
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| (&mut file).take(len as u64).read_to_end(&mut buf))
                .map_err(|e| io_error(&owned, e))?;
            if buf.len() != len {
                return Err(io_error(
                    &owned,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its size"),
                ));
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path_of(key)?;
        let owned = key.to_string();
        self.blocking(key, move || match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&owned, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix = prefix.trim_end_matches('/');
        let start = if prefix.is_empty() {
            self.root.to_path_buf()
        } else {
            self.path_of(prefix)?
        };
        let root = Arc::clone(&self.root);
        let owned = prefix.to_string();
        self.blocking(prefix, move || {
            let mut keys = Vec::new();
            walk(&root, &start, &mut keys)
                .map_err(|source| StorageError::Io { key: owned, source })?;
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let owned = key.to_string();
        self.blocking(key, move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&owned, e)),
        })
        .await
    }

    async fn remove_stale_temporaries(&self) -> Result<(usize, u64), StorageError> {
        let root = self.root.clone();
        self.blocking("", move || {
            let mut removed = (0, 0);
            sweep_temps(&root, &mut removed).map_err(|e| io_error("", e))?;
            Ok(removed)
        })
        .await
    }
}

/// Removes the stale temporary files below `dir` (see
/// [`Storage::remove_stale_temporaries`]); adds to `removed` (count, bytes).
fn sweep_temps(dir: &Path, removed: &mut (usize, u64)) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            sweep_temps(&entry.path(), removed)?;
            continue;
        }
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(fsutil::TEMP_PREFIX))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        // A process id that does not run here, or none at all, is a dead writer's.
        let dead = match pid {
            Some(pid) => !Path::new("/proc").join(pid.to_string()).exists(),
            None => true,
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMP_AGE);
        if (dead || old) && std::fs::remove_file(entry.path()).is_ok() {
            removed.0 += 1;
            removed.1 += meta.len();
        }
    }
    Ok(())
}

/// Collects the keys of regular files below `dir`, skipping temp files and anything whose
/// name could not be a key (so stray files never reach callers as invalid keys).
fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A prefix nobody has written to yet is an empty listing, as on object stores.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(fsutil::TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(root, &path, keys)?;
        } else if file_type.is_file() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            let key = rel.replace(std::path::MAIN_SEPARATOR, "/");
            if validate_key(&key).is_ok() {
                keys.push(key);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "../x",
            "a/../../x",
            "a/./b",
            "a\\b",
            "a/.tmp-gitmodel-x",
            "a b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        for good in [
            "packs/ab/abcd.pack",
            "repos/acme/vision/files/ab/x.recipe",
            "a",
        ] {
            validate_key(good).unwrap();
        }
    }

    #[tokio::test]
    async fn local_dir_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::open(dir.path().join("data")).unwrap();
        assert_eq!(s.head("a/b.bin").await.unwrap(), None);
        assert!(matches!(
            s.get("a/b.bin").await,
            Err(StorageError::NotFound { .. })
        ));
        s.put("a/b.bin", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        s.put("a/b.bin", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        s.put("c.bin", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(s.head("a/b.bin").await.unwrap(), Some(11));
        assert_eq!(&s.get("a/b.bin").await.unwrap()[..], b"hello world");
        assert_eq!(&s.get_range("a/b.bin", 6..11).await.unwrap()[..], b"world");
        assert_eq!(&s.get_range("a/b.bin", 3..3).await.unwrap()[..], b"");
        assert!(matches!(
            s.get_range("a/b.bin", 6..12).await,
            Err(StorageError::InvalidRange { .. })
        ));
        // A crash leftover is not a key.
        std::fs::write(s.root().join("a").join(".tmp-gitmodel-zzz"), b"junk").unwrap();
        assert_eq!(s.list("").await.unwrap(), vec!["a/b.bin", "c.bin"]);
        assert_eq!(s.list("a/").await.unwrap(), vec!["a/b.bin"]);
        assert!(s.list("nothing").await.unwrap().is_empty());
        assert!(s.list("../").await.is_err());
        s.delete("a/b.bin").await.unwrap();
        s.delete("a/b.bin").await.unwrap();
        assert_eq!(s.list("a").await.unwrap(), Vec::<String>::new());
        assert!(matches!(
            s.put("../escape", Bytes::new()).await,
            Err(StorageError::InvalidKey { .. })
        ));
        assert!(s.atomic_create());
        assert!(s.put_if_absent("l/x.json", "one".into()).await.unwrap());
        assert!(!s.put_if_absent("l/x.json", "two".into()).await.unwrap());
        assert_eq!(&s.get("l/x.json").await.unwrap()[..], b"one");
        assert_eq!(s.list("l").await.unwrap(), vec!["l/x.json"]);
        assert_eq!(
            s.presign_get("l/x.json", Duration::from_secs(1))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn put_many_stores_each_object_or_refuses_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::open(dir.path().join("data")).unwrap();
        let items: Vec<(String, Bytes)> = (0..20)
            .map(|i| {
                (
                    format!("r/{}/{i}.recipe", i % 3),
                    Bytes::from(vec![i as u8; i]),
                )
            })
            .collect();
        s.put_many(items.clone()).await.unwrap();
        for (key, data) in &items {
            assert_eq!(&s.get(key).await.unwrap(), data, "{key}");
        }
        assert_eq!(s.list("r").await.unwrap().len(), 20);
        s.put_many(Vec::new()).await.unwrap();
        // One bad key refuses the lot before anything is written.
        let bad = vec![
            ("ok/1.bin".to_string(), Bytes::from_static(b"1")),
            ("../escape".to_string(), Bytes::new()),
        ];
        assert!(matches!(
            s.put_many(bad).await,
            Err(StorageError::InvalidKey { .. })
        ));
        assert_eq!(s.head("ok/1.bin").await.unwrap(), None);
    }

    #[test]
    fn open_rejects_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(LocalDir::open(&file).is_err());
    }
}
