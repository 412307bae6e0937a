//! Packs: many chunks in one object, each compressed with zstd or stored raw.
//!
//! ```text
//! header   16 B   magic "GMPACK\r\n", version u32 = 1, reserved u32 = 0
//! records  per chunk: id [32], raw_len u32, stored_len u32, codec u8, reserved [7] = 0,
//!                     then stored_len bytes of data
//! index    per chunk: id [32], offset u64 (of its record), raw_len u32, stored_len u32,
//!                     codec u8, reserved [7] = 0
//! trailer  24 B   index_offset u64, chunk_count u32, reserved u32 = 0, magic "GMPKIDX\n"
//! ```
//! Integers are little-endian. A pack's id is the BLAKE3 of all its bytes. The footer index
//! lets a reader find any chunk with one range read; the record headers make any range of
//! consecutive records self-describing and verifiable on its own. Nothing here trusts its
//! input: every length is bounded and every chunk is checked against its id on decode
//! (except through [`decode_chunk_unhashed`], for callers that check every byte otherwise).

use crate::id::{ChunkId, PackId};
use crate::planes;

pub const PACK_MAGIC: &[u8; 8] = b"GMPACK\r\n";
pub const TRAILER_MAGIC: &[u8; 8] = b"GMPKIDX\n";
pub const PACK_VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = 48;
pub const INDEX_ENTRY_LEN: u64 = 56;
pub const TRAILER_LEN: u64 = 24;
/// Largest pack accepted, index and trailer included.
pub const MAX_PACK_BYTES: u64 = 64 * 1024 * 1024;
/// Largest raw chunk a record may declare. Bounds decompression (no zstd bombs).
pub const MAX_CHUNK_BYTES: u32 = 1024 * 1024;
/// zstd level used for new chunks: level 1 is near the machine's limit in speed and loses
/// little ratio on model weights against the default level 3.
pub const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
    /// Split into byte planes, each zstd or raw ([`crate::planes`]).
    Planes = 2,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Planes),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack is {len} bytes, more than the limit of {MAX_PACK_BYTES}")]
    TooLarge { len: u64 },
    #[error("pack is malformed: {what}")]
    Malformed { what: String },
    #[error("chunk {id} is corrupt: {what}")]
    CorruptChunk { id: ChunkId, what: String },
    #[error("pack bytes hash to {actual}, not the claimed {claimed}")]
    IdMismatch { claimed: PackId, actual: PackId },
}

fn malformed(what: impl Into<String>) -> PackError {
    PackError::Malformed { what: what.into() }
}

/// Where one chunk is in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Offset of the record (its header) from the start of the pack.
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub codec: Codec,
}

impl PackEntry {
    /// Bytes of the record, header included.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN + self.stored_len as u64
    }

    fn write_fields(&self, out: &mut Vec<u8>, with_offset: bool) {
        out.extend_from_slice(self.id.as_bytes());
        if with_offset {
            out.extend_from_slice(&self.offset.to_le_bytes());
        }
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.push(self.codec as u8);
        out.extend_from_slice(&[0u8; 7]);
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

thread_local! {
    // zstd contexts are costly to set up; one per thread is reused for every chunk.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static PLANE_COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd level for byte planes: the fastest match search, with entropy coding of literals
/// forced on (fast levels turn it off). A plane has few repeats worth a match and gains
/// everything from entropy coding: on bf16 exponent planes this is 2.4× faster than level
/// 1 and compresses 5 % better.
const PLANE_ZSTD_LEVEL: i32 = -100;

fn zstd_compress(raw: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        c.as_mut().and_then(|c| c.compress(raw).ok())
    })
}

fn zstd_compress_plane(plane: &[u8]) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{CParameter, ParamSwitch};
    PLANE_COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            let mut z = zstd::bulk::Compressor::new(PLANE_ZSTD_LEVEL).ok()?;
            z.set_parameter(CParameter::LiteralCompressionMode(ParamSwitch::Enable))
                .ok()?;
            *c = Some(z);
        }
        c.as_mut().and_then(|c| c.compress(plane).ok())
    })
}

/// Compresses a chunk the way its content calls for ([`planes::plan`]): byte planes for
/// numeric words (model weights), plain zstd for the rest, nothing for noise; kept raw
/// whenever the encoding would not make it smaller.
pub fn encode_chunk(raw: &[u8]) -> (Codec, Vec<u8>) {
    let plan = if raw.len() < planes::MIN_PLANES_CHUNK {
        planes::Plan::Zstd
    } else {
        planes::plan(planes::sample(raw))
    };
    let encoded = match plan {
        planes::Plan::Planes(width) => Some((Codec::Planes, encode_planes(raw, width))),
        planes::Plan::Noise
            if zstd_compress(planes::sample(raw))
                .is_none_or(|z| z.len() >= planes::sample(raw).len()) =>
        {
            None
        }
        planes::Plan::Noise | planes::Plan::Zstd => {
            zstd_compress(raw).map(|stored| (Codec::Zstd, stored))
        }
    };
    match encoded {
        Some((codec, stored)) if stored.len() < raw.len() => (codec, stored),
        _ => (Codec::Raw, raw.to_vec()),
    }
}

/// The [`Codec::Planes`] encoding of `raw` (layout in [`planes`]).
fn encode_planes(raw: &[u8], width: usize) -> Vec<u8> {
    let mut split = Vec::new();
    planes::split(raw, width, &mut split);
    let header = planes::header_len(width);
    let mut out = vec![0u8; header];
    out[0] = width as u8;
    let mut at = 0;
    for p in 0..width {
        let plane = &split[at..at + planes::plane_len(raw.len(), width, p)];
        at += plane.len();
        let z = planes::compressible(plane)
            .then(|| zstd_compress_plane(plane))
            .flatten()
            .filter(|z| z.len() < plane.len());
        let (codec, stored) = match &z {
            Some(z) => (Codec::Zstd, z.as_slice()),
            None => (Codec::Raw, plane),
        };
        out[1 + 5 * p] = codec as u8;
        out[2 + 5 * p..6 + 5 * p].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        out.extend_from_slice(stored);
    }
    out
}

/// Decodes a [`Codec::Planes`] chunk of `raw_len` bytes.
fn decode_planes(stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let width = *stored.first().ok_or("no plane header")? as usize;
    if width != 2 && width != 4 {
        return Err(format!("{width} planes"));
    }
    let header = planes::header_len(width);
    if stored.len() < header {
        return Err("truncated plane header".into());
    }
    let mut split = Vec::with_capacity(raw_len);
    let mut at = header;
    for p in 0..width {
        let codec = stored[1 + 5 * p];
        let len = u32_at(stored, 2 + 5 * p) as usize;
        let data = stored
            .get(at..at.saturating_add(len))
            .ok_or_else(|| format!("plane {p} runs past the record"))?;
        at += len;
        let want = planes::plane_len(raw_len, width, p);
        let before = split.len();
        match Codec::from_u8(codec) {
            Some(Codec::Raw) => split.extend_from_slice(data),
            Some(Codec::Zstd) => {
                split.resize(before + want, 0);
                let n = zstd_decompress_into(data, &mut split[before..])
                    .map_err(|e| format!("plane {p}: zstd: {e}"))?;
                split.truncate(before + n);
            }
            _ => return Err(format!("plane {p} has codec {codec}")),
        }
        if split.len() - before != want {
            return Err(format!(
                "plane {p} has {} bytes where {want} were expected",
                split.len() - before
            ));
        }
    }
    if at != stored.len() {
        return Err(format!("{} bytes after the planes", stored.len() - at));
    }
    let mut raw = vec![0u8; raw_len];
    planes::join(&split, width, &mut raw);
    Ok(raw)
}

/// Runs `f` with this thread's zstd decompressor.
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        f(d.as_mut().expect("set above"))
    })
}

fn zstd_decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    with_decompressor(|d| d.decompress(stored, capacity))
}

fn zstd_decompress_into(stored: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    with_decompressor(|d| d.decompress_to_buffer(stored, out))
}

/// Decodes a stored chunk and checks it against its id and declared length.
pub fn decode_chunk(
    id: &ChunkId,
    codec: Codec,
    raw_len: u32,
    stored: &[u8],
) -> Result<Vec<u8>, PackError> {
    let raw = decode_chunk_unhashed(id, codec, raw_len, stored)?;
    let actual = ChunkId::of(&raw);
    if actual != *id {
        return Err(PackError::CorruptChunk {
            id: *id,
            what: format!("content hashes to {actual}"),
        });
    }
    Ok(raw)
}

/// [`decode_chunk`] without the check against the chunk's id (everything else is
/// checked: bounds, the encoding, the length). Only for a caller that verifies every
/// byte it gets by other means, e.g. the SHA-256 of the whole file they make.
pub fn decode_chunk_unhashed(
    id: &ChunkId,
    codec: Codec,
    raw_len: u32,
    stored: &[u8],
) -> Result<Vec<u8>, PackError> {
    let corrupt = |what: String| PackError::CorruptChunk { id: *id, what };
    if raw_len > MAX_CHUNK_BYTES {
        return Err(corrupt(format!("declares {raw_len} bytes")));
    }
    let raw = match codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => {
            zstd_decompress(stored, raw_len as usize).map_err(|e| corrupt(format!("zstd: {e}")))?
        }
        Codec::Planes => decode_planes(stored, raw_len as usize).map_err(corrupt)?,
    };
    if raw.len() != raw_len as usize {
        return Err(corrupt(format!(
            "{} bytes where {raw_len} were declared",
            raw.len()
        )));
    }
    Ok(raw)
}

/// A record read from a byte span: its header fields and stored bytes.
#[derive(Debug)]
pub struct Record<'a> {
    pub id: ChunkId,
    pub raw_len: u32,
    pub codec: Codec,
    pub stored: &'a [u8],
}

impl Record<'_> {
    pub fn decode(&self) -> Result<Vec<u8>, PackError> {
        decode_chunk(&self.id, self.codec, self.raw_len, self.stored)
    }

    /// See [`decode_chunk_unhashed`].
    pub fn decode_unhashed(&self) -> Result<Vec<u8>, PackError> {
        decode_chunk_unhashed(&self.id, self.codec, self.raw_len, self.stored)
    }
}

/// The length of the longest prefix of `span` made of whole records (a span cut short by
/// a crash ends with a partial one).
pub fn complete_records_len(span: &[u8]) -> usize {
    let mut at = 0usize;
    while span.len() - at >= RECORD_HEADER_LEN as usize {
        let end = at + RECORD_HEADER_LEN as usize + u32_at(&span[at..], 36) as usize;
        if end > span.len() {
            break;
        }
        at = end;
    }
    at
}

/// Splits a span of consecutive records (as read by one range request) into records.
pub fn parse_records(mut span: &[u8]) -> Result<Vec<Record<'_>>, PackError> {
    let mut out = Vec::new();
    while !span.is_empty() {
        if span.len() < RECORD_HEADER_LEN as usize {
            return Err(malformed("truncated record header"));
        }
        let id = ChunkId::from_slice(span).unwrap();
        let raw_len = u32_at(span, 32);
        let stored_len = u32_at(span, 36);
        let codec = Codec::from_u8(span[40]).ok_or_else(|| malformed("unknown codec"))?;
        if stored_len > raw_len || raw_len > MAX_CHUNK_BYTES {
            return Err(malformed(format!(
                "record {id} stores {stored_len} bytes for {raw_len}"
            )));
        }
        let end = RECORD_HEADER_LEN as usize + stored_len as usize;
        if span.len() < end {
            return Err(malformed(format!("record {id} truncated")));
        }
        out.push(Record {
            id,
            raw_len,
            codec,
            stored: &span[RECORD_HEADER_LEN as usize..end],
        });
        span = &span[end..];
    }
    Ok(out)
}

/// Size at which writers start a new pack: big enough that per-pack costs vanish, small
/// enough that a writer's memory stays modest. Readers accept up to [`MAX_PACK_BYTES`].
pub const TARGET_PACK_BYTES: u64 = 16 * 1024 * 1024;

/// Builds a pack in memory, up to [`TARGET_PACK_BYTES`].
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// The records so far: each entry with its stored bytes.
    pub fn records(&self) -> impl Iterator<Item = (&PackEntry, &[u8])> {
        self.entries.iter().map(|e| {
            let start = (e.offset + RECORD_HEADER_LEN) as usize;
            (e, &self.buf[start..start + e.stored_len as usize])
        })
    }

    /// The encoded records from the `first`th on, as they sit in the pack (each
    /// header and stored bytes): what [`parse_records`] reads back.
    pub fn records_from(&self, first: usize) -> &[u8] {
        match self.entries.get(first) {
            Some(e) => &self.buf[e.offset as usize..],
            None => &[],
        }
    }

    /// Size the pack would have if finished now.
    pub fn finished_len(&self) -> u64 {
        self.buf.len() as u64 + self.entries.len() as u64 * INDEX_ENTRY_LEN + TRAILER_LEN
    }

    /// Whether a record of `stored_len` bytes still fits under [`TARGET_PACK_BYTES`]
    /// (always true for the first record: a pack holds at least one chunk).
    pub fn fits(&self, stored_len: usize) -> bool {
        self.entries.is_empty()
            || self.finished_len() + RECORD_HEADER_LEN + INDEX_ENTRY_LEN + stored_len as u64
                <= TARGET_PACK_BYTES
    }

    /// Appends an already encoded chunk. The caller vouches that `stored` decodes to `id`.
    pub fn push(&mut self, id: ChunkId, raw_len: u32, codec: Codec, stored: &[u8]) -> PackEntry {
        let entry = PackEntry {
            id,
            offset: self.buf.len() as u64,
            raw_len,
            stored_len: stored.len() as u32,
            codec,
        };
        entry.write_fields(&mut self.buf, false);
        self.buf.extend_from_slice(stored);
        self.entries.push(entry);
        entry
    }

    /// Writes index and trailer; returns the pack's id, bytes and entries.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let index_offset = self.buf.len() as u64;
        for e in &self.entries {
            e.write_fields(&mut self.buf, true);
        }
        self.buf.extend_from_slice(&index_offset.to_le_bytes());
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.buf.extend_from_slice(TRAILER_MAGIC);
        let id = PackId::of(&self.buf);
        (id, self.buf, self.entries)
    }
}

/// Reads the trailer (the last [`TRAILER_LEN`] bytes of a pack of `pack_len` bytes):
/// returns the byte range of the index and the chunk count.
pub fn parse_trailer(trailer: &[u8], pack_len: u64) -> Result<(u64, u32), PackError> {
    if trailer.len() != TRAILER_LEN as usize || &trailer[16..24] != TRAILER_MAGIC {
        return Err(malformed("bad trailer magic"));
    }
    let index_offset = u64_at(trailer, 0);
    let count = u32_at(trailer, 8);
    let expected = index_offset
        .checked_add(count as u64 * INDEX_ENTRY_LEN + TRAILER_LEN)
        .ok_or_else(|| malformed("index offset overflows"))?;
    if expected != pack_len || index_offset < HEADER_LEN {
        return Err(malformed(format!(
            "trailer says index at {index_offset} with {count} entries, pack is {pack_len} bytes"
        )));
    }
    Ok((index_offset, count))
}

/// Parses and checks the index (bytes between `index_offset` and the trailer): records
/// must be contiguous from the header to the index.
pub fn parse_index(index: &[u8], index_offset: u64) -> Result<Vec<PackEntry>, PackError> {
    if !(index.len() as u64).is_multiple_of(INDEX_ENTRY_LEN) {
        return Err(malformed(
            "index length is not a multiple of the entry size",
        ));
    }
    let mut expected_offset = HEADER_LEN;
    let mut entries = Vec::with_capacity(index.len() / INDEX_ENTRY_LEN as usize);
    for raw in index.chunks_exact(INDEX_ENTRY_LEN as usize) {
        let entry = PackEntry {
            id: ChunkId::from_slice(raw).unwrap(),
            offset: u64_at(raw, 32),
            raw_len: u32_at(raw, 40),
            stored_len: u32_at(raw, 44),
            codec: Codec::from_u8(raw[48]).ok_or_else(|| malformed("unknown codec in index"))?,
        };
        if entry.offset != expected_offset
            || entry.stored_len > entry.raw_len
            || entry.raw_len > MAX_CHUNK_BYTES
        {
            return Err(malformed(format!(
                "index entry for {} is inconsistent",
                entry.id
            )));
        }
        expected_offset += entry.record_len();
        entries.push(entry);
    }
    if expected_offset != index_offset {
        return Err(malformed("records do not end where the index starts"));
    }
    Ok(entries)
}

/// Checks a whole pack: size, header, trailer, index, every record against the index, and
/// every chunk against its id. Returns the index entries. Used on every upload.
pub fn verify_pack(claimed: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>, PackError> {
    let len = bytes.len() as u64;
    if len > MAX_PACK_BYTES {
        return Err(PackError::TooLarge { len });
    }
    if len < HEADER_LEN + TRAILER_LEN
        || &bytes[..8] != PACK_MAGIC
        || u32_at(bytes, 8) != PACK_VERSION
    {
        return Err(malformed("bad header"));
    }
    let actual = PackId::of(bytes);
    if actual != *claimed {
        return Err(PackError::IdMismatch {
            claimed: *claimed,
            actual,
        });
    }
    let (index_offset, _) = parse_trailer(&bytes[(len - TRAILER_LEN) as usize..], len)?;
    let entries = parse_index(
        &bytes[index_offset as usize..(len - TRAILER_LEN) as usize],
        index_offset,
    )?;
    let records = parse_records(&bytes[HEADER_LEN as usize..index_offset as usize])?;
    if records.len() != entries.len() {
        return Err(malformed("record count differs from index"));
    }
    // Reserved bytes must be zero: otherwise one set of chunks could be uploaded as any
    // number of distinct packs (a distinct id per reserved value), each copy another
    // location for the server to index and search.
    let zero = |range: std::ops::Range<usize>| bytes[range].iter().all(|&b| b == 0);
    let index_start = index_offset as usize;
    let trailer_start = (len - TRAILER_LEN) as usize;
    let reserved_ok = zero(12..16)
        && zero(trailer_start + 12..trailer_start + 16)
        && entries.iter().enumerate().all(|(i, e)| {
            let record = e.offset as usize;
            let entry = index_start + i * INDEX_ENTRY_LEN as usize;
            zero(record + 41..record + 48) && zero(entry + 49..entry + 56)
        });
    if !reserved_ok {
        return Err(malformed("reserved bytes are not zero"));
    }
    for (rec, entry) in records.iter().zip(&entries) {
        if rec.id != entry.id
            || rec.raw_len != entry.raw_len
            || rec.codec != entry.codec
            || rec.stored.len() != entry.stored_len as usize
        {
            return Err(malformed(format!(
                "record {} differs from its index entry",
                rec.id
            )));
        }
        rec.decode()?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_pack() -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for raw in [&b"hello hello hello hello hello hello"[..], b"xyz"] {
            let (codec, stored) = encode_chunk(raw);
            b.push(ChunkId::of(raw), raw.len() as u32, codec, &stored);
        }
        b.finish()
    }

    #[test]
    fn nonzero_reserved_bytes_are_refused() {
        let (_, bytes, entries) = sample_pack();
        let index_offset = entries[1].offset as usize + entries[1].record_len() as usize;
        let trailer = bytes.len() - TRAILER_LEN as usize;
        for at in [
            13,
            entries[0].offset as usize + 45,
            index_offset + INDEX_ENTRY_LEN as usize + 50,
            trailer + 14,
        ] {
            let mut bad = bytes.clone();
            bad[at] = 1;
            let err = verify_pack(&PackId::of(&bad), &bad).unwrap_err();
            assert!(
                err.to_string().contains("reserved bytes"),
                "byte {at}: {err}"
            );
        }
    }

    #[test]
    fn golden_layout() {
        let (id, bytes, entries) = sample_pack();
        assert_eq!(entries[0].codec, Codec::Zstd);
        assert_eq!(entries[1].codec, Codec::Raw);
        assert_eq!(&bytes[..16], b"GMPACK\r\n\x01\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(&bytes[bytes.len() - 8..], b"GMPKIDX\n");
        assert_eq!(entries[0].offset, 16);
        assert_eq!(entries[1].offset, 16 + 48 + entries[0].stored_len as u64);
        assert_eq!(bytes.len(), GOLDEN_LEN, "len {}", bytes.len());
        assert_eq!(id.to_hex(), GOLDEN_ID);
        assert_eq!(verify_pack(&id, &bytes).unwrap(), entries);
    }

    const GOLDEN_LEN: usize = 272;
    const GOLDEN_ID: &str = "c04c7622744e7bf6fbd9a08967664db423bd37af3592ed37da50aa9707dc21de";

    #[test]
    fn rejects_tampering() {
        let (id, bytes, entries) = sample_pack();
        // Any flipped byte changes the pack id.
        let mut bad = bytes.clone();
        bad[70] ^= 1;
        assert!(matches!(
            verify_pack(&id, &bad),
            Err(PackError::IdMismatch { .. })
        ));
        // A corrupted chunk under a matching id is caught by the chunk hash.
        let stored_at = (entries[1].offset + RECORD_HEADER_LEN) as usize;
        bad = bytes.clone();
        bad[stored_at] ^= 1;
        let bad_id = PackId::of(&bad);
        assert!(matches!(
            verify_pack(&bad_id, &bad),
            Err(PackError::CorruptChunk { .. })
        ));
        // Truncation.
        let short = &bytes[..bytes.len() - 3];
        assert!(verify_pack(&PackId::of(short), short).is_err());
    }

    #[test]
    fn range_of_records_is_self_describing() {
        let (_, bytes, entries) = sample_pack();
        let span = &bytes
            [entries[0].offset as usize..(entries[1].offset + entries[1].record_len()) as usize];
        let recs = parse_records(span).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].decode().unwrap(), b"xyz");
    }

    #[test]
    fn zstd_bomb_is_bounded() {
        let raw = vec![0u8; 100_000];
        let (codec, stored) = encode_chunk(&raw);
        assert_eq!(codec, Codec::Zstd);
        let err = decode_chunk(&ChunkId::of(&raw), Codec::Zstd, 1000, &stored).unwrap_err();
        assert!(matches!(err, PackError::CorruptChunk { .. }), "{err}");
    }

    #[test]
    fn each_content_gets_its_codec_and_decodes_exactly() {
        let weights = crate::planes::tests::bf16_like(64 << 10, 9);
        let noise: Vec<u8> = (0..64u32 << 10)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ (i >> 7) as u8)
            .collect();
        let text: Vec<u8> = (0..3000)
            .flat_map(|i| format!("{i},{},label-{}\n", i * 31 % 1000, i % 7).into_bytes())
            .collect();
        for (raw, expect) in [
            (&weights[..], Codec::Planes),
            (&text[..], Codec::Zstd),
            (&weights[..1001], Codec::Zstd), // too short to sample
        ] {
            let (codec, stored) = encode_chunk(raw);
            assert_eq!(codec, expect);
            assert!(stored.len() < raw.len());
            let back = decode_chunk(&ChunkId::of(raw), codec, raw.len() as u32, &stored).unwrap();
            assert!(back == *raw);
        }
        let (codec, stored) = encode_chunk(&noise);
        assert!(
            decode_chunk(&ChunkId::of(&noise), codec, noise.len() as u32, &stored).unwrap()
                == noise
        );
        // Odd lengths keep every byte.
        let odd = &weights[..(40 << 10) + 3];
        let (codec, stored) = encode_chunk(odd);
        assert_eq!(codec, Codec::Planes);
        assert!(decode_chunk(&ChunkId::of(odd), codec, odd.len() as u32, &stored).unwrap() == odd);
    }

    #[test]
    fn damaged_planes_are_refused_by_name() {
        let raw = crate::planes::tests::bf16_like(32 << 10, 5);
        let id = ChunkId::of(&raw);
        let (codec, stored) = encode_chunk(&raw);
        assert_eq!(codec, Codec::Planes);
        let refuse = |bad: &[u8], len: u32| -> String {
            match decode_chunk(&id, Codec::Planes, len, bad) {
                Err(PackError::CorruptChunk { what, .. }) => what,
                other => panic!("accepted: {:?}", other.map(|v| v.len())),
            }
        };
        let mut bad = stored.clone();
        bad[0] = 3;
        assert_eq!(refuse(&bad, raw.len() as u32), "3 planes");
        bad = stored.clone();
        bad[1] = 9;
        assert_eq!(refuse(&bad, raw.len() as u32), "plane 0 has codec 9");
        bad = stored.clone();
        bad[2] = bad[2].wrapping_add(1);
        assert!(refuse(&bad, raw.len() as u32).starts_with("plane "));
        assert!(refuse(&stored[..4], raw.len() as u32).contains("truncated"));
        assert!(refuse(&stored, raw.len() as u32 - 2).contains("bytes where"));
        let mut extra = stored.clone();
        extra.push(0);
        assert_eq!(refuse(&extra, raw.len() as u32), "1 bytes after the planes");
        // A flipped byte inside a raw plane decodes, and the chunk hash catches it.
        assert_eq!(stored[1], Codec::Raw as u8, "the mantissa plane is noise");
        bad = stored.clone();
        bad[crate::planes::header_len(2) + 5] ^= 0x40;
        assert!(refuse(&bad, raw.len() as u32).starts_with("content hashes to"));
    }
}
