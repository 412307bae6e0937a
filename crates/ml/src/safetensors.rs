//! safetensors headers: `u64 N` (little-endian), then N bytes of JSON mapping each tensor
//! name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the end of
//! the header) and an optional `__metadata__` string map; then the tensor bytes.
//!
//! Only the first `8 + N` bytes are needed to know where every tensor is. Nothing in the
//! header is trusted: offsets are checked against the file size and against the bytes the
//! type and shape require.

use std::collections::BTreeMap;

use crate::dtype::DType;
use crate::tensor::{ModelHeader, TensorInfo};
use crate::HeaderError;

const FORMAT: &str = "safetensors";
/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

fn malformed(why: impl Into<String>) -> HeaderError {
    HeaderError::Malformed {
        format: FORMAT,
        why: why.into(),
    }
}

/// Whether `head` (the first bytes of a file) plausibly starts a safetensors file.
pub fn looks_like(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && {
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        (2..=MAX_HEADER_LEN).contains(&n)
    }
}

/// The JSON header's length from the file's first 8 bytes.
pub fn header_len(first8: &[u8], file_size: u64) -> Result<u64, HeaderError> {
    if first8.len() < 8 || file_size < 8 {
        return Err(HeaderError::Truncated {
            format: FORMAT,
            size: file_size,
        });
    }
    let n = u64::from_le_bytes(first8[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        return Err(HeaderError::NotFormat {
            format: FORMAT,
            why: format!("header length {n} exceeds {MAX_HEADER_LEN}"),
        });
    }
    if 8 + n > file_size {
        return Err(HeaderError::Truncated {
            format: FORMAT,
            size: file_size,
        });
    }
    Ok(n)
}

/// Parses the JSON header (`json` is bytes `8 .. 8 + N` of a file of `file_size` bytes).
pub fn parse(json: &[u8], file_size: u64) -> Result<ModelHeader, HeaderError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| HeaderError::NotFormat {
            format: FORMAT,
            why: format!("header is not JSON: {e}"),
        })?;
    let serde_json::Value::Object(map) = value else {
        return Err(malformed("header is not a JSON object"));
    };
    let data_start = 8 + json.len() as u64;
    let mut tensors = Vec::new();
    let mut metadata = BTreeMap::new();
    for (name, v) in map {
        if name == "__metadata__" {
            let serde_json::Value::Object(m) = v else {
                return Err(malformed("__metadata__ is not an object"));
            };
            for (k, v) in m {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                metadata.insert(k, text);
            }
            continue;
        }
        let bad = |why: String| HeaderError::BadTensor {
            format: FORMAT,
            name: name.clone(),
            why,
        };
        let dtype = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype".into()))?;
        let dtype = DType::from_safetensors(dtype);
        let shape: Vec<u64> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape".into()))?
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| bad(format!("bad dimension {d}"))))
            .collect::<Result<_, _>>()?;
        let offsets = v
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("data_offsets is not [begin, end]".into()))?;
        let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
            return Err(bad("data_offsets are not integers".into()));
        };
        if begin > end {
            return Err(bad(format!("data_offsets [{begin}, {end}] are reversed")));
        }
        let (start, stop) = match (data_start.checked_add(begin), data_start.checked_add(end)) {
            (Some(s), Some(e)) if e <= file_size => (s, e),
            _ => {
                return Err(bad(format!(
                "data_offsets [{begin}, {end}] reach past the end of the file ({file_size} bytes)"
            )))
            }
        };
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| bad("shape overflows".into()))?;
        if let Some(want) = dtype.bytes_for(elements) {
            if want != end - begin {
                return Err(bad(format!(
                    "{} {:?} needs {want} bytes but data_offsets span {}",
                    dtype.name(),
                    shape,
                    end - begin
                )));
            }
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            start,
            end: stop,
        });
    }
    tensors.sort_by(|a, b| (a.start, &a.name).cmp(&(b.start, &b.name)));
    Ok(ModelHeader {
        format: FORMAT,
        header_len: data_start,
        tensors,
        metadata,
    })
}

/// Parses a whole safetensors file held in memory (tests and small files).
pub fn parse_file(bytes: &[u8]) -> Result<ModelHeader, HeaderError> {
    let n = header_len(bytes, bytes.len() as u64)?;
    parse(&bytes[8..8 + n as usize], bytes.len() as u64)
}

/// Builds a safetensors file from `(name, dtype, shape, data)` (tests, examples).
pub fn build(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()],
            }),
        );
        offset += data.len();
    }
    let mut json = serde_json::Value::Object(header).to_string();
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tensors_in_file_order() {
        let f = build(&[
            ("b", "F32", vec![2], vec![0; 8]),
            ("a", "F16", vec![3], vec![0; 6]),
        ]);
        let h = parse_file(&f).unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].name, "b");
        assert_eq!(h.tensors[0].start, h.header_len);
        assert_eq!(h.tensors[1].range(), h.header_len + 8..h.header_len + 14);
        assert_eq!(h.tensors[1].dtype, DType::F16);
        assert!(looks_like(&f));
    }

    #[test]
    fn rejects_malformed_headers_without_panicking() {
        assert!(matches!(
            parse_file(&[1, 2, 3]),
            Err(HeaderError::Truncated { .. })
        ));
        let mut f = build(&[("w", "F32", vec![2], vec![0; 8])]);
        // Claim a longer header than the file has.
        f[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert!(matches!(parse_file(&f), Err(HeaderError::Truncated { .. })));
        // Wrong byte count for the shape.
        let f = build(&[("w", "F32", vec![3], vec![0; 8])]);
        let e = parse_file(&f).unwrap_err().to_string();
        assert!(e.contains("needs 12 bytes"), "{e}");
        // Offsets beyond the end.
        let json = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4000]}}"#;
        let e = parse(json, 100).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
        let e = parse(b"[1,2]", 100).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = parse(b"{\"w\":{\"shape\":[1]}}", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no dtype"), "{e}");
        assert!(parse(b"\xff\xfe", 100).is_err());
    }
}
