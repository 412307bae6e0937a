//! Per-connection bounds: how many connections one client address (and everybody) may
//! hold, how long a connection may refuse to take the answer it is sent, and how slowly
//! a request body may arrive.
//!
//! - [`ConnLimits`]: a global cap and a cap per client IP address, counted by
//!   [`ConnGuard`]s that the accept loop of [`crate::server`] holds for each connection.
//!   A connection over a cap is answered `503` at once (plain HTTP) or closed (TLS),
//!   without reading anything.
//! - [`WriteDeadline`]: wraps a connection's socket; a write (or flush) that cannot make
//!   progress for [`crate::ServerConfig::send_timeout`] fails, which ends the
//!   connection. A client that stops reading its answer therefore holds the server's
//!   buffers for at most that long.
//! - [`MinRate`]: wraps a request body; once its grace period is over, a body that has
//!   delivered fewer bytes than the minimum rate times the time since fails with
//!   [`BodyFault::TooSlow`] (answered `408`). A body of `n` bytes thus has a total
//!   deadline of `grace + n / rate`, whatever its idle gaps.
//!
//! What is not here: the head's deadline (hyper's `header_read_timeout`, set in
//! [`crate::server`]), and the idle limit between two reads of a body
//! ([`crate::api::next_data`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Connections open now, in total and per client address.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds its maximum of connections.
    Total { limit: usize },
    /// This client address holds its maximum of connections.
    PerAddress { limit: usize },
}

impl Refused {
    /// The canned answer for a plain HTTP connection refused before its request is read.
    pub fn answer(self) -> Vec<u8> {
        let message = match self {
            Refused::Total { limit } => {
                format!("the server holds its limit of {limit} open connections; retry in a moment")
            }
            Refused::PerAddress { limit } => format!(
                "your address holds this server's limit of {limit} open connections; close \
                 some or retry in a moment"
            ),
        };
        let body = format!(
            "{{\"error\":{{\"code\":\"too_many_connections\",\"message\":\"{message}\"}}}}"
        );
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Counts a new connection from `ip`, or says which cap it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(Refused::Total {
                limit: self.max_total,
            });
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err(Refused::PerAddress {
                limit: self.max_per_ip,
            });
        }
        *mine += 1;
        counts.total += 1;
        Ok(ConnGuard {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One admitted connection; uncounted when dropped.
#[derive(Debug)]
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self
            .limits
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A socket whose writes fail after making no progress for `limit`.
#[derive(Debug)]
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Armed when a write first cannot proceed; dropped when one does.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome through, timing how long it stays pending.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took nothing of the answer for {} s",
                            limit.as_secs()
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyFault {
    #[error(
        "the request body arrived slower than {rate} bytes/s ({got} bytes in {secs} s; the \
         first {grace} s are free)"
    )]
    TooSlow {
        rate: u64,
        grace: u64,
        got: u64,
        secs: u64,
    },
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

/// A request body that must keep up an average of `rate` bytes per second once `grace`
/// has passed since the request's head arrived.
#[derive(Debug)]
pub struct MinRate<B> {
    inner: B,
    started: Instant,
    rate: u64,
    grace: Duration,
    got: u64,
}

impl<B> MinRate<B> {
    pub fn new(inner: B, rate: u64, grace: Duration) -> MinRate<B> {
        MinRate {
            inner,
            started: Instant::now(),
            rate,
            grace,
            got: 0,
        }
    }

    fn too_slow(&self) -> Option<BodyFault> {
        let elapsed = self.started.elapsed();
        let late = elapsed.checked_sub(self.grace)?;
        let owed = (late.as_secs_f64() * self.rate as f64) as u64;
        (self.rate > 0 && self.got < owed).then(|| BodyFault::TooSlow {
            rate: self.rate,
            grace: self.grace.as_secs(),
            got: self.got,
            secs: elapsed.as_secs(),
        })
    }
}

impl<B> Body for MinRate<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.got += data.len() as u64;
                }
                // Checked when bytes arrive: a body that stops entirely is the idle
                // timeout's business.
                if !this.inner.is_end_stream() {
                    if let Some(fault) = this.too_slow() {
                        return Poll::Ready(Some(Err(fault)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyFault::Transport(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_total() {
        let limits = ConnLimits::new(3, 2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(
            limits.admit(a).unwrap_err(),
            Refused::PerAddress { limit: 2 }
        );
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::Total { limit: 3 });
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.admit(a).unwrap();
        let answer = String::from_utf8(Refused::PerAddress { limit: 2 }.answer()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("limit of 2 open connections"), "{answer}");
    }
}
