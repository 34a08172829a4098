//! Module arguments as ansible-core's `_update_module_args` completes
//! them (the `_ansible_*` keys, in its order), and the args files of
//! non-new styles.

use crate::pycompat::{json_dumps, py_str, shlex_quote};
use serde_json::{Map, Value};

/// The per-task values behind the `_ansible_*` keys.
#[derive(Debug, Clone)]
pub(crate) struct Internal<'a> {
    pub(crate) check_mode: bool,
    pub(crate) no_log: bool,
    pub(crate) diff: bool,
    pub(crate) version: &'a str,
    pub(crate) module_name: &'a str,
    /// `None`: pipelined or become-unprivileged (`null` sent).
    pub(crate) tmpdir: Option<&'a str>,
    pub(crate) remote_tmp: &'a str,
    pub(crate) keep_remote_files: bool,
    /// Internal calls (`_execute_remote_stat`): unknown options no error.
    pub(crate) ignore_unknown_opts: bool,
}

/// `args` plus the `_ansible_*` keys, in ansible-core 2.19's order.
pub(crate) fn with_internal(args: &Map<String, Value>, i: &Internal<'_>) -> Map<String, Value> {
    let mut m = args.clone();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("_ansible_check_mode", i.check_mode.into());
    put("_ansible_no_log", i.no_log.into());
    put("_ansible_debug", false.into());
    put("_ansible_diff", i.diff.into());
    put("_ansible_verbosity", 0.into());
    put("_ansible_version", i.version.into());
    put("_ansible_module_name", i.module_name.into());
    put("_ansible_syslog_facility", "LOG_USER".into());
    put(
        "_ansible_selinux_special_fs",
        serde_json::json!(["fuse", "nfs", "vboxsf", "ramfs", "9p", "vfat"]),
    );
    put("_ansible_socket", Value::Null);
    put("_ansible_shell_executable", "/bin/sh".into());
    put("_ansible_keep_remote_files", i.keep_remote_files.into());
    put(
        "_ansible_tmpdir",
        i.tmpdir
            .map_or(Value::Null, |t| Value::String(t.to_owned())),
    );
    put("_ansible_remote_tmp", i.remote_tmp.into());
    put("_ansible_ignore_unknown_opts", i.ignore_unknown_opts.into());
    put("_ansible_target_log_info", Value::Null);
    put("_ansible_tracebacks_for", Value::Array(Vec::new()));
    m
}

/// The `args` file of a WANT_JSON or binary module: `json.dumps(args)`.
pub(crate) fn json_file(args: &Map<String, Value>) -> String {
    json_dumps(&Value::Object(args.clone()))
}

/// The `args` file of an old-style module:
/// `''.join('%s=%s ' % (k, shlex.quote(str(v))) for k, v in args.items())`.
pub(crate) fn old_style_file(args: &Map<String, Value>) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={} ", shlex_quote(&py_str(v))))
        .collect()
}

/// A JSON-args module's source with ansible-core's substitutions.
pub(crate) fn jsonargs_source(data: &[u8], args: &Map<String, Value>, version: &str) -> Vec<u8> {
    let json = json_file(args);
    let mut text = String::from_utf8_lossy(data).into_owned();
    text = text.replace("<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>", &json);
    text = text.replace("\"<<ANSIBLE_VERSION>>\"", &format!("'{version}'"));
    text = text.replace(
        "\"<<INCLUDE_ANSIBLE_MODULE_COMPLEX_ARGS>>\"",
        &format!("b'{}'", json.replace('\\', "\\\\").replace('\'', "\\'")),
    );
    text = text.replace(
        "<<SELINUX_SPECIAL_FILESYSTEMS>>",
        "fuse,nfs,vboxsf,ramfs,9p,vfat",
    );
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn old_style_args_like_the_recorded_run() {
        let Value::Object(user) = json!({"msg": "hi there", "num": 3}) else {
            unreachable!()
        };
        let m = with_internal(
            &user,
            &Internal {
                check_mode: false,
                no_log: false,
                diff: false,
                version: "2.19.14",
                module_name: "m",
                tmpdir: Some("/h/.ansible/tmp/ansible-tmp-X/"),
                remote_tmp: "~/.ansible/tmp",
                keep_remote_files: false,
                ignore_unknown_opts: false,
            },
        );
        let s = old_style_file(&m);
        assert!(
            s.starts_with("msg='hi there' num=3 _ansible_check_mode=False _ansible_no_log=False "),
            "{s}"
        );
        assert!(
            s.contains(" _ansible_selinux_special_fs='['\"'\"'fuse'\"'\"', "),
            "{s}"
        );
        assert!(s.ends_with("_ansible_tmpdir=/h/.ansible/tmp/ansible-tmp-X/ _ansible_remote_tmp='~/.ansible/tmp' _ansible_ignore_unknown_opts=False _ansible_target_log_info=None _ansible_tracebacks_for='[]' "), "{s}");
    }
}
