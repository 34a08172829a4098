//! Plain processes on the target: `/bin/sh -c COMMAND` in its own process
//! group, stdout and stderr collected apart, killed with its group at the
//! deadline or when its output passes the size limit.

use crate::agent::RawRun;
use crossbeam_channel::{RecvTimeoutError, bounded};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Output beyond this (stdout + stderr) kills the process: the result
/// could not be sent back anyway.
pub(crate) const MAX_OUTPUT: usize = 64 << 20;

#[derive(Debug, Clone)]
pub(crate) struct ProcSpec {
    pub(crate) command: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<String>,
    pub(crate) timeout: Duration,
}

impl Default for ProcSpec {
    fn default() -> Self {
        Self {
            command: String::new(),
            env: Vec::new(),
            cwd: None,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// Runs `spec` to completion (or its deadline).
pub(crate) fn run(spec: &ProcSpec) -> std::io::Result<RawRun> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    match &spec.cwd {
        Some(dir) => {
            cmd.current_dir(dir);
        }
        None => {
            if let Some(home) = crate::agent::home_dir().filter(|h| h.is_dir()) {
                cmd.current_dir(home);
            }
        }
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    let (tx, rx) = bounded::<(usize, Vec<u8>, bool)>(64);
    let mut readers = Vec::new();
    for (idx, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send((idx, Vec::new(), true));
                        return;
                    }
                    Ok(n) => {
                        if tx.send((idx, buf[..n].to_vec(), false)).is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let deadline = Instant::now() + spec.timeout;
    let mut out = [Vec::new(), Vec::new()];
    let mut open = readers.len();
    let (mut timed_out, mut too_large) = (false, false);
    while open > 0 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, _, true)) => open -= 1,
            Ok((i, data, false)) => {
                out[i].extend_from_slice(&data);
                if out[0].len() + out[1].len() > MAX_OUTPUT {
                    too_large = true;
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out || too_large {
        kill_group(pgid);
    }
    let status = child.wait()?;
    // The group is dead or done: the readers see EOF (or a grandchild that
    // kept the pipe is gone with the group).
    if timed_out || too_large {
        kill_group(pgid);
    }
    drop(rx);
    if open == 0 {
        for r in readers {
            let _ = r.join();
        }
    } // else: a reader may wait on a pipe an escaped grandchild holds; it ends with it.
    let rc = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0));
    let [stdout, stderr] = out;
    Ok(RawRun {
        rc,
        stdout,
        stderr,
        timed_out,
        too_large,
        agent_us: 0,
        child_us: 0,
        tmp: None,
    })
}

/// SIGKILL to process `pid` (ignoring "no such process").
pub(crate) fn kill_process(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// SIGKILL to process group `pgid` (ignoring "no such process").
pub(crate) fn kill_group(pgid: u32) {
    if let Some(p) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
}
