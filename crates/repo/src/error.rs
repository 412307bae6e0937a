//! Errors of the application layer.
//!
//! Operations return [`anyhow::Result`] whose root cause is typed, so a caller tells the
//! cases apart with `downcast_ref`: [`UsageError`] (how git-model was called or
//! configured: the CLI's exit code 2), [`gitmodel_client::ClientError`] (the server),
//! [`gitmodel_store::StoreError`] (the local store), [`PullError`] (files a pull could not
//! write), [`git2::Error`] (the repository). The context lines above the cause say what
//! was being done.

/// An error in how git-model was called or configured.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A [`UsageError`] as an [`anyhow::Error`].
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Files a pull or checkout could not write (the others were written).
#[derive(Debug, thiserror::Error)]
#[error("could not write:\n  {}", lines(.failed))]
pub struct PullError {
    pub failed: Vec<crate::Problem>,
}

fn lines(failed: &[crate::Problem]) -> String {
    failed
        .iter()
        .map(|p| format!("{} ({}): {}", p.path, p.oid, p.problem))
        .collect::<Vec<_>>()
        .join("\n  ")
}
