//! The git-model HTTP API shared by client and server: paths, limits, bodies. No I/O.
//!
//! A repository lives at a base URL `<server>/<namespace>/<repo>` (the value of
//! `model.url`); every path below is relative to it. `docs/protocol.md` specifies the API.
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | POST | `model/v1/chunks/exists` | n×32-byte chunk ids → n bytes, 1 = present |
//! | POST | `model/v1/files/exists`  | n×32-byte oids → n bytes, 1 = registered in this repo |
//! | PUT  | `model/v1/packs/<pack id>` | pack bytes → [`PackUploaded`] |
//! | GET  | `model/v1/packs/<pack id>` | (`Range: bytes=a-b`) → pack bytes |
//! | POST | `model/v1/files` | concatenated unlocated recipes → [`RegisterResponse`] |
//! | GET  | `model/v1/files/<oid>` | → the located recipe |
//! | POST | `model/v1/files/verify` | [`VerifyRequest`] → [`VerifyResponse`] |
//!
//! Errors are JSON [`ErrorBody`] with an HTTP status.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

pub const API_PREFIX: &str = "model/v1";
/// Media type of binary bodies (id lists, bitmaps, packs, recipes).
pub const BINARY: &str = "application/octet-stream";
/// Most ids in one `exists` query.
pub const MAX_QUERY_IDS: usize = 16 * 1024;
/// Largest body of a registration batch.
pub const MAX_REGISTER_BODY: usize = 64 * 1024 * 1024;
/// Header carrying the server's id for a request (echoed in logs and errors).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub fn chunks_exist_path() -> String {
    format!("{API_PREFIX}/chunks/exists")
}
pub fn files_exist_path() -> String {
    format!("{API_PREFIX}/files/exists")
}
pub fn files_path() -> String {
    format!("{API_PREFIX}/files")
}
pub fn files_verify_path() -> String {
    format!("{API_PREFIX}/files/verify")
}
pub fn file_path(oid: &gitmodel_format::Oid) -> String {
    format!("{API_PREFIX}/files/{oid}")
}
pub fn pack_path(id: &gitmodel_format::PackId) -> String {
    format!("{API_PREFIX}/packs/{id}")
}

/// Concatenates 32-byte ids into a query body.
pub fn encode_ids<'a>(ids: impl IntoIterator<Item = &'a [u8; 32]>) -> Vec<u8> {
    ids.into_iter().flat_map(|id| id.iter().copied()).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("id list of {0} bytes is not a multiple of 32")]
    Ragged(usize),
    #[error("{0} ids in one query, more than the limit of {MAX_QUERY_IDS}")]
    TooMany(usize),
    #[error("answer has {got} entries for {want} ids")]
    WrongCount { got: usize, want: usize },
}

/// Splits a query body into ids.
pub fn decode_ids(body: &[u8]) -> Result<Vec<[u8; 32]>, BodyError> {
    if !body.len().is_multiple_of(32) {
        return Err(BodyError::Ragged(body.len()));
    }
    let n = body.len() / 32;
    if n > MAX_QUERY_IDS {
        return Err(BodyError::TooMany(n));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect())
}

/// Reads an `exists` answer: one byte per id, 1 for present.
pub fn decode_presence(body: &[u8], want: usize) -> Result<Vec<bool>, BodyError> {
    if body.len() != want {
        return Err(BodyError::WrongCount {
            got: body.len(),
            want,
        });
    }
    Ok(body.iter().map(|&b| b == 1).collect())
}

/// Error answer of every endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `bad_pack`, `missing_chunks`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Answer to a pack upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackUploaded {
    pub pack: String,
    pub chunks: u32,
    /// False when this repository already had this pack (whether another repository
    /// has it is not revealed).
    pub created: bool,
}

/// Answer to a registration batch: one entry per recipe, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub files: Vec<RegisterResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResult {
    pub oid: String,
    pub ok: bool,
    /// Why the file was refused (e.g. missing chunks, hash mismatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Most files named in one `files/verify` request.
pub const MAX_VERIFY_FILES: usize = 1024;

/// Body of `files/verify`: the files to check against the server's storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub files: Vec<VerifyFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyFile {
    pub oid: String,
    /// The recipe segment to start from: the `next` of an earlier `pending` answer.
    #[serde(default)]
    pub from: u32,
}

/// Answer to `files/verify`: one entry per file, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyResponse {
    pub files: Vec<VerifyResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyResult {
    pub oid: String,
    /// `ok`, `damaged`, `missing` (not registered in this repository) or `pending` (not
    /// finished within this request's budget: ask again with `from` = `next`).
    pub status: String,
    #[serde(default)]
    pub next: u32,
    /// The damaged pack, when the damage is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// A `<namespace>/<repo>` pair, validated so it is safe as a storage path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    pub namespace: String,
    pub repo: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid repository name {0:?}: use letters, digits, '.', '_' and '-', not starting with '.'"
)]
pub struct NameError(pub String);

impl RepoName {
    /// Validates both parts; a trailing `.git` on the repository is dropped, so
    /// `acme/vision` and `acme/vision.git` are the same repository.
    pub fn new(namespace: &str, repo: &str) -> Result<RepoName, NameError> {
        let repo = repo.strip_suffix(".git").unwrap_or(repo);
        for part in [namespace, repo] {
            let ok = !part.is_empty()
                && part.len() <= 100
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(NameError(part.to_string()));
            }
        }
        Ok(RepoName {
            namespace: namespace.to_string(),
            repo: repo.to_string(),
        })
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.repo)
    }
}

/// A lock as the Git LFS API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub id: String,
    /// Relative to the root of the working tree, as the client sent it.
    pub path: String,
    /// RFC 3339, UTC, whole seconds.
    pub locked_at: String,
    pub owner: LockOwner,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(RepoName::new("acme", "vision.git").unwrap().repo, "vision");
        for bad in ["..", ".hidden", "a/b", "", "a b", "%2e%2e"] {
            assert!(RepoName::new("acme", bad).is_err(), "{bad}");
            assert!(RepoName::new(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_round_trip() {
        let ids = [[1u8; 32], [2u8; 32]];
        let body = encode_ids(ids.iter());
        assert_eq!(decode_ids(&body).unwrap(), ids);
        assert_eq!(decode_ids(&body[..33]), Err(BodyError::Ragged(33)));
        assert!(decode_presence(&[1, 0], 3).is_err());
        assert_eq!(decode_presence(&[1, 0], 2).unwrap(), vec![true, false]);
    }
}
