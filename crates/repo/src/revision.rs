//! Revisions wherever one is taken: a commit, branch or tag (anything `git rev-parse`
//! knows), or `MODEL@STAGE`, the version the stage registry has in that stage; and the
//! model versions `MODEL@STAGE` / `MODEL@REV` name.

use std::collections::BTreeMap;

use anyhow::Result;
use gitmodel_ml::manifest::valid_name;
use gitmodel_ml::registry::{self, Version};
use serde::Serialize;

use crate::content::{Ctx, Side};
use crate::error::not_found;
use crate::registry::{commit_or_fetch, metrics_of, version_at, view};

/// `MODEL@STAGE` split in two, when `rev` has that shape (`HEAD@{1}` has not).
pub fn split_stage(rev: &str) -> Option<(&str, &str)> {
    let (model, stage) = rev.split_once('@')?;
    (valid_name(model) && valid_name(stage)).then_some((model, stage))
}

/// The commit `rev` names. `MODEL@STAGE` is looked up in the registry as known here
/// (fetch it first to see the remote's); a commit this clone lacks is fetched from
/// `remote` when one is given (shallow clones, the remote-repository cache).
pub fn commit_of(ctx: &Ctx, rev: &str, remote: Option<&str>) -> Result<git2::Oid> {
    if let Some((model, stage)) = split_stage(rev) {
        let events = view(ctx)?;
        let states = registry::replay(&events, model, None);
        if let Some(s) = states.get(stage) {
            return commit_or_fetch(ctx, &s.current.commit, remote);
        }
        if ctx.commit(rev).is_err() && !states.is_empty() {
            return Err(not_found(format!(
                "{model} has no version in stage {stage:?} (its stages: {})",
                states.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    commit_or_fetch(ctx, rev, remote)
}

/// The side of a revision: `None` is the working tree (HEAD in a bare repository).
pub fn side_of(ctx: &Ctx, rev: Option<&str>, remote: Option<&str>) -> Result<Side> {
    match rev {
        None if ctx.repo.workdir.is_some() => Ok(Side::Worktree),
        None => Ok(Side::Rev(commit_of(ctx, "HEAD", remote)?)),
        Some(r) => Ok(Side::Rev(commit_of(ctx, r, remote)?)),
    }
}

/// One version of a model, as `MODEL@STAGE`, `MODEL@REV` or `MODEL` (at HEAD) names it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    pub model: String,
    /// The stage asked for (`None`: a revision was).
    pub stage: Option<String>,
    #[serde(flatten)]
    pub version: Version,
    /// Numeric metrics of the version (as recorded at promotion, else read at its commit).
    pub metrics: BTreeMap<String, f64>,
    /// When and by whom it was put in the stage.
    pub since: Option<i64>,
    pub by: Option<String>,
}

/// The model version `spec` names.
pub fn model_version(ctx: &Ctx, spec: &str, remote: Option<&str>) -> Result<ModelVersion> {
    let (model, which) = match spec.split_once('@') {
        Some((m, w)) if !m.is_empty() && !w.is_empty() => (m, w),
        Some(_) => {
            return Err(not_found(format!(
                "expected MODEL@STAGE or MODEL@REV, not {spec:?}"
            )))
        }
        None => (spec, "HEAD"),
    };
    let events = view(ctx)?;
    let states = registry::replay(&events, model, None);
    let head = commit_of(ctx, "HEAD", remote)?;
    let manifest = ctx.require_manifest(Side::Rev(head))?;
    let spec_ = manifest
        .model(model)
        .map_err(|e| not_found(e.to_string()))?
        .clone();
    if let Some(s) = states.get(which) {
        let metrics = metrics_of(ctx, &events, &s.current, &spec_.metrics).unwrap_or_default();
        return Ok(ModelVersion {
            model: model.to_string(),
            stage: Some(which.to_string()),
            version: s.current.clone(),
            metrics,
            since: Some(s.since),
            by: Some(s.by.clone()),
        });
    }
    let commit = commit_of(ctx, which, remote).map_err(|e| {
        if states.is_empty() {
            e
        } else {
            not_found(format!(
                "{which:?} is neither a stage of {model} ({}) nor a revision here",
                states.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        }
    })?;
    let version = version_at(ctx, commit, &spec_.path)?;
    let flat = crate::content::load_files(ctx, Side::Rev(commit), &spec_.metrics)?;
    Ok(ModelVersion {
        model: model.to_string(),
        stage: None,
        version,
        metrics: gitmodel_ml::metrics::numeric(&flat),
        since: None,
        by: None,
    })
}
