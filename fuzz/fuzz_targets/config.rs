#![no_main]
//! See `mailgate::fuzzing::config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailgate::fuzzing::config(data));
