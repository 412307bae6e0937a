//! `Range: bytes=...` parsing for pack downloads: one range per request, in the three
//! RFC 9110 forms `a-b`, `a-` and `-n` (the last `n` bytes). The unit is matched without
//! regard to case, as RFC 9110 says (header names are too, by `http::HeaderMap`).
//!
//! Multiple ranges are refused rather than served as `multipart/byteranges`: the client
//! issues one range read per segment, and refusing keeps the server simple.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// The header is not a single byte range we understand.
    Malformed(&'static str),
    /// Well-formed, but no byte of it lies in the object.
    Unsatisfiable,
}

/// Parses a `Range` header value against an object of `size` bytes, returning the
/// half-open byte range to send.
pub fn parse_range(value: &str, size: u64) -> Result<Range<u64>, RangeError> {
    // RFC 9110 §14.1: range units are case-insensitive (`BYTES=0-9` is `bytes=0-9`).
    let spec = value
        .trim()
        .split_once('=')
        .filter(|(unit, _)| unit.eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec)
        .ok_or(RangeError::Malformed("only 'bytes=' ranges are supported"))?;
    if spec.contains(',') {
        return Err(RangeError::Malformed("multiple ranges are not supported"));
    }
    let (first, last) = spec
        .trim()
        .split_once('-')
        .ok_or(RangeError::Malformed("expected 'first-last'"))?;
    match (number(first)?, number(last)?) {
        (Some(first), last) => {
            if let Some(last) = last {
                if last < first {
                    return Err(RangeError::Malformed("last byte before first byte"));
                }
            }
            if first >= size {
                return Err(RangeError::Unsatisfiable);
            }
            let end = last.map_or(size, |last| last.saturating_add(1).min(size));
            Ok(first..end)
        }
        (None, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                return Err(RangeError::Unsatisfiable);
            }
            Ok(size.saturating_sub(suffix)..size)
        }
        (None, None) => Err(RangeError::Malformed("empty range")),
    }
}

/// A decimal position; empty is `None`. Values past `u64::MAX` saturate, which gives the
/// right answer for both ends ("to the end" / unsatisfiable).
fn number(text: &str) -> Result<Option<u64>, RangeError> {
    if text.is_empty() {
        return Ok(None);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed("positions must be decimal digits"));
    }
    Ok(Some(text.bytes().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(0..10));
        assert_eq!(parse_range("bytes=90-200", 100), Ok(90..100));
        assert_eq!(parse_range("bytes=95-", 100), Ok(95..100));
        assert_eq!(parse_range("bytes=-10", 100), Ok(90..100));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(0..100));
        assert_eq!(parse_range("BYTES=0-9", 100), Ok(0..10));
        assert_eq!(parse_range(" Bytes=-10", 100), Ok(90..100));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 100),
            Ok(0..100)
        );
        assert_eq!(
            parse_range("bytes=100-", 100),
            Err(RangeError::Unsatisfiable)
        );
        assert_eq!(parse_range("bytes=-0", 100), Err(RangeError::Unsatisfiable));
        assert_eq!(parse_range("bytes=0-0", 0), Err(RangeError::Unsatisfiable));
        for bad in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes0-1",
            "bytesx=0-1",
            "bytes=5-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1",
        ] {
            assert!(
                matches!(parse_range(bad, 100), Err(RangeError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
