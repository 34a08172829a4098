#!/usr/bin/env bash
# Runs every fuzz target for a few seconds (default 10). cargo-fuzz needs
# nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-10}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    echo "fuzz-smoke: $target for ${secs}s"
    log="$(mktemp)"
    if ! cargo fuzz run "$target" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz-smoke: $target FAILED (crash input under fuzz/artifacts/$target)"
        rm -f "$log"
        exit 1
    fi
    grep -E 'stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
    rm -f "$log"
done
