//! Metrics and params files, flattened to `key → value` maps, compared across versions.
//!
//! Formats by extension: `.json`, `.yaml`/`.yml`, `.toml`, `.csv`/`.tsv`. Nested tables
//! flatten to dotted keys (`eval.accuracy`), list items to their index (`layers.0`). A CSV
//! with the header `name,value` (or `metric,value`, `key,value`) is a key/value list;
//! any other CSV is a log with one row per step, and its last row is the result.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("{file}: {why}")]
    Parse { file: String, why: String },
    #[error("{file}: unsupported format (use .json, .yaml, .yml, .toml, .csv or .tsv)")]
    Format { file: String },
}

/// A metric or param value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Num(f64),
    Bool(bool),
    Text(String),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(v) => Some(*v),
            _ => None,
        }
    }

    fn from_text(s: &str) -> Value {
        let t = s.trim();
        match t.parse::<f64>() {
            Ok(v) => Value::Num(v),
            Err(_) => match t {
                "true" | "True" => Value::Bool(true),
                "false" | "False" => Value::Bool(false),
                _ => Value::Text(s.to_string()),
            },
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Num(v) => write!(f, "{}", fmt_num(*v)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// Numbers the way people write them: integers without `.0`, others with up to six
/// significant decimals.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 1e-4 && v.abs() < 1e9 {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.4e}")
    }
}

/// Flat `key → value`.
pub type Flat = BTreeMap<String, Value>;

/// Parses one metrics or params file by its extension.
pub fn parse(file: &str, data: &[u8]) -> Result<Flat, MetricsError> {
    let err = |why: String| MetricsError::Parse {
        file: file.to_string(),
        why,
    };
    let ext = file
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let text = || std::str::from_utf8(data).map_err(|e| err(format!("not UTF-8: {e}")));
    let mut out = Flat::new();
    match ext.as_str() {
        "json" => {
            let v: serde_json::Value =
                serde_json::from_slice(data).map_err(|e| err(e.to_string()))?;
            flatten_json("", &v, &mut out);
        }
        "yaml" | "yml" => {
            let v: serde_yaml::Value =
                serde_yaml::from_slice(data).map_err(|e| err(e.to_string()))?;
            let v = serde_json::to_value(&v).map_err(|e| err(e.to_string()))?;
            flatten_json("", &v, &mut out);
        }
        "toml" => {
            let v: toml::Table = toml::from_str(text()?).map_err(|e| err(e.to_string()))?;
            let v = serde_json::to_value(&v).map_err(|e| err(e.to_string()))?;
            flatten_json("", &v, &mut out);
        }
        "csv" | "tsv" => {
            let delim = if ext == "tsv" { b'\t' } else { b',' };
            let t =
                crate::table::parse_delimited(data, delim, file).map_err(|e| err(e.to_string()))?;
            let cols: Vec<String> = t.columns.iter().map(|c| c.to_ascii_lowercase()).collect();
            let kv = cols.len() == 2
                && matches!(cols[0].as_str(), "name" | "metric" | "key" | "param")
                && cols[1] == "value";
            if kv {
                for row in &t.rows {
                    if let (Some(k), Some(v)) = (row.first(), row.get(1)) {
                        out.insert(k.clone(), Value::from_text(v));
                    }
                }
            } else if let Some(last) = t.rows.last() {
                for (c, v) in t.columns.iter().zip(last) {
                    out.insert(c.clone(), Value::from_text(v));
                }
            }
        }
        _ => {
            return Err(MetricsError::Format {
                file: file.to_string(),
            })
        }
    }
    Ok(out)
}

fn flatten_json(prefix: &str, v: &serde_json::Value, out: &mut Flat) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten_json(&key(k), v, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten_json(&key(&i.to_string()), v, out);
            }
        }
        serde_json::Value::Number(n) => {
            out.insert(
                prefix.to_string(),
                Value::Num(n.as_f64().unwrap_or(f64::NAN)),
            );
        }
        serde_json::Value::Bool(b) => {
            out.insert(prefix.to_string(), Value::Bool(*b));
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), Value::Text(s.clone()));
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), Value::Text("null".into()));
        }
    }
}

/// The numeric entries of a flat map (what gates compare).
pub fn numeric(flat: &Flat) -> BTreeMap<String, f64> {
    flat.iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect()
}

/// One key across two versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub key: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// `new − old` when both are numbers.
    pub change: Option<f64>,
}

/// Keys whose value differs (or, with `all`, every key), sorted.
pub fn diff(old: &Flat, new: &Flat, all: bool) -> Vec<Delta> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (old.get(k), new.get(k));
            if !all && o == n {
                return None;
            }
            let change = match (o.and_then(Value::as_f64), n.and_then(Value::as_f64)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            Some(Delta {
                key: k.clone(),
                old: o.cloned(),
                new: n.cloned(),
                change,
            })
        })
        .collect()
}

/// Renders deltas as a Markdown table (`old_label`, `new_label` head the value columns).
pub fn render_diff(deltas: &[Delta], old_label: &str, new_label: &str) -> String {
    let cell = |v: &Option<Value>| v.as_ref().map(|v| v.to_string()).unwrap_or("—".into());
    let rows: Vec<Vec<String>> = deltas
        .iter()
        .map(|d| {
            vec![
                d.key.clone(),
                cell(&d.old),
                cell(&d.new),
                d.change.map(signed).unwrap_or_default(),
            ]
        })
        .collect();
    markdown(
        &[
            "key".into(),
            old_label.into(),
            new_label.into(),
            "change".into(),
        ],
        &rows,
    )
}

/// `+0.03` / `-1.2`.
pub fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", fmt_num(v))
    } else {
        fmt_num(v)
    }
}

/// A Markdown table with padded columns.
pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(escape(c).chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let c = escape(cells.get(i).map(String::as_str).unwrap_or(""));
            let pad = w - c.chars().count();
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        s
    };
    let mut out = line(header);
    out.push('\n');
    out.push('|');
    for w in &widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// One column of the `compare` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    /// `"param"` or `"metric"`.
    pub kind: &'static str,
}

/// One compared ref.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    /// What was asked for (branch name or rev).
    pub name: String,
    pub commit: String,
    pub params: Flat,
    pub metrics: Flat,
    /// Numeric metric changes against the baseline (first row).
    pub deltas: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub columns: Vec<Column>,
    pub rows: Vec<CompareRow>,
}

/// Builds the comparison: the first row is the baseline, others follow sorted by
/// `sort` (descending unless `ascending`), rows lacking the metric last.
pub fn compare(
    mut rows: Vec<CompareRow>,
    sort: Option<&str>,
    ascending: bool,
) -> Result<Comparison, String> {
    if rows.is_empty() {
        return Err("nothing to compare".into());
    }
    let params: BTreeSet<String> = rows.iter().flat_map(|r| r.params.keys().cloned()).collect();
    let metrics: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    if let Some(s) = sort {
        if !metrics.contains(s) && !params.contains(s) {
            return Err(format!(
                "cannot sort by {s:?}: no compared version has it (metrics: {})",
                metrics.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let base = rows[0].metrics.clone();
    for r in rows.iter_mut() {
        r.deltas = r
            .metrics
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()? - base.get(k)?.as_f64()?)))
            .collect();
    }
    if let Some(s) = sort {
        let key = |r: &CompareRow| {
            r.metrics
                .get(s)
                .or_else(|| r.params.get(s))
                .and_then(Value::as_f64)
        };
        rows[1..].sort_by(|a, b| match (key(a), key(b)) {
            (Some(x), Some(y)) => {
                let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                if ascending {
                    o
                } else {
                    o.reverse()
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    let columns = params
        .into_iter()
        .map(|name| Column {
            name,
            kind: "param",
        })
        .chain(metrics.into_iter().map(|name| Column {
            name,
            kind: "metric",
        }))
        .collect();
    Ok(Comparison {
        baseline: rows[0].name.clone(),
        columns,
        rows,
    })
}

impl Comparison {
    fn cells(&self, with_deltas: bool) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = vec!["ref".to_string(), "commit".to_string()];
        header.extend(self.columns.iter().map(|c| c.name.clone()));
        let rows = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut cells = vec![r.name.clone(), r.commit.chars().take(10).collect()];
                for c in &self.columns {
                    let v = if c.kind == "param" {
                        r.params.get(&c.name)
                    } else {
                        r.metrics.get(&c.name)
                    };
                    let mut s = v.map(|v| v.to_string()).unwrap_or_default();
                    if with_deltas && i > 0 && c.kind == "metric" {
                        if let Some(d) = r.deltas.get(&c.name) {
                            let _ = write!(s, " ({})", signed(*d));
                        }
                    }
                    cells.push(s);
                }
                cells
            })
            .collect();
        (header, rows)
    }

    /// Markdown, with metric deltas against the baseline in parentheses.
    pub fn to_markdown(&self) -> String {
        let (h, rows) = self.cells(true);
        format!(
            "{}\nbaseline: {}\n",
            markdown(&h, &rows).trim_end(),
            self.baseline
        )
    }

    /// CSV: values only (deltas are in the JSON).
    pub fn to_csv(&self) -> String {
        let (h, rows) = self.cells(false);
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(&h);
        for r in &rows {
            let _ = w.write_record(r);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_format() {
        let j = parse(
            "m.json",
            br#"{"acc": 0.9, "eval": {"loss": 0.25, "ok": true}, "l": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(j["acc"], Value::Num(0.9));
        assert_eq!(j["eval.loss"], Value::Num(0.25));
        assert_eq!(j["eval.ok"], Value::Bool(true));
        assert_eq!(j["l.1"], Value::Num(2.0));
        let y = parse(
            "p.yaml",
            b"lr: 0.001\nmodel:\n  arch: resnet\n  depth: 50\n",
        )
        .unwrap();
        assert_eq!(y["model.arch"], Value::Text("resnet".into()));
        assert_eq!(y["model.depth"], Value::Num(50.0));
        let t = parse("p.toml", b"lr = 0.01\n[opt]\nname = \"adam\"\n").unwrap();
        assert_eq!(t["opt.name"], Value::Text("adam".into()));
        let kv = parse("m.csv", b"metric,value\naccuracy,0.93\nf1,0.9\n").unwrap();
        assert_eq!(kv["accuracy"], Value::Num(0.93));
        let log = parse("log.csv", b"step,loss\n1,0.9\n2,0.5\n").unwrap();
        assert_eq!(log["loss"], Value::Num(0.5));
        let e = parse("m.json", b"{").unwrap_err().to_string();
        assert!(e.starts_with("m.json: "), "{e}");
        assert!(parse("m.yaml", b"a: [").is_err());
        assert!(matches!(
            parse("m.txt", b""),
            Err(MetricsError::Format { .. })
        ));
    }

    #[test]
    fn diffs_and_formats() {
        let a = parse("a.json", br#"{"acc": 0.9, "loss": 0.3, "name": "x"}"#).unwrap();
        let b = parse("b.json", br#"{"acc": 0.95, "loss": 0.3, "f1": 1}"#).unwrap();
        let d = diff(&a, &b, false);
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, vec!["acc", "f1", "name"]);
        assert!((d[0].change.unwrap() - 0.05).abs() < 1e-12);
        let text = render_diff(&d, "main", "exp");
        assert!(text.contains("| acc  | 0.9  | 0.95 | +0.05  |"), "{text}");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.123456789), "0.123457");
        assert_eq!(signed(-0.5), "-0.5");
    }

    #[test]
    fn comparison_sorts_after_the_baseline() {
        let row = |name: &str, acc: f64| CompareRow {
            name: name.into(),
            commit: "abc".into(),
            params: [("lr".to_string(), Value::Num(0.1))].into(),
            metrics: [("acc".to_string(), Value::Num(acc))].into(),
            deltas: BTreeMap::new(),
        };
        let c = compare(
            vec![row("main", 0.8), row("a", 0.7), row("b", 0.9)],
            Some("acc"),
            false,
        )
        .unwrap();
        let names: Vec<&str> = c.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["main", "b", "a"]);
        assert!((c.rows[1].deltas["acc"] - 0.1).abs() < 1e-12);
        let md = c.to_markdown();
        assert!(md.contains("0.9 (+0.1)"), "{md}");
        assert!(c
            .to_csv()
            .starts_with("ref,commit,lr,acc\nmain,abc,0.1,0.8\nb,"));
        assert!(compare(vec![row("main", 1.0)], Some("nope"), false).is_err());
    }
}
