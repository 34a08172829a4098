use super::*;
use serde_json::json;

/// Renders `t` with `vars` as the engine's variables; the error as
/// ansible-core words it.
fn render(t: &str, vars: Value) -> Result<String, String> {
    let env = environment();
    let Value::Object(m) = vars else {
        return Err("vars must be a dict".into());
    };
    let ctx = undefined::context(&m);
    let _notes = undefined::Fresh::begin();
    env.render_str(t, &ctx)
        .map_err(|e| failure_message(&env, &ctx, t, &e, Form::Template))
}

#[test]
fn every_listed_filter_and_test_exists() {
    let env = environment();
    let filters = FILTERS.iter().chain(BUILTIN_FILTERS);
    let checks = filters
        .map(|f| (format!("{{{{ x | {f} }}}}"), ErrorKind::UnknownFilter))
        .chain(
            TESTS
                .iter()
                .map(|t| (format!("{{{{ x is {t} }}}}"), ErrorKind::UnknownTest)),
        );
    for (t, unknown) in checks {
        let r = env.render_str(&t, json!({"x": "1"}));
        assert!(
            r.as_ref().err().is_none_or(|e| e.kind() != unknown),
            "{t}: {r:?}"
        );
    }
    let r = env.render_str("{{ x | no_such_filter }}", json!({"x": 1}));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::UnknownFilter);
}

#[test]
fn finalize_and_filters() {
    assert_eq!(
        render(
            "{{ n }}|{{ l }}|{{ m }}|{{ t }}",
            json!({"n": null, "l": ["a", 1], "m": {"k": false}, "t": true})
        )
        .unwrap(),
        "|['a', 1]|{'k': False}|True"
    );
    assert_eq!(
        render("{{ m | to_nice_json }}", json!({"m": {"b": [1], "a": "é"}})).unwrap(),
        "{\n    \"a\": \"\\u00e9\",\n    \"b\": [\n        1\n    ]\n}"
    );
    assert_eq!(
        render(
            "{{ 'hello' | b64encode }} {{ 'aGVsbG8=' | b64decode }}",
            json!({})
        )
        .unwrap(),
        "aGVsbG8= hello"
    );
    assert_eq!(
        render(
            "{{ m.get('zz', 'dflt') }} {{ m.items() | list }}",
            json!({"m": {"k": 1}})
        )
        .unwrap(),
        "dflt [['k', 1]]"
    );
}

#[test]
fn undefined_messages_are_ansible_cores() {
    let v = json!({"d": {"a": 1, "l": [1]}, "s": "x", "us": [{"n": 1}]});
    let cases = [
        ("{{ nope }}", "'nope' is undefined"),
        (
            "{{ d.missing }}",
            "object of type 'dict' has no attribute 'missing'",
        ),
        (
            "{{ d['missing'] }}",
            "object of type 'dict' has no attribute 'missing'",
        ),
        ("{{ d.l[3] }}", "object of type 'list' has no attribute 3"),
        ("{{ d.a.b.c }}", "object of type 'int' has no attribute 'b'"),
        (
            "{{ s.nope ~ 'x' }}",
            "object of type 'str' has no attribute 'nope'",
        ),
        ("{{ nope.attr }}", "'nope' is undefined"),
        ("{{ nope | upper }}", "'nope' is undefined"),
        (
            "{% for u in us %}{{ u.zz }}{% endfor %}",
            "object of type 'dict' has no attribute 'zz'",
        ),
        ("{{ d.q | default(1) }} {{ other }}", "'other' is undefined"),
        (
            "{{ nope | default('d') }} {{ nope2 }}",
            "'nope2' is undefined",
        ),
        (
            "{% for x in [1] %}{{ nope | default(x) }}{% endfor %}{{ (d | combine({})).zz }}",
            "object of type 'dict' has no attribute 'zz'",
        ),
        ("{{ [1, nope] }}", "'nope' is undefined"),
        ("{% if d.a and nope %}x{% endif %}", "'nope' is undefined"),
        (
            "{{ nope | mandatory }}",
            "The filter plugin 'ansible.builtin.mandatory' failed: Mandatory variable 'nope' not defined.",
        ),
        ("{{ range(2) | list }} {{ nope2 }}", "'nope2' is undefined"),
        (
            "{{ 'x' | frob }}",
            "Syntax error in template: No filter named 'frob'.",
        ),
        (
            "{{ 'x' is frob }}",
            "Syntax error in template: No test named 'frob'.",
        ),
        ("{{ lookup('env', 'X') }}", "'lookup' is undefined"),
    ];
    for (t, want) in cases {
        assert_eq!(render(t, v.clone()).unwrap_err(), want, "{t}");
    }
    // What the template handles is no error, nor the reason for a later one.
    assert_eq!(
        render(
            "{{ nope is defined }} {{ d.zz is undefined }} {{ d.zz | default('z') }}",
            v
        )
        .unwrap(),
        "False True z"
    );
}
