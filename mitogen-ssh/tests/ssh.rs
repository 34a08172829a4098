//! mitogen-ssh against real programs: a throw-away sshd on 127.0.0.1, real
//! sudo/su/doas with the test users `scripts/test-hosts.sh setup` creates,
//! and two network namespaces for a host reachable only through another.

use mitogen_core::transport::bootstrap::Bootstrap;
use mitogen_core::{
    CallCx, ConnectError, Context, FnError, Function, Local, Registry, Router, RouterOptions,
};
use mitogen_ssh::{AuthError, ControlCommand, Doas, Exec, HostKeyChecking, Ssh, Su, Sudo};
use mitogen_test_support::sshd::{Sshd, sshd_available};
use mitogen_test_support::{kill9, tests};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Who and where the agent is.
struct Whoami;
impl Function for Whoami {
    const NAME: &'static str = "ssh-test::whoami";
    type Args = ();
    type Output = (String, u32, String, String);
    fn call(_: &CallCx<'_>, (): ()) -> Result<Self::Output, FnError> {
        let uts = std::fs::read_link("/proc/self/ns/uts")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok((
            mitogen_core::layer::user_name(),
            std::process::id(),
            mitogen_core::layer::host_name(),
            uts,
        ))
    }
}

/// Sleeps for the given milliseconds.
struct Sleep;
impl Function for Sleep {
    const NAME: &'static str = "ssh-test::sleep";
    type Args = u64;
    type Output = ();
    fn call(_: &CallCx<'_>, ms: u64) -> Result<(), FnError> {
        std::thread::sleep(Duration::from_millis(ms));
        Ok(())
    }
}

/// User, host name and network namespace (`net:[inode]`) of the agent.
struct WhereAmI;
impl Function for WhereAmI {
    const NAME: &'static str = "ssh-test::where-am-i";
    type Args = ();
    type Output = (String, String, String);
    fn call(_: &CallCx<'_>, (): ()) -> Result<Self::Output, FnError> {
        let net = std::fs::read_link("/proc/self/ns/net")?;
        Ok((
            mitogen_core::layer::user_name(),
            mitogen_core::layer::host_name(),
            net.display().to_string(),
        ))
    }
}

/// Creates the file `started`, then returns once the file `release`
/// exists (checked every 5 ms; after a minute it gives up, so a failed
/// test never leaves an agent busy). Tests synchronise on `started`
/// instead of sleeping.
struct Hold;
impl Function for Hold {
    const NAME: &'static str = "ssh-test::hold";
    type Args = (String, String);
    type Output = ();
    fn call(_: &CallCx<'_>, (started, release): (String, String)) -> Result<(), FnError> {
        std::fs::write(&started, b"")?;
        let end = Instant::now() + Duration::from_secs(60);
        while !std::path::Path::new(&release).exists() {
            if Instant::now() >= end {
                return Err("hold: never released".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// A world-writable directory for [`Hold`]'s files (agents run as several
/// users), removed on drop.
struct HoldDir(std::path::PathBuf);

impl HoldDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mitogen-hold-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .unwrap();
        Self(dir)
    }

    /// Arguments for a [`Hold`] called `name`.
    fn args(&self, name: &str) -> (String, String) {
        let p = |what: &str| self.0.join(format!("{name}.{what}")).display().to_string();
        (p("started"), p("release"))
    }

    fn started(&self, name: &str) -> bool {
        std::path::Path::new(&self.args(name).0).exists()
    }

    fn release(&self, name: &str) {
        std::fs::write(self.args(name).1, b"").unwrap();
    }
}

impl Drop for HoldDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Only registered when MITOGEN_TEST_EXTRA_FN is set: changes the registry.
struct Extra;
impl Function for Extra {
    const NAME: &'static str = "ssh-test::extra";
    type Args = ();
    type Output = ();
    fn call(_: &CallCx<'_>, (): ()) -> Result<(), FnError> {
        Ok(())
    }
}

fn register(reg: &mut Registry) {
    mitogen_ssh::register(reg);
    reg.add::<Whoami>()
        .add::<Sleep>()
        .add::<WhereAmI>()
        .add::<Hold>();
    if std::env::var_os("MITOGEN_TEST_EXTRA_FN").is_some() {
        reg.add::<Extra>();
    }
}

fn main() {
    mitogen_core::agent_main(register);
    if let Some(dirs) = std::env::var_os(FRESH_START_ENV) {
        fresh_start(&dirs.to_string_lossy());
    }
    remove_old_caches();
    mitogen_test_support::run(tests![
        argv_presets,
        version_mismatch_is_clear,
        exec_prefix_unshare,
        no_agent_for_platform,
        sudo_without_password,
        sudo_with_password_and_wrong_password,
        sudo_refusals,
        su_with_password,
        doas_with_and_without_password,
        ssh_key_login,
        issue9_wrong_sudo_password_over_ssh_is_typed,
        ssh_password_login_and_wrong_password,
        banner_mentioning_password_is_not_a_prompt,
        lecture_mentioning_password_is_not_a_prompt,
        custom_prompt_overlapping_builtin_counts_once,
        pwfeedback_control_characters_not_in_errors,
        ssh_host_key_mismatch,
        ssh_master_is_reused_between_runs,
        concurrent_first_connections_share_one_control_path,
        ssh_unknown_host_and_refused,
        ssh_connect_timeout,
        cache_miss_then_hit_and_corruption_replaced,
        cached_agent_rewritten_same_size_old_mtime_is_a_miss,
        cached_agent_replaced_with_old_mtime_is_a_miss,
        cached_agent_with_corrupt_text_is_a_miss,
        cached_agent_of_random_bytes_is_a_miss,
        upload_is_checked_without_a_hash_tool,
        cached_agent_in_dir_remounted_noexec_falls_back,
        cache_dir_of_another_user_is_noted_and_passed_over,
        no_usable_cache_dir_names_each_refusal,
        fresh_controller_on_warm_target_reads_no_agent_bytes,
        damaged_controller_cache_is_dropped_after_one_failure,
        concurrent_bootstraps_share_cache,
        connect_all_with_limit,
        become_pool_recycles_lru_idle,
        upload_raw_or_gzip_and_explicit_agent_binary,
        three_hop_chain_through_namespaces,
    ]);
}

fn router() -> Router {
    Router::new(RouterOptions::new(), Registry::new(register)).expect("router")
}

fn whoami(ctx: &Context) -> String {
    ctx.call::<Whoami>(&()).expect("whoami").0
}

/// The typed refusal, from the method itself or from an intermediary.
fn auth_err(e: &ConnectError) -> Option<&AuthError> {
    e.downcast_ref::<AuthError>()
}

/// Removes the fresh cache directories earlier runs of this binary left in
/// /tmp (each holds an uploaded test binary; a run cannot remove its own, as
/// agents still run from them until the run ends).
fn remove_old_caches() {
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mine = format!("mitogen-rs-test-cache-{}-", std::process::id());
        if name.starts_with("mitogen-rs-test-cache-") && !name.starts_with(&mine) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh cache directory name per call, so tests see misses they expect.
fn fresh_cache() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/tmp/mitogen-rs-test-cache-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn argv_presets() {
    let d = Exec::docker("web").argv();
    assert_eq!(&d[..6], ["docker", "exec", "-i", "web", "sh", "-c"]);
    let p = Exec::podman("db").argv();
    assert_eq!(&p[..4], ["podman", "exec", "-i", "db"]);
    let k = Exec::kubectl("pod-1", Some("app"), Some("prod")).argv();
    assert_eq!(
        &k[..9],
        [
            "kubectl", "exec", "-i", "-n", "prod", "pod-1", "-c", "app", "--"
        ]
    );
    let s = Ssh::new("deploy@web1:2222").argv();
    let joined = s.join(" ");
    for want in [
        "-p 2222",
        "-l deploy",
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "Compression=no",
        " web1 sh -c '",
    ] {
        assert!(joined.contains(want), "{want:?} missing from {joined}");
    }
    let s = Ssh::new("h")
        .password("x")
        .host_key_checking(HostKeyChecking::AcceptNew)
        .argv()
        .join(" ");
    assert!(!s.contains("BatchMode") && s.contains("accept-new"), "{s}");
    let su = Sudo::new("root").login(true).argv().join(" ");
    assert!(
        su.starts_with("sudo -n -u root -p") && su.contains(" -i -- sh -c "),
        "{su}"
    );
    assert_eq!(&Doas::new("root").argv()[..4], ["doas", "-n", "-u", "root"]);
    assert_eq!(
        &Su::new("bob").login(true).argv()[..4],
        ["su", "-", "bob", "-c"]
    );
}

fn version_mismatch_is_clear() {
    let r = router();
    let e = r
        .connect(&Local::new().env("MITOGEN_TEST_EXTRA_FN", "1"))
        .unwrap_err();
    assert!(matches!(e, ConnectError::VersionMismatch { .. }), "{e}");
    assert!(e.to_string().contains("same binary"), "{e}");
}

fn exec_prefix_unshare() {
    if !rustix::process::geteuid().is_root() {
        mitogen_test_support::skip("exec_prefix_unshare needs root (unshare --uts)");
        return;
    }
    let r = router();
    let ctx = r
        .connect(
            &Exec::new(["unshare", "--uts", "--"])
                .bootstrap(Bootstrap::new().only_cache_dir(fresh_cache())),
        )
        .unwrap();
    let (_, _, _, uts) = ctx.call::<Whoami>(&()).unwrap();
    let mine = std::fs::read_link("/proc/self/ns/uts")
        .unwrap()
        .display()
        .to_string();
    assert_ne!(uts, mine, "agent should run in its own UTS namespace");
}

fn no_agent_for_platform() {
    let fake = std::env::temp_dir().join(format!("mitogen-fake-uname-{}", std::process::id()));
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("uname"),
        "#!/bin/sh\ncase \"$1\" in -s) echo Plan9;; -m) echo mips;; -sm) echo Plan9 mips;; esac\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(fake.join("uname"))
        .status()
        .unwrap();
    let r = router();
    let path = format!("PATH={}:/usr/bin:/bin", fake.display());
    let e = r.connect(&Exec::new(["env", path.as_str()])).unwrap_err();
    let _ = std::fs::remove_dir_all(&fake);
    assert!(matches!(e, ConnectError::NoAgent { .. }), "{e}");
    assert!(e.to_string().contains("Plan9 mips"), "{e}");
}

fn need_hosts() -> bool {
    sshd_available()
}

fn sudo_without_password() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let t = r.connect(&Sudo::new("mtg-target")).unwrap();
    assert_eq!(whoami(&t), "mtg-target");
    // local -> sudo -> sudo: the second hop is started by the first.
    let s = r.connect(&Sudo::new("mtg-sudo")).unwrap();
    let t2 = r.connect_via(&Sudo::new("mtg-target"), &s).unwrap();
    assert_eq!(whoami(&t2), "mtg-target");
}

fn sudo_with_password_and_wrong_password() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let u = r.connect(&Sudo::new("mtg-sudopw")).unwrap();
    let root = r
        .connect_via(&Sudo::new("root").password("mtg-sudopw-secret"), &u)
        .unwrap();
    assert_eq!(whoami(&root), "root");
    let t0 = Instant::now();
    let e = r
        .connect_via(&Sudo::new("root").password("not-the-password"), &u)
        .unwrap_err();
    // Hop 2 (sudo run by the sudo context): still an AuthError, typed.
    assert!(
        matches!(auth_err(&e), Some(AuthError::WrongPassword { program, .. }) if program == "sudo"),
        "{e}"
    );
    assert!(matches!(e, ConnectError::Via { .. }), "{e}");
    // Noticed at the second prompt, not at the 30 s connect deadline.
    let took = t0.elapsed();
    eprintln!("    wrong sudo password reported after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let e = r.connect_via(&Sudo::new("root"), &u).unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::PasswordRequired { .. })),
        "{e}"
    );
}

fn sudo_refusals() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let n = r.connect(&Sudo::new("mtg-nosudo")).unwrap();
    let e = r
        .connect_via(&Sudo::new("root").password("mtg-nosudo-secret"), &n)
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::NotPermitted { .. })),
        "{e}"
    );
    let e = r.connect(&Sudo::new("no-such-user-mtg")).unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::UnknownUser { .. })),
        "{e}"
    );
}

fn su_with_password() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let s = r.connect(&Sudo::new("mtg-sudo")).unwrap();
    let t = r
        .connect_via(&Su::new("mtg-target").password("mtg-target-secret"), &s)
        .unwrap();
    assert_eq!(whoami(&t), "mtg-target");
    let t0 = Instant::now();
    let e = r
        .connect_via(&Su::new("mtg-target").password("wrong"), &s)
        .unwrap_err();
    assert!(e.to_string().contains("wrong password"), "{e}");
    // Noticed when su exits, not at the 30 s connect deadline.
    let took = t0.elapsed();
    eprintln!("    wrong su password reported after {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Root needs no password.
    let t = r.connect(&Su::new("mtg-target")).unwrap();
    assert_eq!(whoami(&t), "mtg-target");
}

fn doas_with_and_without_password() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let s = r.connect(&Sudo::new("mtg-sudo")).unwrap();
    let root = r.connect_via(&Doas::new("root"), &s).unwrap();
    assert_eq!(whoami(&root), "root");
    let p = r.connect(&Sudo::new("mtg-sudopw")).unwrap();
    let root = r
        .connect_via(&Doas::new("root").password("mtg-sudopw-secret"), &p)
        .unwrap();
    assert_eq!(whoami(&root), "root");
    let e = r
        .connect_via(&Doas::new("root").password("wrong"), &p)
        .unwrap_err();
    assert!(e.to_string().contains("wrong password"), "{e}");
}

fn key_ssh(sshd: &Sshd, user: &str) -> Ssh {
    Ssh::new(sshd.host())
        .port(sshd.port())
        .user(user)
        .identity_file(sshd.client_key())
        .known_hosts_file(sshd.known_hosts())
        .connect_timeout(Duration::from_secs(20))
}

fn ssh_key_login() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let c = r.connect(&key_ssh(&sshd, "mtg-key")).unwrap();
    assert_eq!(whoami(&c), "mtg-key");
    // ssh -> sudo on the target.
    let root = r
        .connect_via(
            &Sudo::new("mtg-target"),
            &r.connect(&key_ssh(&sshd, "mtg-sudo")).unwrap(),
        )
        .unwrap();
    assert_eq!(whoami(&root), "mtg-target");
}

/// A wrong sudo password behind ssh (hop 2) and behind ssh and sudo (hop 3)
/// is classified as such: the AuthError crosses the hops typed.
fn issue9_wrong_sudo_password_over_ssh_is_typed() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let host = r.connect(&key_ssh(&sshd, "mtg-sudopw")).unwrap();
    let e = r
        .connect_via(&Sudo::new("root").password("wrong-on-hop-2"), &host)
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::WrongPassword { program, .. }) if program == "sudo"),
        "{e}"
    );
    // One hop further: ssh -> sudo (no password) -> sudo with a wrong one.
    let host = r.connect(&key_ssh(&sshd, "mtg-sudo")).unwrap();
    let mid = r.connect_via(&Sudo::new("mtg-sudopw"), &host).unwrap();
    let e = r
        .connect_via(&Sudo::new("root").password("wrong-on-hop-3"), &mid)
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::WrongPassword { .. })),
        "{e}"
    );
}

fn pw_ssh(sshd: &Sshd, password: &str) -> Ssh {
    Ssh::new(sshd.host())
        .port(sshd.port())
        .user("mtg-pw")
        .password(password)
        .option("PreferredAuthentications", "password")
        .option("PubkeyAuthentication", "no")
        .known_hosts_file(sshd.known_hosts())
        .connect_timeout(Duration::from_secs(20))
}

fn ssh_password_login_and_wrong_password() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let c = r.connect(&pw_ssh(&sshd, "mtg-pw-secret")).unwrap();
    assert_eq!(whoami(&c), "mtg-pw");
    let e = r.connect(&pw_ssh(&sshd, "wrong")).unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::WrongPassword { .. })),
        "{e}"
    );
    // Key-only user without a key: permission denied, naming the methods.
    let e = r
        .connect(
            &Ssh::new(sshd.host())
                .port(sshd.port())
                .user("mtg-key")
                .option("PubkeyAuthentication", "no")
                .option("PasswordAuthentication", "no")
                .known_hosts_file(sshd.known_hosts()),
        )
        .unwrap_err();
    match auth_err(&e) {
        Some(AuthError::PermissionDenied { methods, .. }) => {
            assert!(methods.contains("publickey"), "{methods}")
        }
        _ => panic!("expected PermissionDenied, got {e}"),
    }
}

/// Issue item 5: banner text on ssh's stderr is not a prompt. The second
/// banner even ends in an unterminated "Password:" line: prompts are read
/// on ssh's terminal only.
fn banner_mentioning_password_is_not_a_prompt() {
    if !need_hosts() {
        return;
    }
    for banner in [
        "Authorised use only.\nNOTICE: your Password: must be rotated every 90 days.\n",
        "NOTICE: your Password: must be rotated every 90 days.\nPassword:",
    ] {
        let sshd = Sshd::start_with_banner("127.0.0.1", None, banner).unwrap();
        let r = router();
        let c = r.connect(&key_ssh(&sshd, "mtg-key")).unwrap();
        assert_eq!(whoami(&c), "mtg-key");
        let c = r.connect(&pw_ssh(&sshd, "mtg-pw-secret")).unwrap();
        assert_eq!(whoami(&c), "mtg-pw");
        let e = r.connect(&pw_ssh(&sshd, "wrong")).unwrap_err();
        assert!(
            matches!(auth_err(&e), Some(AuthError::WrongPassword { .. })),
            "{e}"
        );
    }
}

/// A stand-in for sudo and doas, written to a fresh file: it prints a
/// lecture that mentions "Password:" on its terminal, asks for `password`
/// up to three times (with the prompt `-p` gives, or `Password: `),
/// echoing pwfeedback stars and erasing one with backspace, then runs the
/// command after its options as the caller.
struct FakeBecome {
    dir: std::path::PathBuf,
}

impl FakeBecome {
    fn new(password: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mitogen-fake-become-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            r#"#!/bin/sh
prompt='Password: '
while [ $# -gt 0 ]; do
  case "$1" in
    -p) prompt=$2; shift 2;;
    -u) shift 2;;
    --) shift; break;;
    -*) shift;;
    *) break;;
  esac
done
exec 3<>/dev/tty
printf '\nWe trust you have received the usual lecture.\nNOTICE: your Password: must be rotated every 90 days.\n\n' >&3
n=0
while [ $n -lt 3 ]; do
  printf '%s' "$prompt" >&3
  stty -echo <&3
  IFS= read -r pw <&3
  stty echo <&3
  printf '****\b \b\n' >&3
  if [ "$pw" = '{password}' ]; then exec 3>&-; exec "$@"; fi
  printf 'Sorry, try again.\n' >&3
  n=$((n + 1))
done
echo "fake: 3 incorrect password attempts" >&2
exit 1
"#
        );
        let path = dir.join("fake-become");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Self { dir }
    }

    fn program(&self) -> String {
        self.dir.join("fake-become").display().to_string()
    }
}

impl Drop for FakeBecome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Issue item 5, become side: a lecture that mentions "Password:" (with a
/// custom prompt that matches it, for sudo; with doas's own) is not a
/// prompt.
fn lecture_mentioning_password_is_not_a_prompt() {
    let fake = FakeBecome::new("right");
    let me = mitogen_core::layer::user_name();
    let r = router();
    let c = r
        .connect(
            &Sudo::new("root")
                .program(&fake.program())
                .password("right")
                .prompt("Password:"),
        )
        .unwrap();
    assert_eq!(whoami(&c), me);
    let c = r
        .connect(&Doas::new("root").program(&fake.program()).password("right"))
        .unwrap();
    assert_eq!(whoami(&c), me);
    let e = r
        .connect(&Doas::new("root").program(&fake.program()).password("wrong"))
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::WrongPassword { .. })),
        "{e}"
    );
}

/// Issue item 6: a custom prompt that overlaps the built-in one: one
/// prompt on screen is answered once, and a correct password works.
fn custom_prompt_overlapping_builtin_counts_once() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let u = r.connect(&Sudo::new("mtg-sudopw")).unwrap();
    for extra in ["Password:", "sudo", "[mitogen-rs sudo] password:"] {
        let root = r
            .connect_via(
                &Sudo::new("root")
                    .password("mtg-sudopw-secret")
                    .prompt(extra),
                &u,
            )
            .unwrap_or_else(|e| panic!("with .prompt({extra:?}): {e}"));
        assert_eq!(whoami(&root), "root");
    }
    let root = r
        .connect_via(
            &Doas::new("root")
                .password("mtg-sudopw-secret")
                .prompt("password"),
            &u,
        )
        .unwrap();
    assert_eq!(whoami(&root), "root");
    // A wrong password is still one.
    let e = r
        .connect_via(&Sudo::new("root").password("wrong").prompt("Password:"), &u)
        .unwrap_err();
    assert!(e.to_string().contains("wrong password"), "{e}");
}

/// Issue item 13: what sudo printed reaches the error as text, without the
/// backspaces of `pwfeedback` or other control characters.
fn pwfeedback_control_characters_not_in_errors() {
    let fake = FakeBecome::new("right");
    let r = router();
    let e = r
        .connect(&Sudo::new("root").program(&fake.program()).password("wrong"))
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::WrongPassword { .. })),
        "{e}"
    );
    let shown = e.to_string();
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert!(shown.contains("***"), "{shown:?}");
}

/// Runs `ssh -O command` for `ssh`'s master; returns whether it succeeded
/// and what it printed on stderr.
fn ssh_control(ssh: &Ssh, command: ControlCommand) -> (bool, String) {
    let argv = ssh.control_argv(command);
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Time to connect a fresh router's context and make its first call.
fn time_to_first_call(ssh: &Ssh) -> (Duration, Router, Context) {
    let t0 = Instant::now();
    let r = router();
    let c = r.connect(ssh).unwrap();
    assert_eq!(whoami(&c), "mtg-key");
    (t0.elapsed(), r, c)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Performance goal 7 (runs back to back): with `multiplex`, the second
/// run's connection goes through the first one's OpenSSH master: the
/// sshd sees one connection, and no handshake is repeated.
/// Several first connections at once through one ControlPath: every one
/// connects (one becomes the master; ssh runs the others without it or
/// through it), and the master is cleaned up.
fn concurrent_first_connections_share_one_control_path() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let shared = key_ssh(&sshd, "mtg-key").multiplex(Duration::from_secs(30));
    let _ = ssh_control(&shared, ControlCommand::Exit);
    let r = router();
    let results: Vec<_> = std::thread::scope(|scope| {
        let joins: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| r.connect(&shared).map(|c| whoami(&c))))
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let _ = ssh_control(&shared, ControlCommand::Exit);
    for res in &results {
        match res {
            Ok(user) => assert_eq!(user, "mtg-key"),
            Err(e) => panic!(
                "a concurrent first connection failed: {}",
                mitogen_core::error_chain(e)
            ),
        }
    }
}

fn ssh_master_is_reused_between_runs() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let listener = sshd.pid().unwrap();
    let plain = key_ssh(&sshd, "mtg-key");
    // Warm the agent cache, so every figure below is a cache hit.
    drop(time_to_first_call(&plain));
    let plain_ms = median((0..5).map(|_| time_to_first_call(&plain).0).collect());

    let shared = plain.multiplex(Duration::from_secs(30));
    assert!(
        !ssh_control(&shared, ControlCommand::Check).0,
        "no master before the first run"
    );
    let (first, _r1, c1) = time_to_first_call(&shared);
    let (ok, said) = ssh_control(&shared, ControlCommand::Check);
    assert!(ok, "master running after the first run: {said}");
    let master: u32 = said
        .split("pid=")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said:?}"));
    // Its socket is in a directory only we can enter.
    let dir = shared
        .argv()
        .iter()
        .find_map(|a| a.strip_prefix("ControlPath="))
        .map(|p| std::path::Path::new(p).parent().unwrap().to_owned())
        .unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());

    // Back-to-back runs: fresh routers, while the first still runs and
    // after it has ended (the master persists).
    let (second, r2, c2) = time_to_first_call(&shared);
    assert_eq!(
        mitogen_test_support::children_of(listener).len(),
        1,
        "two contexts, one ssh connection"
    );
    drop((c1, _r1, c2, r2));
    let reused_ms = median((0..5).map(|_| time_to_first_call(&shared).0).collect());
    let (ok, said) = ssh_control(&shared, ControlCommand::Check);
    assert!(
        ok && said.contains(&format!("pid={master}")),
        "same master: {said}"
    );
    eprintln!(
        "    time to first call: plain ssh {plain_ms:?} (median of 5); \
         first run with multiplex {first:?}; second {second:?}; \
         later runs {reused_ms:?} (median of 5)"
    );
    assert!(reused_ms < plain_ms, "reusing the master should be faster");

    // The master is a daemon: end it, or it outlives the test.
    let (ok, said) = ssh_control(&shared, ControlCommand::Exit);
    assert!(ok, "ssh -O exit: {said}");
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(5), || {
            mitogen_test_support::process_gone(master)
        }),
        "master {master} still running"
    );
    assert!(!ssh_control(&shared, ControlCommand::Check).0);
}

fn ssh_host_key_mismatch() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let wrong = sshd.wrong_known_hosts().unwrap();
    let e = r
        .connect(&key_ssh(&sshd, "mtg-key").known_hosts_file(&wrong))
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::HostKeyMismatch { .. })),
        "{e}"
    );
    let empty = sshd.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let e = r
        .connect(&key_ssh(&sshd, "mtg-key").known_hosts_file(&empty))
        .unwrap_err();
    assert!(
        matches!(
            auth_err(&e),
            Some(AuthError::HostKeyUnknown { .. } | AuthError::HostKeyMismatch { .. })
        ),
        "{e}"
    );
    let ok = r
        .connect(
            &key_ssh(&sshd, "mtg-key")
                .known_hosts_file(&empty)
                .host_key_checking(HostKeyChecking::AcceptNew),
        )
        .unwrap();
    assert_eq!(whoami(&ok), "mtg-key");
}

fn ssh_unknown_host_and_refused() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let e = r
        .connect(&Ssh::new("no-such-host.invalid").host_key_checking(HostKeyChecking::Ignore))
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::UnknownHost { .. })),
        "{e}"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = r
        .connect(
            &Ssh::new("127.0.0.1")
                .port(port)
                .host_key_checking(HostKeyChecking::Ignore),
        )
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::ConnectionRefused { .. })),
        "{e}"
    );
}

fn ssh_connect_timeout() {
    if !need_hosts() {
        return;
    }
    // Accepts TCP connections (the kernel does) but never speaks.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let r = router();
    let t0 = Instant::now();
    let e = r
        .connect(
            &Ssh::new("127.0.0.1")
                .port(port)
                .host_key_checking(HostKeyChecking::Ignore)
                .connect_timeout(Duration::from_secs(2)),
        )
        .unwrap_err();
    // The 2 s deadline is honoured (the point of the test), generously.
    let took = t0.elapsed();
    eprintln!("    2 s connect timeout reported after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        e.to_string().contains("timed out") || matches!(e, ConnectError::Timeout { .. }),
        "{e}"
    );
    drop(l);
}

fn cache_miss_then_hit_and_corruption_replaced() {
    if !need_hosts() {
        return;
    }
    let sshd = Sshd::start("127.0.0.1", None).unwrap();
    let r = router();
    let boot = Bootstrap::new().only_cache_dir(fresh_cache());
    let first = r
        .connect(&key_ssh(&sshd, "mtg-key").bootstrap(boot.clone()))
        .unwrap();
    let i1 = first.bootstrap_info().unwrap().clone();
    assert!(!i1.cache_hit && i1.uploaded_bytes > 100_000, "{i1:?}");
    let second = r
        .connect(&key_ssh(&sshd, "mtg-key").bootstrap(boot.clone()))
        .unwrap();
    let i2 = second.bootstrap_info().unwrap().clone();
    assert!(i2.cache_hit && i2.uploaded_bytes == 0, "{i2:?}");
    assert_eq!(i1.cache_path, i2.cache_path);
    eprintln!(
        "    cache miss uploaded {} B (+{} B of script); hit uploaded {} B (+{} B of script)",
        i1.uploaded_bytes, i1.script_bytes, i2.uploaded_bytes, i2.script_bytes
    );
    // Corrupt the cached agent (same size, one byte flipped): detected, replaced.
    let mut bytes = std::fs::read(&i1.cache_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    // (A running agent keeps the old file busy: replace it, as a disk
    // error or a careless copy would.)
    let tmp = format!("{}.corrupt", i1.cache_path);
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &i1.cache_path).unwrap();
    let third = r
        .connect(&key_ssh(&sshd, "mtg-key").bootstrap(boot))
        .unwrap();
    let i3 = third.bootstrap_info().unwrap();
    assert!(!i3.cache_hit && i3.uploaded_bytes > 0, "{i3:?}");
    assert_eq!(whoami(&third), "mtg-key");
    assert_ne!(std::fs::read(&i1.cache_path).unwrap()[mid], bytes[mid]);
    // An unusable cache directory falls back to the default ones.
    let fallback = r
        .connect(
            &key_ssh(&sshd, "mtg-key").bootstrap(Bootstrap::new().cache_dir("/proc/mitogen-nope")),
        )
        .unwrap();
    assert!(
        !fallback
            .bootstrap_info()
            .unwrap()
            .cache_path
            .starts_with("/proc")
    );
}

fn concurrent_bootstraps_share_cache() {
    if !need_hosts() {
        return;
    }
    let boot = Bootstrap::new().only_cache_dir(fresh_cache());
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let boot = boot.clone();
            std::thread::spawn(move || {
                let r = router();
                let c = r.connect(&Sudo::new("mtg-target").bootstrap(boot)).unwrap();
                (whoami(&c), c.bootstrap_info().unwrap().cache_path.clone())
            })
        })
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        got.iter().all(|(u, p)| u == "mtg-target" && *p == got[0].1),
        "{got:?}"
    );
    let r = router();
    let again = r.connect(&Sudo::new("mtg-target").bootstrap(boot)).unwrap();
    assert!(again.bootstrap_info().unwrap().cache_hit);
}

/// Connects counted by [`Counted`]: in flight now, most at once, started.
#[derive(Default)]
struct ConnectCount {
    in_flight: usize,
    max: usize,
    started: usize,
    limit: usize,
    total: usize,
}

static CONNECTS: std::sync::Mutex<ConnectCount> = std::sync::Mutex::new(ConnectCount {
    in_flight: 0,
    max: 0,
    started: 0,
    limit: 0,
    total: 0,
});
static CONNECTS_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

/// A sudo connect that records how many connects overlap. Each waits
/// (for at most 10 s) until `limit` connects are in flight or every one
/// has started, so a `connect_all` that ran fewer at once than its limit
/// shows a lower maximum; one that ran more shows a higher one.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counted(Sudo);

impl mitogen_core::Method for Counted {
    const NAME: &'static str = "ssh-test::counted";

    fn connect(&self, router: &Router) -> Result<Context, ConnectError> {
        let lock = || CONNECTS.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut c = lock();
            c.in_flight += 1;
            c.started += 1;
            c.max = c.max.max(c.in_flight);
            CONNECTS_CHANGED.notify_all();
            let end = Instant::now() + Duration::from_secs(10);
            while c.in_flight < c.limit && c.started < c.total {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                c = CONNECTS_CHANGED
                    .wait_timeout(c, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let r = self.0.connect(router);
        lock().in_flight -= 1;
        CONNECTS_CHANGED.notify_all();
        r
    }
}

/// Replaces the cached agent at `path` with `bytes`, as `cp -p`, `rsync -a`
/// or `tar` would: same owner and mode, and the old file's mtime. (A
/// running agent keeps the old file busy, so it is renamed over.)
fn replace_keeping_mtime(path: &str, bytes: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    let tmp = format!("{path}.replacing");
    std::fs::write(&tmp, bytes).unwrap();
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())).unwrap();
    std::fs::set_permissions(&tmp, meta.permissions()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
    let now = std::fs::metadata(path).unwrap();
    assert_eq!(
        (now.len(), now.mtime(), now.mtime_nsec()),
        (meta.len(), meta.mtime(), meta.mtime_nsec())
    );
}

fn sha256sum(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Warms a fresh cache, damages the cached agent with `damage` (same size,
/// old mtime), and checks the next start treats it as a miss: noted,
/// re-uploaded once, the right agent runs, and the start after is a hit.
fn damaged_cached_agent_is_a_miss(what: &str, damage: impl FnOnce(&[u8]) -> Vec<u8>) {
    if !need_hosts() {
        return;
    }
    let r = router();
    let m = Sudo::new("mtg-target").bootstrap(Bootstrap::new().only_cache_dir(fresh_cache()));
    let first = r.connect(&m).unwrap();
    let i1 = first.bootstrap_info().unwrap().clone();
    assert!(!i1.cache_hit, "{i1:?}");
    assert_eq!(sha256sum(&i1.cache_path), i1.agent_sha256);
    let good = std::fs::read(&i1.cache_path).unwrap();
    let bad = damage(&good);
    assert_eq!(bad.len(), good.len(), "{what}: same size");
    assert_ne!(bad, good, "{what}");
    replace_keeping_mtime(&i1.cache_path, &bad);
    let again = r.connect(&m).unwrap_or_else(|e| panic!("{what}: {e}"));
    let i2 = again.bootstrap_info().unwrap().clone();
    assert!(!i2.cache_hit && i2.uploaded_bytes > 0, "{what}: {i2:?}");
    assert!(
        i2.notes
            .iter()
            .any(|n| n.starts_with(&i1.cache_path) && n.contains("failed its check")),
        "{what}: {:?}",
        i2.notes
    );
    assert_eq!(whoami(&again), "mtg-target");
    assert_eq!(i2.cache_path, i1.cache_path);
    assert_eq!(sha256sum(&i1.cache_path), i1.agent_sha256, "{what}");
    let third = r.connect(&m).unwrap();
    let i3 = third.bootstrap_info().unwrap();
    assert!(i3.cache_hit && i3.notes.is_empty(), "{what}: {i3:?}");
}

fn cached_agent_rewritten_same_size_old_mtime_is_a_miss() {
    damaged_cached_agent_is_a_miss("4 KiB flipped, old mtime", |good| {
        let mut b = good.to_vec();
        let at = b.len() * 2 / 3;
        b[at..at + 4096].iter_mut().for_each(|x| *x ^= 0x5a);
        b
    });
}

fn cached_agent_replaced_with_old_mtime_is_a_miss() {
    // Another program of the same size in its place (`cp -p` of the wrong
    // file): it runs, ignores its arguments and exits 0.
    damaged_cached_agent_is_a_miss("another program", |good| {
        let mut b = std::fs::read("/bin/true").unwrap();
        assert!(b.len() < good.len());
        b.resize(good.len(), 0);
        b
    });
}

/// Offset and size of the `.text` section of a little-endian ELF64 file.
fn elf_text(elf: &[u8]) -> (usize, usize) {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..5], b"\x7fELF\x02", "an ELF64 file");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let sh = |i: usize| shoff + i * shentsize;
    let names = u64_at(sh(shstrndx) + 0x18);
    (0..shnum)
        .map(sh)
        .find(|&h| elf[names + u32_at(h)..].starts_with(b".text\0"))
        .map(|h| (u64_at(h + 0x18), u64_at(h + 0x20)))
        .expect(".text section")
}

fn cached_agent_with_corrupt_text_is_a_miss() {
    damaged_cached_agent_is_a_miss("256 bytes of .text", |good| {
        let mut b = good.to_vec();
        let (off, size) = elf_text(&b);
        assert!(size > 4096);
        let at = off + size / 2;
        b[at..at + 256].iter_mut().for_each(|x| *x = !*x);
        b
    });
}

fn cached_agent_of_random_bytes_is_a_miss() {
    damaged_cached_agent_is_a_miss("random bytes", |good| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..good.len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    });
}

/// A directory of symlinks to what the bootstrap needs (and `extra`
/// scripts), for a PATH without hash tools or other decoders.
fn tool_dir(label: &str, extra: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mitogen-rs-test-tools-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for tool in [
        "sh", "env", "stty", "head", "id", "uname", "tr", "cut", "mkdir", "ls", "awk", "chmod",
        "rm", "find", "wc", "mv", "cat", "gzip",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {tool}"));
        std::os::unix::fs::symlink(&found, dir.join(tool)).unwrap();
    }
    for (name, script) in extra {
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    dir
}

fn upload_is_checked_without_a_hash_tool() {
    // No sha256sum/shasum/sha256 on the target, and a gzip that damages
    // what it decodes (0x01 bytes become 0x02): the upload is still
    // checked, by the agent itself, and never run.
    let fake = tool_dir(
        "bad-gzip",
        &[(
            "gzip",
            "#!/bin/sh\n/bin/gzip \"$@\" | /usr/bin/tr '\\001' '\\002'\n",
        )],
    );
    let path = format!("PATH={}", fake.display());
    let r = router();
    let e = r
        .connect(
            &Exec::new(["env", path.as_str()])
                .bootstrap(Bootstrap::new().only_cache_dir(fresh_cache())),
        )
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&fake);
    assert!(matches!(e, ConnectError::Bootstrap { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("gzip") && text.contains("failed its check"),
        "{text}"
    );
}

/// A tmpfs mounted for one test, remountable `noexec`; unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(label: &str) -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            mitogen_test_support::skip("mounting a tmpfs needs root");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "mitogen-rs-test-mnt-{label}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=1777,size=256m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Some(Self(dir))
    }

    fn noexec(&self) {
        let st = std::process::Command::new("mount")
            .args(["-o", "remount,noexec"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn path(&self, sub: &str) -> String {
        self.0.join(sub).display().to_string()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazily: an agent that ran from it may still be exiting.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cached_agent_in_dir_remounted_noexec_falls_back() {
    if !need_hosts() {
        return;
    }
    let Some(mnt) = Mount::tmpfs("noexec") else {
        return;
    };
    let cached = mnt.path("cache");
    let fallback = fresh_cache();
    let r = router();
    let m = Sudo::new("mtg-target").bootstrap(
        Bootstrap::new()
            .cache_dir(&cached)
            .only_cache_dir(&fallback),
    );
    let first = r.connect(&m).unwrap();
    let i1 = first.bootstrap_info().unwrap().clone();
    assert!(
        !i1.cache_hit && i1.cache_path.starts_with(&cached),
        "{i1:?}"
    );
    first.shutdown_timeout(Duration::from_secs(5));
    mnt.noexec();
    // The cached agent and its directory are now unusable: a miss, and the
    // upload goes to the next directory, as on a cold start.
    let second = r.connect(&m).unwrap();
    let i2 = second.bootstrap_info().unwrap().clone();
    assert_eq!(whoami(&second), "mtg-target");
    assert!(
        !i2.cache_hit && i2.cache_path.starts_with(&fallback),
        "{i2:?}"
    );
    let joined = i2.notes.join("\n");
    assert!(
        joined.contains(&format!("{} failed its check", i1.cache_path)),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{cached}: does not allow executing files")),
        "{joined}"
    );
    // From then on, a hit in the fallback directory.
    let third = r.connect(&m).unwrap();
    let i3 = third.bootstrap_info().unwrap();
    assert!(i3.cache_hit && i3.cache_path == i2.cache_path, "{i3:?}");
}

/// A directory owned by root that anyone may write (as another user's
/// `mkdir` in /tmp would leave it).
fn foreign_dir(label: &str) -> String {
    let d = format!(
        "/tmp/mitogen-rs-test-foreign-{label}-{}",
        std::process::id()
    );
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d
}

fn cache_dir_of_another_user_is_noted_and_passed_over() {
    if !need_hosts() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        mitogen_test_support::skip("needs root (a directory owned by another user)");
        return;
    }
    let foreign = foreign_dir("passed-over");
    let fallback = fresh_cache();
    let r = router();
    let c = r
        .connect(
            &Sudo::new("mtg-target").bootstrap(
                Bootstrap::new()
                    .cache_dir(&foreign)
                    .only_cache_dir(&fallback),
            ),
        )
        .unwrap();
    let i = c.bootstrap_info().unwrap();
    let _ = std::fs::remove_dir_all(&foreign);
    assert!(i.cache_path.starts_with(&fallback), "{i:?}");
    assert_eq!(
        i.notes,
        [format!("{foreign}: owned by root, not by mtg-target")],
        "{i:?}"
    );
    assert_eq!(whoami(&c), "mtg-target");
}

fn no_usable_cache_dir_names_each_refusal() {
    if !need_hosts() {
        return;
    }
    let Some(mnt) = Mount::tmpfs("refusals") else {
        return;
    };
    let foreign = foreign_dir("refusals");
    let readonly = fresh_cache();
    std::fs::create_dir_all(&readonly).unwrap();
    let (uid, gid) = (
        rustix::process::Uid::from_raw(user_id("mtg-target")),
        None::<rustix::process::Gid>,
    );
    rustix::fs::chown(readonly.as_str(), Some(uid), gid).unwrap();
    std::fs::set_permissions(
        &readonly,
        std::os::unix::fs::PermissionsExt::from_mode(0o500),
    )
    .unwrap();
    let noexec = mnt.path("cache");
    mnt.noexec();
    let nope = "/proc/mitogen-rs-nope".to_owned();
    let boot = Bootstrap::new()
        .cache_dir(&foreign)
        .cache_dir(&readonly)
        .cache_dir(&noexec)
        .only_cache_dir(&nope);
    let r = router();
    let e = r
        .connect(&Sudo::new("mtg-target").bootstrap(boot))
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&foreign);
    let _ = std::fs::remove_dir_all(&readonly);
    assert!(matches!(e, ConnectError::Bootstrap { .. }), "{e}");
    let text = e.to_string();
    for want in [
        format!(
            "no cache directory is usable by mtg-target (uid {})",
            user_id("mtg-target")
        ),
        format!("{foreign}: owned by root, not by mtg-target"),
        format!("{readonly}: not writable by mtg-target"),
        format!("{noexec}: does not allow executing files"),
        format!("{nope}: cannot be created by mtg-target"),
    ] {
        assert!(text.contains(&want), "{want:?} missing from: {text}");
    }
}

fn user_id(name: &str) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Set in a child process of this binary: `TARGET_CACHE:CONTROLLER_CACHE`;
/// it connects once as a fresh controller and prints what it did.
const FRESH_START_ENV: &str = "MITOGEN_TEST_FRESH_START";

fn fresh_start(dirs: &str) -> ! {
    let (target, controller) = dirs.split_once(':').expect("TARGET:CONTROLLER");
    let r = router();
    let c = match r.connect(
        &Sudo::new("mtg-target").bootstrap(
            Bootstrap::new()
                .only_cache_dir(target)
                .controller_cache(controller),
        ),
    ) {
        Ok(c) => c,
        Err(e) => {
            println!("error {e}");
            std::process::exit(0);
        }
    };
    assert_eq!(whoami(&c), "mtg-target");
    let i = c.bootstrap_info().unwrap();
    println!("{} {} {}", i.cache_hit, i.prepared_bytes, i.uploaded_bytes);
    c.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(0);
}

/// One fresh controller process against `target`: its (hit, prepared,
/// uploaded), or the error it printed.
fn try_fresh_controller(target: &str, controller: &str) -> Result<(bool, u64, u64), String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(FRESH_START_ENV, format!("{target}:{controller}"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(e) = text.strip_prefix("error ") {
        return Err(e.trim().to_owned());
    }
    let f: Vec<&str> = text.split_whitespace().collect();
    match f.as_slice() {
        [hit, prepared, uploaded] => Ok((
            hit == &"true",
            prepared.parse().unwrap(),
            uploaded.parse().unwrap(),
        )),
        _ => panic!("unexpected output: {text}"),
    }
}

fn fresh_controller(target: &str, controller: &str) -> (bool, u64, u64) {
    try_fresh_controller(target, controller).unwrap_or_else(|e| panic!("{e}"))
}

fn damaged_controller_cache_is_dropped_after_one_failure() {
    if !need_hosts() {
        return;
    }
    let controller = fresh_cache();
    let (hit, _, _) = fresh_controller(&fresh_cache(), &controller);
    assert!(!hit);
    // Damage the stored compressed agent (as a disk error would).
    let stored: Vec<_> = std::fs::read_dir(&controller)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "zstd"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut z = std::fs::read(&stored[0]).unwrap();
    let mid = z.len() / 2;
    z[mid..mid + 64].iter_mut().for_each(|b| *b = !*b);
    std::fs::write(&stored[0], &z).unwrap();
    // The target refuses what it decodes: an error naming the upload...
    let e = try_fresh_controller(&fresh_cache(), &controller).unwrap_err();
    assert!(e.contains("zstd") && e.contains("failed its check"), "{e}");
    // ...and the controller made it afresh for the next start.
    let (hit, prepared, uploaded) = fresh_controller(&fresh_cache(), &controller);
    assert!(
        !hit && prepared > 0 && uploaded > 0,
        "{hit} {prepared} {uploaded}"
    );
    let _ = std::fs::remove_dir_all(&controller);
}

fn fresh_controller_on_warm_target_reads_no_agent_bytes() {
    if !need_hosts() {
        return;
    }
    let controller = fresh_cache();
    let (t1, t2) = (fresh_cache(), fresh_cache());
    // Cold controller cache, cold target: the binary is read, stripped,
    // hashed and compressed once.
    let (hit, prepared, uploaded) = fresh_controller(&t1, &controller);
    assert!(
        !hit && prepared > 0 && uploaded > 0,
        "{hit} {prepared} {uploaded}"
    );
    // A new process against the warm target: nothing of the binary is read.
    let (hit, prepared, uploaded) = fresh_controller(&t1, &controller);
    assert!(
        hit && prepared == 0 && uploaded == 0,
        "{hit} {prepared} {uploaded}"
    );
    // A cold target: the compressed agent comes from the controller cache.
    let (hit, prepared, uploaded) = fresh_controller(&t2, &controller);
    assert!(
        !hit && prepared == 0 && uploaded > 0,
        "{hit} {prepared} {uploaded}"
    );
    let _ = std::fs::remove_dir_all(&controller);
}

fn connect_all_with_limit() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let users = [
        "mtg-target",
        "mtg-sudo",
        "no-such-user-mtg",
        "mtg-key",
        "mtg-target",
        "mtg-sudo",
    ];
    let methods: Vec<Counted> = users.iter().map(|u| Counted(Sudo::new(u))).collect();
    for limit in [1, 3] {
        *CONNECTS.lock().unwrap() = ConnectCount {
            limit,
            total: methods.len(),
            ..ConnectCount::default()
        };
        let results = mitogen_ssh::connect_all(&r, &methods, limit);
        let max = CONNECTS.lock().unwrap().max;
        eprintln!("    limit {limit}: at most {max} connects at once");
        assert_eq!(max, limit, "connects in flight at once");
        assert_eq!(results.len(), users.len());
        for (user, result) in users.iter().zip(&results) {
            match (user, result) {
                (&"no-such-user-mtg", Err(e)) => assert!(
                    matches!(auth_err(e), Some(AuthError::UnknownUser { .. })),
                    "{e}"
                ),
                (_, Ok(c)) => assert_eq!(whoami(c), *user),
                (_, Err(e)) => panic!("{user}: {e}"),
            }
        }
    }
}

/// `net:[inode]` of a network namespace `ip netns` made.
fn netns_id(name: &str) -> String {
    let ino = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/run/netns/{name}")).unwrap(),
    );
    format!("net:[{ino}]")
}

fn three_hop_chain_through_namespaces() {
    if !need_hosts() {
        return;
    }
    if !std::path::Path::new("/run/netns/mtg-a").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "network namespaces missing: run scripts/test-hosts.sh setup"
        );
        mitogen_test_support::skip(
            "three_hop_chain_through_namespaces: run scripts/test-hosts.sh setup (as root)",
        );
        return;
    }
    let a_sshd = Sshd::start("10.99.1.2", Some("mtg-a")).unwrap();
    let b_sshd = Sshd::start("10.99.2.2", Some("mtg-b")).unwrap();
    let r = router();
    let hop = |sshd: &Sshd| {
        Ssh::new(sshd.host())
            .port(sshd.port())
            .user("root")
            .identity_file(sshd.client_key())
            .known_hosts_file(sshd.known_hosts())
            .connect_timeout(Duration::from_secs(20))
    };
    // B is not reachable from here: the test range is unreachable in the
    // root namespace except for A's subnet.
    let e = r
        .connect(&hop(&b_sshd).connect_timeout(Duration::from_secs(3)))
        .unwrap_err();
    assert!(
        matches!(auth_err(&e), Some(AuthError::HostUnreachable { .. })),
        "{e}"
    );
    let a = r.connect(&hop(&a_sshd)).unwrap();
    let b = r.connect_via(&hop(&b_sshd), &a).unwrap();
    let target_b = r.connect_via(&Sudo::new("mtg-target"), &b).unwrap();
    // Each hop runs where it should: its user, in its host's namespace.
    let here = mitogen_core::layer::host_name();
    let (ns_a, ns_b) = (netns_id("mtg-a"), netns_id("mtg-b"));
    for (ctx, user, ns) in [
        (&a, "root", &ns_a),
        (&b, "root", &ns_b),
        (&target_b, "mtg-target", &ns_b),
    ] {
        let (got_user, host, got_ns) = ctx.call::<WhereAmI>(&()).unwrap();
        assert_eq!(
            (got_user.as_str(), got_ns.as_str()),
            (user, ns.as_str()),
            "{} (host {host})",
            ctx.name()
        );
        // The namespaces share the UTS namespace: same host name.
        assert_eq!(host, here, "{}", ctx.name());
    }
    assert_ne!(ns_a, ns_b);
    let (_, apid, _, _) = a.call::<Whoami>(&()).unwrap();
    // Calls in progress below A (synchronised on their start, not a
    // sleep) fail as soon as A dies, not at a deadline.
    let hold = HoldDir::new();
    let pending = target_b.call_async::<Hold>(&hold.args("target_b")).unwrap();
    let on_b = b.call_async::<Hold>(&hold.args("b")).unwrap();
    assert!(
        mitogen_test_support::wait_until(Duration::from_secs(10), || hold.started("target_b")
            && hold.started("b")),
        "the held calls did not start"
    );
    let t0 = Instant::now();
    kill9(apid);
    let e1 = pending.wait_timeout(Duration::from_secs(20)).unwrap_err();
    let e2 = on_b.wait_timeout(Duration::from_secs(20)).unwrap_err();
    let took = t0.elapsed();
    eprintln!("    calls below the killed hop failed after {took:?}: {e1} / {e2}");
    // The point of the test is "at once" (it was about 1 ms): a generous
    // bound, far below the 20 s the waits allow.
    assert!(took < Duration::from_secs(5), "took {took:?}: {e1} / {e2}");
}

fn become_pool_recycles_lru_idle() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let pool = mitogen_ssh::BecomePool::new(2);
    let a = pool.get(&r, &Sudo::new("mtg-target"), None).unwrap();
    // Same request: same context.
    assert_eq!(
        pool.get(&r, &Sudo::new("mtg-target"), None).unwrap().id(),
        a.id()
    );
    let b = pool.get(&r, &Sudo::new("mtg-sudo"), None).unwrap();
    let (_, apid, _, _) = a.call::<Whoami>(&()).unwrap();
    let (_, bpid, _, _) = b.call::<Whoami>(&()).unwrap();
    // `a` is the least recently used but busy; `b` is idle: `b` goes.
    // (Busy: a call in flight, held until released, not a sleep.)
    let hold = HoldDir::new();
    let busy = a.call_async::<Hold>(&hold.args("a")).unwrap();
    let c = pool.get(&r, &Sudo::new("mtg-key"), None).unwrap();
    assert_eq!(whoami(&c), "mtg-key");
    assert!(mitogen_test_support::wait_until(
        Duration::from_secs(5),
        || { mitogen_test_support::process_gone(bpid) }
    ));
    assert!(!mitogen_test_support::process_gone(apid));
    hold.release("a");
    busy.wait().unwrap();
    assert_eq!(pool.len(), 2);
}

fn upload_raw_or_gzip_and_explicit_agent_binary() {
    if !need_hosts() {
        return;
    }
    let r = router();
    let exe = std::env::current_exe().unwrap();
    let size = std::fs::metadata(&exe).unwrap().len();
    let raw = r
        .connect(
            &Sudo::new("mtg-target").bootstrap(
                Bootstrap::new()
                    .compress(false)
                    .only_cache_dir(fresh_cache()),
            ),
        )
        .unwrap();
    let ri = raw.bootstrap_info().unwrap();
    assert_eq!(
        (ri.uploaded_bytes, ri.encoding.as_str()),
        (ri.agent_size, "raw"),
        "uncompressed upload sends the (stripped) binary as is"
    );
    // Debug info stays on the controller (objcopy is part of binutils,
    // which building Rust needs anyway).
    assert!(
        ri.agent_size < size / 2,
        "stripped agent {} of {size}",
        ri.agent_size
    );
    let unstripped = r
        .connect(
            &Sudo::new("mtg-target").bootstrap(
                Bootstrap::new()
                    .strip(false)
                    .compress(false)
                    .only_cache_dir(fresh_cache()),
            ),
        )
        .unwrap();
    let ui = unstripped.bootstrap_info().unwrap();
    assert_eq!((ui.agent_size, ui.uploaded_bytes), (size, size));
    assert_eq!(whoami(&unstripped), "mtg-target");
    // Compressed with the best decoder the target has (this one has zstd).
    let z = r
        .connect(&Sudo::new("mtg-target").bootstrap(Bootstrap::new().only_cache_dir(fresh_cache())))
        .unwrap();
    let zi = z.bootstrap_info().unwrap();
    assert_eq!(zi.encoding, "zstd", "{zi:?}");
    assert!(
        zi.uploaded_bytes > 0 && zi.uploaded_bytes < zi.agent_size / 2,
        "{zi:?}"
    );
    // Only gzip on the target's PATH: gzip.
    let fake = tool_dir("gzip-only", &[]);
    let path = format!("PATH={}", fake.display());
    let g = r
        .connect(
            &Exec::new(["env", path.as_str()])
                .bootstrap(Bootstrap::new().only_cache_dir(fresh_cache())),
        )
        .unwrap();
    assert_eq!(g.bootstrap_info().unwrap().encoding, "gzip");
    assert_eq!(whoami(&g), "root");
    let _ = std::fs::remove_dir_all(&fake);
    // A binary registered for this platform is used instead of our own path
    // (here a copy of it, so it must register the same functions).
    let copy = std::env::temp_dir().join(format!("mitogen-agent-copy-{}", std::process::id()));
    std::fs::copy(&exe, &copy).unwrap();
    let u = rustix::system::uname();
    let (os, arch) = (
        u.sysname().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
    );
    let boot = Bootstrap::new()
        .agent_for(&os, &arch, &copy)
        .only_cache_dir(fresh_cache());
    let c = r.connect(&Sudo::new("mtg-target").bootstrap(boot)).unwrap();
    assert_eq!(whoami(&c), "mtg-target");
    let _ = std::fs::remove_file(&copy);
}
