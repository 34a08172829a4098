# Shared parts of run.sh, run_ssh.sh and run_files.sh; sourced by them (after
# `set -euo pipefail`), not run on its own:
#
#   HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   . "$HERE/lib.sh"
#
# Defines HERE, REPO_ROOT, VENV, MITOGEN_VERSION, SELF (the sourcing script's
# name, the prefix of every message) and SCRIPT (its path), and the functions
# below. TMP, HOLD_FD, SSHD_PID, PORT, SSH_USER, KEY and KNOWN_HOSTS are set
# by init_tmp and start_sshd.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
MITOGEN_VERSION="0.3.54"
SELF="$(basename "${BASH_SOURCE[1]}")"
SCRIPT="$HERE/$SELF"

TMP=""
HOLD_FD=""      # write end of the sshd holder's stdin; closing it stops the sshd
SSHD_PID=""

# die MESSAGE: print "SELF: MESSAGE" on stderr and exit 1.
die() {
    echo "$SELF: $*" >&2
    exit 1
}

# usage: the script's leading comment block (line 2 up to the first line not
# starting with '#'), without the '# '.
usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$SCRIPT"
}

# parse_int_args REGEX WHAT FLAG... -- ARG...: BENCH_ARGS=(FLAG VALUE ...)
# from ARG..., where each FLAG takes a value matching REGEX (as `FLAG VALUE`
# or `FLAG=VALUE`; WHAT names it in the error message); -h/--help prints the
# usage; anything else is an error (exit 2).
parse_int_args() {
    local re="$1" what="$2" flags=() name
    shift 2
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        flags+=("$1"); shift
    done
    [ $# -gt 0 ] && shift
    BENCH_ARGS=()
    while [ $# -gt 0 ]; do
        case "$1" in
            -h|--help) usage; exit 0 ;;
        esac
        if _one_of "$1" "${flags[@]}"; then
            [ $# -ge 2 ] || { echo "$SELF: $1 needs a value" >&2; exit 2; }
            [[ "$2" =~ $re ]] || { echo "$SELF: $1 wants $what, got '$2'" >&2; exit 2; }
            BENCH_ARGS+=("$1" "$2"); shift 2
        elif [[ "$1" == *=* ]] && _one_of "${1%%=*}" "${flags[@]}"; then
            [[ "${1#*=}" =~ $re ]] || { echo "$SELF: bad value in '$1'" >&2; exit 2; }
            BENCH_ARGS+=("${1%%=*}" "${1#*=}"); shift
        else
            echo "$SELF: unknown argument '$1'" >&2; usage >&2; exit 2
        fi
    done
}

_one_of() {
    local x="$1" f
    shift
    for f in "$@"; do
        [ "$f" = "$x" ] && return 0
    done
    return 1
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        die "must run as root (it starts an sshd for the test users)"
    fi
}

# require_exe PATH BIN VARS: PATH must be executable; if not, says how to
# build BIN (a mitogen-benches binary) or which variable(s) VARS to set.
require_exe() {
    if [ ! -x "$1" ]; then
        echo "$SELF: no executable $1" >&2
        echo "  (build it: cargo build --release -p mitogen-benches --bin $2," >&2
        echo "   or point $3 at it)" >&2
        exit 1
    fi
}

# ensure_venv: $VENV holding mitogen==$MITOGEN_VERSION (created/installed if
# missing).
ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "$SELF: creating venv $VENV" >&2
        python3 -m venv "$VENV" || die "'python3 -m venv' failed (on Debian: apt-get install python3-venv)"
    fi
    # pip install is skipped when the pinned version is already there, so
    # repeat runs need no registry access.
    if ! "$VENV/bin/python" -c "import mitogen, sys; sys.exit(mitogen.__version__ != tuple(map(int, '$MITOGEN_VERSION'.split('.'))))" 2>/dev/null; then
        echo "$SELF: installing mitogen==$MITOGEN_VERSION into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "mitogen==$MITOGEN_VERSION" >&2
    fi
}

# init_tmp: TMP, a temporary directory removed (after stopping the sshd, if
# one was started) when the script exits, also on SIGINT / SIGTERM.
init_tmp() {
    TMP="$(mktemp -d)"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    stop_sshd
    rm -rf "$TMP"
}

# start_sshd BIN: run `BIN --sshd-info` from the repository root, holding
# its stdin (HOLD_FD) open: a throw-away sshd on 127.0.0.1 that lives until
# stop_sshd (or the exit trap) closes it. Sets PORT, SSH_USER, KEY and
# KNOWN_HOSTS from the line it prints. Needs init_tmp first.
start_sshd() {
    local bin="$1" line extra
    mkfifo "$TMP/sshd-info"
    # Process substitution: the holder's stdin is HOLD_FD, kept open by this
    # shell (and not inherited usefully by anything else: run_bench closes
    # it in the bench commands) until stop_sshd closes it.
    exec {HOLD_FD}> >(cd "$REPO_ROOT" && exec "$bin" --sshd-info \
                          > "$TMP/sshd-info" 2> "$TMP/sshd.err")
    SSHD_PID=$!
    if ! read -r -t 60 line < "$TMP/sshd-info"; then
        echo "$SELF: '$bin --sshd-info' printed no sshd line:" >&2
        cat "$TMP/sshd.err" >&2 || true
        exit 1
    fi
    read -r PORT SSH_USER KEY KNOWN_HOSTS extra <<< "$line" || true
    if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ -z "${KNOWN_HOSTS:-}" ] || [ -n "${extra:-}" ]; then
        die "unexpected sshd line: '$line'"
    fi
    echo "$SELF: sshd on 127.0.0.1:$PORT, user $SSH_USER (holder pid $SSHD_PID)" >&2
}

# stop_sshd: close the holder's stdin and wait (up to 10 s, then SIGTERM)
# for it to exit. Does nothing if no sshd is held.
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
            echo "$SELF: sshd holder $SSHD_PID did not exit; terminating it" >&2
            kill "$SSHD_PID" 2>/dev/null || true
        fi
        wait "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=""
    fi
}

# run_bench OUT DIR CMD [ARG...]: run CMD from DIR with its stdout in OUT and
# the sshd holder's stdin (if held) closed in it; stdin is the caller's.
run_bench() {
    local out="$1" dir="$2"
    shift 2
    if [ -n "$HOLD_FD" ]; then
        ( cd "$dir" && exec "$@" {HOLD_FD}>&- ) > "$out"
    else
        ( cd "$dir" && exec "$@" ) > "$out"
    fi
}

# last_line FILE: the last non-empty line (a bench run's JSON result).
last_line() { awk 'NF { line = $0 } END { print line }' "$1"; }

# print_report LABEL VALUE: machine info, "LABEL VALUE" and the two JSON
# lines RS_JSON and PY_JSON, then an empty line.
print_report() {
    local cpu
    cpu="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
    printf '%-11s%s\n' \
        "date:" "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" \
        "uname:" "$(uname -srm)" \
        "nproc:" "$(nproc)" \
        "cpu:" "${cpu:-unknown}" \
        "$1" "$2" \
        "rs json:" "$RS_JSON" \
        "py json:" "$PY_JSON"
    echo
}

# compare_table <<'PYEOF' ... PYEOF: run the Python code on stdin with
# python3, after _COMPARE_PRELUDE (below), which loads RS_JSON and PY_JSON as
# `rs` and `py` and defines the ratio and table helpers.
compare_table() {
    local body
    body="$(cat)"
    printf '%s\n%s\n' "$_COMPARE_PRELUDE" "$body" |
        RS_JSON="$RS_JSON" PY_JSON="$PY_JSON" SELF="$SELF" python3 -
}

IFS= read -r -d '' _COMPARE_PRELUDE <<'PYEOF' || true
import json, os, sys

def load(name):
    raw = os.environ[name]
    try:
        return json.loads(raw)
    except ValueError:
        sys.exit('%s: %s is not JSON: %r' % (os.environ['SELF'], name, raw))

rs, py = load('RS_JSON'), load('PY_JSON')

def number(d, k):
    """d[k] as a float, or None if it is not a number."""
    v = d.get(k)
    return float(v) if isinstance(v, (int, float)) else None

def num(d, k):
    """d[k] as a float, or None if it is not a positive number."""
    v = number(d, k)
    return v if v is not None and v > 0 else None

def ok(*vals):
    return all(v is not None for v in vals)

def verdict(met):
    return 'met' if met else 'NOT met'

def faster(x, who='mitogen-rs is'):
    s = '%s %.2fx faster' % (who, x)
    if x < 1:
        s += ' (i.e. %.2fx slower)' % (1 / x)
    return s

def print_table(rows):
    """A markdown table; rows[0] is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    def line(row):
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |'
    print(line(rows[0]))
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for row in rows[1:]:
        print(line(row))
PYEOF
