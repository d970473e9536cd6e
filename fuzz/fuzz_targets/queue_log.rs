#![no_main]
//! See `mailgate::fuzzing::queue_log`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailgate::fuzzing::queue_log(data));
