//! Runs N `ansible.builtin.command` tasks through the runner on one target
//! and prints ms/task (used by `benches/compare/ansible.sh`).
//!
//! `ansible_bench PYTHON N [ssh HOST PORT USER KEY KNOWN_HOSTS]`
use mitogen_ansible::{ModuleSource, Runner, Status, Target, Task};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(|reg| {
        mitogen_ssh::register(reg);
        mitogen_ansible::register(reg);
    })?;
    let a: Vec<String> = std::env::args().collect();
    let (python, n) = (&a[1], a[2].parse::<usize>()?);
    let ctx = if a.get(3).map(String::as_str) == Some("ssh") {
        router.connect(
            &mitogen_ssh::Ssh::new(&a[4])
                .port(a[5].parse()?)
                .user(&a[6])
                .identity_file(&a[7])
                .known_hosts_file(&a[8])
                .connect_timeout(Duration::from_secs(20)),
        )?
    } else {
        router.connect(&mitogen_core::Local::new())?
    };
    let runner = Runner::new(ModuleSource::from_ansible_core(python)?);
    let target = Target::new(&ctx, "bench").python_interpreter("/usr/bin/python3");
    let task = Task::new("ansible.builtin.command").args(serde_json::json!({"cmd": "true"}));
    // Warm-up: payload shipped, fork server started.
    runner.run(target.clone(), &task)?;
    let t0 = Instant::now();
    for _ in 0..n {
        let r = runner.run(target.clone(), &task)?;
        assert_eq!(r.status, Status::Changed, "{}", r.result);
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("{ms:.2}");
    Ok(())
}
