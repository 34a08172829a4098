use super::*;
use serde_json::json;

#[test]
fn json_dumps_matches_python() {
    // python3 -c 'import json; print(json.dumps({"a": [1, 2.0, None, True], "é": "x\"\n☃😀"}))'
    let v = json!({"a": [1, 2.0, null, true], "é": "x\"\n☃😀"});
    assert_eq!(
        json_dumps(&v),
        r#"{"a": [1, 2.0, null, true], "\u00e9": "x\"\n\u2603\ud83d\ude00"}"#
    );
}

#[test]
fn py_str_of_values() {
    assert_eq!(py_str(&json!(false)), "False");
    assert_eq!(py_str(&json!(null)), "None");
    assert_eq!(py_str(&json!("hi there")), "hi there");
    assert_eq!(
        py_str(&json!(["fuse", "nfs", "it's"])),
        r#"['fuse', 'nfs', "it's"]"#
    );
    assert_eq!(py_str(&json!({"k": 1})), "{'k': 1}");
}

#[test]
fn shlex_quote_join_split() {
    let table = [
        ("", "''"),
        ("abc", "abc"),
        ("hi there", "'hi there'"),
        ("it's", "'it'\"'\"'s'"),
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("~/.ansible/tmp", "'~/.ansible/tmp'"),
        ("[]", "'[]'"),
    ];
    for (raw, quoted) in table {
        assert_eq!(shlex_quote(raw), quoted, "{raw}");
    }
    assert_eq!(shlex_join(&["a b", "c"]), "'a b' c");
    assert_eq!(
        shlex_split("/usr/bin/env python3 -u").unwrap(),
        ["/usr/bin/env", "python3", "-u"]
    );
    assert_eq!(shlex_split("'a b' \"c\\\"d\"").unwrap(), ["a b", "c\"d"]);
    assert!(shlex_split("'open").is_none());
}

#[test]
fn splitlines_like_python() {
    assert_eq!(splitlines("a\nb\r\nc\rd\n"), ["a", "b", "c", "d"]);
    assert_eq!(splitlines(""), Vec::<&str>::new());
    assert_eq!(splitlines("\n"), [""]);
    assert_eq!(splitlines("x\u{c}y"), ["x", "y"]);
}
