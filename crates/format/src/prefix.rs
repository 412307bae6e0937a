//! SHA-256 states at chunk boundaries, so that hashing a new version of a file resumes
//! where the prefix it shares with an earlier version ends.
//!
//! SHA-256 is sequential, yet the hash state after a run of chunks depends only on those
//! chunks' bytes, which their ids (BLAKE3) and lengths pin. So after hashing a file one
//! keeps the state after every [`STRIDE`]th chunk, keyed by a [`Fingerprint`] of the
//! chunk ids before it; a later file whose chunks start the same way takes the state of
//! the longest such prefix instead of hashing those bytes again. The server does this
//! when it verifies uploads, the client when `git add` cleans a new version.
//!
//! [`ResumingHasher`] is the streaming form: chunks go in, in file order, and the bytes
//! of a run that may still match a known prefix are held (by reference, at most
//! [`STRIDE`] chunks) until its fingerprint is looked up. [`encode_states`] and
//! [`decode_states`] give a kept list of states a checksummed byte form.

use std::collections::HashMap;
use std::ops::Range;

use crate::id::OidHasher;
use crate::{ChunkId, Oid, RecipeChunk};

/// A state is kept after every `STRIDE`th chunk: at most this many chunks are hashed
/// again when a file diverges from a known prefix (about 1 MiB with 64 KiB chunks).
pub const STRIDE: usize = 16;

/// BLAKE3 over the chunk ids and lengths of a prefix, chained chunk by chunk.
pub type Fingerprint = [u8; 32];

/// Hash states by the fingerprint of the prefix they follow.
pub type States = HashMap<Fingerprint, OidHasher>;

/// The fingerprint of a growing prefix of chunks.
#[derive(Debug, Clone, Default)]
pub struct FingerprintChain {
    fp: Fingerprint,
    chunks: usize,
}

impl FingerprintChain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk; returns the prefix's fingerprint when the chunk count reaches
    /// a multiple of [`STRIDE`].
    pub fn push(&mut self, id: &ChunkId, raw_len: u32) -> Option<Fingerprint> {
        let mut h = blake3::Hasher::new();
        h.update(&self.fp);
        h.update(id.as_bytes());
        h.update(&raw_len.to_le_bytes());
        self.fp = *h.finalize().as_bytes();
        self.chunks += 1;
        self.chunks.is_multiple_of(STRIDE).then_some(self.fp)
    }
}

/// Fingerprints of a recipe's prefixes: element `k` covers chunks `0 .. k * STRIDE`
/// (element 0, the empty prefix, is all zeros).
pub fn fingerprints(chunks: &[RecipeChunk]) -> Vec<Fingerprint> {
    let mut chain = FingerprintChain::new();
    std::iter::once([0u8; 32])
        .chain(chunks.iter().filter_map(|c| chain.push(&c.id, c.raw_len)))
        .collect()
}

/// SHA-256 of a file fed chunk by chunk, resuming from `known` states where the file's
/// chunks so far match a prefix those states were kept for.
///
/// `B` owns the bytes a chunk is cut from (e.g. an `Arc` of a read block); while the
/// file may still follow a known prefix, chunks are held as `(owner, range)` and hashed
/// only if the next fingerprint turns out unknown.
pub struct ResumingHasher<B> {
    hasher: OidHasher,
    chain: FingerprintChain,
    known: States,
    /// Still on a known prefix (every fingerprint so far was in `known`).
    following: bool,
    pending: Vec<(B, Range<usize>)>,
    offset: u64,
    kept: Vec<(Fingerprint, OidHasher)>,
    hashed: u64,
}

impl<B: AsRef<[u8]>> ResumingHasher<B> {
    /// A hasher that may skip prefixes `known` has states for (none if it is empty).
    pub fn new(known: States) -> Self {
        ResumingHasher {
            hasher: OidHasher::new(),
            chain: FingerprintChain::new(),
            following: !known.is_empty(),
            known,
            pending: Vec::new(),
            offset: 0,
            kept: Vec::new(),
            hashed: 0,
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.hashed += bytes.len() as u64;
    }

    fn flush_pending(&mut self) {
        for (owner, range) in std::mem::take(&mut self.pending) {
            self.hasher.update(&owner.as_ref()[range.clone()]);
            self.hashed += range.len() as u64;
        }
    }

    /// Adds the next chunk of the file: bytes `range` of `owner`, whose id is `id`.
    pub fn chunk(&mut self, owner: B, range: Range<usize>, id: &ChunkId) {
        let len = range.len();
        if self.following {
            self.pending.push((owner, range));
        } else {
            self.hash(&owner.as_ref()[range]);
        }
        self.after_chunk(id, len);
    }

    /// Counts a chunk of `len` bytes just held or hashed: at a stride boundary, takes a
    /// known state (or stops following) and keeps the state.
    fn after_chunk(&mut self, id: &ChunkId, len: usize) {
        self.offset += len as u64;
        let Some(fp) = self.chain.push(id, len as u32) else {
            return;
        };
        if self.following {
            match self.known.get(&fp) {
                // A state for a different length cannot be this prefix's: ignore it.
                Some(state) if state.len() == self.offset => {
                    self.hasher = state.clone();
                    self.pending.clear();
                }
                _ => {
                    self.following = false;
                    self.flush_pending();
                }
            }
        }
        self.kept.push((fp, self.hasher.clone()));
    }

    /// The file's oid and size, the states to keep for its next version, and how many
    /// bytes were actually hashed.
    pub fn finish(mut self) -> (Oid, u64, Vec<(Fingerprint, OidHasher)>, u64) {
        self.flush_pending();
        let size = self.hasher.len();
        debug_assert_eq!(size, self.offset);
        (self.hasher.finish(), size, self.kept, self.hashed)
    }
}

impl ResumingHasher<Vec<u8>> {
    /// [`ResumingHasher::chunk`] for bytes the caller keeps: copied only while they may
    /// still be skipped, hashed at once otherwise.
    pub fn chunk_slice(&mut self, bytes: &[u8], id: &ChunkId) {
        if self.following {
            self.chunk(bytes.to_vec(), 0..bytes.len(), id);
        } else {
            self.hash(bytes);
            self.after_chunk(id, bytes.len());
        }
    }
}

const STATES_MAGIC: &[u8; 8] = b"GMSHAST1";
const ENTRY_LEN: usize = 32 + OidHasher::ENCODED_LEN;

/// The byte form of kept states: magic, count (u32 LE), entries (fingerprint, state),
/// and a BLAKE3 of everything before it.
pub fn encode_states(states: &[(Fingerprint, OidHasher)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + states.len() * ENTRY_LEN + 32);
    out.extend_from_slice(STATES_MAGIC);
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for (fp, h) in states {
        out.extend_from_slice(fp);
        out.extend_from_slice(&h.to_bytes());
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Parses [`encode_states`]' output; `None` if it is damaged in any way.
pub fn decode_states(bytes: &[u8]) -> Option<States> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let rest = body.strip_prefix(STATES_MAGIC)?;
    let (count, entries) = rest.split_at_checked(4)?;
    let count = u32::from_le_bytes(count.try_into().ok()?) as usize;
    if entries.len() != count.checked_mul(ENTRY_LEN)? {
        return None;
    }
    entries
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let (fp, state) = e.split_at(32);
            Some((fp.try_into().ok()?, OidHasher::from_bytes(state)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 11) as u8)
            .collect()
    }

    /// Feeds `bytes` cut every `step` bytes.
    fn feed(
        bytes: &Arc<[u8]>,
        step: usize,
        known: States,
    ) -> (Oid, u64, Vec<(Fingerprint, OidHasher)>, u64) {
        let mut h = ResumingHasher::new(known);
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            h.chunk(Arc::clone(bytes), at..end, &ChunkId::of(&bytes[at..end]));
            at = end;
        }
        h.finish()
    }

    #[test]
    fn resumes_from_the_shared_prefix_and_gets_the_same_oid() {
        let v1: Arc<[u8]> = data(100_000, 1).into();
        let (oid1, size1, kept, hashed1) = feed(&v1, 1000, States::new());
        assert_eq!((oid1, size1, hashed1), (Oid::of(&v1), 100_000, 100_000));
        assert_eq!(kept.len(), 100 / STRIDE);

        // The last 30 % changes: only the bytes after the last shared stride are hashed.
        let mut v2 = v1.to_vec();
        v2[70_500..].copy_from_slice(&data(29_500, 7));
        let v2: Arc<[u8]> = v2.into();
        let known: States = kept.into_iter().collect();
        let (oid2, size2, kept2, hashed2) = feed(&v2, 1000, known.clone());
        assert_eq!((oid2, size2), (Oid::of(&v2), 100_000));
        assert_eq!(
            hashed2,
            100_000 - 64_000,
            "resumes after 4 strides of 16 chunks"
        );
        assert_eq!(kept2.len(), 100 / STRIDE);

        // An edit in the first chunk: nothing is skipped, and the oid is still right.
        let mut v3 = v1.to_vec();
        v3[10] ^= 1;
        let v3: Arc<[u8]> = v3.into();
        let (oid3, _, _, hashed3) = feed(&v3, 1000, known.clone());
        assert_eq!((oid3, hashed3), (Oid::of(&v3), 100_000));

        // The same file again hashes only what follows the last stride.
        let (oid4, _, _, hashed4) = feed(&v1, 1000, known);
        assert_eq!((oid4, hashed4), (oid1, 100_000 - 96_000));
    }

    #[test]
    fn slices_resume_like_shared_blocks() {
        let v1: Arc<[u8]> = data(60_000, 2).into();
        let (_, _, kept, _) = feed(&v1, 1000, States::new());
        let mut v2 = v1.to_vec();
        v2[50_100] ^= 1;
        let mut h = ResumingHasher::<Vec<u8>>::new(kept.into_iter().collect());
        for piece in v2.chunks(1000) {
            h.chunk_slice(piece, &ChunkId::of(piece));
        }
        let (oid, size, _, hashed) = h.finish();
        assert_eq!((oid, size, hashed), (Oid::of(&v2), 60_000, 60_000 - 48_000));
    }

    #[test]
    fn a_state_of_the_wrong_length_is_ignored() {
        let v: Arc<[u8]> = data(40_000, 3).into();
        let (_, _, kept, _) = feed(&v, 1000, States::new());
        let mut known: States = kept.into_iter().collect();
        let mut short = OidHasher::new();
        short.update(b"x");
        for state in known.values_mut() {
            *state = short.clone();
        }
        let (oid, _, _, hashed) = feed(&v, 1000, known);
        assert_eq!((oid, hashed), (Oid::of(&v), 40_000));
    }

    #[test]
    fn fingerprints_match_the_chain() {
        let chunks: Vec<RecipeChunk> = (0..40u8)
            .map(|n| RecipeChunk {
                id: ChunkId::of(&[n]),
                raw_len: 1,
            })
            .collect();
        let fps = fingerprints(&chunks);
        assert_eq!(fps.len(), 1 + 40 / STRIDE);
        assert_eq!(fps[0], [0; 32]);
        let mut chain = FingerprintChain::new();
        let got: Vec<Fingerprint> = chunks
            .iter()
            .filter_map(|c| chain.push(&c.id, c.raw_len))
            .collect();
        assert_eq!(got, fps[1..]);
    }

    #[test]
    fn states_round_trip_and_damage_is_refused() {
        let v: Arc<[u8]> = data(50_000, 5).into();
        let (_, _, kept, _) = feed(&v, 777, States::new());
        let bytes = encode_states(&kept);
        let back = decode_states(&bytes).unwrap();
        assert_eq!(back.len(), kept.len());
        for (fp, h) in &kept {
            let got = &back[fp];
            assert_eq!(got.len(), h.len());
            assert_eq!(got.clone().finish(), h.clone().finish());
        }
        for i in [0, 9, 13, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_states(&bad).is_none(), "flip at {i}");
        }
        assert!(decode_states(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_states(b"").is_none());
        assert_eq!(decode_states(&encode_states(&[])).unwrap().len(), 0);
    }
}
