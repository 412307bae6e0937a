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
//! input: every length is bounded and every chunk is checked against its id on decode.

use crate::id::{ChunkId, PackId};

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
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
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
}

/// Compresses a chunk, keeping it raw when zstd does not make it smaller.
pub fn encode_chunk(raw: &[u8]) -> (Codec, Vec<u8>) {
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        c.as_mut().and_then(|c| c.compress(raw).ok())
    });
    match compressed {
        Some(z) if z.len() < raw.len() => (Codec::Zstd, z),
        _ => (Codec::Raw, raw.to_vec()),
    }
}

fn zstd_decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(stored, capacity)
    })
}

/// Decodes a stored chunk and checks it against its id and declared length.
pub fn decode_chunk(
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
    };
    if raw.len() != raw_len as usize {
        return Err(corrupt(format!(
            "{} bytes where {raw_len} were declared",
            raw.len()
        )));
    }
    let actual = ChunkId::of(&raw);
    if actual != *id {
        return Err(corrupt(format!("content hashes to {actual}")));
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
}
