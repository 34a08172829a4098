"""
Shared parts of py_mitogen_bench.py, py_mitogen_ssh.py and
py_mitogen_files.py (the Python Mitogen sides of run.sh, run_ssh.sh and
run_files.sh).

This module is imported in two places:
  * on the controller, by the scripts (it is found next to them, as the
    script's directory is on sys.path);
  * in the target contexts: ``noop()``, ``whoami()`` and ``import_main()``
    below are called there, and the scripts' own remote functions live in
    their ``__main__``, which imports this module. Mitogen's module forwarder serves it to the
    target like any other non-stdlib module (the target has no copy).
So: no side effects at import time, and only the standard library and
``mitogen`` / ``mitogen.core`` (present in every context) at module level;
anything controller-only (mitogen.utils, which pulls in mitogen.master) is
imported in the function that needs it.
"""

import argparse
import getpass
import json
import math
import os
import sys
import time

import mitogen
import mitogen.core


# ---------------------------------------------------------------------------
# Functions executed in the target context.
# ---------------------------------------------------------------------------

def noop():
    """Trivial remote call: returns a small value."""
    return 1


def whoami():
    """Identify the process the calls run in."""
    return os.getpid(), getpass.getuser(), sys.executable


def import_main():
    """
    Import ``__main__`` -- the controller's script, served by Mitogen's module
    forwarder with the modules it imports -- as the target does before the
    first call to a function of the script. Called untimed, so that no timed
    call pays for loading the script's module.
    """
    mitogen.core.import_module('__main__')


# ---------------------------------------------------------------------------
# Controller side.
# ---------------------------------------------------------------------------

def make_log(tag):
    """A log(fmt, *args) writing '[tag] fmt % args' lines to stderr."""
    prefix = '[%s] ' % (tag,)

    def log(fmt, *args):
        sys.stderr.write(prefix + (fmt % args) + '\n')
        sys.stderr.flush()
    return log


def nearest_rank(sorted_vals, q):
    """Nearest-rank quantile (0 < q <= 1) of a sorted list, as mitogen-rs's
    median_p99() computes it; NaN for an empty list."""
    if not sorted_vals:
        return float('nan')
    rank = int(math.ceil(q * len(sorted_vals)))
    rank = min(max(rank, 1), len(sorted_vals))
    return sorted_vals[rank - 1]


def time_calls(fn, iters, warmup, check=None):
    """
    Run fn() `warmup` times untimed, then time each of `iters` calls.
    check(result), if given, runs after each call, outside the clock.
    Returns the sorted samples in ns.
    """
    for _ in range(warmup):
        r = fn()
        if check is not None:
            check(r)
    clock = time.perf_counter_ns
    samples = []
    for _ in range(iters):
        t0 = clock()
        r = fn()
        samples.append(clock() - t0)
        if check is not None:
            check(r)
    samples.sort()
    return samples


def new_result(**extra):
    """The result dict: impl and version first, then `extra` in order."""
    result = {
        'impl': 'python-mitogen',
        'version': '.'.join(str(x) for x in mitogen.__version__),
    }
    result.update(extra)
    return result


def new_parser(doc):
    """ArgumentParser described by the first paragraph of `doc`."""
    return argparse.ArgumentParser(description=doc.split('\n\n')[0])


def add_sshd_args(p):
    """--port, --user, --key and --known-hosts: the sshd to run against, as
    printed by ``compare_ssh --sshd-info``."""
    p.add_argument('--port', type=int, required=True, help='sshd port')
    p.add_argument('--user', required=True, help='remote user')
    p.add_argument('--key', required=True, help='client private key')
    p.add_argument('--known-hosts', required=True,
                   help='known_hosts file holding the sshd host key')


def check_sshd_args(p, args):
    """p.error() unless the --key and --known-hosts files exist."""
    for path in (args.key, args.known_hosts):
        if not os.path.isfile(path):
            p.error('no such file: %s' % (path,))


def ssh_connect(router, args, compression=False):
    """
    router.ssh() to 127.0.0.1 with options matching mitogen-rs's benches:
    BatchMode, IdentitiesOnly, StrictHostKeyChecking=yes against
    args.known_hosts (``check_host_keys='enforce'`` plus UserKnownHostsFile
    via ssh_args, as Python Mitogen has no keyword for a known_hosts file),
    Compression=no unless asked, python_path=/usr/bin/python3.
    """
    return router.ssh(
        hostname='127.0.0.1',
        port=args.port,
        username=args.user,
        identity_file=args.key,
        identities_only=True,
        check_host_keys='enforce',
        ssh_args=['-o', 'UserKnownHostsFile=%s' % (args.known_hosts,)],
        compression=compression,
        python_path='/usr/bin/python3',
        connect_timeout=30,
    )


def check_remote(context, want_user):
    """Make sure calls really run remotely, as the requested user; returns
    whoami() of the context."""
    pid, user, exe = context.call(whoami)
    if pid == os.getpid():
        raise RuntimeError('remote pid %d equals the local pid' % (pid,))
    if user != want_user:
        raise RuntimeError('remote runs as %r, expected %r'
                           % (user, want_user))
    return pid, user, exe


def main(run, args, log):
    """run(router, args) with a fresh router; its result as one JSON line on
    stdout, the wall time on the log."""
    import mitogen.utils
    t0 = time.perf_counter()
    result = mitogen.utils.run_with_router(run, args)
    log('total wall time %.1f s', time.perf_counter() - t0)
    sys.stdout.write(json.dumps(result) + '\n')
    sys.stdout.flush()
