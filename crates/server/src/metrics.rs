//! `/metrics`: request counters and the chunk index size in the Prometheus text format.
//!
//! Counters are process-local atomics (each node of a multi-node deployment is scraped on
//! its own). The number of chunks the node indexes moves by one when any repository
//! stores a chunk nobody else has, so once tokens exist the endpoint needs an `admin:*`
//! token ([`crate::auth::Authorizer::authorize_server`]); an anonymous (loopback) server
//! serves it to everyone, like `/healthz`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests served, by status class, and the time spent on them.
#[derive(Debug, Default)]
pub struct Metrics {
    by_class: [AtomicU64; 5],
    micros: AtomicU64,
    /// Bytes of registered files hashed with SHA-256, and bytes whose hash state was
    /// resumed from the repository's own earlier files ([`crate::prefix`]).
    verify_hashed: AtomicU64,
    verify_resumed: AtomicU64,
}

impl Metrics {
    /// Records one answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records one file's verification: bytes hashed, and bytes resumed from a known
    /// prefix state (read and checked, but not hashed again).
    pub fn record_verification(&self, hashed: u64, resumed: u64) {
        self.verify_hashed.fetch_add(hashed, Ordering::Relaxed);
        self.verify_resumed.fetch_add(resumed, Ordering::Relaxed);
    }

    /// The exposition text; `chunks` is the current size of the chunk index.
    pub fn render(&self, chunks: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP gitmodel_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE gitmodel_requests_total counter\n");
        for (i, n) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "gitmodel_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP gitmodel_request_seconds_total Time spent answering requests.\n");
        out.push_str("# TYPE gitmodel_request_seconds_total counter\n");
        let _ = writeln!(
            out,
            "gitmodel_request_seconds_total {:.6}",
            self.micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out.push_str("# HELP gitmodel_index_chunks Chunks in this node's chunk index.\n");
        out.push_str("# TYPE gitmodel_index_chunks gauge\n");
        let _ = writeln!(out, "gitmodel_index_chunks {chunks}");
        out.push_str(
            "# HELP gitmodel_verify_hashed_bytes_total Bytes of registered files hashed with SHA-256.\n",
        );
        out.push_str("# TYPE gitmodel_verify_hashed_bytes_total counter\n");
        let _ = writeln!(
            out,
            "gitmodel_verify_hashed_bytes_total {}",
            self.verify_hashed.load(Ordering::Relaxed)
        );
        out.push_str("# HELP gitmodel_verify_resumed_bytes_total Bytes of registered files whose SHA-256 resumed from the same repository's earlier files.\n");
        out.push_str("# TYPE gitmodel_verify_resumed_bytes_total counter\n");
        let _ = writeln!(
            out,
            "gitmodel_verify_resumed_bytes_total {}",
            self.verify_resumed.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class() {
        let m = Metrics::default();
        m.record(200, Duration::from_millis(3));
        m.record(206, Duration::from_millis(1));
        m.record(404, Duration::from_millis(1));
        m.record(503, Duration::ZERO);
        let text = m.render(7);
        assert!(
            text.contains("gitmodel_requests_total{class=\"2xx\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("gitmodel_requests_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("gitmodel_requests_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("gitmodel_request_seconds_total 0.005000\n"));
        assert!(text.contains("gitmodel_index_chunks 7\n"));
    }
}
