//! `git-model-server`: parses flags, sets up logging to stderr, opens the data directory,
//! binds, announces the address on stdout, and serves until SIGTERM or Ctrl-C. All the
//! work is in the `gitmodel-server` library.
//!
//! `git-model-server token create|list|revoke` manages access tokens instead of serving;
//! `gc`, `scrub` (alias `fsck`) and `delete-repo` maintain the store.
//!
//! Exit codes: 0 after a clean shutdown, 2 for unusable configuration (bad flags, an
//! unusable data directory, an address that cannot be bound, a non-loopback address
//! without tokens or `--allow-anonymous`), 1 for anything else (including damage found
//! by `scrub`).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gitmodel_server::{AppState, ServerConfig, DATA_DIR_ENV};

mod args;
use args::{Args, Command};

/// A failure, and whether it is a configuration problem (exit 2) or not (exit 1).
struct Failure {
    config: bool,
    error: anyhow::Error,
}

fn config_error(error: anyhow::Error) -> Failure {
    Failure {
        config: true,
        error,
    }
}

fn main() -> ExitCode {
    // clap prints its own message and exits with 2 on bad flags.
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("git-model-server: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("git-model-server: error: {:#}", failure.error);
            ExitCode::from(if failure.config { 2 } else { 1 })
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    // Security first: a refused configuration opens no storage and binds nothing.
    let tokens_dir = args
        .data_dir
        .clone()
        .or_else(|| gitmodel_server::default_data_dir(|name| std::env::var_os(name)));
    if let Some(Command::Gc {
        dry_run,
        grace_hours,
        grace,
        rescue_wait,
        json,
    }) = &args.command
    {
        let duration = |flag: &str, text: &str| {
            gitmodel_server::tokens::parse_duration(text)
                .with_context(|| format!("bad {flag}"))
                .map_err(config_error)
        };
        let mut options = gitmodel_server::gc::GcOptions::new(match grace {
            Some(text) => duration("--grace", text)?,
            None => std::time::Duration::from_secs(grace_hours.saturating_mul(3600)),
        });
        options.rescue_wait = duration("--rescue-wait", rescue_wait)?;
        options.dry_run = *dry_run;
        return gc(&args, tokens_dir, &options, *json).await;
    }
    if let Some(Command::Scrub {
        json,
        jobs,
        dry_run,
    }) = &args.command
    {
        return scrub(&args, tokens_dir, *json, *jobs, *dry_run).await;
    }
    if let Some(Command::DeleteRepo { name }) = &args.command {
        let (ns, repo) = name.split_once('/').ok_or_else(|| {
            config_error(anyhow::anyhow!("expected <namespace>/<repo>, got {name:?}"))
        })?;
        let repo = gitmodel_proto::RepoName::new(ns, repo).map_err(|e| config_error(e.into()))?;
        let storage = open_storage(&args, tokens_dir)?;
        let n = gitmodel_server::gc::delete_repo(&*storage, &repo)
            .await
            .context("deleting the repository")
            .map_err(|error| Failure {
                config: false,
                error,
            })?;
        println!("deleted {repo}: {n} object(s); its packs go at the next gc runs unless shared");
        return Ok(());
    }
    if let Some(Command::Token(command)) = &args.command {
        let dir = tokens_dir.ok_or_else(|| {
            config_error(anyhow::anyhow!(
                "no data directory for tokens.json: pass --data-dir or set {DATA_DIR_ENV}"
            ))
        })?;
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        return gitmodel_server::security::run_token_command(
            &command.into(),
            &(&args.security).into(),
            &dir,
            &mut out,
            &mut err,
        )
        .map_err(|e| config_error(e.into()));
    }
    let options = gitmodel_server::SecurityOptions::from(&args.security);
    let security = gitmodel_server::Security::prepare(&options, tokens_dir.as_deref(), args.listen)
        .map_err(|e| config_error(e.into()))?;
    let refresh = args
        .index_refresh
        .map(std::time::Duration::from_secs)
        .filter(|d| !d.is_zero());
    let (state, storage) = if let Some(store) = &args.store {
        let location = gitmodel_server::S3Location::parse(store)
            .context("bad --store")
            .map_err(config_error)?;
        let mut config = ServerConfig::new(args.listen, PathBuf::new());
        security.apply(&mut config);
        config.index_refresh = match args.index_refresh {
            Some(_) => refresh,
            None => Some(gitmodel_server::DEFAULT_SHARED_INDEX_REFRESH),
        };
        config.presign_downloads = args
            .presign_downloads
            .then_some(gitmodel_server::PRESIGNED_URL_EXPIRY);
        let authorizer = std::sync::Arc::clone(&security.authorizer);
        let state = AppState::open_s3(config, location, authorizer)
            .await
            .with_context(|| format!("store {store} is unusable"))
            .map_err(config_error)?;
        (state, store.clone())
    } else {
        let data_dir = match args.data_dir {
            Some(dir) => dir,
            None => gitmodel_server::default_data_dir(|name| std::env::var_os(name)).ok_or_else(
                || {
                    config_error(anyhow::anyhow!(
                        "no data directory: pass --data-dir or set {DATA_DIR_ENV} (HOME is unset)"
                    ))
                },
            )?,
        };
        let mut config = ServerConfig::new(args.listen, &data_dir);
        security.apply(&mut config);
        config.index_refresh = refresh;
        let state = AppState::open_local_with(config, std::sync::Arc::clone(&security.authorizer))
            .await
            .with_context(|| format!("data directory {} is unusable", data_dir.display()))
            .map_err(config_error)?;
        (state, data_dir.display().to_string())
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(config_error)?;
    let addr = listener
        .local_addr()
        .context("reading the bound address")
        .map_err(config_error)?;
    tracing::info!(%addr, storage, authentication = %security.summary, tls = security.tls.is_some(), "serving");
    // The one line on stdout: tests and scripts read it to learn the port.
    let mut stdout = std::io::stdout().lock();
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    writeln!(stdout, "git-model-server listening on {scheme}://{addr}")
        .and_then(|()| stdout.flush())
        .context("writing the address to stdout")
        .map_err(|error| Failure {
            config: false,
            error,
        })?;
    drop(stdout);
    let shutdown = gitmodel_server::shutdown_signal();
    match security.tls {
        Some(tls) => gitmodel_server::serve_tls(listener, state, tls, shutdown).await,
        None => gitmodel_server::serve(listener, state, shutdown).await,
    }
    Ok(())
}

/// `git-model-server gc`: one pass of garbage collection over the configured store.
async fn gc(
    args: &Args,
    data_dir: Option<PathBuf>,
    options: &gitmodel_server::gc::GcOptions,
    json: bool,
) -> Result<(), Failure> {
    let storage = open_storage(args, data_dir)?;
    let dry_run = options.dry_run;
    let grace_secs = options.grace.as_secs();
    let report = gitmodel_server::gc::collect(&*storage, options, std::time::SystemTime::now())
        .await
        .context("garbage collection")
        .map_err(|error| Failure {
            config: false,
            error,
        })?;
    if json {
        // One stable shape (docs/json.md); sizes in bytes.
        let out = serde_json::json!({
            "command": "gc",
            "dry_run": dry_run,
            "grace_hours": grace_secs / 3600,
            "grace_secs": grace_secs,
            "packs": report.packs,
            "live": report.live,
            "waiting": report.waiting,
            "deleted": report.deleted.len(),
            "deleted_packs": report.deleted.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "bytes_freed": report.bytes_freed,
            "recipes_unreadable": report.recipes_unreadable,
            "rescued": report.rescued,
            "temp_files_removed": report.temp_files_removed,
            "temp_bytes_freed": report.temp_bytes_freed,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} pack(s): {} in use, {} unreferenced and waiting out the grace period; {} {} ({} bytes){}",
        report.packs,
        report.live,
        report.waiting,
        if dry_run { "would delete" } else { "deleted" },
        report.deleted.len(),
        report.bytes_freed,
        if report.recipes_unreadable > 0 {
            format!("; {} unreadable recipe(s): nothing deleted", report.recipes_unreadable)
        } else {
            String::new()
        },
    );
    if report.rescued > 0 {
        println!(
            "{} condemned pack(s) kept: files registered meanwhile use them",
            report.rescued
        );
    }
    if report.temp_files_removed > 0 {
        println!(
            "removed {} temporary file(s) of killed writers ({} bytes)",
            report.temp_files_removed, report.temp_bytes_freed
        );
    }
    Ok(())
}

/// `git-model-server scrub`: checks every pack and recipe of the configured store.
async fn scrub(
    args: &Args,
    data_dir: Option<PathBuf>,
    json: bool,
    jobs: Option<usize>,
    dry_run: bool,
) -> Result<(), Failure> {
    let storage = open_storage(args, data_dir)?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let report = gitmodel_server::scrub::scrub(storage, jobs, !dry_run)
        .await
        .context("scrub")
        .map_err(|error| Failure {
            config: false,
            error,
        })?;
    let mib = report.pack_bytes as f64 / (1024.0 * 1024.0);
    let rate = if report.seconds > 0.0 {
        mib / report.seconds
    } else {
        0.0
    };
    if json {
        println!("{}", scrub_json(&report, dry_run, rate));
    } else {
        println!(
            "{} pack(s) ({mib:.1} MiB) and {} recipe(s) checked in {:.2} s ({rate:.0} MiB/s): {} damaged pack(s), {} bad recipe(s){}",
            report.packs,
            report.recipes,
            report.seconds,
            report.damaged.len(),
            report.bad_recipes.len(),
            if report.records_cleared > 0 {
                format!("; {} damage record(s) cleared", report.records_cleared)
            } else {
                String::new()
            },
        );
        for d in &report.damaged {
            println!("damaged pack {}: {}", d.pack, d.what);
            if d.files.is_empty() {
                println!("  used by no file (gc removes it)");
            }
            for f in &d.files {
                println!("  affects {} {}", f.repo, f.oid);
            }
        }
        for b in &report.bad_recipes {
            println!("bad recipe {} {}: {}", b.file.repo, b.file.oid, b.what);
        }
    }
    if !report.is_clean() {
        return Err(Failure {
            config: false,
            error: anyhow::anyhow!(
                "damage found: {} damaged pack(s), {} bad recipe(s), {} file(s) affected{}",
                report.damaged.len(),
                report.bad_recipes.len(),
                report.affected_files().len(),
                if dry_run {
                    ""
                } else {
                    "; servers no longer vouch for the damaged packs, and a `git model push` from a clone holding the files repairs them"
                }
            ),
        });
    }
    Ok(())
}

/// `scrub --json`: one object, `command` first (docs/json.md).
fn scrub_json(report: &gitmodel_server::scrub::ScrubReport, dry_run: bool, rate: f64) -> String {
    #[derive(serde::Serialize)]
    struct File {
        repo: String,
        oid: String,
    }
    #[derive(serde::Serialize)]
    struct Damaged {
        pack: String,
        problem: String,
        files: Vec<File>,
    }
    #[derive(serde::Serialize)]
    struct Bad {
        repo: String,
        oid: String,
        problem: String,
    }
    #[derive(serde::Serialize)]
    struct Scrub {
        command: &'static str,
        ok: bool,
        dry_run: bool,
        packs: usize,
        pack_bytes: u64,
        recipes: usize,
        seconds: f64,
        mib_per_second: f64,
        damaged_packs: Vec<Damaged>,
        bad_recipes: Vec<Bad>,
        affected_files: Vec<File>,
        records_written: usize,
        records_cleared: usize,
    }
    let file = |f: &gitmodel_server::scrub::FileName| File {
        repo: f.repo.clone(),
        oid: f.oid.to_hex(),
    };
    let out = Scrub {
        command: "scrub",
        ok: report.is_clean(),
        dry_run,
        packs: report.packs,
        pack_bytes: report.pack_bytes,
        recipes: report.recipes,
        seconds: report.seconds,
        mib_per_second: rate,
        damaged_packs: report
            .damaged
            .iter()
            .map(|d| Damaged {
                pack: d.pack.to_hex(),
                problem: d.what.clone(),
                files: d.files.iter().map(file).collect(),
            })
            .collect(),
        bad_recipes: report
            .bad_recipes
            .iter()
            .map(|b| Bad {
                repo: b.file.repo.clone(),
                oid: b.file.oid.to_hex(),
                problem: b.what.clone(),
            })
            .collect(),
        affected_files: report.affected_files().iter().map(file).collect(),
        records_written: report.records_written,
        records_cleared: report.records_cleared,
    };
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// The configured store, for the maintenance subcommands.
fn open_storage(
    args: &Args,
    data_dir: Option<PathBuf>,
) -> Result<std::sync::Arc<dyn gitmodel_server::storage::Storage>, Failure> {
    Ok(match &args.store {
        Some(store) => {
            let location = gitmodel_server::S3Location::parse(store)
                .context("bad --store")
                .map_err(config_error)?;
            std::sync::Arc::new(
                gitmodel_server::s3::S3Store::from_env(location, Default::default())
                    .context("opening the store")
                    .map_err(config_error)?,
            )
        }
        None => {
            let dir = data_dir.ok_or_else(|| {
                config_error(anyhow::anyhow!(
                    "no data directory: pass --data-dir or set {DATA_DIR_ENV}"
                ))
            })?;
            std::sync::Arc::new(
                gitmodel_server::storage::LocalDir::open(&dir)
                    .with_context(|| format!("data directory {}", dir.display()))
                    .map_err(config_error)?,
            )
        }
    })
}
