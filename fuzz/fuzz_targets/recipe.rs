//! Recipe decoding never panics, and what decodes re-encodes to the same bytes.
#![no_main]
use gitmodel_format::Recipe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((r, used)) = Recipe::decode_prefix(data) {
        assert_eq!(r.encode(), &data[..used]);
    }
});
