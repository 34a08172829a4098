#!/usr/bin/env bash
# Compare mitogen-rs against Python Mitogen over ssh, on one throw-away sshd.
#
# Usage: benches/compare/run_ssh.sh [--starts N] [--rtt-iters N]
#
# Must run as root (the sshd and its test users: scripts/test-hosts.sh setup).
#   * starts `compare_ssh --sshd-info` (a throw-away sshd on 127.0.0.1 that
#     lives until the script closes its stdin);
#   * the Rust side: $RUST_SSH_BENCH (default: target/release/compare_ssh in
#     the repository root, built beforehand with
#     `cargo build --release -p mitogen-benches --bin compare_ssh`)
#     with --use-sshd, run from the repository root;
#   * the Python side: .venv/bin/python py_mitogen_ssh.py against the same
#     sshd, using a venv in this directory holding mitogen==0.3.54
#     (created/installed if missing).
# Prints machine info, both JSON lines and a comparison table.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
MITOGEN_VERSION="0.3.54"
RUST_SSH_BENCH="${RUST_SSH_BENCH:-$REPO_ROOT/target/release/compare_ssh}"

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---- arguments (passed through to both sides) ------------------------------
BENCH_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --starts|--rtt-iters)
            [ $# -ge 2 ] || { echo "run_ssh.sh: $1 needs a value" >&2; exit 2; }
            [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "run_ssh.sh: $1 wants a positive integer, got '$2'" >&2; exit 2; }
            BENCH_ARGS+=("$1" "$2"); shift 2 ;;
        --starts=*|--rtt-iters=*)
            [[ "${1#*=}" =~ ^[1-9][0-9]*$ ]] || { echo "run_ssh.sh: bad value in '$1'" >&2; exit 2; }
            BENCH_ARGS+=("${1%%=*}" "${1#*=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_ssh.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "run_ssh.sh: must run as root (it starts an sshd for the test users)" >&2
    exit 1
fi
if [ ! -x "$RUST_SSH_BENCH" ]; then
    echo "run_ssh.sh: no executable $RUST_SSH_BENCH" >&2
    echo "  (build it: cargo build --release -p mitogen-benches --bin compare_ssh," >&2
    echo "   or point RUST_SSH_BENCH at it)" >&2
    exit 1
fi

# ---- Python Mitogen venv (same as run.sh) -------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "run_ssh.sh: creating venv $VENV" >&2
    python3 -m venv "$VENV" || {
        echo "run_ssh.sh: 'python3 -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
# pip install is skipped when the pinned version is already there, so repeat
# runs need no registry access.
if ! "$VENV/bin/python" -c "import mitogen, sys; sys.exit(mitogen.__version__ != tuple(map(int, '$MITOGEN_VERSION'.split('.'))))" 2>/dev/null; then
    echo "run_ssh.sh: installing mitogen==$MITOGEN_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "mitogen==$MITOGEN_VERSION" >&2
fi

# ---- the shared sshd ------------------------------------------------------------
TMP="$(mktemp -d)"
HOLD_FD=""      # write end of the sshd holder's stdin; closing it stops the sshd
SSHD_PID=""

stop_sshd() {
    if [ -n "$HOLD_FD" ]; then
        exec {HOLD_FD}>&-
        HOLD_FD=""
    fi
    if [ -n "$SSHD_PID" ]; then
        local i
        for i in $(seq 100); do       # up to 10 s for a clean exit
            kill -0 "$SSHD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SSHD_PID" 2>/dev/null; then
            echo "run_ssh.sh: sshd holder $SSHD_PID did not exit; terminating it" >&2
            kill "$SSHD_PID" 2>/dev/null || true
        fi
        wait "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=""
    fi
}
cleanup() { stop_sshd; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkfifo "$TMP/sshd-info"
# Process substitution: the holder's stdin is HOLD_FD, kept open by this
# shell (and not inherited usefully by anything else: it is closed in the
# bench commands below) until stop_sshd closes it.
exec {HOLD_FD}> >(cd "$REPO_ROOT" && exec "$RUST_SSH_BENCH" --sshd-info \
                      > "$TMP/sshd-info" 2> "$TMP/sshd.err")
SSHD_PID=$!
if ! read -r -t 60 SSHD_LINE < "$TMP/sshd-info"; then
    echo "run_ssh.sh: '$RUST_SSH_BENCH --sshd-info' printed no sshd line:" >&2
    cat "$TMP/sshd.err" >&2 || true
    exit 1
fi
read -r PORT SSH_USER KEY KNOWN_HOSTS EXTRA <<< "$SSHD_LINE" || true
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ -z "${KNOWN_HOSTS:-}" ] || [ -n "${EXTRA:-}" ]; then
    echo "run_ssh.sh: unexpected sshd line: '$SSHD_LINE'" >&2
    exit 1
fi
echo "run_ssh.sh: sshd on 127.0.0.1:$PORT, user $SSH_USER (holder pid $SSHD_PID)" >&2

# Last non-empty stdout line of a bench run is its JSON result.
last_line() { awk 'NF { line = $0 } END { print line }' "$1"; }

# ---- Rust side ----------------------------------------------------------------
echo "run_ssh.sh: running mitogen-rs: $RUST_SSH_BENCH --use-sshd $PORT ... ${BENCH_ARGS[*]:-}" >&2
if ! ( cd "$REPO_ROOT" && exec "$RUST_SSH_BENCH" --use-sshd "$PORT" --key "$KEY" \
        --known-hosts "$KNOWN_HOSTS" ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} {HOLD_FD}>&- ) \
        < /dev/null > "$TMP/rs.out"; then
    echo "run_ssh.sh: mitogen-rs bench failed: $RUST_SSH_BENCH" >&2
    exit 1
fi
RS_JSON="$(last_line "$TMP/rs.out")"

# ---- Python side --------------------------------------------------------------
echo "run_ssh.sh: running Python Mitogen: py_mitogen_ssh.py --port $PORT ... ${BENCH_ARGS[*]:-}" >&2
if ! ( cd "$HERE" && exec "$VENV/bin/python" py_mitogen_ssh.py --port "$PORT" \
        --user "$SSH_USER" --key "$KEY" --known-hosts "$KNOWN_HOSTS" \
        ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} {HOLD_FD}>&- ) \
        < /dev/null > "$TMP/py.out"; then
    echo "run_ssh.sh: Python Mitogen bench failed" >&2
    exit 1
fi
PY_JSON="$(last_line "$TMP/py.out")"

stop_sshd
echo "run_ssh.sh: sshd stopped" >&2

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
        sys.exit('run_ssh.sh: %s is not JSON: %r' % (name, raw))

rs, py = load('RS_JSON'), load('PY_JSON')

def num(d, k):
    v = d.get(k)
    return float(v) if isinstance(v, (int, float)) and v > 0 else None

ssh_true = num(rs, 'ssh_true_ms')
warm = num(rs, 'first_call_warm_ms')
cold = num(rs, 'first_call_cold_ms')
rs_rtt = num(rs, 'rtt_ssh_median_us')
rs_p99 = num(rs, 'rtt_ssh_p99_us')
echo = num(rs, 'raw_ssh_echo_median_us')
py_first = num(py, 'first_call_ms')
py_rtt = num(py, 'rtt_ssh_median_us')
py_p99 = num(py, 'rtt_ssh_p99_us')

def ok(*vals):
    return all(v is not None for v in vals)

def verdict(met):
    return 'met' if met else 'NOT met'

def faster(x):
    s = 'mitogen-rs is %.2fx faster' % x
    if x < 1:
        s += ' (i.e. %.2fx slower)' % (1 / x)
    return s

rows = [('comparison', 'values', 'result', 'goal')]

if ok(warm, ssh_true):
    x = warm / ssh_true
    rows.append(('time to first call, warm cache, vs `ssh true` (rs / ssh)',
                 '%.2f ms / %.2f ms' % (warm, ssh_true), '%.2fx' % x,
                 '<= 1.15x: %s' % verdict(x <= 1.15)))
if ok(cold, warm):
    rows.append(('time to first call, cold vs warm cache (rs)',
                 '%.2f ms / %.2f ms' % (cold, warm), '%.2fx' % (cold / warm),
                 'informational'))
if ok(rs_rtt, echo):
    d = rs_rtt - echo
    rows.append(('rs call RTT over ssh minus raw ssh echo (median)',
                 '%.1f us - %.1f us' % (rs_rtt, echo), '%+.1f us' % d,
                 '<= +20 us: %s' % verdict(d <= 20)))
if ok(py_rtt, rs_rtt):
    x = py_rtt / rs_rtt
    rows.append(('call RTT over ssh, median (python / rs)',
                 '%.1f us / %.1f us' % (py_rtt, rs_rtt), faster(x),
                 '>= 10x: %s' % verdict(x >= 10)))
if ok(py_p99, rs_p99):
    rows.append(('call RTT over ssh, p99 (python / rs)',
                 '%.1f us / %.1f us' % (py_p99, rs_p99),
                 faster(py_p99 / rs_p99), 'informational'))
if ok(py_first, warm):
    rows.append(('time to first call (python / rs warm cache)',
                 '%.2f ms / %.2f ms' % (py_first, warm),
                 faster(py_first / warm), 'informational'))
if ok(py_first, cold):
    rows.append(('time to first call (python / rs cold cache)',
                 '%.2f ms / %.2f ms' % (py_first, cold),
                 faster(py_first / cold), 'informational'))

widths = [max(len(row[i]) for row in rows) for i in range(4)]
def line(row):
    return '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |'
print(line(rows[0]))
print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
for row in rows[1:]:
    print(line(row))
print()
print('Python Mitogen has no code cache on the target (every start sends its '
      'source), so its single first-call figure is compared with both rs '
      'figures; rs cold = median of 3 starts with an empty cache dir.')
PYEOF
