//! The command line, as `ansible-playbook` spells it: the same options,
//! aliases, groups and help texts (argparse's), parsed by `clap`; grouped
//! switches (`-bK`), attached values (`-e@vars.yml`, `-f10`, `--limit=x`)
//! and repeated `-v` as argparse takes them. A bad command line is exit 2
//! with the usage, as argparse's.

use clap::{ArgAction, Parser};
use std::path::PathBuf;

/// Runs Ansible playbooks, executing the defined tasks on the targeted
/// hosts (over mitogen-rs).
#[derive(Debug, Parser)]
#[command(
    name = "mitogen-play",
    disable_version_flag = true,
    about = "Runs Ansible playbooks, executing the defined tasks on the targeted hosts (ansible-playbook's options, over mitogen-rs).",
    after_help = "MITOGEN_PLAY_LOG=debug logs what the library does (to stderr). Exit codes as ansible-playbook: 0 ok, 1 error, 2 failed hosts (or a bad command line), 4 unreachable hosts or a parse error, 5 bad options, 99 interrupted."
)]
struct Cli {
    /// Playbook(s)
    #[arg(value_name = "playbook", required_unless_present = "version")]
    playbooks: Vec<PathBuf>,

    /// show program's version number, config file location, configured
    /// module search path, module location, executable location and exit
    #[arg(long = "version")]
    version: bool,

    /// Causes Ansible to print more debug messages. Adding multiple -v will
    /// increase the verbosity. This argument may be specified multiple
    /// times.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,

    /// specify inventory host path or comma separated host list. This
    /// argument may be specified multiple times.
    #[arg(
        short = 'i',
        long = "inventory",
        visible_alias = "inventory-file",
        value_name = "INVENTORY"
    )]
    inventory: Vec<String>,

    /// outputs a list of matching hosts; does not execute anything else
    #[arg(long = "list-hosts")]
    list_hosts: bool,

    /// further limit selected hosts to an additional pattern
    #[arg(short = 'l', long = "limit", value_name = "SUBSET")]
    limit: Option<String>,

    /// clear the fact cache for every host in inventory (there is no fact
    /// cache here: accepted, nothing to clear)
    #[arg(long = "flush-cache")]
    flush_cache: bool,

    /// set additional variables as key=value or YAML/JSON, if filename
    /// prepend with @. This argument may be specified multiple times.
    #[arg(short = 'e', long = "extra-vars", value_name = "EXTRA_VARS")]
    extra_vars: Vec<String>,

    /// the vault identity to use. This argument may be specified multiple
    /// times.
    #[arg(long = "vault-id", value_name = "VAULT_IDS")]
    vault_ids: Vec<String>,

    /// vault password file
    #[arg(
        long = "vault-password-file",
        visible_alias = "vault-pass-file",
        value_name = "VAULT_PASSWORD_FILES",
        conflicts_with = "ask_vault_pass"
    )]
    vault_password_files: Vec<String>,

    /// ask for vault password
    #[arg(
        short = 'J',
        long = "ask-vault-password",
        visible_alias = "ask-vault-pass"
    )]
    ask_vault_pass: bool,

    /// specify number of parallel processes to use (default=100 here: a
    /// fork is a thread waiting on an agent, not a process)
    #[arg(short = 'f', long = "forks", value_name = "FORKS")]
    forks: Option<usize>,

    /// prepend colon-separated path(s) to module library. This argument
    /// may be specified multiple times.
    #[arg(short = 'M', long = "module-path", value_name = "MODULE_PATH")]
    module_path: Vec<String>,

    /// perform a syntax check on the playbook, but do not execute it
    #[arg(long = "syntax-check")]
    syntax_check: bool,

    /// list all tasks that would be executed
    #[arg(long = "list-tasks")]
    list_tasks: bool,

    /// list all available tags
    #[arg(long = "list-tags")]
    list_tags: bool,

    /// start the playbook at the task matching this name
    #[arg(long = "start-at-task", value_name = "START_AT_TASK")]
    start_at_task: Option<String>,

    /// only run plays and tasks tagged with these values. This argument
    /// may be specified multiple times.
    #[arg(short = 't', long = "tags", value_name = "TAGS")]
    tags: Vec<String>,

    /// only run plays and tasks whose tags do not match these values. This
    /// argument may be specified multiple times.
    #[arg(long = "skip-tags", value_name = "SKIP_TAGS")]
    skip_tags: Vec<String>,

    /// don't make any changes; instead, try to predict some of the changes
    /// that may occur
    #[arg(short = 'C', long = "check")]
    check: bool,

    /// when changing (small) files and templates, show the differences in
    /// those files; works great with --check
    #[arg(short = 'D', long = "diff")]
    diff: bool,

    /// use this file to authenticate the connection
    #[arg(
        long = "private-key",
        visible_alias = "key-file",
        value_name = "PRIVATE_KEY_FILE",
        help_heading = "Connection Options"
    )]
    private_key: Option<PathBuf>,

    /// connect as this user (default=None)
    #[arg(
        short = 'u',
        long = "user",
        value_name = "REMOTE_USER",
        help_heading = "Connection Options"
    )]
    remote_user: Option<String>,

    /// connection type to use (default=ssh)
    #[arg(
        short = 'c',
        long = "connection",
        value_name = "CONNECTION",
        help_heading = "Connection Options"
    )]
    connection: Option<String>,

    /// override the connection timeout in seconds (default depends on
    /// connection)
    #[arg(
        short = 'T',
        long = "timeout",
        value_name = "TIMEOUT",
        help_heading = "Connection Options"
    )]
    timeout: Option<u64>,

    /// specify common arguments to pass to sftp/scp/ssh (e.g. ProxyCommand)
    #[arg(
        long = "ssh-common-args",
        value_name = "SSH_COMMON_ARGS",
        allow_hyphen_values = true,
        help_heading = "Connection Options"
    )]
    ssh_common_args: Option<String>,

    /// specify extra arguments to pass to ssh only (e.g. -R)
    #[arg(
        long = "ssh-extra-args",
        value_name = "SSH_EXTRA_ARGS",
        allow_hyphen_values = true,
        help_heading = "Connection Options"
    )]
    ssh_extra_args: Option<String>,

    /// ask for connection password
    #[arg(
        short = 'k',
        long = "ask-pass",
        help_heading = "Connection Options",
        conflicts_with = "connection_password_file"
    )]
    ask_pass: bool,

    /// Connection password file
    #[arg(
        long = "connection-password-file",
        visible_alias = "conn-pass-file",
        value_name = "CONNECTION_PASSWORD_FILE",
        help_heading = "Connection Options"
    )]
    connection_password_file: Option<PathBuf>,

    /// run operations with become (does not imply password prompting)
    #[arg(
        short = 'b',
        long = "become",
        help_heading = "Privilege Escalation Options"
    )]
    become_: bool,

    /// privilege escalation method to use (default=sudo; sudo, su and doas
    /// run here)
    #[arg(
        long = "become-method",
        value_name = "BECOME_METHOD",
        help_heading = "Privilege Escalation Options"
    )]
    become_method: Option<String>,

    /// run operations as this user (default=root)
    #[arg(
        long = "become-user",
        value_name = "BECOME_USER",
        help_heading = "Privilege Escalation Options"
    )]
    become_user: Option<String>,

    /// ask for privilege escalation password
    #[arg(
        short = 'K',
        long = "ask-become-pass",
        help_heading = "Privilege Escalation Options",
        conflicts_with = "become_password_file"
    )]
    ask_become_pass: bool,

    /// Become password file
    #[arg(
        long = "become-password-file",
        visible_alias = "become-pass-file",
        value_name = "BECOME_PASSWORD_FILE",
        help_heading = "Privilege Escalation Options"
    )]
    become_password_file: Option<PathBuf>,

    /// write every event as a JSON line to FILE (mitogen-play's own)
    #[arg(
        long = "json",
        value_name = "FILE",
        help_heading = "mitogen-play Options"
    )]
    json: Option<PathBuf>,

    /// the Python of the ansible-core to take modules from (default
    /// $MITOGEN_ANSIBLE_PYTHON, else ansible-playbook's in PATH)
    #[arg(
        long = "ansible-python",
        value_name = "PY",
        help_heading = "mitogen-play Options"
    )]
    ansible_python: Option<PathBuf>,

    /// one ssh connection per context, no ControlMaster
    #[arg(long = "no-multiplex", help_heading = "mitogen-play Options")]
    no_multiplex: bool,
}

/// Where a password comes from.
#[derive(Debug, Default)]
pub(crate) enum PasswordFrom {
    /// Not asked for.
    #[default]
    Nowhere,
    /// `-k`/`-K`: asked on the terminal.
    Prompt,
    /// `--connection-password-file`/`--become-password-file`.
    File(PathBuf),
}

/// The parsed command line, as the rest of the CLI uses it.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) inventory: Vec<String>,
    pub(crate) playbooks: Vec<PathBuf>,
    /// `--version`: print versions and locations, run nothing.
    pub(crate) version: bool,
    pub(crate) limit: Option<String>,
    pub(crate) forks: Option<usize>,
    pub(crate) check: bool,
    pub(crate) diff: bool,
    pub(crate) extra: Vec<String>,
    /// `-t`, each value split at commas.
    pub(crate) tags: Vec<String>,
    pub(crate) skip_tags: Vec<String>,
    /// `-M`, each value split at colons.
    pub(crate) module_path: Vec<PathBuf>,
    pub(crate) json: Option<PathBuf>,
    pub(crate) syntax_check: bool,
    pub(crate) list_hosts: bool,
    pub(crate) list_tasks: bool,
    pub(crate) list_tags: bool,
    pub(crate) start_at_task: Option<String>,
    pub(crate) python: Option<PathBuf>,
    pub(crate) multiplex: bool,
    pub(crate) verbose: u8,
    /// Vault secrets' specs, `[id@]FILE` or `[id@]prompt`: the
    /// `--vault-id`s, then the `--vault-password-file`s as `@FILE` (the
    /// default id), as ansible-core's `build_vault_ids` orders them.
    pub(crate) vault: Vec<String>,
    pub(crate) ask_vault_pass: bool,
    pub(crate) remote_user: Option<String>,
    pub(crate) connection: Option<String>,
    pub(crate) private_key: Option<PathBuf>,
    pub(crate) timeout: Option<u64>,
    /// `--ssh-common-args` and `--ssh-extra-args`, split as a shell would.
    pub(crate) ssh_args: Vec<String>,
    pub(crate) become_: bool,
    pub(crate) become_user: Option<String>,
    pub(crate) become_method: Option<String>,
    pub(crate) connection_password: PasswordFrom,
    pub(crate) become_password: PasswordFrom,
}

/// The command line of this process; on `--help` or a bad
/// command line, clap's exit (0, or 2 with the usage).
pub(crate) fn parse() -> Result<Args, String> {
    from(Cli::parse())
}

fn from(c: Cli) -> Result<Args, String> {
    let split = |v: Vec<String>, sep: char| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(sep))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut ssh_args = Vec::new();
    for a in [&c.ssh_common_args, &c.ssh_extra_args]
        .into_iter()
        .flatten()
    {
        ssh_args.extend(mitogen_play::util::shlex_split(a)?);
    }
    let vault = c
        .vault_ids
        .into_iter()
        .chain(c.vault_password_files.into_iter().map(|f| format!("@{f}")))
        .collect();
    let password = |prompt: bool, file: Option<PathBuf>| match (prompt, file) {
        (_, Some(f)) => PasswordFrom::File(f),
        (true, None) => PasswordFrom::Prompt,
        (false, None) => PasswordFrom::Nowhere,
    };
    let _ = c.flush_cache;
    Ok(Args {
        inventory: c.inventory,
        playbooks: c.playbooks,
        version: c.version,
        limit: c.limit,
        forks: c.forks,
        check: c.check,
        diff: c.diff,
        extra: c.extra_vars,
        tags: split(c.tags, ','),
        skip_tags: split(c.skip_tags, ','),
        module_path: split(c.module_path, ':')
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        json: c.json,
        syntax_check: c.syntax_check,
        list_hosts: c.list_hosts,
        list_tasks: c.list_tasks,
        list_tags: c.list_tags,
        start_at_task: c.start_at_task,
        python: c.ansible_python,
        multiplex: !c.no_multiplex,
        verbose: c.verbose,
        vault,
        ask_vault_pass: c.ask_vault_pass,
        remote_user: c.remote_user,
        connection: c.connection,
        private_key: c.private_key,
        timeout: c.timeout,
        ssh_args,
        become_: c.become_,
        become_user: c.become_user,
        become_method: c.become_method,
        connection_password: password(c.ask_pass, c.connection_password_file),
        become_password: password(c.ask_become_pass, c.become_password_file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Result<Args, String> {
        let c = Cli::try_parse_from(std::iter::once("mitogen-play").chain(line.iter().copied()))
            .map_err(|e| e.to_string())?;
        from(c)
    }

    #[test]
    fn argparse_forms() {
        let a = args(&[
            "-bK",
            "-e@vars.yml",
            "-ekey=v",
            "-f10",
            "--limit=web",
            "-vvv",
            "pb.yml",
        ])
        .unwrap();
        assert!(a.become_);
        assert!(matches!(a.become_password, PasswordFrom::Prompt));
        assert_eq!(a.extra, ["@vars.yml", "key=v"]);
        assert_eq!(a.forks, Some(10));
        assert_eq!(a.limit.as_deref(), Some("web"));
        assert_eq!(a.verbose, 3);
        assert_eq!(a.playbooks, [PathBuf::from("pb.yml")]);
    }

    #[test]
    fn lists_and_aliases() {
        let a = args(&[
            "-t",
            "a, b",
            "--tags",
            "c",
            "-M",
            "x:y",
            "--inventory-file",
            "inv",
            "--vault-pass-file",
            "f",
            "--vault-id",
            "dev@g",
            "--ssh-extra-args",
            "-o 'A=b c'",
            "pb.yml",
        ])
        .unwrap();
        assert_eq!(a.tags, ["a", "b", "c"]);
        assert_eq!(a.module_path, [PathBuf::from("x"), PathBuf::from("y")]);
        assert_eq!(a.inventory, ["inv"]);
        // ansible-core's build_vault_ids: --vault-id first.
        assert_eq!(a.vault, ["dev@g", "@f"]);
        assert_eq!(a.ssh_args, ["-o", "A=b c"]);
    }

    #[test]
    fn version_needs_no_playbook() {
        assert!(args(&["--version"]).unwrap().version);
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(args(&[]).unwrap_err().contains("playbook"));
        assert!(
            args(&["--frobnicate", "pb.yml"])
                .unwrap_err()
                .contains("--frobnicate")
        );
        assert!(args(&["-f", "ten", "pb.yml"]).unwrap_err().contains("ten"));
        assert!(args(&["-k", "--conn-pass-file", "p", "pb.yml"]).is_err());
    }
}
