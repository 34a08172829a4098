#!/usr/bin/env bash
# Compare mitogen-rs file transfer against OpenSSH and Python Mitogen's
# FileService, over one throw-away sshd.
#
# Usage: benches/compare/run_files.sh [--mib N]     (default 1024)
#
# Must run as root (the sshd and its test users: scripts/test-hosts.sh setup).
#   * starts `compare_ssh --sshd-info` ($RUST_SSH_BENCH, default
#     target/release/compare_ssh): a throw-away sshd on 127.0.0.1 that lives
#     until the script closes its stdin;
#   * the Rust side: $RUST_FILES_BENCH (default target/release/compare_files,
#     built with `cargo build --release -p mitogen-benches --bin compare_files`)
#     with --mib N --use-sshd, run from the repository root: scp, ssh cat,
#     mitogen-rs over ssh and local, call RTT during bulk, tree push;
#   * the Python side: .venv/bin/python py_mitogen_files.py --mib N against
#     the same sshd, using a venv in this directory holding mitogen==0.3.54
#     (created/installed if missing).
# Prints machine info, both JSON lines and a comparison table.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
MITOGEN_VERSION="0.3.54"
RUST_SSH_BENCH="${RUST_SSH_BENCH:-$REPO_ROOT/target/release/compare_ssh}"
RUST_FILES_BENCH="${RUST_FILES_BENCH:-$REPO_ROOT/target/release/compare_files}"

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---- arguments ------------------------------------------------------------------
MIB=1024
while [ $# -gt 0 ]; do
    case "$1" in
        --mib)
            [ $# -ge 2 ] || { echo "run_files.sh: $1 needs a value" >&2; exit 2; }
            MIB="$2"; shift 2 ;;
        --mib=*) MIB="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_files.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$MIB" =~ ^[1-9][0-9]*$ ]] || { echo "run_files.sh: --mib wants a positive integer, got '$MIB'" >&2; exit 2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "run_files.sh: must run as root (it starts an sshd for the test users)" >&2
    exit 1
fi
for bin in "$RUST_SSH_BENCH" "$RUST_FILES_BENCH"; do
    if [ ! -x "$bin" ]; then
        echo "run_files.sh: no executable $bin" >&2
        echo "  (build it: cargo build --release -p mitogen-benches --bin $(basename "$bin")," >&2
        echo "   or point RUST_SSH_BENCH / RUST_FILES_BENCH at it)" >&2
        exit 1
    fi
done

# ---- Python Mitogen venv (same as run.sh) -------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "run_files.sh: creating venv $VENV" >&2
    python3 -m venv "$VENV" || {
        echo "run_files.sh: 'python3 -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
# pip install is skipped when the pinned version is already there, so repeat
# runs need no registry access.
if ! "$VENV/bin/python" -c "import mitogen, sys; sys.exit(mitogen.__version__ != tuple(map(int, '$MITOGEN_VERSION'.split('.'))))" 2>/dev/null; then
    echo "run_files.sh: installing mitogen==$MITOGEN_VERSION into $VENV" >&2
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
            echo "run_files.sh: sshd holder $SSHD_PID did not exit; terminating it" >&2
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
    echo "run_files.sh: '$RUST_SSH_BENCH --sshd-info' printed no sshd line:" >&2
    cat "$TMP/sshd.err" >&2 || true
    exit 1
fi
read -r PORT SSH_USER KEY KNOWN_HOSTS EXTRA <<< "$SSHD_LINE" || true
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ -z "${KNOWN_HOSTS:-}" ] || [ -n "${EXTRA:-}" ]; then
    echo "run_files.sh: unexpected sshd line: '$SSHD_LINE'" >&2
    exit 1
fi
echo "run_files.sh: sshd on 127.0.0.1:$PORT, user $SSH_USER (holder pid $SSHD_PID)" >&2
if [ "$SSH_USER" != "mtg-key" ]; then
    # compare_files logs in as mtg-key whatever the sshd line says.
    echo "run_files.sh: warning: sshd user is '$SSH_USER', compare_files uses 'mtg-key'" >&2
fi

# Last non-empty stdout line of a bench run is its JSON result.
last_line() { awk 'NF { line = $0 } END { print line }' "$1"; }

# ---- Rust side ----------------------------------------------------------------
echo "run_files.sh: running mitogen-rs: $RUST_FILES_BENCH --mib $MIB --use-sshd $PORT ..." >&2
if ! ( cd "$REPO_ROOT" && exec "$RUST_FILES_BENCH" --mib "$MIB" --use-sshd "$PORT" \
        --key "$KEY" --known-hosts "$KNOWN_HOSTS" {HOLD_FD}>&- ) \
        < /dev/null > "$TMP/rs.out"; then
    echo "run_files.sh: mitogen-rs bench failed: $RUST_FILES_BENCH" >&2
    exit 1
fi
RS_JSON="$(last_line "$TMP/rs.out")"

# ---- Python side --------------------------------------------------------------
echo "run_files.sh: running Python Mitogen: py_mitogen_files.py --mib $MIB --port $PORT ..." >&2
if ! ( cd "$HERE" && exec "$VENV/bin/python" py_mitogen_files.py --mib "$MIB" \
        --port "$PORT" --user "$SSH_USER" --key "$KEY" \
        --known-hosts "$KNOWN_HOSTS" {HOLD_FD}>&- ) \
        < /dev/null > "$TMP/py.out"; then
    echo "run_files.sh: Python Mitogen bench failed" >&2
    exit 1
fi
PY_JSON="$(last_line "$TMP/py.out")"

stop_sshd
echo "run_files.sh: sshd stopped" >&2

# ---- report -------------------------------------------------------------------
CPU_MODEL="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "uname:     $(uname -srm)"
echo "nproc:     $(nproc)"
echo "cpu:       ${CPU_MODEL:-unknown}"
echo "file:      $MIB MiB"
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
        sys.exit('run_files.sh: %s is not JSON: %r' % (name, raw))

rs, py = load('RS_JSON'), load('PY_JSON')

def num(d, k):
    v = d.get(k)
    return float(v) if isinstance(v, (int, float)) and v > 0 else None

scp = num(rs, 'scp_mib_s')
cat = num(rs, 'ssh_cat_mib_s')
rs_ssh = num(rs, 'rs_ssh_mib_s')
rs_null = num(rs, 'rs_ssh_discard_mib_s')
rs_local = num(rs, 'rs_local_mib_s')
rs_local_null = num(rs, 'rs_local_discard_mib_s')
idle_med = num(rs, 'rtt_idle_median_us')
idle_p99 = num(rs, 'rtt_idle_p99_us')
bulk_med = num(rs, 'rtt_during_bulk_median_us')
bulk_p99 = num(rs, 'rtt_during_bulk_p99_us')
push8 = num(rs, 'push8_64mib_ms')
direct8 = num(rs, 'direct8_64mib_ms')
py_ssh = num(py, 'py_ssh_mib_s')
py_null = num(py, 'py_ssh_discard_mib_s')

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

if ok(rs_ssh, scp):
    x = rs_ssh / scp
    rows.append(('ssh, to disk: mitogen-rs vs scp (rs / scp)',
                 '%.1f / %.1f MiB/s' % (rs_ssh, scp), '%.2fx' % x,
                 '>= 1.0x: %s' % verdict(x >= 1.0)))
if ok(rs_null, cat):
    x = rs_null / cat
    rows.append(("ssh, discard: mitogen-rs vs `ssh cat >/dev/null` (rs / ssh)",
                 '%.1f / %.1f MiB/s' % (rs_null, cat), '%.2fx' % x,
                 '>= 0.9x: %s' % verdict(x >= 0.9)))
if ok(rs_ssh, py_ssh):
    rows.append(('ssh, to disk: mitogen-rs vs Python Mitogen FileService (rs / py)',
                 '%.1f / %.1f MiB/s' % (rs_ssh, py_ssh),
                 faster(rs_ssh / py_ssh), 'informational'))
if ok(rs_null, py_null):
    rows.append(('ssh, discard: mitogen-rs vs Python Mitogen FileService (rs / py)',
                 '%.1f / %.1f MiB/s' % (rs_null, py_null),
                 faster(rs_null / py_null), 'informational'))
if ok(rs_local):
    rows.append(('local transport, to disk (rs)', '%.1f MiB/s' % rs_local,
                 '%.2f GiB/s' % (rs_local / 1024), 'informational (disk-bound)'))
if ok(rs_local_null):
    rows.append(('local transport, discard: the protocol (rs)',
                 '%.1f MiB/s' % rs_local_null,
                 '%.2f GiB/s' % (rs_local_null / 1024),
                 '>= 1 GiB/s: %s' % verdict(rs_local_null >= 1024)))
if ok(idle_med, bulk_med):
    rows.append(('local call RTT median, idle vs during bulk (rs)',
                 '%.1f us / %.1f us' % (idle_med, bulk_med),
                 '%.2fx' % (bulk_med / idle_med), 'informational'))
if ok(idle_p99, bulk_p99):
    rows.append(('local call RTT p99, idle vs during bulk (rs)',
                 '%.1f us / %.1f us' % (idle_p99, bulk_p99),
                 '%.2fx' % (bulk_p99 / idle_p99), 'informational'))
if ok(push8, direct8):
    x = direct8 / push8
    s = 'tree push %.2fx faster' % x
    if x < 1:
        s += ' (i.e. %.2fx slower)' % (1 / x)
    rows.append(('64 MiB to 8 targets: tree push vs 8 direct puts (rs)',
                 '%.0f ms / %.0f ms' % (push8, direct8), s, 'informational'))

widths = [max(len(row[i]) for row in rows) for i in range(4)]
def line(row):
    return '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |'
print(line(rows[0]))
print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
for row in rows[1:]:
    print(line(row))
print()
print('scp / ssh cat / mitogen-rs figures come from one compare_files run; '
      'scp and ssh cat include their own ssh connection setup, mitogen-rs '
      'and Python Mitogen time the transfer on an established context. '
      'Python Mitogen: FileService (1 MiB window, ~128 KiB chunks, one '
      'acknowledge per chunk) on a 32-thread service pool, fetched by '
      'FileService.get() on the target; to disk = temp file, fsync, rename, '
      'as mitogen-rs.')
PYEOF
