//! Access tokens: [`Scope`]s, the hashed [`TokenStore`], and [`TokenAuthorizer`], the
//! [`Authorizer`] over them.
//!
//! A token is `gmt_` followed by 64 hex digits (32 random bytes from the OS). The server
//! keeps only its SHA-256 ([`TokenRecord::sha256`]): a stolen `tokens.json` grants
//! nothing, and since the secret has 256 bits of entropy a fast hash is enough (no
//! password-stretching needed). A presented token is hashed and compared in constant time
//! against every record.
//!
//! Records come from two places, merged: the token file (`<data-dir>/tokens.json`, written
//! atomically by `git-model-server token create|revoke`, re-read by a running server
//! within a second of a change, so revocation needs no restart) and `[[tokens]]` tables
//! of the TOML config file ([`crate::config`]). A token carries scopes such as
//! `write:acme/*`; its name is its identity (Git LFS lock owner), so names (and ids) are
//! unique across both sources: duplicates are refused by `token create` and at load.
//!
//! **Failing closed.** A *missing* token file is not the same as an empty one. Once the
//! file has held tokens, a marker beside it ([`marker_path`], `tokens.json.required`)
//! records that; if the file then disappears, a running server refuses every request
//! (`503`, an error in the log) until the file is back, and a server starting without
//! it refuses to start ([`TokenError::Lost`]). Without this, deleting `tokens.json` on a
//! loopback server would make it anonymous within a second. An empty file
//! (`{"tokens": []}`, what revoking the last token leaves) is the explicit way to have no
//! tokens, and so is deleting the marker.
//!
//! Not here: where credentials come from on the wire ([`credentials`] reads `Basic` and
//! `Bearer`), and what an unreadable repository looks like (a 404, decided in
//! [`TokenAuthorizer::authorize`]).

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gitmodel_proto::RepoName;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{claimed_name, Access, Authorizer, ANONYMOUS};
use crate::error::ApiError;

/// Prefix of every token (lets secret scanners recognise a leaked one).
pub const TOKEN_PREFIX: &str = "gmt_";
/// Name of the token file in the data directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// How often a running server looks at the token file for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Longest token name.
const MAX_NAME: usize = 100;
/// What the marker beside the token file says to whoever finds it.
const MARKER_TEXT: &str = "This file records that the token file beside it held tokens. While \
it exists, git-model-server treats a missing token file as lost and refuses requests (fail \
closed) instead of serving without authentication. Delete it only to serve without tokens \
on purpose.\n";

/// Why tokens or scopes could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "invalid scope {scope:?}: expected <read|write|admin>:<pattern> with pattern `*`, \
         `<namespace>/*` or `<namespace>/<repo>`"
    )]
    BadScope { scope: String },
    #[error(
        "invalid duration {value:?}: expected a number followed by s, m, h, d or w (e.g. 30d)"
    )]
    BadDuration { value: String },
    #[error("invalid token name {name:?}: 1 to {MAX_NAME} printable characters")]
    BadName { name: String },
    #[error("a token needs at least one --scope")]
    NoScope,
    #[error("no token with id {id:?}")]
    UnknownId { id: String },
    #[error("token {id:?} is defined in the config file; remove it there")]
    InConfig { id: String },
    #[error("token record {id:?} is invalid: {what}")]
    BadRecord { id: String, what: String },
    #[error(
        "a token named {name:?} exists already (id {id}): a name is the identity of a \
         token's requests (the owner of its Git LFS locks), so each token needs its own. \
         Choose another --name, or revoke {id} first"
    )]
    NameTaken { name: String, id: String },
    #[error(
        "token {what} {value:?} is used by tokens {first} and {second}: names and ids must be \
         unique (a name is the owner of Git LFS locks); revoke or rename one of them"
    )]
    Duplicate {
        what: &'static str,
        value: String,
        first: String,
        second: String,
    },
    #[error(
        "token file {} is missing, but tokens existed ({} says so): refusing to serve \
         without authentication. Restore the file from a backup or create a token \
         (git-model-server token create ...); to serve without tokens on purpose, delete {}",
        path.display(), marker.display(), marker.display()
    )]
    Lost { path: PathBuf, marker: PathBuf },
    #[error("cannot read token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {} is not valid JSON", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write token file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How much a scope allows, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Read,
    Write,
    /// Write, plus what only administrators may do (force-unlocking others' locks).
    Admin,
}

impl Level {
    fn needed_for(access: Access) -> Level {
        match access {
            Access::Read => Level::Read,
            Access::Write => Level::Write,
            Access::Admin => Level::Admin,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
}

/// Which repositories a scope covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every repository.
    All,
    /// `acme/*`: every repository of a namespace.
    Namespace(String),
    /// `acme/vision`: one repository.
    Repo(RepoName),
}

impl Pattern {
    fn covers(&self, repo: &RepoName) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Namespace(ns) => *ns == repo.namespace,
            Pattern::Repo(r) => r == repo,
        }
    }
}

/// A grant such as `write:acme/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub level: Level,
    pub pattern: Pattern,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, TokenError> {
        let bad = || TokenError::BadScope {
            scope: text.chars().take(100).collect(),
        };
        let (level, pattern) = text.trim().split_once(':').ok_or_else(bad)?;
        let level = match level {
            "read" => Level::Read,
            "write" => Level::Write,
            "admin" => Level::Admin,
            _ => return Err(bad()),
        };
        let pattern = match pattern.split_once('/') {
            None if pattern == "*" => Pattern::All,
            Some((ns, "*")) => {
                // Validated like a repository name's namespace part.
                RepoName::new(ns, "x").map_err(|_| bad())?;
                Pattern::Namespace(ns.to_string())
            }
            Some((ns, repo)) => Pattern::Repo(RepoName::new(ns, repo).map_err(|_| bad())?),
            None => return Err(bad()),
        };
        Ok(Scope { level, pattern })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = self.level.as_str();
        match &self.pattern {
            Pattern::All => write!(f, "{level}:*"),
            Pattern::Namespace(ns) => write!(f, "{level}:{ns}/*"),
            Pattern::Repo(repo) => write!(f, "{level}:{repo}"),
        }
    }
}

/// A token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Short public id (`token list`, `token revoke <id>`, logs).
    pub id: String,
    /// Who or what uses it; the request's identity (Git LFS lock owner).
    pub name: String,
    /// Scopes such as `write:acme/*`.
    pub scopes: Vec<String>,
    /// SHA-256 of the whole token, lowercase hex.
    pub sha256: String,
    /// Creation time, Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Expiry, Unix seconds; `None` never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// A record checked and parsed for lookups.
#[derive(Debug, Clone)]
struct Entry {
    record: TokenRecord,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl Entry {
    fn new(record: TokenRecord) -> Result<Entry, TokenError> {
        let bad = |what: String| TokenError::BadRecord {
            id: record.id.clone(),
            what,
        };
        let digest: [u8; 32] = hex_decode(&record.sha256)
            .ok_or_else(|| bad("sha256 is not 64 hex digits".to_string()))?;
        check_name(&record.name).map_err(|e| bad(e.to_string()))?;
        let scopes = record
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if scopes.is_empty() {
            return Err(bad("no scopes".to_string()));
        }
        Ok(Entry {
            record,
            digest,
            scopes,
        })
    }

    /// The highest level any of the token's scopes grants on `repo`.
    fn level_on(&self, repo: &RepoName) -> Option<Level> {
        self.scopes
            .iter()
            .filter(|s| s.pattern.covers(repo))
            .map(|s| s.level)
            .max()
    }

    fn expired(&self, now: u64) -> bool {
        self.record.expires.is_some_and(|at| at <= now)
    }
}

/// The JSON token file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub tokens: Vec<TokenRecord>,
}

impl TokenFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<TokenFile, TokenError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::default()),
            Err(source) => {
                return Err(TokenError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        TokenFile::parse(path, &bytes)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<TokenFile, TokenError> {
        serde_json::from_slice(bytes).map_err(|source| TokenError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads `path` like [`TokenFile::read`], except that a missing file whose marker
    /// ([`marker_path`]) says it held tokens is [`TokenError::Lost`], not an empty file.
    /// What the token commands use, so that `token list` on a lost file says so.
    pub fn read_checked(path: &Path) -> Result<TokenFile, TokenError> {
        if !path.exists() && marker_path(path).exists() {
            return Err(TokenError::Lost {
                path: path.to_path_buf(),
                marker: marker_path(path),
            });
        }
        TokenFile::read(path)
    }

    /// Writes `path` atomically (temp file, fsync, rename), readable by the owner only,
    /// and keeps its marker in step: written before a file with tokens, removed after an
    /// empty one (so that at no moment a file with tokens lacks its marker).
    pub fn write(&self, path: &Path) -> Result<(), TokenError> {
        let fail = |source| TokenError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut json =
            serde_json::to_vec_pretty(self).map_err(|e| fail(std::io::Error::other(e)))?;
        json.push(b'\n');
        let has_tokens = !self.tokens.is_empty();
        if has_tokens {
            write_marker(path).map_err(fail)?;
        }
        // The temp file is created 0600 and the rename keeps that mode.
        gitmodel_fsutil::write_atomic(path, &json).map_err(fail)?;
        if !has_tokens {
            remove_marker(path).map_err(fail)?;
        }
        Ok(())
    }
}

/// The marker beside a token file that says the file held tokens: `<file>.required`.
pub fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".required");
    path.with_file_name(name)
}

/// Writes the marker of token file `path` unless it exists.
fn write_marker(path: &Path) -> std::io::Result<()> {
    let marker = marker_path(path);
    if marker.exists() {
        return Ok(());
    }
    gitmodel_fsutil::write_atomic(&marker, MARKER_TEXT.as_bytes())
}

/// Removes the marker of token file `path`, if any.
fn remove_marker(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(marker_path(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Refuses two records with the same name or the same id.
fn check_unique<'a>(records: impl IntoIterator<Item = &'a TokenRecord>) -> Result<(), TokenError> {
    let mut names = std::collections::HashMap::new();
    let mut ids = std::collections::HashMap::new();
    for record in records {
        for (what, value, seen) in [
            ("name", &record.name, &mut names),
            ("id", &record.id, &mut ids),
        ] {
            if let Some(first) = seen.insert(value.clone(), record.id.clone()) {
                return Err(TokenError::Duplicate {
                    what,
                    value: value.clone(),
                    first,
                    second: record.id.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A freshly created token: the secret (shown once) and its record.
#[derive(Clone)]
pub struct NewToken {
    pub secret: String,
    pub record: TokenRecord,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("secret", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// Makes a new token with `scopes`, named `name` (default: its id), expiring after
/// `ttl`. `taken` says whether an id is already used.
pub fn generate(
    scopes: &[String],
    name: Option<&str>,
    ttl: Option<Duration>,
    taken: impl Fn(&str) -> bool,
) -> Result<NewToken, TokenError> {
    if scopes.is_empty() {
        return Err(TokenError::NoScope);
    }
    let parsed = scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(name) = name {
        check_name(name)?;
    }
    let mut rng = rand::rngs::OsRng;
    let id = loop {
        let mut raw = [0u8; 4];
        rng.fill_bytes(&mut raw);
        let id = hex::encode(raw);
        if !taken(&id) {
            break id;
        }
    };
    let mut raw = [0u8; 32];
    rng.fill_bytes(&mut raw);
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
    let now = unix_now();
    let record = TokenRecord {
        name: name.map_or_else(|| id.clone(), str::to_string),
        id,
        scopes: parsed.iter().map(Scope::to_string).collect(),
        sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        created: now,
        expires: ttl.map(|d| now.saturating_add(d.as_secs())),
    };
    Ok(NewToken { secret, record })
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName {
            name: name.chars().take(MAX_NAME).collect(),
        })
    }
}

/// Parses a lifetime such as `90m`, `12h`, `30d` or `2w` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, TokenError> {
    let bad = || TokenError::BadDuration {
        value: text.chars().take(40).collect(),
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = number
        .checked_mul(unit)
        .filter(|&s| s > 0)
        .ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn format_time(secs: u64) -> String {
    gitmodel_format::time::rfc3339(secs as i64)
}

/// A SHA-256 digest from its 64 hex digits.
fn hex_decode(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Equality of two digests in time independent of where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What the store knows at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    entries: Vec<Entry>,
    /// The token file's (modification time, length) when it was read.
    stamp: Option<(SystemTime, u64)>,
    /// The token file held tokens (here or, by its marker, before a restart).
    had_tokens: bool,
    /// The token file had tokens and is gone: every request is refused.
    lost: bool,
}

/// The tokens a server accepts: the token file's (re-read when it changes) plus the
/// config file's.
#[derive(Debug)]
pub struct TokenStore {
    file: Option<PathBuf>,
    fixed: Vec<Entry>,
    snapshot: RwLock<Snapshot>,
    checked: RwLock<Instant>,
}

/// The outcome of looking a presented token up.
#[derive(Debug, Clone)]
enum Found {
    Valid(Entry),
    Expired { id: String, at: u64 },
    Unknown,
}

impl TokenStore {
    /// Loads the token file (if any; a missing file has no tokens, unless its marker says
    /// it had some: then [`TokenError::Lost`]) and the config's records. Invalid records
    /// and duplicate names or ids are errors here, at startup.
    pub fn open(file: Option<PathBuf>, fixed: Vec<TokenRecord>) -> Result<TokenStore, TokenError> {
        check_unique(&fixed)?;
        let fixed = fixed
            .into_iter()
            .map(Entry::new)
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = match &file {
            Some(path) => {
                let had_tokens = marker_path(path).exists();
                let snapshot = read_snapshot(path, &fixed, had_tokens)?;
                if snapshot.lost {
                    return Err(TokenError::Lost {
                        path: path.clone(),
                        marker: marker_path(path),
                    });
                }
                snapshot
            }
            None => Snapshot::default(),
        };
        Ok(TokenStore {
            file,
            fixed,
            snapshot: RwLock::new(snapshot),
            checked: RwLock::new(Instant::now()),
        })
    }

    /// Whether any token exists (expired ones count: their holders must still
    /// authenticate, and get a clear "expired" answer), or the token file is lost.
    pub fn has_tokens(&self) -> bool {
        self.refresh();
        let snapshot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        !self.fixed.is_empty() || !snapshot.entries.is_empty() || snapshot.lost
    }

    /// Whether the token file held tokens and has disappeared.
    fn lost(&self) -> bool {
        self.refresh();
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .lost
    }

    /// Re-reads the token file if it changed, at most once per [`RELOAD_INTERVAL`].
    /// A file that became unreadable or invalid keeps the previous tokens (logged); one
    /// that disappeared after holding tokens makes the store lost (logged as an error).
    fn refresh(&self) {
        let Some(path) = &self.file else { return };
        {
            let checked = self.checked.read().unwrap_or_else(PoisonError::into_inner);
            if checked.elapsed() < RELOAD_INTERVAL {
                return;
            }
        }
        *self.checked.write().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let current = file_stamp(path);
        let (known, had_tokens) = {
            let snapshot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
            (snapshot.stamp, snapshot.had_tokens)
        };
        if current == known {
            return;
        }
        match read_snapshot(path, &self.fixed, had_tokens) {
            Ok(fresh) => {
                if fresh.lost {
                    tracing::error!(
                        file = %path.display(),
                        "the token file held tokens and has disappeared: refusing every \
                         request (503) until it is restored; an empty token file, or deleting \
                         its marker {} and restarting, serves without tokens",
                        marker_path(path).display()
                    );
                } else {
                    tracing::info!(tokens = fresh.entries.len(), file = %path.display(), "token file reloaded");
                }
                *self
                    .snapshot
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = fresh;
            }
            Err(e) => tracing::error!(
                error = %crate::error::error_chain(&e),
                "token file changed but cannot be used; keeping the previous tokens"
            ),
        }
    }

    fn find(&self, secret: &str) -> Found {
        self.refresh();
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let snapshot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        // Every record is compared, so the time taken does not say which one matched.
        let mut found = None;
        for entry in self.fixed.iter().chain(&snapshot.entries) {
            if digests_equal(&entry.digest, &digest) && found.is_none() {
                found = Some(entry);
            }
        }
        match found {
            None => Found::Unknown,
            Some(entry) if entry.expired(unix_now()) => Found::Expired {
                id: entry.record.id.clone(),
                at: entry.record.expires.unwrap_or(0),
            },
            Some(entry) => Found::Valid(entry.clone()),
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads the token file. `had_tokens`: whether it is known to have held tokens, which
/// makes a missing file lost rather than empty. Its records must not reuse a name or an
/// id of `fixed` (the config file's) or of each other. The marker is kept in step with
/// what was read (best effort: a read-only directory only costs the protection across
/// restarts, and is logged).
fn read_snapshot(path: &Path, fixed: &[Entry], had_tokens: bool) -> Result<Snapshot, TokenError> {
    let stamp = file_stamp(path);
    let file = match std::fs::read(path) {
        Ok(bytes) => TokenFile::parse(path, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Snapshot {
                had_tokens,
                lost: had_tokens,
                ..Snapshot::default()
            })
        }
        Err(source) => {
            return Err(TokenError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    check_unique(fixed.iter().map(|e| &e.record).chain(&file.tokens))?;
    let entries = file
        .tokens
        .into_iter()
        .map(Entry::new)
        .collect::<Result<Vec<_>, _>>()?;
    let has_tokens = !entries.is_empty();
    let synced = if has_tokens {
        write_marker(path)
    } else {
        remove_marker(path)
    };
    if let Err(e) = synced {
        tracing::warn!(
            marker = %marker_path(path).display(),
            error = %e,
            "cannot update the token file's marker: if the token file disappears while the \
             server is stopped, the next start will not know that tokens existed"
        );
    }
    Ok(Snapshot {
        entries,
        stamp,
        had_tokens: has_tokens,
        lost: false,
    })
}

/// The secret a request presents: `Authorization: Bearer <token>`, or HTTP Basic with
/// the token as password (any user name, as git credential helpers and Git LFS send
/// it; a token as the user name with an empty password is accepted too). `Some("")`
/// for a header that is present but unusable, so it is refused rather than ignored.
pub fn credentials(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let text = value.to_str().ok().unwrap_or("").trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let secret = if password.is_empty() { user } else { password };
        return Some(secret.to_string());
    }
    Some(String::new())
}

/// Authorizes requests with tokens from a [`TokenStore`].
///
/// - The token file held tokens and has disappeared: `503` for every request (fail
///   closed; a `401` would make clients erase their stored credentials).
/// - No credentials: allowed only while the store has no token *and* anonymous serving
///   is permitted (loopback bind or `--allow-anonymous`); else `401`.
/// - Unknown, revoked or expired token: `401`.
/// - A token with no scope covering the repository: `404`, the answer for a repository
///   that does not exist, so it learns nothing about the repositories it cannot read.
/// - A scope that reads but may not write (or write but not administer): `403`.
#[derive(Debug)]
pub struct TokenAuthorizer {
    store: std::sync::Arc<TokenStore>,
    anonymous: bool,
}

impl TokenAuthorizer {
    /// `anonymous`: whether requests without credentials are served while no token
    /// exists.
    pub fn new(store: std::sync::Arc<TokenStore>, anonymous: bool) -> TokenAuthorizer {
        TokenAuthorizer { store, anonymous }
    }

    fn open(&self) -> bool {
        self.anonymous && !self.store.has_tokens()
    }
}

impl Authorizer for TokenAuthorizer {
    fn authorize(
        &self,
        headers: &http::HeaderMap,
        repo: &RepoName,
        access: Access,
    ) -> Result<(), ApiError> {
        if self.store.lost() {
            return Err(ApiError::Unavailable {
                reason: "the server's token file is missing, so no token can be checked; \
                         every request is refused until an operator restores it"
                    .to_string(),
            });
        }
        if self.open() {
            return Ok(());
        }
        let Some(secret) = credentials(headers) else {
            return Err(ApiError::Unauthorized {
                reason: "this server needs a token (HTTP Basic password or Bearer)".to_string(),
            });
        };
        let entry = match self.store.find(&secret) {
            Found::Valid(entry) => entry,
            Found::Expired { id, at } => {
                return Err(ApiError::Unauthorized {
                    reason: format!("token {id} expired at {}", format_time(at)),
                })
            }
            Found::Unknown => {
                return Err(ApiError::Unauthorized {
                    reason: "the token is not valid (unknown or revoked)".to_string(),
                })
            }
        };
        let needed = Level::needed_for(access);
        match entry.level_on(repo) {
            None => Err(ApiError::not_found(format!(
                "repository {repo} (it does not exist, or this token cannot read it)"
            ))),
            Some(level) if level < needed => Err(ApiError::Forbidden {
                reason: format!(
                    "token {} ({}) has {} access to {repo}; this needs {}",
                    entry.record.id,
                    entry.record.name,
                    level.as_str(),
                    needed.as_str()
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The token's id (names need not be unique); `None` while no token exists.
    fn writer(&self, headers: &http::HeaderMap) -> Option<String> {
        if self.open() {
            return None;
        }
        match credentials(headers).map(|secret| self.store.find(&secret)) {
            Some(Found::Valid(entry)) => Some(entry.record.id),
            _ => None,
        }
    }

    /// `admin:*` only, once a token exists; open like [`Authorizer::authorize`] before.
    fn authorize_server(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        if self.open() {
            return Ok(());
        }
        let Some(secret) = credentials(headers) else {
            return Err(ApiError::Unauthorized {
                reason: "server-wide figures need an admin:* token".to_string(),
            });
        };
        match self.store.find(&secret) {
            Found::Valid(entry)
                if entry
                    .scopes
                    .iter()
                    .any(|s| s.level == Level::Admin && s.pattern == Pattern::All) =>
            {
                Ok(())
            }
            Found::Valid(entry) => Err(ApiError::Forbidden {
                reason: format!(
                    "token {} ({}) is not admin:*; server-wide figures need an admin:* token",
                    entry.record.id, entry.record.name
                ),
            }),
            Found::Expired { id, at } => Err(ApiError::Unauthorized {
                reason: format!("token {id} expired at {}", format_time(at)),
            }),
            Found::Unknown => Err(ApiError::Unauthorized {
                reason: "the token is not valid (unknown or revoked)".to_string(),
            }),
        }
    }

    /// The token's name; without tokens, whatever the client claims (as [`AllowAll`]).
    ///
    /// [`AllowAll`]: crate::auth::AllowAll
    fn identity(&self, headers: &http::HeaderMap) -> String {
        if self.open() {
            return claimed_name(headers).unwrap_or_else(|| ANONYMOUS.to_string());
        }
        match credentials(headers).map(|secret| self.store.find(&secret)) {
            Some(Found::Valid(entry)) => entry.record.name,
            _ => ANONYMOUS.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn repo(ns: &str, r: &str) -> RepoName {
        RepoName::new(ns, r).unwrap()
    }

    fn basic(user: &str, password: &str) -> http::HeaderMap {
        let raw = format!("{user}:{password}");
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn scopes_parse_and_print() {
        for (text, level) in [
            ("read:*", Level::Read),
            ("write:acme/*", Level::Write),
            ("admin:acme/vision", Level::Admin),
        ] {
            let scope = Scope::parse(text).unwrap();
            assert_eq!(scope.level, level);
            assert_eq!(scope.to_string(), text);
        }
        assert_eq!(
            Scope::parse("read:acme/vision.git").unwrap().to_string(),
            "read:acme/vision"
        );
        for bad in [
            "",
            "read",
            "read:",
            "owner:acme/*",
            "read:acme",
            "read:../x",
            "read:acme/..",
            "read:*/x",
            "read:a/b/c",
            "read:a%2fb/c",
            "read:a\\b/c",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        let ns = Scope::parse("write:acme/*").unwrap();
        assert!(ns.pattern.covers(&repo("acme", "x")));
        assert!(!ns.pattern.covers(&repo("acmex", "x")));
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("15").unwrap().as_secs(), 15);
        for bad in ["", "d", "0d", "3y", "-1d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn credentials_from_headers() {
        assert_eq!(credentials(&http::HeaderMap::new()), None);
        assert_eq!(credentials(&bearer("gmt_x")).as_deref(), Some("gmt_x"));
        assert_eq!(
            credentials(&basic("anyone", "gmt_y")).as_deref(),
            Some("gmt_y")
        );
        assert_eq!(credentials(&basic("gmt_z", "")).as_deref(), Some("gmt_z"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Digest abc".parse().unwrap());
        assert_eq!(credentials(&h).as_deref(), Some(""));
        h.insert(http::header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(credentials(&h).as_deref(), Some(""));
    }

    fn store_with(tokens: &[(&[&str], Option<u64>)]) -> (Arc<TokenStore>, Vec<String>) {
        let mut records = Vec::new();
        let mut secrets = Vec::new();
        for (i, (scopes, expires)) in tokens.iter().enumerate() {
            let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
            let mut t = generate(&scopes, Some(&format!("t{i}")), None, |_| false).unwrap();
            t.record.expires = *expires;
            records.push(t.record);
            secrets.push(t.secret);
        }
        (Arc::new(TokenStore::open(None, records).unwrap()), secrets)
    }

    #[test]
    fn authorization_by_scope() {
        let (store, s) = store_with(&[
            (&["read:acme/*"], None),
            (&["write:acme/vision", "read:other/*"], None),
            (&["admin:*"], Some(1)),
        ]);
        let auth = TokenAuthorizer::new(store, true);
        let vision = repo("acme", "vision");
        let status = |h: &http::HeaderMap, r: &RepoName, a: Access| {
            auth.authorize(h, r, a).err().map(|e| e.status().as_u16())
        };
        // Tokens exist, so anonymous requests are refused even with `anonymous`.
        assert_eq!(
            status(&http::HeaderMap::new(), &vision, Access::Read),
            Some(401)
        );
        assert_eq!(
            status(&bearer("gmt_nope"), &vision, Access::Read),
            Some(401)
        );
        assert_eq!(status(&bearer(&s[0]), &vision, Access::Read), None);
        assert_eq!(status(&basic("git", &s[0]), &vision, Access::Read), None);
        assert_eq!(status(&bearer(&s[0]), &vision, Access::Write), Some(403));
        assert_eq!(
            status(&bearer(&s[0]), &repo("other", "x"), Access::Read),
            Some(404)
        );
        assert_eq!(
            status(&bearer(&s[0]), &repo("other", "x"), Access::Write),
            Some(404)
        );
        assert_eq!(status(&bearer(&s[1]), &vision, Access::Write), None);
        assert_eq!(status(&bearer(&s[1]), &vision, Access::Admin), Some(403));
        assert_eq!(
            status(&bearer(&s[1]), &repo("acme", "other"), Access::Read),
            Some(404)
        );
        assert_eq!(
            status(&bearer(&s[1]), &repo("other", "y"), Access::Read),
            None
        );
        // Expired.
        let err = auth
            .authorize(&bearer(&s[2]), &vision, Access::Read)
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
        assert!(err.to_string().contains("expired"), "{err}");
        assert_eq!(auth.identity(&bearer(&s[1])), "t1");
        assert_eq!(auth.identity(&http::HeaderMap::new()), ANONYMOUS);
    }

    #[test]
    fn anonymous_only_without_tokens() {
        let (empty, _) = store_with(&[]);
        let mut claimed = http::HeaderMap::new();
        claimed.insert(crate::auth::USER_HEADER, "bob".parse().unwrap());
        let open = TokenAuthorizer::new(Arc::clone(&empty), true);
        open.authorize(&claimed, &repo("a", "b"), Access::Admin)
            .unwrap();
        assert_eq!(open.identity(&claimed), "bob");
        let closed = TokenAuthorizer::new(empty, false);
        let err = closed
            .authorize(&http::HeaderMap::new(), &repo("a", "b"), Access::Read)
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 401);
    }

    #[test]
    fn token_file_round_trip_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let store = TokenStore::open(Some(path.clone()), Vec::new()).unwrap();
        assert!(!store.has_tokens());
        let t = generate(&["write:acme/*".to_string()], None, None, |_| false).unwrap();
        assert!(t.secret.starts_with(TOKEN_PREFIX) && t.secret.len() == 68);
        assert_eq!(t.record.name, t.record.id);
        assert!(!format!("{t:?}").contains(&t.secret));
        TokenFile {
            tokens: vec![t.record.clone()],
        }
        .write(&path)
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t.secret), "the secret is never stored");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "token file mode {mode:o}");
        }
        // A running store notices the change (after the reload interval).
        *store.checked.write().unwrap() = Instant::now() - RELOAD_INTERVAL * 2;
        assert!(matches!(store.find(&t.secret), Found::Valid(_)));
        assert!(TokenStore::open(Some(path.clone()), Vec::new())
            .unwrap()
            .has_tokens());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(TokenStore::open(Some(path), Vec::new()).is_err());
    }

    #[test]
    fn a_lost_token_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let t = generate(&["read:*".to_string()], None, None, |_| false).unwrap();
        let file = TokenFile {
            tokens: vec![t.record.clone()],
        };
        file.write(&path).unwrap();
        assert!(marker_path(&path).exists(), "written with the file");
        let store = Arc::new(TokenStore::open(Some(path.clone()), Vec::new()).unwrap());
        let auth = TokenAuthorizer::new(Arc::clone(&store), true);
        let vision = repo("acme", "vision");
        let age = || *store.checked.write().unwrap() = Instant::now() - RELOAD_INTERVAL * 2;
        std::fs::remove_file(&path).unwrap();
        age();
        for headers in [http::HeaderMap::new(), bearer(&t.secret)] {
            let err = auth.authorize(&headers, &vision, Access::Read).unwrap_err();
            assert_eq!(err.status().as_u16(), 503, "{err}");
        }
        assert!(store.has_tokens());
        assert!(matches!(
            TokenStore::open(Some(path.clone()), Vec::new()),
            Err(TokenError::Lost { .. })
        ));
        assert!(matches!(
            TokenFile::read_checked(&path),
            Err(TokenError::Lost { .. })
        ));
        file.write(&path).unwrap();
        age();
        auth.authorize(&bearer(&t.secret), &vision, Access::Read)
            .unwrap();
        // An empty file is "no tokens" on purpose: the marker goes, and a missing file
        // is then no loss.
        TokenFile::default().write(&path).unwrap();
        assert!(!marker_path(&path).exists());
        std::fs::remove_file(&path).unwrap();
        assert!(!TokenStore::open(Some(path), Vec::new())
            .unwrap()
            .has_tokens());
    }

    #[test]
    fn names_and_ids_are_unique() {
        let record = |id: &str, name: &str| {
            let mut t = generate(&["read:*".to_string()], Some(name), None, |_| false).unwrap();
            t.record.id = id.to_string();
            t.record
        };
        let dup_name = vec![record("a", "CI"), record("b", "CI")];
        assert!(matches!(
            TokenStore::open(None, dup_name),
            Err(TokenError::Duplicate { what: "name", .. })
        ));
        let dup_id = vec![record("a", "x"), record("a", "y")];
        assert!(matches!(
            TokenStore::open(None, dup_id),
            Err(TokenError::Duplicate { what: "id", .. })
        ));
        // Across the config and the token file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        TokenFile {
            tokens: vec![record("f", "CI")],
        }
        .write(&path)
        .unwrap();
        let err = TokenStore::open(Some(path), vec![record("c", "CI")]).unwrap_err();
        assert!(
            err.to_string().contains("\"CI\" is used by tokens c and f"),
            "{err}"
        );
    }
}
