# A collection's test (mtg.tools.palindrome), for 30_python_plugins.yml.


def palindrome(value):
    s = str(value)
    return s == s[::-1]


class TestModule(object):
    def tests(self):
        return {'palindrome': palindrome}
