//! A small HTTP/1.1 client for tests: each request goes over a fresh TCP connection to a
//! server's address (hyper's low-level client), and the whole answer is read into a
//! [`Reply`] with helpers for the checks tests make on git-model's answers.
//!
//! Every request carries `Host: localhost`, so URLs the server builds from the request's
//! host start with `http://localhost`.

use std::fmt;
use std::net::SocketAddr;

use ::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The media type of Git LFS JSON requests and answers.
pub const LFS_MEDIA: &str = "application/vnd.git-lfs+json";

/// A client for the server at `addr`; cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    /// A client for the server listening on `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr }
    }

    /// Sends `method path` with `body` and no extra headers; panics if the connection
    /// fails or the answer does not arrive whole.
    pub async fn request(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request_with(method, path, &[], body).await
    }

    /// Like [`Client::request`], with `headers` (name, value) added to the request.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_request_with(method.clone(), path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Client::request_with`] for an answer that may legitimately break off:
    /// `Err` with hyper's message when the request cannot be sent or the body does not
    /// arrive whole (a server that cuts the connection short). Still panics when the
    /// connection cannot be opened at all.
    pub async fn try_request_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap_or_else(|e| panic!("handshake with {}: {e}", self.addr));
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(::http::header::HOST, "localhost");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(body.into()))
            .unwrap_or_else(|e| panic!("{method} {path}: building the request: {e}"));
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            method,
            path: path.to_string(),
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A whole answer, with the request it answers (for messages).
pub struct Reply {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("request", &format_args!("{} {}", self.method, self.path))
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.text())
            .finish()
    }
}

impl Reply {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status is `status` (the message shows the body); returns the reply.
    pub fn expect_status(self, status: StatusCode) -> Reply {
        assert_eq!(
            self.status,
            status,
            "{} {}: body: {}",
            self.method,
            self.path,
            self.text()
        );
        self
    }

    /// Asserts the status is `status` and that the answer carries the `x-request-id`
    /// header git-model's server puts on every answer; returns the reply.
    pub fn expect(self, status: StatusCode) -> Reply {
        let reply = self.expect_status(status);
        assert!(
            reply.headers.contains_key("x-request-id"),
            "{} {}: no x-request-id",
            reply.method,
            reply.path
        );
        reply
    }

    /// The body parsed as JSON into `T`; panics with the body if it does not parse.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.text()))
    }

    /// The body parsed as any JSON value.
    pub fn json_value(&self) -> Value {
        self.json()
    }

    /// The code of a native API error body (`{"error": {"code", "message",
    /// "request_id"}}`), after checking that it has a message and names the request id.
    pub fn error_code(&self) -> String {
        let body = self.json_value();
        let error = &body["error"];
        let (Some(code), Some(_)) = (error["code"].as_str(), error["message"].as_str()) else {
            panic!("not an error body: {}", self.text());
        };
        assert!(error["request_id"].is_string(), "no request id: {body}");
        code.to_string()
    }

    /// The message of a Git LFS error answer, after checking its shape: the LFS media
    /// type, a `message` and the `request_id`.
    pub fn lfs_error(&self) -> String {
        assert_eq!(self.headers["content-type"], LFS_MEDIA);
        let body = self.json_value();
        assert!(body["request_id"].is_string(), "{body}");
        body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {body}"))
            .to_string()
    }
}
