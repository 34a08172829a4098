//! Runs a few Ansible modules and actions on a target and prints each
//! result as ansible-core's callback would get it.
//!
//! ```text
//! cargo run -p mitogen-ansible --example run_modules -- VENV_PYTHON            # this machine
//! cargo run -p mitogen-ansible --example run_modules -- VENV_PYTHON USER@HOST  # over ssh
//! ```
//! `VENV_PYTHON` is a python with ansible-core 2.19 (`scripts/ansible-venv.sh`
//! makes one and prints its path). The target needs only ssh and python3;
//! its interpreter is discovered as ansible-core does, unless
//! `ANSIBLE_PYTHON_INTERPRETER` names one.
use mitogen_ansible::{Connection, ModuleSource, Runner, Target, Task};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Same binary on both ends: register ssh and the runner's functions.
    let router = mitogen_core::init(|reg| {
        mitogen_ssh::register(reg);
        mitogen_ansible::register(reg);
    })?;
    let args: Vec<String> = std::env::args().collect();
    let python = args
        .get(1)
        .ok_or("usage: run_modules VENV_PYTHON [USER@HOST]")?;
    let (ctx, target_name, connection) = match args.get(2) {
        Some(dest) => {
            let (user, host) = dest
                .split_once('@')
                .map_or((None, dest.as_str()), |(u, h)| (Some(u), h));
            let mut ssh = mitogen_ssh::Ssh::new(host);
            if let Some(u) = user {
                ssh = ssh.user(u);
            }
            let conn = Connection::Ssh {
                host: host.to_owned(),
            };
            (router.connect(&ssh)?, host.to_owned(), conn)
        }
        None => (
            router.connect(&mitogen_core::Local::new())?,
            "localhost".to_owned(),
            Connection::Local,
        ),
    };
    let runner = Runner::new(ModuleSource::from_ansible_core(python)?);
    let mut target = Target::new(&ctx, &target_name).connection(connection);
    if let Ok(p) = std::env::var("ANSIBLE_PYTHON_INTERPRETER") {
        target = target.python_interpreter(&p);
    }
    let dest = format!("/tmp/mitogen-ansible-example-{}.txt", std::process::id());
    let tasks = [
        ("ping", json!({})),
        ("command", json!({"cmd": "uname -sr"})),
        ("copy", json!({"content": "hello\n", "dest": dest})),
        ("stat", json!({"path": dest, "get_mime": false})),
        ("file", json!({"path": dest, "state": "absent"})),
    ];
    for (module, args) in tasks {
        let task = Task::new(&format!("ansible.builtin.{module}")).args(args);
        let r = runner.run(target.clone(), &task)?;
        println!(
            "{module}: {:?} ({:.1} ms)\n{}\n",
            r.status,
            r.timings.total.as_secs_f64() * 1000.0,
            serde_json::to_string_pretty(&r.result)?
        );
    }
    Ok(())
}
