//! The server binary's security setup: the TOML config file ([`FileConfig`]), the
//! security options ([`SecurityOptions`], which the binary's flags convert into), the
//! `token create|list|revoke` subcommand ([`TokenCommand`]) and the startup policy
//! ([`Security::prepare`]): which authorizer, whether TLS, which limits, and whether
//! this address may be served at all.
//!
//! **Safe default.** Without any token, the server serves anonymously (everyone may read
//! and write everything) only on a loopback address. Binding any other address without
//! tokens is refused ([`SecurityError::AnonymousOnPublicAddress`], exit 2) unless
//! `--allow-anonymous` says the network is trusted. Once a token exists, requests
//! without one get `401`; and once the token file has held tokens, losing it does not
//! make the server anonymous again (it fails closed, see [`crate::tokens`]).
//!
//! Precedence: flag > config file > default. Relative paths in the config file are
//! relative to the file. The token model itself is in [`crate::tokens`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Authorizer;
use crate::state::ServerConfig;
use crate::tls::{TlsAcceptor, TlsError};
use crate::tokens::{
    format_time, generate, parse_duration, unix_now, TokenAuthorizer, TokenError, TokenFile,
    TokenRecord, TokenStore, TOKENS_FILE,
};

/// The server's TOML config file (`--config FILE`). Unknown keys are errors.
///
/// ```toml
/// allow_anonymous = false
/// tls_cert = "cert.pem"
/// tls_key = "key.pem"
/// tokens_file = "/srv/git-model/tokens.json"   # default: <data-dir>/tokens.json
/// max_lfs_object_size = "50G"
/// header_read_timeout_secs = 30
/// max_headers = 64
/// max_header_bytes = 65536
/// max_connections = 1024
/// max_connections_per_ip = 128
/// send_timeout_secs = 60
/// body_min_bytes_per_sec = 16384
/// body_rate_grace_secs = 30
/// refused_body_drain_secs = 5
/// max_repeat_factor = 16
///
/// [[tokens]]                                   # tokens managed by hand (hashes only)
/// id = "ci"
/// name = "CI"
/// scopes = ["write:acme/*"]
/// sha256 = "<sha256 of the token, hex>"
/// expires = 1798761600                         # optional, Unix seconds
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub allow_anonymous: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tokens_file: Option<PathBuf>,
    pub max_lfs_object_size: Option<Size>,
    pub header_read_timeout_secs: Option<u64>,
    pub max_headers: Option<usize>,
    pub max_header_bytes: Option<usize>,
    // Connection, body and verification bounds (`docs/security.md`, *Limits*).
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub send_timeout_secs: Option<u64>,
    pub body_min_bytes_per_sec: Option<u64>,
    pub body_rate_grace_secs: Option<u64>,
    pub refused_body_drain_secs: Option<u64>,
    pub max_repeat_factor: Option<u64>,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

/// Connection, body and verification bounds of the config file; unset keys keep the
/// defaults of [`ServerConfig`].
#[derive(Debug, Default, Clone)]
struct Bounds {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    send_timeout_secs: Option<u64>,
    body_min_bytes_per_sec: Option<u64>,
    body_rate_grace_secs: Option<u64>,
    refused_body_drain_secs: Option<u64>,
    max_repeat_factor: Option<u64>,
}

impl Bounds {
    fn of(file: &FileConfig) -> Bounds {
        Bounds {
            max_connections: file.max_connections,
            max_connections_per_ip: file.max_connections_per_ip,
            send_timeout_secs: file.send_timeout_secs,
            body_min_bytes_per_sec: file.body_min_bytes_per_sec,
            body_rate_grace_secs: file.body_rate_grace_secs,
            refused_body_drain_secs: file.refused_body_drain_secs,
            max_repeat_factor: file.max_repeat_factor,
        }
    }

    fn apply(&self, config: &mut ServerConfig) {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        if let Some(n) = self.max_connections {
            config.max_connections = n.max(1);
        }
        if let Some(n) = self.max_connections_per_ip {
            config.max_connections_per_ip = n.max(1);
        }
        if let Some(s) = self.send_timeout_secs {
            config.send_timeout = secs(s);
        }
        if let Some(n) = self.body_min_bytes_per_sec {
            config.body_min_rate = n;
        }
        if let Some(s) = self.body_rate_grace_secs {
            config.body_rate_grace = secs(s);
        }
        if let Some(s) = self.refused_body_drain_secs {
            config.refused_body_drain = secs(s);
        }
        if let Some(n) = self.max_repeat_factor {
            config.max_repeat_factor = n.max(1);
        }
    }
}

/// A size in the config file: a number of bytes, or text such as `"50G"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, SecurityError> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(text) => parse_size(text),
        }
    }
}

impl FileConfig {
    /// Reads and parses `path`, resolving its relative paths against its directory.
    pub fn read(path: &Path) -> Result<FileConfig, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: FileConfig =
            toml::from_str(&text).map_err(|source| SecurityError::ParseConfig {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.tls_cert,
            &mut config.tls_key,
            &mut config.tokens_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }
}

/// Why the server cannot start as configured (all exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read config file {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {} is invalid", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error(
        "refusing to serve {addr} without authentication: anyone who can reach it could read \
         and overwrite every repository. Create a token first (git-model-server token create \
         --scope write:<namespace>/*), or pass --allow-anonymous if the network is trusted"
    )]
    AnonymousOnPublicAddress { addr: SocketAddr },
    #[error("--tls-cert and --tls-key go together (only {given} is set)")]
    HalfTls { given: &'static str },
    #[error("invalid size {value:?}: expected a number of bytes, optionally with K, M, G or T")]
    BadSize { value: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("writing the answer")]
    Output(#[source] std::io::Error),
}

/// The security and limit options of `git-model-server` (its flags, defined in the
/// binary, convert into this). `None` and `false` leave the config file's value or the
/// default.
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    /// TOML config file: tokens (hashed), TLS, limits.
    pub config: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address.
    pub allow_anonymous: bool,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Largest Git LFS object accepted, in bytes.
    pub max_lfs_object_size: Option<u64>,
    /// Seconds a client may take to send a request's headers (and a TLS handshake).
    pub header_read_timeout: Option<u64>,
}

/// What `git-model-server token …` does ([`run_token_command`]).
#[derive(Debug, Clone)]
pub enum TokenCommand {
    /// Create a token with these scopes (`read|write|admin:PATTERN`), an optional name
    /// (default: its id) and lifetime (`12h`, `30d`, …; default: never expires), and
    /// print it.
    Create {
        scopes: Vec<String>,
        name: Option<String>,
        expires: Option<String>,
    },
    /// List tokens: id, name, scopes, expiry. Never the secrets.
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// Parses `1048576`, `512K`, `100M`, `50G`, `1T` (binary multiples).
pub fn parse_size(text: &str) -> Result<u64, SecurityError> {
    let bad = || SecurityError::BadSize {
        value: text.chars().take(40).collect(),
    };
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => t.split_at(at),
        None => (t, ""),
    };
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number
        .checked_mul(1u64 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(bad)
}

/// What [`Security::prepare`] decided.
pub struct Security {
    pub authorizer: Arc<dyn Authorizer>,
    /// `Some` when serving HTTPS.
    pub tls: Option<TlsAcceptor>,
    /// A line for the log: how requests are authenticated.
    pub summary: String,
    max_lfs_object_bytes: Option<u64>,
    header_read_timeout: Option<Duration>,
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
    bounds: Bounds,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

fn load_file_config(args: &SecurityOptions) -> Result<FileConfig, SecurityError> {
    match &args.config {
        Some(path) => FileConfig::read(path),
        None => Ok(FileConfig::default()),
    }
}

/// The token file: the config's `tokens_file`, else `tokens.json` in the data directory
/// (which holds it even when packs live in an object store).
fn tokens_path(file: &FileConfig, data_dir: Option<&Path>) -> Option<PathBuf> {
    file.tokens_file
        .clone()
        .or_else(|| data_dir.map(|d| d.join(TOKENS_FILE)))
}

impl Security {
    /// Reads the config file and the tokens, loads TLS, and checks that `listen` may be
    /// served with this authentication. `data_dir` holds the token file, if there is one.
    /// Apply the limits to the server's config with [`Security::apply`].
    pub fn prepare(
        args: &SecurityOptions,
        data_dir: Option<&Path>,
        listen: SocketAddr,
    ) -> Result<Security, SecurityError> {
        let file = load_file_config(args)?;
        let max_lfs_object_bytes = match (args.max_lfs_object_size, &file.max_lfs_object_size) {
            (Some(size), _) => Some(size),
            (None, Some(size)) => Some(size.bytes()?),
            (None, None) => None,
        };
        let header_read_timeout = args
            .header_read_timeout
            .or(file.header_read_timeout_secs)
            .map(|secs| Duration::from_secs(secs.max(1)));

        let store = Arc::new(TokenStore::open(
            tokens_path(&file, data_dir),
            file.tokens.clone(),
        )?);
        let allow_anonymous = args.allow_anonymous || file.allow_anonymous.unwrap_or(false);
        let loopback = listen.ip().is_loopback();
        let has_tokens = store.has_tokens();
        if !has_tokens && !loopback && !allow_anonymous {
            return Err(SecurityError::AnonymousOnPublicAddress { addr: listen });
        }
        let summary = if has_tokens {
            "tokens required".to_string()
        } else if loopback {
            "none: anonymous access, loopback only (create a token to require one)".to_string()
        } else {
            "none: anonymous access allowed by --allow-anonymous".to_string()
        };
        let authorizer = Arc::new(TokenAuthorizer::new(store, loopback || allow_anonymous));

        let bounds = Bounds::of(&file);
        let cert = args.tls_cert.clone().or(file.tls_cert);
        let key = args.tls_key.clone().or(file.tls_key);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(&cert, &key)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SecurityError::HalfTls {
                    given: "--tls-cert",
                })
            }
            (None, Some(_)) => return Err(SecurityError::HalfTls { given: "--tls-key" }),
        };
        Ok(Security {
            authorizer,
            tls,
            summary,
            max_lfs_object_bytes,
            header_read_timeout,
            max_headers: file.max_headers.map(|n| n.max(8)),
            // hyper's floor for its read buffer.
            max_header_bytes: file.max_header_bytes.map(|n| n.max(8192)),
            bounds,
        })
    }

    /// Sets the limits and the TLS flag in the server's config.
    pub fn apply(&self, config: &mut ServerConfig) {
        if let Some(n) = self.max_lfs_object_bytes {
            config.max_lfs_object_bytes = n;
        }
        if let Some(t) = self.header_read_timeout {
            config.header_read_timeout = t;
        }
        if let Some(n) = self.max_headers {
            config.max_headers = n;
        }
        if let Some(n) = self.max_header_bytes {
            config.max_header_bytes = n;
        }
        self.bounds.apply(config);
        config.tls = self.tls.is_some();
    }
}

/// Runs `git-model-server token …`, writing its answer to `out` and notes to `err`.
pub fn run_token_command(
    command: &TokenCommand,
    args: &SecurityOptions,
    data_dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), SecurityError> {
    let file_config = load_file_config(args)?;
    let path =
        tokens_path(&file_config, Some(data_dir)).unwrap_or_else(|| data_dir.join(TOKENS_FILE));
    let output = SecurityError::Output;
    // Creating a token is how a lost token file is replaced; the other commands say it
    // is lost.
    let mut file = match (command, TokenFile::read_checked(&path)) {
        (TokenCommand::Create { .. }, Err(TokenError::Lost { path, .. })) => {
            writeln!(
                err,
                "note: token file {} was missing although tokens existed; starting a new one \
                 (the old tokens stay invalid)",
                path.display()
            )
            .map_err(output)?;
            TokenFile::default()
        }
        (_, read) => read?,
    };
    match command {
        TokenCommand::Create {
            scopes,
            name,
            expires,
        } => {
            let ttl = expires.as_deref().map(parse_duration).transpose()?;
            let existing = || file_config.tokens.iter().chain(&file.tokens);
            // A name is the identity of a token's requests (the owner of its locks).
            if let Some(name) = name {
                if let Some(other) = existing().find(|t| t.name == *name) {
                    return Err(TokenError::NameTaken {
                        name: name.clone(),
                        id: other.id.clone(),
                    }
                    .into());
                }
            }
            // A default name is the id, so an id must not be anyone's name either.
            let taken = |id: &str| existing().any(|t| t.id == id || t.name == id);
            let new = generate(scopes, name.as_deref(), ttl, taken)?;
            file.tokens.push(new.record.clone());
            file.write(&path)?;
            let r = &new.record;
            writeln!(
                err,
                "created token {} ({}) with scopes {}{}; it is shown only once:",
                r.id,
                r.name,
                r.scopes.join(" "),
                r.expires
                    .map(|at| format!(", expiring {}", format_time(at)))
                    .unwrap_or_default()
            )
            .map_err(output)?;
            writeln!(out, "{}", new.secret).map_err(output)?;
        }
        TokenCommand::List => {
            let now = unix_now();
            let rows = file_config
                .tokens
                .iter()
                .map(|t| (t, "config"))
                .chain(file.tokens.iter().map(|t| (t, "file")));
            writeln!(out, "ID\tNAME\tSCOPES\tCREATED\tEXPIRES\tSOURCE").map_err(output)?;
            for (t, source) in rows {
                let expires = match t.expires {
                    None => "never".to_string(),
                    Some(at) if at <= now => format!("expired {}", format_time(at)),
                    Some(at) => format_time(at),
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{expires}\t{source}",
                    t.id,
                    t.name,
                    t.scopes.join(","),
                    format_time(t.created)
                )
                .map_err(output)?;
            }
        }
        TokenCommand::Revoke { id } => {
            if file_config.tokens.iter().any(|t| t.id == *id) {
                return Err(TokenError::InConfig { id: id.clone() }.into());
            }
            let before = file.tokens.len();
            file.tokens.retain(|t| t.id != *id);
            if file.tokens.len() == before {
                return Err(TokenError::UnknownId { id: id.clone() }.into());
            }
            file.write(&path)?;
            writeln!(err, "revoked token {id}").map_err(output)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("3m").unwrap(), 3 << 20);
        assert_eq!(parse_size("50G").unwrap(), 50 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        for bad in ["", "G", "0", "1.5G", "-1", "5X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    fn prepare(
        args: &SecurityOptions,
        dir: &Path,
        listen: &str,
    ) -> Result<(Security, ServerConfig), SecurityError> {
        let mut config = ServerConfig::new(listen.parse().unwrap(), dir);
        let security = Security::prepare(args, Some(dir), listen.parse().unwrap())?;
        security.apply(&mut config);
        Ok((security, config))
    }

    #[test]
    fn anonymous_only_on_loopback_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let none = SecurityOptions::default();
        prepare(&none, dir.path(), "127.0.0.1:0").unwrap();
        prepare(&none, dir.path(), "[::1]:0").unwrap();
        assert!(matches!(
            prepare(&none, dir.path(), "0.0.0.0:8080"),
            Err(SecurityError::AnonymousOnPublicAddress { .. })
        ));
        let allow = SecurityOptions {
            allow_anonymous: true,
            ..SecurityOptions::default()
        };
        prepare(&allow, dir.path(), "0.0.0.0:8080").unwrap();
        // With a token, any address may be served.
        let cmd = TokenCommand::Create {
            scopes: vec!["read:*".into()],
            name: None,
            expires: None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run_token_command(&cmd, &none, dir.path(), &mut out, &mut err).unwrap();
        let (security, _) = prepare(&none, dir.path(), "0.0.0.0:8080").unwrap();
        assert_eq!(security.summary, "tokens required");
    }

    #[test]
    fn token_commands() {
        let dir = tempfile::tempdir().unwrap();
        let args = SecurityOptions::default();
        let run = |cmd: TokenCommand| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            run_token_command(&cmd, &args, dir.path(), &mut out, &mut err).map(|()| {
                (
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(err).unwrap(),
                )
            })
        };
        let (secret, note) = run(TokenCommand::Create {
            scopes: vec!["write:acme/*".into(), "read:other/x".into()],
            name: Some("CI".into()),
            expires: Some("30d".into()),
        })
        .unwrap();
        let secret = secret.trim().to_string();
        assert!(secret.starts_with("gmt_"), "{secret}");
        assert!(
            note.contains("write:acme/*") && note.contains("expiring"),
            "{note}"
        );
        let (list, _) = run(TokenCommand::List).unwrap();
        assert!(
            list.contains("CI") && list.contains("write:acme/*,read:other/x"),
            "{list}"
        );
        assert!(!list.contains(&secret));
        let id = list
            .lines()
            .nth(1)
            .unwrap()
            .split('\t')
            .next()
            .unwrap()
            .to_string();
        assert!(matches!(
            run(TokenCommand::Create {
                scopes: vec!["write:acme".into()],
                name: None,
                expires: None
            }),
            Err(SecurityError::Token(TokenError::BadScope { .. }))
        ));
        run(TokenCommand::Revoke { id: id.clone() }).unwrap();
        assert!(matches!(
            run(TokenCommand::Revoke { id }),
            Err(SecurityError::Token(TokenError::UnknownId { .. }))
        ));
        let (list, _) = run(TokenCommand::List).unwrap();
        assert_eq!(list.lines().count(), 1, "{list}");
    }

    #[test]
    fn config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "max_lfs_object_size = \"1M\"\nheader_read_timeout_secs = 5\ntokens_file = \"t.json\"\n\
             [[tokens]]\nid = \"ci\"\nname = \"CI\"\nscopes = [\"read:*\"]\nsha256 = \"",
        )
        .unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&"ab".repeat(32));
        text.push_str("\"\n");
        std::fs::write(&path, text).unwrap();
        let args = SecurityOptions {
            config: Some(path.clone()),
            ..SecurityOptions::default()
        };
        let (security, config) = prepare(&args, dir.path(), "0.0.0.0:1").unwrap();
        assert_eq!(config.max_lfs_object_bytes, 1 << 20);
        let numeric: FileConfig = toml::from_str("max_lfs_object_size = 4096").unwrap();
        assert_eq!(numeric.max_lfs_object_size.unwrap().bytes().unwrap(), 4096);
        assert_eq!(config.header_read_timeout, Duration::from_secs(5));
        assert_eq!(security.summary, "tokens required");
        // The file's tokens cannot be revoked with the command.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(matches!(
            run_token_command(
                &TokenCommand::Revoke { id: "ci".into() },
                &args,
                dir.path(),
                &mut out,
                &mut err
            ),
            Err(SecurityError::Token(TokenError::InConfig { .. }))
        ));
        std::fs::write(&path, "listen_everywhere = true\n").unwrap();
        assert!(matches!(
            FileConfig::read(&path),
            Err(SecurityError::ParseConfig { .. })
        ));
    }
}
