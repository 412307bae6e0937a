//! Authorization hook: who may read or write which repository.
//!
//! Every repository endpoint calls an [`Authorizer`] before doing anything else. Only
//! [`AllowAll`] exists today; token-based authorization will be another implementation of
//! the same trait, so no handler changes when it lands. Pack-level read restrictions go
//! through [`crate::state::AppState::may_read_pack`].

use gitmodel_proto::RepoName;

use crate::error::ApiError;

/// What a request wants to do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries and downloads: `chunks/exists`, `files/exists`, GET pack, GET recipe.
    Read,
    /// Uploads and registrations: PUT pack, POST files.
    Write,
}

/// Decides whether a request may access a repository. Answers `Ok(())` or
/// [`ApiError::Unauthorized`] (no or bad credentials) / [`ApiError::Forbidden`] (valid
/// credentials without the right).
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(
        &self,
        headers: &http::HeaderMap,
        repo: &RepoName,
        access: Access,
    ) -> Result<(), ApiError>;
}

/// Lets every request through: for a server on a trusted network or loopback.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &http::HeaderMap, _: &RepoName, _: Access) -> Result<(), ApiError> {
        Ok(())
    }
}
