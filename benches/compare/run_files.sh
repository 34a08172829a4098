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
. "$HERE/lib.sh"
RUST_SSH_BENCH="${RUST_SSH_BENCH:-$REPO_ROOT/target/release/compare_ssh}"
RUST_FILES_BENCH="${RUST_FILES_BENCH:-$REPO_ROOT/target/release/compare_files}"

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

require_root
for bin in "$RUST_SSH_BENCH" "$RUST_FILES_BENCH"; do
    require_exe "$bin" "$(basename "$bin")" "RUST_SSH_BENCH / RUST_FILES_BENCH"
done
ensure_venv

# ---- the shared sshd ------------------------------------------------------------
init_tmp
start_sshd "$RUST_SSH_BENCH"
if [ "$SSH_USER" != "mtg-key" ]; then
    # compare_files logs in as mtg-key whatever the sshd line says.
    echo "run_files.sh: warning: sshd user is '$SSH_USER', compare_files uses 'mtg-key'" >&2
fi

# ---- Rust side ----------------------------------------------------------------
echo "run_files.sh: running mitogen-rs: $RUST_FILES_BENCH --mib $MIB --use-sshd $PORT ..." >&2
if ! run_bench "$TMP/rs.out" "$REPO_ROOT" "$RUST_FILES_BENCH" --mib "$MIB" --use-sshd "$PORT" \
        --key "$KEY" --known-hosts "$KNOWN_HOSTS" < /dev/null; then
    die "mitogen-rs bench failed: $RUST_FILES_BENCH"
fi
RS_JSON="$(last_line "$TMP/rs.out")"

# ---- Python side --------------------------------------------------------------
echo "run_files.sh: running Python Mitogen: py_mitogen_files.py --mib $MIB --port $PORT ..." >&2
if ! run_bench "$TMP/py.out" "$HERE" "$VENV/bin/python" py_mitogen_files.py --mib "$MIB" \
        --port "$PORT" --user "$SSH_USER" --key "$KEY" \
        --known-hosts "$KNOWN_HOSTS" < /dev/null; then
    die "Python Mitogen bench failed"
fi
PY_JSON="$(last_line "$TMP/py.out")"

stop_sshd
echo "run_files.sh: sshd stopped" >&2

# ---- report -------------------------------------------------------------------
print_report "file:" "$MIB MiB"

compare_table <<'PYEOF'
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
    rows.append(('64 MiB to 8 targets: tree push vs 8 direct puts (rs)',
                 '%.0f ms / %.0f ms' % (push8, direct8),
                 faster(direct8 / push8, 'tree push'), 'informational'))

print_table(rows)
print()
print('scp / ssh cat / mitogen-rs figures come from one compare_files run; '
      'scp and ssh cat include their own ssh connection setup, mitogen-rs '
      'and Python Mitogen time the transfer on an established context. '
      'Python Mitogen: FileService (1 MiB window, ~128 KiB chunks, one '
      'acknowledge per chunk) on a 32-thread service pool, fetched by '
      'FileService.get() on the target; to disk = temp file, fsync, rename, '
      'as mitogen-rs.')
PYEOF
