//! Slow and oversized clients against an in-process server with short timeouts: a body
//! that stalls gets `408` with a message saying so; a head that never completes gets the
//! connection closed; limits are answered before the body is read.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitmodel_server::{AllowAll, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::TestServer;

/// A server with one-second timeouts and a 1000-byte limit on Git LFS objects.
async fn start(dir: &std::path::Path) -> TestServer {
    let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into(), dir);
    config.body_idle_timeout = Duration::from_secs(1);
    config.header_read_timeout = Duration::from_secs(1);
    config.max_lfs_object_bytes = 1000;
    TestServer::start_config(config, Arc::new(AllowAll)).await
}

/// Writes `raw`, then reads until the server closes (or 10 s pass).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn stalled_body_is_408_and_stalled_head_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let addr = server.addr;

    // Ten of the announced hundred bytes, then nothing.
    let raw = b"POST /acme/vision/model/v1/chunks/exists HTTP/1.1\r\nHost: x\r\n\
                Content-Length: 100\r\n\r\n0123456789";
    let (answer, waited) = exchange(addr, raw).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body stalled for more than 1 s"),
        "{answer}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Half a head: closed without an answer after the header read timeout.
    let (answer, waited) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // A Git LFS object over the limit is refused from its Content-Length.
    let raw = format!(
        "PUT /acme/vision/info/lfs/objects/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        "ab".repeat(32)
    );
    let (answer, _) = exchange(addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("object of 5000 bytes is larger than this server's limit of 1000 bytes"),
        "{answer}"
    );
    server.stop().await;
}
