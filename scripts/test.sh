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

step "ansible-core's integration targets for that release (scripts/ansible-targets.sh)"
bash scripts/ansible-targets.sh >/dev/null

step "cargo test (unit, integration with real agent processes, doc tests)"
log="$(mktemp)"
cargo test --workspace --quiet 2>&1 | tee "$log"

# The runner must not depend on one ansible-core release: the conformance
# suite again against ansible-core 2.20, which needs Python >= 3.12 (pyenv's
# here; skipped, and said so, where there is none).
py312=""
for c in python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[23]*/bin/python3; do
    if p=$(command -v "$c" 2>/dev/null) && "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        py312=$p
        break
    fi
done
if [ -n "$py312" ]; then
    step "conformance suite against ansible-core 2.20 ($py312)"
    v220=$PWD/target/ansible-venv-2.20
    MITOGEN_ANSIBLE_CORE=2.20 MITOGEN_ANSIBLE_BASE_PYTHON=$py312 MITOGEN_ANSIBLE_VENV=$v220 \
        bash scripts/ansible-venv.sh >/dev/null
    MITOGEN_ANSIBLE_VENV=$v220 cargo test -p mitogen-ansible --test conformance --quiet 2>&1 | tee -a "$log"
else
    echo "NOTE: no Python >= 3.12: the conformance suite against ansible-core 2.20 is SKIPPED" >&2
fi

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
# (Only the harness's own counts: a recap's "failed=1 skipped=0" is not one.)
skipped=$(grep -E '^test result: ' "$log" | grep -Eo '[0-9]+ skipped' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')

step "benches compile and run once (cargo test --benches)"
cargo test -p mitogen-benches --benches --quiet

if [ "$(id -u)" -eq 0 ]; then
    step "comparison benches, each once and tiny (scripts/bench-smoke.sh)"
    bash scripts/bench-smoke.sh
fi

step "fuzz smoke run"
bash scripts/fuzz-smoke.sh

targets_line=$(grep -E '^integration targets: ' "$log" | tail -1 || true)
rm -f "$log"
step "all checks passed"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
if [ -n "$targets_line" ]; then echo "$targets_line"; fi
