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
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
MITOGEN_VERSION="0.3.54"
RUST_BENCH_CMD="${RUST_BENCH_CMD:-cargo run --release -q -p mitogen-benches --bin compare_local --}"

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---- arguments (only these two are passed through to both sides) ----------
BENCH_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rtt-iters|--bulk-mib)
            [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
            [[ "$2" =~ ^[0-9]+$ ]] || { echo "run.sh: $1 wants an integer, got '$2'" >&2; exit 2; }
            BENCH_ARGS+=("$1" "$2"); shift 2 ;;
        --rtt-iters=*|--bulk-mib=*)
            [[ "${1#*=}" =~ ^[0-9]+$ ]] || { echo "run.sh: bad value in '$1'" >&2; exit 2; }
            BENCH_ARGS+=("${1%%=*}" "${1#*=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

# ---- Python Mitogen venv ----------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "run.sh: creating venv $VENV" >&2
    python3 -m venv "$VENV" || {
        echo "run.sh: 'python3 -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
# pip install is skipped when the pinned version is already there, so repeat
# runs need no registry access.
if ! "$VENV/bin/python" -c "import mitogen, sys; sys.exit(mitogen.__version__ != tuple(map(int, '$MITOGEN_VERSION'.split('.'))))" 2>/dev/null; then
    echo "run.sh: installing mitogen==$MITOGEN_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "mitogen==$MITOGEN_VERSION" >&2
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Last non-empty stdout line of a bench run is its JSON result.
last_line() { awk 'NF { line = $0 } END { print line }' "$1"; }

# ---- Rust side ----------------------------------------------------------------
echo "run.sh: running mitogen-rs: $RUST_BENCH_CMD ${BENCH_ARGS[*]:-}" >&2
if ! ( cd "$REPO_ROOT" && bash -c "$RUST_BENCH_CMD \"\$@\"" rust-bench ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} ) > "$TMP/rs.out"; then
    echo "run.sh: mitogen-rs bench command failed: $RUST_BENCH_CMD" >&2
    exit 1
fi
RS_JSON="$(last_line "$TMP/rs.out")"

# ---- Python side --------------------------------------------------------------
echo "run.sh: running Python Mitogen: py_mitogen_bench.py ${BENCH_ARGS[*]:-}" >&2
if ! ( cd "$HERE" && "$VENV/bin/python" py_mitogen_bench.py ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} ) > "$TMP/py.out"; then
    echo "run.sh: Python Mitogen bench failed" >&2
    exit 1
fi
PY_JSON="$(last_line "$TMP/py.out")"

# ---- report -------------------------------------------------------------------
CPU_MODEL="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "uname:     $(uname -srm)"
echo "nproc:     $(nproc)"
echo "cpu:       ${CPU_MODEL:-unknown}"
echo "args:      ${BENCH_ARGS[*]:-(defaults)}"
echo "rs json:   $RS_JSON"
echo "py json:   $PY_JSON"
echo

RS_JSON="$RS_JSON" PY_JSON="$PY_JSON" python3 - <<'PYEOF'
import json, os, sys

def load(name):
    raw = os.environ[name]
    try:
        return json.loads(raw)
    except ValueError:
        sys.exit('run.sh: %s is not JSON: %r' % (name, raw))

rs, py = load('RS_JSON'), load('PY_JSON')

# (key, label, unit, lower_is_better)
metrics = [
    ('rtt_empty_median_us', 'call RTT, empty, median', 'us', True),
    ('rtt_empty_p99_us',    'call RTT, empty, p99',    'us', True),
    ('rtt_4k_median_us',    'call RTT, 4 KiB, median', 'us', True),
    ('rtt_4k_p99_us',       'call RTT, 4 KiB, p99',    'us', True),
    ('bulk_mib_s',          'bulk throughput',         'MiB/s', False),
]

def num(d, k):
    v = d.get(k)
    return float(v) if isinstance(v, (int, float)) else None

rows = [('metric', 'mitogen-rs %s' % rs.get('version', '?'),
         'Python Mitogen %s' % py.get('version', '?'), 'ratio')]
for key, label, unit, lower_better in metrics:
    r, p = num(rs, key), num(py, key)
    fmt = lambda v: 'n/a' if v is None else '%.2f %s' % (v, unit)
    if r is None or p is None or r <= 0 or p <= 0:
        ratio = 'n/a'
    else:
        x = (p / r) if lower_better else (r / p)
        ratio = 'mitogen-rs is %.2fx faster' % x
        if x < 1:
            ratio += ' (i.e. %.2fx slower)' % (1 / x)
    rows.append((label, fmt(r), fmt(p), ratio))

widths = [max(len(row[i]) for row in rows) for i in range(4)]
def line(row):
    return '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |'
print(line(rows[0]))
print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
for row in rows[1:]:
    print(line(row))
PYEOF
