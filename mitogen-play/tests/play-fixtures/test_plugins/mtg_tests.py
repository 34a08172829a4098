# Tests next to the playbooks, for 30_python_plugins.yml.


def even(value):
    return int(value) % 2 == 0


def longer_than(value, n):
    return len(value) > n


class TestModule(object):
    def tests(self):
        return {'even': even, 'longer_than': longer_than}
