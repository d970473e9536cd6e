#![no_main]
//! See `mailgate::fuzzing::client_hello`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailgate::fuzzing::client_hello(data));
