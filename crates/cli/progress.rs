//! Progress of transfers on stderr: a bar with bytes, rate and ETA on a terminal; a plain
//! line every few seconds otherwise (CI logs); nothing with `--quiet` / `GIT_MODEL_QUIET=1`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gitmodel_client::Progress;

use crate::units::bytes;

static QUIET: OnceLock<bool> = OnceLock::new();

/// Set once from the command line.
pub fn set_quiet(quiet: bool) {
    let env = std::env::var_os("GIT_MODEL_QUIET").is_some_and(|v| v == "1");
    let _ = QUIET.set(quiet || env);
}

pub fn quiet() -> bool {
    *QUIET.get().unwrap_or(&false)
}

/// Runs `work` while showing the progress it reports.
pub fn show<T>(label: &str, work: impl FnOnce(&Progress) -> T) -> T {
    let progress = Progress::default();
    if quiet() {
        return work(&progress);
    }
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| report(label, &progress, &finished));
        let result = work(&progress);
        finished.store(true, Ordering::Relaxed);
        result
    })
}

fn report(label: &str, p: &Progress, finished: &AtomicBool) {
    let start = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("git-model: {label}"));
        while !finished.load(Ordering::Relaxed) {
            bar.set_length(p.total.load(Ordering::Relaxed));
            bar.set_position(p.done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
        return;
    }
    let mut last = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            let (done, total) = (
                p.done.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed),
            );
            let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "git-model: {label}: {} of {} ({:.0}%), {}/s",
                bytes(done),
                bytes(total),
                if total == 0 {
                    0.0
                } else {
                    100.0 * done as f64 / total as f64
                },
                bytes(rate as u64)
            );
        }
    }
}
