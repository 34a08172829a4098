//! The `template` action (`plugins/action/template.py`): the template is
//! rendered on the controller in the crate's one Jinja environment
//! ([`crate::jinja`]: Ansible's filters and tests, `trim_blocks` on,
//! trailing newline kept, ansible-core's undefined messages, custom
//! delimiters) with ansible-core's `template_*` variables over
//! [`Task::vars`](crate::Task::vars), and whatever the task's
//! [`TemplateHook`] adds (the play's lookups, `hostvars`, lazily templated
//! variables, search paths); the result then goes through the `copy`
//! action.
//!
//! A failure reads as ansible-core 2.19's (`Task failed: 'x' is
//! undefined`, `... Syntax error in template: No filter named 'y'.`):
//! what a template file calls is only known when it renders.

use super::copy::{self, TempFile};
use super::{Act, action_failure, boolean};
use crate::error::Error;
use crate::jinja::{self, Syntax, TemplateHook, undefined};
use minijinja::value::{Enumerator, Object, Value as JValue};
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The options only the template action takes (removed before copy).
const TEMPLATE_ONLY: &[&str] = &[
    "newline_sequence",
    "block_start_string",
    "block_end_string",
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
    "trim_blocks",
    "lstrip_blocks",
    "output_encoding",
];

pub(super) fn run(act: &mut Act<'_>) -> Result<(), Error> {
    let mut args = act.args()?;
    let s = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let follow = boolean(args.get("follow"), false);
    let trim_blocks = boolean(args.get("trim_blocks"), true);
    let lstrip_blocks = boolean(args.get("lstrip_blocks"), false);
    let (source, dest, state) = (
        s("src"),
        s("dest"),
        args.get("state").filter(|v| !v.is_null()),
    );
    let mut newline = s("newline_sequence").unwrap_or_else(|| "\n".into());
    newline = match newline.as_str() {
        "\\n" => "\n".into(),
        "\\r" => "\r".into(),
        "\\r\\n" => "\r\n".into(),
        _ => newline,
    };
    let fail = |act: &mut Act<'_>, msg: &str| {
        act.s.data = action_failure(msg);
        Ok(())
    };
    if state.is_some() {
        return fail(act, "'state' cannot be specified on a template");
    }
    let (Some(source), Some(dest)) = (source, dest) else {
        return fail(act, "src and dest are required");
    };
    if !matches!(newline.as_str(), "\n" | "\r" | "\r\n") {
        return fail(act, "newline_sequence needs to be one of: \n, \r or \r\n");
    }
    let hook = act.task.template_hook.clone();
    let full = match act.find_needle("templates", &source) {
        Ok(p) => p,
        Err(m) => return fail(act, &m),
    };
    let mut mode = args.get("mode").cloned().unwrap_or(Value::Null);
    if mode.as_str() == Some("preserve") {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&full).map(|m| m.permissions().mode() & 0o7777);
        mode = format!("0{:03o}", m.unwrap_or(0o644)).into();
    }
    let text = match std::fs::read(&full) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => return fail(act, &format!("Could not read {}: {e}", full.display())),
    };
    let syntax = Syntax {
        block: (
            s("block_start_string").unwrap_or_else(|| "{%".into()),
            s("block_end_string").unwrap_or_else(|| "%}".into()),
        ),
        variable: (
            s("variable_start_string").unwrap_or_else(|| "{{".into()),
            s("variable_end_string").unwrap_or_else(|| "}}".into()),
        ),
        comment: (
            s("comment_start_string").unwrap_or_else(|| "{#".into()),
            s("comment_end_string").unwrap_or_else(|| "#}".into()),
        ),
    };
    // `ansible_search_path`, the base directory and the template's own,
    // each `DIR/templates` then `DIR` (for `{% include %}`).
    let mut search: Vec<PathBuf> = hook.as_ref().map(|h| h.search_path()).unwrap_or_default();
    search.extend(act.engine.base_dir.clone());
    search.extend(full.parent().map(Path::to_owned));
    let file = File {
        text: &text,
        syntax: &syntax,
        trim_blocks,
        lstrip_blocks,
        search: search
            .into_iter()
            .flat_map(|p| [p.join("templates"), p])
            .collect(),
    };
    let vars = Context::value(
        template_vars(&source, &full, Some(&dest), false),
        act.task.vars.clone(),
        hook.as_deref(),
        &act.target.inventory_name,
    );
    let rendered = match render(&file, &vars, hook.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            // What the template raised: a task failure, not the action's.
            act.s.data = crate::exec::failure(&e);
            act.s.data.insert("changed".into(), false.into());
            return Ok(());
        }
    };
    let rendered = if newline == "\n" {
        rendered
    } else {
        rendered.replace('\n', &newline)
    };
    let root = local_dir(&act.engine.local_tmp)?;
    let _cleanup = TempFile(root.clone());
    let dir = root.join(format!("tmp{}", rand_name(8)));
    let base = full
        .file_name()
        .map(|f| f.to_os_string())
        .unwrap_or_default();
    let result_file = dir.join(base);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&result_file, rendered.as_bytes()))
        .map_err(|e| Error::LocalFile {
            path: result_file.clone(),
            source: e,
        })?;
    args.insert("mode".into(), mode);
    for k in TEMPLATE_ONLY {
        args.shift_remove(*k);
    }
    args.insert("src".into(), result_file.display().to_string().into());
    args.insert("dest".into(), dest.into());
    args.insert("follow".into(), follow.into());
    copy::run_with(act, &args)
}

/// `generate_ansible_template_vars` (`dest`: `None` for the `template`
/// lookup).
pub fn template_vars(
    path: &str,
    full: &Path,
    dest: Option<&str>,
    managed: bool,
) -> Map<String, Value> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(full).ok();
    let uid = meta.as_ref().map_or(0, MetadataExt::uid);
    let mut m = Map::new();
    m.insert("template_host".into(), hostname().into());
    m.insert("template_path".into(), path.into());
    m.insert(
        "template_mtime".into(),
        meta.as_ref().map_or(0, MetadataExt::mtime).into(),
    );
    m.insert(
        "template_uid".into(),
        user_name(uid).map_or_else(|| uid.into(), Value::from),
    );
    m.insert(
        "template_destpath".into(),
        dest.map_or(Value::Null, Value::from),
    );
    m.insert(
        "template_fullpath".into(),
        full.display().to_string().into(),
    );
    if managed {
        m.insert("ansible_managed".into(), "Ansible managed".into());
    }
    m
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn user_name(uid: u32) -> Option<String> {
    mitogen_core::layer::user_by_uid(uid).map(|u| u.name)
}

/// A template file and how to read it.
struct File<'a> {
    text: &'a str,
    syntax: &'a Syntax,
    trim_blocks: bool,
    lstrip_blocks: bool,
    /// Where `{% include %}` looks.
    search: Vec<PathBuf>,
}

/// A template's variables, highest precedence first: ansible-core's
/// `template_*`, [`Task::vars`](crate::Task::vars), the hook's, then what
/// ansible-core has when nothing else sets it (`ansible_managed`,
/// `inventory_hostname`, `inventory_hostname_short`).
#[derive(Debug)]
struct Context {
    template: Map<String, Value>,
    task: Map<String, Value>,
    hook: Option<JValue>,
    defaults: Map<String, Value>,
}

impl Context {
    /// The context object (a template value).
    fn value(
        template: Map<String, Value>,
        task: Map<String, Value>,
        hook: Option<&dyn TemplateHook>,
        inventory_name: &str,
    ) -> JValue {
        let mut defaults = Map::new();
        defaults.insert("ansible_managed".into(), "Ansible managed".into());
        defaults.insert("inventory_hostname".into(), inventory_name.into());
        defaults.insert(
            "inventory_hostname_short".into(),
            inventory_name.split('.').next().unwrap_or("").into(),
        );
        let hook = hook.and_then(|h| h.variables(&template));
        JValue::from_object(Self {
            template,
            task,
            hook,
            defaults,
        })
    }
}

impl Object for Context {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let k = key.as_str()?;
        if let Some(v) = self.template.get(k).or_else(|| self.task.get(k)) {
            return Some(undefined::to_value(v));
        }
        let mark = undefined::Mark::now();
        let found = self
            .hook
            .as_ref()
            .and_then(|h| h.as_object()?.get_value(key));
        if found.as_ref().is_some_and(|v| !v.is_undefined()) {
            return found;
        }
        if let Some(v) = self.defaults.get(k) {
            mark.rewind();
            return Some(undefined::to_value(v));
        }
        if self.hook.is_none() {
            undefined::note_var(k);
        }
        found
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<JValue> = Vec::new();
        let hook_keys = self.hook.as_ref().and_then(|h| h.try_iter().ok());
        let own = [&self.template, &self.task, &self.defaults];
        for k in own
            .iter()
            .flat_map(|m| m.keys().map(|k| JValue::from(k.as_str())))
            .chain(hook_keys.into_iter().flatten())
        {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        Enumerator::Values(keys)
    }
}

/// Renders `file` with `vars` as ansible-core's templar does for the
/// template action; the error is ansible-core's message.
fn render(
    file: &File<'_>,
    vars: &JValue,
    hook: Option<&dyn TemplateHook>,
) -> Result<String, String> {
    let mut env = jinja::environment();
    env.set_trim_blocks(file.trim_blocks);
    env.set_lstrip_blocks(file.lstrip_blocks);
    // ansible-core: Jinja drops the source's last newline (before
    // `trim_blocks` could eat it after a closing tag), then the newlines
    // the result lacks at its end are put back; an included template keeps
    // none of its own.
    env.set_keep_trailing_newline(false);
    file.syntax
        .apply(&mut env)
        .map_err(|e| jinja::error_text(&e))?;
    let dirs = file.search.clone();
    env.set_loader(move |name| {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return std::fs::read_to_string(&p).map(Some).map_err(|e| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
                });
            }
        }
        Ok(None)
    });
    if let Some(h) = hook {
        h.prepare(file.text);
        h.add_globals(&mut env);
    }
    let _notes = undefined::Fresh::begin();
    let mut out = render_in(&env, file.text, vars)?;
    let newlines = |s: &str| s.bytes().rev().take_while(|&b| b == b'\n').count();
    let (want, have) = (newlines(file.text), newlines(&out));
    if want > have {
        out.push_str(&"\n".repeat(want - have));
    }
    Ok(out)
}

fn render_in(env: &Environment<'_>, text: &str, vars: &JValue) -> Result<String, String> {
    env.render_str(text, vars)
        .map_err(|e| jinja::failure_message(env, vars, text, &e, jinja::Form::Template))
}

/// A fresh `ansible-local-<pid><rand>` dir under `local_tmp` (ansible-core's
/// per-process `DEFAULT_LOCAL_TMP`, here one per action, removed after it).
pub(super) fn local_dir(local_tmp: &Path) -> Result<PathBuf, Error> {
    let dir = local_tmp.join(format!(
        "ansible-local-{}{}",
        std::process::id(),
        rand_name(8)
    ));
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&dir)
        .map_err(|e| Error::LocalFile {
            path: dir.clone(),
            source: e,
        })?;
    Ok(dir)
}

/// `n` random characters of `[a-z0-9_]`, as `tempfile` names use.
pub(super) fn rand_name(n: usize) -> String {
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    (0..n)
        .map(|_| char::from(CH[fastrand::usize(..CH.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: Value) -> Result<String, String> {
        let syntax = Syntax::default();
        let file = File {
            text: t,
            syntax: &syntax,
            trim_blocks: true,
            lstrip_blocks: false,
            search: Vec::new(),
        };
        let Value::Object(m) = v else {
            return Err("vars must be a dict".into());
        };
        render(
            &file,
            &Context::value(Map::new(), m, None, "h1.example"),
            None,
        )
    }

    #[test]
    fn every_filter_and_ansible_messages_without_a_hook() {
        assert_eq!(
            r("{% if a %}\nx\n{% endif %}\n", json!({"a": true})).unwrap(),
            "x\n"
        );
        assert_eq!(r("{{ b | d('z') }}", json!({})).unwrap(), "z");
        assert_eq!(
            r(
                "{{ a | to_json }} {{ 'yes' | bool }}",
                json!({"a": {"k": [1, "2"]}})
            )
            .unwrap(),
            r#"{"k": [1, "2"]} True"#
        );
        assert_eq!(
            r(
                "{{ n }} {{ l }} {{ m }}",
                json!({"n": null, "l": ["a", 1], "m": {"k": false}})
            )
            .unwrap(),
            " ['a', 1] {'k': False}"
        );
        // The play layer's filters and tests, with no play.
        assert_eq!(
            r(
                "{{ 'a-b' | regex_replace('-', '+') }} {{ {'a': 1} | combine({'b': 2}) }} {{ 5 is odd }}",
                json!({})
            )
            .unwrap(),
            "a+b {'a': 1, 'b': 2} True"
        );
        assert_eq!(
            r(
                "{{ inventory_hostname_short }} {{ ansible_managed }}",
                json!({})
            )
            .unwrap(),
            "h1 Ansible managed"
        );
        assert_eq!(
            r("{{ nope }}", json!({})).unwrap_err(),
            "'nope' is undefined"
        );
        assert_eq!(
            r(
                "{% for u in us %}{{ u.x }}{% endfor %}",
                json!({"us": [{"y": 1}]})
            )
            .unwrap_err(),
            "object of type 'dict' has no attribute 'x'"
        );
        assert_eq!(
            r("{{ 'x' | no_such }}", json!({})).unwrap_err(),
            "Syntax error in template: No filter named 'no_such'."
        );
        assert_eq!(
            r("{{ lookup('env', 'HOME') }}", json!({})).unwrap_err(),
            "'lookup' is undefined"
        );
    }
}
