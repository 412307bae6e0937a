//! The 32-byte ids of the formats. All print as 64 lowercase hex digits.
//!
//! [`ChunkId`] is the BLAKE3 hash of a chunk's raw bytes, [`PackId`] the BLAKE3 hash of a
//! whole pack file, [`Oid`] the SHA-256 of a whole file (the Git LFS object id).

use std::fmt;
use std::str::FromStr;

/// A malformed id in text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {text:?}: expected 64 lowercase hex digits")]
pub struct IdError {
    pub kind: &'static str,
    pub text: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const KIND: &'static str = $kind;

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly 64 lowercase hex digits.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                let err = || IdError { kind: $kind, text: text.chars().take(80).collect() };
                if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(err());
                }
                let mut out = [0u8; 32];
                hex::decode_to_slice(text, &mut out).map_err(|_| err())?;
                Ok(Self(out))
            }

            /// Reads an id from the first 32 bytes of `bytes`.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.get(..32).map(|b| {
                    let mut out = [0u8; 32];
                    out.copy_from_slice(b);
                    Self(out)
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::from_hex(s)
            }
        }
    };
}

id_type!(
    /// BLAKE3 of a chunk's uncompressed bytes.
    ChunkId,
    "chunk"
);
id_type!(
    /// SHA-256 of a whole file: the Git LFS oid.
    Oid,
    "object"
);
id_type!(
    /// BLAKE3 of a whole pack file.
    PackId,
    "pack"
);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl PackId {
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl Oid {
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }

    /// The SHA-256 of the empty file.
    pub fn empty() -> Self {
        Self::of(b"")
    }
}

/// Incremental SHA-256 producing an [`Oid`], whose state can be kept and resumed.
///
/// The compression function is `sha2`'s (SHA-NI where the CPU has it); this type adds
/// only the buffering and the final padding, so that a clone of it taken after some
/// prefix of a file is a complete, cheap record of that prefix's hash state. The server
/// keeps such states at chunk boundaries of verified files and resumes from them when a
/// new version shares a prefix, instead of hashing those bytes again.
#[derive(Clone)]
pub struct OidHasher {
    state: [u32; 8],
    /// Bytes hashed so far, buffered ones included.
    len: u64,
    buf: [u8; 64],
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl fmt::Debug for OidHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidHasher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for OidHasher {
    fn default() -> Self {
        OidHasher {
            state: SHA256_H0,
            len: 0,
            buf: [0; 64],
        }
    }
}

fn compress_block(state: &mut [u32; 8], block: &[u8]) {
    use sha2::digest::generic_array::GenericArray;
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

impl OidHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        let buffered = (self.len % 64) as usize;
        self.len += data.len() as u64;
        if buffered > 0 {
            let take = (64 - buffered).min(data.len());
            self.buf[buffered..buffered + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            if buffered + take < 64 {
                return;
            }
            let block = self.buf;
            compress_block(&mut self.state, &block);
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            compress_block(&mut self.state, block);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
    }

    /// Length of [`OidHasher::to_bytes`]' output.
    pub const ENCODED_LEN: usize = 32 + 8 + 64;

    /// The state as bytes: the eight state words (big-endian), the length (u64 LE) and
    /// the 64-byte buffer (only its first `len % 64` bytes mean anything).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        for (o, w) in out[..32].chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out[32..40].copy_from_slice(&self.len.to_le_bytes());
        let buffered = (self.len % 64) as usize;
        out[40..40 + buffered].copy_from_slice(&self.buf[..buffered]);
        out
    }

    /// Parses [`OidHasher::to_bytes`]' output.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let mut state = [0u32; 8];
        for (w, b) in state.iter_mut().zip(bytes[..32].chunks_exact(4)) {
            *w = u32::from_be_bytes(b.try_into().ok()?);
        }
        let len = u64::from_le_bytes(bytes[32..40].try_into().ok()?);
        let mut buf = [0u8; 64];
        let buffered = (len % 64) as usize;
        buf[..buffered].copy_from_slice(&bytes[40..40 + buffered]);
        Some(OidHasher { state, len, buf })
    }

    pub fn finish(mut self) -> Oid {
        let bits = self.len.wrapping_mul(8);
        let buffered = (self.len % 64) as usize;
        let mut last = [0u8; 128];
        last[..buffered].copy_from_slice(&self.buf[..buffered]);
        last[buffered] = 0x80;
        let total = if buffered < 56 { 64 } else { 128 };
        last[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        for block in last[..total].chunks_exact(64) {
            compress_block(&mut self.state, block);
        }
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Oid(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_hasher_matches_sha256_at_any_split_and_resumes_from_clones() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in [0usize, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            let want = {
                use sha2::Digest;
                Oid(sha2::Sha256::digest(&data[..len]).into())
            };
            for split in [0usize, 1, 7, 63, 64, 65, 300] {
                let split = split.min(len);
                let mut h = OidHasher::new();
                h.update(&data[..split]);
                let saved = OidHasher::from_bytes(&h.to_bytes()).unwrap();
                h.update(&data[split..len]);
                assert_eq!(h.len(), len as u64);
                assert_eq!(h.finish(), want, "len {len} split {split}");
                let mut resumed = saved;
                for piece in data[split..len].chunks(17) {
                    resumed.update(piece);
                }
                assert_eq!(resumed.finish(), want, "resumed len {len} split {split}");
            }
        }
        assert_eq!(OidHasher::new().finish(), Oid::empty());
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let id = Oid::of(b"hello");
        assert_eq!(
            id.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Oid::from_hex(&id.to_hex()).unwrap(), id);
        assert!(Oid::from_hex(&id.to_hex().to_uppercase()).is_err());
        assert!(Oid::from_hex("abc").is_err());
        assert!(Oid::from_hex(&"g".repeat(64)).is_err());
        assert_eq!(
            ChunkId::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
