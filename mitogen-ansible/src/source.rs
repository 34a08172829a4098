//! Where modules come from (the controller's ansible-core install,
//! collections, `library/` dirs, raw bytes) and what style each one is,
//! detected with ansible-core's markers in ansible-core's order.

use crate::error::Error;
use crate::pycompat::shlex_split;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const FINDER: &str = include_str!("py/finder.py");

/// Part of a cached payload's key: a changed finder recomputes.
static FINDER_SHA256: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| cache::sha256_hex(FINDER.as_bytes()));

/// How a module is run, as ansible-core's `_find_module_utils` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Style {
    /// New-style Python (AnsiballZ): runs in the warm fork server.
    NewPython,
    /// `<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>`: args substituted into the source.
    JsonArgs,
    /// `WANT_JSON`: a JSON args file as argv\[1\].
    WantJson,
    /// Old-style: a `key=value` args file as argv\[1\].
    Old,
    /// A binary: a JSON args file as argv\[1\], no interpreter.
    Binary,
    /// PowerShell (detected so it can be refused: Windows only).
    PowerShell,
}

impl Style {
    /// Detects the style of module bytes: ansible-core's tests, in its order.
    pub fn detect(data: &[u8]) -> Self {
        if is_binary(data) {
            Self::Binary
        } else if contains(data, b"#<<INCLUDE_ANSIBLE_MODULE_COMMON>>") || new_style_python(data) {
            Self::NewPython
        } else if contains(data, b"# POWERSHELL_COMMON") || powershell_requires(data) {
            Self::PowerShell
        } else if contains(data, b"<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>") {
            Self::JsonArgs
        } else if contains(data, b"WANT_JSON") {
            Self::WantJson
        } else {
            Self::Old
        }
    }
}

/// `_is_binary`: any byte outside {7,8,9,10,12,13,27} ∪ 0x20..=0xFF minus 0x7F
/// in the first 1024 bytes.
fn is_binary(data: &[u8]) -> bool {
    data.iter()
        .take(1024)
        .any(|&b| !(matches!(b, 7 | 8 | 9 | 10 | 12 | 13 | 27) || (b >= 0x20 && b != 0x7f)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `NEW_STYLE_PYTHON_MODULE_RE`, written out by hand (no regex dependency).
fn new_style_python(data: &[u8]) -> bool {
    // Regex alternatives, all unanchored, '.' not matching newline:
    //   from +\.{2,} *module_utils.* +import
    //   from +ansible_collections\.[^.]+\.[^.]+\.plugins\.module_utils.* +import
    //   import +ansible_collections\.[^.]+\.[^.]+\.plugins\.module_utils.*
    //   from +ansible\.module_utils.* +import
    //   import +ansible\.module_utils\.
    for line in data.split(|&b| b == b'\n') {
        let s = String::from_utf8_lossy(line);
        let mut rest = &s[..];
        while let Some(i) = find_kw(rest) {
            let after = &rest[i..];
            let is_from = after.starts_with("from");
            let tail = after[if is_from { 4 } else { 6 }..].to_owned();
            if let Some(t) = tail.strip_prefix(' ') {
                let t = t.trim_start_matches(' ');
                if is_from && matches_from(t) || !is_from && matches_import(t) {
                    return true;
                }
            }
            rest = &rest[i + 4..];
        }
    }
    false
}

fn find_kw(s: &str) -> Option<usize> {
    match (s.find("from "), s.find("import ")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// After `from +`: the module part, then ` +import ` somewhere later.
fn matches_from(t: &str) -> bool {
    let has_import_after = |s: &str| s.contains(" import ");
    if let Some(r) = t.strip_prefix("..") {
        let r = r.trim_start_matches('.').trim_start_matches(' ');
        if let Some(r) = r.strip_prefix("module_utils") {
            return has_import_after(r);
        }
        return false;
    }
    if let Some(r) = t.strip_prefix("ansible.module_utils") {
        return has_import_after(r);
    }
    if let Some(r) = t.strip_prefix("ansible_collections.") {
        return collection_mu(r).is_some_and(has_import_after);
    }
    false
}

fn matches_import(t: &str) -> bool {
    t.starts_with("ansible.module_utils.")
        || t.strip_prefix("ansible_collections.")
            .and_then(collection_mu)
            .is_some()
}

/// `[^.]+\.[^.]+\.plugins\.module_utils` at the start of `r`: the rest.
fn collection_mu(r: &str) -> Option<&str> {
    let mut parts = r.splitn(3, '.');
    let (ns, coll, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if ns.is_empty() || coll.is_empty() || ns.contains('\n') || coll.contains('\n') {
        return None;
    }
    rest.strip_prefix("plugins.module_utils")
}

fn powershell_requires(data: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(data).to_lowercase();
    lower.contains("#requires -module")
        || lower.contains("#requires -version")
        || [
            "#ansiblerequires -osversion",
            "#ansiblerequires -powershell",
            "#ansiblerequires -csharputil",
            "#ansiblerequires -wrapper",
        ]
        .iter()
        .any(|m| lower.contains(m))
}

/// The module's `#!` line split as ansible-core's `_extract_interpreter`:
/// interpreter and arguments, or `None` without a shebang.
pub(crate) fn extract_interpreter(data: &[u8]) -> Option<(String, Vec<String>)> {
    let first = data.split(|&b| b == b'\n').next()?;
    let line = first.strip_prefix(b"#!")?;
    let text = String::from_utf8_lossy(line);
    let mut words = shlex_split(text.trim())?;
    if words.is_empty() {
        return None;
    }
    let interp = words.remove(0);
    Some((interp, words))
}

/// A module found and read: everything needed to run it.
#[derive(Debug, Clone)]
pub struct Module {
    /// The name the task used (`ansible.builtin.ping`, `ping`, `my_mod`).
    pub name: String,
    /// The Python module name it runs as (`ansible.modules.ping`,
    /// `ansible.legacy.my_mod`, `ansible_collections.ns.c.plugins.modules.x`).
    pub fqn: String,
    /// Where it was found (`None` for raw bytes).
    pub path: Option<PathBuf>,
    /// Its bytes.
    pub data: Arc<Vec<u8>>,
    /// Its style.
    pub style: Style,
}

impl Module {
    /// The file name ansible-core gives it on the target: `AnsiballZ_<basename>`.
    pub fn remote_name(&self) -> String {
        let base = self
            .path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.fqn.rsplit('.').next().unwrap_or("module").to_owned());
        format!("AnsiballZ_{base}")
    }
}

/// A file of a new-style module's payload (module_utils and the module).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PayloadFile {
    pub(crate) rel: String,
    #[serde(default)]
    pub(crate) path: Option<PathBuf>,
    #[serde(default)]
    pub(crate) text: Option<String>,
    pub(crate) sha256: String,
}

#[derive(Deserialize)]
struct FinderReply {
    #[serde(default)]
    files: Vec<PayloadFile>,
    #[serde(default)]
    error: Option<String>,
}

/// Where to find modules and the module_utils they import.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    python: PathBuf,
    ansible_dir: PathBuf,
    version: String,
    /// `library/` dirs; shared by every clone, so one a role brings (added
    /// while a playbook is read) is searched by the runner too.
    library: Arc<parking_lot::RwLock<Vec<PathBuf>>>,
    collections: Vec<PathBuf>,
    raw: HashMap<String, Arc<Vec<u8>>>,
}

impl ModuleSource {
    /// Uses the ansible-core that `python` imports: asks it once where
    /// `ansible` lives and which version it is. The answer is kept in the
    /// controller cache (`~/.cache/mitogen-rs/ansible`) while the
    /// interpreter and ansible's `__init__.py`/`release.py` are unchanged,
    /// so later processes start no Python for it.
    ///
    /// # Errors
    /// [`Error::AnsibleCore`] if `python` cannot run or has no ansible-core.
    pub fn from_ansible_core(python: impl Into<PathBuf>) -> Result<Self, Error> {
        let python = python.into();
        let key = cache::core_key(&python);
        let core = match cache::load::<cache::Core>("core", &key) {
            Some(core) => core,
            None => {
                let core = Self::ask_python(&python)?;
                if let Some(inputs) = cache::core_inputs(&python, &core) {
                    cache::store("core", &key, inputs, &core);
                }
                core
            }
        };
        Ok(Self {
            python,
            ansible_dir: core.ansible_dir,
            version: core.version,
            library: Arc::default(),
            collections: Vec::new(),
            raw: HashMap::new(),
        })
    }

    fn ask_python(python: &Path) -> Result<cache::Core, Error> {
        let python = python.to_owned();
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, ansible, ansible.release; print(os.path.dirname(ansible.__file__)); print(ansible.release.__version__)",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::AnsibleCore {
                python: python.clone(),
                detail: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        match (out.status.success(), lines.next(), lines.next()) {
            (true, Some(dir), Some(ver)) => Ok(cache::Core {
                ansible_dir: PathBuf::from(dir),
                version: ver.trim().to_owned(),
            }),
            _ => Err(Error::AnsibleCore {
                python,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }),
        }
    }

    /// Adds a `library/` directory (searched before ansible-core's modules
    /// for short and `ansible.legacy.` names, as ansible-core does).
    pub fn library_dir(self, dir: impl Into<PathBuf>) -> Self {
        self.add_library_dir(dir);
        self
    }

    /// Adds a `library/` directory to this source and every clone of it,
    /// after those it has (ansible-core adds a role's `library/` when it
    /// loads the role, for the rest of the run). A directory it has
    /// already is not added again.
    pub fn add_library_dir(&self, dir: impl Into<PathBuf>) {
        let dir = dir.into();
        let mut l = self.library.write();
        if !l.contains(&dir) {
            l.push(dir);
        }
    }

    /// Adds a collections path (the directory holding `ansible_collections/`).
    pub fn collections_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.collections.push(dir.into());
        self
    }

    /// Registers a module given as bytes under `name` (found before anything else).
    pub fn raw_module(mut self, name: &str, data: impl Into<Vec<u8>>) -> Self {
        self.raw.insert(name.to_owned(), Arc::new(data.into()));
        self
    }

    /// The Python that ansible-core is imported from (ansible-playbook's
    /// `ansible_playbook_python`).
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The ansible-core version modules are told (`_ansible_version`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the ansible-core in use is `major.minor` or newer (where its
    /// action plugins changed what a result holds, the runner follows the
    /// release it runs with). A version it cannot read counts as newer.
    ///
    /// ```no_run
    /// let src = mitogen_ansible::ModuleSource::from_ansible_core("/venv/bin/python")?;
    /// if src.version_at_least(2, 20) {
    ///     println!("fetch results name the remote file");
    /// }
    /// # Ok::<(), mitogen_ansible::Error>(())
    /// ```
    pub fn version_at_least(&self, major: u32, minor: u32) -> bool {
        let mut parts = self.version.split('.').map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
        });
        match (parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
            _ => true,
        }
    }

    /// The `ansible` package directory in use.
    pub fn ansible_dir(&self) -> &Path {
        &self.ansible_dir
    }

    /// The action plugin ansible-core would run for a task naming `name`
    /// (in front of its module, or instead of one) when this crate does not
    /// implement it: ansible-core's own ones this runner refuses (`uri`,
    /// `unarchive`, ...), and any `plugins/action/<name>.py` of the
    /// module's collection (`ansible.posix.synchronize`). `None` when the
    /// task runs as ansible-core runs it. What it returns names the plugin.
    pub fn unsupported_action(&self, name: &str) -> Option<String> {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["ansible", "builtin" | "legacy", short] | [short] => UNSUPPORTED_ACTIONS
                .contains(short)
                .then(|| format!("ansible-core's action plugin '{short}' is not implemented by mitogen-ansible yet")),
            [ns, coll, short] => self.collections.iter().find_map(|c| {
                let root = c.join("ansible_collections").join(ns).join(coll);
                if !root.is_dir() {
                    return None;
                }
                let p = root.join("plugins/action").join(format!("{short}.py"));
                if p.is_file() {
                    return Some(format!(
                        "it has a Python action plugin ({}) that mitogen-ansible cannot run yet",
                        p.display()
                    ));
                }
                // meta/runtime.yml can route the action elsewhere
                // (`plugin_routing: action: NAME: redirect: ...`).
                routed_action(&root, short).then(|| {
                    format!(
                        "{}/meta/runtime.yml routes it to an action plugin that mitogen-ansible cannot run yet",
                        root.display()
                    )
                })
            }),
            _ => None,
        }
    }

    /// Finds module `name`: a FQCN (`ansible.builtin.x`, `ns.coll.x`),
    /// `ansible.legacy.x` or a short name.
    ///
    /// # Errors
    /// [`Error::UnknownModule`] with every path tried.
    pub fn find(&self, name: &str) -> Result<Module, Error> {
        if let Some(data) = self.raw.get(name) {
            return Ok(Module {
                name: name.to_owned(),
                fqn: format!("ansible.legacy.{name}"),
                path: None,
                style: Style::detect(data),
                data: data.clone(),
            });
        }
        let mut tried = Vec::new();
        let parts: Vec<&str> = name.split('.').collect();
        let builtin = |short: &str, tried: &mut Vec<PathBuf>| {
            let p = self.ansible_dir.join("modules").join(format!("{short}.py"));
            let found = p
                .is_file()
                .then(|| (p.clone(), format!("ansible.modules.{short}")));
            tried.push(p);
            found
        };
        let library = |short: &str, tried: &mut Vec<PathBuf>| {
            for dir in self.library.read().iter() {
                if let Some(p) = find_in_dir(dir, short, tried) {
                    return Some((p, format!("ansible.legacy.{short}")));
                }
            }
            None
        };
        let found = match parts.as_slice() {
            ["ansible", "builtin", short] => builtin(short, &mut tried),
            ["ansible", "legacy", short] | [short] => {
                library(short, &mut tried).or_else(|| builtin(short, &mut tried))
            }
            [ns, coll, short] => self.collections.iter().find_map(|c| {
                let dir = c
                    .join("ansible_collections")
                    .join(ns)
                    .join(coll)
                    .join("plugins/modules");
                find_in_dir(&dir, short, &mut tried).map(|p| {
                    (
                        p,
                        format!("ansible_collections.{ns}.{coll}.plugins.modules.{short}"),
                    )
                })
            }),
            _ => None,
        };
        let (path, fqn) = found.ok_or_else(|| Error::UnknownModule {
            name: name.to_owned(),
            tried: tried.clone(),
        })?;
        let data = std::fs::read(&path).map_err(|e| Error::ReadModule {
            path: path.clone(),
            source: e,
        })?;
        Ok(Module {
            name: name.to_owned(),
            fqn,
            style: Style::detect(&data),
            data: Arc::new(data),
            path: Some(path),
        })
    }

    /// The payload of a new-style module: the module and every module_utils
    /// file it imports, transitively (ansible-core's recursive finder,
    /// reimplemented in `py/finder.py` and run with the install's python).
    ///
    /// For a module read from a file, the answer is kept in the controller
    /// cache (`source/cache.rs`) while every file it names is unchanged.
    pub(crate) fn payload(&self, module: &Module) -> Result<Vec<PayloadFile>, Error> {
        let Some(path) = &module.path else {
            return self.find_payload(module);
        };
        let key = serde_json::json!({
            "finder": FINDER_SHA256.as_str(),
            "ansible_dir": self.ansible_dir,
            "collections": self.collections,
            "module": path,
            "fqn": module.fqn,
        })
        .to_string();
        if let Some(files) = cache::load::<Vec<PayloadFile>>("payload", &key) {
            return Ok(files);
        }
        let files = self.find_payload(module)?;
        if let Some(inputs) = cache::payload_inputs(&files) {
            cache::store("payload", &key, inputs, &files);
        }
        Ok(files)
    }

    fn find_payload(&self, module: &Module) -> Result<Vec<PayloadFile>, Error> {
        let rel = format!("{}.py", module.fqn.replace('.', "/"));
        let module_path = match &module.path {
            Some(p) => p.clone(),
            None => {
                // Raw bytes: the finder reads a file; give it one.
                let p = std::env::temp_dir().join(format!(
                    "mitogen-ansible-raw-{}-{}.py",
                    std::process::id(),
                    module.name
                ));
                std::fs::write(&p, &*module.data).map_err(|e| Error::ReadModule {
                    path: p.clone(),
                    source: e,
                })?;
                p
            }
        };
        let req = serde_json::json!({
            "ansible_dir": self.ansible_dir,
            "collections": self.collections,
            "module": module_path,
            "module_rel": rel,
        });
        let mut child = Command::new(&self.python)
            .args(["-c", FINDER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::AnsibleCore {
                python: self.python.clone(),
                detail: e.to_string(),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(req.to_string().as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| Error::AnsibleCore {
            python: self.python.clone(),
            detail: e.to_string(),
        })?;
        if module.path.is_none() {
            let _ = std::fs::remove_file(&module_path);
        }
        let reply: FinderReply =
            serde_json::from_slice(&out.stdout).map_err(|e| Error::AnsibleCore {
                python: self.python.clone(),
                detail: format!(
                    "module_utils finder: {e}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })?;
        if let Some(message) = reply.error {
            return Err(Error::ModuleUtils {
                module: module.name.clone(),
                message,
            });
        }
        let mut files = reply.files;
        if module.path.is_none() {
            // The finder read a temp copy: point the module entry back at the bytes.
            for f in &mut files {
                if f.rel == rel {
                    f.path = None;
                    f.text = Some(String::from_utf8_lossy(&module.data).into_owned());
                }
            }
        }
        Ok(files)
    }
}

/// `<dir>/<name>.py`, `<dir>/<name>`, then `<dir>/<name>.*`.
fn find_in_dir(dir: &Path, name: &str, tried: &mut Vec<PathBuf>) -> Option<PathBuf> {
    for cand in [dir.join(format!("{name}.py")), dir.join(name)] {
        let ok = cand.is_file();
        tried.push(cand.clone());
        if ok {
            return Some(cand);
        }
    }
    let entries = std::fs::read_dir(dir).ok()?;
    let mut hits: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_stem().and_then(|s| s.to_str()) == Some(name)
                && p.extension().is_some()
        })
        .collect();
    hits.sort();
    hits.into_iter().next()
}

mod cache;
/// Whether a collection's `meta/runtime.yml` names an action plugin for
/// `short` (`plugin_routing.action.<short>`).
fn routed_action(collection: &Path, short: &str) -> bool {
    let f = collection.join("meta/runtime.yml");
    let Ok(text) = std::fs::read_to_string(&f) else {
        return false;
    };
    let Ok(doc) = crate::yaml::parse_one(&text, &f) else {
        return false;
    };
    doc.get("plugin_routing")
        .and_then(|r| r.get("action"))
        .and_then(|a| a.get(short))
        .is_some()
}

/// ansible-core action plugins not reimplemented yet: running their module
/// bare would not give ansible-core's result, so they are refused.
const UNSUPPORTED_ACTIONS: &[&str] = &[
    "add_host",
    "assert",
    "debug",
    "dnf",
    "fail",
    "gather_facts",
    "group_by",
    "include_vars",
    "pause",
    "reboot",
    "set_fact",
    "set_stats",
    "unarchive",
    "uri",
    "validate_argument_spec",
    "wait_for_connection",
];

#[cfg(test)]
mod tests;
