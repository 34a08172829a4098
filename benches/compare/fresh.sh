#!/usr/bin/env bash
# Whole-process start-up over ssh: `ssh host true` against a fresh
# controller process that connects, makes one call and exits, on one
# throw-away sshd (127.0.0.1, user mtg-key).
#
# Usage: benches/compare/fresh.sh [--runs N]
#
# Must run as root (the sshd and its test users: scripts/test-hosts.sh setup).
# Needs target/release/fresh_call and target/release/compare_ssh (its
# --sshd-info starts the sshd), built beforehand with
#   cargo build --release -p mitogen-benches --bin fresh_call --bin compare_ssh
# (or point FRESH_CALL / RUST_SSH_BENCH at them). Times N runs (default 20)
# of each case with hyperfine when it is installed (apt-get install -y
# hyperfine), else with a plain loop, and prints medians, CPU time and the
# ratios to `ssh host true`:
#   * warm:    the agent is in the target's default cache, the controller's
#              cache knows its hash (the steady state);
#   * cold:    the target's cache directory emptied before every run (upload);
#   * cold-cc: warm target, the controller's cache emptied before every run
#              (the first start of a new build: strip and hash once);
#   * mux-ssh-true / mux-warm: the same two with a shared OpenSSH master
#              (ControlMaster=auto, ControlPersist=60) that an earlier run
#              left up: what a second run of a CLI costs (goal 7: <= 30 ms);
#   * py-mitogen: a fresh Python Mitogen 0.3.54 process doing the same
#              (py_mitogen_fresh.py; always a cold start: it has no target
#              cache), in the venv lib.sh makes (pip, once).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
FRESH_CALL="${FRESH_CALL:-$REPO_ROOT/target/release/fresh_call}"
RUST_SSH_BENCH="${RUST_SSH_BENCH:-$REPO_ROOT/target/release/compare_ssh}"

parse_int_args '^[1-9][0-9]*$' 'a positive integer' --runs -- "$@"
RUNS=20
if [ "${#BENCH_ARGS[@]}" -eq 2 ]; then RUNS="${BENCH_ARGS[1]}"; fi

require_root
require_exe "$FRESH_CALL" fresh_call FRESH_CALL
require_exe "$RUST_SSH_BENCH" compare_ssh RUST_SSH_BENCH

ensure_venv
init_tmp
start_sshd "$RUST_SSH_BENCH"

COLD_DIR="/tmp/mitogen-rs-bench-fresh-cold-$$"
CC_DIR="$TMP/controller-cache"
SSH=(ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes
     -o Compression=no -o "UserKnownHostsFile=$KNOWN_HOSTS" -i "$KEY"
     -p "$PORT" -l "$SSH_USER" -T 127.0.0.1 true)
RS=("$FRESH_CALL" --port "$PORT" --key "$KEY" --known-hosts "$KNOWN_HOSTS"
    --user "$SSH_USER")

# Warm the target's default cache and the default controller cache.
"${RS[@]}" --verbose {HOLD_FD}>&- < /dev/null
"${SSH[@]}" {HOLD_FD}>&- < /dev/null

# cmd_line ARRAY...: one shell-quoted command line.
cmd_line() { printf '%q ' "$@"; }

MUX="$TMP/cm"
mkdir -m 700 "$MUX"
SSH_MUX=("${SSH[@]:0:${#SSH[@]}-7}" -o ControlMaster=auto -o ControlPersist=60
         -o "ControlPath=$MUX/ssh-%C" -p "$PORT" -l "$SSH_USER" -T 127.0.0.1 true)
RS_MUX=("${RS[@]}" --control-path "$MUX/rs-%C")
"${SSH_MUX[@]}" {HOLD_FD}>&- < /dev/null
"${RS_MUX[@]}" {HOLD_FD}>&- < /dev/null
PY=("$VENV/bin/python" "$HERE/py_mitogen_fresh.py" --port "$PORT" --key "$KEY"
    --known-hosts "$KNOWN_HOSTS" --user "$SSH_USER")
"${PY[@]}" {HOLD_FD}>&- < /dev/null

CASES=(ssh-true warm cold cold-cc mux-ssh-true mux-warm py-mitogen)
declare -A CMD PREP
CMD[ssh-true]="$(cmd_line "${SSH[@]}")"
CMD[warm]="$(cmd_line "${RS[@]}")"
CMD[cold]="$(cmd_line "${RS[@]}" --cache-dir "$COLD_DIR")"
PREP[cold]="rm -rf $COLD_DIR"
CMD[cold-cc]="$(cmd_line "${RS[@]}" --controller-cache "$CC_DIR")"
PREP[cold-cc]="rm -rf $CC_DIR"
CMD[py-mitogen]="$(cmd_line "${PY[@]}")"
CMD[mux-ssh-true]="$(cmd_line "${SSH_MUX[@]}")"
CMD[mux-warm]="$(cmd_line "${RS_MUX[@]}")"

RESULTS="$TMP/results.tsv"   # case, median s, user s, system s
: > "$RESULTS"
if command -v hyperfine > /dev/null; then
    for c in "${CASES[@]}"; do
        args=(--runs "$RUNS" --warmup 2 --style none --export-json "$TMP/$c.json")
        if [ -n "${PREP[$c]:-}" ]; then args+=(--prepare "${PREP[$c]}"); fi
        hyperfine "${args[@]}" -n "$c" "${CMD[$c]}" {HOLD_FD}>&- < /dev/null >&2
        python3 - "$TMP/$c.json" "$c" >> "$RESULTS" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))['results'][0]
print('%s\t%f\t%f\t%f' % (sys.argv[2], r['median'], r['user'], r['system']))
PYEOF
    done
    TOOL="hyperfine $(hyperfine --version | awk '{print $2}')"
else
    for c in "${CASES[@]}"; do
        times=()
        for _ in $(seq "$RUNS"); do
            if [ -n "${PREP[$c]:-}" ]; then eval "${PREP[$c]}"; fi
            t0=$(date +%s%N)
            eval "${CMD[$c]}" {HOLD_FD}>&- < /dev/null > /dev/null
            t1=$(date +%s%N)
            times+=($(( t1 - t0 )))
        done
        med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] / 1e9}')
        printf '%s\t%s\tnan\tnan\n' "$c" "$med" >> "$RESULTS"
    done
    TOOL="a shell loop (no hyperfine)"
fi
rm -rf "$COLD_DIR"
for s in "$MUX"/*; do
    [ -S "$s" ] && ssh -o "ControlPath=$s" -O exit 127.0.0.1 2>/dev/null || true
done
stop_sshd

cpu="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
printf '%-8s%s\n' "date:" "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "uname:" "$(uname -srm)" \
    "nproc:" "$(nproc)" "cpu:" "${cpu:-unknown}" "tool:" "$TOOL, $RUNS runs per case"
echo
python3 - "$RESULTS" <<'PYEOF'
import sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
res = {r[0]: [float(x) for x in r[1:]] for r in rows}
base = res['ssh-true'][0]
print('| case | median | CPU (user+sys, mean) | vs ssh true | goal |')
print('|---|---|---|---|---|')
for name, (med, usr, sys_) in res.items():
    cpu = '%.0f ms' % ((usr + sys_) * 1e3) if usr == usr else 'n/a'
    goal = ''
    if name == 'warm':
        goal = '<= 1.15x ssh true: %s' % ('met' if med / base <= 1.15 else 'NOT met')
    if name == 'cold' and 'py-mitogen' in res:
        r = med / res['py-mitogen'][0]
        goal = '%.2fx Python Mitogen (goal <= 0.8x: %s)' % (r, 'met' if r <= 0.8 else 'NOT met')
    if name == 'mux-warm':
        goal = '%.2fx mux ssh true; <= 30 ms: %s' % (
            med / res['mux-ssh-true'][0], 'met' if med <= 0.030 else 'NOT met')
    print('| %s | %.1f ms | %s | %.2fx | %s |' % (name, med * 1e3, cpu, med / base, goal))
PYEOF
