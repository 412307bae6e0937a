//! Authorization hook: who may read or write which repository.
//!
//! Every repository endpoint calls an [`Authorizer`] before doing anything else. Two
//! implementations exist: [`AllowAll`] (everything allowed: tests, trusted setups) and
//! [`crate::tokens::TokenAuthorizer`] (scoped tokens; what `git-model-server` runs).
//! Pack-level read restrictions go through [`crate::state::AppState::may_read_pack`]
//! (see [`crate::tenancy`]).
//!
//! [`Authorizer::identity`] names who a request acts for; only Git LFS locks use it (a
//! lock's owner). With a token it is the token's name. Without authentication the name
//! is merely *claimed*: the [`USER_HEADER`] header if the client sends one, else
//! [`ANONYMOUS`]. Lock ownership is then advisory, like everything else on such a server.

use gitmodel_proto::RepoName;

use crate::error::ApiError;

/// What a request wants to do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries and downloads: `chunks/exists`, `files/exists`, GET pack, GET recipe.
    Read,
    /// Uploads and registrations: PUT pack, POST files.
    Write,
    /// What only administrators of a repository may do: force-unlock another owner's
    /// Git LFS lock.
    Admin,
}

/// The identity of a request that names none.
pub const ANONYMOUS: &str = "anonymous";
/// Header through which a client of an [`AllowAll`] server may claim a name for its locks
/// (Git LFS can send it with `http.extraHeader`).
pub const USER_HEADER: &str = "x-git-model-user";
/// Longest claimed name accepted; longer or non-printable claims count as anonymous.
const MAX_CLAIMED_NAME: usize = 100;

/// Decides whether a request may access a repository. Answers `Ok(())` or
/// [`ApiError::Unauthorized`] (no or bad credentials) / [`ApiError::Forbidden`] (valid
/// credentials without the right) / [`ApiError::NotFound`] (credentials that may not
/// even read the repository: it is answered as if it did not exist).
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(
        &self,
        headers: &http::HeaderMap,
        repo: &RepoName,
        access: Access,
    ) -> Result<(), ApiError>;

    /// The name the request acts under (a Git LFS lock's owner). Called only after
    /// [`Authorizer::authorize`] accepted the request. An authenticating implementation
    /// returns the authenticated user; the default knows nobody.
    fn identity(&self, headers: &http::HeaderMap) -> String {
        let _ = headers;
        ANONYMOUS.to_string()
    }

    /// Who the request is authenticated as, for sharing work fairly between writers
    /// ([`crate::register::FILES_PER_WRITER`]): a token's id. `None` when requests are
    /// not authenticated (everyone is then one trusted party), the default.
    fn writer(&self, headers: &http::HeaderMap) -> Option<String> {
        let _ = headers;
        None
    }

    /// Whether the request may see what concerns the whole server rather than one
    /// repository (`/metrics`: figures that move with every tenant's data). Only
    /// administrators of every repository (`admin:*`) may, once tokens exist; the
    /// default lets everyone, like [`Authorizer::authorize`] of an open server.
    fn authorize_server(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let _ = headers;
        Ok(())
    }
}

/// The name claimed in [`USER_HEADER`], if it is a sensible one.
pub fn claimed_name(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(USER_HEADER)?.to_str().ok()?.trim();
    let printable = value.chars().all(|c| !c.is_control());
    (!value.is_empty() && value.len() <= MAX_CLAIMED_NAME && printable).then(|| value.to_string())
}

/// Lets every request through: for a server on a trusted network or loopback.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &http::HeaderMap, _: &RepoName, _: Access) -> Result<(), ApiError> {
        Ok(())
    }

    /// Unauthenticated: whatever name the client claims, else [`ANONYMOUS`].
    fn identity(&self, headers: &http::HeaderMap) -> String {
        claimed_name(headers).unwrap_or_else(|| ANONYMOUS.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_identity() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(AllowAll.identity(&headers), ANONYMOUS);
        headers.insert(USER_HEADER, http::HeaderValue::from_static(" alice "));
        assert_eq!(AllowAll.identity(&headers), "alice");
        headers.insert(USER_HEADER, http::HeaderValue::from_static(""));
        assert_eq!(AllowAll.identity(&headers), ANONYMOUS);
        let long = "x".repeat(MAX_CLAIMED_NAME + 1);
        headers.insert(USER_HEADER, http::HeaderValue::from_str(&long).unwrap());
        assert_eq!(AllowAll.identity(&headers), ANONYMOUS);
    }
}
