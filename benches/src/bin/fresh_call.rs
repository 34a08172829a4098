//! One fresh controller process: connect over ssh, make one call, exit.
//! What `compare/fresh.sh` times against `ssh host true` (the whole
//! process, as a user's command would run).
//!
//! Usage: `fresh_call --port P --key K --known-hosts F [--user U]
//! [--cache-dir DIR] [--controller-cache DIR] [--control-path P]`
//! (`--control-path`: share an OpenSSH master there, kept 60 s after its
//! last session, as `Ssh::multiplex` and Ansible do; `--cache-dir`: only this
//! cache directory on the target, e.g. an emptied one for a cold start;
//! `--controller-cache`: where the controller keeps the agent's hash and
//! compressed forms, default `~/.cache/mitogen-rs/controller`).
//! Prints `hit|miss <uploaded bytes> <prepared bytes>` on stderr with
//! `--verbose`.

use mitogen_benches::Noop;
use mitogen_benches::arg_str as arg;
use mitogen_core::transport::bootstrap::Bootstrap;
use mitogen_ssh::Ssh;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(mitogen_benches::register)?;
    let port: u16 = arg("--port").ok_or("--port")?.parse()?;
    let mut boot = Bootstrap::new();
    if let Some(d) = arg("--cache-dir") {
        boot = boot.only_cache_dir(d);
    }
    if let Some(d) = arg("--controller-cache") {
        boot = boot.controller_cache(d);
    }
    let ssh = Ssh::new("127.0.0.1")
        .port(port)
        .user(&arg("--user").unwrap_or_else(|| "mtg-key".into()))
        .identity_file(arg("--key").ok_or("--key")?)
        .known_hosts_file(arg("--known-hosts").ok_or("--known-hosts")?)
        .bootstrap(boot);
    let ssh = match arg("--control-path") {
        Some(p) => ssh
            .multiplex(std::time::Duration::from_secs(60))
            .control_path(p),
        None => ssh,
    };
    let ctx = router.connect(&ssh)?;
    ctx.call::<Noop>(&())?;
    if std::env::args().any(|a| a == "--verbose") {
        if let Some(i) = ctx.bootstrap_info() {
            eprintln!(
                "{} {} {}",
                if i.cache_hit { "hit" } else { "miss" },
                i.uploaded_bytes,
                i.prepared_bytes
            );
        }
    }
    Ok(())
}
