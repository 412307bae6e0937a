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
}
