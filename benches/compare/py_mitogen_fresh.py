#!/usr/bin/env python3
"""
One fresh Python Mitogen controller process, the peer of ``fresh_call``:
connect over ssh (the same options as mitogen-rs's benches, see
``bench_common.ssh_connect``), make one call (``os.getpid``, a function the
target already has, so no module is forwarded), shut down and exit.
``fresh.sh`` times whole runs of it. Python Mitogen has no cache on the
target, so every run is a cold start: it sends its own core source each time.
"""

import os

import bench_common
import mitogen.utils


def main(router, args):
    ctx = bench_common.ssh_connect(router, args)
    pid = ctx.call(os.getpid)
    assert pid != os.getpid(), pid


if __name__ == '__main__':
    p = bench_common.new_parser(__doc__)
    bench_common.add_sshd_args(p)
    a = p.parse_args()
    bench_common.check_sshd_args(p, a)
    mitogen.utils.run_with_router(main, a)
