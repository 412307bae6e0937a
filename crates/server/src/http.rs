//! HTTP plumbing every handler shares, below them all: response bodies, reading request
//! bodies within their limits and deadlines, the `Range` header, JSON bodies.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;

use crate::conn::BodyFault;
use crate::error::ApiError;
use crate::range::{parse_range, RangeError};

/// Why a streamed response body could not be completed (the connection is then cut, so
/// the client sees a short body, never a wrong one).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Body of every response: a whole buffer (at most one pack) for most answers, a stream
/// for Git LFS downloads ([`crate::download`]).
pub type ResponseBody = BoxBody<Bytes, BodyError>;

/// A response body holding `bytes`.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// The next data of a request body (`None` at its end), failing when the client stalls
/// for longer than `idle_timeout`. Trailers and other non-data frames are skipped.
pub(crate) async fn next_data<B>(
    body: &mut B,
    idle_timeout: Duration,
) -> Result<Option<Bytes>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    loop {
        let frame = match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout {
                    secs: idle_timeout.as_secs(),
                })
            }
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => frame.map_err(body_error)?,
        };
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// A failed read of a request body: `408` when it came too slowly
/// ([`crate::conn::MinRate`]), else `400`.
fn body_error<E: std::error::Error + 'static>(e: E) -> ApiError {
    match (&e as &dyn std::error::Error).downcast_ref::<BodyFault>() {
        Some(slow @ BodyFault::TooSlow { .. }) => ApiError::BodyTooSlow {
            reason: slow.to_string(),
        },
        _ => ApiError::BodyRead {
            reason: e.to_string(),
        },
    }
}

/// The request's declared `Content-Length`, if it has a valid one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a whole request body of at most `limit` bytes. A declared `Content-Length` over
/// the limit is refused before anything is read; an undeclared (chunked) body is refused
/// as soon as it passes the limit.
pub(crate) async fn read_body<B>(
    mut body: B,
    headers: &HeaderMap,
    limit: usize,
    idle_timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || ApiError::TooLarge {
        limit: limit as u64,
    };
    let declared = content_length(headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // Sizing the buffer from the (already bounded) declared length avoids regrowth copies
    // of a 64 MiB pack.
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(data) = next_data(&mut body, idle_timeout).await? {
        if buf.len() + data.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// The byte range a request's `Range` header asks for in an object of `size` bytes, or
/// `None` without the header.
pub(crate) fn requested_range(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::BadRange {
        value: String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(100)
            .collect(),
        reason: "not ASCII",
    })?;
    parse_range(text, size).map(Some).map_err(|e| match e {
        RangeError::Malformed(reason) => ApiError::BadRange {
            value: text.chars().take(100).collect(),
            reason,
        },
        RangeError::Unsatisfiable => ApiError::RangeNotSatisfiable {
            value: text.chars().take(100).collect(),
            size,
        },
    })
}

pub(crate) fn binary(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Decodes a JSON request body.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadJson {
        reason: e.to_string(),
    })
}

/// Sets the headers of a raw object answer.
pub(crate) fn object_headers(headers: &mut HeaderMap, length: u64) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}
