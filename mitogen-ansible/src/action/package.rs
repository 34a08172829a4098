//! `package` and `service` (ansible-core's `plugins/action/package.py` and
//! `service.py`): pick the backend module (`apt`, `dnf`, `systemd`,
//! `service`, ...) from `use:`, `ansible_package_use`, the host's
//! `ansible_facts.pkg_mgr`/`service_mgr` (given in [`Task::vars`]), or else
//! a `setup` run for just that fact, then run it with the task's arguments
//! minus `use`; its result is the task's.
//!
//! [`Task::vars`]: crate::Task::vars

use super::{Act, action_failure};
use crate::error::Error;
use crate::exec::Exec;
use serde_json::{Map, Value, json};

/// `PKG_MGRS` names in `module_utils/facts/system/pkg_mgr.py`: run as
/// `ansible.legacy.<name>` (a `library/` copy still wins).
const BUILTIN_PKG_MGRS: &[&str] = &[
    "apk",
    "apt",
    "atomic_container",
    "dnf",
    "dnf5",
    "homebrew",
    "installp",
    "macports",
    "opkg",
    "pacman",
    "pkg5",
    "pkgin",
    "pkgng",
    "portage",
    "sorcery",
    "svr4pkg",
    "swdepot",
    "swupd",
    "urpmi",
    "xbps",
    "zypper",
];

/// `BUILTIN_SVC_MGR_MODULES`.
const BUILTIN_SVC_MGRS: &[&str] = &["openwrt_init", "service", "systemd", "sysvinit"];

/// The host's fact `name` (`ansible_facts.<name>`) from the task's vars.
fn fact<'a>(act: &'a Act<'_>, name: &str) -> Option<&'a str> {
    act.task
        .vars
        .get("ansible_facts")
        .and_then(|f| f.get(name))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Runs `setup` for one fact (`gather_subset: !all`, `filter: <fact>`).
fn gather(act: &mut Act<'_>, fact: &str) -> Result<Map<String, Value>, Error> {
    let args = json!({"filter": fact, "gather_subset": "!all"});
    let Value::Object(args) = args else {
        unreachable!("a literal object")
    };
    act.engine
        .exec_module(act, "ansible.legacy.setup", args, &Exec::default())
}

/// Runs `module` (already prefixed) with `args` as the task's module.
fn run_backend(act: &mut Act<'_>, module: &str, args: Map<String, Value>) -> Result<(), Error> {
    super::normal::normal(act, module, args)
}

pub(crate) fn package(act: &mut Act<'_>) -> Result<(), Error> {
    let mut args = act.args()?;
    let mut module = args
        .get("use")
        .and_then(Value::as_str)
        .unwrap_or("auto")
        .to_owned();
    if module == "auto" {
        let configured = act
            .task
            .vars
            .get("ansible_package_use")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if let Some(m) = configured {
            module = m.to_owned();
        } else if let Some(m) = fact(act, "pkg_mgr") {
            module = m.to_owned();
        } else {
            let facts = gather(act, "ansible_pkg_mgr")?;
            if facts
                .get("failed")
                .is_some_and(|v| v.as_bool() != Some(false))
            {
                let msg = facts.get("msg").and_then(Value::as_str).unwrap_or("");
                act.s.data = action_failure(&format!(
                    "Failed to fetch ansible_pkg_mgr to determine the package action backend: {msg}"
                ));
                return Ok(());
            }
            match facts
                .get("ansible_facts")
                .and_then(|f| f.get("ansible_pkg_mgr"))
                .and_then(Value::as_str)
            {
                Some(m) => module = m.to_owned(),
                None => {
                    act.s.data = action_failure(
                        "Could not detect a package manager. Try using the \"use\" option.",
                    );
                    return Ok(());
                }
            }
        }
    }
    if module.is_empty() || module == "auto" {
        act.s.data = action_failure(
            "Could not detect which package manager to use. Try gathering facts or setting the \"use\" option.",
        );
        return Ok(());
    }
    if act.engine.find(&module).is_err() {
        act.s.data = action_failure(&format!(
            "Could not find a matching action for the \"{module}\" package manager."
        ));
        return Ok(());
    }
    args.shift_remove("use");
    if BUILTIN_PKG_MGRS.contains(&module.as_str()) {
        module = format!("ansible.legacy.{module}");
    }
    run_backend(act, &module, args)
}

pub(crate) fn service(act: &mut Act<'_>) -> Result<(), Error> {
    let mut args = act.args()?;
    let mut module = args
        .get("use")
        .and_then(Value::as_str)
        .unwrap_or("auto")
        .to_lowercase();
    if module == "auto" {
        if let Some(m) = fact(act, "service_mgr") {
            module = m.to_owned();
        }
    }
    if module == "auto" {
        let facts = gather(act, "ansible_service_mgr")?;
        module = facts
            .get("ansible_facts")
            .and_then(|f| f.get("ansible_service_mgr"))
            .and_then(Value::as_str)
            .unwrap_or("auto")
            .to_owned();
    }
    if module.is_empty() || module == "auto" || act.engine.find(&module).is_err() {
        module = "ansible.legacy.service".into();
    }
    args.shift_remove("use");
    if module == "systemd" {
        for unused in ["pattern", "runlevel", "sleep", "arguments", "args"] {
            if args.shift_remove(unused).is_some() {
                act.s.warnings.push(format!(
                    "Ignoring \"{unused}\" as it is not used in \"{module}\""
                ));
            }
        }
    }
    if BUILTIN_SVC_MGRS.contains(&module.as_str()) {
        module = format!("ansible.legacy.{module}");
    }
    run_backend(act, &module, args)
}
