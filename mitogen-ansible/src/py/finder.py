# mitogen-ansible module_utils finder: runs on the controller with the
# ansible-core install's python as `PYTHON -c SOURCE`, request JSON on stdin:
#   {"ansible_dir": D, "collections": [P...], "module": PATH, "module_rel": REL}
# Prints {"files": [{"rel", "path" | "text", "sha256"}]} or {"error": MSG}.
# Like ansible-core's recursive_finder: an AST scan of imports of
# ansible.module_utils.* and ansible_collections.N.C.plugins.module_utils.*
# (and relative imports inside those packages), repeated to closure; imports
# nested in try/except or functions are optional. Never imports ansible.
import ast
import hashlib
import json
import os
import sys

req = json.loads(sys.stdin.read())
ANS = req['ansible_dir']  # .../site-packages/ansible
COLLS = req['collections']
STUB = 'from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\n'
ALWAYS = [
    'ansible.module_utils._internal._ansiballz._loader',
    'ansible.module_utils.basic',
    'ansible.module_utils._internal._json._profiles._module_legacy_c2m',
    'ansible.module_utils._internal._json._profiles._module_legacy_m2c',
]

files = {}  # rel -> entry
done = set()
todo = []  # (dotted name, optional, importer)


def add_path(rel, path):
    if rel not in files:
        with open(path, 'rb') as f:
            data = f.read()
        files[rel] = {'rel': rel, 'path': path, 'sha256': hashlib.sha256(data).hexdigest()}
        return data
    return None


def add_text(rel, text):
    if rel not in files:
        files[rel] = {'rel': rel, 'text': text,
                      'sha256': hashlib.sha256(text.encode()).hexdigest()}


def roots_for(parts):
    """(filesystem dir holding parts[0..k], number of leading parts it covers)"""
    if parts[:2] == ['ansible', 'module_utils']:
        return [(os.path.dirname(ANS), 0)]
    if parts[0] == 'ansible_collections' and len(parts) >= 5 and parts[3:5] == ['plugins', 'module_utils']:
        return [(c, 0) for c in COLLS]
    return []


def locate(parts):
    """Longest prefix of `parts` that is a module or package: (rel parts, path, is_pkg)."""
    for root, _ in roots_for(parts):
        for n in range(len(parts), 2, -1):
            base = os.path.join(root, *parts[:n])
            if os.path.isfile(base + '.py'):
                return parts[:n], base + '.py', False, root
            init = os.path.join(base, '__init__.py')
            if os.path.isfile(init):
                return parts[:n], init, True, root
    return None


def add_module(name, optional, importer):
    parts = name.split('.')
    if len(parts) <= (2 if parts[0] == 'ansible' else 5):
        return  # the package roots themselves: always there
    found = locate(parts)
    if found is None:
        if optional or not roots_for(parts):
            return
        raise LookupError('Could not find imported module support code for %s.  Looked for (%s)'
                          % (importer, name))
    mparts, path, is_pkg, root = found
    key = '.'.join(mparts)
    # Parent packages: real __init__.py where it exists, else a stub.
    for i in range(2 if mparts[0] == 'ansible' else 1, len(mparts)):
        pkg = mparts[:i]
        init = os.path.join(root, *pkg, '__init__.py')
        rel = '/'.join(pkg) + '/__init__.py'
        if pkg == ['ansible', 'module_utils']:
            add_text(rel, STUB)  # as AnsiballZ's zip: a namespace stub
        elif len(pkg) >= (2 if mparts[0] == 'ansible' else 5) and os.path.isfile(init):
            if add_path(rel, init) is not None:
                scan('.'.join(pkg), init, True)
        else:
            add_text(rel, STUB if len(pkg) <= 2 or mparts[0] == 'ansible' else '')
    if key in done:
        return
    done.add(key)
    rel = '/'.join(mparts) + ('/__init__.py' if is_pkg else '.py')
    add_path(rel, path)
    scan(key, path, is_pkg)


def scan(modname, path, is_pkg):
    with open(path, 'rb') as f:
        src = f.read()
    try:
        tree = ast.parse(src, path)
    except SyntaxError:
        return
    pkg = modname if is_pkg else modname.rpartition('.')[0]

    def visit(node, optional):
        for child in ast.iter_child_nodes(node):
            opt = optional or isinstance(node, (ast.Try, ast.FunctionDef, ast.AsyncFunctionDef)) \
                or type(node).__name__ == 'TryStar'
            if isinstance(child, ast.Import):
                for a in child.names:
                    todo.append((a.name, opt, modname))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = pkg.split('.')
                    if child.level > 1:
                        base = base[:len(base) - (child.level - 1)]
                    mod = '.'.join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ''
                for a in child.names:
                    todo.append((mod + '.' + a.name, opt, modname))
                todo.append((mod, opt, modname))
            visit(child, opt)

    visit(tree, False)


try:
    mod_rel = req['module_rel']  # e.g. ansible/modules/command.py
    mod_parts = mod_rel[:-3].split('/')
    for i in range(1, len(mod_parts)):
        rel = '/'.join(mod_parts[:i]) + '/__init__.py'
        add_text(rel, STUB if i == 1 and mod_parts[0] == 'ansible' else '')
    add_path(mod_rel, req['module'])
    scan('.'.join(mod_parts), req['module'], False)
    for n in ALWAYS:
        todo.append((n, False, 'ansible-core'))
    while todo:
        name, optional, importer = todo.pop()
        if name.startswith('ansible.module_utils') or name.startswith('ansible_collections.'):
            add_module(name, optional, importer)
    print(json.dumps({'files': sorted(files.values(), key=lambda e: e['rel'])}))
except Exception as e:
    print(json.dumps({'error': str(e)}))
