#!/usr/bin/env bash
# Compare mitogen-rs against Python Mitogen on the local transport.
#
# Usage: benches/compare/run.sh [--rtt-iters N] [--bulk-mib M]
#
# Runs, with the same flags:
#   * the Rust side: $RUST_BENCH_CMD (default:
#       cargo run --release -q -p mitogen-benches --bin compare_local --)
#     run from the repository root;
#   * the Python side: .venv/bin/python py_mitogen_bench.py, using a venv in
#     this directory holding mitogen==0.3.54 (created/installed if missing).
# Each prints one line of JSON; this script prints machine info, both JSON
# lines and a comparison table (ready to paste into a results file).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
RUST_BENCH_CMD="${RUST_BENCH_CMD:-cargo run --release -q -p mitogen-benches --bin compare_local --}"

# ---- arguments (only these two are passed through to both sides) ----------
parse_int_args '^[0-9]+$' 'an integer' --rtt-iters --bulk-mib -- "$@"

ensure_venv
init_tmp

# ---- Rust side ----------------------------------------------------------------
echo "run.sh: running mitogen-rs: $RUST_BENCH_CMD ${BENCH_ARGS[*]:-}" >&2
if ! run_bench "$TMP/rs.out" "$REPO_ROOT" bash -c "$RUST_BENCH_CMD \"\$@\"" rust-bench ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}; then
    die "mitogen-rs bench command failed: $RUST_BENCH_CMD"
fi
RS_JSON="$(last_line "$TMP/rs.out")"

# ---- Python side --------------------------------------------------------------
echo "run.sh: running Python Mitogen: py_mitogen_bench.py ${BENCH_ARGS[*]:-}" >&2
if ! run_bench "$TMP/py.out" "$HERE" "$VENV/bin/python" py_mitogen_bench.py ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}; then
    die "Python Mitogen bench failed"
fi
PY_JSON="$(last_line "$TMP/py.out")"

# ---- report -------------------------------------------------------------------
print_report "args:" "${BENCH_ARGS[*]:-(defaults)}"

compare_table <<'PYEOF'
# (key, label, unit, lower_is_better)
metrics = [
    ('rtt_empty_median_us', 'call RTT, empty, median', 'us', True),
    ('rtt_empty_p99_us',    'call RTT, empty, p99',    'us', True),
    ('rtt_4k_median_us',    'call RTT, 4 KiB, median', 'us', True),
    ('rtt_4k_p99_us',       'call RTT, 4 KiB, p99',    'us', True),
    ('bulk_mib_s',          'bulk throughput',         'MiB/s', False),
]

rows = [('metric', 'mitogen-rs %s' % rs.get('version', '?'),
         'Python Mitogen %s' % py.get('version', '?'), 'ratio')]
for key, label, unit, lower_better in metrics:
    r, p = number(rs, key), number(py, key)
    fmt = lambda v: 'n/a' if v is None else '%.2f %s' % (v, unit)
    if r is None or p is None or r <= 0 or p <= 0:
        ratio = 'n/a'
    else:
        ratio = faster((p / r) if lower_better else (r / p))
    rows.append((label, fmt(r), fmt(p), ratio))
print_table(rows)
PYEOF
