//! git's long-running filter protocol (`filter.<driver>.process`, version 2): handshake,
//! then `clean` and `smudge` commands, content streamed as pkt-lines.
//!
//! The protocol lives here; what clean and smudge do is the [`Filter`] implementation's
//! business. Only protocol bytes go to the output stream: anything else written to stdout
//! would deadlock git, so implementations log to stderr.

use gitmodel_format::pointer::POINTER_PROBE_BYTES;
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};

use crate::pktline::{self, PacketReader, PacketWriter};

/// Why one command failed: git is told `status=error` and carries on with the next file.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Reading the content or writing the answer failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The file's content could not be stored or produced.
    #[error("{path}{}: {message}", .oid.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Content {
        path: String,
        /// The pointer's oid, when the file has one.
        oid: Option<String>,
        message: String,
    },
}

/// What a filter does with one file.
pub trait Filter {
    /// Reads the working-tree content from `input` (to its end) and returns what git
    /// stores: a pointer, or the content itself for things that should pass through.
    fn clean(&mut self, path: &str, input: &mut (dyn Read + Send)) -> Result<Vec<u8>, FilterError>;

    /// Turns the stored content (usually a pointer) into working-tree bytes on `out`.
    /// `stored` holds the first bytes of the stored content; `rest` yields the remainder
    /// when it was too long to be a pointer.
    fn smudge(
        &mut self,
        path: &str,
        stored: &[u8],
        rest: &mut (dyn Read + Send),
        out: &mut (dyn Write + Send),
    ) -> Result<(), FilterError>;

    /// Offered a smudge git allows to postpone (`can-delay=1`): returning true answers
    /// `status=delayed`, and the filter is expected to get the content ready in the
    /// background (e.g. download many files at once). git later asks
    /// [`Filter::available`] and re-requests those paths.
    fn delay(&mut self, _path: &str, _stored: &[u8]) -> bool {
        false
    }

    /// Paths of delayed smudges whose content is ready; blocks until at least one is, and
    /// returns an empty list once none are left.
    fn available(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Called after a successful smudge that git made for a checkout into the working
    /// tree (it offered `can-delay=1`, or the smudge was delayed), as opposed to one
    /// for a temporary file (e.g. a side of `git diff`), which git never offers to delay.
    fn checked_out(&mut self, _path: &str) {}
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Runs the protocol until git closes the stream.
pub fn run<R, W, F>(input: R, output: W, filter: &mut F) -> io::Result<()>
where
    R: BufRead + Send,
    W: Write + Send,
    F: Filter,
{
    let mut input = input;
    let mut output = output;
    handshake(&mut input, &mut output)?;
    // Stored content of delayed smudges: git re-requests them with empty content.
    let mut delayed: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some(headers) = pktline::read_text_list(&mut input)? {
        let mut command = None;
        let mut pathname = String::new();
        let mut can_delay = false;
        for h in &headers {
            if let Some(v) = h.strip_prefix("command=") {
                command = Some(v.to_string());
            } else if let Some(v) = h.strip_prefix("pathname=") {
                pathname = v.to_string();
            } else if h == "can-delay=1" {
                can_delay = true;
            }
        }
        match command.as_deref() {
            Some("clean") => clean(&mut input, &mut output, filter, &pathname)?,
            Some("smudge") => smudge(
                &mut input,
                &mut output,
                filter,
                &pathname,
                can_delay,
                &mut delayed,
            )?,
            Some("list_available_blobs") => {
                let ready = if delayed.is_empty() {
                    Vec::new()
                } else {
                    filter.available()
                };
                for path in &ready {
                    pktline::write_text(&mut output, &format!("pathname={path}"))?;
                }
                pktline::write_flush(&mut output)?;
                pktline::write_text(&mut output, "status=success")?;
                pktline::write_flush(&mut output)?;
            }
            other => {
                tracing::warn!("unsupported filter command {other:?} for {pathname}");
                PacketReader::new(&mut input).drain()?;
                pktline::write_text(&mut output, "status=error")?;
                pktline::write_flush(&mut output)?;
            }
        }
        output.flush()?;
    }
    Ok(())
}

fn handshake<R: BufRead, W: Write>(input: &mut R, output: &mut W) -> io::Result<()> {
    let hello = pktline::read_text_list(input)?.ok_or_else(|| protocol_error("no handshake"))?;
    if hello.first().map(String::as_str) != Some("git-filter-client") {
        return Err(protocol_error(format!("unexpected handshake {hello:?}")));
    }
    if !hello.iter().any(|l| l == "version=2") {
        return Err(protocol_error(
            "git does not offer filter protocol version 2",
        ));
    }
    pktline::write_text(output, "git-filter-server")?;
    pktline::write_text(output, "version=2")?;
    pktline::write_flush(output)?;
    // git waits for this answer before it sends its capabilities.
    output.flush()?;
    let caps = pktline::read_text_list(input)?.ok_or_else(|| protocol_error("no capabilities"))?;
    for cap in ["capability=clean", "capability=smudge", "capability=delay"] {
        if caps.iter().any(|c| c == cap) {
            pktline::write_text(output, cap)?;
        }
    }
    pktline::write_flush(output)?;
    output.flush()
}

fn clean<R: BufRead + Send, W: Write, F: Filter>(
    input: &mut R,
    output: &mut W,
    filter: &mut F,
    path: &str,
) -> io::Result<()> {
    let mut content = PacketReader::new(input);
    let result = filter.clean(path, &mut content);
    // Whatever the filter did, the content must be consumed up to its flush.
    content.drain()?;
    match result {
        Ok(stored) => {
            pktline::write_text(output, "status=success")?;
            pktline::write_flush(output)?;
            let mut w = PacketWriter::new(&mut *output);
            w.write_all(&stored)?;
            w.finish()?;
            pktline::write_flush(output)?;
            pktline::write_flush(output)
        }
        Err(e) => {
            tracing::error!("clean {path}: {e}");
            pktline::write_text(output, "status=error")?;
            pktline::write_flush(output)
        }
    }
}

fn smudge<R: BufRead + Send, W: Write + Send, F: Filter>(
    input: &mut R,
    output: &mut W,
    filter: &mut F,
    path: &str,
    can_delay: bool,
    delayed: &mut HashMap<String, Vec<u8>>,
) -> io::Result<()> {
    let mut content = PacketReader::new(input);
    // A pointer is under 1024 bytes; read a little more to tell pointers from big blobs.
    let mut head = Vec::with_capacity(POINTER_PROBE_BYTES);
    (&mut content)
        .take(POINTER_PROBE_BYTES as u64)
        .read_to_end(&mut head)?;
    let for_checkout = can_delay || delayed.contains_key(path);
    if let Some(stored) = delayed.remove(path) {
        // The second request of a delayed smudge comes with empty content.
        if head.is_empty() {
            head = stored;
        }
    } else if can_delay && head.len() < POINTER_PROBE_BYTES && filter.delay(path, &head) {
        content.drain()?;
        delayed.insert(path.to_string(), head);
        pktline::write_text(output, "status=delayed")?;
        return pktline::write_flush(output);
    }
    pktline::write_text(output, "status=success")?;
    pktline::write_flush(output)?;
    let mut w = PacketWriter::new(&mut *output);
    let result = filter.smudge(path, &head, &mut content, &mut w);
    content.drain()?;
    w.finish()?;
    pktline::write_flush(output)?;
    match result {
        Ok(()) => {
            if for_checkout {
                filter.checked_out(path);
            }
            pktline::write_flush(output)
        }
        Err(e) => {
            tracing::error!("smudge {path}: {e}");
            pktline::write_text(output, "status=error")?;
            pktline::write_flush(output)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{write_data, write_flush, write_text};

    struct Upper;
    impl Filter for Upper {
        fn clean(
            &mut self,
            _: &str,
            input: &mut (dyn Read + Send),
        ) -> Result<Vec<u8>, FilterError> {
            let mut v = Vec::new();
            input.read_to_end(&mut v).unwrap();
            if v == b"fail" {
                return Err(FilterError::Content {
                    path: String::new(),
                    oid: None,
                    message: "asked to fail".into(),
                });
            }
            Ok(v.to_ascii_uppercase())
        }
        fn smudge(
            &mut self,
            _: &str,
            stored: &[u8],
            rest: &mut (dyn Read + Send),
            out: &mut (dyn Write + Send),
        ) -> Result<(), FilterError> {
            out.write_all(&stored.to_ascii_lowercase()).unwrap();
            io::copy(rest, out).unwrap();
            Ok(())
        }
    }

    #[test]
    fn session() {
        let mut i = Vec::new();
        write_text(&mut i, "git-filter-client").unwrap();
        write_text(&mut i, "version=2").unwrap();
        write_flush(&mut i).unwrap();
        write_text(&mut i, "capability=clean").unwrap();
        write_text(&mut i, "capability=smudge").unwrap();
        write_text(&mut i, "capability=delay").unwrap();
        write_flush(&mut i).unwrap();
        for (cmd, body) in [
            ("clean", &b"abc"[..]),
            ("clean", b"fail"),
            ("smudge", b"XYZ"),
        ] {
            write_text(&mut i, &format!("command={cmd}")).unwrap();
            write_text(&mut i, "pathname=a b.bin").unwrap();
            write_flush(&mut i).unwrap();
            write_data(&mut i, body).unwrap();
            write_flush(&mut i).unwrap();
        }
        let mut out = Vec::new();
        run(&i[..], &mut out, &mut Upper).unwrap();
        let expected = concat!(
            "0016git-filter-server\n",
            "000eversion=2\n",
            "0000",
            "0015capability=clean\n",
            "0016capability=smudge\n",
            "0015capability=delay\n",
            "0000",
            "0013status=success\n",
            "0000",
            "0007ABC",
            "0000",
            "0000",
            "0011status=error\n",
            "0000",
            "0013status=success\n",
            "0000",
            "0007xyz",
            "0000",
            "0000",
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    struct Delaying {
        pending: Vec<String>,
        checked_out: Vec<String>,
    }
    impl Filter for Delaying {
        fn clean(&mut self, _: &str, _: &mut (dyn Read + Send)) -> Result<Vec<u8>, FilterError> {
            unreachable!()
        }
        fn smudge(
            &mut self,
            path: &str,
            stored: &[u8],
            _: &mut (dyn Read + Send),
            out: &mut (dyn Write + Send),
        ) -> Result<(), FilterError> {
            write!(out, "{path}:{}", String::from_utf8_lossy(stored)).unwrap();
            Ok(())
        }
        fn delay(&mut self, path: &str, _: &[u8]) -> bool {
            self.pending.push(path.to_string());
            true
        }
        fn available(&mut self) -> Vec<String> {
            std::mem::take(&mut self.pending)
        }
        fn checked_out(&mut self, path: &str) {
            self.checked_out.push(path.to_string());
        }
    }

    #[test]
    fn delayed_smudge() {
        let mut i = Vec::new();
        write_text(&mut i, "git-filter-client").unwrap();
        write_text(&mut i, "version=2").unwrap();
        write_flush(&mut i).unwrap();
        write_text(&mut i, "capability=smudge").unwrap();
        write_text(&mut i, "capability=delay").unwrap();
        write_flush(&mut i).unwrap();
        write_text(&mut i, "command=smudge").unwrap();
        write_text(&mut i, "pathname=a").unwrap();
        write_text(&mut i, "can-delay=1").unwrap();
        write_flush(&mut i).unwrap();
        write_data(&mut i, b"ptr").unwrap();
        write_flush(&mut i).unwrap();
        for _ in 0..2 {
            write_text(&mut i, "command=list_available_blobs").unwrap();
            write_flush(&mut i).unwrap();
        }
        // The re-request comes with empty content.
        write_text(&mut i, "command=smudge").unwrap();
        write_text(&mut i, "pathname=a").unwrap();
        write_flush(&mut i).unwrap();
        write_flush(&mut i).unwrap();
        // A smudge git does not offer to delay (a temporary file, e.g. for a diff).
        write_text(&mut i, "command=smudge").unwrap();
        write_text(&mut i, "pathname=b").unwrap();
        write_flush(&mut i).unwrap();
        write_data(&mut i, b"tmp").unwrap();
        write_flush(&mut i).unwrap();
        let mut out = Vec::new();
        let mut filter = Delaying {
            pending: vec![],
            checked_out: vec![],
        };
        run(&i[..], &mut out, &mut filter).unwrap();
        assert_eq!(
            filter.checked_out,
            ["a"],
            "only the checkout's smudge counts"
        );
        let out = String::from_utf8(out).unwrap();
        let expected_tail = concat!(
            "0013status=delayed\n",
            "0000",
            "000fpathname=a\n",
            "0000",
            "0013status=success\n",
            "0000",
            "0000",
            "0013status=success\n",
            "0000",
            "0013status=success\n",
            "0000",
            "0009a:ptr",
            "0000",
            "0000",
            "0013status=success\n",
            "0000",
            "0009b:tmp",
            "0000",
            "0000",
        );
        assert!(out.ends_with(expected_tail), "{out}");
    }
}
