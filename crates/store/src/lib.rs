//! git-model's local chunk store: packs and recipes under `.git/model/`, written atomically,
//! every chunk verified against its id when read.
#![forbid(unsafe_code)]

pub mod fsutil;
