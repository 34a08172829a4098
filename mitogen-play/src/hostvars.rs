//! `hostvars`: any host's variables, as ansible-core's `HostVars` gives
//! them (`VariableManager.get_vars(host=h, include_hostvars=False)`):
//! inventory group and host vars, the host's magic variables
//! (`inventory_hostname`, `group_names`, `groups`, `playbook_dir`, ...),
//! its facts (`ansible_facts` and the `ansible_*` names), what
//! `set_fact`/`register`/`include_vars` set for it, and extra vars. Not
//! play, role or task vars: there is no play or task in that call.
//!
//! Nothing is copied into a task's variables: `hostvars` is one object
//! per play that builds a host's layers when a template names the host,
//! and each value is templated when it is read, with that host's
//! variables (ansible-core's `HostVarsVars`).

use super::executor::HostState;
use super::inventory::Inventory;
use super::template::{Templar, Vars};
use minijinja::value::{Enumerator, Object, Value as JValue};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Where every host's variables come from (shared with the executor).
pub(crate) struct Source {
    pub(crate) inventory: Arc<Mutex<Inventory>>,
    pub(crate) hosts: Arc<Mutex<HashMap<String, Arc<HostState>>>>,
    pub(crate) extra_vars: Arc<Map<String, Value>>,
    /// Magic variables every host has in this play (`groups`,
    /// `playbook_dir`, `ansible_check_mode`, ...); `groups` is made again
    /// when a task changes the inventory ([`Source::refresh_groups`]).
    pub(crate) magic: parking_lot::RwLock<Arc<Map<String, Value>>>,
    pub(crate) templar: Templar,
}

impl Source {
    /// The magic variables every host has now.
    pub(crate) fn magic(&self) -> Arc<Map<String, Value>> {
        self.magic.read().clone()
    }

    /// `groups` as the inventory has them: each group's hosts.
    pub(crate) fn groups(inv: &Inventory) -> Value {
        Value::Object(
            inv.group_names()
                .into_iter()
                .map(|g| {
                    let hosts = inv.group_hosts(&g);
                    (g, hosts.into())
                })
                .collect(),
        )
    }

    /// Makes `groups` again after `add_host` or `group_by` changed the
    /// inventory: later tasks see the new hosts and groups.
    pub(crate) fn refresh_groups(&self) {
        let groups = Self::groups(&self.inventory.lock());
        let mut m = (*self.magic()).clone();
        m.insert("groups".into(), groups);
        *self.magic.write() = Arc::new(m);
    }

    /// `name`'s inventory vars and its own magic variables
    /// (`inventory_hostname`, `inventory_hostname_short`, `group_names`).
    pub(crate) fn inventory_layers(&self, name: &str) -> (Map<String, Value>, Map<String, Value>) {
        let inv = self.inventory.lock();
        let vars = inv.host_vars(name);
        let mut magic = Map::new();
        magic.insert("inventory_hostname".into(), name.into());
        magic.insert(
            "inventory_hostname_short".into(),
            name.split('.').next().unwrap_or("").into(),
        );
        // ansible-core's: every group but `all` (`ungrouped` too).
        let groups: Vec<String> = inv
            .host_groups(name)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        magic.insert("group_names".into(), groups.into());
        (vars, magic)
    }

    /// A host's facts as variables, as ansible-core's `VariableManager`
    /// gives them: each under the name the module returned it by
    /// (`INJECT_FACTS_AS_VARS`: `ansible_hostname`, `getent_passwd`), and
    /// all of them in `ansible_facts` without their `ansible_` prefix but
    /// for `ansible_local` (`namespace_facts`; an empty mapping for a host
    /// with none).
    pub(crate) fn facts_layer(h: &HostState) -> Option<Map<String, Value>> {
        let facts = h.facts.lock();
        let mut fm = Map::new();
        let mut ns = Map::new();
        for (k, x) in facts.iter() {
            let short = match k.strip_prefix("ansible_") {
                Some(s) if k != "ansible_local" => s,
                _ => k.as_str(),
            };
            ns.insert(short.to_owned(), x.clone());
            fm.insert(k.clone(), x.clone());
        }
        fm.insert("ansible_facts".into(), Value::Object(ns));
        Some(fm)
    }

    fn known(&self, name: &str) -> bool {
        name == "localhost" || self.inventory.lock().has_host(name)
    }

    /// `hostvars[name]`'s layers, lowest precedence first; `None` for a
    /// host the inventory does not have.
    pub(crate) fn host_vars(&self, name: &str) -> Option<Vars> {
        if !self.known(name) {
            return None;
        }
        let (inv, own) = self.inventory_layers(name);
        let mut v = Vars::new();
        v.push(Arc::new(inv));
        v.push(self.magic());
        v.push(Arc::new(own));
        let state = self.hosts.lock().get(name).cloned();
        if state.is_none() {
            // A host with no facts yet still has `ansible_facts`.
            let mut f = Map::new();
            f.insert("ansible_facts".into(), Value::Object(Map::new()));
            v.push(Arc::new(f));
        }
        if let Some(h) = state {
            if let Some(f) = Self::facts_layer(&h) {
                v.push_untrusted(Arc::new(f));
            }
            v.push(Arc::new(h.included.lock().clone()));
            v.push_untrusted(Arc::new(h.registered.lock().clone()));
        }
        v.push(self.extra_vars.clone());
        Some(v)
    }
}

/// The `hostvars` object: a mapping of host names to their variables.
pub(crate) struct HostVars(pub(crate) Arc<Source>);

impl std::fmt::Debug for HostVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostVars")
    }
}

impl Object for HostVars {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let vars = key.as_str().and_then(|k| self.0.host_vars(k));
        if vars.is_none() {
            // ansible-core's undefined for a host the inventory lacks.
            let name = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
            mitogen_ansible::jinja::undefined::note(format!(
                "hostvars[{}]",
                mitogen_ansible::pycompat::py_repr(&Value::String(name))
            ));
        }
        Some(self.0.templar.lazy(vars?))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let hosts = self.0.inventory.lock().hosts().to_vec();
        Enumerator::Values(hosts.into_iter().map(JValue::from).collect())
    }
}
