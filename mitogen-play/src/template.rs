//! Templating and conditionals for plays, on the crate's one Jinja
//! engine ([`mitogen_ansible::jinja`]: Ansible's filters and tests, finalize,
//! undefined messages) with the play's own globals: `lookup`, `query`
//! and `q` ([`super::lookup`]). Ansible's native-type rule holds: a
//! string that is one `{{ expression }}` becomes the expression's value
//! (a list stays a list), anything else renders to a string.
//!
//! Variables are looked up lazily through [`Vars`] layers (highest
//! precedence last); a variable whose value is itself a template is
//! templated when it is used, as Ansible does. [`PlayHook`] gives the
//! same variables, lookups and search paths to the files a `template`
//! task renders in the runner.

use crate::plugins::{Kind, PluginHost};
use minijinja::value::{Enumerator, Kwargs, Object, Rest, Value as JValue};
use minijinja::{Environment, Error as JError, ErrorKind, State};
use mitogen_ansible::jinja::{self, Form, Syntax, TemplateHook, undefined};
use regex::Regex;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

pub use mitogen_ansible::jinja::FILTERS;

/// Templating depth for variables that are templates themselves.
const MAX_DEPTH: usize = 16;

/// Variable layers, lowest precedence first, and named objects resolved
/// on access (`hostvars`).
///
/// A layer is *trusted* (what the playbook, inventory and vars files say:
/// a template in a value is rendered when the variable is read) or not
/// (what targets and templates produced: registered results, facts,
/// `set_fact` values, loop items). As in ansible-core 2.19, a template
/// inside an untrusted value is text, never rendered: a module's output
/// that holds `{{ lookup('pipe', ...) }}` must not run on the controller.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    layers: Vec<(Arc<Map<String, Value>>, bool)>,
    objects: Vec<(Arc<str>, JValue)>,
    sink: Arc<Sink>,
}

/// What templating reports besides its value: warnings (a lookup's
/// `errors='warn'`).
#[derive(Debug, Default)]
struct Sink {
    warnings: parking_lot::Mutex<Vec<String>>,
}

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every variable, upper layers winning (values not yet templated).
    pub fn flatten(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (layer, _) in &self.layers {
            for (k, v) in layer.iter() {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// Adds a trusted layer above the others.
    pub fn push(&mut self, layer: Arc<Map<String, Value>>) {
        if !layer.is_empty() {
            self.layers.push((layer, true));
        }
    }

    /// Adds an untrusted layer (results: never templated) above the others.
    pub fn push_untrusted(&mut self, layer: Arc<Map<String, Value>>) {
        if !layer.is_empty() {
            self.layers.push((layer, false));
        }
    }

    /// Adds a trusted layer of one variable.
    pub fn push_one(&mut self, key: &str, v: Value) {
        let mut m = Map::new();
        m.insert(key.to_owned(), v);
        self.layers.push((Arc::new(m), true));
    }

    /// Adds an untrusted layer of one variable.
    pub fn push_one_untrusted(&mut self, key: &str, v: Value) {
        let mut m = Map::new();
        m.insert(key.to_owned(), v);
        self.layers.push((Arc::new(m), false));
    }

    /// The raw (untemplated) value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.get_with_trust(key).map(|(v, _)| v)
    }

    /// The raw value of `key`, and whether its layer is trusted.
    fn get_with_trust(&self, key: &str) -> Option<(&Value, bool)> {
        self.layers
            .iter()
            .rev()
            .find_map(|(l, trusted)| l.get(key).map(|v| (v, *trusted)))
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

    fn keys(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        for (l, _) in &self.layers {
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
        Self(jinja::error_text(&e))
    }
}

/// A failed render inside the crate: whether it failed on an undefined
/// value (which the `template` lookup passes on as an undefined value,
/// as ansible-core's markers, not as its own failure).
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) msg: String,
    pub(crate) undefined: bool,
}

impl From<Failed> for TemplateError {
    fn from(f: Failed) -> Self {
        Self(f.msg)
    }
}

/// The template engine (cheap to clone).
#[derive(Clone)]
pub struct Templar {
    /// Ansible's filters, tests and lookups in minijinja.
    base: Arc<Environment<'static>>,
    /// `base` with proxies for the plugins the plugin host found so far,
    /// and the host's generation it was built at (shared by clones).
    current: Arc<parking_lot::RwLock<(u64, Arc<Environment<'static>>)>>,
    /// Serves what `base` lacks (Python plugins).
    plugins: Option<Arc<PluginHost>>,
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

/// What a scope's missing names are, for ansible-core's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A template's variables: `'x' is undefined`.
    Context,
    /// `vars`: a dict.
    Vars,
    /// `hostvars[host]` (ansible-core's `HostVarsVars`).
    Host,
}

#[derive(Debug)]
struct Scope {
    vars: Vars,
    templar: Templar,
    depth: usize,
    role: Role,
}

/// The name under which a template's own [`Scope`] is found (by lookups,
/// which need the variables and the engine); not a variable users see.
const SCOPE_KEY: &str = "__mitogen_scope__";

impl Scope {
    fn with_role(self: &Arc<Self>, role: Role) -> JValue {
        JValue::from_object(Self {
            vars: self.vars.clone(),
            templar: self.templar.clone(),
            depth: self.depth,
            role,
        })
    }

    fn missing(&self, key: &JValue) {
        match (self.role, key.as_str()) {
            (Role::Context, Some(k)) => undefined::note_var(k),
            (Role::Host, _) => undefined::note_missing("HostVarsVars", key),
            _ => undefined::note_missing("dict", key),
        }
    }
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let Some(k) = key.as_str() else {
            self.missing(key);
            return None;
        };
        let Some((v, trusted)) = self.vars.get_with_trust(k) else {
            let v = match k {
                SCOPE_KEY => Some(JValue::from_dyn_object(self.clone())),
                // `vars`: every variable, templated on access.
                "vars" => Some(self.with_role(Role::Vars)),
                _ => self.vars.object(k),
            };
            if v.is_none() {
                self.missing(key);
            }
            return v;
        };
        if let Some(e) = mitogen_ansible::vault::undecryptable_in(v) {
            undefined::note(format!(
                "Error rendering template: Attempt to use undecryptable variable: {e}"
            ));
            return Some(JValue::UNDEFINED);
        }
        if trusted && self.depth < MAX_DEPTH && has_template(v) {
            // A variable's template that fails makes the variable
            // undefined, for that reason (ansible-core's markers).
            return Some(match self.templar.value_at(v, &self.vars, self.depth + 1) {
                Ok(t) => undefined::to_value(&t),
                Err(e) => {
                    undefined::note(e.0);
                    JValue::UNDEFINED
                }
            });
        }
        Some(undefined::to_value(v))
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

/// `{{ expr }}` alone: the expression. The expression may hold braces of
/// its own (`{{ a | combine({'x': {'b': 9}}) }}`): it is one expression if
/// no `}` outside its string literals closes more than it opened.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{%") || inner.contains("{#") {
        return None;
    }
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &b in inner.as_bytes() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'{' => depth += 1,
                b'}' if depth == 0 => return None,
                b'}' => depth -= 1,
                _ => {}
            },
        }
    }
    if quote.is_some() || depth != 0 {
        return None;
    }
    Some(inner.trim().trim_start_matches('-').trim_end_matches('-'))
}

/// ansible-core 2.19's `AnsibleLexer` for templates from play data: string
/// literals inside `{{ }}` keep their backslashes as written (the YAML
/// parser already decoded its own escapes), so `'\\1'` reaches
/// `regex_replace` as a backreference. Statements (`{% %}`), conditionals
/// and template files keep Jinja's escapes. Returns the source with those
/// literals re-escaped for Jinja's lexer, or `None` when nothing changes.
fn escape_backslashes(src: &str) -> Option<String> {
    if !src.contains('\\') || !src.contains("{{") {
        return None;
    }
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    let mut last = 0;
    let mut changed = false;
    while i < b.len() {
        // `{% raw %}...{% endraw %}`: not lexed.
        if b[i..].starts_with(b"{%") {
            let rest = &src[i + 2..];
            let t = rest.trim_start_matches(['-', '+']).trim_start();
            if t.starts_with("raw")
                && t[3..]
                    .trim_start()
                    .trim_start_matches(['-', '+'])
                    .starts_with("%}")
            {
                match src[i..].find("endraw") {
                    Some(e) => {
                        i += e + 6;
                        continue;
                    }
                    None => return changed.then(|| out + &src[last..]),
                }
            }
            i += 2;
            continue;
        }
        if !b[i..].starts_with(b"{{") {
            i += 1;
            continue;
        }
        // An expression: to its `}}` outside strings and nested braces.
        i += 2;
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                q @ (b'\'' | b'"') => {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && b[j] != q {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    let end = j.min(b.len());
                    let lit = &src[start..end];
                    if lit.contains('\\') {
                        out.push_str(&src[last..start]);
                        for c in lit.chars() {
                            if c == '\\' {
                                out.push_str("\\\\");
                            } else if c as u32 == u32::from(q) {
                                out.push('\\');
                                out.push(c);
                            } else {
                                out.push(c);
                            }
                        }
                        last = end;
                        changed = true;
                    }
                    i = end + 1;
                }
                b'{' => {
                    depth += 1;
                    i += 1;
                }
                b'}' if depth > 0 => {
                    depth -= 1;
                    i += 1;
                }
                b'}' if b[i..].starts_with(b"}}") => {
                    i += 2;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    changed.then(|| out + &src[last.min(src.len())..])
}

/// Adds the play's globals: `lookup()`, `query()` and `q()`.
fn add_lookups(env: &mut Environment<'static>) {
    env.add_function("lookup", |st: &State<'_, '_>, args: Rest<JValue>| {
        call_lookup(st, &args, false)
    });
    for q in ["query", "q"] {
        env.add_function(q, |st: &State<'_, '_>, args: Rest<JValue>| {
            call_lookup(st, &args, true)
        });
    }
}

impl Templar {
    /// An engine with Ansible's filters, tests and lookups, strict
    /// undefined, `trim_blocks` (as ansible-core's environment).
    pub fn new() -> Self {
        // Jinja drops the source's last newline; string results get the
        // source's trailing newlines back ([`Templar::value`]).
        Self::with_plugins(None)
    }

    /// An engine that also serves, through `plugins`, the filter, test
    /// and lookup plugins it does not implement (`None`: those fail).
    pub fn with_plugins(plugins: Option<Arc<PluginHost>>) -> Self {
        let mut env = jinja::environment();
        add_lookups(&mut env);
        let base = Arc::new(env);
        Self {
            current: Arc::new(parking_lot::RwLock::new((0, base.clone()))),
            base,
            plugins,
        }
    }

    /// The plugin host, if this engine has one.
    pub fn plugins(&self) -> Option<&Arc<PluginHost>> {
        self.plugins.as_ref()
    }

    /// The environment to render in: the base one with a proxy for every
    /// plugin the host has found (rebuilt when it found another).
    fn env(&self) -> Arc<Environment<'static>> {
        let Some(host) = &self.plugins else {
            return self.base.clone();
        };
        let g = host.generation();
        {
            let cur = self.current.read();
            if cur.0 == g {
                return cur.1.clone();
            }
        }
        let mut env = (*self.base).clone();
        crate::plugins::register(&mut env, host);
        let env = Arc::new(env);
        *self.current.write() = (g, env.clone());
        env
    }

    /// Runs `run` in `env`. A filter or test that `env` lacks may be a
    /// plugin nobody asked the host for yet (only what the playbook's
    /// parse saw was resolved: `assert: that:` and `debug: var=` are
    /// read at run time): the host resolves the names in `src`, and `run`
    /// goes once more in the environment rebuilt with them.
    fn attempt<T>(
        &self,
        env: &Environment<'static>,
        own: bool,
        src: &str,
        ctx: &JValue,
        form: Form,
        run: impl Fn(&Environment<'static>) -> Result<T, JError>,
    ) -> Result<T, Failed> {
        let e = match run(env) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let unknown = matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest);
        // Only this engine's own environment is made again (`own`; not
        // one made by `with_options`, whose syntax differs), and only if it
        // is not the newest already (another thread may have found the
        // names first).
        if let (true, true, Some(host)) = (unknown, own, &self.plugins) {
            if check_names(src, Some(host)).is_ok() {
                let newest = self.env();
                if !std::ptr::eq(&*newest, env) {
                    return run(&newest).map_err(|e| fail(&newest, ctx, src, &e, form));
                }
            }
        }
        Err(fail(env, ctx, src, &e, form))
    }

    /// `vars` as a mapping object whose values are templated on access
    /// (`hostvars[host]`).
    pub(crate) fn lazy(&self, vars: Vars) -> JValue {
        self.scope(vars, 0, Role::Host)
    }

    /// `vars` as a dict whose values are templated on access, `depth`
    /// templatings deep already (the `vars` lookup).
    pub(crate) fn lazy_at(&self, vars: Vars, depth: usize) -> JValue {
        self.scope(vars, depth, Role::Vars)
    }

    fn scope(&self, vars: Vars, depth: usize, role: Role) -> JValue {
        JValue::from_object(Scope {
            vars,
            templar: self.clone(),
            depth,
            role,
        })
    }

    /// The engine with other delimiters and `trim_blocks` (the `template`
    /// lookup's options).
    pub(crate) fn with_options(
        &self,
        syntax: &Syntax,
        trim_blocks: bool,
    ) -> Result<Environment<'static>, TemplateError> {
        let mut env = (*self.env()).clone();
        syntax.apply(&mut env)?;
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
    ) -> Result<Value, Failed> {
        let mine = self.env();
        let own = env.is_none();
        let (env, plain) = env.unwrap_or((&mine, true));
        self.render_in(env, own, plain, false, text, vars, depth)
    }

    fn ctx(&self, vars: &Vars, depth: usize) -> JValue {
        self.scope(vars.clone(), depth, Role::Context)
    }

    /// Templates every string in `v`.
    ///
    /// # Errors
    /// Undefined variables, syntax errors, filter failures, with
    /// ansible-core's messages.
    pub fn value(&self, v: &Value, vars: &Vars) -> Result<Value, TemplateError> {
        let _notes = undefined::Fresh::begin();
        self.value_at(v, vars, 0)
    }

    fn value_at(&self, v: &Value, vars: &Vars, depth: usize) -> Result<Value, TemplateError> {
        match v {
            Value::String(s) if is_template(s) => {
                Ok(self.render_in(&self.env(), true, true, true, s, vars, depth)?)
            }
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

    /// Renders `s` in `env` (`own`: this engine's, not one from
    /// [`Templar::with_options`]); `escape`: play data, whose `{{ }}`
    /// string literals keep their backslashes ([`escape_backslashes`]).
    #[allow(clippy::too_many_arguments)]
    fn render_in(
        &self,
        env: &Environment<'static>,
        own: bool,
        plain_syntax: bool,
        escape: bool,
        s: &str,
        vars: &Vars,
        depth: usize,
    ) -> Result<Value, Failed> {
        let escaped = if escape { escape_backslashes(s) } else { None };
        let s = escaped.as_deref().unwrap_or(s);
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
        let ctx = self.ctx(vars, depth);
        let v = match native {
            Some(expr) => self.eval(env, own, expr, &ctx, Form::TemplateExpression)?,
            None => Value::String(self.attempt(env, own, s, &ctx, Form::Template, |env| {
                env.render_str(s, &ctx)
            })?),
        };
        // ansible-core's `preserve_trailing_newlines`: a string result gets
        // back the source's trailing newlines it lost (`"{{ x }}\n"` is
        // `x` and a newline), whether one expression made it or not.
        Ok(match v {
            Value::String(r) => {
                let (want, have) = (trailing_newlines(s), trailing_newlines(&r));
                Value::String(if want > have {
                    r + &"\n".repeat(want - have)
                } else {
                    r
                })
            }
            other => other,
        })
        // Only a variable's value is a template (templated when it is
        // read); what a template produced is not templated again.
    }

    /// The value of the bare expression `expr` (undefined, or holding an
    /// undefined value, fails).
    fn eval(
        &self,
        env: &Environment<'static>,
        own: bool,
        expr: &str,
        ctx: &JValue,
        form: Form,
    ) -> Result<Value, Failed> {
        let v = self.attempt(env, own, expr, ctx, form, |env| {
            env.compile_expression(expr).and_then(|e| e.eval(ctx))
        })?;
        if undefined::holds_undefined(&v) {
            return Err(undefined_value(env, ctx, expr));
        }
        serde_json::to_value(&v).map_err(|e| Failed {
            msg: e.to_string(),
            undefined: false,
        })
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
                let _notes = undefined::Fresh::begin();
                let ctx = self.ctx(vars, 0);
                let env = self.env();
                let v = self.attempt(&env, true, expr, &ctx, Form::Expression, |env| {
                    env.compile_expression(expr).and_then(|e| e.eval(&ctx))
                })?;
                if v.is_undefined() {
                    return Err(undefined_value(&env, &ctx, expr).into());
                }
                // A string result that is a template again (a variable
                // holding "{{ x }}") is resolved like any other value.
                if let Some(st) = v.as_str() {
                    if is_template(st) {
                        let t = self.value_at(&Value::String(st.to_owned()), vars, 0)?;
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
        let _notes = undefined::Fresh::begin();
        Ok(self.eval(
            &self.env(),
            true,
            expr,
            &self.ctx(vars, 0),
            Form::Expression,
        )?)
    }

    /// `debug: var=`'s value, as ansible-core's `ReplacingMarkerBehavior`
    /// gives it: what is undefined (the whole value, or the items of a
    /// variable whose own templates fail) is a `<< error N - why >>`
    /// placeholder, and each is a warning on `vars`.
    ///
    /// # Errors
    /// Anything but an undefined value (a syntax error).
    pub fn debug_var(&self, expr: &str, vars: &Vars) -> Result<Value, TemplateError> {
        let _notes = undefined::Fresh::begin();
        let mut errors = Vec::new();
        let bare = !expr.is_empty() && expr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let v = match vars.get(expr) {
            Some(raw) if bare && (raw.is_array() || raw.is_object()) && has_template(raw) => {
                self.replacing(raw, vars, &mut errors)?
            }
            _ => match self.eval(
                &self.env(),
                true,
                expr,
                &self.ctx(vars, 0),
                Form::Expression,
            ) {
                Ok(v) => v,
                Err(f) if f.undefined && !f.msg.contains(UNDECRYPTABLE_MSG) => {
                    marker(&mut errors, expr, f.msg)
                }
                Err(f) => return Err(undecryptable_failure(f).into()),
            },
        };
        let mut rest = &errors[..];
        let mut n = 0;
        while let Some((src, _)) = rest.first() {
            let k = rest.iter().take_while(|(s, _)| s == src).count();
            let mut msg = format!(
                "Encountered {k} template error{}.",
                if k > 1 { "s" } else { "" }
            );
            for (_, why) in &rest[..k] {
                n += 1;
                msg.push_str(&format!("\nerror {n} - {why}"));
            }
            vars.warn(msg);
            rest = &rest[k..];
        }
        Ok(v)
    }

    /// `v` templated leaf by leaf, an undefined leaf a placeholder.
    fn replacing(
        &self,
        v: &Value,
        vars: &Vars,
        errors: &mut Vec<(String, String)>,
    ) -> Result<Value, TemplateError> {
        Ok(match v {
            Value::String(s) if is_template(s) => {
                match self.render_in(&self.env(), true, true, true, s, vars, 1) {
                    Ok(x) => x,
                    Err(f) if f.undefined && !f.msg.contains(UNDECRYPTABLE_MSG) => {
                        marker(errors, s, f.msg)
                    }
                    Err(f) => return Err(undecryptable_failure(f).into()),
                }
            }
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.replacing(x, vars, errors))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.replacing(x, vars, errors)?);
                }
                Value::Object(m)
            }
            other => other.clone(),
        })
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
                self.env()
                    .compile_expression(e)
                    .map_err(|e| TemplateError::from(e).0)?;
            }
            return check_names(e, self.plugins.as_deref());
        }
        if !is_template(s) {
            return Ok(());
        }
        let escaped = escape_backslashes(s);
        let s = escaped.as_deref().unwrap_or(s);
        self.env()
            .template_from_str(s)
            .map_err(|e| TemplateError::from(e).0)?;
        check_template_names(s, self.plugins.as_deref())
    }
}

/// The error for a failed render of `source`, as ansible-core words it.
fn fail(env: &Environment<'_>, ctx: &JValue, source: &str, e: &JError, form: Form) -> Failed {
    Failed {
        msg: jinja::failure_message(env, ctx, source, e, form),
        undefined: e.kind() == ErrorKind::UndefinedError,
    }
}

/// The error for an expression whose value is (or holds) undefined.
fn undefined_value(env: &Environment<'_>, ctx: &JValue, expr: &str) -> Failed {
    Failed {
        msg: undefined::explain(env, ctx, expr, None, true).unwrap_or_else(|| {
            format!(
                "{} is undefined",
                mitogen_ansible::pycompat::py_repr(&Value::String(expr.to_owned()))
            )
        }),
        undefined: true,
    }
}

/// What reading a vault value no secret decrypts says.
const UNDECRYPTABLE_MSG: &str = "Attempt to use undecryptable variable";

/// ansible-core fails `debug: var=` on an undecryptable value (it is not
/// an undefined one, which would be a placeholder and a warning).
fn undecryptable_failure(mut f: Failed) -> Failed {
    if let Some(i) = f.msg.find(UNDECRYPTABLE_MSG) {
        f.msg = format!("Error rendering expression: {}", &f.msg[i..]);
        f.undefined = false;
    }
    f
}

/// Records an undefined value of the template `src` and returns its
/// placeholder (numbered from 1 in the order met).
fn marker(errors: &mut Vec<(String, String)>, src: &str, why: String) -> Value {
    let s = format!("<< error {} - {why} >>", errors.len() + 1);
    errors.push((src.to_owned(), why));
    Value::String(s)
}

/// `\n`s at the end of `s` (ansible-core's `_count_newlines_from_end`).
fn trailing_newlines(s: &str) -> usize {
    s.bytes().rev().take_while(|&b| b == b'\n').count()
}

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
    super::lookup::invoke(name, terms, kw, force_list, &cx).map_err(jinja::Failure::error)
}

fn jerr(msg: impl Into<String>) -> JError {
    JError::new(ErrorKind::InvalidOperation, msg.into())
}

/// What a play gives the `template` action ([`TemplateHook`]): the task's
/// variables, templated on access (with `hostvars` and `vars`), the
/// `template_*` variables over them, `lookup`/`query`/`q` with the task's
/// search paths (`files/` of the role, then the play's), and the task's
/// `ansible_search_path` for the template and its includes.
///
/// ```
/// use mitogen_ansible::Task;
/// use mitogen_play::template::{PlayHook, Templar, Vars};
/// use serde_json::json;
/// use std::sync::Arc;
///
/// let mut vars = Vars::new();
/// vars.push_one("port", json!(8080));
/// let task = Task::new("ansible.builtin.template")
///     .args(json!({"src": "site.conf.j2", "dest": "/etc/site.conf"}))
///     .template_hook(Arc::new(PlayHook::new(&Templar::new(), &vars)));
/// # let _ = task;
/// ```
#[derive(Debug, Clone)]
pub struct PlayHook {
    templar: Templar,
    vars: Vars,
}

impl PlayHook {
    /// The hook for a task whose variables are `vars`.
    pub fn new(templar: &Templar, vars: &Vars) -> Self {
        Self {
            templar: templar.clone(),
            vars: vars.clone(),
        }
    }
}

impl TemplateHook for PlayHook {
    fn prepare(&self, source: &str) {
        // Finds the Python filters and tests the file names; one neither
        // side has fails where it is used, with minijinja's message.
        let _ = check_template_names(source, self.templar.plugins.as_deref());
    }

    fn add_globals(&self, env: &mut Environment<'static>) {
        add_lookups(env);
        if let Some(h) = &self.templar.plugins {
            crate::plugins::register(env, h);
        }
    }

    fn variables(&self, template_vars: &Map<String, Value>) -> Option<JValue> {
        let mut vars = self.vars.clone();
        vars.push(Arc::new(template_vars.clone()));
        Some(self.ctx_of(vars))
    }

    fn find_needle(&self, dirname: &str, needle: &str) -> Option<Result<PathBuf, Vec<PathBuf>>> {
        Some(
            super::lookup::find_needle(&self.vars, dirname, needle)
                .map(PathBuf::from)
                .map_err(|tried| tried.into_iter().map(PathBuf::from).collect()),
        )
    }

    fn search_path(&self) -> Vec<PathBuf> {
        super::lookup::search_path(&self.vars)
            .into_iter()
            .map(PathBuf::from)
            .collect()
    }
}

impl PlayHook {
    fn ctx_of(&self, vars: Vars) -> JValue {
        self.templar.ctx(&vars, 0)
    }
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
fn check_template_names(src: &str, plugins: Option<&PluginHost>) -> Result<(), String> {
    for c in BLOCK_RE.captures_iter(src) {
        let inner = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        check_names(inner, plugins)?;
    }
    Ok(())
}

/// Whether the plugin host (if any) has plugin `name` of `kind`; the
/// error says why not.
fn hosted(plugins: Option<&PluginHost>, kind: Kind, name: &str) -> Result<(), String> {
    let what = kind.as_str();
    match plugins.map(|p| p.resolve(kind, name)) {
        Some(Ok(Some(_))) => Ok(()),
        Some(Ok(None)) | None => Err(format!("unsupported {what} '{name}'")),
        Some(Err(e)) => Err(format!("unsupported {what} '{name}' ({e})")),
    }
}

fn check_names(src: &str, plugins: Option<&PluginHost>) -> Result<(), String> {
    for c in LOOKUP_RE.captures_iter(src) {
        let name = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        if !super::lookup::exists(name) {
            hosted(plugins, Kind::Lookup, name)?;
        }
    }
    let code = STR_RE.replace_all(src, "''");
    for c in FILTER_RE.captures_iter(&code) {
        let name = &c[1];
        if !jinja::is_filter(name) {
            hosted(plugins, Kind::Filter, name)?;
        }
    }
    for c in TEST_RE.captures_iter(&code) {
        let name = &c[1];
        if !jinja::is_test(name) {
            hosted(plugins, Kind::Test, name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn single_expressions_with_braces_inside() {
        assert_eq!(
            single_expression("{{ a | combine({'x': {'b': 9}}) }}"),
            Some("a | combine({'x': {'b': 9}})")
        );
        assert_eq!(single_expression("{{ '}}' }}"), Some("'}}'"));
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("{{ a }}{{ b }}"), None);
        assert_eq!(single_expression("{{ a }}{% if x %}{% endif %}"), None);
    }

    #[test]
    fn play_literals_keep_backslashes() {
        let e = |s: &str| escape_backslashes(s);
        assert_eq!(e("{{ x }}"), None);
        assert_eq!(e(r"a\b {{ x }}"), None);
        assert_eq!(e(r"{{ '\1' }}").as_deref(), Some(r"{{ '\\1' }}"));
        assert_eq!(e(r#"{{ "it\"s" }}"#).as_deref(), Some(r#"{{ "it\\\"s" }}"#));
        assert_eq!(
            e(r"{% set y = '\n' %}{{ '\d' ~ y }}").as_deref(),
            Some(r"{% set y = '\n' %}{{ '\\d' ~ y }}")
        );
        assert_eq!(
            e(r"{% raw %}{{ '\1' }}{% endraw %}{{ '\2' }}").as_deref(),
            Some(r"{% raw %}{{ '\1' }}{% endraw %}{{ '\\2' }}")
        );
        let t = Templar::new();
        let v = vars(serde_json::json!({}));
        let one = |s: &str| t.value(&Value::String(s.into()), &v).unwrap();
        assert_eq!(one(r"{{ '\1' | length }}"), 2);
        assert_eq!(one(r"{{ '\n' | length }}"), 2);
        assert_eq!(
            one(r"{{ 'a[b]c' | regex_replace('\[(.)\]', '[\1]') }}"),
            "a[b]c"
        );
        // Conditionals keep Jinja's escapes (ansible-core disables them there).
        assert!(
            t.cond(&Value::String(r"'\n' | length == 1".into()), &v)
                .unwrap()
        );
    }

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
        // ansible-core 2.19 (checked): the literal keeps both backslashes,
        // so `re.sub` sees `\\\\2`, an escaped backslash.
        assert_eq!(
            t.value(
                &json!("{{ 'a-b' | regex_replace('(a)-(b)', '\\\\2\\\\1') }}"),
                &v
            )
            .unwrap(),
            json!("\\2\\1")
        );
        assert_eq!(
            t.value(
                &json!("{{ 'a-b' | regex_replace('(a)-(b)', '\\2\\1') }}"),
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
    }
}
