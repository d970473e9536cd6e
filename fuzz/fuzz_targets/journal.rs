#![no_main]
//! See `mailgate::fuzzing::journal`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailgate::fuzzing::journal(data));
