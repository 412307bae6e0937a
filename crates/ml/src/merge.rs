//! Three-way merges of what git-model stores, as pure logic over bytes and headers.
//!
//! - [`merge_tables`]: CSV/TSV and JSON Lines matched on a key column. Each key's row is
//!   taken from the side that changed it; a key changed differently on both sides (or
//!   removed on one side and changed on the other) is a conflict, reported by key. The
//!   merged file is ours with theirs' edits applied: rows keep their exact bytes, rows
//!   theirs added go after the row that precedes them in theirs.
//! - [`model_summary`]: what one side of a model merge changed against the base, from
//!   the two headers and chunk lists only (equal chunk ids ⇒ equal bytes): nothing of the
//!   tensors is read, so a conflict can be explained without downloading either version.
//!
//! Reading the versions, writing the result and talking to git is the CLI's job.

use std::collections::HashMap;
use std::ops::Range;

use serde::Serialize;

use crate::ranges::{same_bytes, ChunkLayout};
use crate::table::TableError;
use crate::tensor::{pair_tensors, ModelHeader, Pair};

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Delimited text with a header row (`b','` for CSV, `b'\t'` for TSV).
    Delimited(u8),
    /// One JSON object per line.
    JsonLines,
}

/// A row's content, compared cell by cell (CSV) or as a JSON value (key order ignored).
#[derive(Debug, Clone, PartialEq)]
enum RowValue {
    Cells(Vec<String>),
    Json(serde_json::Value),
}

#[derive(Debug)]
struct Row {
    key: String,
    value: RowValue,
    /// The row's bytes in its file, up to where the next row starts.
    raw: Range<usize>,
}

/// A table split into its rows, each with its key and its bytes.
#[derive(Debug)]
struct KeyedTable<'a> {
    data: &'a [u8],
    /// Bytes before the first row (the header row; blank lines in JSON Lines).
    head: Range<usize>,
    /// Column names (delimited text only).
    columns: Vec<String>,
    rows: Vec<Row>,
    index: HashMap<String, usize>,
}

fn parse_keyed<'a>(
    data: &'a [u8],
    format: TableFormat,
    key: &str,
    what: &str,
) -> Result<KeyedTable<'a>, TableError> {
    let (head, columns, rows) = match format {
        TableFormat::Delimited(d) => parse_delimited_rows(data, d, key, what)?,
        TableFormat::JsonLines => parse_jsonl_rows(data, key, what)?,
    };
    let mut index = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if index.insert(r.key.clone(), i).is_some() {
            return Err(TableError::DuplicateKey {
                key: key.to_string(),
                what: what.to_string(),
                value: r.key.clone(),
            });
        }
    }
    Ok(KeyedTable {
        data,
        head,
        columns,
        rows,
        index,
    })
}

impl KeyedTable<'_> {
    fn value(&self, key: &str) -> Option<&RowValue> {
        self.index.get(key).map(|&i| &self.rows[i].value)
    }
}

type Parsed = (Range<usize>, Vec<String>, Vec<Row>);

fn parse_delimited_rows(
    data: &[u8],
    delimiter: u8,
    key: &str,
    what: &str,
) -> Result<Parsed, TableError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let err = |e: csv::Error| TableError::Parse {
        what: what.to_string(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        why: e.to_string(),
    };
    let mut record = csv::StringRecord::new();
    let mut starts = Vec::new();
    let mut records: Vec<Vec<String>> = Vec::new();
    while reader.read_record(&mut record).map_err(err)? {
        let at = record.position().map(|p| p.byte()).unwrap_or(0) as usize;
        starts.push(at);
        records.push(record.iter().map(str::to_string).collect());
    }
    if records.is_empty() {
        return Err(TableError::Invalid {
            what: what.to_string(),
            why: "no header row".into(),
        });
    }
    starts.push(data.len());
    let columns = records.remove(0);
    let ki = columns
        .iter()
        .position(|c| c == key)
        .ok_or_else(|| TableError::NoKey {
            key: key.to_string(),
            what: what.to_string(),
            columns: columns.join(", "),
        })?;
    let rows = records
        .into_iter()
        .enumerate()
        .map(|(i, cells)| Row {
            key: cells.get(ki).cloned().unwrap_or_default(),
            value: RowValue::Cells(cells),
            raw: starts[i + 1]..starts[i + 2],
        })
        .collect();
    Ok((0..starts[1], columns, rows))
}

fn parse_jsonl_rows(data: &[u8], key: &str, what: &str) -> Result<Parsed, TableError> {
    let mut rows: Vec<Row> = Vec::new();
    let mut head_end = data.len();
    let mut at = 0usize;
    for (n, line) in data.split_inclusive(|b| *b == b'\n').enumerate() {
        let start = at;
        at += line.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            // Blank lines stay with the row before them.
            if let Some(last) = rows.last_mut() {
                last.raw.end = at;
            }
            continue;
        }
        let parse_err = |why: String| TableError::Parse {
            what: what.to_string(),
            line: n as u64 + 1,
            why,
        };
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| parse_err(e.to_string()))?;
        let Some(obj) = value.as_object() else {
            return Err(parse_err("not a JSON object".into()));
        };
        let k = match obj.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return Err(parse_err(format!("no key field {key:?}"))),
        };
        if rows.is_empty() {
            head_end = start;
        }
        rows.push(Row {
            key: k,
            value: RowValue::Json(value),
            raw: start..at,
        });
    }
    Ok((0..head_end.min(data.len()), Vec::new(), rows))
}

/// What a keyed table merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableMerge {
    /// Both sides' edits, combined.
    Merged { bytes: Vec<u8>, stats: MergeStats },
    /// Edits that cannot both stand.
    Conflict(TableConflict),
}

/// Rows the merged file took from theirs (everything else is ours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MergeStats {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableConflict {
    /// Keys of the rows both sides changed differently, in ours' order, then theirs'.
    pub keys: Vec<String>,
    pub why: String,
}

/// Which version a merged row comes from.
#[derive(Clone, Copy)]
enum Pick {
    Ours(usize),
    Theirs(usize),
    Gone,
}

/// Merges three versions of a table row by row on `key`. Fails on a table that does not
/// parse or whose key is missing or repeated (the caller reports a conflict).
pub fn merge_tables(
    base: &[u8],
    ours: &[u8],
    theirs: &[u8],
    format: TableFormat,
    key: &str,
) -> Result<TableMerge, TableError> {
    let o = parse_keyed(base, format, key, "the base version")?;
    let a = parse_keyed(ours, format, key, "ours")?;
    let b = parse_keyed(theirs, format, key, "theirs")?;
    if a.columns != o.columns || b.columns != o.columns {
        return Ok(TableMerge::Conflict(TableConflict {
            keys: Vec::new(),
            why: format!(
                "the columns differ (base: {}; ours: {}; theirs: {}): rows are merged only \
                 when all three versions have the same columns",
                o.columns.join(","),
                a.columns.join(","),
                b.columns.join(",")
            ),
        }));
    }
    let mut stats = MergeStats::default();
    let mut conflicts = Vec::new();
    // Ours' rows, each kept, replaced by theirs' version, or dropped.
    let mut picks = Vec::with_capacity(a.rows.len());
    for (i, row) in a.rows.iter().enumerate() {
        let (ov, bv) = (o.value(&row.key), b.value(&row.key));
        let pick = if bv == Some(&row.value) || bv == ov {
            Pick::Ours(i)
        } else if ov == Some(&row.value) {
            match b.index.get(&row.key) {
                Some(&j) => {
                    stats.changed += 1;
                    Pick::Theirs(j)
                }
                None => {
                    stats.removed += 1;
                    Pick::Gone
                }
            }
        } else {
            conflicts.push(row.key.clone());
            Pick::Ours(i)
        };
        picks.push(pick);
    }
    // Rows of theirs that ours lacks: added by theirs, or removed by ours.
    let mut inserts: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    let mut anchor: Option<usize> = None;
    for (j, row) in b.rows.iter().enumerate() {
        if let Some(&i) = a.index.get(&row.key) {
            if !matches!(picks[i], Pick::Gone) {
                anchor = Some(i);
            }
            continue;
        }
        match o.value(&row.key) {
            None => {
                stats.added += 1;
                inserts.entry(anchor).or_default().push(j);
            }
            // Removed by ours, untouched by theirs: stays removed.
            Some(ov) if *ov == row.value => {}
            Some(_) => conflicts.push(row.key.clone()),
        }
    }
    if !conflicts.is_empty() {
        return Ok(TableMerge::Conflict(TableConflict {
            why: format!(
                "{} row(s) changed differently on both sides (or removed on one side and \
                 changed on the other)",
                conflicts.len()
            ),
            keys: conflicts,
        }));
    }
    let newline: &[u8] = if a.data[a.head.clone()].ends_with(b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut out = Vec::with_capacity(ours.len().max(theirs.len()));
    out.extend_from_slice(&a.data[a.head.clone()]);
    let mut emit = |raw: &[u8]| {
        // A row that ended its file without a newline may be followed by others now.
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(newline);
        }
        out.extend_from_slice(raw);
    };
    let from_theirs = |j: usize| &b.data[b.rows[j].raw.clone()];
    for &j in inserts.get(&None).into_iter().flatten() {
        emit(from_theirs(j));
    }
    for (i, pick) in picks.iter().enumerate() {
        match *pick {
            Pick::Ours(i) => emit(&a.data[a.rows[i].raw.clone()]),
            Pick::Theirs(j) => emit(from_theirs(j)),
            Pick::Gone => continue,
        }
        for &j in inserts.get(&Some(i)).into_iter().flatten() {
            emit(from_theirs(j));
        }
    }
    Ok(TableMerge::Merged { bytes: out, stats })
}

/// What one side of a model merge changed against the base, judged by chunk ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideSummary {
    pub tensors: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// dtype or shape changed.
    pub retyped: Vec<String>,
    /// Same dtype and shape, bytes not proven equal by chunk ids.
    pub changed: Vec<String>,
    pub unchanged: usize,
}

impl SideSummary {
    /// One line: counts, and the first few names.
    pub fn render(&self) -> String {
        let names = |v: &[String]| {
            let mut s = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 3 {
                s.push_str(&format!(", … {} more", v.len() - 3));
            }
            s
        };
        let mut parts = Vec::new();
        for (n, what) in [
            (&self.changed, "changed"),
            (&self.retyped, "retyped"),
            (&self.added, "added"),
            (&self.removed, "removed"),
        ] {
            if !n.is_empty() {
                parts.push(format!("{} {what} ({})", n.len(), names(n)));
            }
        }
        if parts.is_empty() {
            parts.push("no tensor changed".into());
        }
        format!(
            "{} of {} tensors vs base: {}; {} unchanged",
            self.tensors - self.unchanged,
            self.tensors,
            parts.join(", "),
            self.unchanged
        )
    }
}

/// Compares a side's model with the base from headers and chunk lists alone.
pub fn model_summary(
    base: &ModelHeader,
    base_layout: &ChunkLayout,
    side: &ModelHeader,
    side_layout: &ChunkLayout,
) -> SideSummary {
    let mut s = SideSummary {
        tensors: side.tensors.len(),
        ..Default::default()
    };
    for pair in pair_tensors(base, side) {
        match pair {
            Pair::Added(t) => s.added.push(t.name.clone()),
            Pair::Removed(t) => s.removed.push(t.name.clone()),
            Pair::Both(o, n) if o.dtype != n.dtype || o.shape != n.shape || o.len() != n.len() => {
                s.retyped.push(n.name.clone())
            }
            Pair::Both(o, n) => {
                if same_bytes(base_layout, o.range(), side_layout, n.range()) {
                    s.unchanged += 1;
                } else {
                    s.changed.push(n.name.clone());
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: TableFormat = TableFormat::Delimited(b',');

    fn merged(r: TableMerge) -> (String, MergeStats) {
        match r {
            TableMerge::Merged { bytes, stats } => (String::from_utf8(bytes).unwrap(), stats),
            TableMerge::Conflict(c) => panic!("conflict: {c:?}"),
        }
    }

    #[test]
    fn disjoint_row_edits_merge_in_order() {
        let base = "id,x\n1,a\n2,b\n3,c\n4,d\n";
        let ours = "id,x\n1,A\n2,b\n3,c\n4,d\n5,e\n";
        let theirs = "id,x\n1,a\n2,b\n2.5,bb\n4,D\n";
        let (text, stats) = merged(
            merge_tables(
                base.as_bytes(),
                ours.as_bytes(),
                theirs.as_bytes(),
                CSV,
                "id",
            )
            .unwrap(),
        );
        assert_eq!(text, "id,x\n1,A\n2,b\n2.5,bb\n4,D\n5,e\n");
        assert_eq!(
            stats,
            MergeStats {
                added: 1,
                changed: 1,
                removed: 1
            }
        );
    }

    #[test]
    fn overlapping_edits_name_the_keys() {
        let base = "id,x\n1,a\n2,b\n3,c\n";
        let ours = "id,x\n1,A\n2,b\n";
        let theirs = "id,x\n1,Z\n2,b\n3,C\n";
        match merge_tables(
            base.as_bytes(),
            ours.as_bytes(),
            theirs.as_bytes(),
            CSV,
            "id",
        )
        .unwrap()
        {
            TableMerge::Conflict(c) => assert_eq!(c.keys, vec!["1", "3"]),
            m => panic!("{m:?}"),
        }
        // The same edit on both sides is no conflict.
        let (text, _) = merged(
            merge_tables(base.as_bytes(), ours.as_bytes(), ours.as_bytes(), CSV, "id").unwrap(),
        );
        assert_eq!(text, ours);
    }

    #[test]
    fn quoted_rows_keep_their_bytes_and_missing_newline_is_mended() {
        let base = "id,t\n1,\"a\nb\"\n2,x";
        let ours = "id,t\n1,\"a\nb\"\n2,y";
        let theirs = "id,t\n1,\"a\nb\"\n2,x\n3,\"q,r\"";
        let (text, _) = merged(
            merge_tables(
                base.as_bytes(),
                ours.as_bytes(),
                theirs.as_bytes(),
                CSV,
                "id",
            )
            .unwrap(),
        );
        assert_eq!(text, "id,t\n1,\"a\nb\"\n2,y\n3,\"q,r\"");
    }

    #[test]
    fn json_lines_by_key_and_bad_input() {
        let base = "{\"id\":1,\"v\":1}\n{\"id\":2,\"v\":2}\n";
        let ours = "{\"id\":1,\"v\":10}\n{\"id\":2,\"v\":2}\n";
        let theirs = "{\"id\":1,\"v\":1}\n{\"v\":20,\"id\":2}\n";
        let (text, _) = merged(
            merge_tables(
                base.as_bytes(),
                ours.as_bytes(),
                theirs.as_bytes(),
                TableFormat::JsonLines,
                "id",
            )
            .unwrap(),
        );
        assert_eq!(text, "{\"id\":1,\"v\":10}\n{\"v\":20,\"id\":2}\n");
        let e = merge_tables(b"a\n1\n", b"a\n1\n", b"a\n1\n", CSV, "id").unwrap_err();
        assert!(e.to_string().contains("key column \"id\""), "{e}");
        let e = merge_tables(b"id\n1\n1\n", b"id\n1\n", b"id\n1\n", CSV, "id").unwrap_err();
        assert!(e.to_string().contains("not unique"), "{e}");
        match merge_tables(b"id,a\n", b"id,a,b\n", b"id,a\n1,2\n", CSV, "id").unwrap() {
            TableMerge::Conflict(c) => assert!(c.why.contains("columns differ"), "{c:?}"),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn model_summary_from_chunk_ids() {
        use gitmodel_format::{ChunkId, RecipeChunk};
        let f = |fills: &[u8]| {
            crate::safetensors::build(&[
                ("a", "F32", vec![4], vec![fills[0]; 16]),
                ("b", "F32", vec![4], vec![fills[1]; 16]),
            ])
        };
        // One chunk per tensor and one for the header: ids from the bytes.
        let layout = |bytes: &[u8], h: &ModelHeader| {
            let mut cuts = vec![0, h.header_len];
            cuts.extend(h.tensors.iter().map(|t| t.end));
            let chunks: Vec<RecipeChunk> = cuts
                .windows(2)
                .map(|w| RecipeChunk {
                    id: ChunkId(*blake3::hash(&bytes[w[0] as usize..w[1] as usize]).as_bytes()),
                    raw_len: (w[1] - w[0]) as u32,
                })
                .collect();
            ChunkLayout::new(&chunks)
        };
        let (v1, v2) = (f(&[1, 2]), f(&[1, 3]));
        let (h1, h2) = (
            crate::safetensors::parse_file(&v1).unwrap(),
            crate::safetensors::parse_file(&v2).unwrap(),
        );
        let s = model_summary(&h1, &layout(&v1, &h1), &h2, &layout(&v2, &h2));
        assert_eq!(s.changed, vec!["b"]);
        assert_eq!(s.unchanged, 1);
        assert_eq!(
            s.render(),
            "1 of 2 tensors vs base: 1 changed (b); 1 unchanged"
        );
    }
}
