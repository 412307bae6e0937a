//! `git-model-server`: parses flags, sets up logging to stderr, opens the data directory,
//! binds, announces the address on stdout, and serves until SIGTERM or Ctrl-C. All the
//! work is in the `gitmodel-server` library.
//!
//! Exit codes: 0 after a clean shutdown, 2 for unusable configuration (bad flags, an
//! unusable data directory, an address that cannot be bound), 1 for anything else.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gitmodel_server::{AppState, ServerConfig, DATA_DIR_ENV, DEFAULT_LISTEN};

/// Serves git-model repositories over HTTP: chunk packs (deduplicated across
/// repositories) and per-repository file recipes, all verified on upload.
#[derive(Debug, Parser)]
#[command(name = "git-model-server", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Where packs and recipes are stored [default: $GIT_MODEL_SERVER_DATA, else
    /// $XDG_DATA_HOME/git-model-server, else ~/.local/share/git-model-server].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

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
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => {
            gitmodel_server::default_data_dir(|name| std::env::var_os(name)).ok_or_else(|| {
                config_error(anyhow::anyhow!(
                    "no data directory: pass --data-dir or set {DATA_DIR_ENV} (HOME is unset)"
                ))
            })?
        }
    };
    let config = ServerConfig::new(args.listen, &data_dir);
    let state = AppState::open_local(config)
        .await
        .with_context(|| format!("data directory {} is unusable", data_dir.display()))
        .map_err(config_error)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(config_error)?;
    let addr = listener
        .local_addr()
        .context("reading the bound address")
        .map_err(config_error)?;
    tracing::info!(%addr, data_dir = %data_dir.display(), "serving");
    // The one line on stdout: tests and scripts read it to learn the port.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "git-model-server listening on http://{addr}")
        .and_then(|()| stdout.flush())
        .context("writing the address to stdout")
        .map_err(|error| Failure {
            config: false,
            error,
        })?;
    drop(stdout);
    gitmodel_server::serve(listener, state, gitmodel_server::shutdown_signal()).await;
    Ok(())
}
