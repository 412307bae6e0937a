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

/// Incremental SHA-256 producing an [`Oid`].
#[derive(Default, Clone)]
pub struct OidHasher(sha2::Sha256);

impl OidHasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        sha2::Digest::update(&mut self.0, data);
    }
    pub fn finish(self) -> Oid {
        Oid(sha2::Digest::finalize(self.0).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
