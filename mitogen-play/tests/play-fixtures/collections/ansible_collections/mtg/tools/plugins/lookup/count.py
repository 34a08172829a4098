# A collection's lookup (mtg.tools.count), for 30_python_plugins.yml.
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        try:
            n = int(terms[0])
        except (ValueError, IndexError):
            raise AnsibleLookupError('count needs a number, got %r' % (terms,))
        return list(range(n))
