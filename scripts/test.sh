#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need,
# then runs the lint gate, every test, the bench smoke run and the fuzz smoke
# run. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

# Test hosts: packages (openssh-server, sudo, opendoas), test users, sudo and
# doas rules, and two network namespaces; torn down again on exit.
if [ "$(id -u)" -eq 0 ]; then
    step "setting up test hosts (scripts/test-hosts.sh setup)"
    bash scripts/test-hosts.sh setup
    trap 'bash scripts/test-hosts.sh teardown >/dev/null 2>&1 || true' EXIT
else
    echo "NOTE: not root: ssh/sudo/su/doas tests will be SKIPPED (run as root to include them)" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings denied)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --quiet

step "Python venv with ansible-core 2.19 for the conformance suite (scripts/ansible-venv.sh)"
bash scripts/ansible-venv.sh >/dev/null

step "cargo test (unit, integration with real agent processes, doc tests)"
log="$(mktemp)"
cargo test --workspace --quiet 2>&1 | tee "$log"
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
skipped=$(grep -Eo '[0-9]+ skipped' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')

step "benches compile and run once (cargo test --benches)"
cargo test -p mitogen-benches --benches --quiet

step "fuzz smoke run"
bash scripts/fuzz-smoke.sh

rm -f "$log"
step "all checks passed"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
