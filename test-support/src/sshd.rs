//! A throw-away OpenSSH server for tests.
//!
//! [`Sshd::start`] runs a private `sshd` with its own config, host key, pid
//! file and log in a fresh temp dir, on a free port of 127.0.0.1 (or on port
//! 22 inside one of the network namespaces that `scripts/test-hosts.sh setup`
//! creates). It never touches `/etc/ssh` or root's `~/.ssh`. Dropping the
//! [`Sshd`] kills the listener and every per-connection child, and removes
//! the temp dir.
//!
//! ```no_run
//! use mitogen_test_support::sshd::{Sshd, sshd_available, USER_KEY};
//! if !sshd_available() {
//!     return;
//! }
//! let sshd = Sshd::start("127.0.0.1", None).unwrap();
//! let out = std::process::Command::new("ssh")
//!     .args(sshd.ssh_args())
//!     .arg(format!("{USER_KEY}@{}", sshd.host()))
//!     .arg("id")
//!     .output()
//!     .unwrap();
//! assert!(out.status.success());
//! ```
//!
//! The users below exist once `scripts/test-hosts.sh setup` has run; each
//! has a real password (the sshd runs with `UsePAM no`, which refuses locked
//! accounts even for key login) and a home directory with no rc files.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// User for key login (its password, `mtg-key-unused-9f3`, exists only so
/// the account is not locked).
pub const USER_KEY: &str = "mtg-key";
/// User for password login.
pub const USER_PW: &str = "mtg-pw";
/// Password of [`USER_PW`].
pub const USER_PW_PASSWORD: &str = "mtg-pw-secret";
/// User with passwordless sudo to anyone (`NOPASSWD: ALL`), and passwordless
/// doas to root and to [`USER_TARGET`].
pub const USER_SUDO: &str = "mtg-sudo";
/// Password of [`USER_SUDO`].
pub const USER_SUDO_PASSWORD: &str = "mtg-sudo-secret";
/// User whose sudo (to anyone) and doas (to root) ask for its password.
pub const USER_SUDOPW: &str = "mtg-sudopw";
/// Password of [`USER_SUDOPW`].
pub const USER_SUDOPW_PASSWORD: &str = "mtg-sudopw-secret";
/// The "become" target user.
pub const USER_TARGET: &str = "mtg-target";
/// Password of [`USER_TARGET`] (for `su`).
pub const USER_TARGET_PASSWORD: &str = "mtg-target-secret";
/// User in no sudoers or doas rule.
pub const USER_NOSUDO: &str = "mtg-nosudo";
/// Password of [`USER_NOSUDO`].
pub const USER_NOSUDO_PASSWORD: &str = "mtg-nosudo-secret";

/// Network namespace of host A of the 2-hop setup: 10.99.1.2 (reachable from
/// the root namespace) and 10.99.2.1 (towards host B). It does not forward.
pub const NETNS_A: &str = "mtg-a";
/// Address of [`NETNS_A`] seen from the root namespace.
pub const NETNS_A_ADDR: &str = "10.99.1.2";
/// Network namespace of host B: 10.99.2.2, reachable only from [`NETNS_A`].
pub const NETNS_B: &str = "mtg-b";
/// Address of [`NETNS_B`], seen from [`NETNS_A`].
pub const NETNS_B_ADDR: &str = "10.99.2.2";

const SSHD: &str = "/usr/sbin/sshd";
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const IP: &str = "/usr/sbin/ip";
const START_TIMEOUT: Duration = Duration::from_secs(5);
const SETUP_HINT: &str = "as root, run `scripts/test-hosts.sh setup` from the workspace root, and run these tests as root";

/// A running private sshd; see the [module docs](self).
#[derive(Debug)]
pub struct Sshd {
    host: String,
    port: u16,
    netns: Option<String>,
    dir: PathBuf,
    client_key: PathBuf,
    known_hosts: PathBuf,
    child: Option<Child>,
}

impl Sshd {
    /// Starts sshd on `addr` (e.g. `"127.0.0.1"`), optionally inside network
    /// namespace `netns` (run as `ip netns exec NS /usr/sbin/sshd ...`).
    ///
    /// In the root namespace the port is a free one (bound and released
    /// just before); inside a namespace it is 22. Returns once the listener
    /// has bound its socket (it writes its pid file only then), or an error
    /// carrying `sshd -t`'s output or the sshd log.
    pub fn start(addr: &str, netns: Option<&str>) -> io::Result<Self> {
        Self::start_inner(addr, netns, None)
    }

    /// As [`Sshd::start`], with a pre-authentication `Banner` showing
    /// `banner` (written to a file as is: give it a trailing newline or
    /// not, as the test needs). ssh prints it on stderr before
    /// authenticating.
    pub fn start_with_banner(addr: &str, netns: Option<&str>, banner: &str) -> io::Result<Self> {
        Self::start_inner(addr, netns, Some(banner))
    }

    fn start_inner(addr: &str, netns: Option<&str>, banner: Option<&str>) -> io::Result<Self> {
        let port = match netns {
            Some(_) => 22,
            None => std::net::TcpListener::bind((addr, 0))?.local_addr()?.port(),
        };
        let dir = make_temp_dir()?;
        // From here on, Drop cleans up whatever was made if a step fails.
        let mut me = Self {
            host: addr.to_owned(),
            port,
            netns: netns.map(str::to_owned),
            client_key: dir.join("client_key"),
            known_hosts: dir.join("known_hosts"),
            dir,
            child: None,
        };
        let host_key = me.dir.join("host_ed25519_key");
        keygen(&host_key)?;
        keygen(&me.client_key)?;
        let authorized = me.dir.join("authorized_keys");
        fs::copy(me.client_key.with_extension("pub"), &authorized)?;
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644))?;
        let line = me.known_hosts_line(&host_key.with_extension("pub"))?;
        fs::write(&me.known_hosts, line)?;

        let pid_file = me.dir.join("sshd.pid");
        let log_file = me.dir.join("sshd.log");
        let listen = if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
        let config = format!(
            "ListenAddress {listen}\n\
             HostKey {host_key}\n\
             PidFile {pid_file}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             UsePAM no\n\
             UseDNS no\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin yes\n\
             MaxStartups 100:30:200\n\
             MaxSessions 100\n\
             LogLevel ERROR\n\
             Subsystem sftp internal-sftp\n\
             PrintMotd no\n\
             AcceptEnv none\n",
            host_key = host_key.display(),
            pid_file = pid_file.display(),
            authorized = authorized.display(),
        );
        let mut config = config;
        if let Some(text) = banner {
            let file = me.dir.join("banner");
            fs::write(&file, text)?;
            config.push_str(&format!("Banner {}\n", file.display()));
        }
        let cfg = me.dir.join("sshd_config");
        fs::write(&cfg, config)?;

        let check = Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()?;
        if !check.status.success() {
            return Err(io::Error::other(format!(
                "`sshd -t -f {}` failed ({}): {}",
                cfg.display(),
                check.status,
                String::from_utf8_lossy(&check.stderr).trim()
            )));
        }

        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new(IP);
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => Command::new(SSHD),
        };
        let stderr = fs::File::create(me.dir.join("sshd.stderr"))?;
        cmd.arg("-D")
            .arg("-f")
            .arg(&cfg)
            .arg("-E")
            .arg(&log_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = me.child.insert(cmd.spawn()?);
        let pid = child.id();

        // sshd writes its pid file right after binding the listen socket:
        // that tells readiness inside a namespace as well as outside.
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                me.child = None;
                return Err(io::Error::other(format!(
                    "sshd exited at start ({status}): {}",
                    me.log_text()
                )));
            }
            let written = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match written {
                Some(p) if p == pid => return Ok(me),
                Some(p) => {
                    return Err(io::Error::other(format!(
                        "sshd wrote pid {p} to {}, expected {pid}",
                        pid_file.display()
                    )));
                }
                None => {}
            }
            if Instant::now() >= end {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "sshd on {listen} not ready after {START_TIMEOUT:?}: {}",
                        me.log_text()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address it listens on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The network namespace it runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Path of a private key (ed25519, no passphrase) whose public key is
    /// authorized for every user on this sshd.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// A known_hosts file that already holds this sshd's host key for
    /// `[host]:port` (so `StrictHostKeyChecking=yes` works).
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Writes a known_hosts file with a WRONG key for this host and port
    /// (another freshly generated key) and returns its path, for
    /// host-key-mismatch tests. Each call makes a new file.
    pub fn wrong_known_hosts(&self) -> io::Result<PathBuf> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let key = self.dir.join(format!("wrong_host_key_{n}"));
        keygen(&key)?;
        let path = self.dir.join(format!("wrong_known_hosts_{n}"));
        fs::write(&path, self.known_hosts_line(&key.with_extension("pub"))?)?;
        Ok(path)
    }

    /// The fixture's temp dir (config, keys, `sshd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The listener's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Client options for key login to this sshd with strict host key
    /// checking against [`known_hosts`](Self::known_hosts):
    /// `-o BatchMode=yes -o StrictHostKeyChecking=yes
    /// -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes
    /// -o UserKnownHostsFile=KH -i KEY -p PORT` (no destination). ssh keeps
    /// the FIRST value given for an option: put overrides before these.
    pub fn ssh_args(&self) -> Vec<OsString> {
        self.ssh_args_with_known_hosts(&self.known_hosts)
    }

    /// [`ssh_args`](Self::ssh_args) with another known_hosts file, e.g. one
    /// from [`wrong_known_hosts`](Self::wrong_known_hosts).
    pub fn ssh_args_with_known_hosts(&self, known_hosts: &Path) -> Vec<OsString> {
        let mut kh = OsString::from("UserKnownHostsFile=");
        kh.push(known_hosts);
        let mut v: Vec<OsString> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        v.push(kh);
        v.push("-i".into());
        v.push(self.client_key.clone().into_os_string());
        v.push("-p".into());
        v.push(self.port.to_string().into());
        v
    }

    /// What sshd logged so far (errors only: `LogLevel ERROR`).
    pub fn log_text(&self) -> String {
        let mut s = fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
        if let Ok(e) = fs::read_to_string(self.dir.join("sshd.stderr")) {
            s.push_str(&e);
        }
        s.trim().to_owned()
    }

    /// `ssh-ed25519 AAAA...` from a `.pub` file, prefixed with how
    /// known_hosts names this host and port.
    fn known_hosts_line(&self, pub_file: &Path) -> io::Result<String> {
        let text = fs::read_to_string(pub_file)?;
        let mut fields = text.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            return Err(io::Error::other(format!(
                "{}: not a public key",
                pub_file.display()
            )));
        };
        let name = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        Ok(format!("{name} {kind} {key}\n"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let killed = kill_tree(child.id());
            let _ = child.wait();
            crate::wait_until(Duration::from_secs(5), || {
                killed.iter().all(|&p| crate::process_gone(p))
            });
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Freezes `root` and all its descendants (SIGSTOP, repeated until no new
/// process shows up, so none can fork away), then SIGKILLs them all.
/// Returns the pids signalled.
fn kill_tree(root: u32) -> BTreeSet<u32> {
    let mut stopped = BTreeSet::new();
    loop {
        let mut all = descendants(root);
        all.insert(root);
        let new: Vec<u32> = all.difference(&stopped).copied().collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            signal(p, rustix::process::Signal::STOP);
            stopped.insert(p);
        }
    }
    for &p in &stopped {
        signal(p, rustix::process::Signal::KILL);
    }
    stopped
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// All descendants of `root`, from one scan of /proc.
fn descendants(root: u32) -> BTreeSet<u32> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parens.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                kids.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &k in kids.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if out.insert(k) {
                todo.push(k);
            }
        }
    }
    out
}

/// A new, empty, world-readable (0755) directory under /tmp.
fn make_temp_dir() -> io::Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "mitogen-sshd-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {
                // The umask may have taken bits away: users other than root
                // must read authorized_keys (sshd reads it as the user).
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `ssh-keygen -q -t ed25519 -N '' -C '' -f PATH`.
fn keygen(path: &Path) -> io::Result<()> {
    let out = Command::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ssh-keygen -f {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Reports a missing prerequisite: panics under `CI=true`, else prints a
/// loud SKIPPED line and returns false.
fn unavailable(what: &str) -> bool {
    crate::skip_unless_ci(&format!("test hosts not set up: {what}; {SETUP_HINT}"));
    false
}

/// Whether sshd tests can run here: root, `sshd`, `ssh` and `ssh-keygen`
/// installed, `/run/sshd` present, and the test users created. If not:
/// under `CI=true` it panics with a message naming
/// `scripts/test-hosts.sh setup`; otherwise it prints a loud `SKIPPED: ...`
/// line to stderr and returns false.
pub fn sshd_available() -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("not running as root".to_owned());
    }
    for tool in [SSHD, SSH, SSH_KEYGEN] {
        if !Path::new(tool).exists() {
            missing.push(format!("{tool} missing"));
        }
    }
    if !Path::new("/run/sshd").is_dir() {
        missing.push("/run/sshd missing".to_owned());
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for user in [
        USER_KEY,
        USER_PW,
        USER_SUDO,
        USER_SUDOPW,
        USER_TARGET,
        USER_NOSUDO,
    ] {
        if !passwd.lines().any(|l| l.split(':').next() == Some(user)) {
            missing.push(format!("user {user} missing"));
        }
    }
    missing.is_empty() || unavailable(&format!("sshd tests: {}", missing.join(", ")))
}

/// Whether the 2-hop network namespaces ([`NETNS_A`], [`NETNS_B`]) exist,
/// with `ip` installed, on top of [`sshd_available`]. Same reporting as
/// [`sshd_available`].
pub fn netns_available() -> bool {
    if !sshd_available() {
        return false;
    }
    let mut missing = Vec::new();
    if !Path::new(IP).exists() {
        missing.push(format!("{IP} missing"));
    }
    for ns in [NETNS_A, NETNS_B] {
        if !Path::new("/run/netns").join(ns).exists() {
            missing.push(format!("network namespace {ns} missing"));
        }
    }
    missing.is_empty() || unavailable(&format!("2-hop tests: {}", missing.join(", ")))
}
