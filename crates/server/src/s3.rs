//! The S3 backend of [`Storage`]: packs, recipes and locks as objects in an S3-compatible
//! bucket (AWS S3, Garage, MinIO, R2, …), through `object_store`'s `AmazonS3`.
//!
//! [`S3Location`] is the `--store s3://<bucket>/<prefix>` value; [`S3Store`] maps every
//! storage key `k` to the object `<prefix>/k`. Endpoint, region and credentials come from
//! the usual `AWS_*` environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …). Requests are path-style
//! (`<endpoint>/<bucket>/<key>`, which every S3-compatible store accepts) and plain
//! `http://` endpoints are allowed, for stores on a private network or loopback.
//!
//! - Objects above [`S3Options::multipart_threshold`] are uploaded in parts (parallel,
//!   each part retried on its own); S3 completes a multipart upload atomically, so readers
//!   never see a partial pack.
//! - Throttling (503 SlowDown, 429), 5xx answers, connection errors and timeouts are
//!   retried with exponential backoff and jitter ([`S3Options::retry`]).
//! - [`Storage::put_if_absent`] is an `If-None-Match: *` PUT when the store honours it.
//!   [`S3Store::probe_conditional_put`] finds out at startup (some stores ignore the
//!   header and overwrite); without it the method is check-then-write and
//!   [`Storage::atomic_create`] says so.
//!
//! This module does not verify content (callers hash everything they read) and keeps no
//! state of its own: everything durable is in the bucket.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use crate::storage::{validate_key, Storage, StorageError};

/// Where in S3 a server keeps its data: `s3://<bucket>[/<prefix>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// `/`-separated, without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://<bucket>[/<prefix>]`. The bucket follows S3's naming rules (3–63 of
    /// `a-z 0-9 . -`); the prefix's segments follow the storage key rules
    /// ([`validate_key`]).
    pub fn parse(url: &str) -> Result<S3Location, StorageError> {
        let invalid = |reason| StorageError::InvalidLocation {
            location: url.chars().take(200).collect(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(invalid(
                "the bucket name must be 3 to 63 characters of a-z 0-9 . -",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && validate_key(prefix).is_err() {
            return Err(invalid(
                "the prefix must be /-separated segments of [A-Za-z0-9._-], none . or ..",
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The object name of storage key `key` (already validated).
    fn object(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Tuning of the S3 client. [`S3Options::default`] suits packs of up to 64 MiB.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Objects larger than this are uploaded as multipart uploads.
    pub multipart_threshold: usize,
    /// Size of each part (S3 wants at least 5 MiB for all but the last).
    pub part_size: usize,
    /// Parts of one object in flight at once.
    pub part_concurrency: usize,
    /// Backoff and limits for retrying throttled, failed and timed-out requests.
    pub retry: RetryConfig,
    /// Bound on one request, body included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            // Writers make packs of about 16 MiB (a little over, by up to one chunk): those
            // go as one PUT; larger ones (up to the 64 MiB limit) in parts.
            multipart_threshold: 32 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            part_concurrency: 4,
            retry: RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: 8,
                // Retries reuse the request's signature: stay well inside its validity.
                retry_timeout: Duration::from_secs(120),
            },
            // A 64 MiB pack at a slow 10 MB/s still fits.
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Storage in an S3 bucket; see the module documentation.
pub struct S3Store {
    store: Arc<AmazonS3>,
    location: S3Location,
    options: S3Options,
    /// Whether `If-None-Match: *` is known to be honoured (see
    /// [`S3Store::probe_conditional_put`]).
    conditional_put: bool,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its configuration holds credentials.
        f.debug_struct("S3Store")
            .field("location", &self.location.to_string())
            .field("conditional_put", &self.conditional_put)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A client for `location` configured from the `AWS_*` environment variables.
    pub fn from_env(location: S3Location, options: S3Options) -> Result<S3Store, StorageError> {
        S3Store::with_builder(AmazonS3Builder::from_env(), location, options)
    }

    /// A client for `location` from a builder holding endpoint, region and credentials;
    /// bucket, addressing style, retries and timeouts are set here.
    pub fn with_builder(
        builder: AmazonS3Builder,
        location: S3Location,
        options: S3Options,
    ) -> Result<S3Store, StorageError> {
        let client = ClientOptions::new()
            .with_allow_http(true)
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout);
        let store = builder
            .with_bucket_name(&location.bucket)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .with_retry(options.retry.clone())
            .with_client_options(client)
            .build()
            .map_err(|e| backend(&location.to_string(), e))?;
        Ok(S3Store {
            store: Arc::new(store),
            location,
            options,
            conditional_put: false,
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// Checks that the bucket answers (a listing of the prefix), so a wrong endpoint,
    /// bucket or credential fails at startup rather than on the first upload.
    pub async fn check_access(&self) -> Result<(), StorageError> {
        let prefix = self.path_of_prefix("")?;
        let mut listing = self.store.list(prefix.as_ref());
        listing
            .try_next()
            .await
            .map_err(|e| backend(&self.location.to_string(), e))?;
        Ok(())
    }

    /// Finds out whether the store honours `If-None-Match: *` on PUT (AWS S3 does since
    /// 2024; some S3-compatible stores ignore it and overwrite): creates a scratch object
    /// twice and expects the second attempt to be refused. Remembers and returns the
    /// answer. Costs three or four requests.
    pub async fn probe_conditional_put(&mut self) -> Result<bool, StorageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("probes/create-{nanos:x}-{:x}", std::process::id());
        let path = self.path_of(&key)?;
        let create = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let first = self
            .store
            .put_opts(&path, PutPayload::from_static(b"1"), create())
            .await;
        let supported = match first {
            Err(object_store::Error::NotImplemented { .. })
            | Err(object_store::Error::NotSupported { .. }) => false,
            Err(e) => return Err(backend(&key, e)),
            Ok(_) => {
                let second = self
                    .store
                    .put_opts(&path, PutPayload::from_static(b"2"), create())
                    .await;
                match second {
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => true,
                    Ok(_)
                    | Err(object_store::Error::NotImplemented { .. })
                    | Err(object_store::Error::NotSupported { .. }) => false,
                    Err(e) => return Err(backend(&key, e)),
                }
            }
        };
        self.delete(&key).await?;
        self.conditional_put = supported;
        Ok(supported)
    }

    fn path_of(&self, key: &str) -> Result<Path, StorageError> {
        validate_key(key)?;
        Path::parse(self.location.object(key)).map_err(|e| backend(key, e.into()))
    }

    /// The directory-like path of a listing prefix (`None` for the whole bucket).
    fn path_of_prefix(&self, prefix: &str) -> Result<Option<Path>, StorageError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            if self.location.prefix.is_empty() {
                return Ok(None);
            }
            return Path::parse(&self.location.prefix)
                .map(Some)
                .map_err(|e| backend(prefix, e.into()));
        }
        self.path_of(prefix).map(Some)
    }

    /// The storage key of an object name, if it lies below our prefix and is a valid key
    /// (anything else in the bucket is not ours to report).
    fn key_of(&self, object: &str) -> Option<String> {
        let key = if self.location.prefix.is_empty() {
            object
        } else {
            object
                .strip_prefix(self.location.prefix.as_str())?
                .strip_prefix('/')?
        };
        validate_key(key).ok().map(|()| key.to_string())
    }

    async fn put_multipart(&self, key: &str, path: &Path, data: Bytes) -> Result<(), StorageError> {
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| backend(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
        let mut rest = data;
        while !rest.is_empty() {
            let part = rest.split_to(rest.len().min(self.options.part_size));
            if let Err(e) = writer
                .wait_for_capacity(self.options.part_concurrency.max(1))
                .await
            {
                // Best effort: an incomplete upload is invisible, and the bucket's
                // lifecycle rule for incomplete uploads (docs/deploy.md) removes it.
                let _ = writer.abort().await;
                return Err(backend(key, e));
            }
            writer.put(part);
        }
        writer.finish().await.map_err(|e| backend(key, e))?;
        Ok(())
    }

    /// A presigned URL for `GET` of the object at `key`, valid for `expires`. Anyone
    /// holding it can read that one object until it expires.
    pub async fn presigned_get_url(
        &self,
        key: &str,
        expires: Duration,
    ) -> Result<String, StorageError> {
        let path = self.path_of(key)?;
        let url = self
            .store
            .signed_url(http::Method::GET, &path, expires)
            .await
            .map_err(|e| backend(key, e))?;
        Ok(url.to_string())
    }
}

/// An `object_store` failure as a [`StorageError`]: a missing object is
/// [`StorageError::NotFound`], anything else [`StorageError::Backend`] with the cause.
fn backend(key: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound {
            key: key.to_string(),
        },
        other => StorageError::Backend {
            key: key.to_string(),
            source: Box::new(other),
        },
    }
}

#[async_trait]
impl Storage for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        if data.len() > self.options.multipart_threshold {
            return self.put_multipart(key, &path, data).await;
        }
        self.store
            .put(&path, PutPayload::from_bytes(data))
            .await
            .map_err(|e| backend(key, e))?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        let path = self.path_of(key)?;
        if !self.conditional_put {
            // Check-then-write: racy between processes (see `atomic_create`).
            if self.head(key).await?.is_some() {
                return Ok(false);
            }
            self.put(key, data).await?;
            return Ok(true);
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(data), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(backend(key, e)),
        }
    }

    fn atomic_create(&self) -> bool {
        self.conditional_put
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        let result = self.store.get(&path).await.map_err(|e| backend(key, e))?;
        result.bytes().await.map_err(|e| backend(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        let invalid = |size| StorageError::InvalidRange {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            size,
        };
        if range.start >= range.end {
            // HTTP cannot ask for zero bytes; an empty range only needs the object to
            // exist and be long enough.
            let size = self
                .head(key)
                .await?
                .ok_or_else(|| StorageError::NotFound {
                    key: key.to_string(),
                })?;
            return if range.start == range.end && range.end <= size {
                Ok(Bytes::new())
            } else {
                Err(invalid(size))
            };
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            // A range past the end is refused by the store (416), or by the client's
            // check of the answer: report it in our terms when that is what happened.
            Err(e @ object_store::Error::NotFound { .. }) => return Err(backend(key, e)),
            Err(e) => {
                return match self.head(key).await {
                    Ok(Some(size)) if range.end > size => Err(invalid(size)),
                    _ => Err(backend(key, e)),
                }
            }
        };
        let size = result.meta.size;
        if range.end > size {
            return Err(invalid(size));
        }
        let bytes = result.bytes().await.map_err(|e| backend(key, e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(invalid(size));
        }
        Ok(bytes)
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path_of(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let path = self.path_of_prefix(prefix)?;
        let metas: Vec<_> = self
            .store
            .list(path.as_ref())
            .try_collect()
            .await
            .map_err(|e| backend(prefix, e))?;
        let mut keys: Vec<String> = metas
            .iter()
            .filter_map(|meta| self.key_of(meta.location.as_ref()))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(key, e)),
        }
    }

    async fn presign_get(
        &self,
        key: &str,
        expires: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.presigned_get_url(key, expires).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let loc = S3Location::parse("s3://models/prod/eu").unwrap();
        assert_eq!(loc.bucket, "models");
        assert_eq!(loc.prefix, "prod/eu");
        assert_eq!(loc.to_string(), "s3://models/prod/eu");
        assert_eq!(loc.object("packs/ab/x.pack"), "prod/eu/packs/ab/x.pack");
        let root = S3Location::parse("s3://models/").unwrap();
        assert_eq!(root.prefix, "");
        assert_eq!(root.object("a"), "a");
        assert_eq!(root.to_string(), "s3://models");
        for bad in [
            "models/x",
            "s3://",
            "s3://ab",
            "s3://Models",
            "s3://models/../x",
            "s3://models/a b",
            "http://models/x",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    fn offline_store(prefix: &str) -> S3Store {
        let builder = AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:1")
            .with_region("garage")
            .with_access_key_id("GK0")
            .with_secret_access_key("secret");
        let location = S3Location::parse(&format!("s3://bucket/{prefix}")).unwrap();
        S3Store::with_builder(builder, location, S3Options::default()).unwrap()
    }

    #[test]
    fn keys_map_to_objects_and_back() {
        let s = offline_store("pre/fix");
        assert_eq!(
            s.path_of("packs/ab/c.pack").unwrap().as_ref(),
            "pre/fix/packs/ab/c.pack"
        );
        assert!(s.path_of("../x").is_err());
        assert_eq!(
            s.path_of_prefix("packs/").unwrap().unwrap().as_ref(),
            "pre/fix/packs"
        );
        assert_eq!(s.path_of_prefix("").unwrap().unwrap().as_ref(), "pre/fix");
        assert_eq!(
            s.key_of("pre/fix/packs/ab/c.pack").as_deref(),
            Some("packs/ab/c.pack")
        );
        assert_eq!(s.key_of("pre/fixed/a"), None);
        assert_eq!(s.key_of("other/a"), None);
        let root = offline_store("");
        assert!(root.path_of_prefix("").unwrap().is_none());
        assert_eq!(root.key_of("a/b").as_deref(), Some("a/b"));
        // Debug output never shows credentials.
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[tokio::test]
    async fn presigned_urls_are_path_style() {
        let s = offline_store("p");
        let url = s
            .presigned_get_url("packs/ab/c.pack", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:1/bucket/p/packs/ab/c.pack?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
    }
}
