//! `git-model`: the git extension (`git model …`). Thin: parse arguments, set up logging,
//! hand over to the command modules, print errors once and map them to exit codes.
#![forbid(unsafe_code)]

mod cmd;
mod lfs;
mod maint;
mod ml;
mod progress;
mod registry;
mod report;
mod units;

use std::io;

use clap::{Parser, Subcommand};
use gitmodel_repo::{filter, Repo};

#[derive(Parser)]
#[command(
    name = "git-model",
    version,
    about = "Large files in ordinary git, stored once as deduplicated chunks",
    long_about = "Version control for ML model weights and datasets on ordinary git.\n\
                  Run as `git model <command>`."
)]
struct Cli {
    /// No progress or summary lines on stderr (also GIT_MODEL_QUIET=1).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print the result as one JSON object on stdout (push, fetch, pull, fsck, prune,
    /// status, ls-files, env, migrate; shapes in docs/json.md) instead of the human text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Configure the filter (in ~/.gitconfig) and, inside a repository, its hooks.
    Install {
        /// Write the filter config to this repository's .git/config instead.
        #[arg(long)]
        local: bool,
        /// Only the filter config; no hooks even inside a repository.
        #[arg(long)]
        skip_repo: bool,
        /// In a Git LFS repository: become the driver of `filter=lfs` (same pointers, no
        /// history rewrite) and replace git-lfs's pre-push hook.
        #[arg(long, conflicts_with_all = ["local", "skip_repo"])]
        lfs: bool,
    },
    /// Remove the filter config and this repository's hooks.
    Uninstall {
        #[arg(long)]
        local: bool,
    },
    /// Route files matching these patterns through git-model (.gitattributes); without
    /// patterns, list the tracked ones.
    Track { patterns: Vec<String> },
    /// Stop routing these patterns through git-model.
    Untrack {
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Upload the content of pointers in commits the remote lacks.
    Push {
        /// Remote whose pushed refs are meant (the content goes to model.url).
        remote: Option<String>,
        /// Refs to push (default: HEAD).
        refs: Vec<String>,
        /// Every local branch and tag.
        #[arg(long)]
        all: bool,
    },
    /// Download content of the pointers in these refs (default: HEAD) into the local store.
    Fetch {
        refs: Vec<String>,
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Fetch, then replace pointer files in the working tree with their content.
    Pull {
        #[command(flatten)]
        paths: PathArgs,
    },
    /// Check that the content of every pointer in these refs (default HEAD) is here and
    /// intact, and with --remote that the server has it.
    Fsck {
        refs: Vec<String>,
        /// Every branch and tag.
        #[arg(long)]
        all: bool,
        /// Also ask the server whether it has every file, and to check its copies.
        #[arg(long)]
        remote: bool,
    },
    /// Remove local chunks not needed by the checkout or refs newer than --age days,
    /// never any the server does not have.
    Prune {
        /// Say what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep files of refs committed within this many days (default model.pruneage, 7).
        #[arg(long)]
        age: Option<u64>,
    },
    /// Tracked files in the index: oid, whether the content is here, path.
    LsFiles {
        /// Print full oids and sizes.
        #[arg(long, short)]
        long: bool,
    },
    /// State of tracked files and of the local store.
    Status,
    /// Resolved configuration and where each value came from.
    Env,
    /// Move this repository's Git LFS objects from its LFS server into git-model storage
    /// (all branches and tags, or REFS); resumable.
    Migrate {
        refs: Vec<String>,
        #[command(flatten)]
        paths: PathArgs,
    },
    /// git-lfs custom transfer agent (line-delimited JSON on stdin/stdout).
    #[command(hide = true)]
    LfsAgent,
    /// git's long-running filter process (configured by `install`).
    #[command(hide = true)]
    FilterProcess,
    /// Single-shot clean filter: content on stdin, pointer on stdout.
    #[command(hide = true)]
    Clean {
        #[arg(last = true)]
        path: Option<String>,
    },
    /// Single-shot smudge filter: pointer on stdin, content on stdout.
    #[command(hide = true)]
    Smudge {
        #[arg(last = true)]
        path: Option<String>,
    },
    /// The pre-push hook's entry point.
    #[command(hide = true)]
    PrePush { remote: String, url: Option<String> },
    #[command(flatten)]
    Ml(ml::Command),
    #[command(flatten)]
    Registry(registry::Command),
}

/// Which paths to download (default: model.fetchinclude / model.fetchexclude).
#[derive(clap::Args)]
struct PathArgs {
    /// Only paths matching these globs (comma-separated or repeated).
    #[arg(long, short = 'I', value_delimiter = ',')]
    include: Vec<String>,
    /// Not paths matching these globs.
    #[arg(long, short = 'X', value_delimiter = ',')]
    exclude: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    progress::set_quiet(cli.quiet);
    report::set_json(cli.json);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: git shows a filter's stderr as it is, and CI
        // logs keep it.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log_directives())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = if cli.json && !reports_json(&cli.command) {
        Err(gitmodel_repo::usage(
            "--json is not supported by this command (it is by push, fetch, pull, fsck, \
             prune, status, ls-files, env, migrate and the ML and registry commands)",
        ))
    } else {
        run(cli.command)
    };
    if let Err(err) = result {
        eprintln!("git-model: {err:#}");
        // How it was called (a usage error, or naming something that does not exist): 2.
        let usage = err.downcast_ref::<gitmodel_repo::UsageError>().is_some()
            || err.downcast_ref::<gitmodel_repo::NotFound>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}

/// Whether `command` prints its result as JSON with the global `--json`. The ML and
/// registry commands declare their own `--json`, which clap sets together with this one.
fn reports_json(command: &Command) -> bool {
    matches!(
        command,
        Command::Ml(_)
            | Command::Registry(_)
            | Command::Push { .. }
            | Command::Fetch { .. }
            | Command::Pull { .. }
            | Command::Fsck { .. }
            | Command::Prune { .. }
            | Command::LsFiles { .. }
            | Command::Status
            | Command::Env
            | Command::Migrate { .. }
    )
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Install { lfs: true, .. } => lfs::install_lfs(),
        Command::Install {
            local, skip_repo, ..
        } => cmd::install(local, skip_repo),
        Command::Migrate { refs, paths } => lfs::migrate(&refs, &paths.include, &paths.exclude),
        Command::LfsAgent => lfs::agent(),
        Command::Uninstall { local } => cmd::uninstall(local),
        Command::Track { patterns } => cmd::track(&patterns),
        Command::Untrack { patterns } => cmd::untrack(&patterns),
        Command::Push { remote, refs, all } => cmd::push(remote, &refs, all),
        Command::Fetch { refs, paths } => cmd::fetch(&refs, &paths.include, &paths.exclude),
        Command::Pull { paths } => cmd::pull(&paths.include, &paths.exclude),
        Command::Fsck { refs, all, remote } => maint::fsck(&refs, all, remote),
        Command::Prune { dry_run, age } => maint::prune(dry_run, age),
        Command::LsFiles { long } => cmd::ls_files(long),
        Command::Status => cmd::status(),
        Command::Env => cmd::env(),
        Command::FilterProcess => {
            filter::process(Repo::open()?, io::stdin(), io::stdout(), notices())
        }
        Command::Clean { path } => filter::clean_once(
            Repo::open()?,
            path.as_deref().unwrap_or(""),
            io::stdin(),
            io::stdout(),
            notices(),
        ),
        Command::Smudge { path } => filter::smudge_once(
            Repo::open()?,
            path.as_deref().unwrap_or(""),
            io::stdin(),
            io::stdout(),
            notices(),
        ),
        Command::PrePush { remote, url } => cmd::pre_push(&remote, url.as_deref()),
        Command::Ml(c) => ml::run(c),
        Command::Registry(c) => registry::run(c),
    }
}

/// The filter's warnings go to stderr, which git shows as it is.
fn notices() -> filter::Notices {
    Box::new(|line| eprintln!("{line}"))
}

/// `GIT_MODEL_LOG` (default `warn`). The application layer logs from the library crate
/// `gitmodel_repo`: a directive for `git_model` covers it too, as it did when that code
/// lived in the binary.
fn log_directives() -> String {
    let given = std::env::var("GIT_MODEL_LOG").unwrap_or_else(|_| "warn".into());
    let mut out: Vec<String> = given.split(',').map(str::to_string).collect();
    for d in given.split(',') {
        if let Some(level) = d.trim().strip_prefix("git_model=") {
            out.push(format!("gitmodel_repo={level}"));
        }
    }
    out.join(",")
}
