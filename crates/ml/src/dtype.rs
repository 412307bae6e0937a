//! Tensor element types: the safetensors dtype names and GGML's tensor types, with their
//! storage layout (elements per block, bytes per block) and decoding of the numeric ones.
//!
//! Quantized GGML types are compared byte by byte (their blocks mix scales and packed
//! integers); float and integer types are decoded element by element.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    F8E4M3,
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    /// A GGML type without a safetensors equivalent (mostly quantized), by its number.
    Ggml(u32),
    /// A type name this version does not know; its bytes are still compared.
    Unknown(String),
}

/// GGML types that are blocks of quantized values: (number, name, elements, bytes).
const GGML_BLOCKS: &[(u32, &str, u64, u64)] = &[
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (29, "IQ1_M", 256, 56),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
];

impl DType {
    /// From a safetensors header's `dtype` string.
    pub fn from_safetensors(name: &str) -> DType {
        match name {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F8_E4M3" => DType::F8E4M3,
            "F8_E5M2" => DType::F8E5M2,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U64" => DType::U64,
            "U32" => DType::U32,
            "U16" => DType::U16,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            other => DType::Unknown(other.to_string()),
        }
    }

    /// From a GGUF tensor info's type number.
    pub fn from_ggml(t: u32) -> DType {
        match t {
            0 => DType::F32,
            1 => DType::F16,
            24 => DType::I8,
            25 => DType::I16,
            26 => DType::I32,
            27 => DType::I64,
            28 => DType::F64,
            30 => DType::BF16,
            other => DType::Ggml(other),
        }
    }

    pub fn name(&self) -> String {
        match self {
            DType::F64 => "F64".into(),
            DType::F32 => "F32".into(),
            DType::F16 => "F16".into(),
            DType::BF16 => "BF16".into(),
            DType::F8E4M3 => "F8_E4M3".into(),
            DType::F8E5M2 => "F8_E5M2".into(),
            DType::I64 => "I64".into(),
            DType::I32 => "I32".into(),
            DType::I16 => "I16".into(),
            DType::I8 => "I8".into(),
            DType::U64 => "U64".into(),
            DType::U32 => "U32".into(),
            DType::U16 => "U16".into(),
            DType::U8 => "U8".into(),
            DType::Bool => "BOOL".into(),
            DType::Ggml(t) => match GGML_BLOCKS.iter().find(|b| b.0 == *t) {
                Some(b) => b.1.to_string(),
                None => format!("GGML_TYPE_{t}"),
            },
            DType::Unknown(s) => s.clone(),
        }
    }

    /// Storage layout: `(elements per block, bytes per block)`; `None` when unknown.
    pub fn layout(&self) -> Option<(u64, u64)> {
        Some(match self {
            DType::F64 | DType::I64 | DType::U64 => (1, 8),
            DType::F32 | DType::I32 | DType::U32 => (1, 4),
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => (1, 2),
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::U8 | DType::Bool => (1, 1),
            DType::Ggml(t) => GGML_BLOCKS.iter().find(|b| b.0 == *t).map(|b| (b.2, b.3))?,
            DType::Unknown(_) => return None,
        })
    }

    /// Bytes of a tensor of `elements` elements; `None` when unknown, not a whole number of
    /// blocks, or overflowing.
    pub fn bytes_for(&self, elements: u64) -> Option<u64> {
        let (per_block, block_bytes) = self.layout()?;
        if !elements.is_multiple_of(per_block) {
            return None;
        }
        (elements / per_block).checked_mul(block_bytes)
    }

    /// Bytes of one element when elements are decoded one by one (float and integer
    /// types); `None` for quantized and unknown types, compared as bytes.
    pub fn numeric_size(&self) -> Option<usize> {
        match self {
            DType::F64 | DType::I64 | DType::U64 => Some(8),
            DType::F32 | DType::I32 | DType::U32 => Some(4),
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => Some(2),
            DType::I8 | DType::U8 | DType::Bool => Some(1),
            _ => None,
        }
    }

    /// Decodes one element (`bytes.len() == numeric_size()`), little-endian.
    pub fn decode(&self, b: &[u8]) -> f64 {
        match self {
            DType::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")),
            DType::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
            DType::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64,
            DType::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64,
            DType::I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64,
            DType::U64 => u64::from_le_bytes(b.try_into().expect("8 bytes")) as f64,
            DType::I32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
            DType::U32 => u32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
            DType::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            DType::U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            DType::I8 => b[0] as i8 as f64,
            DType::U8 | DType::Bool => b[0] as f64,
            _ => f64::NAN,
        }
    }
}

/// IEEE 754 half precision to single precision (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac × 2^-24; normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x3555), 0.33325195);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert_eq!(DType::BF16.decode(&[0x80, 0x3f]), 1.0);
        assert_eq!(DType::F16.decode(&[0x00, 0x3c]), 1.0);
    }

    #[test]
    fn layouts() {
        assert_eq!(DType::F32.bytes_for(10), Some(40));
        assert_eq!(DType::Ggml(2).bytes_for(64), Some(36));
        assert_eq!(DType::Ggml(2).bytes_for(33), None);
        assert_eq!(DType::Ggml(2).name(), "Q4_0");
        assert_eq!(DType::from_ggml(30), DType::BF16);
        assert_eq!(DType::Unknown("X".into()).bytes_for(1), None);
    }
}
