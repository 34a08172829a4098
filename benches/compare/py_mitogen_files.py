#!/usr/bin/env python3
"""
File transfer baseline of Python Mitogen (pip package ``mitogen``, 0.3.x):
its ``mitogen.service.FileService`` over ssh (``router.ssh()``), against an
sshd started elsewhere -- normally the throw-away sshd of ``compare_ssh
--sshd-info``, so that mitogen-rs (``compare_files --use-sshd``) and Python
Mitogen are measured against the very same daemon (``run_files.sh`` does this).

The service is driven the way ansible_mitogen drives it:
  * controller: a ``mitogen.service.Pool`` on the master's router (the
    connection multiplexer's pool; ``--pool-size``, default 32 threads as
    ansible_mitogen's ``MITOGEN_POOL_SIZE`` default) holding a
    ``FileService``; the source path is registered in-process, as
    ``mitogen.service.call()`` does without a call_context (an ansible
    WorkerProcess sends that call to the mux as a service message);
  * target: ``FileService.get(context, path, out_fp)`` as in
    ``ansible_mitogen.target.transfer_file()``: the file service's own flow
    control (1 MiB window, ~128 KiB chunks, one ``acknowledge`` service call
    per chunk received).

Measures, from one established ssh context (the context start, module
loading and the hash checks are outside the clock):
  * py_ssh_mib_s: one remote call that fetches the file into a temp file next
    to /tmp/<unique> (``os.fdopen(fd, 'wb', CHUNK_SIZE)`` as in
    transfer_file), fchmod, fsync, close, rename -- mitogen-rs's put_file
    semantics (temp file, fsync, rename). Wall time of the call on the
    controller. The file is then checked (size and a sha256 computed on the
    target, untimed) and removed.
  * py_ssh_discard_mib_s: the same with ``out_fp`` a sink whose ``write()``
    only counts bytes (comparable to ``ssh host 'cat >/dev/null'``).

ssh options match py_mitogen_ssh.py and mitogen-rs's benches
(``bench_common.ssh_connect()``): BatchMode, IdentitiesOnly,
StrictHostKeyChecking=yes against the given known_hosts file,
Compression=no, python_path=/usr/bin/python3.

Prints exactly one line of JSON on stdout; everything else goes to stderr.

NOTE: functions called in the child are module-level functions of this
script and of bench_common.py (``whoami``, ``import_main``), served to the
child by Mitogen's module forwarder, which truncates ``__main__`` at the
``if __name__ == '__main__':`` guard; nothing above that guard, nor in
bench_common, may have side effects.
"""

import hashlib
import os
import sys
import tempfile
import time

import mitogen
import mitogen.core
import mitogen.master
import mitogen.service

import bench_common


HASH_BLOCK = 1 << 20


# ---------------------------------------------------------------------------
# Functions executed in the child context.
# ---------------------------------------------------------------------------

class NullSink(object):
    """File-like ``out_fp`` that discards the data, counting it."""

    def __init__(self):
        self.n = 0

    def write(self, s):
        self.n += len(s)


def fetch_to_disk(context, in_path, out_path):
    """
    ansible_mitogen.target.transfer_file(sync=True), with the fsync before
    the close (transfer_file fsyncs a closed fd): temp file in the target
    directory, FileService.get(), fchmod, fsync, rename, utime. Returns
    (bytes, seconds measured on the target).
    """
    t0 = time.perf_counter()
    out_path = os.path.abspath(out_path)
    fd, tmp_path = tempfile.mkstemp(suffix='.tmp',
                                    prefix='.py-mitogen-files-',
                                    dir=os.path.dirname(out_path))
    fp = os.fdopen(fd, 'wb', mitogen.core.CHUNK_SIZE)
    try:
        try:
            ok, metadata = mitogen.service.FileService.get(
                context=context,
                path=in_path,
                out_fp=fp,
            )
            if not ok:
                raise IOError('transfer of %r was interrupted.' % (in_path,))
            os.fchmod(fp.fileno(), metadata['mode'] & 0o7777)
            fp.flush()
            os.fsync(fp.fileno())
        finally:
            fp.close()
        os.rename(tmp_path, out_path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    os.utime(out_path, (metadata['atime'], metadata['mtime']))
    return metadata['size'], time.perf_counter() - t0


def fetch_to_null(context, in_path):
    """FileService.get() into a discarding sink. Returns (bytes, seconds)."""
    t0 = time.perf_counter()
    sink = NullSink()
    ok, metadata = mitogen.service.FileService.get(
        context=context,
        path=in_path,
        out_fp=sink,
    )
    if not ok or sink.n != metadata['size']:
        raise IOError('transfer of %r was interrupted: %d of %d bytes'
                      % (in_path, sink.n, metadata['size']))
    return sink.n, time.perf_counter() - t0


def size_and_sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as fp:
        while True:
            b = fp.read(HASH_BLOCK)
            if not b:
                break
            h.update(b)
    return os.stat(path).st_size, h.hexdigest()


def remove(path):
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Parent-side measurement code.
# ---------------------------------------------------------------------------

log = bench_common.make_log('py-mitogen-files')


def mib_s(nbytes, seconds):
    """MiB/s to one decimal, as compare_files's mib_s()."""
    return round(nbytes / float(1 << 20) / seconds, 1)


def make_file(path, mib):
    """N MiB of random data, fsynced (then read back from the page cache by
    the service, as compare_files's source file)."""
    block = 1 << 20
    with open(path, 'wb') as fp:
        for _ in range(mib):
            fp.write(os.urandom(block))
        fp.flush()
        os.fsync(fp.fileno())


def run(router, args):
    result = bench_common.new_result(mib=args.mib)

    # ---- source file ----------------------------------------------------
    own_src = None
    if args.src:
        src = os.path.abspath(args.src)
        size = os.stat(src).st_size
        if size != args.mib << 20:
            raise RuntimeError('--src %s holds %d bytes, not %d MiB'
                               % (src, size, args.mib))
    else:
        fd, src = tempfile.mkstemp(prefix='py-mitogen-files-src-')
        os.close(fd)
        own_src = src
    unique = 'py-mitogen-files-%d-%s' % (os.getpid(), os.urandom(4).hex())
    remote = '/tmp/' + unique

    # ---- the FileService, as ansible_mitogen's mux sets it up ------------
    pool = mitogen.service.Pool(router=router, size=args.pool_size)
    context = None
    try:
        pool.add(mitogen.service.FileService(router=pool.router))
        log('service pool: %d threads, FileService window %d bytes, '
            'chunk %d bytes', pool.size,
            mitogen.service.FileService.window_size_bytes,
            mitogen.service.FileService.IO_SIZE)

        if own_src:
            t0 = time.perf_counter()
            make_file(src, args.mib)
            log('made %d MiB random file %s in %.1f s', args.mib, src,
                time.perf_counter() - t0)
        want_size, want_sha = size_and_sha256(src)

        # Register the path in-process, as mitogen.service.call() does when
        # no call_context is given (an ansible WorkerProcess sends the same
        # 'register' as a service call to the mux; a message routed to the
        # controller itself gets no reply route in Python Mitogen).
        pool.get_invoker(u'mitogen.service.FileService', msg=None) \
            .service.register(path=src)
        myself = router.myself()   # the context the target fetches from

        t0 = time.perf_counter()
        context = bench_common.ssh_connect(router, args)
        pid, user, exe = bench_common.check_remote(context, args.user)
        context.call(bench_common.import_main)   # loads this module there
        log('context %r up in %.1f ms: remote pid %d, user %r, %s',
            context, (time.perf_counter() - t0) * 1e3, pid, user, exe)

        # (a) to disk: temp file, fsync, rename.
        try:
            t0 = time.perf_counter()
            n, remote_s = context.call(fetch_to_disk, myself, src, remote)
            took = time.perf_counter() - t0
            if n != want_size:
                raise RuntimeError('to disk: %d bytes reported, want %d'
                                   % (n, want_size))
            got_size, got_sha = context.call(size_and_sha256, remote)
            if (got_size, got_sha) != (want_size, want_sha):
                raise RuntimeError('to disk: remote file %s is %d bytes '
                                   'sha256 %s, want %d bytes sha256 %s'
                                   % (remote, got_size, got_sha,
                                      want_size, want_sha))
        finally:
            context.call(remove, remote)
        result['py_ssh_mib_s'] = mib_s(want_size, took)
        log('to disk: %.2f s on the controller (%.2f s on the target): '
            '%.1f MiB/s; size and sha256 verified on the target',
            took, remote_s, result['py_ssh_mib_s'])

        # (b) into a discarding sink.
        t0 = time.perf_counter()
        n, remote_s = context.call(fetch_to_null, myself, src)
        took = time.perf_counter() - t0
        if n != want_size:
            raise RuntimeError('discard: %d bytes received, want %d'
                               % (n, want_size))
        result['py_ssh_discard_mib_s'] = mib_s(want_size, took)
        log('discard: %.2f s on the controller (%.2f s on the target): '
            '%.1f MiB/s', took, remote_s, result['py_ssh_discard_mib_s'])
    finally:
        if context is not None:
            context.shutdown(wait=True)
        pool.stop(join=True)
        if own_src:
            os.unlink(own_src)
    return result


def parse_args(argv):
    p = bench_common.new_parser(__doc__)
    bench_common.add_sshd_args(p)
    p.add_argument('--mib', type=int, default=1024,
                   help='file size in MiB (default 1024)')
    p.add_argument('--src',
                   help='existing source file of exactly --mib MiB '
                        '(default: a random file made and removed here)')
    p.add_argument('--pool-size', type=int, default=32,
                   help='service pool threads on the controller (default 32, '
                        "ansible_mitogen's MITOGEN_POOL_SIZE default)")
    args = p.parse_args(argv)
    if args.mib < 1 or args.pool_size < 1:
        p.error('--mib and --pool-size must be >= 1')
    bench_common.check_sshd_args(p, args)
    if args.src and not os.path.isfile(args.src):
        p.error('no such file: %s' % (args.src,))
    return args


if __name__ == '__main__':
    bench_common.main(run, parse_args(sys.argv[1:]), log)
