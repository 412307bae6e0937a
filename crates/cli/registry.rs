//! The stage registry's commands: `promote`, `rollback`, `stages`, `history`, `export`
//! and `registry sync`, rendering [`gitmodel_repo::registry`] (where the event log and its
//! sync live).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use gitmodel_ml::metrics;
use gitmodel_ml::registry::{self, Action, Event, Version};
use gitmodel_ml::time;
use gitmodel_repo::content::{short, Ctx};
use gitmodel_repo::registry::{fetch_and_merge, pick_remote, push, refresh, view};
use gitmodel_repo::usage;

#[derive(Subcommand)]
pub enum Command {
    /// Put a version of a model into a stage, if the stage's gates in models.toml pass.
    Promote {
        model: String,
        /// The commit whose model file is promoted.
        rev: String,
        /// The stage (any name: staging, production, canary…).
        #[arg(long)]
        to: String,
        /// Why (recorded).
        #[arg(long, short)]
        message: Option<String>,
        /// Promote although gates fail (recorded as forced).
        #[arg(long)]
        force: bool,
        /// Remote to sync the registry with (default: origin, if it exists).
        #[arg(long)]
        remote: Option<String>,
        /// Record locally only; `git model registry sync` publishes later.
        #[arg(long)]
        local: bool,
    },
    /// Put back the version a stage had before its current one.
    Rollback {
        model: String,
        #[arg(long)]
        stage: String,
        #[arg(long, short)]
        message: Option<String>,
        #[arg(long)]
        remote: Option<String>,
        #[arg(long)]
        local: bool,
    },
    /// Which version is in each stage.
    Stages {
        model: Option<String>,
        #[arg(long)]
        json: bool,
        /// Do not fetch the remote's registry first.
        #[arg(long)]
        offline: bool,
    },
    /// Every promotion and rollback of a model; with --at, the stages at that time.
    History {
        model: String,
        #[arg(long)]
        stage: Option<String>,
        /// A date or time (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, @unix).
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        offline: bool,
    },
    /// Write one version of a model to a file without a checkout.
    ///
    /// `<model>@<stage>` or `<model>@<rev>`; works in shallow and pointer-only clones.
    Export {
        spec: String,
        #[arg(long, short)]
        output: PathBuf,
        #[arg(long)]
        remote: Option<String>,
    },
    /// The registry itself.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Fetch the remote's registry, merge it with the local one, push the result.
    Sync {
        #[arg(long)]
        remote: Option<String>,
    },
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Promote {
            model,
            rev,
            to,
            message,
            force,
            remote,
            local,
        } => promote(&model, &rev, &to, message, force, remote, local),
        Command::Rollback {
            model,
            stage,
            message,
            remote,
            local,
        } => rollback(&model, &stage, message, remote, local),
        Command::Stages {
            model,
            json,
            offline,
        } => stages(model.as_deref(), json, offline),
        Command::History {
            model,
            stage,
            at,
            json,
            offline,
        } => history(&model, stage.as_deref(), at.as_deref(), json, offline),
        Command::Export {
            spec,
            output,
            remote,
        } => export(&spec, &output, remote),
        Command::Registry {
            command: RegistryCommand::Sync { remote },
        } => {
            let ctx = Ctx::open()?;
            let remote = pick_remote(&ctx, remote, false)?
                .ok_or_else(|| usage("no remote to sync the registry with"))?;
            fetch_and_merge(&ctx, &remote)?;
            push(&ctx, &remote)?;
            let n = view(&ctx)?.len();
            println!("git-model: registry in sync with {remote} ({n} event(s))");
            Ok(())
        }
    }
}

fn promote(
    model: &str,
    rev: &str,
    stage: &str,
    reason: Option<String>,
    force: bool,
    remote: Option<String>,
    local: bool,
) -> Result<()> {
    let ctx = Ctx::open()?;
    gitmodel_repo::registry::promote(
        &ctx,
        model,
        rev,
        stage,
        reason,
        force,
        remote,
        local,
        |done| {
            let ev = &done.event;
            println!(
                "promoted {model} {} to {stage}{}{}",
                ev.version.short(),
                match &ev.previous {
                    Some(p) => format!(" (was {})", p.short()),
                    None => String::new(),
                },
                if ev.forced { " [forced]" } else { "" }
            );
            for g in &ev.gates {
                println!(
                    "  {} {}: {}",
                    if g.passed { "pass" } else { "FAIL" },
                    g.rule,
                    g.detail
                );
            }
        },
    )?;
    Ok(())
}

fn rollback(
    model: &str,
    stage: &str,
    reason: Option<String>,
    remote: Option<String>,
    local: bool,
) -> Result<()> {
    let ctx = Ctx::open()?;
    gitmodel_repo::registry::rollback(&ctx, model, stage, reason, remote, local, |ev| {
        println!(
            "rolled back {model} in {stage} to {} (was {})",
            ev.version.short(),
            ev.previous.as_ref().map(Version::short).unwrap_or_default()
        );
    })?;
    Ok(())
}

fn warn_refresh(ctx: &Ctx, offline: bool) {
    if let Some(e) = refresh(ctx, offline) {
        eprintln!("git-model: warning: {e:#}; showing the registry as known locally");
    }
}

fn export(spec: &str, output: &Path, remote: Option<String>) -> Result<()> {
    let ctx = Ctx::open()?;
    let done = gitmodel_repo::registry::export(&ctx, spec, output, remote, |e| {
        eprintln!("git-model: warning: {e:#}; using the registry as known locally");
    })?;
    println!(
        "exported {}@{} to {}: commit {}, sha256:{}, {} bytes",
        done.model,
        done.which,
        output.display(),
        short(&done.version.commit),
        registry::prefix(&done.version.oid, 12),
        done.version.size,
    );
    Ok(())
}

fn stage_rows(states: &BTreeMap<String, registry::StageState>, model: &str) -> Vec<Vec<String>> {
    states
        .values()
        .map(|s| {
            vec![
                model.to_string(),
                s.stage.clone(),
                short(&s.current.commit).to_string(),
                format!("sha256:{}", registry::prefix(&s.current.oid, 12)),
                time::format_utc(s.since),
                s.by.clone(),
                match s.action {
                    Action::Promote => "promote".into(),
                    Action::Rollback => "rollback".into(),
                },
            ]
        })
        .collect()
}

const STAGE_HEADER: [&str; 7] = ["model", "stage", "commit", "version", "since", "by", "how"];

fn stages(model: Option<&str>, json: bool, offline: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    warn_refresh(&ctx, offline);
    let events = view(&ctx)?;
    let models = match model {
        Some(m) => vec![m.to_string()],
        None => registry::models(&events),
    };
    let mut rows = Vec::new();
    let mut out = serde_json::Map::new();
    for m in &models {
        let states = registry::replay(&events, m, None);
        rows.extend(stage_rows(&states, m));
        let js: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    serde_json::json!({
                        "version": s.current, "since": s.since, "by": s.by,
                        "rollback_to": s.rollback_target(),
                    }),
                )
            })
            .collect();
        out.insert(m.clone(), serde_json::Value::Object(js));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if rows.is_empty() {
        println!("no model has been promoted yet (git model promote <model> <rev> --to <stage>)");
    } else {
        let h: Vec<String> = STAGE_HEADER.iter().map(|s| s.to_string()).collect();
        print!("{}", metrics::markdown(&h, &rows));
    }
    Ok(())
}

fn history(
    model: &str,
    stage: Option<&str>,
    at: Option<&str>,
    json: bool,
    offline: bool,
) -> Result<()> {
    let ctx = Ctx::open()?;
    warn_refresh(&ctx, offline);
    let events = view(&ctx)?;
    if let Some(at) = at {
        let t = time::parse(at).map_err(|e| usage(e.to_string()))?;
        let mut states = registry::replay(&events, model, Some(t));
        if let Some(s) = stage {
            states.retain(|k, _| k == s);
        }
        if json {
            let js: BTreeMap<&String, &Version> =
                states.iter().map(|(k, s)| (k, &s.current)).collect();
            println!("{}", serde_json::to_string_pretty(&js)?);
        } else if states.is_empty() {
            println!(
                "{model}: no version was in {} at {}",
                stage.unwrap_or("any stage"),
                time::format_utc(t)
            );
        } else {
            println!("{model} at {}:", time::format_utc(t));
            let h: Vec<String> = STAGE_HEADER.iter().map(|s| s.to_string()).collect();
            print!("{}", metrics::markdown(&h, &stage_rows(&states, model)));
        }
        return Ok(());
    }
    let list: Vec<&Event> = events
        .iter()
        .filter(|e| e.model == model && stage.is_none_or(|s| e.stage == s))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("{model}: no promotions recorded");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                time::format_utc(e.time),
                e.stage.clone(),
                match e.action {
                    Action::Promote => "promote".into(),
                    Action::Rollback => "rollback".into(),
                },
                e.version.short(),
                e.previous.as_ref().map(Version::short).unwrap_or_default(),
                e.who.clone(),
                if e.forced {
                    "yes".into()
                } else {
                    String::new()
                },
                e.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let h: Vec<String> = [
        "time", "stage", "action", "version", "previous", "who", "forced", "reason",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    print!("{}", metrics::markdown(&h, &rows));
    Ok(())
}
