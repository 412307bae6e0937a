//! Living with Git LFS: `install --lfs`, `lfs-agent` and `migrate`, rendering of
//! [`gitmodel_repo::lfs`].

use anyhow::Result;
use gitmodel_repo::{lfs, PathFilter, Repo};

use crate::units::bytes;

pub fn install_lfs() -> Result<()> {
    let repo = Repo::open()?;
    let done = lfs::install_lfs(&repo)?;
    if let Some(aside) = &done.lfs_hook_kept_as {
        println!(
            "git-model: git-lfs's pre-push hook kept as {}",
            aside.display()
        );
    }
    println!("git-model: now the filter=lfs driver of this repository (same pointers, no rewrite)");
    match done.url {
        Some(s) => println!("git-model: server {} (from {})", s.value, s.source),
        None => println!(
            "git-model: set model.url (or lfs.url to a git-model-server endpoint) before pushing"
        ),
    }
    Ok(())
}

/// `git model lfs-agent`: the custom transfer agent on stdin/stdout.
pub fn agent() -> Result<()> {
    let repo = Repo::open()?;
    lfs::agent(&repo, std::io::stdin().lock(), std::io::stdout().lock())
}

pub fn migrate(refs: &[String], include: &[String], exclude: &[String]) -> Result<()> {
    let repo = Repo::open()?;
    let filter = PathFilter::new(include, exclude)?;
    let json = crate::report::json();
    let m = lfs::migrate(&repo, refs, &filter, |start| {
        if !json {
            eprintln!(
                "git-model: {} LFS object(s) in {}; {} already migrated; reading from {} (from {})",
                start.objects,
                if refs.is_empty() {
                    "all branches and tags".to_string()
                } else {
                    refs.join(" ")
                },
                start.already_migrated,
                start.lfs_url,
                start.lfs_url_source
            );
        }
    })?;
    if json {
        return crate::report::emit(&crate::report::Migrate {
            command: "migrate",
            result: m,
        });
    }
    let moved = m.migrated_bytes;
    println!(
        "migrated {} object(s), {} of LFS content: {} new on the server ({} sent), {} in the local store; {:.1}% of the bytes were already stored",
        m.migrated,
        bytes(moved),
        bytes(m.bytes_new),
        bytes(m.bytes_sent),
        bytes(m.local_store_bytes),
        if moved == 0 { 0.0 } else { 100.0 - 100.0 * m.bytes_new as f64 / moved as f64 },
    );
    Ok(())
}
