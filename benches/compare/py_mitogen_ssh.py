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

ssh options are chosen to match mitogen-rs's ``compare_ssh``
(``bench_common.ssh_connect()``): BatchMode, IdentitiesOnly,
StrictHostKeyChecking=yes against the given known_hosts file
(``check_host_keys='enforce'`` plus ``UserKnownHostsFile`` via ``ssh_args``,
as Python Mitogen has no keyword for a known_hosts file) and Compression=no
(Python Mitogen's default is ``compression=True``; pass ``--compression`` to
keep it on). Python Mitogen also passes ServerAliveInterval 15 /
ServerAliveCountMax 3, like mitogen-rs.

Prints exactly one line of JSON on stdout; everything else goes to stderr.

NOTE: the functions called in the child (``noop``, ``whoami``) are
module-level functions of bench_common.py, served to the child by Mitogen's
module forwarder; nothing above this script's ``if __name__ == '__main__':``
guard, nor in bench_common, may have side effects.
"""

import functools
import os
import sys
import time

import bench_common
from bench_common import check_remote, nearest_rank, noop


# ---------------------------------------------------------------------------
# Parent-side measurement code.
# ---------------------------------------------------------------------------

log = bench_common.make_log('py-mitogen-ssh')


def connect(router, args):
    return bench_common.ssh_connect(router, args,
                                    compression=args.compression)


def check_one(r):
    assert r == 1, r


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
    result = bench_common.new_result()

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
    log('rtt: %d warmup + %d timed calls', args.warmup, args.rtt_iters)
    rtts = bench_common.time_calls(functools.partial(context.call, noop),
                                   args.rtt_iters, args.warmup, check_one)
    med_us = nearest_rank(rtts, 0.5) / 1000.0
    p99_us = nearest_rank(rtts, 0.99) / 1000.0
    result['rtt_ssh_median_us'] = round(med_us, 1)
    result['rtt_ssh_p99_us'] = round(p99_us, 1)
    log('  median %.1f us, p99 %.1f us', med_us, p99_us)
    context.shutdown(wait=True)
    return result


def parse_args(argv):
    p = bench_common.new_parser(__doc__)
    bench_common.add_sshd_args(p)
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
    bench_common.check_sshd_args(p, args)
    return args


if __name__ == '__main__':
    bench_common.main(run, parse_args(sys.argv[1:]), log)
