//! The storage key layout: where packs and recipes live in a [`crate::storage::Storage`].
//!
//! ```text
//! packs/<ab>/<pack hex>.pack                               global: chunks dedup across repos
//! repos/<namespace>/<repo>/files/<ab>/<oid hex>.recipe     per repository
//! ```
//! `<ab>` is the first two hex digits of the id (one level of fan-out keeps directories
//! small on a local disk; on object stores it is harmless). Only this module spells keys.

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
    }
}
