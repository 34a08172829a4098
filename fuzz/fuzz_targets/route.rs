//! Random route tables and messages through the router's decision: no
//! panics, no bounces, no forged sources passed on, unidirectional holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mitogen_core::fuzzing::route_decisions(data);
});
