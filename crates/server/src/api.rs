//! The HTTP API: routing, request bodies, handlers, and turning results into responses.
//!
//! [`handle`] is the whole service: it gives each request an id (echoed in
//! `x-request-id`, in error bodies and in the log line it writes when done), routes it,
//! checks the method and the [`Authorizer`](crate::auth::Authorizer), runs the handler,
//! and renders any [`ApiError`] as JSON. Formats and limits come from `gitmodel_proto`;
//! the paths are specified in `docs/protocol.md`.
//!
//! Paths under `<namespace>/<repo>[.git]/info/lfs/` are the Git LFS API: they are routed to
//! [`crate::lfs`] and their errors take the Git LFS shape (`docs/lfs.md`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gitmodel_format::pack::{verify_pack, MAX_PACK_BYTES};
use gitmodel_format::{ChunkId, Oid, PackId};
use gitmodel_proto::{
    decode_ids, ErrorBody, ErrorDetail, PackUploaded, RepoName, VerifyRequest, VerifyResponse,
    BINARY, MAX_QUERY_IDS, MAX_REGISTER_BODY, REQUEST_ID_HEADER,
};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::auth::Access;
use crate::error::{error_chain, ApiError};
use crate::http::{binary, content_length, next_data, read_body, requested_range};
pub use crate::http::{full, BodyError, ResponseBody};
use crate::keys;
use crate::lfs::{self, LfsEndpoint};
use crate::register;
use crate::state::AppState;
use crate::storage::StorageError;
use crate::tenancy;

/// How many recipe lookups one `files/exists` query runs at once.
const EXISTS_CONCURRENCY: usize = 32;
/// Largest `files/verify` body: [`gitmodel_proto::MAX_VERIFY_FILES`] entries of an oid
/// and a segment number, with room for JSON whitespace.
const VERIFY_BODY_LIMIT: usize = gitmodel_proto::MAX_VERIFY_FILES * 128;

/// Largest body of a refused request that is read (and dropped) so that the client gets
/// the answer rather than a reset connection; a longer one, or one that takes longer
/// than [`crate::ServerConfig::refused_body_drain`], gets the answer and the connection
/// closed. Unauthenticated clients can thus hold a connection only that long.
pub const MAX_DRAIN_BYTES: u64 = 8 * 1024 * 1024;

/// Which endpoint of a repository a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    ChunksExist,
    FilesExist,
    FilesVerify,
    Files,
    File(String),
    Pack(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Metrics,
    Repo {
        repo: RepoName,
        endpoint: Endpoint,
    },
    Lfs {
        repo: RepoName,
        endpoint: LfsEndpoint,
    },
}

impl Endpoint {
    /// Allowed methods, as listed in a 405's `Allow` header.
    fn allow(&self) -> &'static str {
        match self {
            Endpoint::ChunksExist
            | Endpoint::FilesExist
            | Endpoint::FilesVerify
            | Endpoint::Files => "POST",
            Endpoint::File(_) => "GET",
            Endpoint::Pack(_) => "GET, PUT",
        }
    }

    /// The access a method needs here, or `None` when the method is not allowed.
    fn access(&self, method: &Method) -> Option<Access> {
        match (self, method) {
            (
                Endpoint::ChunksExist | Endpoint::FilesExist | Endpoint::FilesVerify,
                &Method::POST,
            ) => Some(Access::Read),
            (Endpoint::File(_) | Endpoint::Pack(_), &Method::GET) => Some(Access::Read),
            (Endpoint::Files, &Method::POST) | (Endpoint::Pack(_), &Method::PUT) => {
                Some(Access::Write)
            }
            _ => None,
        }
    }
}

/// Refuses paths that could smuggle a separator or a parent reference past routing or
/// into a storage key: percent-encoding (`%2f`, `%2e%2e`; no valid name needs it),
/// backslashes, and `.` / `..` segments. Checked before routing, so every endpoint
/// answers them with the same `400 bad_path`.
fn check_path(path: &str) -> Result<(), ApiError> {
    let bad = |reason| {
        Err(ApiError::BadPath {
            path: path.chars().take(200).collect(),
            reason,
        })
    };
    if path.contains('%') {
        return bad("percent-encoded characters (such as %2f or %2e) are not accepted");
    }
    if path.contains('\\') {
        return bad("backslashes are not accepted");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return bad("'.' and '..' segments are not accepted");
    }
    Ok(())
}

/// Maps a path to a route: `None` for no route, `Err` for a route shape whose repository
/// name is invalid (a 400, so that `/../x/model/v1/files` is refused as a bad name).
fn parse_route(path: &str) -> Option<Result<Route, ApiError>> {
    if path == "/healthz" {
        return Some(Ok(Route::Health));
    }
    if path == "/metrics" {
        return Some(Ok(Route::Metrics));
    }
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if let [namespace, repo, "info", "lfs", tail @ ..] = segments.as_slice() {
        let endpoint = LfsEndpoint::parse(tail)?;
        return Some(
            RepoName::new(namespace, repo)
                .map(|repo| Route::Lfs { repo, endpoint })
                .map_err(ApiError::from),
        );
    }
    let [namespace, repo, "model", "v1", tail @ ..] = segments.as_slice() else {
        return None;
    };
    let endpoint = match tail {
        ["chunks", "exists"] => Endpoint::ChunksExist,
        ["files", "exists"] => Endpoint::FilesExist,
        ["files", "verify"] => Endpoint::FilesVerify,
        ["files"] => Endpoint::Files,
        ["files", oid] => Endpoint::File((*oid).to_string()),
        ["packs", pack] => Endpoint::Pack((*pack).to_string()),
        _ => return None,
    };
    Some(
        RepoName::new(namespace, repo)
            .map(|repo| Route::Repo { repo, endpoint })
            .map_err(ApiError::from),
    )
}

/// Serves one request. Never fails: errors become JSON error responses.
pub async fn handle<B>(
    state: Arc<AppState>,
    req: Request<B>,
    peer: SocketAddr,
) -> Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let request_id = state.next_request_id();
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let lfs_flavour = lfs::is_lfs_path(&path);
    let span = tracing::info_span!("request", id = %request_id);
    let result = dispatch(&state, req).instrument(span.clone()).await;
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            let _entered = span.enter();
            if e.status().is_server_error() {
                tracing::error!(error = %error_chain(&e), "request failed");
            } else {
                tracing::debug!(error = %error_chain(&e), "request refused");
            }
            if lfs_flavour {
                lfs::error_response(&e, &request_id)
            } else {
                error_response(&e, &request_id)
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    state
        .metrics
        .record(response.status().as_u16(), started.elapsed());
    let _entered = span.enter();
    tracing::info!(
        %method,
        path,
        %peer,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request done"
    );
    response
}

async fn dispatch<B>(
    state: &Arc<AppState>,
    req: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_path(req.uri().path())?;
    let route = match parse_route(req.uri().path()) {
        Some(route) => route?,
        None => {
            return Err(ApiError::UnknownRoute {
                method: req.method().clone(),
                path: req.uri().path().chars().take(200).collect(),
            })
        }
    };
    let (repo, endpoint) = match route {
        Route::Health if req.method() == Method::GET => {
            return Ok(binary(
                StatusCode::OK,
                "text/plain",
                Bytes::from_static(b"ok"),
            ))
        }
        Route::Metrics if req.method() == Method::GET => {
            // The index size moves when any repository stores a chunk nobody else has:
            // with tokens, only a server-wide administrator may watch it.
            state.authorizer().authorize_server(req.headers())?;
            return Ok(binary(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(state.metrics.render(state.index().len())),
            ));
        }
        Route::Health | Route::Metrics => {
            return Err(ApiError::MethodNotAllowed {
                method: req.method().clone(),
                allow: "GET",
            })
        }
        Route::Repo { repo, endpoint } => (repo, endpoint),
        Route::Lfs { repo, endpoint } => return lfs::dispatch(state, req, repo, endpoint).await,
    };
    let Some(access) = endpoint.access(req.method()) else {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().clone(),
            allow: endpoint.allow(),
        });
    };
    let timeout = state.config().body_idle_timeout;
    if let Err(refused) = state.authorizer().authorize(req.headers(), &repo, access) {
        // A client refused in the middle of sending a pack is still writing it: read the
        // rest (a declared length up to a pack's bound) and drop it, so that it gets this
        // answer rather than a reset connection and a "broken pipe".
        // Bounded in size and time: the requester is not trusted with more.
        let declared = content_length(req.headers());
        if declared.is_some_and(|n| n > 0 && n <= MAX_DRAIN_BYTES) {
            let mut body = req.into_body();
            let drain = async { while let Ok(Some(_)) = next_data(&mut body, timeout).await {} };
            let _ = tokio::time::timeout(state.config().refused_body_drain, drain).await;
        }
        return Err(refused);
    }
    match endpoint {
        Endpoint::ChunksExist => {
            let (parts, body) = req.into_parts();
            let body = read_body(body, &parts.headers, MAX_QUERY_IDS * 32, timeout).await?;
            chunks_exist(state, &repo, &body).await
        }
        Endpoint::FilesExist => {
            let (parts, body) = req.into_parts();
            let body = read_body(body, &parts.headers, MAX_QUERY_IDS * 32, timeout).await?;
            files_exist(state, &repo, &body).await
        }
        Endpoint::FilesVerify => {
            let (parts, body) = req.into_parts();
            let body = read_body(body, &parts.headers, VERIFY_BODY_LIMIT, timeout).await?;
            let request: VerifyRequest =
                serde_json::from_slice(&body).map_err(|e| ApiError::BadJson {
                    reason: e.to_string(),
                })?;
            let files = crate::scrub::verify_files(state, &repo, &request.files).await?;
            Ok(json(StatusCode::OK, &VerifyResponse { files }))
        }
        Endpoint::Files => {
            let (parts, body) = req.into_parts();
            let body = read_body(body, &parts.headers, MAX_REGISTER_BODY, timeout).await?;
            let recipes = register::decode_batch(&body)?;
            drop(body);
            let writer = state.authorizer().writer(&parts.headers);
            let answer =
                register::register_batch(Arc::clone(state), repo, writer.as_deref(), recipes)
                    .await?;
            Ok(json(StatusCode::OK, &answer))
        }
        Endpoint::File(oid) => get_file(state, &repo, &Oid::from_hex(&oid)?).await,
        Endpoint::Pack(pack) => {
            let pack = PackId::from_hex(&pack)?;
            if req.method() == Method::PUT {
                let (parts, body) = req.into_parts();
                // MAX_PACK_BYTES is 64 MiB, far below usize::MAX on any supported target.
                let limit = usize::try_from(MAX_PACK_BYTES).unwrap_or(usize::MAX);
                let body = read_body(body, &parts.headers, limit, timeout).await?;
                put_pack(state, &repo, pack, body).await
            } else {
                get_pack(state, &repo, pack, req.headers()).await
            }
        }
    }
}

/// `chunks/exists`: 1 for each chunk in a pack `repo` may read. Chunks only other
/// repositories hold are answered 0, like absent ones: presence must not tell one
/// repository what another stores ([`crate::tenancy`]). Chunks only in damaged packs
/// are answered 0 too, so that a push sends them again ([`crate::scrub`]).
async fn chunks_exist(
    state: &Arc<AppState>,
    repo: &RepoName,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let ids: Vec<ChunkId> = decode_ids(body)?.into_iter().map(ChunkId).collect();
    let readable = state.usable_packs(repo).await?;
    // Off the async threads: up to 16,384 lookups.
    let state = Arc::clone(state);
    let answer: Vec<u8> = tokio::task::spawn_blocking(move || {
        state
            .index()
            .get_many_in(&ids, &readable)
            .iter()
            .map(|loc| u8::from(loc.is_some()))
            .collect()
    })
    .await?;
    Ok(binary(StatusCode::OK, BINARY, answer.into()))
}

/// `files/exists`: 1 for each file registered in `repo`, unless its recipe names a
/// damaged pack ([`crate::scrub`]) or cannot be read: then 0, so that a push from a
/// clone holding the file uploads and registers it again. Recipes are only read when a
/// pack `repo` may read is recorded damaged, so the answer and its cost depend on
/// `repo`'s own data alone.
async fn files_exist(
    state: &AppState,
    repo: &RepoName,
    body: &[u8],
) -> Result<Response<ResponseBody>, ApiError> {
    let oids: Vec<Oid> = decode_ids(body)?.into_iter().map(Oid).collect();
    let damaged = Arc::new(crate::scrub::damaged_for(state, repo).await?);
    let mut answer = vec![0u8; oids.len()];
    let mut pending = oids.iter().enumerate();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < EXISTS_CONCURRENCY {
            let Some((i, oid)) = pending.next() else {
                break;
            };
            let storage = Arc::clone(state.storage());
            let key = keys::recipe_key(repo, oid);
            let damaged = Arc::clone(&damaged);
            tasks.spawn(async move {
                let vouched = crate::scrub::recipe_vouched(&*storage, &key, &damaged).await;
                (i, vouched)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (i, vouched) = joined?;
        if vouched? {
            answer[i] = 1;
        }
    }
    Ok(binary(StatusCode::OK, BINARY, answer.into()))
}

/// `PUT packs/<id>`: verifies the pack, stores it (once for the whole server; a damaged
/// stored copy is replaced by these verified bytes) and records that `repo` may read it:
/// the uploader has proven it holds every chunk in it.
async fn put_pack(
    state: &AppState,
    repo: &RepoName,
    pack: PackId,
    body: Bytes,
) -> Result<Response<ResponseBody>, ApiError> {
    let permit = state.verify_permit().await;
    let (body, verified) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let verified = verify_pack(&pack, &body);
        (body, verified)
    })
    .await?;
    let entries = verified.map_err(|source| ApiError::BadPack { pack, source })?;
    // `created` is answered from the repository's point of view: whether *another*
    // repository already stored this exact pack is none of the uploader's business.
    let had = state.may_read_pack(repo, &pack).await?;
    state.store_pack(pack, body, &entries).await?;
    tenancy::grant(state.storage(), repo, [pack]).await?;
    let created = !had;
    Ok(json(
        StatusCode::OK,
        &PackUploaded {
            pack: pack.to_hex(),
            chunks: u32::try_from(entries.len()).unwrap_or(u32::MAX),
            created,
        },
    ))
}

async fn get_pack(
    state: &Arc<AppState>,
    repo: &RepoName,
    pack: PackId,
    headers: &HeaderMap,
) -> Result<Response<ResponseBody>, ApiError> {
    let not_found = || ApiError::not_found(format!("pack {pack}"));
    if !state.may_read_pack(repo, &pack).await? {
        // Same answer as for a missing pack: do not reveal what other repositories hold.
        return Err(not_found());
    }
    let key = keys::pack_key(&pack);
    let Some(size) = state.storage().head(&key).await? else {
        return Err(not_found());
    };
    // `--presign-downloads`: the bytes come straight from the bucket (the client follows
    // the redirect with its Range header and verifies what it reads, as always).
    let presigned = state.presigned_url(&key).await?;
    if let Some(location) = presigned.and_then(|url| HeaderValue::from_str(&url).ok()) {
        return Ok(redirect(location));
    }
    // Streamed a frame at a time, whole or one range: a client that does not read holds
    // a few frames of memory (and its connection only until `send_timeout`), not a pack.
    let range = requested_range(headers, size)?;
    let (status, wanted) = match range.clone() {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range),
        None => (StatusCode::OK, 0..size),
    };
    let mut response = Response::new(crate::download::stream_object_range(
        state,
        key,
        wanted.clone(),
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(BINARY));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if range.is_some() {
        let content_range = format!("bytes {}-{}/{size}", wanted.start, wanted.end - 1);
        if let Ok(value) = HeaderValue::from_str(&content_range) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// `307 Temporary Redirect` to `location` (the client keeps the method and `Range`).
fn redirect(location: HeaderValue) -> Response<ResponseBody> {
    let mut response = binary(StatusCode::TEMPORARY_REDIRECT, BINARY, Bytes::new());
    response.headers_mut().insert(header::LOCATION, location);
    response
}

async fn get_file(
    state: &AppState,
    repo: &RepoName,
    oid: &Oid,
) -> Result<Response<ResponseBody>, ApiError> {
    match state.storage().get(&keys::recipe_key(repo, oid)).await {
        Ok(bytes) => Ok(binary(StatusCode::OK, BINARY, bytes)),
        Err(StorageError::NotFound { .. }) => {
            Err(ApiError::not_found(format!("file {oid} in {repo}")))
        }
        Err(e) => Err(e.into()),
    }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => binary(status, "application/json", body.into()),
        Err(e) => error_response(
            &ApiError::internal(format!("serializing the answer: {e}")),
            "",
        ),
    }
}

/// Renders an error: its status, and an [`ErrorBody`] carrying its stable code.
pub fn error_response(error: &ApiError, request_id: &str) -> Response<ResponseBody> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: error.code().to_string(),
            message: error.public_message(),
            request_id: (!request_id.is_empty()).then(|| request_id.to_string()),
        },
    };
    // Serializing two strings cannot fail; the fallback keeps this path panic-free anyway.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = binary(error.status(), "application/json", bytes.into());
    error.add_headers(response.headers_mut(), false);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<Result<Route, ApiError>> {
        parse_route(path)
    }

    #[test]
    fn routing() {
        assert!(matches!(route("/healthz"), Some(Ok(Route::Health))));
        assert!(matches!(route("/metrics"), Some(Ok(Route::Metrics))));
        let Some(Ok(Route::Repo { repo, endpoint })) = route("/acme/vision.git/model/v1/files")
        else {
            panic!("no route");
        };
        assert_eq!(repo.to_string(), "acme/vision");
        assert_eq!(endpoint, Endpoint::Files);
        assert!(matches!(
            route("/a/b/model/v1/packs/xyz"),
            Some(Ok(Route::Repo {
                endpoint: Endpoint::Pack(_),
                ..
            }))
        ));
        for unknown in [
            "/",
            "",
            "/a/b",
            "/a/b/model/v2/files",
            "/a/b/model/v1/files/x/y",
            "/a/b/model/v1/chunks",
            "/a//model/v1/files/exists/x",
        ] {
            assert!(route(unknown).is_none(), "{unknown}");
        }
        for bad in [
            "/../x/model/v1/files",
            "/a/../model/v1/files",
            "/a/%2e%2e/model/v1/files",
            "/a//model/v1/files",
        ] {
            assert!(
                matches!(route(bad), Some(Err(ApiError::BadName(_)))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lfs_routing() {
        for (path, want) in [
            (
                "/acme/vision.git/info/lfs/objects/batch",
                LfsEndpoint::Batch,
            ),
            ("/acme/vision/info/lfs/objects/batch", LfsEndpoint::Batch),
            (
                "/acme/vision.git/info/lfs/objects/abc",
                LfsEndpoint::Object("abc".into()),
            ),
            ("/acme/vision.git/info/lfs/verify", LfsEndpoint::Verify),
            ("/acme/vision.git/info/lfs/locks", LfsEndpoint::Locks),
            (
                "/acme/vision.git/info/lfs/locks/verify",
                LfsEndpoint::LocksVerify,
            ),
            (
                "/acme/vision.git/info/lfs/locks/7/unlock",
                LfsEndpoint::Unlock("7".into()),
            ),
        ] {
            let Some(Ok(Route::Lfs { repo, endpoint })) = route(path) else {
                panic!("no LFS route for {path}");
            };
            assert_eq!(repo.to_string(), "acme/vision");
            assert_eq!(endpoint, want, "{path}");
        }
        assert!(route("/acme/vision/info/lfs").is_none());
        assert!(route("/acme/vision/info/lfs/objects").is_none());
        assert!(matches!(
            route("/../x/info/lfs/objects/batch"),
            Some(Err(ApiError::BadName(_)))
        ));
    }

    #[test]
    fn methods() {
        assert_eq!(Endpoint::Files.access(&Method::POST), Some(Access::Write));
        assert_eq!(
            Endpoint::Pack(String::new()).access(&Method::PUT),
            Some(Access::Write)
        );
        assert_eq!(
            Endpoint::Pack(String::new()).access(&Method::GET),
            Some(Access::Read)
        );
        assert_eq!(
            Endpoint::ChunksExist.access(&Method::POST),
            Some(Access::Read)
        );
        assert_eq!(Endpoint::File(String::new()).access(&Method::DELETE), None);
        assert_eq!(Endpoint::Files.access(&Method::GET), None);
    }
}
