//! `git model merge-driver` (git's merge driver for `merge=model` files, configured by
//! `install`: [`gitmodel_repo::merge`]) and `git model resolve`, which settles a conflict
//! it left.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use gitmodel_client::FileRef;
use gitmodel_format::Pointer;
use gitmodel_repo::merge::{self, MergeOutcome};
use gitmodel_store::fsutil;

use gitmodel_ml::tensor::human_bytes;

use super::{repo_path, short, Ctx};
use gitmodel_repo::usage;

/// `git model merge-driver %O %A %B %P [%X %Y]`: exit 0 with the result in `%A`, or an
/// error (exit 1) for a conflict, `%A` untouched.
pub fn driver(args: &[String]) -> Result<()> {
    let [base, ours_file, theirs, path, labels @ ..] = args else {
        return Err(usage(
            "merge-driver expects git's arguments: %O %A %B %P [%X %Y]",
        ));
    };
    let files = [base, ours_file, theirs].map(|f| Path::new(f.as_str()));
    let labels = [labels.first(), labels.get(1)].map(|l| l.map(String::as_str));
    match merge::merge_file(Ctx::open, files, path, labels)? {
        MergeOutcome::Ours | MergeOutcome::Theirs => Ok(()),
        MergeOutcome::Rows { key, stats } => {
            if !crate::progress::quiet() {
                eprintln!(
                    "git-model: merged {path} row by row on {key:?}: theirs added {}, changed {}, removed {} row(s)",
                    stats.added, stats.changed, stats.removed
                );
            }
            Ok(())
        }
        MergeOutcome::Conflict(message) => Err(anyhow!(message)),
    }
}

/// Which version `resolve` takes.
pub enum Pick {
    Ours,
    Theirs,
    Rev(String),
}

/// `git model resolve <path> --ours|--theirs|--rev R`: that version's pointer into the
/// index (stage 0, ending the conflict) and its content into the working tree.
pub fn resolve(given: &str, pick: Pick) -> Result<()> {
    let ctx = Ctx::open()?;
    let workdir = ctx.repo.workdir()?.clone();
    let path = repo_path(&ctx, given);
    let conflict = ctx.git().index()?.conflict_get(Path::new(&path)).ok();
    let (entry, which): (Option<(git2::Oid, u32)>, String) = match &pick {
        Pick::Ours | Pick::Theirs => {
            let Some(c) = &conflict else {
                return Err(usage(format!(
                    "{path} is not in conflict (`git status` lists the conflicted paths); \
                     `--rev R` takes any version"
                )));
            };
            let (e, name) = match pick {
                Pick::Ours => (&c.our, "ours"),
                _ => (&c.their, "theirs"),
            };
            (e.as_ref().map(|e| (e.id, e.mode)), name.to_string())
        }
        Pick::Rev(r) => {
            let commit = ctx.commit(r)?;
            let tree = commit.tree()?;
            let entry = tree.get_path(Path::new(&path)).ok();
            if let Some(e) = &entry {
                if e.kind() != Some(git2::ObjectType::Blob) {
                    return Err(usage(format!("{path} at {r} is not a file")));
                }
            }
            (
                entry.map(|e| (e.id(), e.filemode() as u32)),
                format!("{r} ({})", short(&commit.id().to_string())),
            )
        }
    };
    let target = workdir.join(&path);
    let Some((blob_id, mode)) = entry else {
        // That version has no such file: resolving means removing it.
        ctx.repo.git.run(&[
            "rm",
            "-q",
            "--cached",
            "--ignore-unmatch",
            "--",
            &format!(":(literal){path}"),
        ])?;
        if target.exists() {
            std::fs::remove_file(&target).with_context(|| target.display().to_string())?;
        }
        println!("git-model: resolved {path}: removed, as in {which}; `git commit` to finish");
        return Ok(());
    };
    let blob = ctx.git().find_blob(blob_id)?.content().to_vec();
    let pointer = Pointer::parse(&blob).filter(|p| p.size > 0);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    match pointer {
        Some(p) => {
            if !gitmodel_repo::objects::have_locally(ctx.git(), &ctx.store, &p) {
                let remote = ctx.remote()?;
                let file = FileRef {
                    oid: p.oid,
                    size: p.size,
                    path: path.clone(),
                };
                gitmodel_client::download(&ctx.store, &remote, &[file]).with_context(|| {
                    format!("downloading {path} ({}) from {}", p.oid, remote.url())
                })?;
            }
            ctx.store
                .materialize(&p.oid, &target, mode & 0o111 != 0)
                .with_context(|| format!("writing {path}"))?;
            ctx.store.sync()?;
            // The `git add` below then cleans it without hashing it again.
            if let Err(e) = gitmodel_repo::statcache::StatCache::save(
                ctx.store.root(),
                &workdir,
                &[(path.clone(), p)],
            ) {
                tracing::warn!("could not save the stat cache: {e}");
            }
        }
        None => {
            fsutil::write_atomic(&target, &blob).with_context(|| target.display().to_string())?
        }
    }
    // Exactly that blob at stage 0 (which drops the conflict's stages 1-3), then a
    // refresh of its stat data through the clean filter.
    let info = format!("{mode:o} {blob_id} 0\t{path}\n");
    index_info(&ctx, &info)?;
    if pointer.is_some() {
        ctx.repo
            .git
            .run(&["add", "--", &format!(":(literal){path}")])?;
        let mut index = ctx.git().index()?;
        index.read(true)?;
        let staged = index.get_path(Path::new(&path), 0).map(|e| e.id);
        if staged != Some(blob_id) {
            return Err(anyhow!(
                "{path}: the working-tree file does not clean to the chosen version ({which}); \
                 it is staged as {which} but check the filter configuration (`git model env`)"
            ));
        }
    }
    let size = match pointer {
        Some(p) => p.size,
        None => blob.len() as u64,
    };
    println!(
        "git-model: resolved {path} with {which}: {}; `git commit` to finish",
        match pointer {
            Some(p) => format!("sha256:{} {}", short(&p.oid.to_hex()), human_bytes(size)),
            None => human_bytes(size),
        }
    );
    Ok(())
}

/// `git update-index --index-info` with `lines` on its standard input.
fn index_info(ctx: &Ctx, lines: &str) -> Result<()> {
    use std::io::Write;
    let mut child = ctx
        .repo
        .git
        .command()
        .args(["update-index", "--index-info"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running git update-index")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(lines.as_bytes())
        .context("writing to git update-index")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "git update-index --index-info failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
