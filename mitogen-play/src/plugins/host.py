# mitogen-play's plugin host: ansible-core's own plugin loader, serving the
# filter, test and lookup plugins mitogen-play does not implement natively.
#
# Frames both ways: a 4-byte big-endian length, then UTF-8 JSON. Requests
# come on stdin; answers go out on the stdout this process started with,
# which is then pointed at stderr, so a plugin that prints cannot corrupt
# the protocol. One request at a time, in order.
import json
import os
import struct
import sys
import traceback

_out = os.fdopen(os.dup(1), 'wb')
os.dup2(2, 1)
sys.stdout = sys.stderr
_in = os.fdopen(0, 'rb')


def _read():
    head = _in.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack('>I', head)
    return json.loads(_in.read(n).decode('utf-8', 'surrogateescape'))


def _plain(o):
    """What JSON cannot carry, as the nearest JSON value."""
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode('utf-8', 'surrogateescape')
    if isinstance(o, dict):
        return dict(o)
    if hasattr(o, 'keys') and hasattr(o, '__getitem__'):
        return {k: o[k] for k in o.keys()}
    if hasattr(o, '__iter__') and not isinstance(o, str):
        return list(o)
    return str(o)


def _write(msg):
    data = json.dumps(msg, default=_plain, ensure_ascii=False).encode('utf-8', 'surrogateescape')
    _out.write(struct.pack('>I', len(data)) + data)
    _out.flush()


from ansible.plugins.loader import init_plugin_loader, filter_loader, test_loader, lookup_loader  # noqa: E402
from ansible.parsing.dataloader import DataLoader  # noqa: E402
from ansible.utils.collection_loader import AnsibleCollectionConfig  # noqa: E402

_loaders = {'filter': filter_loader, 'test': test_loader}
_env = None


def _environment():
    global _env
    if _env is None:
        from ansible._internal._templating._engine import TemplateEngine
        _env = TemplateEngine(loader=DataLoader()).environment
    return _env


def _init(req):
    # As ansible-playbook: the loader first, then every playbook's dir for
    # plugins and adjacent collections, then roles' dirs for plugins.
    from ansible.plugins.loader import add_all_plugin_dirs
    init_plugin_loader()
    playbook_dirs = req.get('playbook_dirs') or []
    for d in playbook_dirs:
        add_all_plugin_dirs(d)
    if playbook_dirs:
        AnsibleCollectionConfig.playbook_paths = playbook_dirs
    _add_dirs(req)
    return None


def _add_dirs(req):
    from ansible.plugins.loader import add_all_plugin_dirs
    for d in req.get('dirs') or []:
        add_all_plugin_dirs(d)
    return None


def _jinja_builtin(kind, name):
    """Jinja's own filters and tests (truncate, wordcount, format...):
    ansible-core's environment has them beside its plugins."""
    import jinja2.filters
    import jinja2.tests
    table = jinja2.filters.FILTERS if kind == 'filter' else jinja2.tests.TESTS
    return table.get(name.removeprefix('ansible.builtin.'))


def _function(kind, name):
    p = _loaders[kind].get(name)
    if p is not None:
        return p.j2_function
    f = _jinja_builtin(kind, name)
    if f is None:
        raise KeyError(name)
    return f


def _resolve(req):
    kind, name = req['kind'], req['name']
    try:
        if kind == 'lookup':
            ctx = lookup_loader.find_plugin_with_context(name)
            if not ctx.resolved:
                return {'found': False}
            return {'found': True, 'fqcn': ctx.resolved_fqcn}
        p = _loaders[kind].get(name)
    except Exception as e:  # a broken plugin file, a missing collection
        return {'found': False, 'why': '%s: %s' % (type(e).__name__, e)}
    if p is None:
        if _jinja_builtin(kind, name) is not None:
            return {'found': True, 'fqcn': name}
        return {'found': False}
    return {'found': True, 'fqcn': getattr(p, 'ansible_name', name)}


def _call_jinja(req):
    f = _function(req['kind'], req['name'])
    args = req.get('args') or []
    kwargs = req.get('kwargs') or {}
    passed = getattr(f, 'jinja_pass_arg', None)
    if passed is not None:
        env = _environment()
        pa = getattr(passed, 'name', str(passed))
        if pa == 'context':
            first = env.context_class(env, {}, None, {})
        elif pa == 'eval_context':
            from jinja2.nodes import EvalContext
            first = EvalContext(env)
        else:
            first = env
        return f(first, *args, **kwargs)
    return f(*args, **kwargs)


def _lookup(req):
    from ansible.template import Templar
    variables = req.get('variables') or {}
    loader = DataLoader()
    if req.get('basedir'):
        loader.set_basedir(req['basedir'])
    templar = Templar(loader=loader, variables=variables)
    plugin = lookup_loader.get(req['name'], loader=loader, templar=templar)
    if plugin is None:
        raise KeyError(req['name'])
    return plugin.run(req.get('terms') or [], variables=variables, **(req.get('kwargs') or {}))


_ops = {'init': _init, 'add_dirs': _add_dirs, 'resolve': _resolve, 'call': _call_jinja, 'lookup': _lookup}


def main():
    while True:
        req = _read()
        if req is None:
            return
        try:
            _write({'ok': True, 'value': _ops[req['op']](req)})
        except BaseException as e:  # a plugin's error is the caller's to report
            _write({
                'ok': False,
                'kind': type(e).__name__,
                'error': str(e),
                'traceback': traceback.format_exc(),
            })
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                return


main()
