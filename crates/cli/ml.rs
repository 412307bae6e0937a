//! The ML commands: `diff` (format-aware, also git's diff driver), `log`, `metrics`,
//! `params`, `compare` and `lineage`. The logic lives in `gitmodel-ml`; this module reads
//! what it needs from git, the working tree and the local store.
//!
//! Reading is lazy: [`Ctx::read_at`] serves byte ranges of a stored file from its chunks,
//! fetching only the missing chunks it covers from the server ([`Ctx::prefetch`] batches
//! them into exact range requests), so a diff of two model versions reads their headers
//! and the tensors whose chunks differ, never the whole files.

mod diff;
mod history;
mod merge;
mod plot;
mod tables;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

pub use gitmodel_repo::content::{repo_path, short, Content, Ctx, Side};

#[derive(Subcommand)]
pub enum Command {
    /// What changed between two versions: tensors, table rows, or shared chunks.
    ///
    /// Per tensor for safetensors/GGUF, per row for CSV/TSV/JSON Lines, shared chunks for
    /// anything else. No revs: HEAD against the working tree; one rev: it against the
    /// working tree.
    Diff {
        /// Up to two revisions.
        #[arg(num_args = 0..=2)]
        revs: Vec<String>,
        /// Limit to these paths.
        #[arg(last = true)]
        paths: Vec<String>,
        /// Match table rows on this column (default: the path's `merge-key` attribute,
        /// else the first column when its values are unique).
        #[arg(long)]
        key: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Example rows shown per kind of change.
        #[arg(long, default_value_t = 5)]
        examples: usize,
        /// Also draw the relative L2 change of every tensor that differs, per model, as
        /// an SVG chart.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// git's external diff driver (`diff.model.command`, set by `install`).
    #[command(hide = true)]
    DiffDriver { args: Vec<String> },
    /// git's textconv for `diff=model` files (`git log -p`): one line per tensor with a
    /// content hash, tables as they are, other files as size and hash.
    #[command(hide = true)]
    Textconv { file: String },
    /// Every version of a tracked file: commit, date, author, size, new bytes, metrics.
    Log {
        path: String,
        /// Start from this revision instead of HEAD.
        #[arg(long, default_value = "HEAD")]
        rev: String,
        #[arg(long)]
        json: bool,
    },
    /// Metrics files named in models.toml.
    Metrics {
        #[command(subcommand)]
        command: tables::KvCommand,
    },
    /// Params files named in models.toml.
    Params {
        #[command(subcommand)]
        command: tables::KvCommand,
    },
    /// One table of params and metrics across branches or commits.
    ///
    /// The first is the baseline; patterns like 'exp/*' match branches.
    Compare {
        #[arg(required = true)]
        refs: Vec<String>,
        /// Order the rows after the baseline by this metric (descending).
        #[arg(long)]
        sort: Option<String>,
        /// Ascending instead.
        #[arg(long)]
        asc: bool,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
        /// Also draw a metric across the compared versions as an SVG bar chart.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// The metric --plot draws (default: the --sort metric, else the first one).
        #[arg(long, requires = "plot")]
        metric: Option<String>,
    },
    /// git's merge driver for `merge=model` files (`merge.model.driver`, set by
    /// `install`): `%O %A %B %P %X %Y`.
    #[command(hide = true)]
    MergeDriver {
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Settle a merge conflict on a tracked file: stage that version and write it to the
    /// working tree (downloading it when needed); `git commit` then finishes the merge.
    #[command(group(clap::ArgGroup::new("version").required(true).args(["ours", "theirs", "rev"])))]
    Resolve {
        /// The file in conflict (relative to the current directory).
        path: String,
        /// The version of the branch merged into (HEAD).
        #[arg(long)]
        ours: bool,
        /// The version of the branch being merged.
        #[arg(long)]
        theirs: bool,
        /// The version at this revision.
        #[arg(long, value_name = "R")]
        rev: Option<String>,
    },
    /// What a model version was made from: dataset versions, params, code commit.
    Lineage {
        /// `<model>[@<rev>]`.
        #[arg(required_unless_present = "reverse")]
        model: Option<String>,
        /// `<dataset path>[@<rev>]`: which model versions were trained on that version.
        #[arg(long, conflicts_with = "model")]
        reverse: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Diff {
            revs,
            paths,
            key,
            json,
            examples,
            plot,
        } => diff::diff(
            &revs,
            &paths,
            key.as_deref(),
            json,
            examples,
            plot.as_deref(),
        ),
        Command::DiffDriver { args } => diff::driver(&args),
        Command::Textconv { file } => diff::textconv(&file),
        Command::Log { path, rev, json } => history::log(&path, &rev, json),
        Command::Metrics { command } => tables::run(tables::Kind::Metrics, command),
        Command::Params { command } => tables::run(tables::Kind::Params, command),
        Command::Compare {
            refs,
            sort,
            asc,
            json,
            csv,
            plot,
            metric,
        } => tables::compare(
            &refs,
            sort.as_deref(),
            asc,
            json,
            csv,
            plot.as_deref().map(|p| (p, metric.as_deref())),
        ),
        Command::MergeDriver { args } => merge::driver(&args),
        Command::Resolve {
            path,
            ours,
            theirs: _,
            rev,
        } => merge::resolve(
            &path,
            match (rev, ours) {
                (Some(r), _) => merge::Pick::Rev(r),
                (None, true) => merge::Pick::Ours,
                (None, false) => merge::Pick::Theirs,
            },
        ),
        Command::Lineage {
            model,
            reverse,
            json,
        } => match reverse {
            Some(r) => history::lineage_reverse(&r, json),
            None => history::lineage(model.as_deref().unwrap_or_default(), json),
        },
    }
}

/// Writes a chart (atomically: a half-written SVG never replaces a good one).
pub fn write_plot(file: &Path, svg: &str) -> Result<()> {
    gitmodel_store::fsutil::write_atomic(file, svg.as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    // The temp file behind the atomic write is private; a chart is for sharing.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", file.display()))?;
    if !crate::progress::quiet() {
        eprintln!("git-model: wrote {}", file.display());
    }
    Ok(())
}
