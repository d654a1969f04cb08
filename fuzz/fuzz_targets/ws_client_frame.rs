//! libFuzzer entry point for `sandpit_fuzz_harness::ws_client_frame` (the body, and why it matters, is there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandpit_fuzz_harness::ws_client_frame(data));
