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
//! hashes only the rest.
//!
//! Nothing here is needed for correctness: the cache lives in memory (a stateless node
//! starts empty and simply hashes more), holds only states of files that verified in
//! full, and is bounded by two generations of [`GENERATION_ENTRIES`] entries.
//!
//! **Per repository.** States are kept under a key that mixes the repository's name into
//! the fingerprint ([`PrefixStates::longest`] and [`PrefixStates::remember`] take the
//! repository), so a registration resumes only from files *its own* repository verified:
//! how long it takes never depends on what other repositories hold (docs/security.md).
//!
//! **Never a reason to read less.** A remembered state saves the SHA-256 of the prefix,
//! not its verification: registration still reads every record of the prefix and checks
//! each against its chunk id (BLAKE3), so a pack damaged after the state was remembered
//! is found ([`crate::register`]).

use std::collections::HashMap;
use std::sync::Mutex;

use gitmodel_format::id::OidHasher;
use gitmodel_proto::RepoName;

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

/// The key a state of `repo` is kept under: the fingerprint bound to the repository, so
/// that one repository's states are never found by another's lookups.
fn scoped(repo: &RepoName, fp: &Fingerprint) -> Fingerprint {
    let mut h = blake3::Hasher::new_derive_key("git-model server prefix state key v1");
    // Lengths first: no two (namespace, repo) pairs give the same input.
    h.update(&(repo.namespace.len() as u64).to_le_bytes());
    h.update(repo.namespace.as_bytes());
    h.update(&(repo.repo.len() as u64).to_le_bytes());
    h.update(repo.repo.as_bytes());
    h.update(fp);
    *h.finalize().as_bytes()
}

impl PrefixStates {
    /// The longest prefix among `fps` (as from [`fingerprints`]) that `repo` verified
    /// earlier: the number of chunks it covers and the hash state after them.
    pub fn longest(&self, repo: &RepoName, fps: &[Fingerprint]) -> Option<(usize, OidHasher)> {
        let keys: Vec<Fingerprint> = fps.iter().map(|fp| scoped(repo, fp)).collect();
        let g = self.inner.lock().unwrap();
        keys.iter().enumerate().skip(1).rev().find_map(|(k, key)| {
            g.current
                .get(key)
                .or_else(|| g.previous.get(key))
                .map(|h| (k * STRIDE, h.clone()))
        })
    }

    /// Remembers the states of a file of `repo` that verified in full.
    pub fn remember(&self, repo: &RepoName, states: Vec<(Fingerprint, OidHasher)>) {
        let scoped: Vec<(Fingerprint, OidHasher)> = states
            .into_iter()
            .map(|(fp, h)| (scoped(repo, &fp), h))
            .collect();
        let mut g = self.inner.lock().unwrap();
        for (key, h) in scoped {
            if g.current.len() >= GENERATION_ENTRIES {
                g.previous = std::mem::take(&mut g.current);
            }
            g.current.insert(key, h);
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
        let repo = RepoName::new("acme", "vision").unwrap();
        let mut h = OidHasher::new();
        let mut remembered = Vec::new();
        for (k, fp) in fa.iter().enumerate().skip(1) {
            h.update(&[k as u8]);
            remembered.push((*fp, h.clone()));
        }
        states.remember(&repo, remembered);
        // Another repository finds nothing, not even the whole file.
        let other = RepoName::new("acme", "other").unwrap();
        assert!(states.longest(&other, &fa).is_none());

        // Same first 20 chunks, then different: only the 16-chunk prefix is shared.
        let mut b = a.clone();
        b[20] = chunk(200);
        let (covered, state) = states.longest(&repo, &fingerprints(&b)).unwrap();
        assert_eq!(covered, STRIDE);
        assert_eq!(state.len(), 1);
        // A different length for the same id is a different prefix.
        let mut c = a.clone();
        c[0].raw_len = 2;
        assert!(states.longest(&repo, &fingerprints(&c)).is_none());
        // The same file: the longest prefix (32 chunks).
        assert_eq!(states.longest(&repo, &fa).unwrap().0, 2 * STRIDE);
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
        let repo = RepoName::new("acme", "vision").unwrap();
        let first = scoped(&repo, &many[0].0);
        let last = scoped(&repo, &many[many.len() - 1].0);
        states.remember(&repo, many);
        let g = states.inner.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= 2 * GENERATION_ENTRIES);
        assert!(!g.current.contains_key(&first) && !g.previous.contains_key(&first));
        assert!(g.current.contains_key(&last));
    }
}
