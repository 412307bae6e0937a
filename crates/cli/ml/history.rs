//! `git model log <path>` (every version of a file, what each added to storage, its
//! metrics) and `git model lineage` (what a model version was made from, and which model
//! versions a dataset version went into).

use anyhow::Result;
use gitmodel_ml::metrics::{self, Flat};
use gitmodel_ml::tensor::human_bytes;
use gitmodel_repo::experiments;

use super::{short, Ctx};

fn compact(flat: &Flat) -> String {
    flat.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `git model log <path>`.
pub fn log(path: &str, rev: &str, json: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    let path = &super::repo_path(&ctx, path);
    let entries = experiments::file_log(&ctx, path, rev)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                short(&e.commit).to_string(),
                e.date.clone(),
                e.author.clone(),
                e.size.map(human_bytes).unwrap_or_else(|| "deleted".into()),
                e.new_bytes.map(human_bytes).unwrap_or_else(|| "?".into()),
                compact(&e.metrics),
                e.subject.clone(),
            ]
        })
        .collect();
    let header: Vec<String> = [
        "commit", "date", "author", "size", "new", "metrics", "subject",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    print!("{}", metrics::markdown(&header, &rows));
    Ok(())
}

/// `git model lineage <model>[@<rev>]`.
pub fn lineage(spec: &str, json: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    let l = experiments::lineage(&ctx, spec)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&l)?);
        return Ok(());
    }
    println!(
        "model {} ({}, {}) as of {}",
        l.model,
        l.file.path,
        human_bytes(l.file.size),
        l.asked
    );
    println!("  version  {}", l.file.id);
    println!("  code     {} {} {}", short(&l.commit), l.date, l.subject);
    println!("  inputs:");
    if l.inputs.is_empty() {
        println!("    (none listed in models.toml)");
    }
    for i in &l.inputs {
        match &i.version {
            Some(v) => println!(
                "    {}  {}  {}  changed in {} ({})",
                i.path,
                short_id(&v.id),
                human_bytes(v.size),
                short(&v.changed_in),
                v.date
            ),
            None => println!("    {}  (missing at {})", i.path, short(&l.commit)),
        }
    }
    if !l.params.is_empty() {
        println!("  params:   {}", compact(&l.params));
    }
    if !l.metrics.is_empty() {
        println!("  metrics:  {}", compact(&l.metrics));
    }
    Ok(())
}

fn short_id(id: &str) -> String {
    match id.split_once(':') {
        Some((kind, hex)) => format!("{kind}:{}", gitmodel_ml::registry::prefix(hex, 12)),
        None => id.to_string(),
    }
}

/// `git model lineage --reverse <dataset>[@<rev>]`.
pub fn lineage_reverse(spec: &str, json: bool) -> Result<()> {
    let ctx = Ctx::open()?;
    let (given, rev) = experiments::split_spec(spec);
    let path = &super::repo_path(&ctx, given);
    let r = experiments::lineage_reverse(&ctx, path, rev)?;
    let (path, rev, target, found) = (&r.path, &r.rev, &r.id, &r.trained);
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    println!("{path} {} (at {rev})", short_id(target));
    if found.is_empty() {
        println!("  no model version in this repository's branches was trained on it");
    }
    for t in found {
        println!(
            "  {}@{}  {}  {}  {}",
            t.model,
            short(&t.commit),
            t.date,
            short_id(&t.file),
            t.subject
        );
    }
    Ok(())
}
