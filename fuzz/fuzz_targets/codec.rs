//! Arbitrary bytes in arbitrary splits through the frame decoder: it must
//! never panic and must re-encode every frame it accepts to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mitogen_core::fuzzing::decode_arbitrary(data);
});
