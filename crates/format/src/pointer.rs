//! Git LFS pointer files, spec v1, byte-identical to what the reference client writes.
//!
//! ```text
//! version https://git-lfs.github.com/spec/v1
//! oid sha256:<64 lowercase hex>
//! size <decimal>
//! ```
//! Parsing follows the reference client: at most 1024 bytes, surrounding whitespace and
//! blank lines ignored, the keys `version`, `oid`, `size` in that order and nothing else.
//! Anything that is not exactly a valid pointer is "not a pointer" ([`Pointer::parse`]
//! returns `None`) and callers pass such content through unchanged. Pointer extensions
//! (`ext-N-name`) are not produced and not accepted.

use crate::id::Oid;

/// The spec URL written on the first line.
pub const VERSION_URL: &str = "https://git-lfs.github.com/spec/v1";
/// Pre-release spec URL the reference client still reads.
const LEGACY_VERSION_URL: &str = "https://hawser.github.com/spec/v1";
/// A blob of this many bytes or more is never a pointer.
pub const MAX_POINTER_SIZE: usize = 1024;
/// How much of a blob a filter reads before deciding whether it is a pointer: more than
/// [`MAX_POINTER_SIZE`], so that a blob of exactly that size or a little more is known
/// not to be one without reading it all.
pub const POINTER_PROBE_BYTES: usize = 1100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub oid: Oid,
    pub size: u64,
}

impl Pointer {
    pub fn new(oid: Oid, size: u64) -> Self {
        Pointer { oid, size }
    }

    /// The canonical bytes. The empty file is its own pointer: callers check
    /// `size == 0` and write nothing.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "version {VERSION_URL}\noid sha256:{}\nsize {}\n",
            self.oid, self.size
        )
        .into_bytes()
    }

    /// Parses a pointer, or `None` when `data` is anything else.
    pub fn parse(data: &[u8]) -> Option<Pointer> {
        if data.len() >= MAX_POINTER_SIZE {
            return None;
        }
        let text = std::str::from_utf8(data).ok()?.trim();
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty());
        let version = lines.next()?.strip_prefix("version ")?;
        if version != VERSION_URL && version != LEGACY_VERSION_URL {
            return None;
        }
        let oid = lines.next()?.strip_prefix("oid sha256:")?;
        let oid = Oid::from_hex(oid).ok()?;
        let size = lines.next()?.strip_prefix("size ")?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let size = size.parse().ok()?;
        if lines.next().is_some() {
            return None;
        }
        Some(Pointer { oid, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = "version https://git-lfs.github.com/spec/v1\n\
oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n\
size 12345\n";

    #[test]
    fn golden_bytes() {
        let oid = Oid::from_hex("4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393")
            .unwrap();
        let p = Pointer::new(oid, 12345);
        assert_eq!(p.to_bytes(), GOLDEN.as_bytes());
        assert_eq!(Pointer::parse(GOLDEN.as_bytes()), Some(p));
    }

    #[test]
    fn lenient_like_the_reference() {
        let crlf = GOLDEN.replace('\n', "\r\n");
        assert!(Pointer::parse(crlf.as_bytes()).is_some());
        let padded = format!("\n\n{GOLDEN}\n\n  ");
        assert!(Pointer::parse(padded.as_bytes()).is_some());
        let legacy = GOLDEN.replace("git-lfs.github.com", "hawser.github.com");
        assert!(Pointer::parse(legacy.as_bytes()).is_some());
    }

    #[test]
    fn not_a_pointer() {
        for bad in [
            String::new(),
            "hello world".to_string(),
            GOLDEN.replace("size 12345", "size -1"),
            GOLDEN.replace("size 12345", "size 12a"),
            GOLDEN.replace("sha256:4d7a", "sha256:4D7A"),
            GOLDEN.replace("sha256:", "sha1:"),
            GOLDEN.replace("/v1", "/v2"),
            format!("{GOLDEN}extra line\n"),
            GOLDEN.replace("oid", "ext-0-foo bar\noid"),
            // keys out of order
            "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nversion https://git-lfs.github.com/spec/v1\nsize 1\n".to_string(),
            format!("{GOLDEN}{}", " ".repeat(1100)),
        ] {
            assert_eq!(Pointer::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Pointer::parse(&[0xff, 0xfe]), None);
    }
}
