//! Credentials for the server: what [`crate::Remote`] sends, and where it gets them when
//! the server answers `401`.
//!
//! [`Credential`] is a user name and password for HTTP Basic (the server reads the token
//! from the password). [`CredentialHelper`] is the source asked on a `401`;
//! [`GitCredentialHelper`] runs `git credential fill|approve|reject` with the protocol,
//! host and path of `model.url`, so every credential helper git knows (store, cache,
//! libsecret, osxkeychain, manager, …) and git's own terminal prompt work unchanged.
//! Nothing here prints a secret: [`Credential`]'s `Debug` redacts the password, and
//! helper failures are reported by git's stderr, which never contains one.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A user name and password (the token) for HTTP Basic.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a credential is for: git's credential description of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialUrl {
    /// `http` or `https`.
    pub protocol: String,
    /// `host[:port]`.
    pub host: String,
    /// The path without its leading `/` (`acme/vision`).
    pub path: String,
}

impl CredentialUrl {
    /// Splits `http(s)://host[:port]/path`; `None` for anything else.
    pub fn parse(url: &str) -> Option<CredentialUrl> {
        let (protocol, rest) = url.split_once("://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        (matches!(protocol, "http" | "https") && !host.is_empty()).then(|| CredentialUrl {
            protocol: protocol.to_string(),
            host: host.to_string(),
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The description git reads on stdin, with `credential`'s fields if given.
    fn describe(&self, credential: Option<&Credential>) -> String {
        let mut text = format!(
            "protocol={}\nhost={}\npath={}\n",
            self.protocol, self.host, self.path
        );
        if let Some(c) = credential {
            text.push_str(&format!(
                "username={}\npassword={}\n",
                c.username, c.password
            ));
        }
        text.push('\n');
        text
    }
}

/// A source of credentials, asked when the server wants some.
pub trait CredentialHelper: Send + Sync + fmt::Debug {
    /// Credentials for `url`, or why there are none.
    fn fill(&self, url: &CredentialUrl) -> Result<Credential, String>;
    /// `credential` worked: remember it (best effort).
    fn approve(&self, url: &CredentialUrl, credential: &Credential);
    /// `credential` was refused: forget it (best effort).
    fn reject(&self, url: &CredentialUrl, credential: &Credential);
}

/// `git credential …`, run in the repository (so its config applies) with this process's
/// environment (so `GIT_TERMINAL_PROMPT=0` and `GIT_ASKPASS` are honoured).
#[derive(Debug, Clone)]
pub struct GitCredentialHelper {
    dir: PathBuf,
}

impl GitCredentialHelper {
    pub fn new(dir: impl Into<PathBuf>) -> GitCredentialHelper {
        GitCredentialHelper { dir: dir.into() }
    }

    fn run(&self, action: &str, input: &str) -> Result<String, String> {
        let mut child = Command::new("git")
            .args(["credential", action])
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run git credential {action}: {e}"))?;
        // A helper that exits without reading its input closes the pipe: its exit status
        // says what happened, so a failed write is not an error of its own.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("git credential {action}: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!(
                "git credential {action} failed ({}){}{}",
                out.status,
                if last.is_empty() { "" } else { ": " },
                last.trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl CredentialHelper for GitCredentialHelper {
    fn fill(&self, url: &CredentialUrl) -> Result<Credential, String> {
        let answer = self.run("fill", &url.describe(None))?;
        parse_fill(&answer).ok_or_else(|| "git credential fill gave no password".to_string())
    }

    fn approve(&self, url: &CredentialUrl, credential: &Credential) {
        if let Err(e) = self.run("approve", &url.describe(Some(credential))) {
            tracing::debug!("{e}");
        }
    }

    fn reject(&self, url: &CredentialUrl, credential: &Credential) {
        if let Err(e) = self.run("reject", &url.describe(Some(credential))) {
            tracing::debug!("{e}");
        }
    }
}

/// The credential in `git credential fill`'s answer (`key=value` lines).
fn parse_fill(answer: &str) -> Option<Credential> {
    let mut username = String::new();
    let mut password = None;
    for line in answer.lines() {
        match line.split_once('=') {
            Some(("username", v)) => username = v.to_string(),
            Some(("password", v)) => password = Some(v.to_string()),
            _ => {}
        }
    }
    Some(Credential {
        username,
        password: password.filter(|p| !p.is_empty())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers() {
        let url = CredentialUrl::parse("https://git.example.com:8443/acme/vision/").unwrap();
        assert_eq!(url.protocol, "https");
        assert_eq!(url.host, "git.example.com:8443");
        assert_eq!(url.path, "acme/vision");
        assert_eq!(
            url.describe(None),
            "protocol=https\nhost=git.example.com:8443\npath=acme/vision\n\n"
        );
        assert!(CredentialUrl::parse("ftp://x/y").is_none());
        assert!(CredentialUrl::parse("http:///y").is_none());
        let c = parse_fill("protocol=http\nhost=h\nusername=ci\npassword=gmt_s3cret\n").unwrap();
        assert_eq!(c.username, "ci");
        assert_eq!(c.password, "gmt_s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(parse_fill("username=ci\n").is_none());
        assert!(parse_fill("username=ci\npassword=\n").is_none());
    }
}
