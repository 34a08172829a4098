//! Why a value is undefined, for ansible-core 2.19's messages:
//! `'foo' is undefined` for a variable, `object of type 'dict' has no
//! attribute 'bar'` for a missing key or attribute, `hostvars['x']` for a
//! host the inventory lacks.
//!
//! minijinja's undefined value carries no name, so what produced one
//! says why here, when it does: the variable objects (the play's scope,
//! [`Dict`] and [`List`], which every variable's value becomes through
//! [`to_value`]) note a miss as it happens, and what handles an undefined
//! value (`default`, `is defined`, `.get()`) forgets the note. A render
//! runs on one thread from start to end, so the notes are per thread,
//! from a [`Fresh`] list per top-level render.
//!
//! When a render fails, [`explain`] reads the failing expression's source
//! first: an attribute chain from a variable (`item.nope`, `d.a.b`) is
//! walked again to the step that fails, which also finds misses on
//! values that cannot note them (`object of type 'int' has no attribute
//! 'b'`); otherwise the last note stands.

use super::py_type;
use crate::pycompat::py_repr;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value as JValue, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Notes kept per render (the oldest go first).
const MAX_NOTES: usize = 64;
/// Containers deeper than this are not searched for undefined values.
const MAX_DEPTH: usize = 64;

/// Why one value is undefined.
#[derive(Debug, Clone)]
pub struct Note {
    /// The missing variable or key (`mandatory` names it).
    pub name: Option<String>,
    /// A variable of the context: not undefined after all if a global of
    /// that name exists (`lookup`, `range`: the context is asked first).
    var: bool,
    /// ansible-core's message.
    pub msg: String,
}

thread_local! {
    static NOTES: RefCell<Vec<Note>> = const { RefCell::new(Vec::new()) };
}

fn push(n: Note) {
    NOTES.with(|v| {
        let mut v = v.borrow_mut();
        // One lookup may ask the context once per frame: one note.
        if v.last().is_some_and(|l| l.msg == n.msg) {
            return;
        }
        if v.len() >= MAX_NOTES {
            v.remove(0);
        }
        v.push(n);
    });
}

fn len() -> usize {
    NOTES.with(|v| v.borrow().len())
}

/// The variable `name` is not in the context.
pub fn note_var(name: &str) {
    push(Note {
        name: Some(name.to_owned()),
        var: true,
        msg: format!("{} is undefined", py_repr(&Value::String(name.to_owned()))),
    });
}

/// `key` is missing from a value of Python type `type_name`.
pub fn note_missing(type_name: &str, key: &JValue) {
    push(Note {
        name: Some(key.as_str().map_or_else(|| key.to_string(), str::to_owned)),
        var: false,
        msg: format!(
            "object of type '{type_name}' has no attribute {}",
            key_repr(key)
        ),
    });
}

/// A value is undefined for this reason (a lookup's, a failed nested
/// template's).
pub fn note(msg: String) {
    push(Note {
        name: None,
        var: false,
        msg,
    });
}

/// The template handled the last undefined value: forgets (and returns)
/// why it was undefined.
pub fn consumed() -> Option<Note> {
    NOTES.with(|v| v.borrow_mut().pop())
}

/// Why the last undefined value is undefined (a variable note is skipped
/// when `env` has a global of that name).
pub fn last(env: &Environment<'_>) -> Option<String> {
    NOTES.with(|v| {
        v.borrow()
            .iter()
            .rev()
            .find(|n| {
                !(n.var
                    && n.name
                        .as_deref()
                        .is_some_and(|g| env.globals().any(|(k, _)| k == g)))
            })
            .map(|n| n.msg.clone())
    })
}

/// A point in the notes, to forget what was noted since (what handles a
/// missing key itself, as `.get()`).
#[derive(Debug)]
pub struct Mark(usize);

impl Mark {
    /// A mark at the notes made so far.
    pub fn now() -> Self {
        Self(len())
    }

    /// Forgets the notes made since this mark.
    pub fn rewind(self) {
        NOTES.with(|v| v.borrow_mut().truncate(self.0));
    }
}

/// An empty list of notes for one top-level render; the previous list
/// comes back when this is dropped.
#[derive(Debug)]
pub struct Fresh(Vec<Note>);

impl Fresh {
    /// Starts an empty list (for this thread) until the value is dropped.
    pub fn begin() -> Self {
        Self(NOTES.with(|v| std::mem::take(&mut *v.borrow_mut())))
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let old = std::mem::take(&mut self.0);
        NOTES.with(|v| *v.borrow_mut() = old);
    }
}

/// Jinja's `repr` of a key in a message: `'k'`, `5`.
fn key_repr(key: &JValue) -> String {
    match key.kind() {
        ValueKind::String => py_repr(&Value::String(key.as_str().unwrap_or("").to_owned())),
        _ => key.to_string(),
    }
}

/// Whether `v` is undefined or a list or dict holding an undefined value
/// (which minijinja would print as `undefined`, and Jinja fails on).
pub fn holds_undefined(v: &JValue) -> bool {
    fn go(v: &JValue, depth: usize) -> bool {
        if v.is_undefined() {
            return true;
        }
        if depth >= MAX_DEPTH {
            return false;
        }
        match v.kind() {
            ValueKind::Seq => v
                .try_iter()
                .is_ok_and(|mut it| it.any(|x| go(&x, depth + 1))),
            ValueKind::Map => v.as_object().is_some_and(|o| {
                o.try_iter_pairs()
                    .is_some_and(|mut it| it.any(|(_, x)| go(&x, depth + 1)))
            }),
            _ => false,
        }
    }
    go(v, 0)
}

/// Why a render of `source` failed with `err`, or why its value is
/// undefined (`err` `None`), as ansible-core says it; `None` when nothing
/// said. `ctx` is the render's context; `expression`: `source` is a bare
/// expression (no delimiters), so it is read whole when `err` has no span.
pub fn explain(
    env: &Environment<'_>,
    ctx: &JValue,
    source: &str,
    err: Option<&JError>,
    expression: bool,
) -> Option<String> {
    if err.is_some_and(|e| e.kind() != ErrorKind::UndefinedError) {
        return None;
    }
    let text = match err.and_then(JError::range) {
        Some(r) => source.get(extend_left(source, r.start)..r.end),
        None if expression => Some(source),
        None => None,
    };
    if let Some(msg) = text.and_then(|t| chains(t).iter().find_map(|c| walk(ctx, c))) {
        return Some(msg);
    }
    last(env)
}

/// The start of the attribute chain whose part begins at `start` (a
/// failing span may start at `.b` of `d.a.b`).
fn extend_left(source: &str, start: usize) -> usize {
    let b = source.as_bytes();
    let mut i = start.min(b.len());
    while i > 0 {
        let c = b[i - 1];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            i -= 1;
        } else if c == b']' {
            match source[..i - 1].rfind('[') {
                Some(j) => i = j,
                None => break,
            }
        } else {
            break;
        }
    }
    i
}

/// One step of an attribute chain.
#[derive(Debug, PartialEq)]
enum Step {
    Attr(String),
    Item(JValue),
}

/// `root.a['b'][0]`: a variable and literal steps.
#[derive(Debug, PartialEq)]
struct Chain {
    root: String,
    steps: Vec<Step>,
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "is", "in", "if", "else", "true", "false", "none", "True", "False", "None",
    "loop",
];

/// The attribute chains (at least one step, literal keys) in an
/// expression's text, in order; names after `|` (filters), `is`
/// (tests) and `.` are no roots, and a call ends a chain before the
/// called name.
fn chains(text: &str) -> Vec<Chain> {
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let (mut i, mut prev) = (0, 0u8);
    let mut words: [&str; 2] = ["", ""];
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            i = skip_string(b, i);
            prev = c;
            continue;
        }
        if c.is_ascii_digit() {
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
            prev = b'0';
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_') {
            if !c.is_ascii_whitespace() {
                prev = c;
                words = ["", ""];
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let name = &text[start..i];
        let is_root = prev != b'.'
            && prev != b'|'
            && words[0] != "is"
            && !(words[0] == "not" && words[1] == "is")
            && !KEYWORDS.contains(&name);
        let mut steps = Vec::new();
        loop {
            if b.get(i) == Some(&b'.')
                && b.get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            {
                let s = i + 1;
                i = s;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                steps.push(Step::Attr(text[s..i].to_owned()));
            } else if b.get(i) == Some(&b'[') {
                match literal_key(text, i + 1) {
                    Some((key, end)) => {
                        steps.push(Step::Item(key));
                        i = end;
                    }
                    None => break,
                }
            } else {
                break;
            }
        }
        if b.get(i) == Some(&b'(') {
            // `d.keys()`: the method is no step; `lookup(...)`: no root.
            if steps.pop().is_none() {
                words = [name, words[0]];
                prev = b'a';
                continue;
            }
        }
        if is_root && !steps.is_empty() {
            out.push(Chain {
                root: name.to_owned(),
                steps,
            });
        }
        words = [name, words[0]];
        prev = b'a';
    }
    out
}

/// The index past the string literal starting at `i`.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != q {
        j += if b[j] == b'\\' { 2 } else { 1 };
    }
    (j + 1).min(b.len())
}

/// `'k']`, `"k"]`, `-1]` from `i`: the key and the index past `]`.
fn literal_key(text: &str, i: usize) -> Option<(JValue, usize)> {
    let b = text.as_bytes();
    let mut s = i;
    while b.get(s).is_some_and(u8::is_ascii_whitespace) {
        s += 1;
    }
    let (key, mut e) = match *b.get(s)? {
        q @ (b'\'' | b'"') => {
            let end = skip_string(b, s);
            let inner = text.get(s + 1..end - 1)?;
            if inner.contains('\\') || b.get(end - 1) != Some(&q) {
                return None;
            }
            (JValue::from(inner), end)
        }
        _ => {
            let mut e = s;
            while b.get(e).is_some_and(|c| c.is_ascii_digit() || *c == b'-') {
                e += 1;
            }
            (JValue::from(text.get(s..e)?.parse::<i64>().ok()?), e)
        }
    };
    while b.get(e).is_some_and(u8::is_ascii_whitespace) {
        e += 1;
    }
    (b.get(e) == Some(&b']')).then_some((key, e + 1))
}

/// Walks `c` from the context: the message for the step that is missing
/// (what the value noted itself, else Jinja's for its type).
fn walk(ctx: &JValue, c: &Chain) -> Option<String> {
    let _own = Fresh::begin();
    let mut cur = ctx.get_attr(&c.root).ok()?;
    if cur.is_undefined() {
        return None;
    }
    for s in &c.steps {
        let before = len();
        let (next, key) = match s {
            Step::Attr(a) => (cur.get_attr(a), JValue::from(a.as_str())),
            Step::Item(k) => (cur.get_item(k), k.clone()),
        };
        match next {
            Ok(v) if !v.is_undefined() => cur = v,
            _ => {
                let noted =
                    NOTES.with(|v| v.borrow().get(before..).and_then(|n| n.last().cloned()));
                return Some(noted.map_or_else(
                    || {
                        format!(
                            "object of type '{}' has no attribute {}",
                            py_type(&cur),
                            key_repr(&key)
                        )
                    },
                    |n| n.msg,
                ));
            }
        }
    }
    None
}

/// `v` as a template value whose dicts and lists note their misses.
pub fn to_value(v: &Value) -> JValue {
    match v {
        Value::Object(m) => JValue::from_object(Dict::new(
            m.iter()
                .map(|(k, x)| (JValue::from(k.as_str()), to_value(x)))
                .collect(),
        )),
        Value::Array(a) => JValue::from_object(List(a.iter().map(to_value).collect())),
        other => JValue::from_serialize(other),
    }
}

/// `vars` as a template's whole context: a name it lacks is an undefined
/// variable (`'x' is undefined`).
#[cfg(test)]
pub fn context(vars: &serde_json::Map<String, Value>) -> JValue {
    let mut d = Dict::new(
        vars.iter()
            .map(|(k, x)| (JValue::from(k.as_str()), to_value(x)))
            .collect(),
    );
    d.context = true;
    JValue::from_object(d)
}

/// Dicts with more keys than this are looked up through an index.
const LINEAR: usize = 16;

/// A dict from a variable: a key it lacks is noted.
#[derive(Debug)]
pub struct Dict {
    items: Vec<(JValue, JValue)>,
    index: Option<HashMap<String, usize>>,
    /// A template's context: misses are variables.
    context: bool,
}

impl Dict {
    fn new(items: Vec<(JValue, JValue)>) -> Self {
        let index = (items.len() > LINEAR).then(|| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, (k, _))| k.as_str().map(|k| (k.to_owned(), i)))
                .collect()
        });
        Self {
            items,
            index,
            context: false,
        }
    }

    fn find(&self, key: &str) -> Option<&JValue> {
        match &self.index {
            Some(ix) => ix.get(key).map(|&i| &self.items[i].1),
            None => self
                .items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
        }
    }
}

impl Object for Dict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let v = key.as_str().and_then(|k| self.find(k)).cloned();
        if v.is_none() {
            match key.as_str() {
                Some(k) if self.context => note_var(k),
                _ => note_missing("dict", key),
            }
        }
        v
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items.iter().map(|(k, _)| k.clone()).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A list from a variable: an index it lacks is noted.
#[derive(Debug)]
pub struct List(Vec<JValue>);

impl Object for List {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let v = key.as_usize().and_then(|i| self.0.get(i)).cloned();
        if v.is_none() {
            note_missing("list", key);
        }
        v
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.0.len())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_in_expressions() {
        let c = chains("d.a.b == 1 and x | upper is not s.y and f(q.r) and m.keys() and l[0]['k']");
        let roots: Vec<&str> = c.iter().map(|c| c.root.as_str()).collect();
        assert_eq!(roots, ["d", "q", "l"]);
        assert_eq!(
            c[2].steps,
            [Step::Item(JValue::from(0)), Step::Item(JValue::from("k"))]
        );
        assert!(chains("'a.b' ~ lookup('x').y").is_empty());
        assert_eq!(extend_left("{{ d.a.b.c }}", 6), 3);
        assert_eq!(extend_left("{{ h['x'].y }}", 9), 3);
    }
}
