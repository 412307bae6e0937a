//! A fault-injecting HTTP/1.1 proxy for tests: it sits on a loopback port between the
//! real client and the real server, forwards requests, and answers the ones its script
//! picks with a fault instead: a status (`503`, `429` with `Retry-After`, a persistent
//! `500`), a connection dropped halfway through the request body, or the server's answer
//! cut off halfway through its body. It can also play a hostile server: rewrite an
//! answer's body, drip it a byte at a time, or answer with a stream of garbage.
//!
//! Every request is logged with when it arrived and when it was answered, so a test can
//! count the retries the client made and measure the gap it left after a `Retry-After`
//! at the proxy, rather than timing whole commands.
//!
//! Deliberately small: request bodies must carry `Content-Length` (the git-model client
//! always sends one), and every answer closes its connection (`Connection: close`), so the
//! client never reuses a connection the proxy is about to cut.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What happens to a request a [`Rule`] picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without asking the server, with `Retry-After: <secs>` if set.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Read half of the request body, then close the connection.
    DropRequestBody,
    /// Forward the request, then pass on the answer's head and half its body, and close.
    DropResponseBody,
    /// Forward the request and pass on the answer with its body replaced by what the
    /// function makes of it (`Content-Length` adjusted): a server that lies.
    RewriteBody(Rewrite),
    /// Answer `200` with the body the function makes (given an empty slice), without
    /// asking the server: content the server never had.
    Answer(Rewrite),
    /// Forward the request, pass on the answer's head, then its body one byte every
    /// `every_ms` milliseconds: a server that drips.
    DripResponseBody { every_ms: u64 },
    /// Answer `200` with a `Content-Length` of `bytes` and that many bytes of garbage,
    /// made as they are sent (the proxy holds none of it), until the client stops
    /// reading; [`Logged::body_sent`] says how far it got.
    Garbage { bytes: u64 },
}

/// A body rewrite for [`Fault::RewriteBody`].
#[derive(Clone, Copy)]
pub struct Rewrite(pub fn(&[u8]) -> Vec<u8>);

impl std::fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rewrite(..)")
    }
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Rewrite) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for Rewrite {}

/// Which requests get a fault: those whose method is `method` (any if `None`) and whose
/// path contains `path_contains` (ends with it, when it ends with `$`); of these, the `hits`-th ones (1-based, in order of
/// arrival), or every one when `hits` is empty.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_contains: &'static str,
    pub hits: Vec<usize>,
    pub fault: Fault,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = match self.path_contains.strip_suffix('$') {
            Some(end) => path.ends_with(end),
            None => path.contains(self.path_contains),
        };
        self.method.is_none_or(|m| m == method) && path_ok
    }
}

/// What the proxy did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed to the server, which answered this status.
    Forwarded(u16),
    /// Answered (or cut off) by the proxy.
    Faulted(Fault),
    /// The server could not be reached or the request was unreadable.
    Failed(String),
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    /// Its `Range` header: with method and path, what makes a retry the same request.
    pub range: Option<String>,
    /// When its head had arrived.
    pub arrived: Instant,
    /// When the proxy had finished answering it (or closed the connection).
    pub answered: Instant,
    pub outcome: Outcome,
    /// Bytes of the answer's body written to the client.
    pub body_sent: u64,
}

impl Logged {
    pub fn faulted(&self) -> bool {
        matches!(self.outcome, Outcome::Faulted(_))
    }

    /// Whether `other` asks for the same thing (a retry of this request, or this again).
    pub fn same_request(&self, other: &Logged) -> bool {
        self.method == other.method && self.path == other.path && self.range == other.range
    }
}

struct Shared {
    upstream: String,
    rules: Vec<Rule>,
    /// Matching requests seen so far, per rule.
    seen: Mutex<Vec<usize>>,
    log: Mutex<Vec<Logged>>,
    stop: AtomicBool,
}

/// The proxy: listens on `127.0.0.1:<free port>` until dropped.
pub struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`, as [`crate::Server::url`]).
    pub fn start(upstream: &str, rules: Vec<Rule>) -> Proxy {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the proxy speaks plain HTTP, not {upstream}"))
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            seen: Mutex::new(vec![0; rules.len()]),
            rules,
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        Proxy {
            url: format!("http://{addr}"),
            shared,
            addr,
        }
    }

    /// URL of repository `ns/repo` through this proxy.
    pub fn repo_url(&self, ns: &str, repo: &str) -> String {
        format!("{}/{ns}/{repo}", self.url)
    }

    /// Every request so far, in order of arrival.
    pub fn log(&self) -> Vec<Logged> {
        let mut log = self.shared.log.lock().unwrap().clone();
        log.sort_by_key(|l| l.arrived);
        log
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A request's head, as read.
struct Head {
    method: String,
    path: String,
    /// Header lines, without the request line and without `Connection`.
    headers: Vec<String>,
    range: Option<String>,
    content_length: usize,
}

fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    let mut content_length = 0;
    let mut range = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other(
                "connection closed inside the request head",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap_or((l, ""));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                content_length = value
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::other(format!("bad Content-Length {value:?}")))?
            }
            "transfer-encoding" => {
                return Err(io::Error::other(
                    "the test proxy needs Content-Length request bodies",
                ))
            }
            "range" => range = Some(value.trim().to_string()),
            "connection" | "keep-alive" => continue,
            _ => {}
        }
        headers.push(l.to_string());
    }
    Ok(Some(Head {
        method,
        path,
        headers,
        range,
        content_length,
    }))
}

fn serve(s: &Shared, conn: TcpStream) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut writer = conn;
    // One request per connection: every answer says `Connection: close`.
    let head = match read_head(&mut reader) {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            let now = Instant::now();
            s.log.lock().unwrap().push(Logged {
                method: String::new(),
                path: String::new(),
                range: None,
                arrived: now,
                answered: now,
                outcome: Outcome::Failed(e.to_string()),
                body_sent: 0,
            });
            return;
        }
    };
    let arrived = Instant::now();
    let fault = {
        let mut seen = s.seen.lock().unwrap();
        let mut fault = None;
        for (i, rule) in s.rules.iter().enumerate() {
            if rule.matches(&head.method, &head.path) {
                seen[i] += 1;
                if fault.is_none() && (rule.hits.is_empty() || rule.hits.contains(&seen[i])) {
                    fault = Some(rule.fault.clone());
                }
            }
        }
        fault
    };
    let mut body_sent = 0;
    let outcome = match handle(s, &head, fault, &mut reader, &mut writer, &mut body_sent) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    let _ = writer.flush();
    let _ = writer.shutdown(Shutdown::Both);
    s.log.lock().unwrap().push(Logged {
        method: head.method,
        path: head.path,
        range: head.range,
        arrived,
        answered: Instant::now(),
        outcome,
        body_sent,
    });
}

fn handle(
    s: &Shared,
    head: &Head,
    fault: Option<Fault>,
    reader: &mut impl Read,
    writer: &mut TcpStream,
    body_sent: &mut u64,
) -> io::Result<Outcome> {
    if fault == Some(Fault::DropRequestBody) {
        let mut half = vec![0; head.content_length / 2];
        reader.read_exact(&mut half)?;
        return Ok(Outcome::Faulted(Fault::DropRequestBody));
    }
    let mut body = vec![0; head.content_length];
    reader.read_exact(&mut body)?;
    if let Some(Fault::Status {
        status,
        retry_after,
    }) = fault
    {
        let text = format!(
            "{{\"error\":{{\"code\":\"injected\",\"message\":\"fault injected by the test proxy: {status}\"}}}}"
        );
        let mut answer = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            text.len()
        );
        if let Some(secs) = retry_after {
            answer.push_str(&format!("Retry-After: {secs}\r\n"));
        }
        answer.push_str("\r\n");
        answer.push_str(&text);
        writer.write_all(answer.as_bytes())?;
        return Ok(Outcome::Faulted(fault.unwrap()));
    }
    if let Some(Fault::Answer(Rewrite(f))) = fault {
        let body = f(&[]);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)?;
        *body_sent = body.len() as u64;
        return Ok(Outcome::Faulted(fault.unwrap()));
    }
    if let Some(Fault::Garbage { bytes }) = fault {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {bytes}\r\nConnection: close\r\n\r\n"
        );
        writer.write_all(head.as_bytes())?;
        let mut block = vec![0u8; 64 * 1024];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while *body_sent < bytes {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let n = (bytes - *body_sent).min(block.len() as u64) as usize;
            if writer.write_all(&block[..n]).is_err() {
                break; // the client stopped reading
            }
            *body_sent += n as u64;
        }
        return Ok(Outcome::Faulted(fault.unwrap()));
    }

    // Forward, with one connection per request.
    let mut up = TcpStream::connect(&s.upstream)?;
    let mut request = format!("{} {} HTTP/1.1\r\n", head.method, head.path);
    for h in &head.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    up.write_all(request.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("the server's answer has no complete head"))?;
    let head_text = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status: u16 = head_text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head_text:?}")))?;
    // The same head, but always `Connection: close`: the client must not reuse it.
    let mut out = String::new();
    for line in head_text.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let body = &answer[head_end + 4..];
    if let Some(Fault::RewriteBody(Rewrite(f))) = fault {
        let new = f(body);
        let mut head = String::new();
        for line in out.split("\r\n").filter(|l| !l.is_empty()) {
            if !line.to_ascii_lowercase().starts_with("content-length:") {
                head.push_str(line);
                head.push_str("\r\n");
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", new.len()));
        writer.write_all(head.as_bytes())?;
        writer.write_all(&new)?;
        *body_sent = new.len() as u64;
        return Ok(Outcome::Faulted(fault.unwrap()));
    }
    writer.write_all(out.as_bytes())?;
    if fault == Some(Fault::DropResponseBody) {
        writer.write_all(&body[..body.len() / 2])?;
        *body_sent = (body.len() / 2) as u64;
        return Ok(Outcome::Faulted(Fault::DropResponseBody));
    }
    if let Some(Fault::DripResponseBody { every_ms }) = fault {
        for b in body {
            writer.write_all(std::slice::from_ref(b))?;
            writer.flush()?;
            *body_sent += 1;
            std::thread::sleep(std::time::Duration::from_millis(every_ms));
        }
        return Ok(Outcome::Faulted(fault.unwrap()));
    }
    writer.write_all(body)?;
    *body_sent = body.len() as u64;
    Ok(Outcome::Forwarded(status))
}
