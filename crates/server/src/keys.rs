//! The storage key layout: where packs, recipes and locks live in a
//! [`crate::storage::Storage`].
//!
//! ```text
//! packs/<ab>/<pack hex>.pack                               global: chunks dedup across repos
//! repos/<namespace>/<repo>/files/<ab>/<oid hex>.recipe     per repository
//! repos/<namespace>/<repo>/locks/<path hash>.json          Git LFS locks, one per path
//! repos/<namespace>/<repo>/packs/<ab>/<pack hex>.ref       packs this repository may read
//! meta/pack-refs-v1                                        marks the refs as complete
//! gc/candidates.json                                       gc: unreferenced packs, first seen
//! gc/condemned.json                                        gc: packs being deleted, and just deleted
//! gc/touched/<ab>/<pack hex>.touch                         gc: a pack was uploaded again
//! gc/rescued/<ab>/<pack hex>.rescue                        gc: a registration needs this pack
//! damaged/<ab>/<pack hex>.json                             a pack found damaged (scrub)
//! ```
//! A `.ref` is empty: its existence is the grant (see [`crate::tenancy`]).
//! `<ab>` is the first two hex digits of the id (one level of fan-out keeps directories
//! small on a local disk; on object stores it is harmless). A lock is named by the SHA-256
//! of the locked path, so "is this path locked?" is one read and a path cannot be locked
//! twice under different keys. Only this module spells keys.

use gitmodel_format::{Oid, PackId};
use gitmodel_proto::RepoName;

/// Prefix under which every pack lives.
pub const PACKS_PREFIX: &str = "packs/";
const PACK_SUFFIX: &str = ".pack";
const RECIPE_SUFFIX: &str = ".recipe";

pub fn pack_key(pack: &PackId) -> String {
    let hex = pack.to_hex();
    format!("{PACKS_PREFIX}{}/{hex}{PACK_SUFFIX}", &hex[..2])
}

/// The pack id a key under [`PACKS_PREFIX`] names, if it is a well-formed pack key.
pub fn parse_pack_key(key: &str) -> Option<PackId> {
    let rest = key.strip_prefix(PACKS_PREFIX)?;
    let (fan, file) = rest.split_once('/')?;
    let hex = file.strip_suffix(PACK_SUFFIX)?;
    let id = PackId::from_hex(hex).ok()?;
    (fan == &hex[..2]).then_some(id)
}

pub fn recipe_key(repo: &RepoName, oid: &Oid) -> String {
    let hex = oid.to_hex();
    format!(
        "repos/{}/{}/files/{}/{hex}{RECIPE_SUFFIX}",
        repo.namespace,
        repo.repo,
        &hex[..2]
    )
}

/// Where the record that `repo` may read `pack` lives (an empty object).
pub fn pack_ref_key(repo: &RepoName, pack: &PackId) -> String {
    let hex = pack.to_hex();
    format!(
        "repos/{}/{}/packs/{}/{hex}{PACK_REF_SUFFIX}",
        repo.namespace,
        repo.repo,
        &hex[..2]
    )
}

const PACK_REF_SUFFIX: &str = ".ref";

/// Prefix (directory) under which the pack records of `repo` live.
pub fn pack_refs_prefix(repo: &RepoName) -> String {
    format!("repos/{}/{}/packs/", repo.namespace, repo.repo)
}

/// The pack a key under [`pack_refs_prefix`] names, if it is a well-formed record key.
pub fn parse_pack_ref_key(key: &str) -> Option<PackId> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?;
    let fan = parts.next()?;
    let hex = file.strip_suffix(PACK_REF_SUFFIX)?;
    let id = PackId::from_hex(hex).ok()?;
    (fan == &hex[..2]).then_some(id)
}

/// Prefix under which every repository's recipes and records live.
pub const REPOS_PREFIX: &str = "repos/";

/// Written once every recipe's packs have `.ref` records (after the one-time upgrade
/// of a data directory from before per-repository pack records).
pub const PACK_REFS_DONE_KEY: &str = "meta/pack-refs-v1";

/// The repository and file a recipe key names, if `key` is a well-formed recipe key.
pub fn parse_recipe_key(key: &str) -> Option<(RepoName, Oid)> {
    let rest = key.strip_prefix(REPOS_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, repo, "files", fan, file] = parts.as_slice() else {
        return None;
    };
    let hex = file.strip_suffix(RECIPE_SUFFIX)?;
    let oid = Oid::from_hex(hex).ok()?;
    let repo = RepoName::new(namespace, repo).ok()?;
    (*fan == &hex[..2]).then_some((repo, oid))
}

/// Where GC remembers unreferenced packs between runs ([`crate::gc`]).
pub const GC_CANDIDATES_KEY: &str = "gc/candidates.json";
/// Where GC announces the packs it is about to delete, and those it deleted lately.
pub const GC_CONDEMNED_KEY: &str = "gc/condemned.json";
/// Prefix of the markers of packs uploaded again while stored already.
pub const GC_TOUCHED_PREFIX: &str = "gc/touched/";
/// Prefix of the markers of condemned packs a registration needs.
pub const GC_RESCUED_PREFIX: &str = "gc/rescued/";
const TOUCH_SUFFIX: &str = ".touch";
const RESCUE_SUFFIX: &str = ".rescue";

fn marker_key(prefix: &str, pack: &PackId, suffix: &str) -> String {
    let hex = pack.to_hex();
    format!("{prefix}{}/{hex}{suffix}", &hex[..2])
}

fn parse_marker_key(key: &str, prefix: &str, suffix: &str) -> Option<PackId> {
    let rest = key.strip_prefix(prefix)?;
    let (fan, file) = rest.split_once('/')?;
    let hex = file.strip_suffix(suffix)?;
    let id = PackId::from_hex(hex).ok()?;
    (fan == &hex[..2]).then_some(id)
}

/// The marker that `pack` was uploaded again (its GC clock starts over).
pub fn gc_touched_key(pack: &PackId) -> String {
    marker_key(GC_TOUCHED_PREFIX, pack, TOUCH_SUFFIX)
}

pub fn parse_gc_touched_key(key: &str) -> Option<PackId> {
    parse_marker_key(key, GC_TOUCHED_PREFIX, TOUCH_SUFFIX)
}

/// The marker that a registration needs the condemned `pack` (GC must keep it).
pub fn gc_rescued_key(pack: &PackId) -> String {
    marker_key(GC_RESCUED_PREFIX, pack, RESCUE_SUFFIX)
}

pub fn parse_gc_rescued_key(key: &str) -> Option<PackId> {
    parse_marker_key(key, GC_RESCUED_PREFIX, RESCUE_SUFFIX)
}

/// Prefix under which the records of damaged packs live (see [`crate::scrub`]).
pub const DAMAGED_PREFIX: &str = "damaged/";
const DAMAGED_SUFFIX: &str = ".json";

/// Where the record that `pack` was found damaged lives (a small JSON object saying
/// what is wrong and when it was found).
pub fn damaged_key(pack: &PackId) -> String {
    marker_key(DAMAGED_PREFIX, pack, DAMAGED_SUFFIX)
}

/// The pack a key under [`DAMAGED_PREFIX`] names, if it is a well-formed record key.
pub fn parse_damaged_key(key: &str) -> Option<PackId> {
    parse_marker_key(key, DAMAGED_PREFIX, DAMAGED_SUFFIX)
}

const LOCK_SUFFIX: &str = ".json";

/// Prefix (directory) under which the Git LFS locks of `repo` live.
pub fn locks_prefix(repo: &RepoName) -> String {
    format!("repos/{}/{}/locks/", repo.namespace, repo.repo)
}

/// Where the lock of `path` in `repo` is stored (whoever holds it).
pub fn lock_key(repo: &RepoName, path: &str) -> String {
    // SHA-256 of the path: any path maps to a valid key, and equal paths to equal keys.
    let digest = Oid::of(path.as_bytes()).to_hex();
    format!("{}{digest}{LOCK_SUFFIX}", locks_prefix(repo))
}

/// The path-hash part of a key under [`locks_prefix`] (the lock listing's sort key and
/// pagination cursor), if it is a well-formed lock key.
pub fn parse_lock_key(key: &str) -> Option<&str> {
    let file = key.rsplit('/').next()?;
    let stem = file.strip_suffix(LOCK_SUFFIX)?;
    Oid::from_hex(stem).ok().map(|_| stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let pack = PackId([0xab; 32]);
        let key = pack_key(&pack);
        assert_eq!(key, format!("packs/ab/{}.pack", "ab".repeat(32)));
        assert_eq!(parse_pack_key(&key), Some(pack));
        assert_eq!(parse_pack_key(&key.replace("packs/ab", "packs/cd")), None);
        assert_eq!(parse_pack_key("packs/ab/x.pack"), None);
        let repo = RepoName::new("acme", "vision.git").unwrap();
        let oid = Oid([0x01; 32]);
        assert_eq!(
            recipe_key(&repo, &oid),
            format!("repos/acme/vision/files/01/{}.recipe", "01".repeat(32))
        );
        crate::storage::validate_key(&recipe_key(&repo, &oid)).unwrap();
        crate::storage::validate_key(&key).unwrap();
        let lock = lock_key(&repo, "weights/../a b.bin");
        assert!(lock.starts_with("repos/acme/vision/locks/"), "{lock}");
        crate::storage::validate_key(&lock).unwrap();
        assert_eq!(
            parse_lock_key(&lock),
            Some(&*Oid::of(b"weights/../a b.bin").to_hex())
        );
        assert_ne!(lock, lock_key(&repo, "weights/a b.bin"));
        assert_eq!(parse_lock_key("repos/acme/vision/locks/x.json"), None);

        let grant = pack_ref_key(&repo, &pack);
        assert_eq!(
            grant,
            format!("repos/acme/vision/packs/ab/{}.ref", "ab".repeat(32))
        );
        crate::storage::validate_key(&grant).unwrap();
        assert!(grant.starts_with(&pack_refs_prefix(&repo)));
        assert_eq!(parse_pack_ref_key(&grant), Some(pack));
        assert_eq!(parse_pack_ref_key(&key), None);
        crate::storage::validate_key(PACK_REFS_DONE_KEY).unwrap();
        assert_eq!(
            parse_recipe_key(&recipe_key(&repo, &oid)),
            Some((repo.clone(), oid))
        );
        assert_eq!(parse_recipe_key(&grant), None);
        assert_eq!(parse_recipe_key(&lock), None);

        for key in [GC_CANDIDATES_KEY, GC_CONDEMNED_KEY] {
            crate::storage::validate_key(key).unwrap();
        }
        let touched = gc_touched_key(&pack);
        let rescued = gc_rescued_key(&pack);
        assert_eq!(touched, format!("gc/touched/ab/{}.touch", "ab".repeat(32)));
        crate::storage::validate_key(&touched).unwrap();
        crate::storage::validate_key(&rescued).unwrap();
        assert_eq!(parse_gc_touched_key(&touched), Some(pack));
        assert_eq!(parse_gc_rescued_key(&rescued), Some(pack));
        assert_eq!(parse_gc_touched_key(&rescued), None);
        assert_eq!(parse_gc_rescued_key(&key), None);
        let damaged = damaged_key(&pack);
        assert_eq!(damaged, format!("damaged/ab/{}.json", "ab".repeat(32)));
        crate::storage::validate_key(&damaged).unwrap();
        assert_eq!(parse_damaged_key(&damaged), Some(pack));
        assert_eq!(parse_damaged_key(&key), None);
        assert_eq!(parse_damaged_key("damaged/cd/x.json"), None);
    }
}
