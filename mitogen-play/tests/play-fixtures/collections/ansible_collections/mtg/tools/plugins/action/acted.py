# An action plugin in front of the module of the same name: ansible-core
# runs this on the controller; running the module bare would be wrong.
from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result.update(self._execute_module(module_args={'via': 'action'}, task_vars=task_vars))
        return result
