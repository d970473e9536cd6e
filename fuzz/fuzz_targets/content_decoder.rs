#![no_main]
//! See `mailgate::fuzzing::content_decoder`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailgate::fuzzing::content_decoder(data));
