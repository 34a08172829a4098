#!/usr/bin/python
from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule


def main():
    m = AnsibleModule(argument_spec={})
    m.exit_json(changed=False, found_in='ansible home')


if __name__ == '__main__':
    main()
