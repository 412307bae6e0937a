//! [`ApiError`]: every way a request can fail, and the one place that maps failures to an
//! HTTP status, a stable error `code` (the JSON [`gitmodel_proto::ErrorBody`]) and the
//! headers an error answer carries (`Allow`, `Retry-After`, `WWW-Authenticate`,
//! `LFS-Authenticate`).
//!
//! The body is rendered by the caller in one of two shapes: the native one
//! ([`crate::api::error_response`]) or the Git LFS one ([`crate::lfs::error_response`]);
//! status and headers come from here either way.
//!
//! Per-file failures inside a registration batch are not `ApiError`s: they are answered in
//! the batch's [`gitmodel_proto::RegisterResult`]s (see [`crate::register`]); neither are
//! per-object errors inside a Git LFS batch answer (see [`crate::lfs`]).

use gitmodel_format::{IdError, Oid, PackError, PackId, RecipeError};
use gitmodel_proto::{BodyError, NameError};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::storage::StorageError;
use gitmodel_proto::Lock;

/// The realm announced in `LFS-Authenticate` on a 401 answer to a Git LFS client.
pub const LFS_REALM: &str = "git-model";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such endpoint: {method} {path}")]
    UnknownRoute { method: Method, path: String },
    #[error("method {method} is not allowed here (allowed: {allow})")]
    MethodNotAllowed { method: Method, allow: &'static str },
    #[error(transparent)]
    BadName(#[from] NameError),
    #[error(transparent)]
    BadId(#[from] IdError),
    #[error(transparent)]
    BadIdList(#[from] BodyError),
    #[error("reading the request body failed: {reason}")]
    BodyRead { reason: String },
    #[error("recipe #{index} of the batch (at byte {offset}) was refused")]
    BadRecipe {
        index: usize,
        offset: usize,
        #[source]
        source: RecipeError,
    },
    #[error("the request body stalled for more than {secs} s")]
    BodyTimeout { secs: u64 },
    /// A body slower on average than the server's least rate ([`crate::conn::MinRate`]).
    #[error("{reason}")]
    BodyTooSlow { reason: String },
    #[error("bad Range header {value:?}: {reason}")]
    BadRange { value: String, reason: &'static str },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// A Git LFS object over the server's size limit (`--max-lfs-object-size`).
    #[error(
        "object of {size} bytes is larger than this server's limit of {limit} bytes for Git \
         LFS objects"
    )]
    ObjectTooLarge { size: u64, limit: u64 },
    /// A path that could name something outside its route: encoded characters (`%2f`,
    /// `%2e%2e`), backslashes, `.` or `..` segments.
    #[error("bad request path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("range {value:?} cannot be satisfied for an object of {size} bytes")]
    RangeNotSatisfiable { value: String, size: u64 },
    #[error("pack {pack} was refused")]
    BadPack {
        pack: PackId,
        #[source]
        source: PackError,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("bad request: {what}")]
    BadRequest { what: String },
    #[error("invalid JSON body: {reason}")]
    BadJson { reason: String },
    #[error("unsupported content type {content_type:?}: send {expected}")]
    UnsupportedMediaType {
        content_type: String,
        expected: &'static str,
    },
    /// A well-formed request whose content cannot be accepted (Git LFS "validation error").
    #[error("{what}")]
    Invalid { what: String },
    #[error("{count} objects in one batch, more than the limit of {limit}")]
    TooManyObjects { count: usize, limit: usize },
    #[error("hash algorithm {algo:?} is not supported; this server names objects by sha256")]
    UnsupportedHashAlgo { algo: String },
    /// An uploaded object whose bytes are not what its oid (or declared length) says.
    #[error("the uploaded body does not match object {oid}: {what}")]
    ContentMismatch { oid: Oid, what: String },
    #[error("{} is already locked by {} (lock {})", .lock.path, .lock.owner.name, .lock.id)]
    LockExists { lock: Box<Lock> },
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// A pack the request relied on was deleted by GC meanwhile (see [`crate::gc`]):
    /// nothing of it was kept, and sending it again succeeds.
    #[error("pack {pack} was collected by the server's GC while this upload used it; nothing was kept: send it again")]
    PackCollected { pack: PackId },
    #[error("authentication required: {reason}")]
    Unauthorized { reason: String },
    #[error("access denied: {reason}")]
    Forbidden { reason: String },
    /// The server cannot serve any request as configured (the token file is lost).
    #[error("service unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("storage failure")]
    Storage(#[from] StorageError),
    #[error("internal error: {what}")]
    Internal { what: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            UnknownRoute { .. } | NotFound { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            BadName(_)
            | BadId(_)
            | BadIdList(_)
            | BodyRead { .. }
            | BadRecipe { .. }
            | BadRange { .. }
            | BadRequest { .. }
            | BadPath { .. }
            | BadJson { .. } => StatusCode::BAD_REQUEST,
            BodyTimeout { .. } | BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            TooLarge { .. } | ObjectTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            BadPack { .. } | Invalid { .. } | ContentMismatch { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TooManyObjects { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedHashAlgo { .. } | LockExists { .. } => StatusCode::CONFLICT,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            PackCollected { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } => StatusCode::FORBIDDEN,
            Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Storage(e) if e.is_out_of_space() => StatusCode::INSUFFICIENT_STORAGE,
            Storage(_) | Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (documented in `docs/protocol.md`).
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            UnknownRoute { .. } => "unknown_route",
            MethodNotAllowed { .. } => "method_not_allowed",
            BadName(_) => "bad_name",
            BadId(_) => "bad_id",
            BadIdList(_) | BodyRead { .. } => "bad_body",
            BadRecipe { .. } => "bad_recipe",
            BadRange { .. } => "bad_range",
            BodyTimeout { .. } | BodyTooSlow { .. } => "timeout",
            TooLarge { .. } | ObjectTooLarge { .. } => "too_large",
            BadPath { .. } => "bad_path",
            RangeNotSatisfiable { .. } => "range_not_satisfiable",
            BadPack { .. } => "bad_pack",
            NotFound { .. } => "not_found",
            BadRequest { .. } => "bad_request",
            BadJson { .. } => "bad_json",
            UnsupportedMediaType { .. } => "unsupported_media_type",
            Invalid { .. } => "invalid",
            TooManyObjects { .. } => "too_large",
            UnsupportedHashAlgo { .. } => "unsupported_hash_algo",
            ContentMismatch { .. } => "hash_mismatch",
            LockExists { .. } => "lock_exists",
            RateLimited { .. } => "rate_limited",
            PackCollected { .. } => "pack_collected",
            Unauthorized { .. } => "unauthorized",
            Forbidden { .. } => "forbidden",
            Unavailable { .. } => "unavailable",
            Storage(e) if e.is_out_of_space() => "insufficient_storage",
            Storage(_) | Internal { .. } => "internal",
        }
    }

    /// The message sent to the client. Server-side failures are described only in the log
    /// (under the request id): their details name internal paths and are no help remotely.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Storage(e) if e.is_out_of_space() => {
                "the server is out of storage space (507 Insufficient Storage): nothing of \
                 this request was stored; retry once space is freed on the server"
                    .to_string()
            }
            ApiError::Storage(_) | ApiError::Internal { .. } => {
                "internal server error; the server log has details under this request id"
                    .to_string()
            }
            other => error_chain(other),
        }
    }

    /// Adds the headers this error's answer must carry. A 401 names its scheme in
    /// `WWW-Authenticate` (so git and other HTTP clients ask their credential helpers);
    /// `lfs` selects the Git LFS flavour, which adds `LFS-Authenticate` (the header the
    /// Git LFS client reads).
    pub fn add_headers(&self, headers: &mut HeaderMap, lfs: bool) {
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(http::header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RangeNotSatisfiable { size, .. } => {
                // RFC 9110: a 416 names the representation's length.
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(http::header::CONTENT_RANGE, value);
                }
            }
            ApiError::PackCollected { .. } => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Unauthorized { .. } => {
                let value = format!("Basic realm=\"{LFS_REALM}\"");
                if let Ok(value) = HeaderValue::from_str(&value) {
                    if lfs {
                        headers.insert(HeaderName::from_static("lfs-authenticate"), value.clone());
                    }
                    headers.insert(http::header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::NotFound { what: what.into() }
    }

    pub fn internal(what: impl Into<String>) -> ApiError {
        ApiError::Internal { what: what.into() }
    }
}

/// An error and its sources, `: `-separated (thiserror messages leave the sources out).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("worker task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers() {
        let mut cases: Vec<(ApiError, StatusCode, &str)> = vec![
            (
                ApiError::RateLimited { retry_after: 7 },
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (
                ApiError::Invalid { what: "x".into() },
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                ApiError::UnsupportedHashAlgo { algo: "md5".into() },
                StatusCode::CONFLICT,
                "unsupported_hash_algo",
            ),
            (
                ApiError::TooManyObjects { count: 2, limit: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
            (
                ApiError::BadJson { reason: "x".into() },
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                ApiError::Unavailable { reason: "x".into() },
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
        ];
        cases.push((
            ApiError::Storage(StorageError::Io {
                key: "packs/ab/x.pack".into(),
                source: std::io::Error::from_raw_os_error(28),
            }),
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
        ));
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (status, code), "{error}");
        }

        let mut h = HeaderMap::new();
        ApiError::RateLimited { retry_after: 7 }.add_headers(&mut h, true);
        assert_eq!(h["retry-after"], "7");
        let unauthorized = ApiError::Unauthorized {
            reason: "no token".into(),
        };
        let mut h = HeaderMap::new();
        unauthorized.add_headers(&mut h, false);
        assert_eq!(h["www-authenticate"], "Basic realm=\"git-model\"");
        assert!(!h.contains_key("lfs-authenticate"));
        unauthorized.add_headers(&mut h, true);
        assert_eq!(h["lfs-authenticate"], "Basic realm=\"git-model\"");
        assert_eq!(h["www-authenticate"], "Basic realm=\"git-model\"");
        let mut h = HeaderMap::new();
        ApiError::RangeNotSatisfiable {
            value: "bytes=9-".into(),
            size: 9,
        }
        .add_headers(&mut h, false);
        assert_eq!(h["content-range"], "bytes */9");
    }
}
