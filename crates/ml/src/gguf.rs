//! GGUF headers (versions 2 and 3, the llama.cpp format): magic `GGUF`, version, tensor
//! and key/value counts, the key/values, the tensor infos (name, dimensions, GGML type,
//! offset relative to the data section), then the data section aligned to
//! `general.alignment` (default 32).
//!
//! Parsed from any `Read` positioned at the start of the file, so a caller can serve it
//! from a chunked store and read only the header. Arrays in the key/values (tokenizer
//! vocabularies) are skipped, not kept; every count and length is bounded.

use std::collections::BTreeMap;
use std::io::Read;

use crate::dtype::DType;
use crate::tensor::{ModelHeader, TensorInfo};
use crate::HeaderError;

pub const MAGIC: &[u8; 4] = b"GGUF";
const FORMAT: &str = "gguf";
const MAX_COUNT: u64 = 1 << 24;
const MAX_STRING: u64 = 16 << 20;
const MAX_DIMS: u32 = 8;

struct Reader<R> {
    inner: R,
    pos: u64,
    size: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, HeaderError> {
        if self.pos + n > self.size {
            return Err(HeaderError::Truncated {
                format: FORMAT,
                size: self.size,
            });
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| HeaderError::Read {
                format: FORMAT,
                why: e.to_string(),
            })?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        // Bounded pieces: a skipped array can be megabytes.
        let mut left = n;
        while left > 0 {
            let step = left.min(1 << 20);
            self.bytes(step)?;
            left -= step;
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(malformed(format!("string of {n} bytes")));
        }
        Ok(String::from_utf8_lossy(&self.bytes(n)?).into_owned())
    }

    /// Reads one value of type `t`; scalars and strings as text, arrays skipped.
    fn value(&mut self, t: u32, depth: u32) -> Result<Option<String>, HeaderError> {
        Ok(Some(match t {
            0 => self.bytes(1)?[0].to_string(),
            1 => (self.bytes(1)?[0] as i8).to_string(),
            2 => u16::from_le_bytes(self.bytes(2)?.try_into().expect("2")).to_string(),
            3 => i16::from_le_bytes(self.bytes(2)?.try_into().expect("2")).to_string(),
            4 => self.u32()?.to_string(),
            5 => (self.u32()? as i32).to_string(),
            6 => f32::from_bits(self.u32()?).to_string(),
            7 => (self.bytes(1)?[0] != 0).to_string(),
            8 => self.string()?,
            9 => {
                if depth > 4 {
                    return Err(malformed("arrays nested too deeply"));
                }
                let inner = self.u32()?;
                let n = self.u64()?;
                if n > MAX_COUNT * 16 {
                    return Err(malformed(format!("array of {n} values")));
                }
                match fixed_size(inner) {
                    Some(size) => self.skip(n * size)?,
                    None => {
                        for _ in 0..n {
                            self.value(inner, depth + 1)?;
                        }
                    }
                }
                return Ok(None);
            }
            10 => self.u64()?.to_string(),
            11 => (self.u64()? as i64).to_string(),
            12 => f64::from_bits(self.u64()?).to_string(),
            other => return Err(malformed(format!("unknown value type {other}"))),
        }))
    }
}

fn fixed_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn malformed(why: impl Into<String>) -> HeaderError {
    HeaderError::Malformed {
        format: FORMAT,
        why: why.into(),
    }
}

/// Parses the header of a GGUF file of `size` bytes read from `input` (at offset 0).
pub fn parse(input: impl Read, size: u64) -> Result<ModelHeader, HeaderError> {
    let mut r = Reader {
        inner: input,
        pos: 0,
        size,
    };
    if r.bytes(4).ok().as_deref() != Some(MAGIC) {
        return Err(HeaderError::NotFormat {
            format: FORMAT,
            why: "no GGUF magic".into(),
        });
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(HeaderError::NotFormat {
            format: FORMAT,
            why: format!("unsupported GGUF version {version}"),
        });
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if tensor_count > MAX_COUNT || kv_count > MAX_COUNT {
        return Err(malformed(format!(
            "{tensor_count} tensors and {kv_count} keys"
        )));
    }
    let mut metadata = BTreeMap::new();
    let mut alignment = 32u64;
    for _ in 0..kv_count {
        let key = r.string()?;
        let t = r.u32()?;
        if let Some(v) = r.value(t, 0)? {
            if key == "general.alignment" {
                alignment = v
                    .parse()
                    .ok()
                    .filter(|a: &u64| *a > 0 && a.is_power_of_two())
                    .ok_or_else(|| malformed(format!("general.alignment {v}")))?;
            }
            metadata.insert(key, v);
        }
    }
    let mut infos = Vec::with_capacity(tensor_count.min(1 << 16) as usize);
    for _ in 0..tensor_count {
        let name = r.string()?;
        let bad = |why: String| HeaderError::BadTensor {
            format: FORMAT,
            name: name.clone(),
            why,
        };
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions")));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(r.u64()?);
        }
        // GGUF lists dimensions fastest-varying first; show them like safetensors does.
        shape.reverse();
        let dtype = DType::from_ggml(r.u32()?);
        let offset = r.u64()?;
        infos.push((name, shape, dtype, offset));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    // Sizes: from type and shape when the type is known, else up to the next tensor.
    let mut order: Vec<usize> = (0..infos.len()).collect();
    order.sort_by_key(|&i| infos[i].3);
    let mut tensors = Vec::with_capacity(infos.len());
    for (k, &i) in order.iter().enumerate() {
        let (name, shape, dtype, offset) = &infos[i];
        let bad = |why: String| HeaderError::BadTensor {
            format: FORMAT,
            name: name.clone(),
            why,
        };
        let start = data_start
            .checked_add(*offset)
            .filter(|s| *s <= size)
            .ok_or_else(|| bad(format!("offset {offset} is past the end of the file")))?;
        let elements = shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .ok_or_else(|| bad("shape overflows".into()))?;
        let next = order
            .get(k + 1)
            .map(|&j| data_start.saturating_add(infos[j].3))
            .unwrap_or(size)
            .min(size);
        let end = match dtype.bytes_for(elements) {
            Some(n) => start
                .checked_add(n)
                .filter(|e| *e <= size)
                .ok_or_else(|| bad(format!("{n} bytes of data reach past the end")))?,
            None => next.max(start),
        };
        tensors.push(TensorInfo {
            name: name.clone(),
            dtype: dtype.clone(),
            shape: shape.clone(),
            start,
            end,
        });
    }
    Ok(ModelHeader {
        format: FORMAT,
        header_len: data_start,
        tensors,
        metadata,
    })
}

/// Builds a small GGUF v3 file (tests): `(name, ggml type, dims fastest-first, data)`.
pub fn build(kv: &[(&str, &str)], tensors: &[(&str, u32, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64 + 1).to_le_bytes());
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for (k, v) in kv {
        string(&mut out, k);
        out.extend_from_slice(&8u32.to_le_bytes());
        string(&mut out, v);
    }
    // An array, to exercise skipping.
    string(&mut out, "tokenizer.ggml.tokens");
    out.extend_from_slice(&9u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    string(&mut out, "a");
    string(&mut out, "b");
    let mut offset = 0u64;
    for (name, t, dims, data) in tensors {
        string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_file() {
        let f = build(
            &[("general.name", "tiny")],
            &[
                ("tok_embd.weight", 0, vec![4, 2], vec![1; 32]),
                ("blk.0.attn_q.weight", 2, vec![32], vec![2; 18]),
            ],
        );
        let h = parse(&f[..], f.len() as u64).unwrap();
        assert_eq!(h.metadata["general.name"], "tiny");
        assert_eq!(h.tensors.len(), 2);
        let t = &h.tensors[0];
        assert_eq!(
            (t.name.as_str(), t.shape.clone()),
            ("tok_embd.weight", vec![2, 4])
        );
        assert_eq!(t.len(), 32);
        assert_eq!(&f[t.start as usize..t.end as usize], &[1; 32]);
        let q = &h.tensors[1];
        assert_eq!(q.dtype.name(), "Q4_0");
        assert_eq!(&f[q.start as usize..q.end as usize], &[2; 18]);
    }

    #[test]
    fn truncated_and_foreign_input_is_an_error() {
        let f = build(&[], &[("w", 0, vec![4], vec![0; 16])]);
        for cut in [0, 3, 10, 30, f.len() - 20] {
            assert!(parse(&f[..cut], cut as u64).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            parse(&b"GGUF\x09\0\0\0"[..], 8),
            Err(HeaderError::NotFormat { .. })
        ));
        let mut huge = f.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&huge[..], huge.len() as u64).is_err());
    }
}
