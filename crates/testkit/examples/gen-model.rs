//! Writes a deterministic synthetic safetensors model, for the README's demo.
//!
//! `gen-model OUT SIZE_MIB [EDITED_TENSOR…]`: tensors of 1 MiB each; every tensor index
//! listed is changed (as a fine-tune would change a few layers).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: gen-model OUT SIZE_MIB [EDITED_TENSOR...]");
        std::process::exit(2);
    }
    let mib: usize = args[1].parse().expect("SIZE_MIB is a number");
    let mut versions = vec![0u64; mib];
    for t in &args[2..] {
        let i: usize = t.parse().expect("tensor index");
        versions[i] += 1;
    }
    let data = gitmodel_testkit::safetensors(7, 1 << 20, &versions);
    std::fs::write(&args[0], data).expect("writing the model");
}
