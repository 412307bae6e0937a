//! `git model fsck` and `git model prune`: rendering of [`gitmodel_repo::maint`].

use anyhow::{bail, Result};
use gitmodel_repo::{maint, Repo};

use crate::report;
use crate::units::bytes;

pub fn fsck(refs: &[String], all: bool, remote: bool) -> Result<()> {
    let repo = Repo::open()?;
    let checked = maint::fsck(&repo, refs, all, remote)?;
    let lines: Vec<String> = checked
        .problems
        .iter()
        .map(|p| format!("{} ({}): {}", p.path, p.oid, p.problem))
        .collect();
    if report::json() {
        report::emit(&report::Fsck {
            command: "fsck",
            files_checked: checked.files_checked,
            bytes_verified: checked.bytes_verified,
            files_on_server: checked.files_on_server,
            ok: checked.problems.is_empty(),
            problems: checked.problems,
        })?;
    } else {
        println!(
            "{} file(s) checked; {} verified locally{}",
            checked.files_checked,
            bytes(checked.bytes_verified),
            checked
                .files_on_server
                .map(|n| format!("; {n} on the server"))
                .unwrap_or_default()
        );
    }
    if !lines.is_empty() {
        bail!("{} problem(s):\n  {}", lines.len(), lines.join("\n  "));
    }
    Ok(())
}

pub fn prune(dry_run: bool, age_days: Option<u64>) -> Result<()> {
    let repo = Repo::open()?;
    let pruned = maint::prune(&repo, dry_run, age_days)?;
    let (plan, age_days) = (&pruned.plan, pruned.age_days);
    if report::json() {
        return report::emit(&report::Prune {
            command: "prune",
            dry_run,
            age_days,
            chunks: plan.chunks.len(),
            raw_bytes: plan.raw_bytes,
            packs: plan.delete.len() + plan.rewrite.len(),
            packs_deleted: plan.delete.len(),
            packs_rewritten: plan.rewrite.len(),
            pack_bytes: plan.pack_bytes,
            recipes: plan.recipes.len(),
            files_kept: pruned.files_kept,
        });
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} chunk(s) ({} raw) from {} pack(s) ({} on disk, {} rewritten) and {} file recipe(s); kept {} file(s) needed by the checkout or refs newer than {age_days} day(s)",
        plan.chunks.len(),
        bytes(plan.raw_bytes),
        plan.delete.len() + plan.rewrite.len(),
        bytes(plan.pack_bytes),
        plan.rewrite.len(),
        plan.recipes.len(),
        pruned.files_kept,
    );
    Ok(())
}
