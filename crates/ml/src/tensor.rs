//! Tensors in a model file and what changed between two versions of it.
//!
//! [`ModelHeader`] is what the format parsers produce: each tensor's name, type, shape and
//! absolute byte range in the file. [`pair_tensors`] matches two headers by name;
//! [`TensorStats`] accumulates the numbers of one changed tensor (elements changed,
//! relative L2 change, largest absolute difference) from byte slices the caller reads in
//! pieces, so a tensor never needs to be in memory whole. [`ModelDiff`] is the report.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::Serialize;

use crate::dtype::DType;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// The parsed header of a model file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelHeader {
    pub format: &'static str,
    /// Bytes of the header itself (everything before the first tensor's data).
    pub header_len: u64,
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// Two versions of one tensor name.
#[derive(Debug, Clone)]
pub enum Pair<'a> {
    Added(&'a TensorInfo),
    Removed(&'a TensorInfo),
    Both(&'a TensorInfo, &'a TensorInfo),
}

/// Matches tensors by name; in the new file's order, removed ones after.
pub fn pair_tensors<'a>(old: &'a ModelHeader, new: &'a ModelHeader) -> Vec<Pair<'a>> {
    let by_name: HashMap<&str, &TensorInfo> =
        old.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut out = Vec::with_capacity(new.tensors.len());
    let mut matched = std::collections::HashSet::new();
    for t in &new.tensors {
        match by_name.get(t.name.as_str()) {
            Some(o) => {
                matched.insert(t.name.as_str());
                out.push(Pair::Both(o, t));
            }
            None => out.push(Pair::Added(t)),
        }
    }
    for t in &old.tensors {
        if !matched.contains(t.name.as_str()) {
            out.push(Pair::Removed(t));
        }
    }
    out
}

/// Numbers about one tensor present, with the same type and shape, in both versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TensorStats {
    /// Elements compared (bytes, for types compared byte by byte).
    pub elements: u64,
    pub changed: u64,
    /// Whether elements were decoded (false: quantized or unknown type, bytes compared).
    pub numeric: bool,
    pub sum_sq_diff: f64,
    pub sum_sq_old: f64,
    pub max_abs_diff: f64,
    /// Elements where either side is NaN or infinite (left out of the sums).
    pub non_finite: u64,
}

impl TensorStats {
    pub fn new(dtype: &DType) -> TensorStats {
        TensorStats {
            numeric: dtype.numeric_size().is_some(),
            ..Default::default()
        }
    }

    /// Adds the next piece of both versions. The pieces must have equal lengths and, for
    /// numeric types, start and end on element boundaries.
    pub fn update(&mut self, dtype: &DType, old: &[u8], new: &[u8]) {
        debug_assert_eq!(old.len(), new.len());
        let Some(size) = dtype.numeric_size().filter(|_| self.numeric) else {
            self.elements += old.len() as u64;
            self.changed += old.iter().zip(new).filter(|(a, b)| a != b).count() as u64;
            return;
        };
        for (a, b) in old.chunks_exact(size).zip(new.chunks_exact(size)) {
            self.elements += 1;
            let x = dtype.decode(a);
            if a != b {
                self.changed += 1;
                let y = dtype.decode(b);
                if x.is_finite() && y.is_finite() {
                    let d = y - x;
                    self.sum_sq_diff += d * d;
                    self.max_abs_diff = self.max_abs_diff.max(d.abs());
                } else {
                    self.non_finite += 1;
                }
            }
            if x.is_finite() {
                self.sum_sq_old += x * x;
            }
        }
    }

    /// `changed / elements`.
    pub fn fraction_changed(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.changed as f64 / self.elements as f64
        }
    }

    /// ‖new − old‖₂ / ‖old‖₂; `None` for byte-compared types or an all-zero old tensor.
    pub fn relative_l2(&self) -> Option<f64> {
        (self.numeric && self.sum_sq_old > 0.0).then(|| (self.sum_sq_diff / self.sum_sq_old).sqrt())
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum TensorChange {
    Added {
        dtype: String,
        shape: Vec<u64>,
        bytes: u64,
    },
    Removed {
        dtype: String,
        shape: Vec<u64>,
        bytes: u64,
    },
    /// Type or shape differ: the values are not comparable element by element.
    Retyped {
        old_dtype: String,
        new_dtype: String,
        old_shape: Vec<u64>,
        new_shape: Vec<u64>,
    },
    Changed {
        dtype: String,
        shape: Vec<u64>,
        elements: u64,
        changed: u64,
        fraction_changed: f64,
        relative_l2: Option<f64>,
        max_abs_diff: Option<f64>,
        non_finite: u64,
    },
}

impl TensorChange {
    pub fn changed(t: &TensorInfo, s: &TensorStats) -> TensorChange {
        TensorChange::Changed {
            dtype: t.dtype.name(),
            shape: t.shape.clone(),
            elements: s.elements,
            changed: s.changed,
            fraction_changed: s.fraction_changed(),
            relative_l2: s.relative_l2(),
            max_abs_diff: s.numeric.then_some(s.max_abs_diff),
            non_finite: s.non_finite,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorDiff {
    pub name: String,
    #[serde(flatten)]
    pub change: TensorChange,
}

/// The per-tensor diff of two versions of a model file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelDiff {
    pub format: String,
    pub old_size: u64,
    pub new_size: u64,
    pub old_tensors: usize,
    pub new_tensors: usize,
    pub unchanged: usize,
    pub tensors: Vec<TensorDiff>,
    /// Metadata keys whose value differs, was added or removed.
    pub metadata_changed: Vec<String>,
    /// Groups (layers) with at least one tensor that differs, in file order.
    pub layers_changed: Vec<String>,
    /// Content bytes read (or fetched) to compute this diff, both versions together.
    pub bytes_read: u64,
}

/// The layer a tensor belongs to: its name without the last dotted component
/// (`model.layers.3.mlp.up_proj.weight` → `model.layers.3.mlp.up_proj`), grouped further
/// to the component after a numeric index (`model.layers.3`) when there is one.
pub fn layer_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    if let Some(i) = parts
        .iter()
        .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return parts[..=i].join(".");
    }
    match name.rsplit_once('.') {
        Some((head, _)) => head.to_string(),
        None => name.to_string(),
    }
}

impl ModelDiff {
    /// Fills `layers_changed` from `tensors` (call once they are all in).
    pub fn finish(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.layers_changed = self
            .tensors
            .iter()
            .map(|t| layer_of(&t.name))
            .filter(|l| seen.insert(l.clone()))
            .collect();
    }

    pub fn is_unchanged(&self) -> bool {
        self.tensors.is_empty() && self.metadata_changed.is_empty()
    }

    /// The human summary, one tensor per line.
    pub fn render(&self, path: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{path}: {}, {} → {} tensors, {} → {}",
            self.format,
            self.old_tensors,
            self.new_tensors,
            human_bytes(self.old_size),
            human_bytes(self.new_size)
        );
        let width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &self.tensors {
            let name = &t.name;
            let line = match &t.change {
                TensorChange::Added { dtype, shape, .. } => {
                    format!("  + {name:<width$}  {dtype} {}", shape_text(shape))
                }
                TensorChange::Removed { dtype, shape, .. } => {
                    format!("  - {name:<width$}  {dtype} {}", shape_text(shape))
                }
                TensorChange::Retyped {
                    old_dtype,
                    new_dtype,
                    old_shape,
                    new_shape,
                } => format!(
                    "  ~ {name:<width$}  {old_dtype} {} → {new_dtype} {}",
                    shape_text(old_shape),
                    shape_text(new_shape)
                ),
                TensorChange::Changed {
                    dtype,
                    shape,
                    elements,
                    changed,
                    fraction_changed,
                    relative_l2,
                    max_abs_diff,
                    ..
                } => {
                    let mut s = format!(
                        "  M {name:<width$}  {dtype} {}  {changed}/{elements} changed ({:.2}%)",
                        shape_text(shape),
                        fraction_changed * 100.0
                    );
                    if let Some(r) = relative_l2 {
                        let _ = write!(s, "  rel L2 {r:.4}");
                    }
                    if let Some(m) = max_abs_diff {
                        let _ = write!(s, "  max |Δ| {}", short_float(*m));
                    }
                    s
                }
            };
            let _ = writeln!(out, "{line}");
        }
        for k in &self.metadata_changed {
            let _ = writeln!(out, "  metadata {k:?} changed");
        }
        let differ = self.tensors.len();
        if differ == 0 && self.metadata_changed.is_empty() {
            let _ = writeln!(out, "  no tensor changed");
        } else {
            let _ = writeln!(
                out,
                "  {differ} tensor(s) differ, {} unchanged; layers: {}",
                self.unchanged,
                if self.layers_changed.is_empty() {
                    "(none)".to_string()
                } else {
                    self.layers_changed.join(", ")
                }
            );
        }
        out
    }
}

/// `0.0996`, or `1.2e-7` for values far from 1.
fn short_float(v: f64) -> String {
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Sizes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn stats_of_a_changed_tensor() {
        let old = f32s(&[3.0, 4.0, 0.0, 1.0]);
        let new = f32s(&[3.0, 4.0, 0.5, 1.0]);
        let mut s = TensorStats::new(&DType::F32);
        // In two pieces, as a caller streaming a large tensor would.
        s.update(&DType::F32, &old[..8], &new[..8]);
        s.update(&DType::F32, &old[8..], &new[8..]);
        assert_eq!((s.elements, s.changed), (4, 1));
        assert_eq!(s.fraction_changed(), 0.25);
        assert_eq!(s.max_abs_diff, 0.5);
        let r = s.relative_l2().unwrap();
        assert!((r - 0.5 / 26f64.sqrt()).abs() < 1e-12, "{r}");
    }

    #[test]
    fn byte_compared_types_and_non_finite() {
        let mut s = TensorStats::new(&DType::Ggml(2));
        s.update(&DType::Ggml(2), &[1, 2, 3], &[1, 9, 3]);
        assert_eq!((s.elements, s.changed, s.numeric), (3, 1, false));
        assert_eq!(s.relative_l2(), None);
        let mut s = TensorStats::new(&DType::F32);
        s.update(&DType::F32, &f32s(&[1.0, 2.0]), &f32s(&[f32::NAN, 2.0]));
        assert_eq!((s.changed, s.non_finite), (1, 1));
    }

    #[test]
    fn layers() {
        assert_eq!(
            layer_of("model.layers.3.mlp.up_proj.weight"),
            "model.layers.3"
        );
        assert_eq!(layer_of("layers.17.weight"), "layers.17");
        assert_eq!(layer_of("lm_head.weight"), "lm_head");
        assert_eq!(layer_of("bias"), "bias");
    }
}
