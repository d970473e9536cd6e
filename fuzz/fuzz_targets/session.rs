#![no_main]
//! See `mailgate::fuzzing::session`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailgate::fuzzing::session(data));
