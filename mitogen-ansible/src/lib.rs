//! mitogen-ansible: runs Ansible modules on mitogen contexts with
//! ansible-core 2.19's semantics, in warm per-target Python fork servers.
//!
//! One task's path:
//!
//! ```text
//!  controller                                   target context (the agent: this same binary)
//!  ──────────                                   ─────────────────────────────────────────────
//!  Runner::run(Target, Task)
//!   ├ action: normal | command/shell | raw      (runner.rs: ansible-core's action plugins)
//!   ├ ModuleSource::find  FQCN/legacy/short →   (source.rs: ansible-core dir, collections,
//!   │   Style::detect (markers, in order)        library/ dirs, raw bytes)
//!   ├ interpreter discovery (once per context) ──Discover──► sh: echo FOUND; command -v ...
//!   ├ _ansible_* args (args.rs)
//!   ├ new-style: payload = module + module_utils (py/finder.py, AST closure, sha256)
//!   │   ──RunPython{files, missing blobs, args}──► cache ~/.cache/mitogen-ansible/blobs/<sha>
//!   │                                              tree trees/<id>/ansible/module_utils/...
//!   │                                              fork server (python -c forkserver.py TREE,
//!   │                                                basic + AnsiballZ loader imported once)
//!   │                                                └ fork → child: setsid, pipes on 0/1/2,
//!   │                                                   _loader.run_module(_ANSIBLE_ARGS, ...)
//!   │   ◄──────────── RawRun{rc, stdout, stderr} ──  waitpid, killpg at the deadline
//!   ├ other styles / raw ──RunProcess{files, cmd}──► tmp dir, args file, /bin/sh -c 'CMD && sleep 0'
//!   └ result shaping (result.rs): junk filter, deserialization failures, internal keys,
//!       *_lines, failed/changed defaults, warnings → TaskResult{status, result, register}
//! ```
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
//! compares the callback-level results field by field, ignoring only the
//! volatile fields listed there.
//!
//! # Dependencies
//! `serde_json` (module arguments and results are JSON; `preserve_order`
//! because ansible-core keeps the task's argument order, which old-style
//! args files and results show), `serde` + `thiserror` (typed payloads and
//! errors), `parking_lot` + `crossbeam-channel` (locks, and waits with
//! deadlines on fork-server and process pipes), `rustix` (killing a task's
//! process group, the agent's uid: safe syscalls), `log`.
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod action;
mod agent;
mod args;
mod error;
mod forkserver;
mod process;
mod pycompat;
mod result;
mod runner;
mod source;

pub use agent::register;
pub use error::Error;
pub use result::Status;
pub use runner::{Connection, Runner, Target, Task, TaskResult, Timings};
pub use source::{Module, ModuleSource, Style};
