#!/usr/bin/env bash
# Per-task cost: mitogen-ansible vs ansible-playbook (plain, pipelining) vs
# ansible-playbook with Python Mitogen 0.3.54's strategy, N command tasks
# on localhost (connection local). Prints ms/task and ratios.
#
#   benches/compare/ansible.sh [N]      (default 100)
set -euo pipefail
exec </dev/null
here=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-100}
py=$("$here/scripts/ansible-venv.sh")
bin=$(dirname "$py")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build --quiet --release -p mitogen-ansible --example ansible_bench --manifest-path "$here/Cargo.toml"
ours=$("$here/target/release/examples/ansible_bench" "$py" "$n")

echo 'localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3' > "$work/inv"
python3 - "$n" > "$work/pb.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps([{"hosts": "all", "gather_facts": False,
                   "tasks": [{"ansible.builtin.command": {"cmd": "true"}}] * n}]))
PY
run_pb() { # extra env...
    local t0 t1
    t0=$(date +%s%N)
    env HOME="$work" ANSIBLE_LOCAL_TEMP="$work/lt" ANSIBLE_PIPELINING=True "$@" \
        "$bin/ansible-playbook" -i "$work/inv" "$work/pb.json" > "$work/out" 2>&1 || { cat "$work/out" >&2; return 1; }
    t1=$(date +%s%N)
    echo "scale=2; ($t1 - $t0) / 1000000 / $n" | bc
}
plain=$(run_pb)
mpath=$("$py" -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')
mito=$(run_pb ANSIBLE_STRATEGY_PLUGINS="$mpath/plugins/strategy" ANSIBLE_STRATEGY=mitogen_linear || echo "n/a")
echo "tasks: $n (ansible.builtin.command cmd=true, localhost)"
echo "mitogen-ansible:            $ours ms/task"
echo "ansible-playbook pipelined: $plain ms/task  ($(echo "scale=1; $plain / $ours" | bc)x)"
if [ "$mito" != "n/a" ]; then
    echo "ansible + Python Mitogen:   $mito ms/task  ($(echo "scale=1; $mito / $ours" | bc)x)"
else
    echo "ansible + Python Mitogen:   n/a (strategy failed with this ansible-core)"
fi
