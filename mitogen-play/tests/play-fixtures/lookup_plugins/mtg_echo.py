# A lookup next to the playbooks, for 30_python_plugins.yml: each term with
# a prefix, and the task's variable `echo_suffix` when set.
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        prefix = kwargs.get('prefix', '>')
        suffix = (variables or {}).get('echo_suffix', '')
        return ['%s%s%s' % (prefix, t, suffix) for t in terms]
