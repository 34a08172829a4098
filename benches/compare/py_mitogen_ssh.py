#!/usr/bin/env python3
"""
Baseline benchmark of Python Mitogen (pip package ``mitogen``, 0.3.x) over
ssh (``router.ssh()``), against an sshd started elsewhere -- normally the
throw-away sshd of ``compare_ssh --sshd-info``, so that mitogen-rs and Python
Mitogen are measured against the very same daemon (``run_ssh.sh`` does this).

Measures:
  * first_call_ms: median wall time from ``router.ssh(...)`` to the result of
    the first call in the new context (the context is then shut down with
    ``shutdown(wait=True)`` outside the clock). Python Mitogen has no cache on
    the target: every start sends the (compressed) mitogen core source through
    the boot command and stdin, so there is one figure only, comparable to
    both mitogen-rs's warm-cache and cold-cache figures.
  * rtt_ssh_median_us / rtt_ssh_p99_us: call round trip of a trivial
    module-level function on one established ssh context (after a warm-up).

ssh options are chosen to match mitogen-rs's ``compare_ssh``: BatchMode,
IdentitiesOnly, StrictHostKeyChecking=yes against the given known_hosts file
(``check_host_keys='enforce'`` plus ``UserKnownHostsFile`` via ``ssh_args``,
as Python Mitogen has no keyword for a known_hosts file) and Compression=no
(Python Mitogen's default is ``compression=True``; pass ``--compression`` to
keep it on). Python Mitogen also passes ServerAliveInterval 15 /
ServerAliveCountMax 3, like mitogen-rs.

Prints exactly one line of JSON on stdout; everything else goes to stderr.

NOTE: functions called in the child are module-level functions of this
script, served to the child by Mitogen's module forwarder, which truncates
``__main__`` at the ``if __name__ == '__main__':`` guard; nothing above that
guard may have side effects.
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
import mitogen.master
import mitogen.utils


# ---------------------------------------------------------------------------
# Functions executed in the child context.
# ---------------------------------------------------------------------------

def noop():
    """Trivial remote call: returns a small value."""
    return 1


def whoami():
    """Identify the process the calls run in."""
    return os.getpid(), getpass.getuser(), sys.executable


# ---------------------------------------------------------------------------
# Parent-side measurement code.
# ---------------------------------------------------------------------------

def log(fmt, *args):
    sys.stderr.write('[py-mitogen-ssh] ' + (fmt % args) + '\n')
    sys.stderr.flush()


def nearest_rank(sorted_vals, q):
    """Nearest-rank quantile (0 < q <= 1) of a sorted list, as mitogen-rs's
    median_p99() computes it."""
    rank = int(math.ceil(q * len(sorted_vals)))
    rank = min(max(rank, 1), len(sorted_vals))
    return sorted_vals[rank - 1]


def connect(router, args):
    return router.ssh(
        hostname='127.0.0.1',
        port=args.port,
        username=args.user,
        identity_file=args.key,
        identities_only=True,
        check_host_keys='enforce',
        ssh_args=['-o', 'UserKnownHostsFile=%s' % (args.known_hosts,)],
        compression=args.compression,
        python_path='/usr/bin/python3',
        connect_timeout=30,
    )


def check_remote(context, want_user):
    """Make sure calls really run remotely, as the requested user."""
    pid, user, exe = context.call(whoami)
    if pid == os.getpid():
        raise RuntimeError('remote pid %d equals the local pid' % (pid,))
    if user != want_user:
        raise RuntimeError('remote runs as %r, expected %r'
                           % (user, want_user))
    return pid, user, exe


def first_call_once(router, args):
    t0 = time.perf_counter()
    context = connect(router, args)
    pid = context.call(os.getpid)
    elapsed = time.perf_counter() - t0
    if pid == os.getpid():
        raise RuntimeError('first call ran locally (pid %d)' % (pid,))
    context.shutdown(wait=True)
    return elapsed, pid


def run(router, args):
    result = {
        'impl': 'python-mitogen',
        'version': '.'.join(str(x) for x in mitogen.__version__),
    }

    # Untimed start: fails early (and clearly) on a configuration problem,
    # and checks the remote identity.
    t0 = time.perf_counter()
    context = connect(router, args)
    pid, user, exe = check_remote(context, args.user)
    log('context %r up in %.1f ms: remote pid %d (local %d), user %r, %s',
        context, (time.perf_counter() - t0) * 1e3, pid, os.getpid(),
        user, exe)
    context.shutdown(wait=True)

    # (a) time to first call: connect + bootstrap + first os.getpid() call.
    log('first call: %d starts', args.starts)
    samples = []
    pids = set()
    for _ in range(args.starts):
        took, rpid = first_call_once(router, args)
        samples.append(took)
        pids.add(rpid)
    if len(pids) != args.starts:
        raise RuntimeError('expected %d distinct remote pids, got %d'
                           % (args.starts, len(pids)))
    samples.sort()
    # Same median as compare_ssh's starts: element len/2 of the sorted list.
    first = samples[len(samples) // 2]
    result['first_call_ms'] = round(first * 1e3, 2)
    log('  median %.2f ms (min %.2f, max %.2f)', first * 1e3,
        samples[0] * 1e3, samples[-1] * 1e3)

    # (b) call round trip on one established context.
    context = connect(router, args)
    check_remote(context, args.user)
    for _ in range(args.warmup):
        r = context.call(noop)
        assert r == 1, r
    log('rtt: %d warmup + %d timed calls', args.warmup, args.rtt_iters)
    clock = time.perf_counter_ns
    rtts = []
    for _ in range(args.rtt_iters):
        t0 = clock()
        r = context.call(noop)
        rtts.append(clock() - t0)
        assert r == 1, r
    rtts.sort()
    med_us = nearest_rank(rtts, 0.5) / 1000.0
    p99_us = nearest_rank(rtts, 0.99) / 1000.0
    result['rtt_ssh_median_us'] = round(med_us, 1)
    result['rtt_ssh_p99_us'] = round(p99_us, 1)
    log('  median %.1f us, p99 %.1f us', med_us, p99_us)
    context.shutdown(wait=True)
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--port', type=int, required=True, help='sshd port')
    p.add_argument('--user', required=True, help='remote user')
    p.add_argument('--key', required=True, help='client private key')
    p.add_argument('--known-hosts', required=True,
                   help='known_hosts file holding the sshd host key')
    p.add_argument('--starts', type=int, default=10,
                   help='timed starts for first_call_ms (default 10)')
    p.add_argument('--rtt-iters', type=int, default=2000,
                   help='timed calls for the round trip (default 2000)')
    p.add_argument('--warmup', type=int, default=200,
                   help='untimed warm-up calls before the round trip')
    p.add_argument('--compression', action='store_true',
                   help="keep ssh compression on (Python Mitogen's default; "
                        'off by default here, as in mitogen-rs)')
    args = p.parse_args(argv)
    if args.starts < 1 or args.rtt_iters < 1 or args.warmup < 0:
        p.error('--starts and --rtt-iters must be >= 1, --warmup >= 0')
    for path in (args.key, args.known_hosts):
        if not os.path.isfile(path):
            p.error('no such file: %s' % (path,))
    return args


if __name__ == '__main__':
    _args = parse_args(sys.argv[1:])
    _t0 = time.perf_counter()
    _result = mitogen.utils.run_with_router(run, _args)
    log('total wall time %.1f s', time.perf_counter() - _t0)
    sys.stdout.write(json.dumps(_result) + '\n')
    sys.stdout.flush()
