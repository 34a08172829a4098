# A collection's filter (mtg.tools.reverse_words), for 30_python_plugins.yml.


def reverse_words(value):
    return ' '.join(reversed(str(value).split()))


class FilterModule(object):
    def filters(self):
        return {'reverse_words': reverse_words}
