#!/usr/bin/env bash
# Creates (idempotently) the Python venv that mitogen-ansible's conformance
# test and benches use: real ansible-core 2.19 (the reference) and Python
# Mitogen 0.3.54 (the peer for benches). Never touches the system Python.
#
#   scripts/ansible-venv.sh            # venv at $MITOGEN_ANSIBLE_VENV or target/ansible-venv
#   MITOGEN_ANSIBLE_VENV=/x scripts/ansible-venv.sh
#
# Another ansible-core for the same suites (the runner must not depend on
# one release): MITOGEN_ANSIBLE_CORE=2.20 with a Python it supports, e.g.
#   MITOGEN_ANSIBLE_CORE=2.20 MITOGEN_ANSIBLE_BASE_PYTHON=~/.pyenv/versions/3.12.1/bin/python3 \
#   MITOGEN_ANSIBLE_VENV=target/ansible-venv-2.20 scripts/ansible-venv.sh
#
# Prints the venv's python path on stdout when done.
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${MITOGEN_ANSIBLE_VENV:-$here/target/ansible-venv}
# /usr/bin/python3 (Debian's 3.11): ansible-core 2.19 needs >= 3.11, and a
# version-manager shim in PATH must not decide which Python the venv gets.
base=${MITOGEN_ANSIBLE_BASE_PYTHON:-/usr/bin/python3}
stamp=$venv/.mitogen-ansible-ok
core=${MITOGEN_ANSIBLE_CORE:-2.19}
want="ansible-core==$core.* mitogen==0.3.54"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import ansible' 2>/dev/null; then
    echo "$venv/bin/python"
    exit 0
fi
[ -x "$venv/bin/python" ] || "$base" -m venv "$venv" >&2
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet $want >&2
"$venv/bin/python" -c 'import ansible.release; import sys; assert ansible.release.__version__.startswith(sys.argv[1] + "."), ansible.release.__version__' "$core" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
