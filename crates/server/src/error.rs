//! [`ApiError`]: every way a request can fail, and the one place that maps failures to an
//! HTTP status and a stable error `code` (the JSON [`gitmodel_proto::ErrorBody`]).
//!
//! Per-file failures inside a registration batch are not `ApiError`s: they are answered in
//! the batch's [`gitmodel_proto::RegisterResult`]s (see [`crate::register`]).

use gitmodel_format::{IdError, PackError, PackId, RecipeError};
use gitmodel_proto::{BodyError, NameError};
use http::{Method, StatusCode};

use crate::storage::StorageError;

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
    #[error("bad Range header {value:?}: {reason}")]
    BadRange { value: String, reason: &'static str },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
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
    #[error("authentication required: {reason}")]
    Unauthorized { reason: String },
    #[error("access denied: {reason}")]
    Forbidden { reason: String },
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
            | BadRange { .. } => StatusCode::BAD_REQUEST,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            BadPack { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Forbidden { .. } => StatusCode::FORBIDDEN,
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
            BodyTimeout { .. } => "timeout",
            TooLarge { .. } => "too_large",
            RangeNotSatisfiable { .. } => "range_not_satisfiable",
            BadPack { .. } => "bad_pack",
            NotFound { .. } => "not_found",
            Unauthorized { .. } => "unauthorized",
            Forbidden { .. } => "forbidden",
            Storage(_) | Internal { .. } => "internal",
        }
    }

    /// The message sent to the client. Server-side failures are described only in the log
    /// (under the request id): their details name internal paths and are no help remotely.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Storage(_) | ApiError::Internal { .. } => {
                "internal server error; the server log has details under this request id"
                    .to_string()
            }
            other => error_chain(other),
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
