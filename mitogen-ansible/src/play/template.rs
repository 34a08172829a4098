//! Templating and conditionals through `minijinja`, with Ansible's common
//! filters and tests and its native-type rule: a string that is one
//! `{{ expression }}` becomes the expression's value (a list stays a list),
//! anything else renders to a string.
//!
//! Variables are looked up lazily through [`Vars`] layers (highest
//! precedence last); a variable whose value is itself a template is
//! templated when it is used, as Ansible does.

use minijinja::value::{Enumerator, Kwargs, Object, Rest, Value as JValue, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind, State, UndefinedBehavior};
use regex::Regex;
use serde_json::{Map, Value};
use std::sync::{Arc, LazyLock};

/// Templating depth for variables that are templates themselves.
const MAX_DEPTH: usize = 16;
/// Template instructions before a render is stopped (runaway loops).
const FUEL: u64 = 50_000_000;

/// Filters this templar provides beyond minijinja's builtins.
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

/// minijinja's builtin filters Ansible users rely on (checked statically).
const BUILTIN_FILTERS: &[&str] = &[
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
const TESTS: &[&str] = &[
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
    "abs",
    "version",
    "version_compare",
];

/// Variable layers, lowest precedence first, and named objects resolved
/// on access (`hostvars`).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    layers: Vec<Arc<Map<String, Value>>>,
    objects: Vec<(Arc<str>, JValue)>,
    sink: Arc<Sink>,
}

/// What templating reports besides its value: warnings (a lookup's
/// `errors='warn'`) and why the last undefined value is undefined (a
/// lookup's "No variable named ..."), for the error message.
#[derive(Debug, Default)]
struct Sink {
    warnings: parking_lot::Mutex<Vec<String>>,
    undefined: parking_lot::Mutex<Option<String>>,
}

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every variable, upper layers winning (values not yet templated).
    pub fn flatten(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for layer in &self.layers {
            for (k, v) in layer.iter() {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// Adds a layer above the others.
    pub fn push(&mut self, layer: Arc<Map<String, Value>>) {
        if !layer.is_empty() {
            self.layers.push(layer);
        }
    }

    /// Adds a layer of one variable.
    pub fn push_one(&mut self, key: &str, v: Value) {
        let mut m = Map::new();
        m.insert(key.to_owned(), v);
        self.layers.push(Arc::new(m));
    }

    /// The raw (untemplated) value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.layers.iter().rev().find_map(|l| l.get(key))
    }

    /// Adds a variable whose value is an object resolved on access (below
    /// every layer: a layer's variable of the same name wins).
    pub(crate) fn push_object(&mut self, key: &str, v: JValue) {
        self.objects.push((Arc::from(key), v));
    }

    fn object(&self, key: &str) -> Option<JValue> {
        self.objects
            .iter()
            .rev()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v.clone())
    }

    /// Records a warning for the task's result.
    pub(crate) fn warn(&self, msg: String) {
        let mut w = self.sink.warnings.lock();
        if !w.contains(&msg) {
            w.push(msg);
        }
    }

    /// Takes the warnings templating recorded (these variables and every
    /// clone of them share one list).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.sink.warnings.lock())
    }

    /// Takes why the last undefined value is undefined, if a lookup said.
    pub(crate) fn take_undefined(&self) -> Option<String> {
        self.sink.undefined.lock().take()
    }

    /// Records why a value about to be returned undefined is undefined.
    pub(crate) fn note_undefined(&self, why: String) {
        *self.sink.undefined.lock() = Some(why);
    }

    fn keys(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.layers {
            seen.extend(l.keys().cloned());
        }
        seen.into_iter().collect()
    }
}

/// A template or expression that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl From<JError> for TemplateError {
    fn from(e: JError) -> Self {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s.push_str(&format!(": {x}"));
            src = x.source();
        }
        Self(s)
    }
}

/// The template engine (cheap to clone).
#[derive(Clone)]
pub struct Templar {
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for Templar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templar")
    }
}

impl Default for Templar {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Scope {
    vars: Vars,
    templar: Templar,
    depth: usize,
}

/// The name under which a template's own [`Scope`] is found (by lookups,
/// which need the variables and the engine); not a variable users see.
const SCOPE_KEY: &str = "__mitogen_scope__";

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let k = key.as_str()?;
        let Some(v) = self.vars.get(k) else {
            return match k {
                SCOPE_KEY => Some(JValue::from_dyn_object(self.clone())),
                // `vars`: every variable, templated on access.
                "vars" => Some(JValue::from_dyn_object(self.clone())),
                _ => self.vars.object(k),
            };
        };
        if let Some(e) = v.as_str().and_then(crate::vault::undecryptable) {
            self.vars.note_undefined(format!(
                "Error rendering template: Attempt to use undecryptable variable: {e}"
            ));
            return Some(JValue::UNDEFINED);
        }
        if self.depth < MAX_DEPTH && has_template(v) {
            if let Ok(t) = self.templar.value_at(v, &self.vars, self.depth + 1) {
                return Some(JValue::from_serialize(&t));
            }
        }
        Some(JValue::from_serialize(v))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.vars.keys().into_iter().map(JValue::from).collect())
    }
}

/// Whether `v` holds a string with Jinja markup.
pub fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => is_template(s),
        Value::Array(a) => a.iter().any(has_template),
        Value::Object(o) => o.values().any(has_template),
        _ => false,
    }
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// `{{ expr }}` alone: the expression.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim().trim_start_matches('-').trim_end_matches('-'))
}

fn to_json(v: &JValue) -> Result<Value, TemplateError> {
    if v.is_undefined() {
        return Err(TemplateError("the value is undefined".into()));
    }
    serde_json::to_value(v).map_err(|e| TemplateError(e.to_string()))
}

impl Templar {
    /// An engine with Ansible's filters, tests and lookups, strict
    /// undefined, `trim_blocks` (as ansible-core's environment).
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Jinja drops the source's last newline; string results get the
        // source's trailing newlines back ([`Templar::value`]).
        env.set_keep_trailing_newline(false);
        env.set_trim_blocks(true);
        env.set_fuel(Some(FUEL));
        // What `{{ x }}` writes inside a string: Python's `str(x)`, with
        // `None` as nothing (ansible-core's finalize).
        env.set_formatter(|out, _state, v| {
            let text = match v.kind() {
                ValueKind::None => String::new(),
                ValueKind::String => v.as_str().unwrap_or_default().to_owned(),
                ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).to_owned(),
                ValueKind::Number => v.to_string(),
                _ => crate::pycompat::py_str(&jv_to_json(v)),
            };
            out.write_str(&text)
                .map_err(|e| JError::new(ErrorKind::WriteFailure, e.to_string()))
        });
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        filters::add(&mut env);
        env.add_function("lookup", |st: &State<'_, '_>, args: Rest<JValue>| {
            call_lookup(st, &args, false)
        });
        for q in ["query", "q"] {
            env.add_function(q, |st: &State<'_, '_>, args: Rest<JValue>| {
                call_lookup(st, &args, true)
            });
        }
        Self { env: Arc::new(env) }
    }

    /// `vars` as a mapping object whose values are templated on access
    /// (`hostvars[host]`).
    pub(crate) fn lazy(&self, vars: Vars) -> JValue {
        self.lazy_at(vars, 0)
    }

    /// As [`Templar::lazy`], `depth` templatings deep already.
    pub(crate) fn lazy_at(&self, vars: Vars, depth: usize) -> JValue {
        JValue::from_object(Scope {
            vars,
            templar: self.clone(),
            depth,
        })
    }

    /// The engine with other template options (the `template` lookup's):
    /// variable and comment delimiters, `trim_blocks`.
    pub(crate) fn with_options(
        &self,
        variable: (&str, &str),
        comment: (&str, &str),
        trim_blocks: bool,
    ) -> Result<Environment<'static>, TemplateError> {
        let mut env = (*self.env).clone();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .variable_delimiters(variable.0.to_owned(), variable.1.to_owned())
            .comment_delimiters(comment.0.to_owned(), comment.1.to_owned())
            .build()?;
        env.set_syntax(syntax);
        env.set_trim_blocks(trim_blocks);
        Ok(env)
    }

    /// Renders `text` (a template file's content) with `vars` in `env`
    /// (this engine's, or one from [`Templar::with_options`] with
    /// `{{ }}` delimiters or not): native types and trailing newlines as
    /// for any value.
    pub(crate) fn render_text(
        &self,
        env: Option<(&Environment<'static>, bool)>,
        text: &str,
        vars: &Vars,
        depth: usize,
    ) -> Result<Value, TemplateError> {
        let (env, plain) = env.unwrap_or((&self.env, true));
        self.render_in(env, plain, text, vars, depth)
    }

    /// The error for a failed render: a lookup's own message where a
    /// lookup failed or returned the undefined value.
    fn fail(&self, e: JError, vars: &Vars) -> TemplateError {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(x) = src {
            if let Some(p) = x.downcast_ref::<PluginFailure>() {
                return TemplateError(p.0.clone());
            }
            src = x.source();
        }
        if e.kind() == ErrorKind::UndefinedError {
            if let Some(why) = vars.sink.undefined.lock().take() {
                return TemplateError(why);
            }
        }
        TemplateError::from(e)
    }

    fn ctx(&self, vars: &Vars, depth: usize) -> JValue {
        JValue::from_object(Scope {
            vars: vars.clone(),
            templar: self.clone(),
            depth,
        })
    }

    /// Templates every string in `v`.
    ///
    /// # Errors
    /// Undefined variables, syntax errors, filter failures.
    pub fn value(&self, v: &Value, vars: &Vars) -> Result<Value, TemplateError> {
        vars.sink.undefined.lock().take();
        self.value_at(v, vars, 0)
    }

    fn value_at(&self, v: &Value, vars: &Vars, depth: usize) -> Result<Value, TemplateError> {
        match v {
            Value::String(s) if is_template(s) => self.string_at(s, vars, depth),
            Value::Array(a) => a.iter().map(|x| self.value_at(x, vars, depth)).collect(),
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.value_at(x, vars, depth)?);
                }
                Ok(Value::Object(m))
            }
            other => Ok(other.clone()),
        }
    }

    fn string_at(&self, s: &str, vars: &Vars, depth: usize) -> Result<Value, TemplateError> {
        self.render_in(&self.env, true, s, vars, depth)
    }

    fn render_in(
        &self,
        env: &Environment<'static>,
        plain_syntax: bool,
        s: &str,
        vars: &Vars,
        depth: usize,
    ) -> Result<Value, TemplateError> {
        // One expression alone (but for the newline Jinja drops) is its value.
        let body = s
            .strip_suffix("\r\n")
            .or_else(|| s.strip_suffix('\n'))
            .unwrap_or(s);
        let native = if plain_syntax {
            single_expression(body)
        } else {
            None
        };
        let out = match native {
            Some(expr) => {
                let e = env
                    .compile_expression(expr)
                    .map_err(|e| self.fail(e, vars))?;
                let v = e
                    .eval(self.ctx(vars, depth))
                    .map_err(|e| self.fail(e, vars))?;
                if v.is_undefined() {
                    if let Some(why) = vars.take_undefined() {
                        return Err(TemplateError(why));
                    }
                }
                to_json(&v)?
            }
            None => {
                let r = env
                    .render_str(s, self.ctx(vars, depth))
                    .map_err(|e| self.fail(e, vars))?;
                // ansible-core's `_post_render_mutation`: the source's
                // trailing newlines the result lost come back.
                let (want, have) = (trailing_newlines(s), trailing_newlines(&r));
                Value::String(if want > have {
                    r + &"\n".repeat(want - have)
                } else {
                    r
                })
            }
        };
        // Only a variable's value is a template (templated when it is
        // read); what a template produced is not templated again.
        Ok(out)
    }

    /// Templates `s` to a string.
    ///
    /// # Errors
    /// As [`Templar::value`].
    pub fn string(&self, s: &str, vars: &Vars) -> Result<String, TemplateError> {
        Ok(match self.value(&Value::String(s.to_owned()), vars)? {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// Evaluates a `when:`-style conditional (a bare expression, a bool,
    /// or a list of them, all of which must hold).
    ///
    /// # Errors
    /// As [`Templar::value`].
    pub fn cond(&self, c: &Value, vars: &Vars) -> Result<bool, TemplateError> {
        match c {
            Value::Null => Ok(true),
            Value::Bool(b) => Ok(*b),
            Value::Array(a) => {
                for x in a {
                    if !self.cond(x, vars)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Value::String(s) => {
                let expr = single_expression(s.trim()).unwrap_or_else(|| s.trim());
                if expr.is_empty() {
                    return Ok(true);
                }
                vars.sink.undefined.lock().take();
                let e = self
                    .env
                    .compile_expression(expr)
                    .map_err(|e| self.fail(e, vars))?;
                let v = e.eval(self.ctx(vars, 0)).map_err(|e| self.fail(e, vars))?;
                if v.is_undefined() {
                    return Err(TemplateError(format!(
                        "the conditional '{expr}' is undefined"
                    )));
                }
                // A string result that is a template again (a variable
                // holding "{{ x }}") is resolved like any other value.
                if let Some(st) = v.as_str() {
                    if is_template(st) {
                        let t = self.value(&Value::String(st.to_owned()), vars)?;
                        return Ok(truthy(&t));
                    }
                }
                Ok(v.is_true())
            }
            other => Ok(truthy(other)),
        }
    }

    /// Evaluates a bare expression (loop sources given as expressions, ...).
    ///
    /// # Errors
    /// As [`Templar::value`].
    pub fn expr(&self, expr: &str, vars: &Vars) -> Result<Value, TemplateError> {
        vars.sink.undefined.lock().take();
        let e = self
            .env
            .compile_expression(expr)
            .map_err(|e| self.fail(e, vars))?;
        to_json(&e.eval(self.ctx(vars, 0)).map_err(|e| self.fail(e, vars))?)
    }

    /// Checks a template's syntax and that every filter and test it names
    /// exists, before anything runs. `is_expr`: a bare expression (`when:`).
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn check(&self, s: &str, is_expr: bool) -> Result<(), String> {
        if is_expr {
            let e = single_expression(s.trim()).unwrap_or_else(|| s.trim());
            if !e.is_empty() {
                self.env
                    .compile_expression(e)
                    .map_err(|e| TemplateError::from(e).0)?;
            }
            return check_names(e);
        }
        if !is_template(s) {
            return Ok(());
        }
        self.env
            .template_from_str(s)
            .map_err(|e| TemplateError::from(e).0)?;
        check_template_names(s)
    }
}

/// `\n`s at the end of `s` (ansible-core's `_count_newlines_from_end`).
fn trailing_newlines(s: &str) -> usize {
    s.bytes().rev().take_while(|&b| b == b'\n').count()
}

/// A lookup plugin's failure, carried through minijinja as an error's
/// source so that its message reaches the task unchanged.
#[derive(Debug)]
pub(crate) struct PluginFailure(pub(crate) String);

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginFailure {}

/// `lookup(name, *terms, **kwargs)` and `query`/`q` (`force_list`).
fn call_lookup(st: &State<'_, '_>, args: &[JValue], force_list: bool) -> Result<JValue, JError> {
    let (pos, kwargs): (&[JValue], Kwargs) = minijinja::value::from_args(args)?;
    let Some((name, terms)) = pos.split_first() else {
        return Err(jerr("lookup() needs the name of a lookup plugin"));
    };
    let Some(name) = name.as_str() else {
        return Err(jerr(format!(
            "a lookup plugin's name must be a string, not {name}"
        )));
    };
    let scope = st
        .lookup(SCOPE_KEY)
        .and_then(|s| s.downcast_object::<Scope>())
        .ok_or_else(|| jerr("lookups need the task's variables"))?;
    let mut kw: Vec<(String, JValue)> = Vec::new();
    for k in kwargs.args() {
        kw.push((k.to_owned(), kwargs.get::<JValue>(k)?));
    }
    let cx = super::lookup::Ctx {
        templar: &scope.templar,
        vars: &scope.vars,
        depth: scope.depth + 1,
        with_action: None,
    };
    super::lookup::invoke(name, terms, kw, force_list, &cx).map_err(|f| {
        let msg = f.to_string();
        jerr(msg).with_source(f)
    })
}

/// Python truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

static FILTER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\|\s*([A-Za-z_][A-Za-z0-9_.]*)").expect("static regex"));
static TEST_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bis\s+(?:not\s+)?([A-Za-z_][A-Za-z0-9_.]*)").expect("static regex")
});
static STR_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"#).expect("static regex"));

/// `lookup('name'`, `query("name"`, `q('name'`: the plugin's name.
static LOOKUP_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[^\w.])(?:lookup|query|q)\s*\(\s*(?:'([^']*)'|"([^"]*)")"#)
        .expect("static regex")
});

static BLOCK_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{\{(.*?)\}\}|\{%(.*?)%\}").expect("static regex"));

/// Checks filter and test names inside a template's `{{ }}`/`{% %}`.
fn check_template_names(src: &str) -> Result<(), String> {
    for c in BLOCK_RE.captures_iter(src) {
        let inner = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        check_names(inner)?;
    }
    Ok(())
}

fn check_names(src: &str) -> Result<(), String> {
    for c in LOOKUP_RE.captures_iter(src) {
        let name = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        if !super::lookup::exists(name) {
            return Err(format!("unsupported lookup '{name}'"));
        }
    }
    let code = STR_RE.replace_all(src, "''");
    for c in FILTER_RE.captures_iter(&code) {
        let name = &c[1];
        let short = name.strip_prefix("ansible.builtin.").unwrap_or(name);
        if !FILTERS.contains(&short) && !BUILTIN_FILTERS.contains(&short) {
            return Err(format!("unsupported filter '{name}'"));
        }
    }
    for c in TEST_RE.captures_iter(&code) {
        let name = &c[1];
        let short = name.strip_prefix("ansible.builtin.").unwrap_or(name);
        if !TESTS.contains(&short) {
            return Err(format!("unsupported test '{name}'"));
        }
    }
    Ok(())
}

fn jerr(msg: impl Into<String>) -> JError {
    JError::new(ErrorKind::InvalidOperation, msg.into())
}

fn jv_to_json(v: &JValue) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn py_regex(pattern: &str, ignorecase: bool, multiline: bool) -> Result<Regex, JError> {
    let mut p = String::new();
    if ignorecase {
        p.push_str("(?i)");
    }
    if multiline {
        p.push_str("(?m)");
    }
    // Python's named groups (?P<n>..) are accepted by the regex crate.
    p.push_str(pattern);
    Regex::new(&p).map_err(|e| jerr(format!("invalid regular expression {pattern:?}: {e}")))
}

/// Python's `\1` / `\g<name>` replacement syntax in Rust regex's.
fn py_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut it = r.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match it.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(&d) = it.peek() {
                        if !d.is_ascii_digit() {
                            break;
                        }
                        n.push(d);
                        it.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    it.next();
                    if it.peek() == Some(&'<') {
                        it.next();
                        let name: String = it.by_ref().take_while(|&c| c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    it.next();
                    out.push('\n');
                }
                Some('t') => {
                    it.next();
                    out.push('\t');
                }
                Some('\\') => {
                    it.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn result_flag(v: &JValue, key: &str) -> Result<bool, JError> {
    if v.kind() != ValueKind::Map {
        return Err(jerr(format!(
            "the '{key}' test expects a dictionary (a registered result)"
        )));
    }
    Ok(v.get_attr(key).map(|x| x.is_true()).unwrap_or(false))
}

mod filters {
    use super::*;

    pub(super) fn add(env: &mut Environment<'static>) {
        env.add_filter("d", default);
        env.add_filter("default", default);
        env.add_filter("bool", to_bool);
        env.add_filter("int", to_int);
        env.add_filter("float", to_float);
        env.add_filter(
            "to_json",
            |v: JValue, _k: Kwargs| -> Result<String, JError> {
                Ok(py_json(&jv_to_json(&v), None))
            },
        );
        env.add_filter(
            "to_nice_json",
            |v: JValue, k: Kwargs| -> Result<String, JError> {
                let indent: Option<usize> = k.get("indent")?;
                Ok(py_json(
                    &sort_keys(jv_to_json(&v)),
                    Some(indent.unwrap_or(4)),
                ))
            },
        );
        env.add_filter("from_json", |s: String| -> Result<JValue, JError> {
            let v: Value = serde_json::from_str(&s).map_err(|e| jerr(format!("from_json: {e}")))?;
            Ok(JValue::from_serialize(&v))
        });
        env.add_filter("from_yaml", |s: String| -> Result<JValue, JError> {
            let n = crate::yaml::parse_one(&s, std::path::Path::new("<from_yaml>"))
                .map_err(|e| jerr(e.to_string()))?;
            Ok(JValue::from_serialize(n.to_json()))
        });
        env.add_filter("regex_replace", regex_replace);
        env.add_filter("regex_search", regex_search);
        env.add_filter("regex_findall", regex_findall);
        env.add_filter("regex_escape", |s: String| regex::escape(&s));
        env.add_filter("ternary", ternary);
        env.add_filter("mandatory", |v: JValue, msg: Option<String>| {
            if v.is_undefined() {
                Err(jerr(msg.unwrap_or_else(|| {
                    "Mandatory variable not defined.".into()
                })))
            } else {
                Ok(v)
            }
        });
        env.add_filter("combine", combine);
        env.add_filter("dict2items", dict2items);
        env.add_filter("items2dict", items2dict);
        env.add_filter("basename", |s: String| {
            s.rsplit('/').next().unwrap_or("").to_owned()
        });
        env.add_filter("dirname", |s: String| match s.rfind('/') {
            Some(0) => "/".to_owned(),
            Some(i) => s[..i].to_owned(),
            None => String::new(),
        });
        env.add_filter("splitext", |s: String| {
            let base_start = s.rfind('/').map_or(0, |i| i + 1);
            match s[base_start..].rfind('.') {
                Some(i) if i > 0 => {
                    let i = base_start + i;
                    JValue::from(vec![s[..i].to_owned(), s[i..].to_owned()])
                }
                _ => JValue::from(vec![s.clone(), String::new()]),
            }
        });
        env.add_filter("quote", |s: String| crate::pycompat::shlex_quote(&s));
        env.add_filter("b64encode", |s: String| b64::encode(s.as_bytes()));
        env.add_filter("b64decode", |s: String| -> Result<String, JError> {
            let b = b64::decode(&s).ok_or_else(|| jerr("b64decode: invalid base64"))?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        });
        env.add_filter("union", |a: JValue, b: JValue| -> Result<JValue, JError> {
            let mut out = unique_list(&a)?;
            for x in unique_list(&b)? {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
            Ok(JValue::from(out))
        });
        env.add_filter(
            "intersect",
            |a: JValue, b: JValue| -> Result<JValue, JError> {
                let b = unique_list(&b)?;
                Ok(JValue::from(
                    unique_list(&a)?
                        .into_iter()
                        .filter(|x| b.contains(x))
                        .collect::<Vec<_>>(),
                ))
            },
        );
        env.add_filter(
            "difference",
            |a: JValue, b: JValue| -> Result<JValue, JError> {
                let b = unique_list(&b)?;
                Ok(JValue::from(
                    unique_list(&a)?
                        .into_iter()
                        .filter(|x| !b.contains(x))
                        .collect::<Vec<_>>(),
                ))
            },
        );
        env.add_filter(
            "flatten",
            |a: JValue, levels: Option<usize>| -> Result<JValue, JError> {
                let mut out = Vec::new();
                flatten(&a, levels, &mut out)?;
                Ok(JValue::from(out))
            },
        );
        env.add_filter("type_debug", |v: JValue| {
            match v.kind() {
                ValueKind::None => "NoneType",
                ValueKind::Bool => "bool",
                ValueKind::Number => {
                    if v.as_i64().is_some() {
                        "int"
                    } else {
                        "float"
                    }
                }
                ValueKind::String => "str",
                ValueKind::Seq => "list",
                ValueKind::Map => "dict",
                _ => "object",
            }
            .to_owned()
        });
        env.add_filter(
            "zip",
            |a: JValue, rest: Rest<JValue>| -> Result<JValue, JError> {
                let mut lists = vec![a.try_iter()?.collect::<Vec<_>>()];
                for r in rest.iter() {
                    lists.push(r.try_iter()?.collect());
                }
                let n = lists.iter().map(Vec::len).min().unwrap_or(0);
                Ok(JValue::from(
                    (0..n)
                        .map(|i| {
                            JValue::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>())
                        })
                        .collect::<Vec<_>>(),
                ))
            },
        );
        // `extract(item, container, morekeys)`: container[item][k]...;
        // what is missing is undefined (`map('extract', hostvars, 'x')`).
        env.add_filter(
            "extract",
            |item: JValue, container: JValue, more: Option<JValue>| -> Result<JValue, JError> {
                let mut keys = vec![item];
                match more {
                    Some(m) if m.kind() == ValueKind::Seq => keys.extend(m.try_iter()?),
                    Some(m) if !m.is_undefined() && !m.is_none() => keys.push(m),
                    _ => {}
                }
                let mut v = container;
                for k in &keys {
                    if v.is_undefined() {
                        break;
                    }
                    v = v.get_item(k).unwrap_or(JValue::UNDEFINED);
                }
                Ok(v)
            },
        );
        env.add_filter(
            "product",
            |a: JValue, b: JValue| -> Result<JValue, JError> {
                let a: Vec<JValue> = a.try_iter()?.collect();
                let b: Vec<JValue> = b.try_iter()?.collect();
                let mut out = Vec::new();
                for x in &a {
                    for y in &b {
                        out.push(JValue::from(vec![x.clone(), y.clone()]));
                    }
                }
                Ok(JValue::from(out))
            },
        );

        env.add_test("failed", |v: JValue| result_flag(&v, "failed"));
        env.add_test("failure", |v: JValue| result_flag(&v, "failed"));
        for n in ["succeeded", "success", "successful"] {
            env.add_test(n, |v: JValue| result_flag(&v, "failed").map(|f| !f));
        }
        env.add_test("changed", |v: JValue| result_flag(&v, "changed"));
        env.add_test("change", |v: JValue| result_flag(&v, "changed"));
        env.add_test("skipped", |v: JValue| result_flag(&v, "skipped"));
        env.add_test("skip", |v: JValue| result_flag(&v, "skipped"));
        env.add_test("unreachable", |v: JValue| result_flag(&v, "unreachable"));
        env.add_test("finished", |v: JValue| {
            if v.kind() != ValueKind::Map {
                return Err(jerr("the 'finished' test expects a dictionary"));
            }
            Ok(v.get_attr("finished")
                .map(|x| x.is_undefined() || x.is_true() || x.as_i64() == Some(1))
                .unwrap_or(true))
        });
        env.add_test(
            "match",
            |s: String, p: String, k: Kwargs| -> Result<bool, JError> {
                let re = py_regex(
                    &format!("^(?:{p})"),
                    k.get::<Option<_>>("ignorecase")?.unwrap_or(false),
                    k.get::<Option<_>>("multiline")?.unwrap_or(false),
                )?;
                Ok(re.is_match(&s))
            },
        );
        for n in ["search", "regex"] {
            env.add_test(
                n,
                |s: String, p: String, k: Kwargs| -> Result<bool, JError> {
                    let re = py_regex(
                        &p,
                        k.get::<Option<_>>("ignorecase")?.unwrap_or(false),
                        k.get::<Option<_>>("multiline")?.unwrap_or(false),
                    )?;
                    Ok(re.is_match(&s))
                },
            );
        }
        env.add_test("truthy", |v: JValue| v.is_true());
        env.add_test("falsy", |v: JValue| !v.is_true());
        env.add_test(
            "contains",
            |seq: JValue, x: JValue| -> Result<bool, JError> {
                Ok(seq.try_iter()?.any(|i| i == x))
            },
        );
        env.add_test("any", |seq: JValue| -> Result<bool, JError> {
            Ok(seq.try_iter()?.any(|i| i.is_true()))
        });
        env.add_test("all", |seq: JValue| -> Result<bool, JError> {
            Ok(seq.try_iter()?.all(|i| i.is_true()))
        });
        env.add_test("subset", |a: JValue, b: JValue| -> Result<bool, JError> {
            let b: Vec<JValue> = b.try_iter()?.collect();
            Ok(a.try_iter()?.all(|x| b.contains(&x)))
        });
        env.add_test("superset", |a: JValue, b: JValue| -> Result<bool, JError> {
            let a: Vec<JValue> = a.try_iter()?.collect();
            Ok(b.try_iter()?.all(|x| a.contains(&x)))
        });
        for n in ["version", "version_compare"] {
            env.add_test(n, version_test);
        }
    }

    fn default(v: JValue, other: Option<JValue>, boolean: Option<bool>) -> JValue {
        let other = other.unwrap_or_else(|| JValue::from(""));
        if v.is_undefined() || (boolean == Some(true) && !v.is_true()) {
            other
        } else {
            v
        }
    }

    fn to_bool(v: JValue) -> bool {
        match v.kind() {
            ValueKind::Bool => v.is_true(),
            ValueKind::Number => v.as_i64() == Some(1) || v.to_string() == "1.0",
            ValueKind::String => matches!(
                v.as_str().unwrap_or("").to_lowercase().trim(),
                "yes" | "on" | "1" | "true" | "y" | "t"
            ),
            _ => false,
        }
    }

    fn to_int(v: JValue, default: Option<i64>, base: Option<u32>) -> i64 {
        let d = default.unwrap_or(0);
        match v.kind() {
            ValueKind::Bool => i64::from(v.is_true()),
            ValueKind::Number => v
                .as_i64()
                .or_else(|| f64::try_from(v.clone()).ok().map(|f| f.trunc() as i64))
                .unwrap_or(d),
            ValueKind::String => {
                let s = v.as_str().unwrap_or("").trim();
                let r = match base {
                    Some(b) if b != 10 => i64::from_str_radix(
                        s.trim_start_matches("0x")
                            .trim_start_matches("0o")
                            .trim_start_matches("0b"),
                        b,
                    )
                    .ok(),
                    _ => s.parse::<i64>().ok(),
                };
                r.or_else(|| s.parse::<f64>().ok().map(|f| f.trunc() as i64))
                    .unwrap_or(d)
            }
            _ => d,
        }
    }

    fn to_float(v: JValue, default: Option<f64>) -> f64 {
        let d = default.unwrap_or(0.0);
        match v.kind() {
            ValueKind::Bool => f64::from(u8::from(v.is_true())),
            ValueKind::Number => f64::try_from(v).unwrap_or(d),
            ValueKind::String => v.as_str().unwrap_or("").trim().parse().unwrap_or(d),
            _ => d,
        }
    }

    fn regex_replace(
        s: String,
        pattern: String,
        replacement: Option<String>,
        k: Kwargs,
    ) -> Result<String, JError> {
        let ignorecase: bool = k.get::<Option<_>>("ignorecase")?.unwrap_or(false);
        let multiline: bool = k.get::<Option<_>>("multiline")?.unwrap_or(false);
        let count: usize = k.get::<Option<_>>("count")?.unwrap_or(0);
        let re = py_regex(&pattern, ignorecase, multiline)?;
        let rep = py_replacement(&replacement.unwrap_or_default());
        Ok(re.replacen(&s, count, rep.as_str()).into_owned())
    }

    fn regex_search(
        s: String,
        pattern: String,
        groups: Rest<String>,
        k: Kwargs,
    ) -> Result<JValue, JError> {
        let ignorecase: bool = k.get::<Option<_>>("ignorecase")?.unwrap_or(false);
        let multiline: bool = k.get::<Option<_>>("multiline")?.unwrap_or(false);
        let re = py_regex(&pattern, ignorecase, multiline)?;
        let Some(c) = re.captures(&s) else {
            return Ok(JValue::from(()));
        };
        if groups.is_empty() {
            return Ok(JValue::from(c.get(0).map_or("", |m| m.as_str())));
        }
        let mut out = Vec::new();
        for g in groups.iter() {
            let m = if let Some(n) = g.strip_prefix('\\').and_then(|n| n.parse::<usize>().ok()) {
                c.get(n)
            } else if let Some(n) = g.strip_prefix("?P<").and_then(|n| n.strip_suffix('>')) {
                c.name(n)
            } else {
                return Err(jerr(format!("regex_search: unknown group argument {g:?}")));
            };
            out.push(m.map_or_else(|| JValue::from(()), |m| JValue::from(m.as_str())));
        }
        Ok(JValue::from(out))
    }

    fn regex_findall(s: String, pattern: String, k: Kwargs) -> Result<JValue, JError> {
        let ignorecase: bool = k.get::<Option<_>>("ignorecase")?.unwrap_or(false);
        let multiline: bool = k.get::<Option<_>>("multiline")?.unwrap_or(false);
        let re = py_regex(&pattern, ignorecase, multiline)?;
        let groups = re.captures_len() - 1;
        let mut out = Vec::new();
        for c in re.captures_iter(&s) {
            let v = match groups {
                0 => JValue::from(c.get(0).map_or("", |m| m.as_str())),
                1 => JValue::from(c.get(1).map_or("", |m| m.as_str())),
                _ => JValue::from(
                    (1..=groups)
                        .map(|i| c.get(i).map_or("", |m| m.as_str()).to_owned())
                        .collect::<Vec<_>>(),
                ),
            };
            out.push(v);
        }
        Ok(JValue::from(out))
    }

    fn ternary(v: JValue, t: JValue, f: JValue, none: Option<JValue>) -> JValue {
        if let (true, Some(n)) = (v.is_none(), none) {
            return n;
        }
        if v.is_true() { t } else { f }
    }

    fn merge(a: &mut Value, b: Value, recursive: bool, list_merge: &str) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(x) if recursive && x.is_object() && v.is_object() => {
                            merge(x, v, recursive, list_merge);
                        }
                        Some(Value::Array(x))
                            if recursive && v.is_array() && list_merge != "replace" =>
                        {
                            let Value::Array(v) = v else { continue };
                            match list_merge {
                                "append" => x.extend(v),
                                "prepend" => {
                                    let old = std::mem::take(x);
                                    *x = v;
                                    x.extend(old);
                                }
                                "append_rp" => {
                                    x.retain(|i| !v.contains(i));
                                    x.extend(v);
                                }
                                "prepend_rp" => {
                                    let old: Vec<Value> = std::mem::take(x)
                                        .into_iter()
                                        .filter(|i| !v.contains(i))
                                        .collect();
                                    *x = v;
                                    x.extend(old);
                                }
                                _ => *x = v,
                            }
                        }
                        _ => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (a, b) => *a = b,
        }
    }

    fn combine(v: JValue, rest: Rest<JValue>, k: Kwargs) -> Result<JValue, JError> {
        let recursive: bool = k.get::<Option<_>>("recursive")?.unwrap_or(false);
        let list_merge: String = k
            .get::<Option<String>>("list_merge")?
            .unwrap_or_else(|| "replace".into());
        let mut acc = jv_to_json(&v);
        let mut others = Vec::new();
        for r in rest.iter() {
            if r.kind() == ValueKind::Seq {
                others.extend(r.try_iter()?);
            } else {
                others.push(r.clone());
            }
        }
        if acc.is_array() {
            let items = std::mem::take(&mut acc);
            acc = Value::Object(Map::new());
            if let Value::Array(items) = items {
                for i in items {
                    merge(&mut acc, i, recursive, &list_merge);
                }
            }
        }
        if !acc.is_object() {
            return Err(jerr("combine: the value must be a dictionary"));
        }
        for o in others {
            let o = jv_to_json(&o);
            if !o.is_object() {
                return Err(jerr("combine: every argument must be a dictionary"));
            }
            merge(&mut acc, o, recursive, &list_merge);
        }
        Ok(JValue::from_serialize(&acc))
    }

    fn dict2items(v: JValue, k: Kwargs) -> Result<JValue, JError> {
        let kn: String = k
            .get::<Option<String>>("key_name")?
            .unwrap_or_else(|| "key".into());
        let vn: String = k
            .get::<Option<String>>("value_name")?
            .unwrap_or_else(|| "value".into());
        let Value::Object(m) = jv_to_json(&v) else {
            return Err(jerr("dict2items requires a dictionary"));
        };
        let out: Vec<Value> = m
            .into_iter()
            .map(|(key, val)| {
                let mut o = Map::new();
                o.insert(kn.clone(), Value::String(key));
                o.insert(vn.clone(), val);
                Value::Object(o)
            })
            .collect();
        Ok(JValue::from_serialize(&out))
    }

    fn items2dict(v: JValue, k: Kwargs) -> Result<JValue, JError> {
        let kn: String = k
            .get::<Option<String>>("key_name")?
            .unwrap_or_else(|| "key".into());
        let vn: String = k
            .get::<Option<String>>("value_name")?
            .unwrap_or_else(|| "value".into());
        let Value::Array(items) = jv_to_json(&v) else {
            return Err(jerr("items2dict requires a list"));
        };
        let mut out = Map::new();
        for i in items {
            let key = i
                .get(&kn)
                .ok_or_else(|| jerr(format!("items2dict: an item has no '{kn}'")))?;
            let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
            out.insert(key, i.get(&vn).cloned().unwrap_or(Value::Null));
        }
        Ok(JValue::from_serialize(&out))
    }

    fn unique_list(v: &JValue) -> Result<Vec<JValue>, JError> {
        let mut out: Vec<JValue> = Vec::new();
        for x in v.try_iter()? {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        Ok(out)
    }

    fn flatten(v: &JValue, levels: Option<usize>, out: &mut Vec<JValue>) -> Result<(), JError> {
        for x in v.try_iter()? {
            if x.kind() == ValueKind::Seq && levels != Some(0) {
                flatten(&x, levels.map(|l| l - 1), out)?;
            } else if !x.is_none() {
                out.push(x);
            }
        }
        Ok(())
    }

    fn version_test(a: String, b: String, op: Option<String>) -> Result<bool, JError> {
        let parse = |s: &str| -> Vec<u64> {
            s.split(['.', '-', '_'])
                .map(|p| {
                    p.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0)
                })
                .collect()
        };
        let (x, y) = (parse(&a), parse(&b));
        let n = x.len().max(y.len());
        let pad = |mut v: Vec<u64>| {
            v.resize(n, 0);
            v
        };
        let ord = pad(x).cmp(&pad(y));
        use std::cmp::Ordering::*;
        Ok(match op.as_deref().unwrap_or("eq") {
            "eq" | "==" | "=" => ord == Equal,
            "ne" | "!=" | "<>" => ord != Equal,
            "lt" | "<" => ord == Less,
            "le" | "<=" => ord != Greater,
            "gt" | ">" => ord == Greater,
            "ge" | ">=" => ord != Less,
            o => return Err(jerr(format!("version: unknown operator {o:?}"))),
        })
    }
}

/// Keys sorted at every level (`sort_keys=True`).
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut items: Vec<(String, Value)> = o.into_iter().collect();
            items.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(items.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        v => v,
    }
}

/// Python's `json.dumps` layout: `", "`/`": "` separators, or `indent`.
pub fn py_json(v: &Value, indent: Option<usize>) -> String {
    fn go(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
        let nl = |out: &mut String, l: usize| {
            if let Some(i) = indent {
                out.push('\n');
                out.push_str(&" ".repeat(i * l));
            }
        };
        match v {
            Value::Array(a) if !a.is_empty() => {
                out.push('[');
                for (n, x) in a.iter().enumerate() {
                    if n > 0 {
                        out.push_str(if indent.is_some() { "," } else { ", " });
                    }
                    nl(out, level + 1);
                    go(x, indent, level + 1, out);
                }
                nl(out, level);
                out.push(']');
            }
            Value::Object(o) if !o.is_empty() => {
                out.push('{');
                for (n, (k, x)) in o.iter().enumerate() {
                    if n > 0 {
                        out.push_str(if indent.is_some() { "," } else { ", " });
                    }
                    nl(out, level + 1);
                    out.push_str(&py_str(k));
                    out.push_str(": ");
                    go(x, indent, level + 1, out);
                }
                nl(out, level);
                out.push('}');
            }
            Value::String(s) => out.push_str(&py_str(s)),
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    go(v, indent, 0, &mut out);
    out
}

/// A JSON string with Python's `ensure_ascii` escapes.
fn py_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

mod b64 {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(b: &[u8]) -> String {
        let mut out = String::new();
        for ch in b.chunks(3) {
            let n = (u32::from(ch[0]) << 16)
                | (u32::from(*ch.get(1).unwrap_or(&0)) << 8)
                | u32::from(*ch.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= ch.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub(super) fn decode(s: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
            let v = T.iter().position(|&t| t == c)? as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Vars {
        let mut x = Vars::new();
        if let Value::Object(o) = v {
            x.push(Arc::new(o));
        }
        x
    }

    #[test]
    fn native_types_and_lazy_vars() {
        let t = Templar::new();
        let v = vars(json!({"a": [1, 2], "b": "{{ a }}", "c": "x{{ a | length }}", "n": "5"}));
        assert_eq!(t.value(&json!("{{ b }}"), &v).unwrap(), json!([1, 2]));
        assert_eq!(t.value(&json!("{{ c }}"), &v).unwrap(), json!("x2"));
        assert_eq!(t.value(&json!("{{ n | int + 1 }}"), &v).unwrap(), json!(6));
        assert!(t.cond(&json!("a | length == 2"), &v).unwrap());
        assert!(t.cond(&json!("zz is not defined"), &v).unwrap());
        assert!(t.value(&json!("{{ zz }}"), &v).is_err());
        assert_eq!(
            t.value(&json!("{{ zz | default('d') }}"), &v).unwrap(),
            json!("d")
        );
        assert_eq!(
            t.value(
                &json!("{{ 'a-b' | regex_replace('(a)-(b)', '\\\\2\\\\1') }}"),
                &v
            )
            .unwrap(),
            json!("ba")
        );
        assert_eq!(
            t.value(&json!("{{ {'x': 1} | to_json }}"), &v).unwrap(),
            json!("{\"x\": 1}")
        );
        assert_eq!(
            t.value(&json!("{{ 'no' | bool }}"), &v).unwrap(),
            json!(false)
        );
        assert_eq!(
            t.value(&json!("{{ 'a,b'.split(',') }}"), &v).unwrap(),
            json!(["a", "b"])
        );
    }

    #[test]
    fn static_checks() {
        let t = Templar::new();
        assert!(
            t.check("{{ x | to_yaml }}", false)
                .unwrap_err()
                .contains("to_yaml")
        );
        assert!(
            t.check("x is frobbed", true)
                .unwrap_err()
                .contains("frobbed")
        );
        assert!(
            t.check("{{ 'a|b' | regex_replace('a|b', 'c') }}", false)
                .is_ok()
        );
        assert!(t.check("{{ x ", false).is_err());
        assert!(t.check("echo a | tr {{ x | upper }}", false).is_ok());
        assert_eq!(b64::encode(b"hello"), "aGVsbG8=");
        assert_eq!(b64::decode("aGVsbG8=").unwrap(), b"hello");
    }
}
