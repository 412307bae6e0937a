//! Pack parsing and verification never panic on hostile bytes, and what verifies decodes.
#![no_main]
use gitmodel_format::pack::{
    decode_chunk, parse_index, parse_records, parse_trailer, verify_pack, TRAILER_LEN,
};
use gitmodel_format::{ChunkId, Codec, PackId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_pack(&PackId::of(data), data);
    if let Ok(records) = parse_records(data) {
        for r in records {
            let _ = r.decode();
        }
    }
    // The byte-plane codec straight on hostile bytes: a declared length, then the planes.
    if let Some((len, stored)) = data.split_first_chunk::<4>() {
        let raw_len = u32::from_le_bytes(*len) % (1 << 21);
        let _ = decode_chunk(&ChunkId::of(b""), Codec::Planes, raw_len, stored);
    }
    let len = data.len() as u64;
    if len >= TRAILER_LEN {
        if let Ok((at, _)) = parse_trailer(&data[(len - TRAILER_LEN) as usize..], len) {
            let _ = parse_index(&data[at as usize..(len - TRAILER_LEN) as usize], at);
        }
    }
});
