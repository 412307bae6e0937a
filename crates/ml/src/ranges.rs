//! Byte ranges of a file mapped onto its chunk list (a recipe's chunks in file order).
//!
//! Chunks are named by the BLAKE3 of their bytes, so two files whose covering chunk
//! sequences for two ranges are equal, with the ranges at the same offset into the first
//! chunk and of the same length, hold the same bytes there: a diff need not read them.
//! Content-defined boundaries re-synchronise right after an edit, so a tensor away from
//! the edited ones is usually covered by the same chunks in both versions.

use std::ops::Range;

use gitmodel_format::{ChunkId, RecipeChunk};

/// Cumulative offsets of a file's chunks.
#[derive(Debug, Clone, Default)]
pub struct ChunkLayout {
    ids: Vec<ChunkId>,
    /// `starts[i]` is where chunk `i` begins; `starts[len]` is the file size.
    starts: Vec<u64>,
}

/// The chunks covering a byte range: indexes `first .. last` and where in chunk `first`
/// the range begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cover {
    pub first: usize,
    pub last: usize,
    pub skip: u64,
}

impl ChunkLayout {
    pub fn new(chunks: &[RecipeChunk]) -> ChunkLayout {
        let mut starts = Vec::with_capacity(chunks.len() + 1);
        let mut at = 0u64;
        for c in chunks {
            starts.push(at);
            at += c.raw_len as u64;
        }
        starts.push(at);
        ChunkLayout {
            ids: chunks.iter().map(|c| c.id).collect(),
            starts,
        }
    }

    pub fn size(&self) -> u64 {
        *self.starts.last().unwrap_or(&0)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, i: usize) -> ChunkId {
        self.ids[i]
    }

    /// Byte range of chunk `i`.
    pub fn chunk_range(&self, i: usize) -> Range<u64> {
        self.starts[i]..self.starts[i + 1]
    }

    /// Index of the chunk holding byte `offset` (`offset < size`).
    pub fn chunk_at(&self, offset: u64) -> usize {
        // starts is sorted; the chunk is the last start <= offset.
        self.starts.partition_point(|s| *s <= offset) - 1
    }

    /// The chunks covering `range` (clamped to the file); empty ranges cover nothing.
    pub fn cover(&self, range: Range<u64>) -> Cover {
        let end = range.end.min(self.size());
        if range.start >= end {
            return Cover {
                first: 0,
                last: 0,
                skip: 0,
            };
        }
        let first = self.chunk_at(range.start);
        let last = self.chunk_at(end - 1) + 1;
        Cover {
            first,
            last,
            skip: range.start - self.starts[first],
        }
    }

    /// Bytes of the chunks covering `range`: what reading it costs.
    pub fn cover_bytes(&self, range: Range<u64>) -> u64 {
        let c = self.cover(range);
        if c.first == c.last {
            0
        } else {
            self.starts[c.last] - self.starts[c.first]
        }
    }
}

/// Whether bytes `a_range` of file A equal bytes `b_range` of file B, judged from chunk
/// ids alone. `false` means "cannot tell without reading", not "different".
pub fn same_bytes(
    a: &ChunkLayout,
    a_range: Range<u64>,
    b: &ChunkLayout,
    b_range: Range<u64>,
) -> bool {
    if a_range.end - a_range.start != b_range.end - b_range.start
        || a_range.end > a.size()
        || b_range.end > b.size()
    {
        return false;
    }
    if a_range.start == a_range.end {
        return true;
    }
    let (ca, cb) = (a.cover(a_range), b.cover(b_range));
    ca.skip == cb.skip
        && ca.last - ca.first == cb.last - cb.first
        && a.ids[ca.first..ca.last] == b.ids[cb.first..cb.last]
}

/// Parts of two equally long ranges (as offsets relative to their starts) that chunk ids
/// do not prove equal. Chunks lying wholly inside both ranges, with the same id at the
/// same relative offset, are proven; the rest (typically a chunk straddling the edge of
/// an edited neighbour) must be read to know.
pub fn unproven(
    a: &ChunkLayout,
    a_range: Range<u64>,
    b: &ChunkLayout,
    b_range: Range<u64>,
) -> Vec<Range<u64>> {
    let len = a_range.end - a_range.start;
    if len != b_range.end - b_range.start || a_range.end > a.size() || b_range.end > b.size() {
        return std::iter::once(0..len).collect();
    }
    let inside = |l: &ChunkLayout, r: &Range<u64>| {
        let c = l.cover(r.clone());
        (c.first..c.last)
            .filter(|&i| {
                let cr = l.chunk_range(i);
                cr.start >= r.start && cr.end <= r.end
            })
            .map(|i| {
                let cr = l.chunk_range(i);
                (l.id(i), cr.start - r.start, cr.end - r.start)
            })
            .collect::<Vec<_>>()
    };
    let in_a: std::collections::HashSet<(ChunkId, u64, u64)> =
        inside(a, &a_range).into_iter().collect();
    // Proven intervals come out sorted: B's chunks are in file order.
    let mut out = Vec::new();
    let mut at = 0;
    for (id, from, to) in inside(b, &b_range) {
        if in_a.contains(&(id, from, to)) {
            if from > at {
                out.push(at..from);
            }
            at = to;
        }
    }
    if at < len {
        out.push(at..len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(spec: &[(u8, u32)]) -> ChunkLayout {
        let chunks: Vec<RecipeChunk> = spec
            .iter()
            .map(|(id, len)| RecipeChunk {
                id: ChunkId([*id; 32]),
                raw_len: *len,
            })
            .collect();
        ChunkLayout::new(&chunks)
    }

    #[test]
    fn cover_and_compare() {
        let a = layout(&[(1, 10), (2, 10), (3, 10)]);
        assert_eq!(a.size(), 30);
        assert_eq!(a.chunk_at(0), 0);
        assert_eq!(a.chunk_at(10), 1);
        assert_eq!(a.chunk_at(29), 2);
        assert_eq!(
            a.cover(5..15),
            Cover {
                first: 0,
                last: 2,
                skip: 5
            }
        );
        assert_eq!(
            a.cover(10..20),
            Cover {
                first: 1,
                last: 2,
                skip: 0
            }
        );
        assert_eq!(a.cover_bytes(12..13), 10);
        // B: chunk 1 changed and is longer; chunks 2 and 3 shifted by 4 bytes.
        let b = layout(&[(9, 14), (2, 10), (3, 10)]);
        assert!(same_bytes(&a, 10..30, &b, 14..34));
        assert!(same_bytes(&a, 12..15, &b, 16..19));
        assert!(!same_bytes(&a, 5..15, &b, 9..19), "covers a changed chunk");
        assert!(!same_bytes(&a, 10..20, &b, 10..20), "different offsets");
        assert!(!same_bytes(&a, 10..20, &b, 14..25), "different lengths");
        assert!(same_bytes(&a, 3..3, &b, 7..7));
        assert!(!same_bytes(&a, 25..35, &b, 25..35), "past the end");
        // Bytes 5..30 of A against 9..34 of B: chunks 2 and 3 line up, the start does not.
        let r = unproven(&a, 5..30, &b, 9..34);
        assert_eq!((r.len(), r[0].clone()), (1, 0..5));
        let r = unproven(&a, 0..30, &b, 0..30);
        assert_eq!((r.len(), r[0].clone()), (1, 0..30));
        assert_eq!(unproven(&a, 10..30, &b, 14..34), Vec::<Range<u64>>::new());
    }
}
