//! The HTTP client for one repository on a git-model server (`model.url`).
//!
//! Every call is idempotent on the server, so transient failures (connection errors,
//! 5xx, 429) are retried with exponential backoff, honouring `Retry-After`. Bodies read
//! from the server are bounded; nothing here trusts what comes back.
//!
//! **Credentials.** A fixed [`Auth`] (`GIT_MODEL_TOKEN`, sent as a bearer token) takes
//! precedence. Without one, the first `401` asks the [`CredentialHelper`] once for the
//! whole [`Remote`] (all threads wait for that one answer, so a person is prompted at
//! most once), and the request is retried with HTTP Basic; credentials that work are
//! approved, credentials the server refuses are rejected and the call fails with
//! [`ClientError::AuthRequired`]. Secrets never reach `Debug` output, logs or errors.
//!
//! **TLS** ([`TlsOptions`], from git's `http.sslCAInfo` / `http.sslVerify`): by default
//! the server's certificate is checked against the bundled web PKI roots; a CA file
//! replaces them; `verify: false` turns checking off (with a warning).
//!
//! **Deadlines.** Besides the idle limit per read ([`READ_IDLE`]), every call has an
//! overall deadline, retries included: [`RemoteOptions::transfer_timeout`] when set
//! (`model.transferTimeout`, `GIT_MODEL_TRANSFER_TIMEOUT`), else [`DEADLINE_BASE`] plus
//! the time the bytes the call may move take at [`DEADLINE_RATE`]. A server that drips
//! its answer a byte at a time fails the call with [`ClientError::Timeout`].

// The closures return ureq's own error type, which is large; it only lives on the error path.
#![allow(clippy::result_large_err)]

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use gitmodel_format::recipe::HEADER_LEN as RECIPE_HEADER_LEN;
use gitmodel_format::{ChunkId, Oid, PackId, Recipe, RecipeHeader};
use gitmodel_proto as proto;

use crate::credentials::{Credential, CredentialHelper, CredentialUrl};
use crate::ClientError;

const USER_AGENT: &str = concat!("git-model/", env!("CARGO_PKG_VERSION"));
const ATTEMPTS: u32 = 5;
/// Largest recipe accepted from the server (a 1 TiB file has ~16 M chunks × 36 B).
const MAX_RECIPE_BYTES: u64 = 1 << 30;
/// Longest wait for the next bytes of an answer (or for the server to take ours).
pub const READ_IDLE: Duration = Duration::from_secs(120);
/// Default overall deadline of a call: this much, plus [`DEADLINE_RATE`] for its bytes.
pub const DEADLINE_BASE: Duration = Duration::from_secs(60);
/// Slowest transfer rate the default deadline allows for (bytes per second).
pub const DEADLINE_RATE: u64 = 256 * 1024;
/// Largest JSON answer accepted.
const MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;

/// Credentials sent with every request.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer <token>` (`GIT_MODEL_TOKEN`).
    Bearer(String),
    /// HTTP Basic, as git credential helpers supply it (the token is the password).
    Basic(Credential),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(<redacted>)"),
            Auth::Basic(c) => write!(f, "Auth::Basic({c:?})"),
        }
    }
}

impl Auth {
    fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
            Auth::Basic(c) => {
                let raw = format!("{}:{}", c.username, c.password);
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                Some(format!("Basic {encoded}"))
            }
        }
    }
}

/// How the server's TLS certificate is checked.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust instead of the built-in roots
    /// (git's `http.sslCAInfo`).
    pub ca_file: Option<PathBuf>,
    /// `false` accepts any certificate (git's `http.sslVerify = false`).
    pub verify: bool,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            ca_file: None,
            verify: true,
        }
    }
}

/// Everything a [`Remote`] is built with besides its URL.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Fixed credentials; when set, the helper is never asked.
    pub auth: Auth,
    /// Asked for credentials on a `401` when `auth` is [`Auth::None`].
    pub credentials: Option<Arc<dyn CredentialHelper>>,
    pub tls: TlsOptions,
    /// Overall deadline of every call, retries included (`model.transferTimeout`);
    /// `None`: [`DEADLINE_BASE`] plus [`DEADLINE_RATE`] for the bytes the call may move.
    pub transfer_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    agent: ureq::Agent,
    creds: Arc<Creds>,
    transfer_timeout: Option<Duration>,
}

impl Remote {
    /// A client for the repository at `url` (`http(s)://host[:port]/<namespace>/<repo>`).
    pub fn new(url: &str, auth: Auth) -> Result<Remote, ClientError> {
        Remote::with_options(
            url,
            RemoteOptions {
                auth,
                ..RemoteOptions::default()
            },
        )
    }

    /// A client for the repository at `url` with credentials and TLS settings.
    pub fn with_options(url: &str, options: RemoteOptions) -> Result<Remote, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| ClientError::BadUrl {
                url: url.to_string(),
                why: "it must start with http:// or https://".into(),
            })?;
        let mut parts = rest.split('/');
        let host = parts.next().unwrap_or("");
        if host.contains('@') {
            // The URL may hold a secret: do not repeat it.
            return Err(ClientError::BadUrl {
                url: "(not shown: it holds credentials)".into(),
                why: "credentials do not belong in model.url: use a git credential helper or \
                      GIT_MODEL_TOKEN"
                    .into(),
            });
        }
        let path: Vec<&str> = parts.collect();
        if host.is_empty() || path.len() != 2 {
            return Err(ClientError::BadUrl {
                url: url.to_string(),
                why: "expected http://host[:port]/<namespace>/<repo>".into(),
            });
        }
        proto::RepoName::new(path[0], path[1]).map_err(|e| ClientError::BadUrl {
            url: url.to_string(),
            why: e.to_string(),
        })?;
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(READ_IDLE)
            .timeout_write(READ_IDLE)
            .user_agent(USER_AGENT)
            .max_idle_connections_per_host(16);
        let tls_error = |what: String| ClientError::Tls {
            url: base.clone(),
            what,
        };
        if let Some(config) = tls_config(&options.tls).map_err(tls_error)? {
            if !options.tls.verify {
                tracing::warn!(
                    "http.sslVerify is false: the TLS certificate of {base} is not checked"
                );
            }
            agent = agent.tls_config(config);
        }
        let creds = Creds {
            target: CredentialUrl::parse(&base),
            fixed: options.auth,
            helper: options.credentials,
            state: Mutex::new(Filled::default()),
        };
        Ok(Remote {
            base,
            agent: agent.build(),
            creds: Arc::new(creds),
            transfer_timeout: options.transfer_timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The overall deadline of a call that moves up to `bytes` bytes (see the module
    /// header).
    fn deadline(&self, bytes: u64) -> Deadline {
        let limit = self
            .transfer_timeout
            .unwrap_or_else(|| DEADLINE_BASE + Duration::from_secs(bytes / DEADLINE_RATE));
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    /// A request whose overall time (connection, upload, answer) ends at `deadline`.
    fn request(&self, method: &str, url: &str, deadline: &Deadline) -> ureq::Request {
        let req = self
            .agent
            .request(method, url)
            .timeout(deadline.remaining().max(Duration::from_millis(1)));
        match self.creds.current().header() {
            None => req,
            Some(value) => req.set("Authorization", &value),
        }
    }

    /// Sends a request built by `make`, retrying transient failures until `deadline`, and
    /// asking for credentials on a `401` (see the module header).
    fn send(
        &self,
        url: &str,
        deadline: &Deadline,
        make: impl Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ClientError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if deadline.passed() {
                return Err(deadline.error(url));
            }
            let generation = self.creds.generation();
            let (err, retry_after) = match make() {
                Ok(resp) => {
                    self.creds.worked(generation);
                    return Ok(resp);
                }
                Err(ureq::Error::Status(401, resp)) => {
                    let message = match http_error(url, 401, resp) {
                        ClientError::Http { message, .. } => message,
                        other => other.to_string(),
                    };
                    self.creds.refused(generation, &message).map_err(|why| {
                        ClientError::AuthRequired {
                            url: self.base.clone(),
                            why,
                        }
                    })?;
                    // New credentials: try again, without counting it as a failure.
                    attempt -= 1;
                    continue;
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let retry_after = resp
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let err = http_error(url, status, resp);
                    if !transient(status) {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(ureq::Error::Transport(_)) if deadline.passed() => {
                    return Err(deadline.error(url))
                }
                Err(ureq::Error::Transport(t)) => (
                    ClientError::Transport {
                        url: url.to_string(),
                        message: t.to_string(),
                    },
                    None,
                ),
            };
            if attempt >= ATTEMPTS {
                return Err(err);
            }
            let wait = retry_after.unwrap_or(delay).min(Duration::from_secs(30));
            if wait >= deadline.remaining() {
                // No time for another attempt: say why it stopped.
                tracing::warn!("{err}");
                return Err(deadline.error(url));
            }
            tracing::warn!("{err}; retrying in {:.1}s", wait.as_secs_f64());
            std::thread::sleep(wait);
            delay *= 2;
        }
    }

    /// [`Remote::send`], then reads the whole answer (at most `limit` bytes). A connection
    /// lost while the body arrives is retried like one lost before the answer: every call
    /// is idempotent, and a half-read body is never returned.
    fn send_read(
        &self,
        url: &str,
        limit: u64,
        deadline: &Deadline,
        make: impl Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<Answer, ClientError> {
        self.send_with(url, deadline, make, |status, content_range, body| {
            Ok(Answer {
                status,
                content_range,
                body: read_at_most(url, body, limit)?,
            })
        })
    }

    /// [`Remote::send`], then `read` takes the answer's status, `Content-Range` and body.
    /// A connection lost while the body arrives (`read` answers [`ClientError::Transport`])
    /// is retried like one lost before the answer, until `deadline`.
    fn send_with<T>(
        &self,
        url: &str,
        deadline: &Deadline,
        make: impl Fn() -> Result<ureq::Response, ureq::Error>,
        read: impl Fn(u16, Option<String>, &mut dyn Read) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(url, deadline, &make)?;
            let status = resp.status();
            let content_range = resp.header("Content-Range").map(str::to_string);
            let mut body = resp.into_reader();
            match read(status, content_range, &mut body) {
                Ok(v) => return Ok(v),
                Err(ClientError::Transport { .. }) if deadline.passed() => {
                    return Err(deadline.error(url))
                }
                Err(err @ ClientError::Transport { .. })
                    if attempt < ATTEMPTS && delay < deadline.remaining() =>
                {
                    tracing::warn!(
                        "{err} (while reading the answer); retrying in {:.1}s",
                        delay.as_secs_f64()
                    );
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn exists(&self, path: &str, ids: &[[u8; 32]]) -> Result<Vec<bool>, ClientError> {
        let url = self.endpoint(path);
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(proto::MAX_QUERY_IDS) {
            let body = proto::encode_ids(batch.iter());
            let deadline = self.deadline(body.len() as u64);
            let answer = self
                .send_read(&url, batch.len() as u64, &deadline, || {
                    self.request("POST", &url, &deadline)
                        .set("Content-Type", proto::BINARY)
                        .send_bytes(&body)
                })?
                .body;
            let present = proto::decode_presence(&answer, batch.len()).map_err(|e| {
                ClientError::Protocol {
                    url: url.clone(),
                    what: e.to_string(),
                }
            })?;
            out.extend(present);
        }
        Ok(out)
    }

    pub fn chunks_exist(&self, ids: &[ChunkId]) -> Result<Vec<bool>, ClientError> {
        let raw: Vec<[u8; 32]> = ids.iter().map(|i| i.0).collect();
        self.exists(&proto::chunks_exist_path(), &raw)
    }

    pub fn files_exist(&self, oids: &[Oid]) -> Result<Vec<bool>, ClientError> {
        let raw: Vec<[u8; 32]> = oids.iter().map(|i| i.0).collect();
        self.exists(&proto::files_exist_path(), &raw)
    }

    pub fn put_pack(&self, id: &PackId, bytes: &[u8]) -> Result<proto::PackUploaded, ClientError> {
        let url = self.endpoint(&proto::pack_path(id));
        let deadline = self.deadline(bytes.len() as u64);
        let answer = self.send_read(&url, MAX_JSON_BYTES, &deadline, || {
            self.request("PUT", &url, &deadline)
                .set("Content-Type", proto::BINARY)
                .send_bytes(bytes)
        })?;
        json(&url, &answer.body)
    }

    /// Registers a batch of (unlocated) recipes; one result per recipe.
    pub fn register(&self, recipes: &[Recipe]) -> Result<Vec<proto::RegisterResult>, ClientError> {
        let url = self.endpoint(&proto::files_path());
        let mut body = Vec::new();
        for r in recipes {
            r.unlocated().encode_into(&mut body);
        }
        let deadline = self.deadline(body.len() as u64);
        let answer = self.send_read(&url, MAX_JSON_BYTES, &deadline, || {
            self.request("POST", &url, &deadline)
                .set("Content-Type", proto::BINARY)
                .send_bytes(&body)
        })?;
        let answer: proto::RegisterResponse = json(&url, &answer.body)?;
        if answer.files.len() != recipes.len() {
            return Err(ClientError::Protocol {
                url,
                what: format!("{} results for {} files", answer.files.len(), recipes.len()),
            });
        }
        Ok(answer.files)
    }

    /// The server's (located) recipe of `oid`; `Ok(None)` when the server lacks it.
    pub fn get_recipe(&self, oid: &Oid) -> Result<Option<Recipe>, ClientError> {
        self.recipe_bounded(oid, None)
    }

    /// [`Remote::get_recipe`] of a file the pointer says has `size` bytes: an answer
    /// whose header says otherwise is refused before its body is read.
    pub fn get_recipe_sized(&self, oid: &Oid, size: u64) -> Result<Option<Recipe>, ClientError> {
        self.recipe_bounded(oid, Some(size))
    }

    /// Reads the header first and checks it (magic, version, oid, size, counts possible
    /// for the size), then exactly the length it announces: garbage costs 64 bytes, and a
    /// plausible header at most what the format allows for the file's size.
    fn recipe_bounded(&self, oid: &Oid, size: Option<u64>) -> Result<Option<Recipe>, ClientError> {
        let url = self.endpoint(&proto::file_path(oid));
        let protocol = |what: String| ClientError::Protocol {
            url: url.clone(),
            what,
        };
        // The most a recipe of this size can be, for the deadline (the header refines it).
        let most = size.map_or(MAX_RECIPE_BYTES, |s| {
            (RECIPE_HEADER_LEN as u64)
                .saturating_add(s.saturating_mul(92))
                .min(MAX_RECIPE_BYTES)
        });
        let deadline = self.deadline(most);
        let read = |_status: u16, _range: Option<String>, body: &mut dyn Read| {
            let mut head = [0u8; RECIPE_HEADER_LEN];
            if !read_full(&url, body, &mut head)? {
                return Err(protocol(format!(
                    "bad header: the answer is shorter than {RECIPE_HEADER_LEN} bytes"
                )));
            }
            let header = RecipeHeader::parse(&head)
                .map_err(|e| protocol(format!("{e} (first bytes {})", hex_prefix(&head))))?;
            if header.oid != *oid {
                return Err(protocol(format!(
                    "bad header: the answer is the recipe of {}, not {oid}",
                    header.oid
                )));
            }
            if let Some(size) = size.filter(|s| *s != header.size) {
                return Err(protocol(format!(
                    "bad header: the recipe has {} bytes, the pointer says {size}",
                    header.size
                )));
            }
            header
                .check_counts()
                .map_err(|e| protocol(format!("bad header: {e}")))?;
            let len = header.encoded_len();
            if len > MAX_RECIPE_BYTES {
                return Err(protocol(format!(
                    "bad header: announces {len} bytes, more than the limit of \
                     {MAX_RECIPE_BYTES}"
                )));
            }
            let rest = read_at_most(&url, body, len - RECIPE_HEADER_LEN as u64)?;
            if (rest.len() as u64) < len - RECIPE_HEADER_LEN as u64 {
                return Err(ClientError::Transport {
                    url: url.clone(),
                    message: format!(
                        "the recipe ends after {} of {len} bytes",
                        rest.len() + RECIPE_HEADER_LEN
                    ),
                });
            }
            let mut bytes = Vec::with_capacity(len as usize);
            bytes.extend_from_slice(&head);
            bytes.extend_from_slice(&rest);
            Recipe::decode(&bytes).map_err(|e| protocol(e.to_string()))
        };
        let recipe = match self.send_with(
            &url,
            &deadline,
            || self.request("GET", &url, &deadline).call(),
            read,
        ) {
            Ok(r) => r,
            Err(ClientError::Http { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if recipe.oid != *oid || !recipe.is_located() {
            return Err(ClientError::Protocol {
                url,
                what: format!("answer is not a located recipe of {oid}"),
            });
        }
        Ok(Some(recipe))
    }

    /// Bytes `offset .. offset+len` of a pack.
    pub fn get_range(&self, pack: &PackId, offset: u64, len: u64) -> Result<Vec<u8>, ClientError> {
        let url = self.endpoint(&proto::pack_path(pack));
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let deadline = self.deadline(len);
        let answer = self.send_read(&url, len, &deadline, || {
            self.request("GET", &url, &deadline)
                .set("Range", &range)
                .call()
        })?;
        if answer.status != 206 {
            return Err(ClientError::Protocol {
                url,
                what: format!("range request answered {} instead of 206", answer.status),
            });
        }
        let body = answer.body;
        if body.len() as u64 != len {
            return Err(ClientError::Protocol {
                url,
                what: format!("asked for {len} bytes, got {}", body.len()),
            });
        }
        Ok(body)
    }

    /// Pack length, via a one-byte range request's `Content-Range`.
    pub fn pack_len(&self, pack: &PackId) -> Result<u64, ClientError> {
        let url = self.endpoint(&proto::pack_path(pack));
        let deadline = self.deadline(1);
        let answer = self.send_read(&url, 1, &deadline, || {
            self.request("GET", &url, &deadline)
                .set("Range", "bytes=0-0")
                .call()
        })?;
        answer
            .content_range
            .as_deref()
            .and_then(|v| v.rsplit('/').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ClientError::Protocol {
                url,
                what: "no total length in Content-Range".into(),
            })
    }

    /// Asks the server to check its copies of `oids` against its storage
    /// (`files/verify`): one final result per file, in order, with status `ok`,
    /// `damaged` or `missing`. Files the server could not finish within one request's
    /// budget are asked about again from where it stopped, until none is pending.
    pub fn verify_files(&self, oids: &[Oid]) -> Result<Vec<proto::VerifyResult>, ClientError> {
        let url = self.endpoint(&proto::files_verify_path());
        let mut done: Vec<Option<proto::VerifyResult>> = vec![None; oids.len()];
        let mut pending: Vec<(usize, u32)> = (0..oids.len()).map(|i| (i, 0)).collect();
        while !pending.is_empty() {
            let mut next = Vec::new();
            let mut progressed = false;
            for batch in pending.chunks(proto::MAX_VERIFY_FILES) {
                let request = proto::VerifyRequest {
                    files: batch
                        .iter()
                        .map(|&(i, from)| proto::VerifyFile {
                            oid: oids[i].to_hex(),
                            from,
                        })
                        .collect(),
                };
                let body = serde_json::to_vec(&request).map_err(|e| ClientError::Protocol {
                    url: url.clone(),
                    what: e.to_string(),
                })?;
                let deadline = self.deadline(body.len() as u64);
                let answer = self.send_read(&url, MAX_JSON_BYTES, &deadline, || {
                    self.request("POST", &url, &deadline)
                        .set("Content-Type", "application/json")
                        .send_bytes(&body)
                })?;
                let answer: proto::VerifyResponse = json(&url, &answer.body)?;
                if answer.files.len() != batch.len() {
                    return Err(ClientError::Protocol {
                        url,
                        what: format!("{} results for {} files", answer.files.len(), batch.len()),
                    });
                }
                for (&(i, from), result) in batch.iter().zip(answer.files) {
                    if result.oid != oids[i].to_hex() {
                        return Err(ClientError::Protocol {
                            url,
                            what: format!("result for {} where {} was asked", result.oid, oids[i]),
                        });
                    }
                    if result.status == "pending" {
                        progressed |= result.next > from;
                        next.push((i, result.next));
                    } else {
                        progressed = true;
                        done[i] = Some(result);
                    }
                }
            }
            if !progressed {
                return Err(ClientError::Protocol {
                    url,
                    what: "the verification made no progress".into(),
                });
            }
            pending = next;
        }
        Ok(done.into_iter().flatten().collect())
    }
}

/// The credentials of a [`Remote`], shared by its clones and threads.
#[derive(Debug)]
struct Creds {
    fixed: Auth,
    helper: Option<Arc<dyn CredentialHelper>>,
    /// What the helper is asked about (`None` for a URL git could not describe).
    target: Option<CredentialUrl>,
    state: Mutex<Filled>,
}

/// What the helper gave, and how far it got.
#[derive(Debug, Default)]
struct Filled {
    credential: Option<Credential>,
    /// Bumped whenever the credentials change, so a thread whose request was refused can
    /// tell whether another thread has already fetched new ones.
    generation: u64,
    approved: bool,
    /// Why the helper had nothing (asked once per [`Remote`], not once per request).
    failed: Option<String>,
}

impl Creds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Filled> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Auth {
        match &self.fixed {
            Auth::None => self
                .lock()
                .credential
                .clone()
                .map_or(Auth::None, Auth::Basic),
            fixed => fixed.clone(),
        }
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A request sent with the credentials of `generation` succeeded: approve them once.
    fn worked(&self, generation: u64) {
        let (Some(helper), Some(target)) = (&self.helper, &self.target) else {
            return;
        };
        let mut state = self.lock();
        if state.approved || state.generation != generation {
            return;
        }
        if let Some(credential) = &state.credential {
            helper.approve(target, credential);
            state.approved = true;
        }
    }

    /// A request sent with the credentials of `generation` got `401` (`message` is the
    /// server's): `Ok` when there are new credentials to retry with, else why not.
    fn refused(&self, generation: u64, message: &str) -> Result<(), String> {
        match &self.fixed {
            Auth::None => {}
            Auth::Bearer(_) => {
                return Err(format!("the server refused GIT_MODEL_TOKEN: {message}"))
            }
            Auth::Basic(_) => return Err(format!("the server refused the credentials: {message}")),
        }
        let advice = "set GIT_MODEL_TOKEN, or configure a git credential helper (e.g.                       `git config credential.helper store`)";
        let (Some(helper), Some(target)) = (&self.helper, &self.target) else {
            return Err(format!("{message}; {advice}"));
        };
        let mut state = self.lock();
        if state.generation != generation {
            // Another thread already has new credentials.
            return Ok(());
        }
        if let Some(old) = state.credential.take() {
            helper.reject(target, &old);
            state.generation += 1;
            return Err(format!(
                "the server refused the credentials from git's credential helper (they \
                 were rejected, so git asks again next time): {message}"
            ));
        }
        if let Some(why) = &state.failed {
            return Err(why.clone());
        }
        match helper.fill(target) {
            Ok(credential) => {
                state.credential = Some(credential);
                state.generation += 1;
                state.approved = false;
                Ok(())
            }
            Err(e) => {
                let why = format!("no credentials ({e}); {advice}");
                state.failed = Some(why.clone());
                Err(why)
            }
        }
    }
}

/// A rustls configuration for `tls`, or `None` for ureq's default (web PKI roots).
fn tls_config(tls: &TlsOptions) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    if tls.verify && tls.ca_file.is_none() {
        return Ok(None);
    }
    // Named explicitly: several providers may be compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match &tls.ca_file {
        _ if !tls.verify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                format!("cannot read CA certificates from {}: {e}", path.display())
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificate in {}", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => return Ok(None),
    };
    Ok(Some(Arc::new(config)))
}

/// Accepts any server certificate (`http.sslVerify = false`); handshake signatures are
/// still checked, so the connection is encrypted, just not authenticated.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn http_error(url: &str, status: u16, resp: ureq::Response) -> ClientError {
    let mut body = String::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_string(&mut body);
    let (code, message) = match serde_json::from_str::<proto::ErrorBody>(&body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => (String::new(), body.trim().chars().take(300).collect()),
    };
    ClientError::Http {
        url: url.to_string(),
        status,
        code,
        message,
    }
}

/// Whether a status is worth retrying: overload and passing server trouble. `501`, `505`
/// and `507` (the server's disk is full) do not go away in seconds.
fn transient(status: u16) -> bool {
    status == 429 || (status >= 500 && !matches!(status, 501 | 505 | 507))
}

/// When a call must be done by, and the limit it came from (for the error).
struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    fn error(&self, url: &str) -> ClientError {
        ClientError::Timeout {
            url: url.to_string(),
            secs: self.limit.as_secs_f64(),
        }
    }
}

/// Reads `body` to its end, refusing more than `limit` bytes (an error as soon as byte
/// `limit + 1` arrives, without reading further).
fn read_at_most(url: &str, body: &mut dyn Read, limit: u64) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    body.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| ClientError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(ClientError::Protocol {
            url: url.to_string(),
            what: format!("answer larger than {limit} bytes"),
        });
    }
    Ok(out)
}

/// Fills `buf` from `body`: `Ok(false)` when the answer ends first (a lost connection
/// is a [`ClientError::Transport`], retried by the caller).
fn read_full(url: &str, body: &mut dyn Read, buf: &mut [u8]) -> Result<bool, ClientError> {
    let mut got = 0;
    while got < buf.len() {
        match body.read(&mut buf[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ClientError::Transport {
                    url: url.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(true)
}

/// The first bytes of an answer, for an error message.
fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// An answer read whole.
struct Answer {
    status: u16,
    content_range: Option<String>,
    body: Vec<u8>,
}

fn json<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
        url: url.to_string(),
        what: format!("malformed JSON answer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::transient;

    #[test]
    fn overload_and_passing_server_trouble_are_retried_a_full_disk_is_not() {
        for status in [429, 500, 502, 503, 504] {
            assert!(transient(status), "{status}");
        }
        for status in [400, 401, 404, 413, 422, 501, 505, 507] {
            assert!(!transient(status), "{status}");
        }
    }
}
