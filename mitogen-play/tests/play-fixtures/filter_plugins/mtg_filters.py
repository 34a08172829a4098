# Filters next to the playbooks (ansible-core's filter_plugins/ adjacency),
# for the play suite's 30_python_plugins.yml.
from ansible.errors import AnsibleFilterError


def shout(value, suffix='!'):
    return str(value).upper() + suffix


def pairs(value):
    return [[k, v] for k, v in sorted(value.items())]


def boom(value):
    raise AnsibleFilterError('boom: cannot handle %r' % (value,))


def chatty(value):
    print('a plugin printing to stdout must not break anything')
    return value


class FilterModule(object):
    def filters(self):
        return {'shout': shout, 'pairs': pairs, 'boom': boom, 'chatty': chatty}
