//! Keeping the local store bounded: listing what it holds and pruning what is no longer
//! needed. Packs are immutable, so pruning deletes whole packs and rewrites partly needed
//! ones (their kept chunks copied, as stored, into a new pack first).
//!
//! Deciding what is needed (the checkout, recent refs) and making sure the server holds
//! everything that goes is the caller's job; this module only carries out a plan. Do not
//! prune while another git-model process is adding files to the same store.

use std::collections::HashSet;
use std::fs;
use std::io;

use gitmodel_format::{ChunkId, Oid, PackId};

use crate::{io_err, LocalStore, Result, StoredChunk};

/// What a prune would do.
#[derive(Debug, Default, Clone)]
pub struct PrunePlan {
    /// Packs whose every chunk goes.
    pub delete: Vec<PackId>,
    /// Packs with some chunks to keep: those are copied to a new pack, then it goes.
    pub rewrite: Vec<(PackId, Vec<ChunkId>)>,
    /// Chunks that go.
    pub chunks: Vec<ChunkId>,
    /// Raw bytes of those chunks.
    pub raw_bytes: u64,
    /// Pack bytes freed (before the rewritten packs' new copies).
    pub pack_bytes: u64,
    /// Recipes of files that are no longer kept.
    pub recipes: Vec<Oid>,
}

impl LocalStore {
    /// Oids of every file with a recipe here.
    pub fn files(&self) -> Result<Vec<Oid>> {
        let dir = self.root.join("recipes");
        let mut out = Vec::new();
        for fan in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let fan = fan.map_err(io_err(&dir))?.path();
            if !fan.is_dir() {
                continue;
            }
            for f in fs::read_dir(&fan).map_err(io_err(&fan))? {
                let path = f.map_err(io_err(&fan))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(oid) = name
                    .strip_suffix(".recipe")
                    .and_then(|h| Oid::from_hex(h).ok())
                {
                    out.push(oid);
                }
            }
        }
        Ok(out)
    }

    /// Plans removing every chunk not in `keep` and every recipe not in `keep_files`.
    pub fn plan_prune(
        &self,
        keep: &HashSet<ChunkId>,
        keep_files: &HashSet<Oid>,
    ) -> Result<PrunePlan> {
        self.flush_shared()?;
        let mut plan = PrunePlan::default();
        let index = self.index.read().unwrap();
        let mut by_pack: std::collections::HashMap<PackId, (Vec<ChunkId>, Vec<ChunkId>)> =
            Default::default();
        for (id, loc) in index.iter() {
            let e = by_pack.entry(loc.pack).or_default();
            if keep.contains(id) {
                e.0.push(*id);
            } else {
                e.1.push(*id);
                plan.raw_bytes += loc.entry.raw_len as u64;
            }
        }
        drop(index);
        for (pack, (kept, gone)) in by_pack {
            if gone.is_empty() {
                continue;
            }
            let path = self.pack_path(&pack);
            plan.pack_bytes += fs::metadata(&path).map_err(io_err(&path))?.len();
            plan.chunks.extend(&gone);
            if kept.is_empty() {
                plan.delete.push(pack);
            } else {
                plan.rewrite.push((pack, kept));
            }
        }
        plan.recipes = self
            .files()?
            .into_iter()
            .filter(|o| !keep_files.contains(o))
            .collect();
        Ok(plan)
    }

    /// Carries out a plan: kept chunks of rewritten packs are copied (verified) into new
    /// packs before any pack is deleted.
    pub fn apply_prune(&self, plan: &PrunePlan) -> Result<()> {
        let mut copies: Vec<StoredChunk> = Vec::new();
        for (_, kept) in &plan.rewrite {
            for id in kept {
                if let Some(c) = self.read_stored(id)? {
                    copies.push(c);
                }
            }
        }
        let doomed: HashSet<PackId> = plan
            .delete
            .iter()
            .chain(plan.rewrite.iter().map(|(p, _)| p))
            .copied()
            .collect();
        // Forget the doomed packs' chunks first, so the copies are written anew.
        {
            let mut index = self.index.write().unwrap();
            index.retain(|_, loc| !doomed.contains(&loc.pack));
        }
        self.import(copies)?;
        for pack in &doomed {
            let path = self.pack_path(pack);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        for oid in &plan.recipes {
            let path = self.recipe_path(oid);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    #[test]
    fn prune_keeps_what_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut a = vec![0u8; 3 << 20];
        rng.fill_bytes(&mut a);
        let mut b = vec![0u8; 2 << 20];
        rng.fill_bytes(&mut b);
        let pa = store.ingest(&a[..]).unwrap().pointer;
        let pb = store.ingest(&b[..]).unwrap().pointer;
        let keep: HashSet<ChunkId> = store
            .recipe(&pb.oid)
            .unwrap()
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.id)
            .collect();
        let plan = store.plan_prune(&keep, &[pb.oid].into()).unwrap();
        assert_eq!(plan.recipes, vec![pa.oid]);
        assert!(plan.raw_bytes >= 3 << 20);
        store.apply_prune(&plan).unwrap();
        assert!(!store.has_file(&pa.oid));
        let reopened = LocalStore::open(dir.path()).unwrap();
        let mut out = Vec::new();
        reopened.write_file(&pb.oid, &mut out).unwrap();
        assert!(out == b);
        assert!(!reopened.has_file(&pa.oid));
    }
}
