//! Content-defined chunking with a gear rolling hash.
//!
//! The hash is `h = (h << 1) + GEAR[byte]`, so it depends only on the last 64 bytes. A chunk
//! ends after byte `i` when it is at least `min_size` long and the top `mask_bits` bits of
//! `h` are zero, or when it reaches `max_size`. Hashing starts 64 bytes before `min_size`
//! (earlier bytes cannot influence a cut), which skips most of the work in short chunks.
//!
//! [`Chunker`] is push-style: feed it bytes, it answers where the current chunk ends. It
//! keeps no data, so a caller decides how to buffer. The parameters are part of the format
//! (recorded as [`ChunkParams::version`] in every recipe) and never tuned globally.
//!
//! [`ChunkHasher`] (push) and [`chunk_ids`] (pull, over a reader) are the one streaming
//! "bytes → chunk ids and lengths" helper: the cuts of [`Chunker`], each chunk named by
//! its [`ChunkId`], without keeping the bytes. Callers that must also keep a chunk's bytes
//! (to pack them) use [`Chunker`] directly; the local store's ingest is the parallel form
//! of the same cuts ([`cut_candidates`], [`select_cuts`]).

use std::collections::VecDeque;
use std::io::{self, Read};

use crate::id::ChunkId;
use crate::recipe::RecipeChunk;

/// Parameters of the chunker. Version 1 is the only one defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    pub version: u32,
    pub min_size: usize,
    pub max_size: usize,
    /// A cut needs the top `mask_bits` bits of the hash to be zero: the expected distance
    /// between candidate cuts is `2^mask_bits` bytes.
    pub mask_bits: u32,
}

impl ChunkParams {
    /// Version 1: min 8 KiB, target 64 KiB, max 128 KiB.
    pub const V1: ChunkParams = ChunkParams {
        version: 1,
        min_size: 8 * 1024,
        max_size: 128 * 1024,
        mask_bits: 16,
    };

    /// Version 2, for text and tables (CSV, JSON Lines…), where edits are small and
    /// scattered: min 2 KiB, target 8 KiB, max 16 KiB. Smaller chunks keep far fewer
    /// unchanged bytes around each edit, and text compresses well enough that the extra
    /// per-chunk overhead does not show.
    pub const V2_TEXT: ChunkParams = ChunkParams {
        version: 2,
        min_size: 2 * 1024,
        max_size: 16 * 1024,
        mask_bits: 13,
    };

    pub fn by_version(version: u32) -> Option<ChunkParams> {
        match version {
            1 => Some(Self::V1),
            2 => Some(Self::V2_TEXT),
            _ => None,
        }
    }

    /// The parameters for a file, by its name: [`ChunkParams::V2_TEXT`] for text and
    /// table formats, [`ChunkParams::V1`] for everything else (model weights).
    pub fn for_path(path: &str) -> ChunkParams {
        let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some(
                "csv" | "tsv" | "jsonl" | "ndjson" | "json" | "txt" | "md" | "xml" | "yaml" | "yml"
                | "sql" | "log",
            ) => Self::V2_TEXT,
            _ => Self::V1,
        }
    }

    fn mask(&self) -> u64 {
        !(u64::MAX >> self.mask_bits)
    }
}

/// SplitMix64, used once to derive the gear table from a fixed seed.
const fn splitmix64(state: u64) -> (u64, u64) {
    let state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (state, z ^ (z >> 31))
}

/// Seed of the gear table: the ASCII bytes "gitmodel" read as a little-endian u64.
pub const GEAR_SEED: u64 = u64::from_le_bytes(*b"gitmodel");

/// 256 pseudo-random 64-bit values, one per byte value.
pub const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state = GEAR_SEED;
    let mut i = 0;
    while i < 256 {
        let (next, value) = splitmix64(state);
        state = next;
        table[i] = value;
        i += 1;
    }
    table
};

/// Push-style chunker: [`Chunker::next_boundary`] over successive slices of a stream.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkParams,
    mask: u64,
    hash: u64,
    /// Bytes of the current chunk seen so far.
    len: usize,
}

impl Chunker {
    pub fn new(params: ChunkParams) -> Self {
        assert!(params.min_size >= 64 && params.min_size < params.max_size);
        Chunker {
            params,
            mask: params.mask(),
            hash: 0,
            len: 0,
        }
    }

    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Consumes bytes of `data` until the current chunk ends, returning the number of bytes
    /// of `data` that belong to it; `None` means all of `data` belongs to the current chunk
    /// and it has not ended yet. At end of stream, whatever was fed since the last boundary
    /// is the final chunk.
    pub fn next_boundary(&mut self, data: &[u8]) -> Option<usize> {
        let min_size = self.params.min_size;
        let mut i = 0;
        // Bytes that cannot influence a cut: skipped without hashing.
        let warm_start = min_size - 64;
        if self.len < warm_start {
            let skip = (warm_start - self.len).min(data.len());
            self.len += skip;
            i = skip;
        }
        // Hash without testing until the byte that brings the chunk to min_size.
        let mut hash = self.hash;
        if self.len < min_size - 1 {
            let n = (min_size - 1 - self.len).min(data.len() - i);
            for &b in &data[i..i + n] {
                hash = (hash << 1).wrapping_add(GEAR[b as usize]);
            }
            self.len += n;
            i += n;
        }
        // Every further byte may end the chunk, up to the forced cut at max_size.
        let n = (self.params.max_size - self.len).min(data.len() - i);
        let mask = self.mask;
        for (k, &b) in data[i..i + n].iter().enumerate() {
            hash = (hash << 1).wrapping_add(GEAR[b as usize]);
            if hash & mask == 0 {
                self.reset();
                return Some(i + k + 1);
            }
        }
        self.len += n;
        i += n;
        if self.len >= self.params.max_size {
            self.reset();
            return Some(i);
        }
        self.hash = hash;
        None
    }

    fn reset(&mut self) {
        self.hash = 0;
        self.len = 0;
    }
}

/// Cut candidates in a buffer that starts at a chunk boundary: every end offset `e` in
/// `from..=data.len()` (with `from >= 64`) where the gear hash of the 64 bytes before `e`
/// passes the mask. The gear hash at a position depends only on those 64 bytes (older
/// bytes are shifted out), so candidates need no history and [`select_cuts`] turns them
/// into exactly the cuts of [`Chunker`]. The scan runs four independent hash chains side
/// by side (one per quarter of the range): the loop is bound by the latency of one chain,
/// and four of them keep the core busy about four times as much.
pub fn cut_candidates(params: ChunkParams, data: &[u8], from: usize) -> Vec<usize> {
    assert!(from >= 64, "a candidate needs 64 bytes before it");
    let mask = params.mask();
    let mut out = Vec::new();
    if from > data.len() {
        return out;
    }
    // Positions p = e - 1 of the last byte; p in [from - 1, data.len()).
    let start = from - 1;
    let span = data.len() - start;
    let lane = span / 4;
    let warm = |p: usize| -> u64 {
        data[p - 63..p]
            .iter()
            .fold(0u64, |h, &b| (h << 1).wrapping_add(GEAR[b as usize]))
    };
    let starts = [start, start + lane, start + 2 * lane, start + 3 * lane];
    let [mut h0, mut h1, mut h2, mut h3] = starts.map(warm);
    let mut found: [Vec<usize>; 4] = Default::default();
    let q = |j: usize| &data[starts[j]..starts[j] + lane];
    for (k, (((&b0, &b1), &b2), &b3)) in q(0).iter().zip(q(1)).zip(q(2)).zip(q(3)).enumerate() {
        h0 = (h0 << 1).wrapping_add(GEAR[b0 as usize]);
        h1 = (h1 << 1).wrapping_add(GEAR[b1 as usize]);
        h2 = (h2 << 1).wrapping_add(GEAR[b2 as usize]);
        h3 = (h3 << 1).wrapping_add(GEAR[b3 as usize]);
        if ((h0 & mask) == 0) | ((h1 & mask) == 0) | ((h2 & mask) == 0) | ((h3 & mask) == 0) {
            for (j, h) in [h0, h1, h2, h3].into_iter().enumerate() {
                if h & mask == 0 {
                    found[j].push(starts[j] + k + 1);
                }
            }
        }
    }
    let h = [h0, h1, h2, h3];
    // The rest of the last quarter (span not divisible by four).
    let mut last = h[3];
    for (p, &b) in data.iter().enumerate().skip(start + 4 * lane) {
        last = (last << 1).wrapping_add(GEAR[b as usize]);
        if last & mask == 0 {
            found[3].push(p + 1);
        }
    }
    for f in found {
        out.extend(f);
    }
    out
}

/// The cuts of a buffer starting at a chunk boundary, from its [`cut_candidates`] (with
/// `from <= params.min_size`): end offsets of every chunk that ends inside `data`. With
/// `at_end`, the rest after the last cut is a final chunk; otherwise it is left over
/// (shorter than `max_size`) for the caller to carry into the next buffer.
pub fn select_cuts(
    params: ChunkParams,
    candidates: &[usize],
    len: usize,
    at_end: bool,
) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut start = 0;
    for &e in candidates {
        while e - start > params.max_size {
            start += params.max_size;
            cuts.push(start);
        }
        if e - start >= params.min_size {
            cuts.push(e);
            start = e;
        }
    }
    while len - start >= params.max_size {
        start += params.max_size;
        cuts.push(start);
    }
    if at_end && start < len {
        cuts.push(len);
    }
    cuts
}

/// Chunk boundaries of a whole in-memory buffer: the end offset of every chunk.
pub fn boundaries(params: ChunkParams, data: &[u8]) -> Vec<usize> {
    let mut chunker = Chunker::new(params);
    let mut out = Vec::with_capacity(data.len() / (64 * 1024) + 1);
    let mut pos = 0;
    while pos < data.len() {
        match chunker.next_boundary(&data[pos..]) {
            Some(n) => {
                pos += n;
                out.push(pos);
            }
            None => {
                out.push(data.len());
                break;
            }
        }
    }
    out
}

/// Push-style chunk-and-hash: [`ChunkHasher::update`] with successive slices of a stream
/// reports every chunk that ends in them, as its id and length; [`ChunkHasher::finish`]
/// reports the final one. The chunks are exactly those of [`Chunker`] (and [`boundaries`])
/// on the same bytes, however the stream is sliced; ids are [`ChunkId::of`] the chunk's
/// bytes. Keeps no data: the id is hashed as the bytes go by.
#[derive(Debug, Clone)]
pub struct ChunkHasher {
    chunker: Chunker,
    hasher: blake3::Hasher,
    /// Bytes of the current chunk fed so far.
    len: usize,
}

impl ChunkHasher {
    pub fn new(params: ChunkParams) -> Self {
        ChunkHasher {
            chunker: Chunker::new(params),
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }

    pub fn params(&self) -> ChunkParams {
        self.chunker.params()
    }

    /// Feeds `data`; calls `chunk` with every chunk that ends inside it, in order.
    pub fn update(&mut self, mut data: &[u8], mut chunk: impl FnMut(RecipeChunk)) {
        while !data.is_empty() {
            match self.chunker.next_boundary(data) {
                Some(n) => {
                    self.hasher.update(&data[..n]);
                    chunk(self.take(self.len + n));
                    data = &data[n..];
                }
                None => {
                    self.hasher.update(data);
                    self.len += data.len();
                    return;
                }
            }
        }
    }

    /// Ends the stream: the bytes fed since the last boundary, if any, are the last chunk.
    pub fn finish(mut self) -> Option<RecipeChunk> {
        (self.len > 0).then(|| self.take(self.len))
    }

    /// The current chunk, `len` bytes long, is complete: name it and start the next.
    fn take(&mut self, len: usize) -> RecipeChunk {
        let id = ChunkId(*self.hasher.finalize().as_bytes());
        self.hasher.reset();
        self.len = 0;
        RecipeChunk {
            id,
            // A chunk is at most `max_size` bytes (checked by `Chunker::new` to be small).
            raw_len: len as u32,
        }
    }
}

/// Bytes read per call of [`Read::read`] by [`chunk_ids`].
const READ_BYTES: usize = 1 << 20;

/// The chunks of everything `reader` yields, as ids and lengths, in order: the pull form
/// of [`ChunkHasher`]. A read error ends the iteration with that error.
pub fn chunk_ids<R: Read>(params: ChunkParams, reader: R) -> ChunkIds<R> {
    ChunkIds {
        reader,
        hasher: Some(ChunkHasher::new(params)),
        buf: Vec::new(),
        ready: VecDeque::new(),
    }
}

/// The iterator of [`chunk_ids`].
#[derive(Debug)]
pub struct ChunkIds<R> {
    reader: R,
    /// `None` once the reader is exhausted (or failed).
    hasher: Option<ChunkHasher>,
    buf: Vec<u8>,
    /// Chunks found in the last read, not yet returned.
    ready: VecDeque<RecipeChunk>,
}

impl<R: Read> Iterator for ChunkIds<R> {
    type Item = io::Result<RecipeChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some(Ok(chunk));
            }
            let hasher = self.hasher.as_mut()?;
            if self.buf.is_empty() {
                self.buf = vec![0u8; READ_BYTES];
            }
            match self.reader.read(&mut self.buf) {
                Ok(0) => return self.hasher.take().and_then(ChunkHasher::finish).map(Ok),
                Ok(n) => {
                    let ready = &mut self.ready;
                    hasher.update(&self.buf[..n], |c| ready.push_back(c));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.hasher = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;
    use rand::{RngCore, SeedableRng};

    fn seeded(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        data
    }

    #[test]
    fn gear_table_is_pinned() {
        assert_eq!(GEAR[0], 0x7FD5_BDD7_3565_3F68, "gear[0] = {:#X}", GEAR[0]);
        assert_eq!(
            GEAR[255], 0x8245_B583_8268_00F8,
            "gear[255] = {:#X}",
            GEAR[255]
        );
    }

    #[test]
    fn golden_boundaries_and_ids() {
        // 1 MiB of ChaCha8 output, seed 42: the cut points and chunk ids of format v1.
        let data = seeded(1 << 20, 42);
        let cuts = boundaries(ChunkParams::V1, &data);
        let ids: Vec<String> = cuts
            .iter()
            .scan(0, |start, &end| {
                let id = ChunkId::of(&data[*start..end]).to_hex();
                *start = end;
                Some(id[..16].to_string())
            })
            .collect();
        assert_eq!(cuts, GOLDEN_CUTS, "cuts changed: {cuts:?}");
        assert_eq!(ids[0], GOLDEN_FIRST_ID, "ids: {ids:?}");
    }

    const GOLDEN_CUTS: &[usize] = &[
        50939, 72035, 203107, 214600, 345672, 355419, 486491, 617563, 693074, 750924, 881996,
        910550, 943137, 993282, 1024351, 1048576,
    ];
    const GOLDEN_FIRST_ID: &str = "103b24326f1f8261";

    #[test]
    fn golden_text_boundaries() {
        let data = seeded(64 * 1024, 43);
        let cuts = boundaries(ChunkParams::V2_TEXT, &data);
        assert_eq!(cuts, GOLDEN_TEXT_CUTS, "cuts changed: {cuts:?}");
        let mut start = 0;
        for &end in &cuts[..cuts.len() - 1] {
            assert!((2048..=16384).contains(&(end - start)));
            start = end;
        }
        assert_eq!(
            ChunkParams::for_path("data/train.CSV"),
            ChunkParams::V2_TEXT
        );
        assert_eq!(ChunkParams::for_path("model.safetensors"), ChunkParams::V1);
        assert_eq!(ChunkParams::for_path("Makefile"), ChunkParams::V1);
    }

    const GOLDEN_TEXT_CUTS: &[usize] = &[3721, 7575, 9995, 26379, 39763, 56147, 65536];

    #[test]
    fn sizes_respect_limits_and_streaming_matches_whole() {
        let data = seeded(3 << 20, 7);
        let whole = boundaries(ChunkParams::V1, &data);
        let mut start = 0;
        for &end in &whole[..whole.len() - 1] {
            let n = end - start;
            assert!((8192..=131072).contains(&n), "chunk of {n} bytes");
            start = end;
        }
        // Feeding odd-sized slices gives the same cuts.
        let mut chunker = Chunker::new(ChunkParams::V1);
        let mut cuts = Vec::new();
        let mut consumed = 0;
        for piece in data.chunks(1237) {
            let mut off = 0;
            while let Some(n) = chunker.next_boundary(&piece[off..]) {
                off += n;
                cuts.push(consumed + off);
                if off == piece.len() {
                    break;
                }
            }
            consumed += piece.len();
        }
        if cuts.last() != Some(&data.len()) {
            cuts.push(data.len());
        }
        assert_eq!(cuts, whole);
    }

    #[test]
    fn candidate_scan_gives_the_chunker_cuts() {
        for (params, len, seed) in [
            (ChunkParams::V1, 3 << 20, 11),
            (ChunkParams::V2_TEXT, (1 << 20) + 3, 12),
            (ChunkParams::V1, 70_000, 13),
            (ChunkParams::V1, 100, 14),
        ] {
            let mut data = seeded(len, seed);
            // A long run of one byte: no candidates, forced max_size cuts.
            if len > 600_000 {
                data[200_000..600_000].fill(0);
            }
            let cands = cut_candidates(params, &data, params.min_size);
            let cuts = select_cuts(params, &cands, data.len(), true);
            assert_eq!(cuts, boundaries(params, &data), "{params:?} len {len}");
            // Without the end, the rest is shorter than max_size and not a cut.
            let open = select_cuts(params, &cands, data.len(), false);
            let last = open.last().copied().unwrap_or(0);
            assert!(data.len() - last < params.max_size);
            assert_eq!(open[..], cuts[..open.len()]);
        }
    }

    #[test]
    fn insertion_only_disturbs_nearby_chunks() {
        let data = seeded(4 << 20, 9);
        let mut edited = data[..1_000_000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1_000_000..]);
        let ids = |d: &[u8]| -> std::collections::HashSet<ChunkId> {
            let mut s = 0;
            boundaries(ChunkParams::V1, d)
                .into_iter()
                .map(|e| {
                    let id = ChunkId::of(&d[s..e]);
                    s = e;
                    id
                })
                .collect()
        };
        let a = ids(&data);
        let b = ids(&edited);
        let shared = a.intersection(&b).count();
        assert!(shared + 3 >= a.len(), "shared {shared} of {}", a.len());
    }

    /// The chunks of `data` by the whole-buffer [`boundaries`], as ids and lengths.
    fn by_boundaries(params: ChunkParams, data: &[u8]) -> Vec<RecipeChunk> {
        let mut start = 0;
        boundaries(params, data)
            .into_iter()
            .map(|end| {
                let c = RecipeChunk {
                    id: ChunkId::of(&data[start..end]),
                    raw_len: (end - start) as u32,
                };
                start = end;
                c
            })
            .collect()
    }

    /// A reader that hands out at most `step` bytes per read, with an interruption
    /// before each read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn chunk_ids_are_the_chunker_cuts_named_by_their_bytes() {
        // The golden input: the pinned cuts, ids the BLAKE3 of each chunk's bytes.
        let data = seeded(1 << 20, 42);
        let got: Vec<RecipeChunk> = chunk_ids(ChunkParams::V1, &data[..])
            .collect::<io::Result<_>>()
            .unwrap();
        let ends: Vec<usize> = got
            .iter()
            .scan(0, |end, c| {
                *end += c.raw_len as usize;
                Some(*end)
            })
            .collect();
        assert_eq!(ends, GOLDEN_CUTS);
        assert_eq!(got[0].id.to_hex()[..16], *GOLDEN_FIRST_ID);
        assert_eq!(got[1].id, ChunkId::of(&data[50939..72035]));
        assert_eq!(got, by_boundaries(ChunkParams::V1, &data));

        // Any slicing, both parameter sets, a tail shorter than min_size, a run of one
        // byte (forced max_size cuts): the same chunks, lengths summing to the input.
        for (params, len, seed) in [
            (ChunkParams::V1, (3 << 20) + 4321, 5),
            (ChunkParams::V2_TEXT, 300_007, 6),
        ] {
            let mut data = seeded(len, seed);
            data[100_000..500_000.min(len)].fill(7);
            let want = by_boundaries(params, &data);
            let sum: u64 = want.iter().map(|c| u64::from(c.raw_len)).sum();
            assert_eq!(sum, data.len() as u64);
            for step in [1, 1237, params.max_size, READ_BYTES + 1] {
                let reader = Trickle {
                    data: &data,
                    step,
                    interrupt: false,
                };
                let got: Vec<RecipeChunk> = chunk_ids(params, reader)
                    .collect::<io::Result<_>>()
                    .unwrap();
                assert_eq!(got, want, "{params:?} step {step}");
            }
            let mut push = ChunkHasher::new(params);
            let mut got = Vec::new();
            for piece in data.chunks(77_777) {
                push.update(piece, |c| got.push(c));
            }
            got.extend(push.finish());
            assert_eq!(got, want, "{params:?} pushed");
        }
    }

    #[test]
    fn chunk_ids_of_empty_and_short_inputs() {
        assert_eq!(chunk_ids(ChunkParams::V1, &b""[..]).count(), 0);
        assert_eq!(ChunkHasher::new(ChunkParams::V1).finish(), None);
        // Shorter than min_size: one chunk, the whole input.
        let short = seeded(ChunkParams::V1.min_size - 1, 8);
        let got: Vec<RecipeChunk> = chunk_ids(ChunkParams::V1, &short[..])
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(
            got,
            [RecipeChunk {
                id: ChunkId::of(&short),
                raw_len: short.len() as u32
            }]
        );
        let one: Vec<RecipeChunk> = chunk_ids(ChunkParams::V1, &b"x"[..])
            .map(Result::unwrap)
            .collect();
        assert_eq!(one[0].id, ChunkId::of(b"x"));
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn chunk_ids_stop_at_a_read_error() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = self.0.min(buf.len());
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        // 300 KiB of one byte: two forced max_size cuts, then the error, then nothing.
        let mut it = chunk_ids(ChunkParams::V1, Failing(300 << 10));
        assert_eq!(it.next().unwrap().unwrap().raw_len, 128 << 10);
        assert_eq!(it.next().unwrap().unwrap().raw_len, 128 << 10);
        let err = it.next().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert!(it.next().is_none());
    }
}
