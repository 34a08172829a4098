#!/usr/bin/env python3
"""
Baseline benchmark of Python Mitogen (pip package ``mitogen``, 0.3.x) on the
local transport (``router.local()``: a child Python interpreter on the same
machine, talking to the parent over a socketpair/pipe).

Measures:
  * call round trip of a trivial module-level function (median / p99, us)
  * call round trip with a 4096-byte bytes argument, the function returning
    its length (median / p99, us)
  * bulk throughput: 1 MiB raw byte payloads streamed to the child, which
    counts every byte and reports the total back (MiB/s)

Prints exactly one line of JSON on stdout; everything else goes to stderr.
The same keys are printed by the mitogen-rs ``compare_local`` bench binary, and
``run.sh`` in this directory runs both and tabulates them.

NOTE: the functions called in the child are module-level functions of this
script and of bench_common.py (``noop``). Mitogen's module forwarder serves
``__main__`` to the child, truncated at the ``if __name__ == '__main__':``
guard, and bench_common like any other module, so everything the child needs
must be defined above that guard or in bench_common, and nothing above it may
have side effects.
"""

import statistics
import sys
import time

import mitogen
import mitogen.core
import mitogen.master

import bench_common
from bench_common import nearest_rank, noop, time_calls


MIB = 1024 * 1024


# ---------------------------------------------------------------------------
# Functions executed in the child context.
# ---------------------------------------------------------------------------

def payload_len(data):
    """4 KiB round trip: receives a bytes argument, returns its length."""
    return len(data)


@mitogen.core.takes_router
def bulk_sink(reply_sender, router):
    """
    Streaming sink used for the bulk-throughput measurement.

    Opens a Receiver in the child, hands its Sender back to the parent via
    `reply_sender`, then consumes messages until the parent closes the channel
    (a "dead" message), summing the raw payload lengths of every message
    received. The total is the return value of this call, which the parent
    waits for before stopping the clock, so every byte is accounted for by
    the child.
    """
    recv = mitogen.core.Receiver(router)
    try:
        reply_sender.send(recv.to_sender())
        total = 0
        count = 0
        while True:
            msg = recv.get(throw_dead=False)
            if msg.is_dead:
                break
            # ENC_BIN messages: msg.data is the raw payload (no unpickling).
            total += len(msg.data)
            count += 1
        return (total, count)
    finally:
        recv.close()


def bytes_sink(data):
    """Used by the alternative 'call' bulk method: returns the length."""
    return len(data)


# ---------------------------------------------------------------------------
# Parent-side measurement code.
# ---------------------------------------------------------------------------

log = bench_common.make_log('py-mitogen-bench')


def median_p99_us(samples):
    """Median (statistics.median) and nearest-rank p99 of sorted ns samples,
    in us."""
    return (statistics.median(samples) / 1000.0,
            nearest_rank(samples, 0.99) / 1000.0)


def bench_rtt_empty(context, iters, warmup):
    def one():
        r = context.call(noop)
        assert r == 1, r
    return median_p99_us(time_calls(one, iters, warmup))


def bench_rtt_4k(context, iters, warmup):
    payload = bytes(range(256)) * 16   # 4096 bytes, all byte values
    assert len(payload) == 4096

    def one():
        r = context.call(payload_len, payload)
        assert r == 4096, r
    return median_p99_us(time_calls(one, iters, warmup))


def bulk_stream(router, context, n_chunks, chunk):
    """
    Fastest honest bulk method found for Python Mitogen 0.3.x:

    The child runs bulk_sink() (started with call_async) which owns a
    Receiver; the parent sends each 1 MiB chunk as one message with
    enc=Message.ENC_BIN, i.e. the raw bytes are the message body, with no
    pickling on either side and no per-message reply. After the last chunk the
    parent closes the Sender (a dead message, ordered after all data on the
    same stream), and the clock stops only when the child's call returns the
    total byte and message counts, which are checked against what was sent.

    Mitogen itself has no flow control on this path: Sender.send() hands the
    message to the broker thread, which buffers it until the socket accepts
    it, so the parent may queue up to the whole transfer in memory. That is
    the library's normal behaviour, and the measured time still spans until
    the child has received and counted every byte.
    """
    setup = mitogen.core.Receiver(router)
    try:
        call = context.call_async(bulk_sink, setup.to_sender())
        child_sender = setup.get().unpickle()
    finally:
        setup.close()

    enc = mitogen.core.Message.ENC_BIN
    t0 = time.perf_counter()
    for _ in range(n_chunks):
        child_sender.send(chunk, enc=enc)
    child_sender.close()
    total, count = call.get().unpickle()
    elapsed = time.perf_counter() - t0
    expect = n_chunks * len(chunk)
    if total != expect or count != n_chunks:
        raise RuntimeError('bulk: child counted %d bytes in %d msgs, '
                           'expected %d bytes in %d msgs'
                           % (total, count, expect, n_chunks))
    return elapsed


def bulk_call(router, context, n_chunks, chunk, window=8):
    """
    Alternative bulk method (--bulk-method call): each 1 MiB chunk is the bytes
    argument of a remote call returning its length, pipelined with up to
    `window` calls in flight. Every chunk is individually acknowledged.
    Slower than the stream method (pickled call framing + one reply per
    chunk + the child's single-threaded dispatcher); kept for comparison.
    """
    import collections
    inflight = collections.deque()
    received = 0
    t0 = time.perf_counter()
    for _ in range(n_chunks):
        if len(inflight) >= window:
            received += inflight.popleft().get().unpickle()
        inflight.append(context.call_async(bytes_sink, chunk))
    while inflight:
        received += inflight.popleft().get().unpickle()
    elapsed = time.perf_counter() - t0
    expect = n_chunks * len(chunk)
    if received != expect:
        raise RuntimeError('bulk(call): child acknowledged %d bytes, '
                           'expected %d' % (received, expect))
    return elapsed


def run(router, args):
    t_start = time.perf_counter()
    context = router.local()
    log('child context up: %r (spawn+bootstrap %.1f ms)',
        context, (time.perf_counter() - t_start) * 1e3)

    # Make sure the __main__ functions really execute in the child.
    child_pid = context.call(__import__('os').getpid)
    parent_pid = __import__('os').getpid()
    assert child_pid != parent_pid, (child_pid, parent_pid)
    log('child pid %d (parent %d); noop() -> %r',
        child_pid, parent_pid, context.call(noop))
    # Load this script's module there now, outside the clocks below (noop
    # comes from bench_common).
    context.call(bench_common.import_main)

    result = bench_common.new_result()

    log('rtt empty: %d warmup + %d timed calls', args.warmup, args.rtt_iters)
    med, p99 = bench_rtt_empty(context, args.rtt_iters, args.warmup)
    result['rtt_empty_median_us'] = round(med, 2)
    result['rtt_empty_p99_us'] = round(p99, 2)
    log('  median %.2f us, p99 %.2f us', med, p99)

    log('rtt 4k: %d warmup + %d timed calls', args.warmup, args.rtt_iters)
    med, p99 = bench_rtt_4k(context, args.rtt_iters, args.warmup)
    result['rtt_4k_median_us'] = round(med, 2)
    result['rtt_4k_p99_us'] = round(p99, 2)
    log('  median %.2f us, p99 %.2f us', med, p99)

    chunk = b'\xa5' * MIB
    fn = bulk_stream if args.bulk_method == 'stream' else bulk_call
    # Short untimed warm-up of the bulk path (8 MiB or less).
    fn(router, context, min(8, args.bulk_mib), chunk)
    log('bulk (%s): %d x 1 MiB', args.bulk_method, args.bulk_mib)
    elapsed = fn(router, context, args.bulk_mib, chunk)
    mib_s = args.bulk_mib / elapsed
    result['bulk_mib_s'] = round(mib_s, 1)
    log('  %d MiB in %.3f s = %.1f MiB/s', args.bulk_mib, elapsed, mib_s)

    context.shutdown(wait=True)
    return result


def parse_args(argv):
    p = bench_common.new_parser(__doc__)
    p.add_argument('--rtt-iters', type=int, default=5000,
                   help='timed calls per round-trip test (default 5000)')
    p.add_argument('--bulk-mib', type=int, default=256,
                   help='MiB to send in the bulk test (default 256)')
    p.add_argument('--warmup', type=int, default=200,
                   help='untimed warm-up calls per round-trip test')
    p.add_argument('--bulk-method', choices=('stream', 'call'),
                   default='stream',
                   help='bulk transfer method (default: stream)')
    args = p.parse_args(argv)
    if args.rtt_iters < 1 or args.bulk_mib < 1 or args.warmup < 0:
        p.error('--rtt-iters and --bulk-mib must be >= 1, --warmup >= 0')
    return args


if __name__ == '__main__':
    bench_common.main(run, parse_args(sys.argv[1:]), log)
