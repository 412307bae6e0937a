//! The command line of `git-model-server`: its clap definitions (flags, subcommands and
//! their help text) and their conversion into the library's plain options
//! ([`gitmodel_server::SecurityOptions`], [`gitmodel_server::security::TokenCommand`]).
//! The library itself does not know clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use gitmodel_server::security::{parse_size, TokenCommand};
use gitmodel_server::{SecurityOptions, DEFAULT_LISTEN};

/// Serves git-model repositories over HTTP: chunk packs (deduplicated across
/// repositories) and per-repository file recipes, all verified on upload.
#[derive(Debug, clap::Parser)]
#[command(name = "git-model-server", version)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where packs and recipes are stored [default: $GIT_MODEL_SERVER_DATA, else
    /// $XDG_DATA_HOME/git-model-server, else ~/.local/share/git-model-server]. Also
    /// holds tokens.json.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Keep packs, recipes and locks in an S3-compatible bucket instead of --data-dir:
    /// `s3://BUCKET[/PREFIX]`. Endpoint, region and credentials come from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Several servers may share
    /// one bucket (docs/deploy.md).
    #[arg(long, value_name = "URL", env = "GIT_MODEL_SERVER_STORE")]
    pub store: Option<String>,
    /// Seconds between re-listings of the packs other servers stored in the same store;
    /// 0 never re-lists [default: 30 with --store, 0 with a data directory].
    #[arg(long, value_name = "SECS")]
    pub index_refresh: Option<u64>,
    /// With --store: answer pack downloads with a redirect to a presigned URL into the
    /// bucket (valid 15 minutes), so pack bytes bypass the server. The client needs
    /// network access to the store's endpoint.
    #[arg(long, requires = "store")]
    pub presign_downloads: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Security and limit flags of `git-model-server`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// TOML config file: tokens (hashed), TLS, limits. Flags override it.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address (trusted networks only: every
    /// client can then read and write every repository).
    #[arg(long)]
    pub allow_anonymous: bool,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Largest Git LFS object accepted, in bytes or with K/M/G/T [default: 100G].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_lfs_object_size: Option<u64>,
    /// Seconds a client may take to send a request's headers (and a TLS handshake)
    /// [default: 30].
    #[arg(long, value_name = "SECS")]
    pub header_read_timeout: Option<u64>,
}

impl From<&SecurityArgs> for SecurityOptions {
    fn from(args: &SecurityArgs) -> SecurityOptions {
        SecurityOptions {
            config: args.config.clone(),
            allow_anonymous: args.allow_anonymous,
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            max_lfs_object_size: args.max_lfs_object_size,
            header_read_timeout: args.header_read_timeout,
        }
    }
}

/// Subcommands of `git-model-server` (without one, it serves).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage access tokens (kept as SHA-256 hashes in <data-dir>/tokens.json).
    #[command(subcommand)]
    Token(TokenArgs),
    /// Remove packs no registered file uses: a pack is deleted when it has stayed
    /// unreferenced for the grace period across two runs (so uploads in progress are
    /// safe). Safe while servers serve the same store (see docs/reliability.md).
    Gc {
        /// Say what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Hours a pack must stay unreferenced, between two runs, before it goes.
        #[arg(long, default_value_t = 24)]
        grace_hours: u64,
        /// The grace period as a duration (`90s`, `30m`, `24h`, `2d`); overrides
        /// --grace-hours.
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// How long a registration that needs a pack this run is deleting waits before it
        /// looks for it; each delete is issued within half of it after the last check.
        #[arg(long, value_name = "DURATION", default_value = "5s")]
        rescue_wait: String,
        /// Print the report as one JSON object on stdout (shape in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Check everything stored: read every pack (id, footer, every chunk against its id)
    /// and every recipe against the packs it names. Damaged packs are reported with the
    /// files they affect and recorded, so running servers stop vouching for them until a
    /// client uploads them again (`git model push` from any clone holding the files).
    /// Exits 1 when damage is found. Safe while servers serve.
    #[command(alias = "fsck")]
    Scrub {
        /// Print the report as one JSON object on stdout (shape in docs/json.md).
        #[arg(long)]
        json: bool,
        /// Packs checked at once [default: the number of CPUs].
        #[arg(long)]
        jobs: Option<usize>,
        /// Report only: write and clear no damage records.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a repository: its file recipes, pack references and locks. Its packs go at
    /// the next `gc` runs unless other repositories use them.
    DeleteRepo {
        /// `<namespace>/<repo>`
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenArgs {
    /// Create a token and print it on stdout. It is shown only this once.
    Create {
        /// What it may do: read|write|admin on `*`, `<namespace>/*` or
        /// `<namespace>/<repo>` (e.g. write:acme/*). Repeatable.
        #[arg(long = "scope", value_name = "LEVEL:PATTERN", required = true)]
        scopes: Vec<String>,
        /// Who uses it (shown as the owner of Git LFS locks) [default: its id].
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 12h, 30d, 2w [default: never expires].
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens: id, name, scopes, expiry. Never the secrets.
    List,
    /// Revoke a token by id (a running server notices within a second).
    Revoke { id: String },
}

impl From<&TokenArgs> for TokenCommand {
    fn from(args: &TokenArgs) -> TokenCommand {
        match args {
            TokenArgs::Create {
                scopes,
                name,
                expires,
            } => TokenCommand::Create {
                scopes: scopes.clone(),
                name: name.clone(),
                expires: expires.clone(),
            },
            TokenArgs::List => TokenCommand::List,
            TokenArgs::Revoke { id } => TokenCommand::Revoke { id: id.clone() },
        }
    }
}
