//! Tabular data (CSV, TSV, JSON Lines) and the row/column diff of two versions.
//!
//! Rows are matched by a key column when there is one (`--key`, or the first column when
//! its values are unique in both versions): a matched row whose cells differ is
//! *changed*. Without a usable key, rows are matched whole (as a multiset), so an edited
//! row shows as one removed and one added. Cells are compared on the columns both
//! versions have; added and removed columns are reported separately.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("{what}: line {line}: {why}")]
    Parse {
        what: String,
        line: u64,
        why: String,
    },
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("key column {key:?} is not in {what} (columns: {columns})")]
    NoKey {
        key: String,
        what: String,
        columns: String,
    },
    #[error("key column {key:?} is not unique in {what}: {value:?} appears more than once")]
    DuplicateKey {
        key: String,
        what: String,
        value: String,
    },
}

/// A table: named columns, rows of text cells (missing cells are empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Parses delimited text with a header row (`b','` for CSV, `b'\t'` for TSV).
pub fn parse_delimited(data: &[u8], delimiter: u8, what: &str) -> Result<Table, TableError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(data);
    let err = |e: csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        TableError::Parse {
            what: what.to_string(),
            line,
            why: e.to_string(),
        }
    };
    let columns: Vec<String> = reader
        .headers()
        .map_err(err)?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(err)?;
        let mut row: Vec<String> = rec.iter().map(str::to_string).collect();
        row.resize(columns.len().max(row.len()), String::new());
        rows.push(row);
    }
    Ok(Table { columns, rows })
}

/// Parses JSON Lines: one JSON object per non-blank line; columns are the keys in order
/// of first appearance; non-string values are kept as their JSON text.
pub fn parse_jsonl(data: &[u8], what: &str) -> Result<Table, TableError> {
    let text = std::str::from_utf8(data).map_err(|e| TableError::Invalid {
        what: what.to_string(),
        why: format!("not UTF-8: {e}"),
    })?;
    let mut columns: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut objects = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Object = serde_json::from_str(line).map_err(|e| TableError::Parse {
            what: what.to_string(),
            line: n as u64 + 1,
            why: if e.is_data() {
                "not a JSON object".to_string()
            } else {
                e.to_string()
            },
        })?;
        let map = value.0;
        for (k, _) in &map {
            if !index.contains_key(k) {
                index.insert(k.clone(), columns.len());
                columns.push(k.clone());
            }
        }
        objects.push(map);
    }
    let rows = objects
        .into_iter()
        .map(|map| {
            let mut row = vec![String::new(); columns.len()];
            for (k, v) in map {
                row[index[&k]] = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
            }
            row
        })
        .collect();
    Ok(Table { columns, rows })
}

/// A JSON object with its keys in file order (serde_json's map sorts them).
struct Object(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Object, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry()? {
                    out.push(kv);
                }
                Ok(Object(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One row in a diff's examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RowChange {
    Added {
        key: Option<String>,
        row: BTreeMap<String, String>,
    },
    Removed {
        key: Option<String>,
        row: BTreeMap<String, String>,
    },
    Changed {
        key: String,
        /// Column → (old, new).
        cells: BTreeMap<String, (String, String)>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    pub old_rows: usize,
    pub new_rows: usize,
    pub columns_added: Vec<String>,
    pub columns_removed: Vec<String>,
    /// The column rows were matched on; `None`: whole rows.
    pub key: Option<String>,
    pub rows_added: usize,
    pub rows_removed: usize,
    pub rows_changed: usize,
    pub rows_unchanged: usize,
    pub examples: Vec<RowChange>,
}

impl TableDiff {
    pub fn is_unchanged(&self) -> bool {
        self.rows_added + self.rows_removed + self.rows_changed == 0
            && self.columns_added.is_empty()
            && self.columns_removed.is_empty()
    }

    pub fn render(&self, path: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{path}: table, {} → {} rows{}",
            self.old_rows,
            self.new_rows,
            match &self.key {
                Some(k) => format!(" (rows matched on {k:?})"),
                None => " (rows matched whole; --key COL matches on a column)".into(),
            }
        );
        if !self.columns_added.is_empty() {
            let _ = writeln!(out, "  columns added: {}", self.columns_added.join(", "));
        }
        if !self.columns_removed.is_empty() {
            let _ = writeln!(
                out,
                "  columns removed: {}",
                self.columns_removed.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "  rows: {} added, {} removed, {} changed, {} unchanged",
            self.rows_added, self.rows_removed, self.rows_changed, self.rows_unchanged
        );
        let fmt_row = |row: &BTreeMap<String, String>| {
            row.iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for e in &self.examples {
            let line = match e {
                RowChange::Added { key, row } => match key {
                    Some(k) => format!("  + [{k}] {}", fmt_row(row)),
                    None => format!("  + {}", fmt_row(row)),
                },
                RowChange::Removed { key, row } => match key {
                    Some(k) => format!("  - [{k}] {}", fmt_row(row)),
                    None => format!("  - {}", fmt_row(row)),
                },
                RowChange::Changed { key, cells } => {
                    let cells: Vec<String> = cells
                        .iter()
                        .map(|(c, (o, n))| format!("{c}: {o:?} → {n:?}"))
                        .collect();
                    format!("  ~ [{key}] {}", cells.join(", "))
                }
            };
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// Diffs two tables. `key`: the column to match rows on (must exist in both and be
/// unique); `None` tries the first column, then whole rows. `examples`: how many example
/// rows of each kind to keep.
pub fn diff(
    old: &Table,
    new: &Table,
    key: Option<&str>,
    examples: usize,
) -> Result<TableDiff, TableError> {
    let old_cols: HashSet<&str> = old.columns.iter().map(String::as_str).collect();
    let new_cols: HashSet<&str> = new.columns.iter().map(String::as_str).collect();
    let mut d = TableDiff {
        old_rows: old.rows.len(),
        new_rows: new.rows.len(),
        columns_added: new
            .columns
            .iter()
            .filter(|c| !old_cols.contains(c.as_str()))
            .cloned()
            .collect(),
        columns_removed: old
            .columns
            .iter()
            .filter(|c| !new_cols.contains(c.as_str()))
            .cloned()
            .collect(),
        ..Default::default()
    };
    // Common columns, in the new file's order, with their positions on both sides.
    let common: Vec<(&str, usize, usize)> = new
        .columns
        .iter()
        .enumerate()
        .filter_map(|(j, c)| {
            let i = old.columns.iter().position(|o| o == c)?;
            Some((c.as_str(), i, j))
        })
        .collect();
    let cell = |row: &[String], i: usize| row.get(i).cloned().unwrap_or_default();
    let full_row = |t: &Table, row: &[String]| -> BTreeMap<String, String> {
        t.columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), cell(row, i)))
            .collect()
    };

    let key_col = match key {
        Some(k) => {
            for (t, what) in [(old, "the old version"), (new, "the new version")] {
                if !t.columns.iter().any(|c| c == k) {
                    return Err(TableError::NoKey {
                        key: k.to_string(),
                        what: what.to_string(),
                        columns: t.columns.join(", "),
                    });
                }
            }
            Some(k.to_string())
        }
        None => old
            .columns
            .first()
            .filter(|c| new.columns.first() == Some(c))
            .filter(|c| unique(old, c).is_ok() && unique(new, c).is_ok())
            .cloned(),
    };

    if let Some(k) = key_col {
        let old_index = unique(old, &k).map_err(|value| TableError::DuplicateKey {
            key: k.clone(),
            what: "the old version".into(),
            value,
        })?;
        let new_index = unique(new, &k).map_err(|value| TableError::DuplicateKey {
            key: k.clone(),
            what: "the new version".into(),
            value,
        })?;
        let ki_new = new.columns.iter().position(|c| *c == k).expect("checked");
        let ki_old = old.columns.iter().position(|c| *c == k).expect("checked");
        let (mut n_add, mut n_chg) = (0, 0);
        for row in &new.rows {
            let kv = cell(row, ki_new);
            match old_index.get(&kv) {
                None => {
                    d.rows_added += 1;
                    if n_add < examples {
                        n_add += 1;
                        d.examples.push(RowChange::Added {
                            key: Some(kv),
                            row: full_row(new, row),
                        });
                    }
                }
                Some(&oi) => {
                    let orow = &old.rows[oi];
                    let cells: BTreeMap<String, (String, String)> = common
                        .iter()
                        .filter(|(_, i, j)| cell(orow, *i) != cell(row, *j))
                        .map(|(c, i, j)| (c.to_string(), (cell(orow, *i), cell(row, *j))))
                        .collect();
                    if cells.is_empty() {
                        d.rows_unchanged += 1;
                    } else {
                        d.rows_changed += 1;
                        if n_chg < examples {
                            n_chg += 1;
                            d.examples.push(RowChange::Changed { key: kv, cells });
                        }
                    }
                }
            }
        }
        let mut n_rm = 0;
        for row in &old.rows {
            let kv = cell(row, ki_old);
            if !new_index.contains_key(&kv) {
                d.rows_removed += 1;
                if n_rm < examples {
                    n_rm += 1;
                    d.examples.push(RowChange::Removed {
                        key: Some(kv),
                        row: full_row(old, row),
                    });
                }
            }
        }
        d.key = Some(k);
        return Ok(d);
    }

    // Whole rows (projected on the common columns) as a multiset.
    let project_old =
        |row: &[String]| -> Vec<String> { common.iter().map(|(_, i, _)| cell(row, *i)).collect() };
    let project_new =
        |row: &[String]| -> Vec<String> { common.iter().map(|(_, _, j)| cell(row, *j)).collect() };
    let mut counts: HashMap<Vec<String>, i64> = HashMap::new();
    for row in &old.rows {
        *counts.entry(project_old(row)).or_default() += 1;
    }
    let mut n_add = 0;
    for row in &new.rows {
        let c = counts.entry(project_new(row)).or_default();
        if *c > 0 {
            *c -= 1;
            d.rows_unchanged += 1;
        } else {
            d.rows_added += 1;
            if n_add < examples {
                n_add += 1;
                d.examples.push(RowChange::Added {
                    key: None,
                    row: full_row(new, row),
                });
            }
        }
    }
    let mut n_rm = 0;
    for row in &old.rows {
        let c = counts.get_mut(&project_old(row)).expect("counted");
        if *c > 0 {
            *c -= 1;
            d.rows_removed += 1;
            if n_rm < examples {
                n_rm += 1;
                d.examples.push(RowChange::Removed {
                    key: None,
                    row: full_row(old, row),
                });
            }
        }
    }
    Ok(d)
}

/// Row index by the values of column `col`; `Err(value)` names a repeated value.
fn unique(t: &Table, col: &str) -> Result<HashMap<String, usize>, String> {
    let Some(i) = t.columns.iter().position(|c| c == col) else {
        return Err(String::new());
    };
    let mut index = HashMap::with_capacity(t.rows.len());
    for (r, row) in t.rows.iter().enumerate() {
        let v = row.get(i).cloned().unwrap_or_default();
        if index.insert(v.clone(), r).is_some() {
            return Err(v);
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_csv_diff() {
        let old = parse_delimited(b"id,text,label\n1,a,x\n2,b,y\n3,c,z\n", b',', "old").unwrap();
        let new =
            parse_delimited(b"id,text,label,w\n1,a,x,1\n2,B,y,1\n4,d,z,1\n", b',', "new").unwrap();
        let d = diff(&old, &new, Some("id"), 5).unwrap();
        assert_eq!(d.columns_added, vec!["w"]);
        assert_eq!(
            (
                d.rows_added,
                d.rows_removed,
                d.rows_changed,
                d.rows_unchanged
            ),
            (1, 1, 1, 1)
        );
        assert!(d.examples.contains(&RowChange::Changed {
            key: "2".into(),
            cells: [("text".to_string(), ("b".to_string(), "B".to_string()))].into(),
        }));
        // The first column is unique in both: used without --key too.
        assert_eq!(
            diff(&old, &new, None, 5).unwrap().key.as_deref(),
            Some("id")
        );
        let text = d.render("data.csv");
        assert!(
            text.contains("1 added, 1 removed, 1 changed, 1 unchanged"),
            "{text}"
        );
        assert!(text.contains("text: \"b\" → \"B\""), "{text}");
    }

    #[test]
    fn whole_row_diff_and_key_errors() {
        let old = parse_delimited(b"t\tl\nx\t1\nx\t1\ny\t2\n", b'\t', "old").unwrap();
        let new = parse_delimited(b"t\tl\nx\t1\ny\t3\n", b'\t', "new").unwrap();
        let d = diff(&old, &new, None, 5).unwrap();
        assert_eq!(d.key, None);
        assert_eq!((d.rows_added, d.rows_removed, d.rows_unchanged), (1, 2, 1));
        let e = diff(&old, &new, Some("t"), 5).unwrap_err();
        assert!(matches!(e, TableError::DuplicateKey { .. }), "{e}");
        let e = diff(&old, &new, Some("nope"), 5).unwrap_err().to_string();
        assert!(e.contains("columns: t, l"), "{e}");
    }

    #[test]
    fn jsonl() {
        let old =
            parse_jsonl(b"{\"id\":1,\"q\":\"a\"}\n\n{\"id\":2,\"q\":\"b\"}\n", "old").unwrap();
        let new = parse_jsonl(
            b"{\"id\":1,\"q\":\"a\",\"n\":[1]}\n{\"id\":2,\"q\":\"c\"}\n",
            "new",
        )
        .unwrap();
        assert_eq!(new.columns, vec!["id", "q", "n"]);
        let d = diff(&old, &new, Some("id"), 5).unwrap();
        assert_eq!(d.rows_changed, 1);
        assert_eq!(d.columns_added, vec!["n"]);
        let e = parse_jsonl(b"{\"a\":1}\n[1]\n", "f.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.jsonl: line 2"), "{e}");
        let e = parse_jsonl(b"{\"a\":", "f.jsonl").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
