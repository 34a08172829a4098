//! Runs the `mesh` fuzz target's body on a file (a crash input under
//! `fuzz/artifacts/mesh/`) without the fuzzing toolchain:
//! `cargo run -p mitogen-test-support --example repro_mesh -- FILE`.

fn main() {
    let data = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let t = std::time::Instant::now();
    mitogen_test_support::mesh::fuzz_ops(&data);
    eprintln!("ok in {:?}", t.elapsed());
}
