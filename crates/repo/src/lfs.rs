//! Living with Git LFS: git-model as the `filter=lfs` driver of an existing LFS repository
//! (`install --lfs`), as a git-lfs custom transfer agent (`lfs-agent`), and `migrate`,
//! which moves a repository's LFS objects into git-model storage.
//!
//! The pointers are the same bytes either way, so no history is rewritten.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gitmodel_client::{FileRef, UploadReport};
use gitmodel_format::{Oid, Pointer};
use gitmodel_git::config::Setting;
use gitmodel_git::scan;
use gitmodel_git::setup;
use gitmodel_store::LocalStore;
use serde_json::{json, Value};

use crate::error::usage;
use crate::objects::import_lfs_object;
use crate::paths::PathFilter;
use crate::Repo;

/// What [`install_lfs`] did.
#[derive(Debug)]
pub struct LfsInstalled {
    /// Where git-lfs's pre-push hook was moved aside, if there was one.
    pub lfs_hook_kept_as: Option<PathBuf>,
    /// The server pushes go to, if one is configured.
    pub url: Option<Setting>,
}

/// `git model install --lfs`: git-model becomes the driver of `filter=lfs` in this
/// repository, and its pre-push hook replaces git-lfs's (which would look for objects in
/// `.git/lfs/objects` that git-model does not write).
pub fn install_lfs(repo: &Repo) -> Result<LfsInstalled> {
    repo.workdir()?;
    for (key, value) in setup::filter_config("git-model") {
        let key = key.replacen("filter.model.", "filter.lfs.", 1);
        repo.git
            .run(&["config", "--local", "--replace-all", &key, &value])?;
    }
    let hooks = setup::hooks_dir(&repo.git)?;
    let hook = hooks.join("pre-push");
    let mut kept = None;
    if std::fs::read_to_string(&hook)
        .is_ok_and(|s| s.contains("git lfs pre-push") || s.contains("git-lfs"))
    {
        let aside = hooks.join("pre-push.git-lfs-disabled");
        std::fs::rename(&hook, &aside).with_context(|| format!("moving {}", hook.display()))?;
        kept = Some(aside);
    }
    setup::install_hooks(&repo.git)?;
    Ok(LfsInstalled {
        lfs_hook_kept_as: kept,
        url: repo.url_setting()?,
    })
}

fn send(out: &mut impl Write, v: &Value) -> Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn agent_error(oid: &str, msg: String) -> Value {
    json!({ "event": "complete", "oid": oid, "error": { "code": 2, "message": msg } })
}

/// `git model lfs-agent`: a git-lfs custom transfer agent (line-delimited JSON on
/// stdin/stdout). Uploads chunk the file and send only chunks the git-model server lacks;
/// downloads fetch only chunks the local store lacks. Configure it as standalone:
/// `lfs.standalonetransferagent = git-model`, `lfs.customtransfer.git-model.path =
/// git-model`, `lfs.customtransfer.git-model.args = lfs-agent`.
pub fn agent(repo: &Repo, input: impl BufRead, mut out: impl Write) -> Result<()> {
    let store = repo.store()?;
    let mut remote = None;
    let tmp_dir = repo.repo.commondir().join("lfs/tmp");
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value =
            serde_json::from_str(&line).with_context(|| format!("bad message {line:?}"))?;
        match msg["event"].as_str().unwrap_or("") {
            "init" => match repo.remote() {
                Ok(r) => {
                    remote = Some(r);
                    send(&mut out, &json!({}))?;
                }
                Err(e) => send(
                    &mut out,
                    &json!({ "error": { "code": 32, "message": format!("{e:#}") } }),
                )?,
            },
            "terminate" => break,
            ev @ ("upload" | "download") => {
                let oid_text = msg["oid"].as_str().unwrap_or("").to_string();
                let size = msg["size"].as_u64().unwrap_or(0);
                let Some(remote) = remote.as_ref() else {
                    send(&mut out, &agent_error(&oid_text, "no init".into()))?;
                    continue;
                };
                let Ok(oid) = Oid::from_hex(&oid_text) else {
                    send(&mut out, &agent_error(&oid_text, "invalid oid".into()))?;
                    continue;
                };
                let file = FileRef {
                    oid,
                    size,
                    path: oid_text.clone(),
                };
                let result = if ev == "upload" {
                    let path = msg["path"].as_str().unwrap_or("").to_string();
                    agent_upload(&store, remote, &file, Path::new(&path)).map(|_| None)
                } else {
                    agent_download(&store, remote, &file, &tmp_dir).map(Some)
                };
                match result {
                    Ok(path) => {
                        send(
                            &mut out,
                            &json!({ "event": "progress", "oid": oid_text, "bytesSoFar": size, "bytesSinceLast": size }),
                        )?;
                        let mut done = json!({ "event": "complete", "oid": oid_text });
                        if let Some(p) = path {
                            done["path"] = json!(p.to_string_lossy());
                        }
                        send(&mut out, &done)?;
                    }
                    Err(e) => send(&mut out, &agent_error(&oid_text, format!("{e:#}")))?,
                }
            }
            other => tracing::warn!("lfs-agent: ignoring event {other:?}"),
        }
    }
    Ok(())
}

fn agent_upload(
    store: &LocalStore,
    remote: &gitmodel_client::Remote,
    file: &FileRef,
    path: &Path,
) -> Result<()> {
    if !store.has_file(&file.oid) {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let got = store.ingest(std::io::BufReader::new(f))?;
        if got.pointer.oid != file.oid {
            bail!(
                "{} hashes to {}, not {}",
                path.display(),
                got.pointer.oid,
                file.oid
            );
        }
    }
    gitmodel_client::upload(store, remote, std::slice::from_ref(file))?;
    Ok(())
}

fn agent_download(
    store: &LocalStore,
    remote: &gitmodel_client::Remote,
    file: &FileRef,
    tmp_dir: &Path,
) -> Result<PathBuf> {
    gitmodel_client::download(store, remote, std::slice::from_ref(file))?;
    std::fs::create_dir_all(tmp_dir)?;
    let target = tmp_dir.join(format!("git-model-{}", file.oid));
    let to = crate::checkout::Destination::File {
        target: &target,
        executable: false,
    };
    crate::checkout::write_out(store, &Pointer::new(file.oid, file.size), to)?;
    Ok(target)
}

/// Where to GET an object (href and headers), or why the server will not say.
type DownloadAction = Result<(String, Vec<(String, String)>), String>;

/// A minimal Git LFS Batch API client, for reading objects out of an LFS server.
struct LfsSource {
    url: String,
    agent: ureq::Agent,
}

impl LfsSource {
    fn download_actions(&self, objects: &[(Oid, u64)]) -> Result<Vec<(Oid, DownloadAction)>> {
        let body = json!({
            "operation": "download",
            "transfers": ["basic"],
            "objects": objects.iter().map(|(o, s)| json!({"oid": o.to_hex(), "size": s})).collect::<Vec<_>>(),
            "hash_algo": "sha256",
        });
        let url = format!("{}/objects/batch", self.url.trim_end_matches('/'));
        let resp: Value = self
            .agent
            .post(&url)
            .set("Accept", "application/vnd.git-lfs+json")
            .set("Content-Type", "application/vnd.git-lfs+json")
            .send_json(body)
            .with_context(|| format!("LFS batch request to {url}"))?
            .into_json()?;
        let mut out = Vec::new();
        for o in resp["objects"].as_array().cloned().unwrap_or_default() {
            let oid = Oid::from_hex(o["oid"].as_str().unwrap_or(""))?;
            let action = &o["actions"]["download"];
            let r = match action["href"].as_str() {
                Some(href) => {
                    let headers = action["header"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok((href.to_string(), headers))
                }
                None => Err(o["error"]["message"]
                    .as_str()
                    .unwrap_or("no download action")
                    .to_string()),
            };
            out.push((oid, r));
        }
        Ok(out)
    }
}

/// What [`migrate`] found before moving anything.
#[derive(Debug)]
pub struct MigrationStart {
    /// LFS objects in the chosen refs, and of those, objects already on the server.
    pub objects: usize,
    pub already_migrated: usize,
    /// The LFS endpoint read from, and which setting named it.
    pub lfs_url: String,
    pub lfs_url_source: String,
}

/// What [`migrate`] did (`git model migrate --json` prints it, see `docs/json.md`).
#[derive(Debug, serde::Serialize)]
pub struct Migrated {
    pub lfs_url: String,
    pub lfs_url_source: String,
    pub objects: usize,
    pub already_migrated: usize,
    /// Objects moved by this run, and their size.
    pub migrated: usize,
    pub migrated_bytes: u64,
    /// Raw bytes new on the server, and bytes sent for them.
    pub bytes_new: u64,
    pub bytes_sent: u64,
    /// Growth of the local store.
    pub local_store_bytes: u64,
}

/// `git model migrate`: moves the LFS objects of this repository's refs (all branches and
/// tags, or `refs`) from its LFS server into the git-model server. Resumable: files the
/// git-model server already has are skipped, and nothing is written to the working tree.
pub fn migrate(
    repo: &Repo,
    refs: &[String],
    filter: &PathFilter,
    started: impl FnOnce(&MigrationStart),
) -> Result<Migrated> {
    let store = repo.store()?;
    let remote = repo.remote()?;
    let Some((lfs_url, origin)) = migrate_source(repo)? else {
        return Err(usage(
            "no LFS endpoint to migrate from: set lfs.url (or .lfsconfig)",
        ));
    };
    let tips = if refs.is_empty() {
        crate::transfer::all_tips(repo)?
    } else {
        crate::transfer::commits_of(repo, refs)?
    };
    let found: Vec<_> = scan::pointers_in_commits(&repo.repo, &tips, &[])?
        .into_iter()
        .filter(|f| f.pointer.size > 0 && filter.allows(&f.path))
        .collect();
    let oids: Vec<Oid> = found.iter().map(|f| f.pointer.oid).collect();
    let there = remote.files_exist(&oids)?;
    let todo: Vec<_> = found
        .iter()
        .zip(there)
        .filter(|(_, t)| !t)
        .map(|(f, _)| f)
        .collect();
    started(&MigrationStart {
        objects: found.len(),
        already_migrated: found.len() - todo.len(),
        lfs_url: lfs_url.clone(),
        lfs_url_source: origin.clone(),
    });
    let source = LfsSource {
        url: lfs_url.clone(),
        agent: ureq::AgentBuilder::new().build(),
    };
    let before = store.stats()?.pack_bytes;
    let mut moved = 0u64;
    let mut report = UploadReport::default();
    for batch in todo.chunks(100) {
        let wanted: Vec<(Oid, u64)> = batch
            .iter()
            .filter(|f| !store.has_file(&f.pointer.oid))
            .map(|f| (f.pointer.oid, f.pointer.size))
            .collect();
        if !wanted.is_empty() {
            for (oid, action) in source.download_actions(&wanted)? {
                let (href, headers) =
                    action.map_err(|e| anyhow::anyhow!("{oid}: LFS server: {e}"))?;
                if import_lfs_object(&repo.repo, &store, &oid)? {
                    continue;
                }
                let mut req = source.agent.get(&href);
                for (k, v) in &headers {
                    req = req.set(k, v);
                }
                let resp = req
                    .call()
                    .with_context(|| format!("downloading {oid} from the LFS server"))?;
                let got = store.ingest(std::io::BufReader::new(resp.into_reader()))?;
                if got.pointer.oid != oid {
                    bail!(
                        "the LFS server sent content hashing to {} for {oid}",
                        got.pointer.oid
                    );
                }
            }
        }
        let files: Vec<FileRef> = batch
            .iter()
            .map(|f| FileRef {
                oid: f.pointer.oid,
                size: f.pointer.size,
                path: f.path.clone(),
            })
            .collect();
        let r = gitmodel_client::upload(&store, &remote, &files)?;
        moved += files.iter().map(|f| f.size).sum::<u64>();
        report.bytes_new += r.bytes_new;
        report.bytes_sent += r.bytes_sent;
        report.chunks += r.chunks;
        report.chunks_sent += r.chunks_sent;
    }
    let local = store.stats()?.pack_bytes - before;
    let seen: HashSet<Oid> = todo.iter().map(|f| f.pointer.oid).collect();
    Ok(Migrated {
        lfs_url,
        lfs_url_source: origin,
        objects: found.len(),
        already_migrated: found.len() - todo.len(),
        migrated: seen.len(),
        migrated_bytes: moved,
        bytes_new: report.bytes_new,
        bytes_sent: report.bytes_sent,
        local_store_bytes: local,
    })
}

fn migrate_source(repo: &Repo) -> Result<Option<(String, String)>> {
    if let Some(found) = gitmodel_git::config::lfs_url(&repo.git)? {
        return Ok(Some(found));
    }
    // git-lfs's default: the remote URL + /info/lfs.
    Ok(repo
        .git
        .try_run(&["config", "--get", "remote.origin.url"])?
        .and_then(|u| {
            (u.starts_with("http://") || u.starts_with("https://")).then(|| {
                let base = u.trim_end_matches('/');
                let base = if base.ends_with(".git") {
                    base.to_string()
                } else {
                    format!("{base}.git")
                };
                (format!("{base}/info/lfs"), "remote.origin.url".to_string())
            })
        }))
}
