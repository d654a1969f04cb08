//! libFuzzer entry point for `sandpit_fuzz_harness::query_and_headers` (the body, and why it matters, is there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandpit_fuzz_harness::query_and_headers(data));
