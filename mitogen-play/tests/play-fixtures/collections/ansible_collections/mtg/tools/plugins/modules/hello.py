#!/usr/bin/python
# A collection's module (the play test's collections case).
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mtg.tools.plugins.module_utils.greet import greeting


def main():
    m = AnsibleModule(argument_spec=dict(name=dict(type='str', required=True)),
                      supports_check_mode=True)
    m.exit_json(changed=False, greeting=greeting(m.params['name']))


if __name__ == '__main__':
    main()
