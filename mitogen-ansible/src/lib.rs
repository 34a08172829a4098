//! mitogen-ansible: runs Ansible modules on mitogen contexts with
//! ansible-core's semantics (2.19 and 2.20 checked), in warm per-target
//! Python fork servers.
//!
//! One task's path:
//!
//! ```text
//!  controller                                   target context (the agent: this same binary)
//!  ──────────                                   ─────────────────────────────────────────────
//!  Runner::run(Target, Task)
//!   ├ action (action/: ansible-core's plugins)  normal | command/shell | raw | copy | template
//!   │   Act: result being shaped, the action's    | fetch | script | async_status; async:/poll:
//!   │   tmp dir, the task's interpreter, timings
//!   ├ ModuleSource::find (remembered per name)  (source.rs: ansible-core dir, collections,
//!   │   Style::detect (markers, in order)        library/ dirs, raw bytes)
//!   ├ interpreter discovery (once per context) ──Discover──► sh: echo FOUND; command -v ...
//!   ├ _ansible_* args (args.rs)
//!   ├ new-style: payload = module + module_utils (py/finder.py, AST closure, sha256)
//!   │   ──RunPython{files, missing blobs, args}──► cache ~/.cache/mitogen-ansible/blobs/<sha>
//!   │                                              tree trees/<id>/ansible/module_utils/...
//!   │                                              tmp dir ansible-tmp-<time>-<pid>-<rand> (§2)
//!   │                                              fork server (python -c forkserver.py TREE):
//!   │                                                basic, loader, legacy profiles imported;
//!   │                                                per module its imports preloaded, gc.freeze
//!   │                                                └ spare child forked ahead: setsid, pipes,
//!   │                                                   waits for its task, then
//!   │                                                   _loader.run_module(_ANSIBLE_ARGS, ...)
//!   │   ◄──────────── RawRun{rc, stdout, stderr} ──  waitpid, killpg at the deadline
//!   ├ other styles / raw ──RunProcess{files, cmd}──► tmp dir, args file, /bin/sh -c 'CMD && sleep 0'
//!   ├ copy/template/script: files ──put_file────► mitogen-service (fetch: fetch_file back)
//!   ├ async: module + async_wrapper launchers ───► ansible-core's async_wrapper, job files in
//!   │                                              ~/.ansible_async (async_status reads them)
//!   └ result shaping (result.rs): junk filter, deserialization failures, internal keys,
//!       *_lines, failed/changed defaults, warnings → TaskResult{status, result, register}
//! ```
//!
//! # Where things live
//! Arrows point one way: `runner` → `action` → `exec` → (`agent` calls,
//! `source`, `args`, `result`); nothing below imports what is above it.
//! - `runner.rs`: [`Runner`], the facade: one task on one target, the
//!   result shaped at the end. `task.rs`: the public [`Task`], [`Target`],
//!   [`TaskResult`] and [`Timings`].
//! - `action/`: ansible-core's action plugins, one file each (`normal.rs`
//!   holds the normal action, `command`/`shell` and `raw`), dispatched by
//!   name in `action/mod.rs`.
//! - `exec/`: the primitives actions are built from, as ansible-core's
//!   `ActionBase`: the per-task `Act` (result being shaped, tmp dir,
//!   timings), `Engine` (what is known per target context), running a
//!   module (`module.rs`), interpreter discovery (`python.rs`), starting an
//!   async job (`async_wrap.rs`).
//! - `source.rs`: finding modules and their payload (`module_utils`
//!   closure); `args.rs`: the `_ansible_*` arguments; `result.rs`: result
//!   shaping and the one status classification ([`Status`]).
//! - `agent.rs`, `forkserver.rs`, `process.rs`: the target side (what
//!   [`register`] registers): payload cache, fork servers, processes.
//! - [`jinja`], [`yaml`], [`vault`], [`pycompat`]: Ansible's template
//!   engine, YAML dialect, vault format and the Python behaviours results
//!   depend on, shared with the play layer (`mitogen-play`).
//!
//! # Getting started
//!
//! ```no_run
//! use mitogen_ansible::{ModuleSource, Runner, Status, Target, Task};
//! use serde_json::json;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Same binary on both ends: register the runner's functions.
//!     let router = mitogen_core::init(|reg| mitogen_ansible::register(reg))?;
//!     let ansible = Runner::new(
//!         ModuleSource::from_ansible_core("/path/venv/bin/python")?.library_dir("./library"),
//!     );
//!     let host = router.connect(&mitogen_core::Local::new())?;
//!     let task = Task::new("ansible.builtin.command").args(json!({"cmd": "uname -a"}));
//!     let r = ansible.run(Target::new(&host, "localhost"), &task)?;
//!     assert_eq!(r.status, Status::Changed);
//!     println!("{}", r.result); // the dict a callback plugin would get
//!     Ok(())
//! }
//! ```
//!
//! # What matches ansible-core, and how that is checked
//! `tests/conformance.rs` runs real ansible-core 2.19 (from the venv
//! `scripts/ansible-venv.sh` makes) and this runner on the same tasks and
//! compares the callback-level results field by field (and, for registered
//! cases, the `register:` view through `debug: var=`), ignoring only the
//! volatile fields listed there and the temp, job and backup names its
//! `normalize` makes alike: local, over ssh, and under become to root and
//! to an unprivileged user. It also checks that ansible-core's
//! `async_status` reads this runner's jobs and the reverse. The test
//! command runs it again against ansible-core 2.20 (Python 3.12): the
//! runner reads only module files and the module protocol, and where an
//! action plugin's result changed between releases (2.20's `fetch` names
//! the remote `file`) it follows the release in use
//! ([`ModuleSource::version_at_least`]).
//!
//! # Semantics kept, and where they differ
//! - Action plugins reimplemented: `copy` (content, src file or tree,
//!   `remote_src`, checksum short-circuit, backup, mode/owner, check and
//!   diff mode, no_log), `template` (rendered on the controller with
//!   `minijinja`, then `copy`), `fetch`, `script`, `async_status`, `raw`,
//!   `command`/`shell`, `package` and `service` (the backend module from
//!   `use:`, `ansible_package_use` or `ansible_facts.pkg_mgr`/`service_mgr`
//!   given in [`Task::vars`], else a `setup` run for that fact) and the
//!   normal action. `async:`/`poll:` run under ansible-core's own
//!   `async_wrapper`. Others (`debug`, `set_fact`, `assert`, `uri`,
//!   `unarchive`, `reboot`, ...) and any module of a collection that ships
//!   an action plugin for it (`plugins/action/<name>.py`, or routed in
//!   `meta/runtime.yml`) are refused with [`Error::UnsupportedAction`]
//!   ([`ModuleSource::unsupported_action`] says so before a run): never
//!   run as their bare module, which would do something else.
//! - Where a module runs: on the local connection in
//!   [`Target::local_dir`] (the play layer gives the playbook's directory,
//!   as ansible-core's loader basedir); over ssh in the login's working
//!   directory, become or not (ansible-core's `sudo -H` keeps the ssh
//!   session's cwd).
//! - Remote tmp dirs are named, permissioned and placed as ansible-core
//!   makes them (under the login user's home for a become to root, set
//!   with [`Target::become_from`]; in `/var/tmp` for an unprivileged
//!   become) but by the context itself, so there is no `setfacl`/`chmod`
//!   step: an unprivileged become user owns its dir outright.
//! - Templates: one Jinja engine for the crate ([`jinja`]), the same for
//!   a `template` task's file and the play layer's arguments: Jinja2
//!   semantics as `minijinja` implements them (ansible's `trim_blocks`,
//!   the source's trailing newlines put back after rendering as
//!   ansible-core's `_post_render_mutation` does, strict undefined, custom delimiters, None
//!   renders empty, Python-style bools/lists/dicts), Ansible's filters and
//!   tests ([`jinja::FILTERS`], [`jinja::TESTS`]) beside Jinja's builtins,
//!   and ansible-core 2.19's messages for undefined values (`'x' is
//!   undefined`, `object of type 'dict' has no attribute 'y'`) and
//!   unknown filters. A template sees [`Task::vars`], `inventory_hostname`
//!   and ansible-core's `template_*`; a [`jinja::TemplateHook`] on the
//!   task adds globals, variables and search paths (the play layer's gives
//!   lookups, `hostvars` and lazily templated variables). Without one
//!   there are no lookups.
//! - Not done: `until`/`retries`, `changed_when`/`failed_when`, loops,
//!   `delegate_to` (the play executor's), Windows targets, `decrypt`
//!   (vault) in `copy`.
//!
//! # Dependencies
//! `serde_json` (module arguments and results are JSON; `preserve_order`
//! because ansible-core keeps the task's argument order, which old-style
//! args files and results show), `serde` + `thiserror` (typed payloads and
//! errors), `parking_lot` + `crossbeam-channel` (locks, and waits with
//! deadlines on fork-server and process pipes), `rustix` (killing a task's
//! process group, the agent's uid: safe syscalls), `log`;
//! `mitogen-service` (file transfers for `copy`, `template`, `script`,
//! `fetch`: [`register`] registers it, so do not register it again),
//! `minijinja` + `minijinja-contrib` (`template` and the play layer
//! render on the controller with Jinja semantics, as ansible-core's
//! templar does; contrib gives Python's string and dict methods), `sha1` and `md-5`
//! (ansible-core's checksums: `copy` and `fetch` compare `sha1` with the
//! remote `stat`, `fetch` reports `md5sum`); for [`vault`], RustCrypto's
//! maintained primitives, default features off: `pbkdf2` (the key
//! derivation, PBKDF2-HMAC-SHA256), `hmac` (the vault's HMAC-SHA256,
//! compared in constant time), `aes` + `ctr` (AES-256-CTR), with `sha2`;
//! `fastrand` (the random parts of tmp dir, temp file and async job
//! names: one small seeded source for all of them).
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod action;
pub use action::template_vars;
mod agent;
mod args;
mod error;
mod exec;
mod forkserver;
pub mod jinja;
mod process;
pub mod pycompat;
mod result;
mod runner;
mod source;
mod task;
pub mod vault;
pub mod yaml;

pub use agent::register;
pub use error::Error;
pub use result::{Status, callback_view, strip_internal_keys};
pub use runner::Runner;
pub use source::{Module, ModuleSource, Style};
pub use task::{Connection, Target, Task, TaskResult, Timings};
