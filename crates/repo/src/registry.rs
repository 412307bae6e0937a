//! The stage registry: `promote`, `rollback`, `stages`, `history`, `export` and
//! `registry sync`.
//!
//! Events (see `gitmodel_ml::registry`) are JSON blobs at `events/<model>/<id>.json` in
//! the tree of a commit chain under [`LOCAL_REF`], one commit per event, so the history
//! travels with git. Remotes' registries are fetched into
//! `refs/gitmodel/remotes/<remote>/registry` (a fetch refspec is added on first use, so
//! plain `git fetch` keeps them current) and merged, never overwritten: a merge commit's
//! tree is the union of both sides' event files, and every reader replays the union of
//! the local and fetched registries. Pushing is a plain fast-forward push; when another
//! clone pushed first, the push is retried after fetching and merging.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use gitmodel_client::FileRef;
use gitmodel_format::{Oid, Pointer};
use gitmodel_ml::manifest::{self, valid_name};
use gitmodel_ml::metrics;
use gitmodel_ml::registry::{self, Action, Event, Version};
use gitmodel_ml::time::{self, Ident};

use crate::content::{short, Ctx, Side};
use crate::error::usage;

/// The local registry: a commit chain of events.
pub const LOCAL_REF: &str = "refs/gitmodel/registry";
/// How many times a rejected push is retried after fetching and merging.
const PUSH_ATTEMPTS: usize = 5;

pub fn tracking_ref(remote: &str) -> String {
    format!("refs/gitmodel/remotes/{remote}/registry")
}

/// A pattern refspec: unlike `refs/gitmodel/registry:…`, fetching it from a remote that
/// has no registry yet is not an error, so it is safe in `remote.<name>.fetch`.
pub fn refspec(remote: &str) -> String {
    format!("+refs/gitmodel/registry*:refs/gitmodel/remotes/{remote}/registry*")
}

/// The remote to sync with: the one asked for, else `origin`, else the only one.
pub fn pick_remote(ctx: &Ctx, asked: Option<String>, local: bool) -> Result<Option<String>> {
    if local {
        return Ok(None);
    }
    let remotes = ctx.git().remotes()?;
    let names: Vec<&str> = remotes.iter().flatten().collect();
    if let Some(r) = asked {
        if !names.contains(&r.as_str()) {
            return Err(usage(format!("no remote named {r:?}")));
        }
        return Ok(Some(r));
    }
    Ok(if names.contains(&"origin") {
        Some("origin".into())
    } else if names.len() == 1 {
        Some(names[0].to_string())
    } else {
        None
    })
}

/// Event blobs in a registry tree: (model, file name) → blob.
fn tree_events(
    repo: &git2::Repository,
    commit: git2::Oid,
) -> Result<BTreeMap<(String, String), git2::Oid>> {
    let mut out = BTreeMap::new();
    let tree = repo.find_commit(commit)?.tree()?;
    let Some(events) = tree.get_name("events") else {
        return Ok(out);
    };
    let events = repo.find_tree(events.id())?;
    for model in events.iter() {
        let Some(name) = model.name() else { continue };
        if model.kind() != Some(git2::ObjectType::Tree) {
            continue;
        }
        for ev in repo.find_tree(model.id())?.iter() {
            if let (Some(file), Some(git2::ObjectType::Blob)) = (ev.name(), ev.kind()) {
                out.insert((name.to_string(), file.to_string()), ev.id());
            }
        }
    }
    Ok(out)
}

fn ref_target(repo: &git2::Repository, name: &str) -> Option<git2::Oid> {
    repo.find_reference(name)
        .ok()
        .and_then(|r| r.peel_to_commit().ok())
        .map(|c| c.id())
}

/// Every event known here: the local registry and every fetched one, replay-sorted.
pub fn view(ctx: &Ctx) -> Result<Vec<Event>> {
    let repo = ctx.git();
    let mut tips: Vec<git2::Oid> = ref_target(repo, LOCAL_REF).into_iter().collect();
    for r in repo.references_glob("refs/gitmodel/remotes/*/registry")? {
        if let Ok(c) = r?.peel_to_commit() {
            tips.push(c.id());
        }
    }
    let mut files = BTreeMap::new();
    for tip in tips {
        files.extend(tree_events(repo, tip)?);
    }
    let mut events = Vec::new();
    for ((model, file), blob) in files {
        let data = repo.find_blob(blob)?;
        match Event::from_json(&format!("{model}/{file}"), data.content()) {
            Ok(ev) => events.push(ev),
            Err(e) => tracing::warn!("{e}; ignored"),
        }
    }
    registry::sort(&mut events);
    Ok(events)
}

fn build_tree(
    repo: &git2::Repository,
    files: &BTreeMap<(String, String), git2::Oid>,
) -> Result<git2::Oid> {
    let mut by_model: BTreeMap<&str, Vec<(&str, git2::Oid)>> = BTreeMap::new();
    for ((model, file), blob) in files {
        by_model.entry(model).or_default().push((file, *blob));
    }
    let mut events = repo.treebuilder(None)?;
    for (model, list) in by_model {
        let mut tb = repo.treebuilder(None)?;
        for (file, blob) in list {
            tb.insert(file, blob, 0o100644)?;
        }
        events.insert(model, tb.write()?, 0o040000)?;
    }
    let mut root = repo.treebuilder(None)?;
    root.insert("events", events.write()?, 0o040000)?;
    let readme = repo.blob(
        b"git-model stage registry: one JSON file per promotion or rollback under\n\
          events/<model>/. Written by `git model promote`; see docs/ml.md.\n",
    )?;
    root.insert("README", readme, 0o100644)?;
    Ok(root.write()?)
}

/// Who and when, as git would record a commit now (honours `GIT_COMMITTER_*`).
pub fn ident(ctx: &Ctx) -> Result<Ident> {
    let line = ctx.repo.git.run(&["var", "GIT_COMMITTER_IDENT"])?;
    Ident::parse(&line).ok_or_else(|| anyhow!("cannot read git's identity {line:?}"))
}

fn signature(id: &Ident) -> Result<git2::Signature<'static>> {
    let sign = if id.tz.starts_with('-') { -1 } else { 1 };
    let digits = id.tz.trim_start_matches(['+', '-']);
    let minutes = digits
        .get(..2)
        .and_then(|h| h.parse::<i32>().ok())
        .zip(digits.get(2..4).and_then(|m| m.parse::<i32>().ok()))
        .map(|(h, m)| sign * (h * 60 + m))
        .unwrap_or(0);
    Ok(git2::Signature::new(
        &id.name,
        &id.email,
        &git2::Time::new(id.time, minutes),
    )?)
}

/// Moves the local registry from `old` to `new`, failing if it moved meanwhile.
fn set_ref(
    repo: &git2::Repository,
    new: git2::Oid,
    old: Option<git2::Oid>,
    msg: &str,
) -> Result<()> {
    let r = match old {
        Some(o) => repo.reference_matching(LOCAL_REF, new, true, o, msg),
        None => repo.reference(LOCAL_REF, new, false, msg),
    };
    r.map(|_| ())
        .map_err(|e| anyhow!("the registry changed while this command ran ({e}); run it again"))
}

/// Commits one event on the local registry.
pub fn append(ctx: &Ctx, ev: &Event, who: &Ident) -> Result<()> {
    let repo = ctx.git();
    let old = ref_target(repo, LOCAL_REF);
    let mut files = match old {
        Some(c) => tree_events(repo, c)?,
        None => BTreeMap::new(),
    };
    let blob = repo.blob(ev.to_json().as_bytes())?;
    files.insert((ev.model.clone(), ev.file_name()), blob);
    let tree = repo.find_tree(build_tree(repo, &files)?)?;
    let sig = signature(who)?;
    let parent = old.map(|o| repo.find_commit(o)).transpose()?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let action = match ev.action {
        Action::Promote => "promote",
        Action::Rollback => "rollback",
    };
    let msg = format!(
        "{action} {}@{} to {}\n\nEvent: {}\n",
        ev.model,
        short(&ev.version.commit),
        ev.stage,
        ev.id
    );
    let commit = repo.commit(None, &sig, &sig, &msg, &tree, &parents)?;
    set_ref(repo, commit, old, &msg)
}

/// Merges the fetched registry of `remote` into the local one: fast-forward when one
/// contains the other, else a merge commit holding the union of both sides' events.
pub fn merge_tracking(ctx: &Ctx, remote: &str) -> Result<()> {
    let repo = ctx.git();
    let Some(theirs) = ref_target(repo, &tracking_ref(remote)) else {
        return Ok(());
    };
    let ours = ref_target(repo, LOCAL_REF);
    let Some(ours) = ours else {
        return set_ref(repo, theirs, None, "registry: from remote");
    };
    if ours == theirs || repo.graph_descendant_of(ours, theirs)? {
        return Ok(());
    }
    if repo.graph_descendant_of(theirs, ours)? {
        return set_ref(repo, theirs, Some(ours), "registry: fast-forward");
    }
    let mut files = tree_events(repo, ours)?;
    files.extend(tree_events(repo, theirs)?);
    let tree = repo.find_tree(build_tree(repo, &files)?)?;
    let sig = signature(&ident(ctx)?)?;
    let (a, b) = (repo.find_commit(ours)?, repo.find_commit(theirs)?);
    let msg = format!("merge registry from {remote}\n");
    let merged = repo.commit(None, &sig, &sig, &msg, &tree, &[&a, &b])?;
    set_ref(repo, merged, Some(ours), &msg)
}

/// Fetches `remote`'s registry into its tracking ref and records the refspec so plain
/// `git fetch` keeps it current.
pub fn fetch(ctx: &Ctx, remote: &str) -> Result<()> {
    let git = &ctx.repo.git;
    git.run(&[
        "fetch",
        "-q",
        "--no-write-fetch-head",
        remote,
        &refspec(remote),
    ])
    .with_context(|| format!("fetching the model registry from {remote}"))?;
    let key = format!("remote.{remote}.fetch");
    let have = git
        .try_run(&["config", "--get-all", &key])?
        .unwrap_or_default();
    if !have.lines().any(|l| l.trim() == refspec(remote)) {
        git.run(&["config", "--add", &key, &refspec(remote)])?;
    }
    Ok(())
}

pub fn fetch_and_merge(ctx: &Ctx, remote: &str) -> Result<()> {
    fetch(ctx, remote)?;
    merge_tracking(ctx, remote)
}

/// Pushes the local registry (fast-forward only), merging and retrying when another
/// clone pushed first.
pub fn push(ctx: &Ctx, remote: &str) -> Result<()> {
    if ref_target(ctx.git(), LOCAL_REF).is_none() {
        return Ok(());
    }
    let spec = format!("{LOCAL_REF}:{LOCAL_REF}");
    let mut last = String::new();
    for _ in 0..PUSH_ATTEMPTS {
        match ctx
            .repo
            .git
            .run(&["push", "-q", "--no-verify", remote, &spec])
        {
            Ok(_) => {
                // The tracking ref now equals what was pushed.
                fetch(ctx, remote)?;
                return Ok(());
            }
            Err(e) => {
                last = e.to_string();
                let rejected = ["rejected", "non-fast-forward", "fetch first"]
                    .iter()
                    .any(|w| last.contains(w));
                if !rejected {
                    break;
                }
                fetch_and_merge(ctx, remote)?;
            }
        }
    }
    bail!(
        "could not push the model registry to {remote}: {last}\n\
         (the event is recorded locally; `git model registry sync` retries)"
    )
}

/// Best-effort fetch before reading: a read works offline. Returns why the fetch
/// failed, for a warning.
pub fn refresh(ctx: &Ctx, offline: bool) -> Option<anyhow::Error> {
    if offline {
        return None;
    }
    match pick_remote(ctx, None, false) {
        Ok(Some(remote)) => fetch(ctx, &remote).err(),
        _ => None,
    }
}

/// The model file at `commit` as a registry version.
pub fn version_at(ctx: &Ctx, commit: git2::Oid, path: &str) -> Result<Version> {
    let (_, bytes) = ctx.blob_at(commit, path)?.ok_or_else(|| {
        usage(format!(
            "{path} is not in commit {}",
            short(&commit.to_string())
        ))
    })?;
    let (oid, size) = match Pointer::parse(&bytes) {
        Some(p) => (p.oid, p.size),
        None => (Oid::of(&bytes), bytes.len() as u64),
    };
    Ok(Version {
        commit: commit.to_string(),
        oid: oid.to_hex(),
        size,
        path: path.to_string(),
    })
}

/// Numeric metrics of `version`: as recorded by the event that introduced it, else read
/// from its commit (when that commit is here).
pub fn metrics_of(
    ctx: &Ctx,
    events: &[Event],
    version: &Version,
    files: &[String],
) -> Option<BTreeMap<String, f64>> {
    if let Some(e) = events
        .iter()
        .rev()
        .find(|e| e.version.same_content(version) && !e.metrics.is_empty())
    {
        return Some(e.metrics.clone());
    }
    let commit = git2::Oid::from_str(&version.commit).ok()?;
    ctx.git().find_commit(commit).ok()?;
    let flat = crate::content::load_files(ctx, Side::Rev(commit), files).ok()?;
    Some(metrics::numeric(&flat))
}

/// A published promotion must name content others can export: the server must have it.
pub fn published(ctx: &Ctx, version: &Version) -> Result<()> {
    let commit = git2::Oid::from_str(&version.commit)?;
    let pointer = ctx
        .blob_at(commit, &version.path)?
        .and_then(|(_, b)| Pointer::parse(&b))
        .filter(|p| p.size > 0);
    let (Some(p), Ok(remote)) = (pointer, ctx.remote()) else {
        return Ok(()); // not a git-model file, or no server configured
    };
    let there = remote
        .files_exist(&[p.oid])
        .with_context(|| format!("asking {} whether it has {}", remote.url(), version.path))?;
    if there.first() != Some(&true) {
        bail!(
            "the server does not have {} at {} ({}): push that commit first              (`git push`, or `git model push`), so every clone can export it",
            version.path,
            short(&version.commit),
            p.oid
        );
    }
    Ok(())
}

/// A model as HEAD's manifest describes it, and the gates of one of its stages.
pub struct Target {
    pub spec: manifest::ModelSpec,
    pub gates: Vec<manifest::Gate>,
}

/// The model as HEAD's manifest describes it (the policy: path, metrics, gates).
pub fn target(ctx: &Ctx, model: &str, stage: &str) -> Result<Target> {
    if !valid_name(stage) {
        return Err(usage(format!(
            "stage name {stage:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let head = ctx.commit("HEAD")?.id();
    let m = ctx.require_manifest(Side::Rev(head))?;
    let spec = m
        .model(model)
        .map_err(|e| crate::error::not_found(e.to_string()))?
        .clone();
    let gates = spec.stages.get(stage).cloned().unwrap_or_default();
    Ok(Target { spec, gates })
}

/// What [`promote`] recorded: the event (its `previous`, `forced` and `gates` say what
/// it replaced and how the gates went).
#[derive(Debug)]
pub struct Promoted {
    pub event: Event,
}

/// `git model promote`: records `model` at `rev` in `stage` if the stage's gates in
/// HEAD's `models.toml` pass (or, with `force`, although they fail: recorded as forced),
/// syncing with `remote` (see [`pick_remote`]) before and after. A published version
/// must be on the server. `recorded` is told once the event is committed locally, before
/// the push.
#[allow(clippy::too_many_arguments)]
pub fn promote(
    ctx: &Ctx,
    model: &str,
    rev: &str,
    stage: &str,
    reason: Option<String>,
    force: bool,
    remote: Option<String>,
    local: bool,
    recorded: impl FnOnce(&Promoted),
) -> Result<Promoted> {
    let t = target(ctx, model, stage)?;
    let commit = ctx.commit(rev)?.id();
    let version = version_at(ctx, commit, &t.spec.path)?;
    let remote = pick_remote(ctx, remote, local)?;
    if let Some(r) = &remote {
        published(ctx, &version)?;
        fetch_and_merge(ctx, r)?;
    }
    let events = view(ctx)?;
    let state = registry::replay(&events, model, None);
    let current = state.get(stage);
    if let Some(s) = current {
        if s.current.same_content(&version) {
            bail!(
                "{model} {} is already in {stage} (since {})",
                s.current.short(),
                time::format_utc(s.since)
            );
        }
    }
    let candidate = metrics::numeric(&crate::content::load_files(
        ctx,
        Side::Rev(commit),
        &t.spec.metrics,
    )?);
    let previous = current.and_then(|s| metrics_of(ctx, &events, &s.current, &t.spec.metrics));
    let results = manifest::evaluate(&t.gates, &candidate, previous.as_ref());
    let failed: Vec<&manifest::GateResult> = results.iter().filter(|g| !g.passed).collect();
    if !failed.is_empty() && !force {
        return Err(crate::error::GateRefused {
            model: model.to_string(),
            commit: short(&version.commit).to_string(),
            stage: stage.to_string(),
            failed: failed.into_iter().cloned().collect(),
        }
        .into());
    }
    let who = ident(ctx)?;
    let mut ev = Event {
        id: String::new(),
        seq: registry::next_seq(&events),
        model: model.to_string(),
        stage: stage.to_string(),
        action: Action::Promote,
        version: version.clone(),
        previous: current.map(|s| s.current.clone()),
        reason,
        forced: !failed.is_empty(),
        gates: results.clone(),
        metrics: candidate,
        who: who.who(),
        time: who.time,
        tz: who.tz.clone(),
    };
    ev.seal();
    append(ctx, &ev, &who)?;
    let done = Promoted { event: ev };
    recorded(&done);
    if let Some(r) = &remote {
        push(ctx, r)?;
    }
    Ok(done)
}

/// `git model rollback`: puts back the version `stage` had before its current one,
/// syncing with `remote` before and after. `recorded` is told once the event is committed
/// locally (its `version` is the restored one, `previous` the replaced one).
pub fn rollback(
    ctx: &Ctx,
    model: &str,
    stage: &str,
    reason: Option<String>,
    remote: Option<String>,
    local: bool,
    recorded: impl FnOnce(&Event),
) -> Result<Event> {
    if !valid_name(stage) {
        return Err(usage(format!("invalid stage name {stage:?}")));
    }
    let remote = pick_remote(ctx, remote, local)?;
    if let Some(r) = &remote {
        fetch_and_merge(ctx, r)?;
    }
    let events = view(ctx)?;
    let state = registry::replay(&events, model, None);
    let s = state
        .get(stage)
        .ok_or_else(|| usage(format!("{model} has no version in {stage}")))?;
    let back = s.rollback_target().ok_or_else(|| {
        anyhow!(
            "nothing to roll back to: {model} has had only {} in {stage}",
            s.current.short()
        )
    })?;
    let who = ident(ctx)?;
    let mut ev = Event {
        id: String::new(),
        seq: registry::next_seq(&events),
        model: model.to_string(),
        stage: stage.to_string(),
        action: Action::Rollback,
        version: back.clone(),
        previous: Some(s.current.clone()),
        reason,
        forced: false,
        gates: Vec::new(),
        metrics: events
            .iter()
            .rev()
            .find(|e| e.version.same_content(back))
            .map(|e| e.metrics.clone())
            .unwrap_or_default(),
        who: who.who(),
        time: who.time,
        tz: who.tz.clone(),
    };
    ev.seal();
    append(ctx, &ev, &who)?;
    recorded(&ev);
    if let Some(r) = &remote {
        push(ctx, r)?;
    }
    Ok(ev)
}

/// Resolves `rev`, fetching it (shallowly) from `remote` when this clone lacks it.
pub fn commit_or_fetch(ctx: &Ctx, rev: &str, remote: Option<&str>) -> Result<git2::Oid> {
    if let Ok(c) = ctx.commit(rev) {
        return Ok(c.id());
    }
    let Some(r) = remote else {
        return Err(crate::error::not_found(format!("unknown revision {rev:?}")));
    };
    ctx.repo
        .git
        .run(&["fetch", "-q", "--depth", "1", r, rev])
        .with_context(|| format!("fetching {rev} from {r}"))?;
    Ok(ctx.commit("FETCH_HEAD")?.id())
}

/// What [`export`] wrote.
#[derive(Debug)]
pub struct Exported {
    pub model: String,
    /// The stage or revision asked for.
    pub which: String,
    pub version: Version,
}

/// `git model export <model>@<stage or rev>`: writes that version of the model file to
/// `output` (atomically, checked against its oid), fetching the registry from `remote`
/// first (a failure there is told to `warn`, and the registry as known here is used).
pub fn export(
    ctx: &Ctx,
    spec: &str,
    output: &Path,
    remote: Option<String>,
    warn: impl FnOnce(&anyhow::Error),
) -> Result<Exported> {
    let (model, which) = spec
        .split_once('@')
        .filter(|(m, w)| !m.is_empty() && !w.is_empty())
        .ok_or_else(|| usage(format!("expected <model>@<stage or rev>, not {spec:?}")))?;
    let remote = pick_remote(ctx, remote, false)?;
    if let Some(r) = &remote {
        if let Err(e) = fetch(ctx, r) {
            warn(&e);
        }
    }
    let events = view(ctx)?;
    let states = registry::replay(&events, model, None);
    let version = match states.get(which) {
        Some(s) => s.current.clone(),
        None => {
            let head = ctx.commit("HEAD")?.id();
            let m = ctx.require_manifest(Side::Rev(head))?;
            let path = m
                .model(model)
                .map_err(|e| crate::error::not_found(e.to_string()))?
                .path
                .clone();
            let commit = commit_or_fetch(ctx, which, remote.as_deref()).map_err(|e| {
                if states.is_empty() {
                    e
                } else {
                    crate::error::not_found(format!(
                        "{which:?} is neither a stage of {model} ({}) nor a revision here",
                        states.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                }
            })?;
            version_at(ctx, commit, &path)?
        }
    };
    let oid = Oid::from_hex(&version.oid).map_err(|e| anyhow!("registry version: {e}"))?;
    write_version(ctx, &version, oid, output)?;
    Ok(Exported {
        model: model.to_string(),
        which: which.to_string(),
        version,
    })
}
/// Writes the content of `version` to `output`, atomically and verified.
pub fn write_version(ctx: &Ctx, version: &Version, oid: Oid, output: &Path) -> Result<()> {
    if version.size == 0 {
        gitmodel_store::fsutil::write_atomic(output, b"")
            .with_context(|| output.display().to_string())?;
        return Ok(());
    }
    if !ctx.store.has_file(&oid) {
        // A file tracked by git-model: from the server, only the chunks missing here.
        let fetched = ctx.remote().and_then(|remote| {
            gitmodel_client::download(
                &ctx.store,
                &remote,
                &[FileRef {
                    oid,
                    size: version.size,
                    path: version.path.clone(),
                }],
            )
            .map_err(anyhow::Error::from)
        });
        if let Err(e) = fetched {
            // A plain git file: its blob at the version's commit.
            let commit = git2::Oid::from_str(&version.commit)?;
            let blob = ctx
                .git()
                .find_commit(commit)
                .ok()
                .and_then(|_| ctx.blob_at(commit, &version.path).ok().flatten());
            let Some((_, bytes)) = blob.filter(|(_, b)| Pointer::parse(b).is_none()) else {
                return Err(e.context(format!("fetching {} ({oid})", version.path)));
            };
            if Oid::of(&bytes) != oid {
                bail!(
                    "{} at {}: content does not hash to {oid}",
                    version.path,
                    short(&version.commit)
                );
            }
            return gitmodel_store::fsutil::write_atomic(output, &bytes)
                .with_context(|| output.display().to_string());
        }
    }
    let to = crate::checkout::Destination::File {
        target: output,
        executable: false,
    };
    crate::checkout::write_out(&ctx.store, &Pointer::new(oid, version.size), to)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}
