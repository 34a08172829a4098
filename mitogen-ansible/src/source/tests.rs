use super::*;

#[test]
fn styles_in_ansible_core_order() {
    let table: &[(&[u8], Style)] = &[
        (b"\x7fELF\x02\x01\x01\x00", Style::Binary),
        (
            b"#!/usr/bin/python\n#<<INCLUDE_ANSIBLE_MODULE_COMMON>>\n",
            Style::NewPython,
        ),
        (
            b"#!/usr/bin/python\nfrom ansible.module_utils.basic import AnsibleModule\n",
            Style::NewPython,
        ),
        (b"import ansible.module_utils.basic\n", Style::NewPython),
        (
            b"from ansible_collections.ns.c.plugins.module_utils.x import y\n",
            Style::NewPython,
        ),
        (
            b"import ansible_collections.ns.c.plugins.module_utils.x\n",
            Style::NewPython,
        ),
        (b"from ..module_utils.x import y\n", Style::NewPython),
        (b"from .module_utils.x import y\n", Style::Old),
        (b"# POWERSHELL_COMMON\n", Style::PowerShell),
        (
            b"#Requires -Module Ansible.ModuleUtils.Legacy\n",
            Style::PowerShell,
        ),
        // JSON args wins over WANT_JSON; WANT_JSON counts in comments.
        (
            b"#!/bin/sh\n# WANT_JSON\nx='<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>'\n",
            Style::JsonArgs,
        ),
        (b"#!/bin/sh\n# WANT_JSON\n", Style::WantJson),
        (b"#!/bin/sh\necho '{}'\n", Style::Old),
        // "from ansible.module_utils" without " import " is not new-style.
        (b"# from ansible.module_utils\n", Style::Old),
    ];
    for (data, style) in table {
        assert_eq!(
            Style::detect(data),
            *style,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn shebangs() {
    assert_eq!(
        extract_interpreter(b"#!/usr/bin/env perl -w\nprint"),
        Some((
            "/usr/bin/env".to_owned(),
            vec!["perl".to_owned(), "-w".to_owned()]
        ))
    );
    assert_eq!(
        extract_interpreter(b"#! /bin/sh\n"),
        Some(("/bin/sh".into(), vec![]))
    );
    assert_eq!(extract_interpreter(b"echo hi\n"), None);
}
