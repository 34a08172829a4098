//! mitogen-play: Ansible inventories and playbooks run over mitogen
//! contexts, with ansible-playbook's results (the `mitogen-play` CLI is a
//! thin shell over this library).
//!
//! The layering, arrows only down: `mitogen-play` (this crate: inventory,
//! playbooks and roles, variables and templating of play data, lookups,
//! strategies, controller-side actions such as `debug` and `set_fact`) →
//! `mitogen-ansible` (the module runner, its action plugins, the Jinja
//! environment a `template` task renders in, YAML, vault) →
//! `mitogen-ssh`/`mitogen-service` → `mitogen-core`. Where things live:
//! [`playbook`] parses, [`executor`] runs (its [`Executor`]), [`template`]
//! templates play data, [`lookup`] holds the lookups, [`inventory`] and
//! [`config`] read `-i` sources and `ansible.cfg`, [`events`] is what a
//! caller sees of a run.
//!
//! ```text
//!  inventory (INI/YAML) ─► Inventory ──patterns──┐
//!  playbook.yml ─► yaml (lines) ─► playbook::load_playbook ─► [Play]   (every keyword, filter,
//!                                   roles, import_*              │       test and module checked
//!                                                                ▼       before anything runs)
//!  Executor::run ── per play, per serial batch ── strategy ─┬─ linear: a task on every host
//!     │                                                     │  (≤ forks threads), then the next
//!     │                                                     └─ free: each host runs ahead
//!     ├ per task and host: vars (layers) ─► Templar (minijinja) ─► when / loop / until
//!     │     controller actions: debug set_fact assert fail include_vars meta include_*
//!     │     everything else ─► Runner::run(Target, Task)   Target = host's context:
//!     │                          ssh (ControlMaster) or local, become via BecomePool
//!     ├ changed_when / failed_when / register / notify ─► handlers at flush points
//!     └ events ─► subscribers (Event::TaskStart, HostResult, Recap)
//! ```
//!
//! # Example
//!
//! ```no_run
//! use mitogen_play::{load_playbook, Event, Executor, Inventory, Options, ParseOptions};
//! use mitogen_ansible::{ModuleSource, Runner};
//! use std::sync::Arc;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let router = mitogen_core::init(|reg| {
//!         mitogen_ssh::register(reg);
//!         mitogen_ansible::register(reg);
//!     })?;
//!     let runner = Arc::new(Runner::new(ModuleSource::from_ansible_core("/venv/bin/python")?));
//!     let plays = load_playbook("site.yml".as_ref(), &ParseOptions::default())?;
//!     let exec = Executor::new(router, runner, Inventory::load("hosts.ini")?, Options::default());
//!     let events = exec.subscribe();
//!     let recap = exec.run(&plays)?;
//!     for e in events.try_iter() {
//!         if let Event::HostResult(r) = e {
//!             println!("{} {}: {:?}", r.host, r.task, r.status);
//!         }
//!     }
//!     println!("{recap:?}");
//!     Ok(())
//! }
//! ```
//!
//! # Choices
//! - Dependencies beyond the layers below: `regex` (Ansible's regex
//!   filters and tests), `minijinja` (the one Jinja engine),
//!   `crossbeam-channel` (event subscribers), `fastrand` (`order:
//!   shuffle`); for the CLI, `clap` (ansible-playbook's options as
//!   argparse parses them) and `signal-hook` (Ctrl-C ends a run as
//!   ansible-playbook's does, from a safe handler).
//! - YAML: `saphyr-parser` (the maintained successor of `yaml-rust2`;
//!   `serde_yaml` is archived). Its event stream carries a span for every
//!   node, which is what file:line errors need; [`yaml`] resolves plain
//!   scalars as PyYAML does (YAML 1.1: `yes`/`on` are booleans), since
//!   that is what Ansible files are written for.
//! - Templating: the crate's one engine ([`mitogen_ansible::jinja`]: `minijinja`
//!   with `minijinja-contrib`'s Python methods such as `.split()`, strict
//!   undefined, `trim_blocks`, Ansible's filters and tests, its finalize:
//!   `None` prints as nothing, lists and dicts as Python's `str()`), with
//!   [`template`]'s native-type rule and lazily templated variables. A
//!   `template` task's file renders in the same engine, through
//!   [`template::PlayHook`]: the task's variables, `hostvars`, lookups
//!   and search paths (a role's `templates/` and `files/` first). Failures
//!   read as ansible-core 2.19's: `'x' is undefined`, `object of type
//!   'dict' has no attribute 'y'`, inside `Finalization of task args for
//!   'ansible.builtin.X' failed: Error while resolving value for 'k': ...`
//!   and `Error while evaluating conditional: ...`; `debug: var=` shows
//!   an undefined value as `<< error N - why >>` with a warning.
//! - `hostvars` (and `vars`) are objects resolved on access, not copies:
//!   a task's variables hold one `hostvars` per play, which builds a
//!   host's variables (inventory, facts, `set_fact`/`register`, magic and
//!   extra vars, as ansible-core's `HostVars`) only when a template names
//!   the host.
//! - Lookups ([`lookup`]): `lookup()`, `query()`/`q()` (`wantlist=`,
//!   `errors=strict|warn|ignore`) and `with_<lookup>` loops, for
//!   `env file template pipe vars items list dict indexed_items together
//!   nested sequence subelements fileglob first_found lines unvault`, run on the
//!   controller with ansible-core's search paths, results and messages.
//! - [`DEFAULT_FORKS`] is 100: a fork here is a thread waiting on a reply.
//!
//! - `remote_user:`, `port:` and `connection:` (`ssh`, `local`) on plays,
//!   blocks and tasks; `ansible_user`/`ansible_port`/`ansible_connection`
//!   variables win over them, and they over `-u`/`-c` and `ansible.cfg`.
//!   A host keeps one connection per (connection, user, port) it is used
//!   with.
//! - `delegate_facts:` (a delegated task's facts, `set_fact`'s too, go to
//!   the delegate; otherwise to the inventory host, and the interpreter
//!   discovered on the delegate is not reported, as in ansible-core),
//!   `throttle:`, the play's `order:`, and `module_defaults:` by module
//!   name (FQCN or short; play, block, task; the task's arguments win),
//!   `collections:` (short module names looked up in those collections,
//!   then `ansible.legacy`, at parse time). Every delegated result carries
//!   `_ansible_delegated_vars`, the controller's own actions' too.
//! - `--start-at-task` ([`Options::start_at_task`]), `--list-tasks`,
//!   `--list-tags` (in the CLI, with [`Options::selects`]).
//! - `package` and `service` pick their backend module as ansible-core's
//!   action plugins do (see the runner).
//! - Vault ([`mitogen_ansible::vault`]): `--vault-id`, `--vault-password-file`,
//!   `-J`/`--vault-id ID@prompt` (asked on the terminal),
//!   `ANSIBLE_VAULT_PASSWORD_FILE`; vaulted vars files, `include_vars`,
//!   `group_vars`/`host_vars`, task files, inline `!vault` values (an
//!   undecryptable one fails where it is used), `copy src=` (`decrypt`),
//!   the `file` and `unvault` lookups.
//!
//! - Arguments: `k=v` and free-form strings are split and joined as
//!   ansible-core's `split_args`/`join_args` do (a `shell: |` block keeps
//!   its lines, spaces and heredocs; `\` continues a line), with 2.19's
//!   escape decoding (`\n`, `\xHH`, ...; `\1` and octal are kept). In
//!   play data, string literals inside `{{ }}` keep their backslashes
//!   (2.19's `AnsibleLexer`), so `regex_replace('(a)', '\\1')` written in
//!   a double-quoted YAML string gets the backreference; conditionals and
//!   template files keep Jinja's escapes.
//! - Loops: `loop_control` (`loop_var`, `index_var`, `label`, `pause`,
//!   `extended` with ansible-core's `ansible_loop`, `extended_allitems`),
//!   `include_tasks`/`include_role` with a loop (each item's file run with
//!   its loop variables).
//! - Roles: a role without `allow_duplicates` runs once per host and
//!   parameters (`include_role`'s dependencies that already ran are
//!   skipped, as ansible-core's `role_complete`).
//! - Hosts: the implicit localhost (`hosts: localhost`, `delegate_to:
//!   localhost`, `local_action`) uses the local connection and
//!   `ansible_playbook_python`; `inventory_file`/`inventory_dir`; a batch
//!   whose every host failed, or an exceeded `max_fail_percentage`, ends
//!   the playbook. `import_playbook` takes `vars`, `tags` and `when`;
//!   `gather_subset`/`gather_timeout`/`fact_path` go to the gathering.
//! - Facts a module returns are variables under the names it gave them
//!   and in `ansible_facts` without the `ansible_` prefix (but
//!   `ansible_local`); `rescue:` sees `ansible_failed_task` and
//!   `ansible_failed_result`.
//! - Collections are looked for where ansible-core looks: next to the
//!   playbook, `collections_path` (default `ANSIBLE_HOME/collections`,
//!   `/usr/share/ansible/collections`), the Python's `site-packages`.
//!   Their roles are found by FQCN (`ns.coll.role`) and, for short names,
//!   in the `collections:` list before the role paths; a collection role's
//!   tasks find its collection's modules by short name first.
//! - Python plugins ([`plugins`]): filter, test and lookup plugins not
//!   implemented here (ansible-core's own such as `to_nice_yaml`, `hash`,
//!   `human_readable`; any installed collection's, by FQCN; a playbook's or
//!   role's `filter_plugins/`, `test_plugins/`, `lookup_plugins/`) run in
//!   one warm Python with ansible-core's plugin loader, started only when a
//!   playbook names one. A name neither has, or a template that does not
//!   compile, fails the task that evaluates it, as under ansible-playbook.
//!   A pure native lookup that fails is answered by ansible-core's own, so
//!   a bad argument fails with its words.
//! - Trust, as in ansible-core 2.19: what the playbook, inventory and vars
//!   files say is rendered when read; what targets returned (registered
//!   results, facts, `set_fact` values, loop items, `ansible_failed_*`) is
//!   data, never rendered again, so a module's output that holds Jinja
//!   cannot run lookups on the controller.
//! - `add_host` and `group_by` change the in-memory inventory for the rest
//!   of the run; `assemble` and `include_vars` are ansible-core's actions.
//!
//! # Not supported (refused with file:line before running)
//! `module_defaults` action groups (`group/...`),
//! `debugger`, `become_exe`/`become_flags`, `pause`, `reboot`,
//! `wait_for_connection`, strategies other than linear/free, connections
//! other than ssh/local, action plugins this crate lacks (ansible-core's
//! `uri`, `unarchive`, ...; a collection's or an `action_plugins/`
//! directory's Python ones); in the CLI, `--step`. A task with such an
//! action behind a `when:` is kept, and fails if it is reached (never
//! running its module without its action).
#![forbid(unsafe_code)]

pub mod config;
pub mod display;
pub mod events;
pub mod executor;
mod hostvars;
pub mod inventory;
pub mod lookup;
pub mod playbook;
pub mod plugins;
pub mod template;
pub mod util;
/// YAML with line numbers, resolved as PyYAML resolves plain scalars (the
/// crate's parser, shared with the `from_yaml` filter).
pub mod yaml {
    pub use mitogen_ansible::yaml::*;
}

pub use config::Config;
pub use events::{Event, HostResult, Raised, Stats};
pub use executor::{DEFAULT_FORKS, Executor, Options};
pub use inventory::Inventory;
pub use playbook::{ParseOptions, Play, load_playbook};
pub use yaml::Loc;

use std::path::{Path, PathBuf};

/// A play-level error: bad input (with its file:line) or I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlayError {
    /// Bad input at a place in a file.
    #[error("{loc}: {msg}")]
    At {
        /// Where.
        loc: Loc,
        /// What.
        msg: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A vault file no secret decrypts.
    #[error("{}: {msg}", path.display())]
    Vault {
        /// The file (absolute).
        path: PathBuf,
        /// ansible-core's message.
        msg: String,
    },
    /// Malformed YAML.
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    /// Anything else (bad options).
    #[error("{0}")]
    Other(String),
}

impl PlayError {
    pub(crate) fn at(loc: &Loc, msg: impl Into<String>) -> Self {
        Self::At {
            loc: loc.clone(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
