#!/usr/bin/env bash
# The README's main job: mitogen-play runs the bundled playbook
# (mitogen-play/examples/play/site.yml: ping, command, file, copy,
# lineinfile, template and a handler) on this machine, or on the ssh hosts
# given, then the context-tree example shows calls, logs and a file push.
#
#   scripts/demo.sh                      # the local machine
#   scripts/demo.sh deploy@web1 web2:2222 # ssh hosts (your ~/.ssh/config, keys, agent)
#
# It first makes the Python venv with ansible-core that the runner takes its
# modules from (scripts/ansible-venv.sh; nothing is installed on targets).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/ansible-venv.sh)
inventory=mitogen-play/examples/play/inventory.ini
tree_args=()
if [ $# -gt 0 ]; then
    inventory=$(mktemp)
    trap 'rm -f "$inventory"' EXIT
    for target in "$@"; do
        user="${target%@*}"; [ "$user" = "$target" ] && user=""
        hostport="${target#*@}"
        host="${hostport%:*}"; port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=""
        line="$host"
        [ -n "$user" ] && line="$line ansible_user=$user"
        [ -n "$port" ] && line="$line ansible_port=$port"
        echo "$line" >> "$inventory"
        tree_args+=(--ssh "$target")
    done
fi
echo "==> mitogen-play on $( [ $# -gt 0 ] && echo "$*" || echo "this machine" )"
cargo run --release -q -p mitogen-play --bin mitogen-play -- \
    --ansible-python "$python" -i "$inventory" mitogen-play/examples/play/site.yml
echo
echo "==> the context tree: typed calls, forwarded logs, a file pushed to every context"
cargo run --release -q -p mitogen-examples --bin tree -- ${tree_args[@]+"${tree_args[@]}"}
