//! Pointer parsing never panics, and whatever parses re-encodes to a canonical pointer
//! that parses back to the same value.
#![no_main]
use gitmodel_format::Pointer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = Pointer::parse(data) {
        assert_eq!(Pointer::parse(&p.to_bytes()), Some(p));
    }
});
