//! Errors of the application layer.
//!
//! Operations return [`anyhow::Result`] whose root cause is typed, so a caller tells the
//! cases apart with `downcast_ref`: [`UsageError`] (how git-model was called or
//! configured: the CLI's exit code 2), [`NotFound`] (a revision, model, stage or path that
//! does not exist: also exit code 2), [`GateRefused`] (a promotion its gates refused),
//! [`gitmodel_client::ClientError`] (the server),
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

/// A revision, model, stage or path that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// A [`NotFound`] as an [`anyhow::Error`].
pub fn not_found(msg: impl Into<String>) -> anyhow::Error {
    NotFound(msg.into()).into()
}

/// A promotion refused by the stage's gates (`force` not given).
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to promote {model}@{commit} to {stage}:\n{}\n\
     (fix the metrics, or pass --force with -m <reason>: the override is recorded)",
    gate_lines(.failed)
)]
pub struct GateRefused {
    pub model: String,
    /// The commit asked for (abbreviated).
    pub commit: String,
    pub stage: String,
    /// The gates that failed.
    pub failed: Vec<gitmodel_ml::manifest::GateResult>,
}

fn gate_lines(failed: &[gitmodel_ml::manifest::GateResult]) -> String {
    failed
        .iter()
        .map(|g| format!("  gate {:?} failed: {}", g.rule, g.detail))
        .collect::<Vec<_>>()
        .join("\n")
}
