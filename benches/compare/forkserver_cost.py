#!/usr/bin/env python3
"""What one task costs on the target: drives mitogen-ansible's real fork
server (mitogen-ansible/src/py/forkserver.py) with N `ping` requests, as
the agent does, and prints per task the wall time, the CPU time of the
server and of its children, and their minor page faults.

    python3 benches/compare/forkserver_cost.py TREE [N]

TREE is a payload tree an agent made on this machine (after any
mitogen-play or runner run: ~/.cache/mitogen-ansible/trees/<id>); run it
as that tree's user with the target's python3. The figures include the
server's start once (about 100 ms of CPU), spread over N (default 500).
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, '..', '..', 'mitogen-ansible', 'src', 'py', 'forkserver.py')
TREE = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500

with open(SERVER) as f:
    source = f.read()
proc = subprocess.Popen([sys.executable, '-c', source, TREE],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def frame():
    header = json.loads(proc.stdout.readline())
    body = proc.stdout.read(header['out'] + header['err']) if 'rc' in header else None
    return header, body


ready, _ = frame()
if ready.get('preload_error'):
    sys.exit('fork server could not preload: ' + ready['preload_error'])
args = {
    '_ansible_check_mode': False, '_ansible_no_log': False, '_ansible_debug': False,
    '_ansible_diff': False, '_ansible_verbosity': 0, '_ansible_module_name': 'ping',
    '_ansible_syslog_facility': 'LOG_USER', '_ansible_selinux_special_fs': ['fuse'],
    '_ansible_socket': None, '_ansible_shell_executable': '/bin/sh',
    '_ansible_keep_remote_files': False, '_ansible_tmpdir': None,
    '_ansible_remote_tmp': '~/.ansible/tmp', '_ansible_ignore_unknown_opts': False,
    '_ansible_target_log_info': None,
}
request = json.dumps({
    'fqn': 'ansible.modules.ping', 'argv0': 'AnsiballZ_ping.py',
    'params': json.dumps({'ANSIBLE_MODULE_ARGS': args}), 'cwd': None, 'env': {},
    'timeout': 60,
}).encode() + b'\n'


def task():
    proc.stdin.write(request)
    proc.stdin.flush()
    while True:
        header, body = frame()
        if 'rc' in header:
            if b'"pong"' not in body:
                sys.exit('unexpected result: %r' % body[:300])
            return


task()
t0 = time.monotonic()
for _ in range(N):
    task()
wall = (time.monotonic() - t0) / N
with open('/proc/%d/stat' % proc.pid) as f:
    st = f.read().rsplit(')', 1)[1].split()
tick = os.sysconf('SC_CLK_TCK')
# After the command name: state ppid pgrp session tty tpgid flags minflt
# cminflt majflt cmajflt utime stime cutime cstime ...
minflt, cminflt = int(st[7]), int(st[8])
utime, stime, cutime, cstime = (int(x) / tick / N * 1e3 for x in st[11:15])
print('per task: wall %.2f ms; server user %.2f sys %.2f ms, %d faults; '
      'children user %.2f sys %.2f ms, %d faults'
      % (wall * 1e3, utime, stime, minflt / N, cutime, cstime, cminflt / N))
proc.stdin.close()
proc.wait()
