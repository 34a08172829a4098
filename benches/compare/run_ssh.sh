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
. "$HERE/lib.sh"
RUST_SSH_BENCH="${RUST_SSH_BENCH:-$REPO_ROOT/target/release/compare_ssh}"

# ---- arguments (passed through to both sides) ------------------------------
parse_int_args '^[1-9][0-9]*$' 'a positive integer' --starts --rtt-iters -- "$@"

require_root
require_exe "$RUST_SSH_BENCH" compare_ssh RUST_SSH_BENCH
ensure_venv

# ---- the shared sshd ------------------------------------------------------------
init_tmp
start_sshd "$RUST_SSH_BENCH"

# ---- Rust side ----------------------------------------------------------------
echo "run_ssh.sh: running mitogen-rs: $RUST_SSH_BENCH --use-sshd $PORT ... ${BENCH_ARGS[*]:-}" >&2
if ! run_bench "$TMP/rs.out" "$REPO_ROOT" "$RUST_SSH_BENCH" --use-sshd "$PORT" --key "$KEY" \
        --known-hosts "$KNOWN_HOSTS" ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} < /dev/null; then
    die "mitogen-rs bench failed: $RUST_SSH_BENCH"
fi
RS_JSON="$(last_line "$TMP/rs.out")"

# ---- Python side --------------------------------------------------------------
echo "run_ssh.sh: running Python Mitogen: py_mitogen_ssh.py --port $PORT ... ${BENCH_ARGS[*]:-}" >&2
if ! run_bench "$TMP/py.out" "$HERE" "$VENV/bin/python" py_mitogen_ssh.py --port "$PORT" \
        --user "$SSH_USER" --key "$KEY" --known-hosts "$KNOWN_HOSTS" \
        ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} < /dev/null; then
    die "Python Mitogen bench failed"
fi
PY_JSON="$(last_line "$TMP/py.out")"

stop_sshd
echo "run_ssh.sh: sshd stopped" >&2

# ---- report -------------------------------------------------------------------
print_report "args:" "${BENCH_ARGS[*]:-(defaults)}"

compare_table <<'PYEOF'
ssh_true = num(rs, 'ssh_true_ms')
warm = num(rs, 'first_call_warm_ms')
cold = num(rs, 'first_call_cold_ms')
rs_rtt = num(rs, 'rtt_ssh_median_us')
rs_p99 = num(rs, 'rtt_ssh_p99_us')
echo = num(rs, 'raw_ssh_echo_median_us')
py_first = num(py, 'first_call_ms')
py_rtt = num(py, 'rtt_ssh_median_us')
py_p99 = num(py, 'rtt_ssh_p99_us')

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

print_table(rows)
print()
print('Python Mitogen has no code cache on the target (every start sends its '
      'source), so its single first-call figure is compared with both rs '
      'figures; rs cold = median of 3 starts with an empty cache dir.')
PYEOF
