#!/usr/bin/env bash
# Fetches (once, then cached) the integration targets of the ansible-core
# release a venv holds: its sdist's `test/integration/targets`, which
# mitogen-play's `targets` suite runs under both tools.
#
#   scripts/ansible-targets.sh             # for the venv at $MITOGEN_ANSIBLE_VENV or target/ansible-venv
#
# Prints the targets directory on stdout when done.
set -euo pipefail
exec </dev/null

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${MITOGEN_ANSIBLE_VENV:-$here/target/ansible-venv}
py=$venv/bin/python
ver=$("$py" -c 'import ansible.release; print(ansible.release.__version__)')
dir=$here/target/ansible-targets/$ver
if [ -f "$dir/.ok" ]; then
    echo "$dir/targets"
    exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
"$py" -m pip download --quiet --no-deps --no-binary :all: "ansible-core==$ver" -d "$dir" >&2
tar -xzf "$dir/ansible_core-$ver.tar.gz" -C "$dir" "ansible_core-$ver/test/integration/targets"
mv "$dir/ansible_core-$ver/test/integration/targets" "$dir/targets"
rm -rf "$dir/ansible_core-$ver" "$dir/ansible_core-$ver.tar.gz"
touch "$dir/.ok"
echo "$dir/targets"
