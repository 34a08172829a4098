//! `delegate_to`: where a delegated task's facts go and the
//! `_ansible_delegated_vars` its result carries.

use super::{Executor, PlayCtx};
use crate::playbook::TaskDef;
use crate::template::Vars;
use serde_json::{Map, Value, json};

impl Executor {
    /// Whether a delegated task's facts (`set_fact`'s too) go to the
    /// delegate: `delegate_facts`. Otherwise they are the inventory host's.
    pub(super) fn facts_to_delegate(
        &self,
        t: &TaskDef,
        vars: &Vars,
        delegated: Option<&str>,
    ) -> bool {
        delegated.is_some() && self.kw_bool(&t.kw.delegate_facts, vars) == Some(true)
    }

    /// `_ansible_delegated_vars` of a task delegated to `d`: the delegate's
    /// `ansible_host` (its name if unset), `ansible_port` and `ansible_user`
    /// (null if unset) with their types, and `ansible_connection` if set.
    /// 2.20 keeps only the connection for a `local` one (that plugin has no
    /// host/port/user options).
    pub(super) fn delegated_vars(&self, ctx: &PlayCtx<'_>, t: &TaskDef, d: &str) -> Value {
        let tvars = self.vars_for(ctx, t, &self.host(d));
        let get = |k: &str| -> Option<Value> {
            match tvars.get(k)? {
                Value::Null => None,
                Value::String(s) if s.contains("{{") => Some(
                    self.templar
                        .value(&Value::String(s.clone()), &tvars)
                        .unwrap_or(Value::String(s.clone())),
                ),
                v => Some(v.clone()),
            }
        };
        let connection = get("ansible_connection");
        if self.runner.source().version_at_least(2, 20)
            && connection.as_ref().and_then(Value::as_str) == Some("local")
        {
            return json!({ "ansible_connection": connection });
        }
        let mut m = Map::new();
        m.insert(
            "ansible_host".into(),
            get("ansible_host").unwrap_or_else(|| Value::String(d.to_owned())),
        );
        m.insert(
            "ansible_port".into(),
            get("ansible_port").unwrap_or(Value::Null),
        );
        m.insert(
            "ansible_user".into(),
            get("ansible_user").unwrap_or(Value::Null),
        );
        if let Some(c) = connection {
            m.insert("ansible_connection".into(), c);
        }
        Value::Object(m)
    }
}
