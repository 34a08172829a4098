//! Inventories in Ansible's INI and YAML formats, and host patterns.

use super::PlayError;
use super::yaml::{self, Loc, Node, Y};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A group: its hosts, child groups and vars.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// The name.
    pub name: String,
    /// Hosts listed directly in it, in order.
    pub hosts: Vec<String>,
    /// Child groups.
    pub children: Vec<String>,
    /// Group vars.
    pub vars: Map<String, Value>,
}

/// Hosts and groups.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    hosts: Vec<String>,
    host_vars: HashMap<String, Map<String, Value>>,
    groups: Vec<Group>,
    /// Names of the implicit localhost (ansible-core's, made on first
    /// use of `localhost`, `127.0.0.1` or `::1` when the inventory has no
    /// such host): in no group's host list, `all`'s included.
    implicit: Vec<String>,
    /// `ansible_python_interpreter` of the implicit localhost: the
    /// controller's Python (ansible-core's `sys.executable`).
    playbook_python: Option<String>,
    /// The file each host was first found in (`inventory_file`; its
    /// directory is `inventory_dir`), and the file being read.
    host_source: HashMap<String, PathBuf>,
    current_source: Option<PathBuf>,
    /// How many hosts `add_host` made (they lead [`Inventory::hosts`]).
    dynamic: usize,
}

/// Names ansible-core treats as the controller (`C.LOCALHOST`).
const LOCALHOST: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl Inventory {
    /// An inventory with only `all` and `ungrouped`.
    pub fn new() -> Self {
        let mut i = Self::default();
        i.group_mut("all");
        i.group_mut("ungrouped");
        i
    }

    /// Reads an inventory file (INI or YAML, by content) or a
    /// comma-separated host list (`"h1,h2,"`).
    ///
    /// # Errors
    /// Unreadable files, syntax errors with file:line.
    pub fn load(path_or_list: &str) -> Result<Self, PlayError> {
        let mut inv = Self::new();
        inv.add_source(path_or_list)?;
        Ok(inv)
    }

    /// Adds another source (as `-i` given several times).
    ///
    /// # Errors
    /// As [`Inventory::load`].
    pub fn add_source(&mut self, src: &str) -> Result<(), PlayError> {
        let p = Path::new(src);
        if !p.exists() && src.contains(',') {
            for h in src.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                self.add_host(h, "ungrouped");
            }
        } else if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| PlayError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| e.is_file())
                .collect();
            entries.sort();
            for e in entries {
                self.add_file(&e)?;
            }
            self.load_var_dirs(p)?;
        } else {
            self.add_file(p)?;
            if let Some(d) = p.parent() {
                self.load_var_dirs(d)?;
            }
        }
        self.finish();
        Ok(())
    }

    fn add_file(&mut self, p: &Path) -> Result<(), PlayError> {
        let text = std::fs::read_to_string(p).map_err(|e| PlayError::io(p, e))?;
        self.current_source = Some(std::path::absolute(p).unwrap_or_else(|_| p.to_owned()));
        let r = self.add_text(&text, p);
        self.current_source = None;
        r
    }

    fn add_text(&mut self, text: &str, p: &Path) -> Result<(), PlayError> {
        let is_yaml = p
            .extension()
            .is_some_and(|e| e == "yml" || e == "yaml" || e == "json")
            || text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .is_some_and(|l| l == "---" || l.ends_with(':') || l.starts_with('{'));
        if is_yaml {
            self.add_yaml(text, p)
        } else {
            self.add_ini(text, p)
        }
    }

    /// `group_vars/` and `host_vars/` next to the inventory.
    fn load_var_dirs(&mut self, dir: &Path) -> Result<(), PlayError> {
        for (sub, is_group) in [("group_vars", true), ("host_vars", false)] {
            let d = dir.join(sub);
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for f in files {
                let name = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut paths = Vec::new();
                if f.is_dir() {
                    if let Ok(rd) = std::fs::read_dir(&f) {
                        let mut v: Vec<PathBuf> =
                            rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                        v.sort();
                        paths.extend(v);
                    }
                } else {
                    paths.push(f.clone());
                }
                let key = if f.is_dir() {
                    f.file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    name
                };
                for p in paths {
                    let vars = read_vars_file(&p)?;
                    let target = if is_group {
                        &mut self.group_mut(&key).vars
                    } else {
                        self.host_vars.entry(key.clone()).or_default()
                    };
                    for (k, v) in vars {
                        target.insert(k, v);
                    }
                }
            }
        }
        Ok(())
    }

    fn group_mut(&mut self, name: &str) -> &mut Group {
        if let Some(i) = self.groups.iter().position(|g| g.name == name) {
            return &mut self.groups[i];
        }
        self.groups.push(Group {
            name: name.to_owned(),
            ..Group::default()
        });
        let n = self.groups.len() - 1;
        &mut self.groups[n]
    }

    /// Adds `host` to `group` (and to the inventory).
    pub fn add_host(&mut self, host: &str, group: &str) {
        if let Some(src) = &self.current_source {
            self.host_source
                .entry(host.to_owned())
                .or_insert_with(|| src.clone());
        }
        if !self.hosts.iter().any(|h| h == host) {
            self.hosts.push(host.to_owned());
            self.host_vars.entry(host.to_owned()).or_default();
        }
        let g = self.group_mut(group);
        if !g.hosts.iter().any(|h| h == host) {
            g.hosts.push(host.to_owned());
        }
    }

    /// ansible-core's `add_dynamic_host` (an `add_host` task's result):
    /// `host` joins the inventory and `groups` (made if new), with `vars`
    /// over its own. Returns whether anything changed.
    pub fn add_dynamic_host(
        &mut self,
        host: &str,
        groups: &[String],
        vars: &Map<String, Value>,
    ) -> bool {
        let mut changed = false;
        if !self.hosts.iter().any(|h| h == host) {
            // ansible-core adds it to `all` itself, whose own hosts come
            // before its groups': the new hosts lead, in the order added.
            self.hosts.insert(self.dynamic, host.to_owned());
            self.dynamic += 1;
            changed = true;
        }
        let own = self.host_vars.entry(host.to_owned()).or_default();
        for (k, v) in vars {
            if own.get(k) != Some(v) {
                own.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        for g in groups {
            if self.group(g).is_none() {
                changed = true;
            }
            let grp = self.group_mut(g);
            if !grp.hosts.iter().any(|h| h == host) {
                grp.hosts.push(host.to_owned());
                changed = true;
            }
        }
        if changed {
            self.finish();
        }
        changed
    }

    /// ansible-core's `add_dynamic_group` (a `group_by` task's result):
    /// `host` joins `group`, which becomes a child of each of `parents`
    /// (all made if new). Returns whether anything changed.
    pub fn add_dynamic_group(&mut self, host: &str, group: &str, parents: &[String]) -> bool {
        let mut changed = false;
        self.group_mut(group);
        for p in parents {
            if self.group(p).is_none() {
                changed = true;
            }
            let had = self
                .group(p)
                .is_some_and(|g| g.children.iter().any(|c| c == group));
            self.add_child(p, group);
            changed |= !had;
        }
        let g = self.group_mut(group);
        if !g.hosts.iter().any(|h| h == host) {
            g.hosts.push(host.to_owned());
            changed = true;
        }
        if changed {
            self.finish();
        }
        changed
    }

    /// Sets a host variable.
    pub fn set_host_var(&mut self, host: &str, key: &str, v: Value) {
        self.host_vars
            .entry(host.to_owned())
            .or_default()
            .insert(key.to_owned(), v);
    }

    fn add_child(&mut self, parent: &str, child: &str) {
        self.group_mut(child);
        let g = self.group_mut(parent);
        if !g.children.iter().any(|c| c == child) {
            g.children.push(child.to_owned());
        }
    }

    /// `all` holds every top-level group; `ungrouped` the hosts in no group.
    fn finish(&mut self) {
        let names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        let has_parent: BTreeSet<String> = self
            .groups
            .iter()
            .flat_map(|g| g.children.iter().cloned())
            .collect();
        for n in &names {
            if n != "all" && !has_parent.contains(n) {
                self.add_child("all", n);
            }
        }
        let grouped: BTreeSet<String> = self
            .groups
            .iter()
            .filter(|g| g.name != "all" && g.name != "ungrouped")
            .flat_map(|g| g.hosts.iter().cloned())
            .collect();
        // Not the implicit localhost, which is in no group.
        let ung: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| !grouped.contains(*h) && !self.implicit.contains(h))
            .cloned()
            .collect();
        let g = self.group_mut("ungrouped");
        g.hosts = ung;
        g.hosts.dedup();
        let all = self.group_mut("all");
        all.hosts.clear();
    }

    fn add_ini(&mut self, text: &str, file: &Path) -> Result<(), PlayError> {
        let file = Arc::new(file.to_owned());
        let mut section = ("ungrouped".to_owned(), "hosts");
        for (n, raw) in text.lines().enumerate() {
            let loc = Loc {
                file: file.clone(),
                line: n + 1,
                col: 0,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(h) = line.strip_prefix('[') {
                let Some(h) = h.strip_suffix(']') else {
                    return Err(PlayError::at(&loc, "unterminated section header"));
                };
                let (name, kind) = match h.split_once(':') {
                    Some((g, "vars")) => (g, "vars"),
                    Some((g, "children")) => (g, "children"),
                    Some((_, k)) => {
                        return Err(PlayError::at(&loc, format!("unknown section type ':{k}'")));
                    }
                    None => (h, "hosts"),
                };
                self.group_mut(name);
                section = (name.to_owned(), kind);
                continue;
            }
            match section.1 {
                "hosts" => {
                    let parts =
                        crate::util::shlex_split(line).map_err(|e| PlayError::at(&loc, e))?;
                    let Some((pattern, kvs)) = parts.split_first() else {
                        continue;
                    };
                    let mut vars = Map::new();
                    for kv in kvs {
                        let Some((k, v)) = kv.split_once('=') else {
                            return Err(PlayError::at(
                                &loc,
                                format!("expected key=value host variable, got '{kv}'"),
                            ));
                        };
                        vars.insert(k.to_owned(), ini_value(v));
                    }
                    let (pattern, port) = split_host_port(pattern);
                    if let Some(p) = port {
                        vars.insert("ansible_port".into(), p.into());
                    }
                    for h in expand_range(&pattern).map_err(|e| PlayError::at(&loc, e))? {
                        self.add_host(&h, &section.0);
                        for (k, v) in &vars {
                            self.set_host_var(&h, k, v.clone());
                        }
                    }
                }
                "children" => {
                    let g = section.0.clone();
                    self.add_child(&g, line);
                }
                _ => {
                    let Some((k, v)) = line.split_once('=') else {
                        return Err(PlayError::at(
                            &loc,
                            format!("expected key=value, got '{line}'"),
                        ));
                    };
                    let g = section.0.clone();
                    self.group_mut(&g)
                        .vars
                        .insert(k.trim().to_owned(), ini_value(v.trim()));
                }
            }
        }
        Ok(())
    }

    fn add_yaml(&mut self, text: &str, file: &Path) -> Result<(), PlayError> {
        let doc = yaml::parse_one(text, file)?;
        let file = Arc::new(file.to_owned());
        match &doc.y {
            Y::Map(groups) => {
                for (name, _, node) in groups {
                    self.yaml_group(name, node, &file)?;
                }
                Ok(())
            }
            Y::Scalar(Value::Null) => Ok(()),
            _ => Err(PlayError::at(
                &Loc {
                    file,
                    line: doc.line,
                    col: 0,
                },
                "a YAML inventory must be a mapping of groups",
            )),
        }
    }

    fn yaml_group(
        &mut self,
        name: &str,
        node: &Node,
        file: &Arc<PathBuf>,
    ) -> Result<(), PlayError> {
        self.group_mut(name);
        let Y::Map(entries) = &node.y else {
            if matches!(node.y, Y::Scalar(Value::Null)) {
                return Ok(());
            }
            return Err(PlayError::at(
                &Loc {
                    file: file.clone(),
                    line: node.line,
                    col: 0,
                },
                format!("group '{name}' must be a mapping (hosts, vars, children)"),
            ));
        };
        for (key, kline, v) in entries {
            let loc = Loc {
                file: file.clone(),
                line: *kline,
                col: 0,
            };
            match key.as_str() {
                "hosts" => match &v.y {
                    Y::Map(hosts) => {
                        for (h, hline, hv) in hosts {
                            let hloc = Loc {
                                file: file.clone(),
                                line: *hline,
                                col: 0,
                            };
                            let (pattern, port) = split_host_port(h);
                            for host in
                                expand_range(&pattern).map_err(|e| PlayError::at(&hloc, e))?
                            {
                                self.add_host(&host, name);
                                if let Some(p) = port {
                                    self.set_host_var(&host, "ansible_port", p.into());
                                }
                                match hv.to_json() {
                                    Value::Object(o) => {
                                        for (k, x) in o {
                                            self.set_host_var(&host, &k, x);
                                        }
                                    }
                                    Value::Null => {}
                                    _ => {
                                        return Err(PlayError::at(
                                            &hloc,
                                            format!("host '{h}' vars must be a mapping"),
                                        ));
                                    }
                                }
                            }
                        }
                    }
                    Y::Scalar(Value::Null) => {}
                    _ => {
                        return Err(PlayError::at(
                            &loc,
                            "'hosts' must be a mapping of host names",
                        ));
                    }
                },
                "vars" => match v.to_json() {
                    Value::Object(o) => {
                        let g = self.group_mut(name);
                        for (k, x) in o {
                            g.vars.insert(k, x);
                        }
                    }
                    Value::Null => {}
                    _ => return Err(PlayError::at(&loc, "'vars' must be a mapping")),
                },
                "children" => match &v.y {
                    Y::Map(children) => {
                        for (c, _, cv) in children {
                            self.add_child(name, c);
                            self.yaml_group(c, cv, file)?;
                        }
                    }
                    Y::Scalar(Value::Null) => {}
                    _ => {
                        return Err(PlayError::at(
                            &loc,
                            "'children' must be a mapping of groups",
                        ));
                    }
                },
                other => {
                    return Err(PlayError::at(
                        &loc,
                        format!(
                            "unknown key '{other}' in group '{name}' (expected hosts, vars, children)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every host, in inventory order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// A group by name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Every group name.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.name.clone()).collect()
    }

    /// The hosts of `group` and its descendants, in inventory order.
    pub fn group_hosts(&self, group: &str) -> Vec<String> {
        if group == "all" {
            return self.hosts.clone();
        }
        let mut set = BTreeSet::new();
        let mut stack = vec![group.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if let Some(g) = self.group(&g) {
                set.extend(g.hosts.iter().cloned());
                stack.extend(g.children.iter().cloned());
            }
        }
        self.hosts
            .iter()
            .filter(|h| set.contains(*h))
            .cloned()
            .collect()
    }

    /// The groups `host` is in (directly or through children), `all`
    /// first, then by depth and name as Ansible merges group vars.
    pub fn host_groups(&self, host: &str) -> Vec<String> {
        let mut out: Vec<(usize, String)> = Vec::new();
        for g in &self.groups {
            if g.name == "all" {
                continue;
            }
            if self.group_hosts(&g.name).iter().any(|h| h == host) {
                out.push((self.depth(&g.name, 0), g.name.clone()));
            }
        }
        out.sort();
        let mut v = vec!["all".to_owned()];
        v.extend(out.into_iter().map(|(_, n)| n));
        v
    }

    fn depth(&self, group: &str, guard: usize) -> usize {
        if guard > 64 {
            return guard;
        }
        self.groups
            .iter()
            .filter(|g| g.children.iter().any(|c| c == group))
            .map(|g| 1 + self.depth(&g.name, guard + 1))
            .max()
            .unwrap_or(0)
    }

    /// Group vars then host vars, merged for `host`.
    pub fn host_vars(&self, host: &str) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.implicit.iter().any(|h| h == host) {
            let src = self.host_source.get(host);
            let text = |p: Option<&Path>| p.map_or(Value::Null, |p| p.display().to_string().into());
            m.insert("inventory_file".into(), text(src.map(PathBuf::as_path)));
            m.insert("inventory_dir".into(), text(src.and_then(|p| p.parent())));
        }
        for g in self.host_groups(host) {
            if let Some(g) = self.group(&g) {
                for (k, v) in &g.vars {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(hv) = self.host_vars.get(host) {
            for (k, v) in hv {
                m.insert(k.clone(), v.clone());
            }
        }
        if self.implicit.iter().any(|h| h == host) {
            m.entry("ansible_connection").or_insert("local".into());
            if let Some(py) = &self.playbook_python {
                m.entry("ansible_python_interpreter")
                    .or_insert(py.clone().into());
            }
        }
        m
    }

    /// The controller's Python, which the implicit localhost runs modules
    /// with (`ansible_playbook_python`).
    pub fn set_playbook_python(&mut self, python: &str) {
        self.playbook_python = Some(python.to_owned());
    }

    /// Makes `host` the implicit localhost if it names the controller and
    /// the inventory does not have it (a `delegate_to: localhost`, a
    /// `local_action`, a play's `hosts: localhost`). Returns whether it is
    /// implicit.
    pub fn implicit_localhost(&mut self, host: &str) -> bool {
        if self.implicit.iter().any(|h| h == host) {
            return true;
        }
        if !LOCALHOST.contains(&host) || self.has_host(host) {
            return false;
        }
        self.implicit.push(host.to_owned());
        self.hosts.push(host.to_owned());
        self.host_vars.entry(host.to_owned()).or_default();
        true
    }

    /// Whether `host` is in the inventory (or is the implicit localhost).
    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }

    /// Hosts matching `pattern` (`all`, groups, hosts, globs, `~regex`,
    /// `a:b`, `a:&b`, `a:!b`, commas), in inventory order. A pattern naming
    /// `localhost` that the inventory lacks adds the implicit localhost.
    ///
    /// # Errors
    /// Invalid regexes.
    pub fn matching(&mut self, pattern: &str) -> Result<Vec<String>, String> {
        let mut parts: Vec<&str> = Vec::new();
        for p in pattern.split([',', ':']) {
            let p = p.trim();
            if !p.is_empty() {
                parts.push(p);
            }
        }
        for p in &parts {
            self.implicit_localhost(p);
        }
        let mut set: Vec<String> = Vec::new();
        // Unions first, then intersections, then exclusions, as Ansible orders them.
        let mut inter: Vec<Vec<String>> = Vec::new();
        let mut excl: Vec<String> = Vec::new();
        for p in parts {
            if let Some(x) = p.strip_prefix('!') {
                excl.extend(self.one_pattern(x)?);
            } else if let Some(x) = p.strip_prefix('&') {
                inter.push(self.one_pattern(x)?);
            } else {
                for h in self.one_pattern(p)? {
                    if !set.contains(&h) {
                        set.push(h);
                    }
                }
            }
        }
        for i in inter {
            set.retain(|h| i.contains(h));
        }
        set.retain(|h| !excl.contains(h));
        // Inventory order (implicit localhost is not in `all`).
        let order: HashMap<&String, usize> =
            self.hosts.iter().enumerate().map(|(i, h)| (h, i)).collect();
        set.sort_by_key(|h| order.get(h).copied().unwrap_or(usize::MAX));
        Ok(set)
    }

    fn one_pattern(&self, p: &str) -> Result<Vec<String>, String> {
        if p == "all" || p == "*" {
            return Ok(self
                .hosts
                .iter()
                .filter(|h| !self.implicit.contains(h))
                .cloned()
                .collect());
        }
        if self.group(p).is_some() {
            return Ok(self.group_hosts(p));
        }
        if self.has_host(p) {
            return Ok(vec![p.to_owned()]);
        }
        let re = if let Some(r) = p.strip_prefix('~') {
            regex::Regex::new(r).map_err(|e| format!("invalid host pattern regex '{r}': {e}"))?
        } else if p.contains(['*', '?', '[']) {
            let mut r = String::from("^");
            for c in p.chars() {
                match c {
                    '*' => r.push_str(".*"),
                    '?' => r.push('.'),
                    c => r.push_str(&regex::escape(&c.to_string())),
                }
            }
            r.push('$');
            regex::Regex::new(&r).map_err(|e| e.to_string())?
        } else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = Vec::new();
        for g in &self.groups {
            if re.is_match(&g.name) {
                out.extend(self.group_hosts(&g.name));
            }
        }
        out.extend(self.hosts.iter().filter(|h| re.is_match(h)).cloned());
        let mut seen = BTreeSet::new();
        out.retain(|h| seen.insert(h.clone()));
        Ok(out)
    }
}

/// Reads a YAML vars file into a mapping.
///
/// # Errors
/// Unreadable, invalid, or not a mapping.
pub fn read_vars_file(p: &Path) -> Result<Map<String, Value>, PlayError> {
    let text = read_text(p)?;
    let n = yaml::parse_one(&text, p)?;
    match n.to_json() {
        Value::Object(o) => Ok(o),
        Value::Null => Ok(Map::new()),
        _ => Err(PlayError::at(
            &Loc {
                file: Arc::new(p.to_owned()),
                line: n.line,
                col: 0,
            },
            "a vars file must be a mapping",
        )),
    }
}

/// A file's text, decrypted if it is a vault (vars files, `include_vars`,
/// `group_vars`/`host_vars`, task files).
///
/// # Errors
/// Unreadable files; vault data no secret decrypts (ansible-core's
/// message, with the file).
pub fn read_text(p: &Path) -> Result<String, PlayError> {
    let data = std::fs::read(p).map_err(|e| PlayError::io(p, e))?;
    let data = mitogen_ansible::vault::decrypt_if_vault(data).map_err(|e| PlayError::Vault {
        path: std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned()),
        msg: e.0,
    })?;
    String::from_utf8(data).map_err(|e| {
        PlayError::io(
            p,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })
}

/// An INI value as Ansible reads it (`ast.literal_eval`, else a string).
fn ini_value(v: &str) -> Value {
    match v {
        "True" | "true" => return Value::Bool(true),
        "False" | "false" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>() {
        if v.contains('.') {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return Value::String(v[1..v.len() - 1].to_owned());
        }
    }
    Value::String(v.to_owned())
}

fn split_host_port(h: &str) -> (String, Option<u16>) {
    if h.matches(':').count() == 1 {
        if let Some((a, p)) = h.rsplit_once(':') {
            if let Ok(p) = p.parse() {
                return (a.to_owned(), Some(p));
            }
        }
    }
    (h.to_owned(), None)
}

/// `web[01:03]` → web01, web02, web03 (also `[a:c]`, and `:step`).
fn expand_range(p: &str) -> Result<Vec<String>, String> {
    let (Some(a), Some(b)) = (p.find('['), p.find(']')) else {
        return Ok(vec![p.to_owned()]);
    };
    if b < a {
        return Ok(vec![p.to_owned()]);
    }
    let (head, spec, tail) = (&p[..a], &p[a + 1..b], &p[b + 1..]);
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(format!("invalid host range '{p}'"));
    }
    let step: usize = parts
        .get(2)
        .map_or(Ok(1), |s| s.parse())
        .map_err(|_| format!("invalid step in host range '{p}'"))?;
    let mut out = Vec::new();
    let tails = expand_range(tail)?;
    if let (Ok(lo), Ok(hi)) = (parts[0].parse::<u64>(), parts[1].parse::<u64>()) {
        let width = if parts[0].starts_with('0') {
            parts[0].len()
        } else {
            0
        };
        if hi < lo || hi - lo > 100_000 {
            return Err(format!("invalid host range '{p}'"));
        }
        for i in (lo..=hi).step_by(step.max(1)) {
            for t in &tails {
                out.push(format!("{head}{i:0width$}{t}"));
            }
        }
    } else if parts[0].len() == 1 && parts[1].len() == 1 {
        let (lo, hi) = (parts[0].as_bytes()[0], parts[1].as_bytes()[0]);
        for c in (lo..=hi).step_by(step.max(1)) {
            for t in &tails {
                out.push(format!("{head}{}{t}", c as char));
            }
        }
    } else {
        return Err(format!("invalid host range '{p}'"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_groups_children_patterns() {
        let mut i = Inventory::new();
        i.add_ini(
            "h0 a=1\n[web]\nw[1:3] ansible_port=2222\n[db]\ndb1 x='y z'\n[prod:children]\nweb\ndb\n[prod:vars]\nenv=prod\n",
            Path::new("inv"),
        )
        .unwrap();
        i.finish();
        assert_eq!(i.matching("all").unwrap(), ["h0", "w1", "w2", "w3", "db1"]);
        assert_eq!(i.matching("prod:!db").unwrap(), ["w1", "w2", "w3"]);
        assert_eq!(i.matching("web:&w2").unwrap(), ["w2"]);
        assert_eq!(i.matching("w*").unwrap(), ["w1", "w2", "w3"]);
        assert_eq!(i.matching("ungrouped").unwrap(), ["h0"]);
        let v = i.host_vars("w1");
        assert_eq!(v["ansible_port"], 2222);
        assert_eq!(v["env"], "prod");
        assert_eq!(i.host_vars("db1")["x"], "y z");
        assert_eq!(i.matching("localhost").unwrap(), ["localhost"]);
        assert_eq!(i.host_vars("localhost")["ansible_connection"], "local");
        assert_eq!(i.matching("all").unwrap().len(), 5);
    }

    #[test]
    fn yaml_inventory() {
        let mut i = Inventory::new();
        i.add_yaml(
            "all:\n  vars: {v: 1}\n  hosts:\n    a: {ansible_host: 1.2.3.4}\n  children:\n    g:\n      hosts:\n        b:\n      vars: {v: 2}\n",
            Path::new("inv.yml"),
        )
        .unwrap();
        i.finish();
        assert_eq!(i.matching("all").unwrap(), ["a", "b"]);
        assert_eq!(i.host_vars("b")["v"], 2);
        assert_eq!(i.host_vars("a")["v"], 1);
        let e = i
            .add_yaml("all:\n  hostz: {}\n", Path::new("bad.yml"))
            .unwrap_err();
        assert!(e.to_string().contains("bad.yml:2"), "{e}");
    }
}
