//! Operation sequences (spawn, kill, listen, send with any ids, requests,
//! drive) on a mesh of router cores, with its invariants checked after each
//! step: see `mitogen_test_support::mesh::fuzz_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mitogen_test_support::mesh::fuzz_ops(data);
});
