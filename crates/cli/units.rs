//! Human-readable sizes and shares for messages.

/// Sizes for people: `1.5 MiB` (one formatter for every command).
pub use gitmodel_ml::tensor::human_bytes as bytes;

/// Share of `part` in `whole`, as a percentage.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
