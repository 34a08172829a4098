#!/usr/bin/env bash
# Runs every comparison bench once, tiny, with debug binaries (the test
# command's smoke run: each bench still starts its peers, measures and
# prints its ratios, so a broken bench fails CI instead of the next person
# who wants figures). Real figures come from the release runs that
# benches/RESULTS.md records. Needs root and `scripts/test-hosts.sh setup`.
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."
t=target/debug
step() { printf '\n--> %s\n' "$*"; }

cargo build --quiet -p mitogen-benches --bins

step "fresh process vs ssh true and Python Mitogen (goals 1, 2)"
FRESH_CALL=$t/fresh_call RUST_SSH_BENCH=$t/compare_ssh bash benches/compare/fresh.sh --runs 1
step "many targets (goal 3)"
$t/connect_many local --n 20
$t/connect_many ssh --small 2 --large 4
step "calls beside bulk data (goal 4)"
$t/rtt_during_bulk --secs 1 --arg-mib 8 --file-mib 8
step "files over ssh (goal 5)"
$t/files_ssh --mib 8 --rounds 1
step "sparse files (goal 6)"
$t/sparse_files --gib 1
step "shutdown"
$t/shutdown --children 20
step "mitogen-ansible per task vs ansible-playbook"
PROFILE=debug bash benches/compare/ansible.sh 3 ping
step "mitogen-play vs ansible-playbook"
PROFILE=debug bash benches/compare/play.sh --sizes 1 --kinds ping
