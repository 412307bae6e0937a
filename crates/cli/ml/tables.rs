//! `git model metrics show|diff`, `git model params show|diff` and `git model compare`:
//! the metrics and params files named in `models.toml`, read at commits or from the
//! working tree, flattened and compared.

use anyhow::Result;
use clap::Subcommand;
use gitmodel_ml::metrics;

use super::{Ctx, Side};
use gitmodel_repo::usage;

#[derive(Subcommand)]
pub enum KvCommand {
    /// Values at a revision (default: the working tree).
    Show {
        rev: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Values that differ between two revisions (default: HEAD and the working tree).
    Diff {
        a: Option<String>,
        b: Option<String>,
        /// Every key, changed or not.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

pub use gitmodel_repo::content::{load, Kind};

fn side_of(ctx: &Ctx, rev: Option<&str>) -> Result<(Side, String)> {
    match rev {
        None => {
            ctx.repo.workdir()?;
            Ok((Side::Worktree, "workspace".into()))
        }
        Some(r) => Ok((Side::Rev(ctx.commit(r)?.id()), r.to_string())),
    }
}

pub fn run(kind: Kind, cmd: KvCommand) -> Result<()> {
    let ctx = Ctx::open()?;
    match cmd {
        KvCommand::Show { rev, json } => {
            let (side, label) = side_of(&ctx, rev.as_deref())?;
            let values = load(&ctx, side, kind)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&values)?);
            } else if values.is_empty() {
                println!("no {} at {label}", kind.name());
            } else {
                let rows: Vec<Vec<String>> = values
                    .iter()
                    .map(|(k, v)| vec![k.clone(), v.to_string()])
                    .collect();
                print!("{}", metrics::markdown(&["key".into(), label], &rows));
            }
        }
        KvCommand::Diff { a, b, all, json } => {
            let (sa, la) = side_of(&ctx, Some(a.as_deref().unwrap_or("HEAD")))?;
            let (sb, lb) = side_of(&ctx, b.as_deref())?;
            let (va, vb) = (load(&ctx, sa, kind)?, load(&ctx, sb, kind)?);
            let deltas = metrics::diff(&va, &vb, all);
            if json {
                println!("{}", serde_json::to_string_pretty(&deltas)?);
            } else if deltas.is_empty() {
                println!("no {} changed between {la} and {lb}", kind.name());
            } else {
                print!("{}", metrics::render_diff(&deltas, &la, &lb));
            }
        }
    }
    Ok(())
}

/// `git model compare <baseline> <ref or pattern>…`.
pub fn compare(
    refs: &[String],
    sort: Option<&str>,
    ascending: bool,
    json: bool,
    csv: bool,
    plot: Option<(&std::path::Path, Option<&str>)>,
) -> Result<()> {
    let ctx = Ctx::open()?;
    let table = gitmodel_repo::experiments::compare(&ctx, refs, sort, ascending)?;
    if let Some((file, metric)) = plot {
        let first = table
            .columns
            .iter()
            .find(|c| c.kind == "metric")
            .map(|c| c.name.as_str());
        let Some(metric) = metric.or(sort).or(first) else {
            return Err(usage("--plot: the compared versions have no metrics"));
        };
        let values: Vec<(String, Option<f64>)> = table
            .rows
            .iter()
            .map(|r| {
                let v = r.metrics.get(metric).or_else(|| r.params.get(metric));
                (r.name.clone(), v.and_then(|v| v.as_f64()))
            })
            .collect();
        let svg = super::plot::compare_chart(metric, &values)
            .map_err(|e| usage(format!("--plot: {e:#}")))?;
        super::write_plot(file, &svg)?;
    }
    if json {
        println!("{}", table.to_json());
    } else if csv {
        print!("{}", table.to_csv());
    } else {
        print!("{}", table.to_markdown());
    }
    Ok(())
}
