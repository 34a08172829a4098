# mitogen-ansible fork server: runs on the target, started by the Rust agent
# as `PYTHON -c SOURCE TREE [--oneshot]`. Imports ansible.module_utils.basic
# (and AnsiballZ's loader) once from TREE, then forks one child per task.
#
# Protocol on the process's original stdin/stdout (moved off fds 0/1 at
# start so children get fresh ones): each request is one JSON line; for each
# the server writes frames, a JSON header line then `len` raw bytes:
#   {"ready": true, "pid": P}               once, after the preload
#   {"spare": C}                            the next task will run in pid C
#                                           (also in "ready"; sent while a task
#                                           runs, before its result)
#   {"started": true, "pid": C}             a task's child is running (when
#                                           not the announced one)
#   {"rc": R, "out": N, "err": M, "timed_out": b}  then N + M bytes
# --oneshot: no fork, no frames; run the one request read from stdin in this
# process (used when the warm server cannot start).
import gc
import json
import os
import select
import signal
import sys
import time

TREE = sys.argv[1]
ONESHOT = len(sys.argv) > 2 and sys.argv[2] == '--oneshot'


def _clean_path():
    # As AnsiballZ: no '' / '.' / script dir; the payload goes first.
    sys.path[:] = [p for p in sys.path if p not in ('', '.')]
    sys.path.insert(0, TREE)


_clean_path()
LOADER = None
PRELOAD_ERROR = None
try:
    from ansible.module_utils._internal._ansiballz import _loader as LOADER  # noqa: E402
    # Every module's result is encoded (and its args decoded) with the
    # legacy profile, which basic imports lazily: once here, not per task.
    import importlib as _importlib  # noqa: E402
    for _name in ('_module_legacy_c2m', '_module_legacy_m2c'):
        try:
            _importlib.import_module('ansible.module_utils._internal._json._profiles.' + _name)
        except ImportError:
            pass
except Exception:  # pragma: no cover - reported to the agent
    import traceback
    PRELOAD_ERROR = traceback.format_exc()


PRELOADED = set()
_PRELOAD_PREFIXES = ('ansible.module_utils.', 'ansible_collections.')


def preload(fqn):
    """Imports what module `fqn` imports, once, so each task's child finds
    it in sys.modules: its module_utils (the payload's, libraries meant to
    be imported) and the standard library modules it names. The module
    itself is not imported (its body runs as __main__ in the child, as
    under AnsiballZ). Then gc.freeze(): children's collections skip the
    preloaded objects instead of touching (and copying) their pages."""
    if fqn in PRELOADED or LOADER is None:
        return
    PRELOADED.add(fqn)
    try:
        import ast
        import importlib
        path = os.path.join(TREE, *fqn.split('.')) + '.py'
        with open(path, 'rb') as f:
            tree = ast.parse(f.read())
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
        stdlib = getattr(sys, 'stdlib_module_names', ())
        # runpy imports the module's package first: its __init__ chain.
        names.insert(0, fqn.rsplit('.', 1)[0])
        for name in names:
            if (name.startswith(_PRELOAD_PREFIXES) or name.split('.')[0] in stdlib
                    or name == fqn.rsplit('.', 1)[0]):
                if name in sys.modules or name == '__future__':
                    continue
                try:
                    importlib.import_module(name)
                except BaseException:
                    pass
    except BaseException:
        pass
    gc.collect()
    gc.freeze()


def _exit_code(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + '\n')
    except Exception:
        pass
    return 1


def run_task(req):
    """Runs the module as AnsiballZ's _ansiballz_main + _loader.run_module would."""
    code = 1
    try:
        try:
            os.chdir(req.get('cwd') or os.path.expanduser('~'))
        except OSError:
            try:
                os.chdir(os.path.expanduser('~'))
            except OSError:
                os.chdir('/')
        rlimit_nofile = req.get('rlimit_nofile') or 0
        if rlimit_nofile:
            # As ansible-core's AnsiballZ wrapper: the soft limit, capped
            # by the hard one.
            import resource
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = min(hard, rlimit_nofile)
            if want != soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                except ValueError:
                    pass
        for k, v in (req.get('env') or {}).items():
            os.environ[k] = v
        sys.argv = [req['argv0']]
        params = req['params'].encode('utf-8', 'surrogateescape')
        if LOADER is None:
            raise RuntimeError('cannot import ansible.module_utils: ' + str(PRELOAD_ERROR))
        LOADER.run_module(json_params=params, profile='legacy', module_fqn=req['fqn'],
                          modlib_path=TREE, extensions={})
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    # What interpreter shutdown would do: atexit (AnsibleModule's tmpdir
    # cleanup), then flush the std streams.
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass
    return code


if ONESHOT:
    line = sys.stdin.readline()
    sys.stdin = open(os.devnull)
    os._exit(run_task(json.loads(line)))

# Move the control channel off 0/1; children get fresh stdio.
CTL_IN = os.fdopen(os.dup(0), 'rb')
CTL_OUT = os.fdopen(os.dup(1), 'wb', buffering=0)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
os.dup2(_null, 1)
os.close(_null)


def send(header, payload=b''):
    data = json.dumps(header).encode() + b'\n' + payload
    view = memoryview(data)
    while view:
        n = os.write(CTL_OUT.fileno(), view)
        view = view[n:]


def read_line():
    # Buffered: only this process reads the control channel (children
    # close it before running anything).
    line = CTL_IN.readline()
    if not line.endswith(b'\n'):
        return None
    return line[:-1]


class Spare:
    """A child forked ahead of its task: it has its own session and stdio
    pipes and waits for the request on `req_w`, so a task's critical path
    has no fork in it. Made after each task's reply is sent."""

    def __init__(self):
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:
                pass
        in_r, self.in_w = os.pipe()
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        req_r, self.req_w = os.pipe()
        self.born = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setsid()
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                # Nothing else of the server's: not its control channel,
                # not the pipes of a task running beside this spare.
                top = min(os.sysconf('SC_OPEN_MAX'), 1 << 16)
                os.closerange(3, req_r)
                os.closerange(req_r + 1, top)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                data = b''
                while True:
                    chunk = os.read(req_r, 65536)
                    if not chunk:
                        break
                    data += chunk
                os.close(req_r)
                if not data:
                    os._exit(0)  # the server went away
                code = run_task(json.loads(data))
            except BaseException:
                code = 1
            os._exit(code)
        self.pid = pid
        for fd in (in_r, out_w, err_w, req_r):
            os.close(fd)

    def start(self, req):
        """Hands the spare its task; False if it is gone."""
        data = json.dumps(req).encode()
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.req_w, view)
                view = view[n:]
            os.close(self.req_w)
            return True
        except OSError:
            self.discard()
            return False

    def discard(self):
        for fd in (self.req_w, self.in_w, self.out_r, self.err_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass


SPARE = None


def serve_one(req):
    global SPARE
    before = len(sys.modules)
    preload(req['fqn'])
    spare = SPARE
    SPARE = None
    if spare is not None and len(sys.modules) != before:
        # Forked before this module's imports were preloaded: a fresh one
        # has them.
        spare.discard()
        spare = None
    if spare is None or not spare.start(req):
        spare = Spare()
        spare.start(req)
    t0 = time.monotonic()
    pid, in_w, out_r, err_r = spare.pid, spare.in_w, spare.out_r, spare.err_r
    if pid != ANNOUNCED:
        send({'started': True, 'pid': pid})
    data = req.get('stdin')
    if data:
        try:
            os.write(in_w, data.encode('utf-8', 'surrogateescape'))
        except OSError:
            pass
    os.close(in_w)
    # The next task's child forks while this one runs (off both paths).
    SPARE = Spare()
    announce()
    deadline = time.monotonic() + float(req.get('timeout') or 3600)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    limit = int(req.get('max_output') or (64 << 20))
    open_fds = [out_r, err_r]
    timed_out = False
    too_large = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(open_fds, [], [], min(left, 1.0))
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                os.close(fd)
            else:
                bufs[fd] += chunk
                if len(bufs[out_r]) + len(bufs[err_r]) > limit:
                    too_large = True
        if too_large:
            break
    if timed_out or too_large:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        for fd in open_fds:
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    child_us = int((time.monotonic() - t0) * 1e6)
    if os.WIFSIGNALED(status):
        rc = -os.WTERMSIG(status)
    else:
        rc = os.WEXITSTATUS(status)
    out, err = bytes(bufs[out_r]), bytes(bufs[err_r])
    send({'rc': rc, 'out': len(out), 'err': len(err), 'timed_out': timed_out,
          'too_large': too_large, 'child_us': child_us}, out + err)


ANNOUNCED = None


def announce():
    """Tells the agent which pid will run the next task (off the next
    task's path: it is then killed at its deadline with no 'started')."""
    global ANNOUNCED
    ANNOUNCED = SPARE.pid
    send({'spare': SPARE.pid})


gc.collect()
gc.freeze()
SPARE = Spare()
ANNOUNCED = SPARE.pid
send({'ready': True, 'pid': os.getpid(), 'preload_error': PRELOAD_ERROR,
      'python': sys.version.split()[0], 'spare': SPARE.pid})
while True:
    line = read_line()
    if line is None:
        break
    serve_one(json.loads(line))
# The agent is done with us: the spare goes (it reads EOF on its request
# pipe), and so does this process, without the interpreter's finalization
# (tearing down every module preloaded here: 15-20 ms of CPU per host).
if SPARE is not None:
    SPARE.discard()
os._exit(0)
