//! The HTTP client for one repository on a git-model server (`model.url`).
//!
//! Every call is idempotent on the server, so transient failures (connection errors,
//! 5xx, 429) are retried with exponential backoff, honouring `Retry-After`. Bodies read
//! from the server are bounded; nothing here trusts what comes back.

// The closures return ureq's own error type, which is large; it only lives on the error path.
#![allow(clippy::result_large_err)]

use std::io::Read;
use std::time::Duration;

use gitmodel_format::{ChunkId, Oid, PackId, Recipe};
use gitmodel_proto as proto;

use crate::ClientError;

const USER_AGENT: &str = concat!("git-model/", env!("CARGO_PKG_VERSION"));
const ATTEMPTS: u32 = 5;
/// Largest recipe accepted from the server (a 1 TiB file has ~16 M chunks × 36 B).
const MAX_RECIPE_BYTES: u64 = 1 << 30;

/// Credentials sent with every request.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    agent: ureq::Agent,
    auth: Auth,
}

impl Remote {
    /// A client for the repository at `url` (`http(s)://host[:port]/<namespace>/<repo>`).
    pub fn new(url: &str, auth: Auth) -> Result<Remote, ClientError> {
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
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .user_agent(USER_AGENT)
            .max_idle_connections_per_host(16)
            .build();
        Ok(Remote { base, agent, auth })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let req = self.agent.request(method, url);
        match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.set("Authorization", &format!("Bearer {t}")),
        }
    }

    /// Sends a request built by `make`, retrying transient failures.
    fn send(
        &self,
        url: &str,
        make: impl Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ClientError> {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let (err, retry_after) = match make() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(status, resp)) => {
                    let retry_after = resp
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let err = http_error(url, status, resp);
                    if !(status == 429 || status >= 500) {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(ureq::Error::Transport(t)) => (
                    ClientError::Transport {
                        url: url.to_string(),
                        message: t.to_string(),
                    },
                    None,
                ),
            };
            if attempt == ATTEMPTS {
                return Err(err);
            }
            let wait = retry_after.unwrap_or(delay).min(Duration::from_secs(30));
            tracing::warn!("{err}; retrying in {:.1}s", wait.as_secs_f64());
            std::thread::sleep(wait);
            delay *= 2;
        }
        unreachable!("the last attempt returns")
    }

    fn read_body(url: &str, resp: ureq::Response, limit: u64) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        resp.into_reader()
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        if body.len() as u64 > limit {
            return Err(ClientError::Protocol {
                url: url.to_string(),
                what: format!("answer larger than {limit} bytes"),
            });
        }
        Ok(body)
    }

    fn exists(&self, path: &str, ids: &[[u8; 32]]) -> Result<Vec<bool>, ClientError> {
        let url = self.endpoint(path);
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(proto::MAX_QUERY_IDS) {
            let body = proto::encode_ids(batch.iter());
            let resp = self.send(&url, || {
                self.request("POST", &url)
                    .set("Content-Type", proto::BINARY)
                    .send_bytes(&body)
            })?;
            let answer = Self::read_body(&url, resp, batch.len() as u64)?;
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
        let resp = self.send(&url, || {
            self.request("PUT", &url)
                .set("Content-Type", proto::BINARY)
                .send_bytes(bytes)
        })?;
        json(&url, resp)
    }

    /// Registers a batch of (unlocated) recipes; one result per recipe.
    pub fn register(&self, recipes: &[Recipe]) -> Result<Vec<proto::RegisterResult>, ClientError> {
        let url = self.endpoint(&proto::files_path());
        let mut body = Vec::new();
        for r in recipes {
            r.unlocated().encode_into(&mut body);
        }
        let resp = self.send(&url, || {
            self.request("POST", &url)
                .set("Content-Type", proto::BINARY)
                .send_bytes(&body)
        })?;
        let answer: proto::RegisterResponse = json(&url, resp)?;
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
        let url = self.endpoint(&proto::file_path(oid));
        let resp = match self.send(&url, || self.request("GET", &url).call()) {
            Ok(r) => r,
            Err(ClientError::Http { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = Self::read_body(&url, resp, MAX_RECIPE_BYTES)?;
        let recipe = Recipe::decode(&body).map_err(|e| ClientError::Protocol {
            url: url.clone(),
            what: e.to_string(),
        })?;
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
        let resp = self.send(&url, || {
            self.request("GET", &url).set("Range", &range).call()
        })?;
        if resp.status() != 206 {
            return Err(ClientError::Protocol {
                url,
                what: format!("range request answered {} instead of 206", resp.status()),
            });
        }
        let body = Self::read_body(&url, resp, len)?;
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
        let resp = self.send(&url, || {
            self.request("GET", &url).set("Range", "bytes=0-0").call()
        })?;
        resp.header("Content-Range")
            .and_then(|v| v.rsplit('/').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ClientError::Protocol {
                url,
                what: "no total length in Content-Range".into(),
            })
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

fn json<T: serde::de::DeserializeOwned>(url: &str, resp: ureq::Response) -> Result<T, ClientError> {
    let body = Remote::read_body(url, resp, 64 * 1024 * 1024)?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
        url: url.to_string(),
        what: format!("malformed JSON answer: {e}"),
    })
}
