//! SHA-256 states at chunk boundaries of files this node has verified, so that verifying
//! a new version of a file resumes where its unchanged prefix ends.
//!
//! Registering a file means rebuilding it from its chunks and checking its SHA-256
//! ([`crate::register`]), and SHA-256 is sequential: without help, a model whose last
//! layers changed costs a full decompress-and-hash of every byte at each push. Yet the
//! hash state after a run of chunks depends only on those chunks' bytes, which their ids
//! (BLAKE3) pin. So after a file verifies, the node remembers the hash state after every
//! [`STRIDE`]th chunk, keyed by a fingerprint of the chunk ids (and lengths) before it;
//! a later file starting with the same chunks picks up the longest remembered prefix and
//! only fetches, decodes and hashes the rest.
//!
//! Nothing here is needed for correctness: the cache lives in memory (a stateless node
//! starts empty and simply hashes more), holds only states of files that verified in
//! full, and is bounded by two generations of [`GENERATION_ENTRIES`] entries.

use std::collections::HashMap;
use std::sync::Mutex;

use gitmodel_format::id::OidHasher;

pub use gitmodel_format::prefix::{fingerprints, Fingerprint, STRIDE};

/// Entries per generation (each about 200 bytes): two generations bound the cache at
/// roughly 50 MiB, the states of some 500 versions of a 500 MiB model.
pub const GENERATION_ENTRIES: usize = 128 * 1024;

#[derive(Default)]
struct Generations {
    current: HashMap<Fingerprint, OidHasher>,
    previous: HashMap<Fingerprint, OidHasher>,
}

/// The node's memory of verified prefix states.
#[derive(Default)]
pub struct PrefixStates {
    inner: Mutex<Generations>,
}

impl PrefixStates {
    /// The longest remembered prefix among `fps` (as from [`fingerprints`]): the number
    /// of chunks it covers and the hash state after them.
    pub fn longest(&self, fps: &[Fingerprint]) -> Option<(usize, OidHasher)> {
        let g = self.inner.lock().unwrap();
        fps.iter().enumerate().skip(1).rev().find_map(|(k, fp)| {
            g.current
                .get(fp)
                .or_else(|| g.previous.get(fp))
                .map(|h| (k * STRIDE, h.clone()))
        })
    }

    /// Remembers the states of a file that verified in full.
    pub fn remember(&self, states: Vec<(Fingerprint, OidHasher)>) {
        let mut g = self.inner.lock().unwrap();
        for (fp, h) in states {
            if g.current.len() >= GENERATION_ENTRIES {
                g.previous = std::mem::take(&mut g.current);
            }
            g.current.insert(fp, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitmodel_format::{ChunkId, RecipeChunk};

    fn chunk(n: u8) -> RecipeChunk {
        RecipeChunk {
            id: ChunkId::of(&[n]),
            raw_len: 1,
        }
    }

    #[test]
    fn finds_the_longest_shared_prefix_only() {
        let a: Vec<RecipeChunk> = (0..40).map(chunk).collect();
        let fa = fingerprints(&a);
        assert_eq!(fa.len(), 1 + 40 / STRIDE);
        let states = PrefixStates::default();
        let mut h = OidHasher::new();
        let mut remembered = Vec::new();
        for (k, fp) in fa.iter().enumerate().skip(1) {
            h.update(&[k as u8]);
            remembered.push((*fp, h.clone()));
        }
        states.remember(remembered);

        // Same first 20 chunks, then different: only the 16-chunk prefix is shared.
        let mut b = a.clone();
        b[20] = chunk(200);
        let (covered, state) = states.longest(&fingerprints(&b)).unwrap();
        assert_eq!(covered, STRIDE);
        assert_eq!(state.len(), 1);
        // A different length for the same id is a different prefix.
        let mut c = a.clone();
        c[0].raw_len = 2;
        assert!(states.longest(&fingerprints(&c)).is_none());
        // The same file: the longest prefix (32 chunks).
        assert_eq!(states.longest(&fa).unwrap().0, 2 * STRIDE);
    }

    #[test]
    fn bounded_by_two_generations() {
        let states = PrefixStates::default();
        let many: Vec<(Fingerprint, OidHasher)> = (0..GENERATION_ENTRIES * 2 + 10)
            .map(|i| {
                let mut fp = [0u8; 32];
                fp[..8].copy_from_slice(&(i as u64).to_le_bytes());
                (fp, OidHasher::new())
            })
            .collect();
        let first = many[0].0;
        let last = many[many.len() - 1].0;
        states.remember(many);
        let g = states.inner.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= 2 * GENERATION_ENTRIES);
        assert!(!g.current.contains_key(&first) && !g.previous.contains_key(&first));
        assert!(g.current.contains_key(&last));
    }
}
