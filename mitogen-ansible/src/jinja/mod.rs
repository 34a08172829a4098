//! The one Jinja engine of the crate: the `template` action (runner side)
//! and the play executor's `Templar` (in `mitogen-play`)
//! both build their environment here, so a template file and a task's
//! arguments see the same filters, tests, output rules and undefined
//! handling.
//!
//! - `environment()`: `minijinja` (+ `minijinja-contrib`'s Python
//!   methods such as `.split()`) with strict undefined, `trim_blocks`, a
//!   fuel limit, ansible-core's finalize (`None` prints as nothing, lists
//!   and dicts as Python's `str()`) and Ansible's filters and tests
//!   ([`FILTERS`], [`TESTS`]) beside Jinja's builtins.
//! - `Syntax`: the delimiters `template` and the `template` lookup take.
//! - `undefined`: why a value is undefined, so that failures read as
//!   ansible-core 2.19's (`'foo' is undefined`, `object of type 'dict'
//!   has no attribute 'bar'`).
//! - [`TemplateHook`]: what a caller adds for its own context. The runner
//!   alone renders a template with [`Task::vars`](crate::Task::vars) and
//!   every filter and test; the play layer adds `lookup`/`query`/`q` with
//!   its search paths, `hostvars` and its lazily templated variables.
//!
//! The layering: this module depends on neither the action layer nor the
//! play layer; both depend on it.

mod filters;
pub mod undefined;

pub use minijinja;

use minijinja::value::{Value as JValue, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Template instructions before a render is stopped (runaway loops).
const FUEL: u64 = 50_000_000;

/// Ansible's filters this engine provides beyond minijinja's builtins
/// (also as `ansible.builtin.<name>` where templates are checked).
pub const FILTERS: &[&str] = &[
    "d",
    "default",
    "bool",
    "int",
    "float",
    "to_json",
    "to_nice_json",
    "from_json",
    "from_yaml",
    "regex_replace",
    "regex_search",
    "regex_findall",
    "regex_escape",
    "ternary",
    "mandatory",
    "combine",
    "dict2items",
    "items2dict",
    "basename",
    "dirname",
    "splitext",
    "quote",
    "b64encode",
    "b64decode",
    "union",
    "intersect",
    "difference",
    "flatten",
    "type_debug",
    "zip",
    "product",
    "extract",
];

/// minijinja's builtin filters Ansible users rely on.
pub const BUILTIN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "capitalize",
    "count",
    "dictsort",
    "e",
    "escape",
    "first",
    "groupby",
    "indent",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "chain",
];

/// Tests: Ansible's and minijinja's.
pub const TESTS: &[&str] = &[
    "defined",
    "undefined",
    "none",
    "boolean",
    "false",
    "true",
    "number",
    "integer",
    "float",
    "string",
    "sequence",
    "iterable",
    "mapping",
    "sameas",
    "eq",
    "equalto",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "odd",
    "even",
    "divisibleby",
    "lower",
    "upper",
    "startingwith",
    "endingwith",
    "safe",
    "escaped",
    "filter",
    "test",
    "failed",
    "failure",
    "succeeded",
    "success",
    "successful",
    "changed",
    "change",
    "skipped",
    "skip",
    "finished",
    "unreachable",
    "match",
    "search",
    "regex",
    "truthy",
    "falsy",
    "contains",
    "any",
    "all",
    "subset",
    "superset",
    "version",
    "version_compare",
    "abs",
    "is_abs",
    "directory",
    "is_dir",
    "file",
    "is_file",
    "link",
    "is_link",
    "exists",
    "link_exists",
    "mount",
    "is_mount",
    "same_file",
    "is_same_file",
];

fn short(name: &str) -> &str {
    name.strip_prefix("ansible.builtin.").unwrap_or(name)
}

/// Whether [`environment`] has the filter `name` (`ansible.builtin.` or not).
pub fn is_filter(name: &str) -> bool {
    let n = short(name);
    FILTERS.contains(&n) || BUILTIN_FILTERS.contains(&n)
}

/// Whether [`environment`] has the test `name` (`ansible.builtin.` or not).
pub fn is_test(name: &str) -> bool {
    TESTS.contains(&short(name))
}

/// The environment every template renders in: Ansible's filters and
/// tests, strict undefined, `trim_blocks`, no kept trailing newline (the
/// play's templar restores the source's; the `template` action keeps it),
/// ansible-core's finalize, Python's string methods, a fuel limit.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(false);
    env.set_trim_blocks(true);
    env.set_fuel(Some(FUEL));
    // No debug info on errors: collecting it reads every variable the
    // template names, which would note them all as the last undefined.
    env.set_debug(false);
    // What `{{ x }}` writes inside a string: Python's `str(x)`, with
    // `None` as nothing (ansible-core's finalize); a list or dict holding
    // an undefined value is an undefined error, as Jinja's.
    env.set_formatter(|out, _state, v| {
        let text = match v.kind() {
            ValueKind::None => String::new(),
            ValueKind::String => v.as_str().unwrap_or_default().to_owned(),
            ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).to_owned(),
            ValueKind::Number => v.to_string(),
            _ if undefined::holds_undefined(v) => {
                return Err(JError::from(ErrorKind::UndefinedError));
            }
            _ => crate::pycompat::py_str(&jv_to_json(v)),
        };
        out.write_str(&text)
            .map_err(|e| JError::new(ErrorKind::WriteFailure, e.to_string()))
    });
    env.set_unknown_method_callback(|state, value, method, args| {
        let mark = undefined::Mark::now();
        let r = minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args);
        if method == "get" {
            // `d.get('k')` handles a missing key itself.
            mark.rewind();
        }
        r
    });
    filters::add(&mut env);
    env
}

/// A template's delimiters (the `template` action's and lookup's
/// `*_start_string`/`*_end_string` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    /// Statement delimiters (`{%`, `%}`).
    pub block: (String, String),
    /// Expression delimiters (`{{`, `}}`).
    pub variable: (String, String),
    /// Comment delimiters (`{#`, `#}`).
    pub comment: (String, String),
}

impl Default for Syntax {
    fn default() -> Self {
        Self {
            block: ("{%".into(), "%}".into()),
            variable: ("{{".into(), "}}".into()),
            comment: ("{#".into(), "#}".into()),
        }
    }
}

impl Syntax {
    /// Whether `{{ }}` delimit expressions (a template that is one such
    /// expression is its value).
    pub fn plain_variables(&self) -> bool {
        self.variable.0 == "{{" && self.variable.1 == "}}"
    }

    /// Sets these delimiters on `env`.
    ///
    /// # Errors
    /// Delimiters minijinja cannot tell apart.
    pub fn apply(&self, env: &mut Environment<'static>) -> Result<(), JError> {
        let sc = minijinja::syntax::SyntaxConfig::builder()
            .block_delimiters(self.block.0.clone(), self.block.1.clone())
            .variable_delimiters(self.variable.0.clone(), self.variable.1.clone())
            .comment_delimiters(self.comment.0.clone(), self.comment.1.clone())
            .build()?;
        env.set_syntax(sc);
        Ok(())
    }
}

/// A failure whose message reaches the task as it is (a lookup's, a
/// filter's), carried through minijinja as an error's source.
#[derive(Debug)]
pub struct Failure(pub(crate) String);

impl Failure {
    /// The minijinja error carrying `msg`.
    pub fn error(msg: String) -> JError {
        JError::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Self(msg))
    }

    /// The message of the first [`Failure`] in `e`'s chain.
    pub(crate) fn find(e: &JError) -> Option<&str> {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(x) = src {
            if let Some(p) = x.downcast_ref::<Self>() {
                return Some(&p.0);
            }
            src = x.source();
        }
        None
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// What a failed `source` was, for [`failure_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A template, with its delimiters.
    Template,
    /// A bare expression (`when:`, `that:`, `var=`).
    Expression,
    /// The expression inside a template that is one `{{ expr }}` (read
    /// bare, worded as a template).
    TemplateExpression,
}

/// ansible-core's message for a render of `source` that failed with `e`
/// in `env` (`ctx`: the render's context; `form`: what `source` is): a
/// lookup's or filter's own message, an unknown filter or test as a
/// syntax error, an undefined value's reason, else minijinja's text.
pub fn failure_message(
    env: &Environment<'_>,
    ctx: &JValue,
    source: &str,
    e: &JError,
    form: Form,
) -> String {
    let expression = form != Form::Template;
    if let Some(m) = Failure::find(e) {
        return m.to_owned();
    }
    let detail = e.detail().unwrap_or_default();
    let named = |prefix: &str| {
        let n = detail.strip_prefix(prefix).unwrap_or(detail);
        n.strip_suffix(" is unknown").unwrap_or(n).to_owned()
    };
    let what = if form == Form::Expression {
        "expression"
    } else {
        "template"
    };
    match e.kind() {
        ErrorKind::UnknownFilter => format!(
            "Syntax error in {what}: No filter named '{}'.",
            named("filter ")
        ),
        ErrorKind::UnknownTest => format!(
            "Syntax error in {what}: No test named '{}'.",
            named("test ")
        ),
        ErrorKind::UnknownFunction => format!(
            "{} is undefined",
            crate::pycompat::py_repr(&Value::String(named("")))
        ),
        ErrorKind::SyntaxError => format!("Syntax error in {what}: {detail}"),
        ErrorKind::UndefinedError => undefined::explain(env, ctx, source, Some(e), expression)
            .unwrap_or_else(|| error_text(e)),
        _ => error_text(e),
    }
}

/// A minijinja error as text: its message and its sources'.
pub fn error_text(e: &JError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

/// A template value as JSON (undefined as `null`).
pub fn jv_to_json(v: &JValue) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The Python type name ansible-core's messages and `type_debug` show.
pub(crate) fn py_type(v: &JValue) -> &'static str {
    match v.kind() {
        ValueKind::Undefined => "AnsibleUndefined",
        ValueKind::None => "NoneType",
        ValueKind::Bool => "bool",
        ValueKind::Number if v.as_i64().is_some() => "int",
        ValueKind::Number => "float",
        ValueKind::String => "str",
        ValueKind::Bytes => "bytes",
        ValueKind::Seq => "list",
        ValueKind::Map => "dict",
        _ => "object",
    }
}

/// What a caller adds to the environment a `template` task renders in
/// (set with [`Task::template_hook`](crate::Task::template_hook)): the
/// play layer gives its lookups, `hostvars`, its lazily templated
/// variables and its search paths. Every method has a default, so a hook
/// implements only what it adds.
///
/// ```
/// use mitogen_ansible::jinja::TemplateHook;
/// use mitogen_ansible::jinja::minijinja::{Environment, Value};
/// use mitogen_ansible::Task;
/// use serde_json::{Map, json};
/// use std::sync::Arc;
///
/// /// `{{ site_name() }}` in template files.
/// struct Site;
///
/// impl TemplateHook for Site {
///     fn add_globals(&self, env: &mut Environment<'static>) {
///         env.add_function("site_name", || "example.org");
///     }
///     fn variables(&self, _template_vars: &Map<String, serde_json::Value>) -> Option<Value> {
///         Some(Value::from_serialize(json!({"region": "eu"})))
///     }
/// }
///
/// let task = Task::new("ansible.builtin.template")
///     .args(json!({"src": "site.conf.j2", "dest": "/etc/site.conf"}))
///     .template_hook(Arc::new(Site));
/// # let _ = task;
/// ```
pub trait TemplateHook: Send + Sync {
    /// Called with the template's source before it renders (before
    /// [`TemplateHook::add_globals`]): a hook that serves filters and
    /// tests on demand finds the ones it names here.
    fn prepare(&self, source: &str) {
        let _ = source;
    }

    /// Adds globals (functions such as `lookup`, objects) to the
    /// environment, after the filters and tests.
    fn add_globals(&self, env: &mut Environment<'static>) {
        let _ = env;
    }

    /// Variables under [`Task::vars`](crate::Task::vars): a mapping
    /// resolved on access (names it lacks are undefined). `template_vars`
    /// are ansible-core's `template_*` variables, which win over both; a
    /// hook whose lookups must see them adds them to what it returns.
    fn variables(&self, template_vars: &Map<String, Value>) -> Option<JValue> {
        let _ = template_vars;
        None
    }

    /// Where an action's controller-side file `needle` is (ansible-core's
    /// `_find_needle`: a `template`'s `src` under `templates`, a `copy`'s
    /// or `script`'s under `files`): `Ok(path)`, or `Err(the paths
    /// searched)`. `None` (the default): the runner searches its base
    /// directory, `<base>/<dirname>/<needle>` then `<base>/<needle>`.
    fn find_needle(&self, dirname: &str, needle: &str) -> Option<Result<PathBuf, Vec<PathBuf>>> {
        let _ = (dirname, needle);
        None
    }

    /// Directories `{% include %}` and `{% import %}` search, before the
    /// runner's base directory and the template's own (each `DIR/templates`
    /// then `DIR`, as ansible-core's `ansible_search_path`).
    fn search_path(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

impl std::fmt::Debug for dyn TemplateHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemplateHook")
    }
}

#[cfg(test)]
mod tests;
