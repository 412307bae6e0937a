//! The connection side: accepting TCP connections (optionally TLS), running HTTP/1.1 on
//! them with keep-alive, a header read timeout and header count/size limits, and
//! shutting down gracefully.
//!
//! [`serve`] (plain HTTP) and [`serve_tls`] take an already bound listener (tests bind
//! `127.0.0.1:0` and keep the listener, so there is no bind-drop-rebind race) and a
//! shutdown future, typically [`shutdown_signal`]. Request handling itself is
//! [`crate::api::handle`].
//!
//! Slow clients: a request head (or a TLS handshake) not complete within
//! `header_read_timeout` closes the connection; more than `max_headers` header lines or
//! more than `max_header_bytes` is answered `431` by hyper and the connection closed;
//! stalled bodies are the handlers' business (`body_idle_timeout`, `408`).
//!
//! Bounds per connection ([`crate::conn`]): at most `max_connections` open at once, and
//! `max_connections_per_ip` from one client address (over either: `503`, closed, nothing
//! read); a write that makes no progress for `send_timeout` ends the connection; a
//! request body slower on average than `body_min_rate` after `body_rate_grace` is
//! answered `408`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::api;
use crate::conn::{ConnLimits, MinRate, WriteDeadline};
use crate::state::AppState;
use crate::tls::TlsAcceptor;

/// Read buffer floor: hyper refuses anything smaller, and bodies stream through this
/// buffer too, so it should not be tiny.
const MIN_BUF_BYTES: usize = 64 * 1024;

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, lets open
/// requests finish (up to `shutdown_grace` of the config) and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, state, None, shutdown).await;
}

/// [`serve`] over TLS: each connection's handshake must finish within the header read
/// timeout.
pub async fn serve_tls(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, state, Some(tls), shutdown).await;
}

async fn serve_with(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    let config = state.config();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_headers)
        .max_buf_size(config.max_header_bytes.max(MIN_BUF_BYTES))
        .max_header_size(config.max_header_bytes)
        .keep_alive(true);
    let limits = ConnLimits::new(config.max_connections, config.max_connections_per_ip);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Small JSON answers should not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let guard = match limits.admit(peer.ip()) {
                    Ok(guard) => guard,
                    Err(refused) => {
                        tracing::warn!(%peer, ?refused, "connection refused: over the connection limit");
                        if tls.is_none() {
                            // A canned answer, written with a short deadline, nothing read.
                            tokio::spawn(async move {
                                let mut stream = stream;
                                let answer = refused.answer();
                                // Answer, end the sending side, and read a little of what
                                // the client sent so that closing does not reset the
                                // connection before the client has read the answer.
                                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                    stream.write_all(&answer).await?;
                                    stream.shutdown().await?;
                                    let mut sink = [0u8; 4096];
                                    let mut read = 0;
                                    while read < 64 * 1024 {
                                        match stream.read(&mut sink).await? {
                                            0 => break,
                                            n => read += n,
                                        }
                                    }
                                    Ok::<_, std::io::Error>(())
                                })
                                .await;
                            });
                        }
                        continue;
                    }
                };
                let stream = WriteDeadline::new(stream, config.send_timeout);
                let state = Arc::clone(&state);
                let (rate, grace) = (config.body_min_rate, config.body_rate_grace);
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    let req = req.map(|body| MinRate::new(body, rate, grace));
                    async move { Ok::<_, Infallible>(api::handle(state, req, peer).await) }
                });
                let watcher = graceful.watcher();
                let http = http.clone();
                let tls = tls.clone();
                let handshake_timeout = config.header_read_timeout;
                tokio::spawn(async move {
                    let _guard = guard;
                    let result = match tls {
                        None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                        Some(tls) => {
                            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections, finishing open requests"
    );
    let grace = state.config().shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(secs = grace.as_secs(), "open connections did not finish in time");
        }
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
