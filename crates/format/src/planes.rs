//! Byte planes: the encoding that makes model weights compress.
//!
//! A tensor of bf16/f16 values (or f32) is a sequence of 2-byte (4-byte) words whose high
//! byte (sign and exponent) takes few values while the low bytes (mantissa) look random.
//! Interleaved, zstd sees noise with a little structure; split into planes (byte 0 of
//! every word, then byte 1, …) the exponent plane compresses well and the mantissa planes
//! can be stored as they are, without spending zstd's time on them.
//!
//! A chunk knows nothing of the tensors it cuts through, so the word width is chosen from
//! the bytes: the order-0 entropy of a sample, as a whole and split by position modulo 2
//! and 4. Text and other data whose structure is sequential keep plain zstd; data with no
//! structure at all is stored raw. Splitting by position within the chunk needs no
//! alignment: a chunk that starts inside a word gets the same planes in another order.
//!
//! ```text
//! stored   width u8 (2 or 4)
//!          per plane: codec u8 (0 raw, 1 zstd), stored_len u32 LE
//!          the planes' stored bytes, in plane order
//! ```
//! Plane `p` of a chunk of `n` bytes holds bytes `p, p + width, …`: `(n + width - 1 - p) /
//! width` of them.

/// Bytes sampled (from the middle of a chunk) to choose its encoding.
const SAMPLE_BYTES: usize = 8 * 1024;
/// Chunks shorter than this are not worth sampling: plain zstd.
pub const MIN_PLANES_CHUNK: usize = 4 * 1024;
/// Entropy (bits per byte) above which a plane or a chunk is taken for incompressible.
const NOISE_BITS: f64 = 7.9;
/// How much lower the planes' mean entropy must be than the whole sample's before
/// splitting pays for losing zstd's matches across positions.
const PLANES_GAIN_BITS: f64 = 0.25;

/// How to encode one chunk, from a sample of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Split into planes of this word width.
    Planes(usize),
    /// Plain zstd (text, structured data).
    Zstd,
    /// Looks like noise; zstd only if the sample itself compresses.
    Noise,
}

/// Order-0 entropy in bits per byte of a byte histogram.
fn entropy(hist: &[u32; 256]) -> f64 {
    let n: u64 = hist.iter().map(|&c| c as u64).sum();
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let q = c as f64 / n;
            -q * q.log2()
        })
        .sum()
}

/// The middle [`SAMPLE_BYTES`] of `raw`, starting at an offset that is a multiple of 4 so
/// that plane `p` of the sample is plane `p` of the chunk.
pub fn sample(raw: &[u8]) -> &[u8] {
    if raw.len() <= SAMPLE_BYTES {
        return raw;
    }
    let start = ((raw.len() - SAMPLE_BYTES) / 2) & !3;
    &raw[start..start + SAMPLE_BYTES]
}

/// Chooses how to encode a chunk whose [`sample`] is `sample`.
pub fn plan(sample: &[u8]) -> Plan {
    // One pass: a histogram per position modulo 4; the modulo-2 and whole-sample
    // histograms are sums of them.
    let mut h = [[0u32; 256]; 4];
    let mut words = sample.chunks_exact(4);
    for w in &mut words {
        h[0][w[0] as usize] += 1;
        h[1][w[1] as usize] += 1;
        h[2][w[2] as usize] += 1;
        h[3][w[3] as usize] += 1;
    }
    for (p, &b) in words.remainder().iter().enumerate() {
        h[p][b as usize] += 1;
    }
    let sum = |planes: &[usize]| {
        let mut out = [0u32; 256];
        for &p in planes {
            for (o, c) in out.iter_mut().zip(&h[p]) {
                *o += c;
            }
        }
        out
    };
    let whole = entropy(&sum(&[0, 1, 2, 3]));
    let two = (entropy(&sum(&[0, 2])) + entropy(&sum(&[1, 3]))) / 2.0;
    let four = h.iter().map(entropy).sum::<f64>() / 4.0;
    // Four planes of a sample are four times smaller than the whole: their entropy
    // estimates run lower by chance alone, so four must beat two by a margin too.
    let (width, planes) = if four + PLANES_GAIN_BITS / 2.0 < two {
        (4, four)
    } else {
        (2, two)
    };
    if planes + PLANES_GAIN_BITS < whole {
        Plan::Planes(width)
    } else if whole > NOISE_BITS {
        Plan::Noise
    } else {
        Plan::Zstd
    }
}

/// Whether a plane looks worth compressing (its sample's entropy is below noise).
pub fn compressible(plane: &[u8]) -> bool {
    let mut hist = [0u32; 256];
    for &b in sample(plane) {
        hist[b as usize] += 1;
    }
    entropy(&hist) <= NOISE_BITS
}

/// Length of plane `p` of `width` planes of a chunk of `n` bytes.
pub fn plane_len(n: usize, width: usize, p: usize) -> usize {
    (n + width - 1 - p) / width
}

/// Splits `raw` into `width` planes, concatenated in plane order into `out`.
pub fn split(raw: &[u8], width: usize, out: &mut Vec<u8>) {
    out.clear();
    out.resize(raw.len(), 0);
    let mut planes = plane_slices(out, width);
    let words = raw.chunks_exact(width);
    let tail = words.remainder();
    let whole = raw.len() / width;
    // Whole words first, one fixed-width loop per width (the compiler unrolls them).
    match planes.as_mut_slice() {
        [a, b] => {
            for (i, w) in words.enumerate() {
                a[i] = w[0];
                b[i] = w[1];
            }
        }
        [a, b, c, d] => {
            for (i, w) in words.enumerate() {
                a[i] = w[0];
                b[i] = w[1];
                c[i] = w[2];
                d[i] = w[3];
            }
        }
        _ => unreachable!("widths are 2 or 4"),
    }
    for (p, &byte) in tail.iter().enumerate() {
        planes[p][whole] = byte;
    }
}

/// Interleaves planes (as [`split`] made them, concatenated) back into `out`.
pub fn join(planes: &[u8], width: usize, out: &mut [u8]) {
    debug_assert_eq!(planes.len(), out.len());
    let n = out.len();
    let whole = n / width;
    let mut starts = [0usize; 4];
    for p in 1..width {
        starts[p] = starts[p - 1] + plane_len(n, width, p - 1);
    }
    let plane = |p: usize| &planes[starts[p]..starts[p] + plane_len(n, width, p)];
    let (words, tail) = out.split_at_mut(whole * width);
    match width {
        2 => {
            let (a, b) = (plane(0), plane(1));
            for (i, w) in words.chunks_exact_mut(2).enumerate() {
                w[0] = a[i];
                w[1] = b[i];
            }
        }
        4 => {
            let (a, b, c, d) = (plane(0), plane(1), plane(2), plane(3));
            for (i, w) in words.chunks_exact_mut(4).enumerate() {
                w[0] = a[i];
                w[1] = b[i];
                w[2] = c[i];
                w[3] = d[i];
            }
        }
        _ => unreachable!("widths are 2 or 4"),
    }
    for (p, byte) in tail.iter_mut().enumerate() {
        *byte = plane(p)[whole];
    }
}

/// `buf` cut into the `width` planes of a chunk of its length.
fn plane_slices(buf: &mut [u8], width: usize) -> Vec<&mut [u8]> {
    let n = buf.len();
    let mut rest = buf;
    let mut out = Vec::with_capacity(width);
    for p in 0..width {
        let (plane, r) = rest.split_at_mut(plane_len(n, width, p));
        out.push(plane);
        rest = r;
    }
    out
}

/// Length of the stored header for `width` planes.
pub fn header_len(width: usize) -> usize {
    1 + 5 * width
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic noise.
    fn noise(len: usize, mut s: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33) as u8
            })
            .collect()
    }

    /// bf16-like words: a random mantissa byte, an exponent byte from a narrow range.
    pub(crate) fn bf16_like(len: usize, seed: u64) -> Vec<u8> {
        let n = noise(len, seed);
        n.chunks(2)
            .flat_map(|w| {
                let lo = w[0];
                let hi = 0x3c + (w.get(1).copied().unwrap_or(0) % 4);
                [lo, hi]
            })
            .take(len)
            .collect()
    }

    #[test]
    fn split_and_join_are_inverse_for_every_length_and_width() {
        for width in [2, 4] {
            for len in [0, 1, 2, 3, 5, 8, 63, 64, 1001] {
                let raw = noise(len, len as u64);
                let mut planes = Vec::new();
                split(&raw, width, &mut planes);
                assert_eq!(planes.len(), raw.len());
                assert_eq!(plane_len(len, width, 0), raw.iter().step_by(width).count());
                let mut back = vec![0u8; len];
                join(&planes, width, &mut back);
                assert_eq!(back, raw, "width {width}, len {len}");
            }
        }
        let mut planes = Vec::new();
        split(&[1, 2, 3, 4, 5], 2, &mut planes);
        assert_eq!(planes, [1, 3, 5, 2, 4]);
    }

    #[test]
    fn plans_follow_the_content() {
        assert_eq!(plan(sample(&bf16_like(64 << 10, 1))), Plan::Planes(2));
        let f32_like: Vec<u8> = noise(64 << 10, 2)
            .chunks(4)
            .flat_map(|w| [w[0], w[1], 0x80 | (w[2] & 1), 0x3f])
            .collect();
        assert_eq!(plan(sample(&f32_like)), Plan::Planes(4));
        assert_eq!(plan(sample(&noise(64 << 10, 3))), Plan::Noise);
        let text: Vec<u8> = (0..4000)
            .flat_map(|i| format!("{i},row {},{}.{}\n", i * 7, i % 13, i % 97).into_bytes())
            .collect();
        assert_eq!(plan(sample(&text)), Plan::Zstd);
        assert!(compressible(&[7u8; 1000]));
        assert!(!compressible(&noise(1 << 14, 4)));
    }
}
