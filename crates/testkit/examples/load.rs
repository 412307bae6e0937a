//! `load BIN_DIR CLIENTS [TENSORS TENSOR_KIB]`: the load run of `scripts/load`. CLIENTS
//! clients push overlapping models to one `git-model-server` at once, then CLIENTS clients
//! pull at once from a restarted server; every byte is compared, and the server's peak RSS
//! (`VmHWM`) of each phase is printed, one line each. BIN_DIR holds `git-model` and
//! `git-model-server`.

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 && args.len() != 4 {
        eprintln!("usage: load BIN_DIR CLIENTS [TENSORS TENSOR_KIB]");
        std::process::exit(2);
    }
    let number = |i: usize, what: &str| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("load: {what} must be a number, not {:?}", args[i]);
            std::process::exit(2)
        })
    };
    let bin = PathBuf::from(&args[0]);
    let spec = gitmodel_testkit::load::LoadSpec {
        clients: number(1, "CLIENTS"),
        tensors: if args.len() == 4 {
            number(2, "TENSORS")
        } else {
            16
        },
        tensor_bytes: if args.len() == 4 {
            number(3, "TENSOR_KIB") << 10
        } else {
            256 << 10
        },
    };
    if spec.clients == 0 || spec.tensors == 0 || spec.tensor_bytes == 0 {
        eprintln!("load: CLIENTS, TENSORS and TENSOR_KIB must be at least 1");
        std::process::exit(2);
    }
    let work = tempfile::tempdir().expect("a scratch directory");
    let r = gitmodel_testkit::load::run(
        &bin.join("git-model"),
        &bin.join("git-model-server"),
        work.path(),
        spec,
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    let n = r.clients;
    println!(
        "server peak RSS, {n} clients pushing at once: {:.1} MiB (VmHWM {} kB); {:.1} MiB of models pushed in {:.1} s, {:.1} MiB stored",
        mib(r.push_peak_rss_kib),
        r.push_peak_rss_kib,
        r.bytes_pushed as f64 / 1048576.0,
        r.push_seconds,
        r.server_bytes as f64 / 1048576.0
    );
    println!(
        "server peak RSS, {n} clients pulling at once: {:.1} MiB (VmHWM {} kB); {:.1} MiB pulled byte-exact in {:.1} s",
        mib(r.pull_peak_rss_kib),
        r.pull_peak_rss_kib,
        r.bytes_pulled as f64 / 1048576.0,
        r.pull_seconds
    );
}
