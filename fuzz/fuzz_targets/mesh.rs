//! Operation sequences (spawn, kill, listen, send with any ids, requests,
//! large messages split on the wire, readers that stall and resume, drive)
//! on a mesh of router cores joined by stream-protocol byte pipes, with its
//! invariants checked after each step: see
//! `mitogen_test_support::mesh::fuzz_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mitogen_test_support::mesh::fuzz_ops(data);
});
