//! The Git LFS API over the same stores as the native one: Batch API (basic transfer),
//! the basic-transfer object endpoints, and routing for the locking API ([`crate::locks`]).
//!
//! Everything lives under `<namespace>/<repo>[.git]/info/lfs/` (`docs/lfs.md`):
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `objects/batch` | which objects to transfer, and where ([`LfsEndpoint::Batch`]) |
//! | PUT | `objects/<oid>` | upload: chunked, deduplicated and packed ([`crate::upload`]) |
//! | GET | `objects/<oid>` | download, rebuilt from the recipe, `Range` honoured ([`crate::download`]) |
//! | POST | `verify` | `{oid, size}`: is the upload registered? |
//! | GET, POST | `locks`, POST `locks/verify`, POST `locks/<id>/unlock` | [`crate::locks`] |
//!
//! An LFS object of a repository *is* a registered file of that repository: a recipe under
//! the same key as native registration, so objects pushed with either protocol can be
//! fetched with the other. JSON bodies use [`MEDIA_TYPE`]; errors take the Git LFS shape
//! `{message, request_id}` ([`error_response`]), with status and headers from
//! [`ApiError`]. Only the `basic` transfer adapter and `sha256` object names exist.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use gitmodel_format::Oid;
use gitmodel_proto::RepoName;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::auth::Access;
use crate::download;
use crate::error::ApiError;
use crate::http::{parse_json, ResponseBody};
use crate::locks::{self, Lock};
use crate::state::AppState;
use crate::upload;

/// Media type of every Git LFS JSON request and answer.
pub const MEDIA_TYPE: &str = "application/vnd.git-lfs+json";
/// Most objects in one batch request (the reference client sends at most 100).
pub const MAX_BATCH_OBJECTS: usize = 1000;
/// Largest JSON request body (a full batch is about 100 KiB).
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Lifetime announced for transfer actions. Nothing expires them today (no signed URLs);
/// the value only tells the client when to ask again.
pub const EXPIRES_IN_SECS: i64 = 3600;
/// Recipe lookups one batch runs at once.
const LOOKUP_CONCURRENCY: usize = 32;
/// Largest object size a batch or verify request may name: 2^63 − 1, what Git LFS
/// clients can represent (their sizes are signed 64-bit), so every size echoed back
/// parses as the integer it was.
pub const MAX_OBJECT_SIZE: u64 = i64::MAX as u64;

/// Which Git LFS endpoint of a repository a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LfsEndpoint {
    Batch,
    Object(String),
    Verify,
    Locks,
    LocksVerify,
    Unlock(String),
}

impl LfsEndpoint {
    /// The endpoint for the path segments after `info/lfs/`.
    pub fn parse(tail: &[&str]) -> Option<LfsEndpoint> {
        Some(match tail {
            ["objects", "batch"] => LfsEndpoint::Batch,
            ["objects", oid] => LfsEndpoint::Object((*oid).to_string()),
            ["verify"] => LfsEndpoint::Verify,
            ["locks"] => LfsEndpoint::Locks,
            ["locks", "verify"] => LfsEndpoint::LocksVerify,
            ["locks", id, "unlock"] => LfsEndpoint::Unlock((*id).to_string()),
            _ => return None,
        })
    }

    fn allow(&self) -> &'static str {
        match self {
            LfsEndpoint::Object(_) => "GET, PUT",
            LfsEndpoint::Locks => "GET, POST",
            _ => "POST",
        }
    }

    /// The access a method needs here (for a batch: the least it needs, read; an upload
    /// batch is checked again for write once its body is parsed), or `None` when the
    /// method is not allowed.
    fn access(&self, method: &Method) -> Option<Access> {
        match (self, method) {
            (LfsEndpoint::Batch, &Method::POST)
            | (LfsEndpoint::Object(_), &Method::GET)
            | (LfsEndpoint::Locks, &Method::GET) => Some(Access::Read),
            (LfsEndpoint::Object(_), &Method::PUT)
            | (LfsEndpoint::Verify, &Method::POST)
            | (LfsEndpoint::Locks, &Method::POST)
            | (LfsEndpoint::LocksVerify, &Method::POST)
            | (LfsEndpoint::Unlock(_), &Method::POST) => Some(Access::Write),
            _ => None,
        }
    }
}

/// Whether errors on `path` are answered in the Git LFS shape.
pub fn is_lfs_path(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/').skip(2);
    segments.next() == Some("info") && segments.next() == Some("lfs")
}

/// Runs one Git LFS request (the route is already parsed).
pub(crate) async fn dispatch<B>(
    state: &Arc<AppState>,
    req: Request<B>,
    repo: RepoName,
    endpoint: LfsEndpoint,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(access) = endpoint.access(req.method()) else {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().clone(),
            allow: endpoint.allow(),
        });
    };
    state.authorizer().authorize(req.headers(), &repo, access)?;
    let timeout = state.config().body_idle_timeout;
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    match endpoint {
        LfsEndpoint::Object(oid) => {
            let oid = Oid::from_hex(&oid)?;
            if parts.method == Method::PUT {
                let declared = crate::http::content_length(headers);
                upload::put_object(state, &repo, oid, declared, body, timeout).await?;
                Ok(lfs_json(StatusCode::OK, &serde_json::json!({})))
            } else {
                download::get_object(state, &repo, &oid, headers).await
            }
        }
        LfsEndpoint::Locks if parts.method == Method::GET => {
            let query = parts.uri.query().unwrap_or("");
            let answer = locks::list(state, &repo, query).await?;
            Ok(lfs_json(StatusCode::OK, &answer))
        }
        // Every other endpoint takes a JSON body.
        endpoint => {
            check_media_type(headers)?;
            let body = crate::http::read_body(body, headers, MAX_JSON_BODY, timeout).await?;
            match endpoint {
                LfsEndpoint::Batch => batch(state, &repo, headers, &body).await,
                LfsEndpoint::Verify => verify(state, &repo, &body).await,
                LfsEndpoint::Locks => {
                    let lock = locks::create(state, &repo, headers, &body).await?;
                    Ok(lfs_json(StatusCode::CREATED, &LockAnswer { lock }))
                }
                LfsEndpoint::LocksVerify => {
                    let answer = locks::verify(state, &repo, headers, &body).await?;
                    Ok(lfs_json(StatusCode::OK, &answer))
                }
                LfsEndpoint::Unlock(id) => {
                    let lock = locks::unlock(state, &repo, headers, &id, &body).await?;
                    Ok(lfs_json(StatusCode::OK, &LockAnswer { lock }))
                }
                LfsEndpoint::Object(_) => Err(ApiError::internal("object route fell through")),
            }
        }
    }
}

/// `{"lock": …}`: the answer to creating or removing a lock.
#[derive(Debug, Serialize)]
struct LockAnswer {
    lock: Lock,
}

/// Refuses a JSON body sent as something else. A missing content type is tolerated, and
/// so is plain `application/json`; parameters such as `; charset=utf-8` are ignored.
fn check_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(MEDIA_TYPE) || essence.eq_ignore_ascii_case("application/json")
    {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType {
        content_type: text.chars().take(100).collect(),
        expected: MEDIA_TYPE,
    })
}

/// A Git LFS JSON answer.
pub(crate) fn lfs_json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => crate::http::binary(status, MEDIA_TYPE, body.into()),
        Err(e) => error_response(
            &ApiError::internal(format!("serializing the answer: {e}")),
            "",
        ),
    }
}

/// The Git LFS error body: `message` for people (the reference client prints it),
/// `request_id` to find the server's log line, and for a lock conflict the existing lock.
#[derive(Debug, Serialize)]
struct LfsErrorBody<'a> {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<&'a Lock>,
}

/// Renders an error in the Git LFS shape; status and headers (`LFS-Authenticate` on a 401,
/// `Retry-After` on a 429) come from [`ApiError`].
pub fn error_response(error: &ApiError, request_id: &str) -> Response<ResponseBody> {
    let body = LfsErrorBody {
        message: error.public_message(),
        request_id: (!request_id.is_empty()).then_some(request_id),
        lock: match error {
            ApiError::LockExists { lock } => Some(lock),
            _ => None,
        },
    };
    // Serializing strings cannot fail; the fallback keeps this path panic-free anyway.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = crate::http::binary(error.status(), MEDIA_TYPE, bytes.into());
    error.add_headers(response.headers_mut(), true);
    response
}

#[derive(Debug, Deserialize)]
struct BatchRequest {
    operation: String,
    #[serde(default)]
    transfers: Option<Vec<String>>,
    objects: Vec<ObjectSpec>,
    #[serde(default)]
    hash_algo: Option<String>,
    // `ref` is accepted and ignored: authorization does not depend on refs yet.
}

/// An object as a client names it. The size stays a JSON number so that a negative,
/// fractional or too large size is answered per object (422), not as unreadable JSON.
/// (serde_json reads an integer past `u64::MAX` as a float: `2^64` arrives as
/// `1.8446744073709552e19`, which is why sizes are checked, and echoed, as integers.)
#[derive(Debug, Deserialize)]
struct ObjectSpec {
    oid: String,
    size: serde_json::Number,
}

#[derive(Debug, Serialize)]
struct BatchResponse {
    transfer: &'static str,
    objects: Vec<ObjectAnswer>,
    hash_algo: &'static str,
}

#[derive(Debug, Serialize)]
struct ObjectAnswer {
    oid: String,
    /// The size asked about; left out when it is not a signed 64-bit integer (a float,
    /// or past 2^63 − 1), which the client could not parse back.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actions: Option<Actions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ObjectError>,
}

#[derive(Debug, Default, Serialize)]
struct Actions {
    #[serde(skip_serializing_if = "Option::is_none")]
    download: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<Action>,
}

#[derive(Debug, Serialize)]
struct Action {
    href: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    header: BTreeMap<String, String>,
    expires_in: i64,
}

#[derive(Debug, Serialize)]
struct ObjectError {
    code: u16,
    message: String,
}

/// An object of a batch, once checked.
enum Checked {
    Valid { oid: Oid, size: u64 },
    Invalid(String),
}

fn check_object(spec: &ObjectSpec) -> Checked {
    let Ok(oid) = Oid::from_hex(&spec.oid) else {
        return Checked::Invalid(format!(
            "invalid oid {:?}: expected 64 lowercase hex digits (a SHA-256)",
            spec.oid.chars().take(80).collect::<String>()
        ));
    };
    match spec.size.as_u64() {
        Some(size) if size <= MAX_OBJECT_SIZE => Checked::Valid { oid, size },
        _ => Checked::Invalid(format!(
            "object {oid}: invalid size {}: expected a whole number of bytes from 0 to \
             {MAX_OBJECT_SIZE} (2^63 - 1)",
            size_text(&spec.size)
        )),
    }
}

/// A size as the client most likely wrote it: an integer too large for `u64` reaches us
/// as a float, printed whole rather than as `1.8446744073709552e19`.
fn size_text(size: &serde_json::Number) -> String {
    match size.as_f64() {
        Some(f) if size.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
        _ => size.to_string(),
    }
}

/// The size to echo back: only as the signed 64-bit integer a client can parse.
fn echo_size(size: &serde_json::Number) -> Option<serde_json::Number> {
    size.as_i64().map(serde_json::Number::from)
}

async fn batch(
    state: &Arc<AppState>,
    repo: &RepoName,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: BatchRequest = parse_json(body)?;
    let upload = match request.operation.as_str() {
        "download" => false,
        "upload" => {
            state.authorizer().authorize(headers, repo, Access::Write)?;
            true
        }
        other => {
            return Err(ApiError::Invalid {
                what: format!(
                    "unknown operation {:?}: expected \"download\" or \"upload\"",
                    other.chars().take(40).collect::<String>()
                ),
            })
        }
    };
    if let Some(algo) = request.hash_algo.as_deref() {
        if algo != "sha256" {
            return Err(ApiError::UnsupportedHashAlgo {
                algo: algo.chars().take(40).collect(),
            });
        }
    }
    if let Some(transfers) = &request.transfers {
        if !transfers.is_empty() && !transfers.iter().any(|t| t == "basic") {
            return Err(ApiError::Invalid {
                what: "only the \"basic\" transfer adapter is supported".to_string(),
            });
        }
    }
    if request.objects.len() > MAX_BATCH_OBJECTS {
        return Err(ApiError::TooManyObjects {
            count: request.objects.len(),
            limit: MAX_BATCH_OBJECTS,
        });
    }
    let base = lfs_base_url(headers, repo, state.config().tls)?;
    let max_object = state.config().max_lfs_object_bytes;
    // Credentials the client sent for the batch are handed back for the transfers, so that
    // they reach the object endpoints whatever the client's credential helper does.
    let mut pass_headers = BTreeMap::new();
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        pass_headers.insert("Authorization".to_string(), auth.to_string());
    }
    let authenticated = (!pass_headers.is_empty()).then_some(true);
    let action = |href: String| Action {
        href,
        header: pass_headers.clone(),
        expires_in: EXPIRES_IN_SECS,
    };

    let checked: Vec<Checked> = request.objects.iter().map(check_object).collect();
    let mut sizes = lookup_sizes(state, repo, &checked).await?;
    if upload {
        // An object whose stored copy uses a damaged pack is asked for again, so that an
        // upload repairs it (see `crate::scrub`).
        let damaged = crate::scrub::damaged_for(state, repo).await?;
        if !damaged.is_empty() {
            for (size, checked) in sizes.iter_mut().zip(&checked) {
                if let (Some(_), Checked::Valid { oid, .. }) = (&size, checked) {
                    let key = crate::keys::recipe_key(repo, oid);
                    if !crate::scrub::recipe_vouched(&**state.storage(), &key, &damaged).await? {
                        *size = None;
                    }
                }
            }
        }
    }
    let objects = request
        .objects
        .into_iter()
        .zip(checked)
        .zip(sizes)
        .map(|((spec, checked), stored)| {
            let fail = |code: StatusCode, message: String| ObjectAnswer {
                oid: spec.oid.clone(),
                size: echo_size(&spec.size),
                authenticated: None,
                actions: None,
                error: Some(ObjectError {
                    code: code.as_u16(),
                    message,
                }),
            };
            let (oid, size) = match checked {
                Checked::Invalid(message) => {
                    return fail(StatusCode::UNPROCESSABLE_ENTITY, message)
                }
                Checked::Valid { oid, size } => (oid, size),
            };
            if upload && size > max_object {
                let message = ApiError::ObjectTooLarge {
                    size,
                    limit: max_object,
                }
                .to_string();
                return fail(StatusCode::UNPROCESSABLE_ENTITY, message);
            }
            let href = format!("{base}/objects/{oid}");
            let actions = match stored {
                Some(stored) if stored != size => {
                    return fail(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("object {oid} has {stored} bytes, not {size}"),
                    )
                }
                // Present: download it, or skip the upload (no actions at all).
                Some(_) if upload => None,
                Some(_) => Some(Actions {
                    download: Some(action(href)),
                    ..Actions::default()
                }),
                None if upload => Some(Actions {
                    upload: Some(action(href)),
                    verify: Some(action(format!("{base}/verify"))),
                    ..Actions::default()
                }),
                None => return fail(StatusCode::NOT_FOUND, format!("object {oid} not found")),
            };
            ObjectAnswer {
                oid: spec.oid,
                size: echo_size(&spec.size),
                authenticated,
                actions,
                error: None,
            }
        })
        .collect();
    Ok(lfs_json(
        StatusCode::OK,
        &BatchResponse {
            transfer: "basic",
            objects,
            hash_algo: "sha256",
        },
    ))
}

/// The stored size of every valid object of a batch that `repo` has (`None` for invalid
/// or absent ones), looked up a few at a time.
async fn lookup_sizes(
    state: &Arc<AppState>,
    repo: &RepoName,
    checked: &[Checked],
) -> Result<Vec<Option<u64>>, ApiError> {
    let mut sizes = vec![None; checked.len()];
    let mut pending = checked.iter().enumerate().filter_map(|(i, c)| match c {
        Checked::Valid { oid, .. } => Some((i, *oid)),
        Checked::Invalid(_) => None,
    });
    let repo = Arc::new(repo.clone());
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < LOOKUP_CONCURRENCY {
            let Some((i, oid)) = pending.next() else {
                break;
            };
            let (state, repo) = (Arc::clone(state), Arc::clone(&repo));
            tasks.spawn(async move { (i, download::recipe_size(&state, &repo, &oid).await) });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (i, size) = joined?;
        sizes[i] = size?;
    }
    Ok(sizes)
}

#[derive(Debug, Deserialize)]
struct VerifyRequest {
    oid: String,
    size: serde_json::Number,
}

/// `POST verify`: the client's check, after an upload, that the server has the object.
async fn verify(
    state: &Arc<AppState>,
    repo: &RepoName,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let request: VerifyRequest = parse_json(body)?;
    let spec = ObjectSpec {
        oid: request.oid,
        size: request.size,
    };
    let (oid, size) = match check_object(&spec) {
        Checked::Valid { oid, size } => (oid, size),
        Checked::Invalid(what) => return Err(ApiError::Invalid { what }),
    };
    match download::recipe_size(state, repo, &oid).await? {
        None => Err(ApiError::not_found(format!("object {oid} in {repo}"))),
        Some(stored) if stored != size => Err(ApiError::Invalid {
            what: format!("object {oid} has {stored} bytes, not {size}"),
        }),
        Some(_) => Ok(lfs_json(StatusCode::OK, &serde_json::json!({}))),
    }
}

/// `http(s)://<host>/<namespace>/<repo>.git/info/lfs`, from the request's `Host` header:
/// the address the client reached us at is the one it can reach the object endpoints at.
fn lfs_base_url(headers: &HeaderMap, repo: &RepoName, tls: bool) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| valid_host(h))
        .ok_or_else(|| ApiError::BadRequest {
            what: "a Host header (host[:port]) is needed to build transfer URLs".to_string(),
        })?;
    let scheme = if tls { "https" } else { "http" };
    Ok(format!(
        "{scheme}://{host}/{}/{}.git/info/lfs",
        repo.namespace, repo.repo
    ))
}

/// A `host[:port]` that is safe to put in a URL: a DNS name, an IPv4 or a bracketed IPv6
/// address, optionally a port. Anything else (spaces, `/`, `@`, …) is refused.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn endpoints() {
        assert_eq!(
            LfsEndpoint::parse(&["objects", "batch"]),
            Some(LfsEndpoint::Batch)
        );
        assert_eq!(
            LfsEndpoint::parse(&["locks", "abc", "unlock"]),
            Some(LfsEndpoint::Unlock("abc".into()))
        );
        assert_eq!(
            LfsEndpoint::parse(&["locks", "verify"]),
            Some(LfsEndpoint::LocksVerify)
        );
        assert_eq!(LfsEndpoint::parse(&["objects"]), None);
        assert_eq!(LfsEndpoint::parse(&["locks", "a", "b"]), None);
        assert_eq!(LfsEndpoint::Batch.access(&Method::POST), Some(Access::Read));
        assert_eq!(
            LfsEndpoint::Object(String::new()).access(&Method::PUT),
            Some(Access::Write)
        );
        assert_eq!(LfsEndpoint::Batch.access(&Method::GET), None);
        assert!(is_lfs_path("/acme/vision.git/info/lfs/objects/batch"));
        assert!(is_lfs_path("/acme/vision/info/lfs/locks"));
        assert!(!is_lfs_path("/acme/vision/model/v1/files"));
        assert!(!is_lfs_path("/info/lfs/x"));
    }

    #[test]
    fn media_types() {
        let mut h = HeaderMap::new();
        check_media_type(&h).unwrap();
        for ok in [
            "application/vnd.git-lfs+json",
            "application/vnd.git-lfs+json; charset=utf-8",
            "Application/VND.git-lfs+JSON;charset=UTF-8",
            "application/json",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            check_media_type(&h).unwrap();
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(
            check_media_type(&h),
            Err(ApiError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn hosts() {
        for ok in ["localhost", "127.0.0.1:8080", "[::1]:80", "git.example.com"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "a b", "evil.com/x", "user@host", "h\r\nx"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn object_checks() {
        let spec = |oid: &str, size: &str| ObjectSpec {
            oid: oid.to_string(),
            size: serde_json::from_str(size).unwrap(),
        };
        let good = "a".repeat(64);
        assert!(matches!(
            check_object(&spec(&good, "0")),
            Checked::Valid { size: 0, .. }
        ));
        assert!(matches!(
            check_object(&spec(&good, "9223372036854775807")),
            Checked::Valid { size, .. } if size == MAX_OBJECT_SIZE
        ));
        for (size, shown) in [
            ("9223372036854775808", "9223372036854775808"),
            ("18446744073709551615", "18446744073709551615"),
            ("18446744073709551616", "18446744073709551616"),
        ] {
            let number = serde_json::from_str(size).unwrap();
            let checked = check_object(&ObjectSpec {
                oid: good.clone(),
                size: number,
            });
            let Checked::Invalid(message) = checked else {
                panic!("{size} accepted");
            };
            assert!(
                message.contains(&good) && message.contains(shown),
                "{message}"
            );
        }
        let two_to_64: serde_json::Number = serde_json::from_str("18446744073709551616").unwrap();
        assert!(two_to_64.is_f64(), "serde_json reads 2^64 as a float");
        assert_eq!(echo_size(&two_to_64), None);
        assert_eq!(
            echo_size(&serde_json::from_str("-1").unwrap()),
            Some((-1).into())
        );
        for (oid, size) in [
            (good.as_str(), "-1"),
            (good.as_str(), "1.5"),
            ("abc", "1"),
            (&*"A".repeat(64), "1"),
        ] {
            assert!(
                matches!(check_object(&spec(oid, size)), Checked::Invalid(_)),
                "{oid} {size}"
            );
        }
    }
}
