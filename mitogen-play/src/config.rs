//! `ansible.cfg` and `ANSIBLE_*` variables, found and read as ansible-core
//! does: `$ANSIBLE_CONFIG`, `./ansible.cfg`, `~/.ansible.cfg`,
//! `/etc/ansible/ansible.cfg` (the first that exists), then the
//! environment over the file, then the command line over both.

use super::PlayError;
use std::path::{Path, PathBuf};

/// Settings the executor and CLI use.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `[defaults] inventory` / `ANSIBLE_INVENTORY`.
    pub inventory: Vec<String>,
    /// `[defaults] library` / `ANSIBLE_LIBRARY`.
    pub library: Vec<PathBuf>,
    /// `[defaults] roles_path` / `ANSIBLE_ROLES_PATH`.
    pub roles_path: Vec<PathBuf>,
    /// `[defaults] collections_path` / `ANSIBLE_COLLECTIONS_PATH`.
    pub collections_path: Vec<PathBuf>,
    /// `[defaults] remote_user` / `ANSIBLE_REMOTE_USER`.
    pub remote_user: Option<String>,
    /// `[defaults] remote_tmp` / `ANSIBLE_REMOTE_TMP` (informational: the
    /// runner keeps ansible-core's default `~/.ansible/tmp`).
    pub remote_tmp: Option<String>,
    /// `[defaults] forks` / `ANSIBLE_FORKS`.
    pub forks: Option<usize>,
    /// `[defaults] interpreter_python` / `ANSIBLE_PYTHON_INTERPRETER`.
    pub interpreter_python: Option<String>,
    /// `[defaults] host_key_checking` / `ANSIBLE_HOST_KEY_CHECKING`.
    pub host_key_checking: bool,
    /// `[defaults] private_key_file` / `ANSIBLE_PRIVATE_KEY_FILE`.
    pub private_key_file: Option<PathBuf>,
    /// `[defaults] timeout` / `ANSIBLE_TIMEOUT` (connect, seconds).
    pub timeout: u64,
    /// `[defaults] gathering` (`implicit`, `explicit`).
    pub gathering: String,
    /// `[privilege_escalation] become`.
    pub become_: bool,
    /// `[privilege_escalation] become_user`.
    pub become_user: String,
    /// `[privilege_escalation] become_method`.
    pub become_method: String,
    /// `[ssh_connection] pipelining` / `ANSIBLE_PIPELINING`.
    pub pipelining: bool,
    /// `[ssh_connection] ssh_args` / `ANSIBLE_SSH_ARGS`.
    pub ssh_args: Option<String>,
    /// `[defaults] ask_pass` / `ANSIBLE_ASK_PASS`: prompt for the ssh
    /// password, as `-k`.
    pub ask_pass: bool,
    /// `[privilege_escalation] become_ask_pass` / `ANSIBLE_BECOME_ASK_PASS`:
    /// prompt for the become password, as `-K`.
    pub become_ask_pass: bool,
    /// `[defaults] ask_vault_pass` / `ANSIBLE_ASK_VAULT_PASS`: prompt for
    /// the vault password, as `-J`.
    pub ask_vault_pass: bool,
    /// `[defaults] vault_password_file` (`ANSIBLE_VAULT_PASSWORD_FILE` is
    /// read by the CLI, after `--vault-id`).
    pub vault_password_file: Option<PathBuf>,
    /// Notes for the user (ignored keys).
    pub notes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            file: None,
            inventory: Vec::new(),
            library: Vec::new(),
            // ansible-core's defaults, under ANSIBLE_HOME (~/.ansible).
            roles_path: vec![
                ansible_home().join("roles"),
                "/usr/share/ansible/roles".into(),
                "/etc/ansible/roles".into(),
            ],
            collections_path: vec![
                ansible_home().join("collections"),
                "/usr/share/ansible/collections".into(),
            ],
            remote_user: None,
            remote_tmp: None,
            forks: None,
            interpreter_python: None,
            host_key_checking: true,
            private_key_file: None,
            timeout: 10,
            gathering: "implicit".into(),
            become_: false,
            become_user: "root".into(),
            become_method: "sudo".into(),
            pipelining: false,
            ssh_args: None,
            ask_pass: false,
            become_ask_pass: false,
            ask_vault_pass: false,
            vault_password_file: None,
            notes: Vec::new(),
        }
    }
}

fn truthy(s: &str) -> bool {
    matches!(
        s.trim().to_lowercase().as_str(),
        "1" | "yes" | "true" | "on" | "y" | "t"
    )
}

fn paths(s: &str, base: &Path) -> Vec<PathBuf> {
    s.split([':', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let p = expand_home(p);
            if p.is_relative() { base.join(p) } else { p }
        })
        .collect()
}

/// `ANSIBLE_HOME`, else `~/.ansible`.
fn ansible_home() -> PathBuf {
    match std::env::var("ANSIBLE_HOME") {
        Ok(h) if !h.is_empty() => expand_home(&h),
        _ => expand_home("~/.ansible"),
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(h)) => PathBuf::from(h).join(rest),
        _ => PathBuf::from(p),
    }
}

impl Config {
    /// The config file ansible-core would read.
    pub fn find_file() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("ANSIBLE_CONFIG") {
            let p = PathBuf::from(p);
            let p = if p.is_dir() { p.join("ansible.cfg") } else { p };
            if p.is_file() {
                return Some(p);
            }
        }
        let mut c = vec![PathBuf::from("ansible.cfg")];
        if let Some(h) = std::env::var_os("HOME") {
            c.push(PathBuf::from(h).join(".ansible.cfg"));
        }
        c.push(PathBuf::from("/etc/ansible/ansible.cfg"));
        c.into_iter().find(|p| p.is_file())
    }

    /// Reads the config file (if any) and the environment.
    ///
    /// # Errors
    /// An unreadable file, a malformed line, a bad number.
    pub fn load() -> Result<Self, PlayError> {
        let mut c = Self::default();
        if let Some(f) = Self::find_file() {
            let text = std::fs::read_to_string(&f).map_err(|e| PlayError::io(&f, e))?;
            c.apply_ini(&text, &f)?;
            c.file = Some(f);
        }
        c.apply_env(|k| std::env::var(k).ok())?;
        Ok(c)
    }

    fn set(&mut self, section: &str, key: &str, v: &str, base: &Path) -> Result<(), String> {
        match (section, key) {
            ("defaults", "inventory" | "hostfile") => {
                self.inventory = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let p = expand_home(s);
                        if p.is_relative() { base.join(p) } else { p }
                            .display()
                            .to_string()
                    })
                    .collect();
            }
            ("defaults", "library") => self.library = paths(v, base),
            ("defaults", "roles_path") => self.roles_path = paths(v, base),
            ("defaults", "collections_path" | "collections_paths") => {
                self.collections_path = paths(v, base)
            }
            ("defaults", "remote_user") => self.remote_user = Some(v.to_owned()),
            ("defaults", "remote_tmp") => self.remote_tmp = Some(v.to_owned()),
            ("defaults", "forks") => {
                self.forks = Some(
                    v.parse()
                        .map_err(|_| format!("forks must be a number, got '{v}'"))?,
                );
            }
            ("defaults", "interpreter_python") => self.interpreter_python = Some(v.to_owned()),
            ("defaults", "host_key_checking") => self.host_key_checking = truthy(v),
            ("defaults", "private_key_file") => self.private_key_file = Some(expand_home(v)),
            ("defaults", "timeout") => {
                self.timeout = v
                    .parse()
                    .map_err(|_| format!("timeout must be a number, got '{v}'"))?;
            }
            ("defaults", "gathering") => self.gathering = v.to_owned(),
            (
                "defaults",
                "callbacks_enabled" | "callback_whitelist" | "stdout_callback" | "callback_plugins",
            ) => {
                self.notes.push(format!("ignoring {key} = {v}: mitogen-play has its own output (use --json for machine-readable results)"));
            }
            ("defaults", "strategy" | "strategy_plugins") => {
                self.notes.push(format!(
                    "ignoring {key} = {v}: mitogen-play runs its own linear/free strategies"
                ));
            }
            (
                "defaults",
                "retry_files_enabled"
                | "nocows"
                | "deprecation_warnings"
                | "command_warnings"
                | "localhost_warning"
                | "interpreter_python_fallback"
                | "display_skipped_hosts"
                | "stdout_callback_plugins"
                | "bin_ansible_callbacks"
                | "local_tmp",
            ) => {}
            ("privilege_escalation", "become") => self.become_ = truthy(v),
            ("privilege_escalation", "become_user") => self.become_user = v.to_owned(),
            ("privilege_escalation", "become_method") => self.become_method = v.to_owned(),
            ("privilege_escalation", "become_ask_pass") => self.become_ask_pass = truthy(v),
            ("defaults", "ask_pass") => self.ask_pass = truthy(v),
            ("defaults", "ask_vault_pass") => self.ask_vault_pass = truthy(v),
            ("defaults", "vault_password_file") => {
                let p = expand_home(v);
                self.vault_password_file = Some(if p.is_relative() { base.join(p) } else { p });
            }
            ("ssh_connection", "pipelining") => self.pipelining = truthy(v),
            ("ssh_connection", "ssh_args") => self.ssh_args = Some(v.to_owned()),
            (
                "ssh_connection",
                "control_path_dir" | "control_path" | "retries" | "scp_if_ssh" | "transfer_method",
            ) => {
                self.notes.push(format!(
                    "ignoring [ssh_connection] {key}: mitogen-play manages ssh multiplexing itself"
                ));
            }
            (s, k) => self
                .notes
                .push(format!("ignoring unsupported setting [{s}] {k}")),
        }
        Ok(())
    }

    fn apply_ini(&mut self, text: &str, file: &Path) -> Result<(), PlayError> {
        let base = file.parent().map(Path::to_owned).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let mut section = String::new();
        for (n, raw) in text.lines().enumerate() {
            let loc = super::yaml::Loc {
                file: std::sync::Arc::new(file.to_owned()),
                line: n + 1,
                col: 0,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.trim().to_owned();
                continue;
            }
            let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                return Err(PlayError::at(
                    &loc,
                    format!("expected key = value, got '{line}'"),
                ));
            };
            // Inline comments after ` ;` / ` #`.
            let v = v
                .split(" ;")
                .next()
                .unwrap_or(v)
                .split(" #")
                .next()
                .unwrap_or(v);
            self.set(&section, k.trim(), v.trim(), &base)
                .map_err(|e| PlayError::at(&loc, e))?;
        }
        Ok(())
    }

    /// Applies `ANSIBLE_*` variables from `get`.
    ///
    /// # Errors
    /// Bad numbers.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), PlayError> {
        let cwd = PathBuf::from(".");
        let map: &[(&str, &str, &str)] = &[
            ("ANSIBLE_INVENTORY", "defaults", "inventory"),
            ("ANSIBLE_LIBRARY", "defaults", "library"),
            ("ANSIBLE_ROLES_PATH", "defaults", "roles_path"),
            ("ANSIBLE_COLLECTIONS_PATH", "defaults", "collections_path"),
            ("ANSIBLE_COLLECTIONS_PATHS", "defaults", "collections_path"),
            ("ANSIBLE_REMOTE_USER", "defaults", "remote_user"),
            ("ANSIBLE_REMOTE_TMP", "defaults", "remote_tmp"),
            ("ANSIBLE_FORKS", "defaults", "forks"),
            (
                "ANSIBLE_PYTHON_INTERPRETER",
                "defaults",
                "interpreter_python",
            ),
            ("ANSIBLE_HOST_KEY_CHECKING", "defaults", "host_key_checking"),
            ("ANSIBLE_PRIVATE_KEY_FILE", "defaults", "private_key_file"),
            ("ANSIBLE_TIMEOUT", "defaults", "timeout"),
            ("ANSIBLE_GATHERING", "defaults", "gathering"),
            ("ANSIBLE_BECOME", "privilege_escalation", "become"),
            ("ANSIBLE_BECOME_USER", "privilege_escalation", "become_user"),
            (
                "ANSIBLE_BECOME_METHOD",
                "privilege_escalation",
                "become_method",
            ),
            ("ANSIBLE_PIPELINING", "ssh_connection", "pipelining"),
            ("ANSIBLE_SSH_PIPELINING", "ssh_connection", "pipelining"),
            ("ANSIBLE_SSH_ARGS", "ssh_connection", "ssh_args"),
            ("ANSIBLE_ASK_PASS", "defaults", "ask_pass"),
            ("ANSIBLE_ASK_VAULT_PASS", "defaults", "ask_vault_pass"),
            (
                "ANSIBLE_BECOME_ASK_PASS",
                "privilege_escalation",
                "become_ask_pass",
            ),
            ("ANSIBLE_CALLBACKS_ENABLED", "defaults", "callbacks_enabled"),
            ("ANSIBLE_STRATEGY", "defaults", "strategy"),
        ];
        for (env, s, k) in map {
            if let Some(v) = get(env) {
                self.set(s, k, &v, &cwd)
                    .map_err(|e| PlayError::Other(format!("${env}: {e}")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_and_env() {
        let mut c = Config::default();
        c.apply_ini(
            "[defaults]\ninventory = hosts.ini\nforks=50 ; comment\ncallbacks_enabled = profile_tasks\n[privilege_escalation]\nbecome = True\n",
            Path::new("/p/ansible.cfg"),
        )
        .unwrap();
        assert_eq!(c.inventory, ["/p/hosts.ini"]);
        assert_eq!(c.forks, Some(50));
        assert!(c.become_);
        assert!(c.notes[0].contains("callbacks_enabled"));
        c.apply_env(|k| (k == "ANSIBLE_FORKS").then(|| "7".to_owned()))
            .unwrap();
        assert_eq!(c.forks, Some(7));
        let e = c
            .apply_ini("[defaults]\nforks = many\n", Path::new("a.cfg"))
            .unwrap_err();
        assert!(e.to_string().contains("a.cfg:2"), "{e}");
    }

    #[test]
    fn prompts_and_vault_file() {
        let mut c = Config::default();
        c.apply_ini(
            "[defaults]\nask_pass = yes\nvault_password_file = ~/vp\n[privilege_escalation]\nbecome_ask_pass = True\n",
            Path::new("/p/ansible.cfg"),
        )
        .unwrap();
        assert!(c.ask_pass && c.become_ask_pass && !c.ask_vault_pass);
        assert!(
            c.vault_password_file
                .as_ref()
                .is_some_and(|p| p.ends_with("vp"))
        );
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        c.apply_env(|k| (k == "ANSIBLE_ASK_VAULT_PASS").then(|| "true".to_owned()))
            .unwrap();
        assert!(c.ask_vault_pass);
    }
}
