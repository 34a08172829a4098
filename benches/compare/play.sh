#!/usr/bin/env bash
# Play throughput: mitogen-play vs ansible-playbook with Python Mitogen
# 0.3.54's mitogen_linear vs ansible-playbook with ssh + pipelining, on the
# same throw-away sshd (127.0.0.1, one user), with inventories of N aliases
# of it. Playbooks: empty (no tasks), then ping, command, stat and copy
# with 1 task and with 20. Prints wall times, two figures per task-host and
# their ratios, and the controller's peak RSS:
#   per task-host  = (T(20 tasks) - T(1 task)) / (19 * N): what one more
#                    task costs once the hosts are connected;
#   with connect   = (T(20 tasks) - T(empty)) / (20 * N): the same with the
#                    connections and the targets' start (both tools import
#                    ansible's module_utils once per host) spread over the
#                    20 tasks, the figure earlier runs recorded.
#
#   benches/compare/play.sh [--sizes "1 10 100"] [--kinds "ping command stat copy"]
#
# Must run as root (the sshd and its test users: scripts/test-hosts.sh
# setup). Builds target/release/mitogen-play and compare_ssh (the sshd).
# ansible-playbook runs with forks = N (so it is not held to 5).
# TOOLS="ours mitogen" limits the tools; OURS_ARGS adds mitogen-play options;
# PROFILE=debug builds and runs debug binaries (the test command's smoke run).
set -euo pipefail
exec </dev/null
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

SIZES="1 10 100"
KINDS="ping command stat copy"
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) SIZES="$2"; shift 2 ;;
        --kinds) KINDS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
N_TASKS=20
require_root
py=$("$REPO_ROOT/scripts/ansible-venv.sh")
bin=$(dirname "$py")
PROFILE="${PROFILE:-release}"
cargo build --quiet --profile "${PROFILE/debug/dev}" -p mitogen-play --bin mitogen-play --manifest-path "$REPO_ROOT/Cargo.toml"
cargo build --quiet --profile "${PROFILE/debug/dev}" -p mitogen-benches --bin compare_ssh --manifest-path "$REPO_ROOT/Cargo.toml"
PLAY="$REPO_ROOT/target/$PROFILE/mitogen-play"
init_tmp
start_sshd "$REPO_ROOT/target/$PROFILE/compare_ssh"
mpath=$("$py" -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')

task_for() {
    case "$1" in
        empty) ;;
        ping) echo '    - ping:' ;;
        command) echo '    - command: "true"' ;;
        stat) echo '    - stat: path=/etc/hostname' ;;
        copy) echo '    - copy: content=x dest=/tmp/mtg-play-bench-{{ inventory_hostname }}' ;;
    esac
}
# playbook NAME TASKS KIND...: $TMP/pb-NAME.yml, TASKS tasks of each KIND.
playbook() {
    local name=$1 count=$2 k
    shift 2
    {
        echo "- hosts: all"
        echo "  gather_facts: false"
        echo "  tasks:"
        echo "    - meta: noop"
        for k in "$@"; do for _ in $(seq "$count"); do task_for "$k"; done; done
    } > "$TMP/pb-$name.yml"
}
playbook empty 0
for k in $KINDS; do
    playbook "$k" "$N_TASKS" "$k"
    playbook "$k-1" 1 "$k"
done
# The warm-up playbook: one task of each kind measured.
# shellcheck disable=SC2086
playbook warmup 1 $KINDS
for n in $SIZES; do
    {
        for i in $(seq "$n"); do
            echo "h$i ansible_host=127.0.0.1 ansible_port=$PORT ansible_user=$SSH_USER ansible_ssh_private_key_file=$KEY ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='-o UserKnownHostsFile=$KNOWN_HOSTS -o IdentitiesOnly=yes'"
        done
    } > "$TMP/inv-$n"
done

# run TOOL N KIND -> "seconds peak_rss_kb" (fails loudly with the output)
run() {
    local tool=$1 n=$2 kind=$3 out="$TMP/out-$1-$2-$3" t0 t1 rss
    local -a envs=(HOME="$TMP/home-$tool" ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_LOCAL_TEMP="$TMP/lt" ANSIBLE_FORKS="$n")
    local -a cmd
    case "$tool" in
        ours) cmd=("$PLAY" --ansible-python "$py" -f "$n" ${OURS_ARGS:-}) ;;
        mitogen) envs+=(ANSIBLE_STRATEGY_PLUGINS="$mpath/plugins/strategy" ANSIBLE_STRATEGY=mitogen_linear); cmd=("$bin/ansible-playbook") ;;
        pipelined) envs+=(ANSIBLE_PIPELINING=True); cmd=("$bin/ansible-playbook") ;;
    esac
    mkdir -p "$TMP/home-$tool"
    t0=$(date +%s%N)
    if ! env "${envs[@]}" /usr/bin/time -f '%M' -o "$TMP/rss" "${cmd[@]}" -i "$TMP/inv-$n" "$TMP/pb-$kind.yml" > "$out" 2>&1 {HOLD_FD}>&-; then
        echo "$SELF: $tool n=$n $kind failed:" >&2; tail -30 "$out" >&2; echo "fail 0"; return
    fi
    t1=$(date +%s%N)
    rss=$(tail -1 "$TMP/rss")
    if [ "$tool" = mitogen ] && ! grep -q "mitogen" "$out" && [ -z "${MITOGEN_CHECKED:-}" ]; then
        # The strategy prints nothing by itself; check it was loaded.
        env "${envs[@]}" "$bin/ansible-config" dump --only-changed 2>/dev/null | grep -qi "mitogen_linear" || die "mitogen_linear strategy not active"
        MITOGEN_CHECKED=1
    fi
    echo "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc) $rss"
}

printf '%-8s %-5s %-9s %9s %9s %14s %14s %9s\n' tool hosts playbook wall_1_s wall_20_s ms/task-host "with connect" rss_kb
declare -A WALL
for n in $SIZES; do
    for tool in ${TOOLS:-ours mitogen pipelined}; do
        # Warm-up run, one task of each kind: what a second run of a
        # playbook finds (agent and payload caches on the target, the
        # controller's caches, the ControlMaster, Python's bytecode).
        run "$tool" "$n" warmup > /dev/null
        read -r e rss <<< "$(run "$tool" "$n" empty)"
        printf '%-8s %-5s %-9s %9s %9s %14s %14s %9s\n' "$tool" "$n" empty "$e" "" "" "" "$rss"
        for k in $KINDS; do
            read -r s1 _ <<< "$(run "$tool" "$n" "$k-1")"
            read -r s rss <<< "$(run "$tool" "$n" "$k")"
            per=""; conn=""
            if [ "$s" != fail ] && [ "$s1" != fail ]; then
                per=$(echo "scale=2; ($s - $s1) * 1000 / (($N_TASKS - 1) * $n)" | bc)
                WALL[$tool,$n,$k,per]=$per
            fi
            if [ "$s" != fail ] && [ "$e" != fail ]; then
                conn=$(echo "scale=2; ($s - $e) * 1000 / ($N_TASKS * $n)" | bc)
                WALL[$tool,$n,$k,conn]=$conn
            fi
            printf '%-8s %-5s %-9s %9s %9s %14s %14s %9s\n' "$tool" "$n" "$k" "$s1" "$s" "$per" "$conn" "$rss"
        done
    done
done

# ratio A B: A / B to one decimal, n/a when either is missing or B is 0.
ratio() {
    if [ -n "$1" ] && [ -n "$2" ] && [ "$(echo "$2 > 0" | bc)" = 1 ]; then
        echo "$(echo "scale=1; $1 / $2" | bc)x"
    else
        echo n/a
    fi
}
echo
echo "ratios, other tool / mitogen-play (>1 means mitogen-play is faster):"
echo "  per task-host [with connect]"
for n in $SIZES; do
    for k in $KINDS; do
        [ -n "${WALL[ours,$n,$k,per]:-}" ] || continue
        line="  n=$n $k:"
        for t in mitogen pipelined; do
            [ -n "${WALL[$t,$n,$k,per]:-}" ] || continue
            line="$line vs $t $(ratio "${WALL[$t,$n,$k,per]}" "${WALL[ours,$n,$k,per]}") [$(ratio "${WALL[$t,$n,$k,conn]:-}" "${WALL[ours,$n,$k,conn]:-}")]"
        done
        echo "$line"
    done
done
stop_sshd
