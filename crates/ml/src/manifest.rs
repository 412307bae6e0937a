//! `models.toml`, committed at the repository root: which file each model is, what it
//! was trained from, where its params and metrics are, and the gates of its stages.
//!
//! ```toml
//! metrics = ["metrics.json"]          # optional, repository-wide (metrics show / compare)
//! params = ["params.yaml"]
//!
//! [models.vision]
//! path = "models/vision.safetensors"
//! inputs = ["data/train.csv", "data/labels.jsonl"]
//! params = ["params.yaml"]
//! metrics = ["metrics.json"]
//!
//! [models.vision.stages.production]
//! require = ["accuracy >= 0.9", "accuracy >= previous", "loss <= previous"]
//! ```
//! Unknown keys are errors (a typo must not silently disable a gate). Errors name the
//! file, the line and column, and what is wrong.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The manifest's file name, at the repository root.
pub const MANIFEST: &str = "models.toml";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    pub models: BTreeMap<String, ModelSpec>,
    /// Repository-wide metrics and params files (besides the models' own).
    pub metrics: Vec<String>,
    pub params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub path: String,
    pub inputs: Vec<String>,
    pub params: Vec<String>,
    pub metrics: Vec<String>,
    pub stages: BTreeMap<String, Vec<Gate>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    Number(f64),
    /// The same metric of the version currently in the stage.
    Previous,
}

/// One requirement: `<metric> <op> <number | previous>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub text: String,
    pub metric: String,
    pub op: Op,
    pub rhs: Rhs,
}

/// Why a gate of `models.toml` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("gate {text:?} has no comparison (expected e.g. \"accuracy >= 0.9\" or \"loss <= previous\")")]
    NoComparison { text: String },
    #[error("gate {text:?}: expected a metric name before {op:?}")]
    NoMetric { text: String, op: &'static str },
    #[error("gate {text:?}: {rhs:?} is neither a number nor `previous`")]
    BadValue { text: String, rhs: String },
}

/// `models.toml` names a model it does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownModel {
    #[error("no model {name:?}: {MANIFEST} defines no models")]
    NoModels { name: String },
    #[error("no model {name:?} in {MANIFEST} (models: {})", .known.join(", "))]
    NotDefined { name: String, known: Vec<String> },
}

impl Gate {
    pub fn parse(text: &str) -> Result<Gate, GateError> {
        let t = text.trim();
        // Two-character operators first.
        let ops = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let Some((at, sym, op)) = ops
            .iter()
            .filter_map(|(s, op)| t.find(s).map(|i| (i, *s, *op)))
            .min_by_key(|(i, s, _)| (*i, std::cmp::Reverse(s.len())))
        else {
            return Err(GateError::NoComparison { text: text.into() });
        };
        let metric = t[..at].trim();
        let rhs = t[at + sym.len()..].trim();
        if metric.is_empty() || metric.contains(char::is_whitespace) {
            return Err(GateError::NoMetric {
                text: text.into(),
                op: sym,
            });
        }
        let rhs = if rhs == "previous" {
            Rhs::Previous
        } else {
            match rhs.parse::<f64>() {
                Ok(v) if v.is_finite() => Rhs::Number(v),
                _ => {
                    return Err(GateError::BadValue {
                        text: text.into(),
                        rhs: rhs.into(),
                    })
                }
            }
        };
        Ok(Gate {
            text: t.to_string(),
            metric: metric.to_string(),
            op,
            rhs,
        })
    }
}

/// The outcome of one gate for one candidate version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateResult {
    pub rule: String,
    pub passed: bool,
    pub detail: String,
}

/// Checks `gates` against the candidate's metrics and those of the version currently in
/// the stage (`previous`: `None` when the stage is empty).
pub fn evaluate(
    gates: &[Gate],
    candidate: &BTreeMap<String, f64>,
    previous: Option<&BTreeMap<String, f64>>,
) -> Vec<GateResult> {
    gates
        .iter()
        .map(|g| {
            let result = |passed, detail: String| GateResult {
                rule: g.text.clone(),
                passed,
                detail,
            };
            let Some(&value) = candidate.get(&g.metric) else {
                return result(false, format!("metric {:?} is missing", g.metric));
            };
            let (bound, what) = match &g.rhs {
                Rhs::Number(v) => (*v, format!("{v}")),
                Rhs::Previous => match previous {
                    None => return result(true, "no previous version in this stage".into()),
                    Some(p) => match p.get(&g.metric) {
                        Some(v) => (*v, format!("previous {v}")),
                        None => {
                            return result(
                                true,
                                format!("the previous version has no {:?}", g.metric),
                            )
                        }
                    },
                },
            };
            let ok = g.op.holds(value, bound);
            result(
                ok,
                format!(
                    "{} = {value} {} {what}",
                    g.metric,
                    if ok { g.op.symbol() } else { negated(g.op) }
                ),
            )
        })
        .collect()
}

fn negated(op: Op) -> &'static str {
    match op {
        Op::Ge => "<",
        Op::Gt => "<=",
        Op::Le => ">",
        Op::Lt => ">=",
        Op::Eq => "!=",
        Op::Ne => "==",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    models: BTreeMap<String, toml::Spanned<RawModel>>,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    params: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: toml::Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    params: Vec<String>,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    stages: BTreeMap<String, toml::Spanned<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    #[serde(default)]
    require: Vec<toml::Spanned<String>>,
}

/// Whether `s` is usable as a model or stage name (also in refs and file names).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// Parses a manifest; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
    let at = |offset: usize, message: String| {
        let (line, column) = line_col(text, offset);
        ManifestError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        at(offset, e.message().trim().to_string())
    })?;
    let mut models = BTreeMap::new();
    for (name, model) in raw.models {
        let span = model.span();
        let model = model.into_inner();
        if !valid_name(&name) {
            return Err(at(
                span.start,
                format!("model name {name:?}: use letters, digits, '-', '_' and '.'"),
            ));
        }
        let path = model.path.get_ref().trim().to_string();
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(at(
                model.path.span().start,
                format!(
                    "models.{name}.path {path:?} must be a path relative to the repository root"
                ),
            ));
        }
        let mut stages = BTreeMap::new();
        for (stage, spec) in model.stages {
            if !valid_name(&stage) {
                return Err(at(
                    spec.span().start,
                    format!("stage name {stage:?}: use letters, digits, '-', '_' and '.'"),
                ));
            }
            let mut gates = Vec::new();
            for rule in &spec.get_ref().require {
                gates.push(
                    Gate::parse(rule.get_ref())
                        .map_err(|m| at(rule.span().start, m.to_string()))?,
                );
            }
            stages.insert(stage, gates);
        }
        let _ = model.description;
        models.insert(
            name.clone(),
            ModelSpec {
                name,
                path,
                inputs: model.inputs,
                params: model.params,
                metrics: model.metrics,
                stages,
            },
        );
    }
    Ok(Manifest {
        models,
        metrics: raw.metrics,
        params: raw.params,
    })
}

impl Manifest {
    /// The model `name`, or an error listing the ones there are.
    pub fn model(&self, name: &str) -> Result<&ModelSpec, UnknownModel> {
        self.models.get(name).ok_or_else(|| {
            if self.models.is_empty() {
                UnknownModel::NoModels { name: name.into() }
            } else {
                UnknownModel::NotDefined {
                    name: name.into(),
                    known: self.models.keys().cloned().collect(),
                }
            }
        })
    }

    /// The model whose file is `path`, if any.
    pub fn model_for_path(&self, path: &str) -> Option<&ModelSpec> {
        self.models.values().find(|m| m.path == path)
    }

    /// Every metrics file named anywhere, without repeats, in order.
    pub fn all_metrics(&self) -> Vec<String> {
        dedup(
            self.metrics
                .iter()
                .chain(self.models.values().flat_map(|m| &m.metrics)),
        )
    }

    pub fn all_params(&self) -> Vec<String> {
        dedup(
            self.params
                .iter()
                .chain(self.models.values().flat_map(|m| &m.params)),
        )
    }
}

fn dedup<'a>(items: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.filter(|s| seen.insert(*s)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
metrics = ["metrics.json"]

[models.vision]
path = "models/vision.safetensors"
inputs = ["data/train.csv"]
params = ["params.yaml"]
metrics = ["metrics.json"]

[models.vision.stages.staging]
require = ["accuracy >= 0.8"]

[models.vision.stages.production]
require = ["accuracy >= 0.9", "loss<=previous"]
"#;

    #[test]
    fn parses_models_and_gates() {
        let m = parse(GOOD, MANIFEST).unwrap();
        let v = m.model("vision").unwrap();
        assert_eq!(v.path, "models/vision.safetensors");
        assert_eq!(v.inputs, vec!["data/train.csv"]);
        let prod = &v.stages["production"];
        assert_eq!(prod[1].metric, "loss");
        assert_eq!(prod[1].op, Op::Le);
        assert_eq!(prod[1].rhs, Rhs::Previous);
        assert_eq!(m.all_metrics(), vec!["metrics.json"]);
        assert!(m
            .model("nlp")
            .unwrap_err()
            .to_string()
            .contains("models: vision"));
        assert_eq!(
            m.model_for_path("models/vision.safetensors").unwrap().name,
            "vision"
        );
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = parse("[models.a]\npath = \"a.bin\"\npaht = 1\n", "models.toml").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("models.toml", 3), "{e}");
        assert!(e.message.contains("paht"), "{e}");
        let e = parse(
            "[models.a]\npath = \"a.bin\"\n[models.a.stages.prod]\nrequire = [\"accuracy ~ 1\"]\n",
            "models.toml",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("no comparison"), "{e}");
        let e = parse("[models.a]\npath = \"../x\"\n", "m.toml").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("[models.a]\ninputs = []\n", "m.toml").unwrap_err();
        assert!(e.message.contains("path"), "{e}");
        let e = parse("[models.a\n", "m.toml").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        let e = parse(
            "[models.a]\npath = \"a\"\n[models.a.stages.p]\nrequire = [\"acc >= high\"]\n",
            "m",
        )
        .unwrap_err();
        assert!(e.to_string().contains("neither a number"), "{e}");
    }

    #[test]
    fn gates() {
        let gates: Vec<Gate> = ["accuracy >= 0.9", "accuracy >= previous", "loss < 1"]
            .iter()
            .map(|g| Gate::parse(g).unwrap())
            .collect();
        let cand: BTreeMap<String, f64> = [("accuracy".to_string(), 0.85)].into();
        let prev: BTreeMap<String, f64> = [("accuracy".to_string(), 0.8)].into();
        let r = evaluate(&gates, &cand, Some(&prev));
        assert!(
            !r[0].passed && r[0].detail == "accuracy = 0.85 < 0.9",
            "{:?}",
            r[0]
        );
        assert!(r[1].passed, "{:?}", r[1]);
        assert!(!r[2].passed && r[2].detail.contains("missing"));
        let r = evaluate(&gates[1..2], &cand, None);
        assert!(r[0].passed);
    }
}
