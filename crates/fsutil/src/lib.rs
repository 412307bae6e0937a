//! Durable file writes: temp file in the target's directory, fsync, rename, fsync the
//! directory. A reader never sees a partial file, and a crash leaves at most a temp file.
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Prefix of temp files, so cleanup can recognise leftovers of a crash.
pub const TEMP_PREFIX: &str = ".tmp-gitmodel-";

/// Creates a temp file beside `target` (same directory, so the rename is atomic), named
/// `<TEMP_PREFIX><pid>-<random>` so that [`remove_stale_temps`] knows a crash's leftovers.
pub fn temp_beside(target: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent_dir(target);
    fs::create_dir_all(dir)?;
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .tempfile_in(dir)
}

/// Removes the temp files in `dir` left by processes that no longer run (killed in the
/// middle of a write); returns how many. Files of running processes are left alone.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Size of the `write` calls [`write_sliced`] makes.
pub const WRITE_SLICE: usize = 1 << 20;

/// Writes `data` in [`WRITE_SLICE`] pieces. On the Linux page cache one `write` of a
/// whole 16 MiB pack copies at 0.3–1.3 GB/s on this project's machines (the kernel copying
/// into page-cache folios was a third of the server's CPU on a push), where the same bytes
/// in 1 MiB calls copy at 3.6–4.7 GB/s.
pub fn write_sliced(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    data.chunks(WRITE_SLICE).try_for_each(|s| out.write_all(s))
}

/// Makes a finished temp file durable and moves it to `target`.
pub fn persist(tmp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    sync_dir(parent_dir(target))
}

/// Writes `data` to `target` atomically and durably.
pub fn write_atomic(target: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = temp_beside(target)?;
    write_sliced(&mut tmp, data)?;
    persist(tmp, target)
}

/// Like [`write_atomic`], but a no-op when `target` already exists: for content-addressed
/// files, whose name fixes their content.
pub fn write_once(target: &Path, data: &[u8]) -> io::Result<bool> {
    if target.exists() {
        return Ok(false);
    }
    write_atomic(target, data)?;
    Ok(true)
}

/// Like [`persist`] without the fsyncs: atomic (a reader never sees a partial file) but
/// durable only once the file and its directory are synced ([`sync_paths`]).
pub fn persist_unsynced(tmp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

/// Like [`write_atomic`] without the fsyncs; see [`persist_unsynced`].
pub fn write_atomic_unsynced(target: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = temp_beside(target)?;
    write_sliced(&mut tmp, data)?;
    persist_unsynced(tmp, target)
}

/// Makes files written unsynced durable. With more than a few, one `syncfs` of their
/// filesystem (a single journal commit) beats an fsync per file and per directory.
pub fn sync_paths(paths: &[PathBuf]) -> io::Result<()> {
    if paths.len() > 8 {
        if let Some(first) = paths.first() {
            let dir = File::open(parent_dir(first))?;
            if rustix::fs::syncfs(&dir).is_ok() {
                // Paths on another filesystem (rare: a store split across mounts) still
                // get their own fsyncs.
                let dev = dir.metadata()?.dev();
                let others: Vec<PathBuf> = paths
                    .iter()
                    .filter(|p| p.metadata().map(|m| m.dev() != dev).unwrap_or(true))
                    .cloned()
                    .collect();
                return sync_each(&others);
            }
        }
    }
    sync_each(paths)
}

/// fsyncs each file, then each distinct parent directory.
fn sync_each(paths: &[PathBuf]) -> io::Result<()> {
    let mut dirs: Vec<&Path> = Vec::new();
    for p in paths {
        match File::open(p) {
            Ok(f) => f.sync_all()?,
            // Removed since it was written (e.g. pruned): nothing left to make durable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let d = parent_dir(p);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    for d in dirs {
        sync_dir(d)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `root/ab/<hex><suffix>`: one level of fan-out by the first two hex digits.
pub fn fanout(root: &Path, hex: &str, suffix: &str) -> PathBuf {
    root.join(&hex[..2]).join(format!("{hex}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = fanout(dir.path(), "abcdef", ".x");
        assert!(write_once(&p, b"one").unwrap());
        assert!(!write_once(&p, b"two").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"three").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
