#!/usr/bin/env bash
# Per-task cost of ping, command, stat and copy (a small file): mitogen-ansible
# vs ansible-playbook (ssh + pipelining) vs ansible-playbook with Python
# Mitogen 0.3.54's mitogen_linear strategy, all over the same throw-away
# loopback sshd as user mtg-key (needs root and `scripts/test-hosts.sh setup`).
# Prints marginal ms/task, ratios and this runner's per-phase split
# (mitogen-ansible/examples/ansible_bench.rs does the work).
#
#   benches/compare/ansible.sh [N] [MODULE...]     (default 100, all four)
#   PROFILE=debug benches/compare/ansible.sh 3      (the test command's smoke run)
set -euo pipefail
exec </dev/null
here=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-100}
shift || true
py=$("$here/scripts/ansible-venv.sh")
profile=${PROFILE:-release}
cargo build --quiet --profile "${profile/debug/dev}" -p mitogen-ansible --example ansible_bench --manifest-path "$here/Cargo.toml"
echo "machine: $(uname -srm), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"
"$here/target/$profile/examples/ansible_bench" "$py" "$n" "$@"
