//! pkt-line framing as git's filter protocol uses it: a 4-hex-digit length (header
//! included) then data; `0000` is a flush packet. Data packets carry at most
//! [`MAX_DATA`] bytes.

use std::io::{self, Read, Write};

/// Largest data payload of one packet (git's LARGE_PACKET_DATA_MAX).
pub const MAX_DATA: usize = 65520 - 4;

#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    Data(Vec<u8>),
    Flush,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one packet; `Ok(None)` at a clean end of stream (before any header byte).
pub fn read_packet<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<Packet>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(invalid("end of stream inside a pkt-line header".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let text = std::str::from_utf8(&header)
        .map_err(|_| invalid(format!("bad pkt-line header {header:?}")))?;
    let len = usize::from_str_radix(text, 16)
        .map_err(|_| invalid(format!("bad pkt-line header {text:?}")))?;
    match len {
        0 => Ok(Some(Packet::Flush)),
        1..=4 => Err(invalid(format!("unsupported pkt-line length {len}"))),
        _ if len - 4 > MAX_DATA => Err(invalid(format!("pkt-line of {len} bytes is too long"))),
        _ => {
            let mut data = vec![0u8; len - 4];
            r.read_exact(&mut data)?;
            Ok(Some(Packet::Data(data)))
        }
    }
}

pub fn write_data<W: Write + ?Sized>(w: &mut W, data: &[u8]) -> io::Result<()> {
    debug_assert!(!data.is_empty() && data.len() <= MAX_DATA);
    write!(w, "{:04x}", data.len() + 4)?;
    w.write_all(data)
}

/// Writes a text packet, adding the trailing newline.
pub fn write_text<W: Write + ?Sized>(w: &mut W, text: &str) -> io::Result<()> {
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend_from_slice(text.as_bytes());
    line.push(b'\n');
    write_data(w, &line)
}

pub fn write_flush<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    w.write_all(b"0000")
}

/// Reads text packets up to a flush, each without its trailing newline. `Ok(None)` at end
/// of stream before the first packet.
pub fn read_text_list<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<Vec<String>>> {
    let mut out = Vec::new();
    loop {
        match read_packet(r)? {
            None if out.is_empty() => return Ok(None),
            None => return Err(invalid("end of stream before flush".into())),
            Some(Packet::Flush) => return Ok(Some(out)),
            Some(Packet::Data(d)) => {
                let text =
                    String::from_utf8(d).map_err(|_| invalid("non-UTF-8 text packet".into()))?;
                out.push(text.strip_suffix('\n').unwrap_or(&text).to_string());
            }
        }
    }
}

/// `Read` over data packets up to the next flush. Payload bytes go straight from the
/// underlying reader into the caller's buffer: no copy or allocation per packet.
pub struct PacketReader<'a, R: Read + ?Sized> {
    inner: &'a mut R,
    /// Payload bytes of the current packet not yet read.
    remaining: usize,
    done: bool,
}

impl<'a, R: Read + ?Sized> PacketReader<'a, R> {
    pub fn new(inner: &'a mut R) -> Self {
        PacketReader {
            inner,
            remaining: 0,
            done: false,
        }
    }

    /// Consumes whatever is left up to the flush (after an early error, to keep the
    /// stream in sync).
    pub fn drain(&mut self) -> io::Result<()> {
        let mut sink = vec![0u8; 65536];
        while self.read(&mut sink)? > 0 {}
        Ok(())
    }

    /// Reads the next packet's header; `false` at the flush.
    fn next_packet(&mut self) -> io::Result<bool> {
        let mut header = [0u8; 4];
        self.inner.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("end of stream before flush".into())
            } else {
                e
            }
        })?;
        let text = std::str::from_utf8(&header)
            .map_err(|_| invalid(format!("bad pkt-line header {header:?}")))?;
        let len = usize::from_str_radix(text, 16)
            .map_err(|_| invalid(format!("bad pkt-line header {text:?}")))?;
        match len {
            0 => Ok(false),
            1..=4 => Err(invalid(format!("unsupported pkt-line length {len}"))),
            _ if len - 4 > MAX_DATA => Err(invalid(format!("pkt-line of {len} bytes is too long"))),
            _ => {
                self.remaining = len - 4;
                Ok(true)
            }
        }
    }
}

impl<R: Read + ?Sized> Read for PacketReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.remaining == 0 {
            if self.done || !self.next_packet()? {
                self.done = true;
                return Ok(0);
            }
        }
        let want = out.len().min(self.remaining);
        let n = loop {
            match self.inner.read(&mut out[..want]) {
                Ok(0) => return Err(invalid("end of stream inside a pkt-line".into())),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.remaining -= n;
        Ok(n)
    }
}

/// `Write` that frames its bytes as full-size data packets. Call [`PacketWriter::finish`]
/// to send the last partial packet (the caller writes the flush).
pub struct PacketWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> PacketWriter<W> {
    pub fn new(inner: W) -> Self {
        PacketWriter {
            inner,
            buf: Vec::with_capacity(MAX_DATA),
        }
    }

    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            write_data(&mut self.inner, &self.buf)?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for PacketWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (MAX_DATA - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == MAX_DATA {
                write_data(&mut self.inner, &self.buf)?;
                self.buf.clear();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Packets are sent whole; flushing the stream is the caller's business.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_and_round_trip() {
        let mut out = Vec::new();
        write_text(&mut out, "git-filter-server").unwrap();
        write_flush(&mut out).unwrap();
        assert_eq!(out, b"0016git-filter-server\n0000");
        let mut r = &out[..];
        assert_eq!(
            read_text_list(&mut r).unwrap().unwrap(),
            vec!["git-filter-server"]
        );
        assert_eq!(read_text_list(&mut r).unwrap(), None);
    }

    #[test]
    fn large_content_is_split() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PacketWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let mut out = w.finish().unwrap();
        write_flush(&mut out).unwrap();
        assert_eq!(&out[..4], b"fff0");
        let mut r = &out[..];
        let mut back = Vec::new();
        PacketReader::new(&mut r).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn hostile_headers() {
        for bad in [&b"zzzz"[..], b"0003", b"fff1", b"00"] {
            let mut r = bad;
            assert!(read_packet(&mut r).is_err(), "{bad:?}");
        }
        let mut r = &b"0009abc"[..];
        assert!(read_packet(&mut r).is_err(), "truncated data");
    }
}
