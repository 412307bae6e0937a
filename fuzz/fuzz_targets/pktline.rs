//! pkt-line decoding never panics and never reads past a flush.
#![no_main]
use std::io::Read;

use gitmodel_git::pktline::{read_packet, PacketReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(Some(_)) = read_packet(&mut r) {}
    let mut r = data;
    let mut sink = Vec::new();
    let _ = PacketReader::new(&mut r).read_to_end(&mut sink);
});
