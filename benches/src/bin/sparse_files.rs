//! Sparse files (performance goal 6): a 4 GiB file holding 1 MiB of data at
//! its start, 64 KiB in the middle and 10 bytes near the end, copied with
//! mitogen-rs to a local child and over ssh, against `cp --sparse=always`
//! and `tar -cS | ssh host tar -xS` (GNU tar's sparse mode) in the same
//! run. Prints time and destination blocks of each, and the ratios. Needs
//! root and `scripts/test-hosts.sh setup` for the ssh part.
//!
//! Usage: `sparse_files [--gib N]`

use mitogen_benches::arg;
use mitogen_core::{Local, Router};
use mitogen_service::{WriteOptions, put_file};
use mitogen_ssh::Ssh;
use mitogen_test_support::sshd::{Sshd, sshd_available};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn blocks(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks())
}

fn timed(mut cmd: Command) -> Result<Duration, String> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !st.success() {
        return Err(format!("{cmd:?} failed: {st}"));
    }
    Ok(t.elapsed())
}

fn put(router: &Router, ctx: &mitogen_core::Context, src: &Path, dest: &Path) -> Duration {
    let t = Instant::now();
    if let Err(e) = put_file(
        router,
        ctx,
        src,
        &dest.display().to_string(),
        &WriteOptions::default(),
        |_| {},
    ) {
        eprintln!("put_file: {e}");
    }
    t.elapsed()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = mitogen_core::init(mitogen_benches::register)?;
    let gib = arg("--gib", 4);
    let work = std::env::temp_dir().join(format!("mitogen-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let src = work.join("sparse");
    {
        let f = std::fs::File::create(&src)?;
        f.write_all_at(&vec![0x11; 1 << 20], 0)?;
        f.write_all_at(&[0x5a; 64 << 10], (gib << 30) / 2)?;
        f.write_all_at(b"0123456789", (gib << 30) * 3 / 4 + 5)?;
        f.set_len(gib << 30)?;
        f.sync_all()?;
    }
    let line = |what: &str, t: Duration, dest: &Path, peer: Option<(&str, Duration)>| {
        let ratio = peer.map_or(String::new(), |(name, p)| {
            format!(
                ",\"vs\":\"{name}\",\"speed_ratio\":{:.2}",
                p.as_secs_f64() / t.as_secs_f64()
            )
        });
        println!(
            "{{\"case\":\"{what}\",\"gib\":{gib},\"s\":{:.3},\"blocks_src\":{},\"blocks_dst\":{}{ratio}}}",
            t.as_secs_f64(),
            blocks(&src),
            blocks(dest)
        );
    };

    // Local: cp, then mitogen-rs to a local child.
    let cp_dst = work.join("cp");
    let mut cp = Command::new("cp");
    cp.arg("--sparse=always").arg(&src).arg(&cp_dst);
    let cp_t = timed(cp)?;
    line("cp --sparse=always", cp_t, &cp_dst, None);
    let local = router.connect(&Local::new())?;
    let rs_dst = work.join("rs-local");
    let rs_t = put(&router, &local, &src, &rs_dst);
    line("mitogen-rs local", rs_t, &rs_dst, Some(("cp", cp_t)));

    // Over ssh: tar's sparse mode, then mitogen-rs.
    if sshd_available() {
        let sshd = Sshd::start("127.0.0.1", None)?;
        let remote =
            std::env::temp_dir().join(format!("mitogen-sparse-dst-{}", std::process::id()));
        std::fs::create_dir_all(&remote)?;
        // The test user must be able to write there.
        let _ = Command::new("chmod").arg("1777").arg(&remote).status();
        let mut ssh = vec!["ssh".to_owned(), "-o".into(), "Compression=no".into()];
        ssh.extend(
            sshd.ssh_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        let sh = format!(
            "tar -C {} -cSf - sparse | {} -l mtg-key 127.0.0.1 'tar -C {} -xSf -'",
            work.display(),
            ssh.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" "),
            remote.display()
        );
        let mut tar = Command::new("sh");
        tar.args(["-c", &sh]);
        let tar_t = timed(tar)?;
        line("tar -S | ssh tar -xS", tar_t, &remote.join("sparse"), None);
        let ctx = router.connect(
            &Ssh::new("127.0.0.1")
                .port(sshd.port())
                .user("mtg-key")
                .identity_file(sshd.client_key())
                .known_hosts_file(sshd.known_hosts()),
        )?;
        let rs_remote = remote.join("rs");
        let rs_t = put(&router, &ctx, &src, &rs_remote);
        line(
            "mitogen-rs over ssh",
            rs_t,
            &rs_remote,
            Some(("tar", tar_t)),
        );
        let _ = std::fs::remove_dir_all(&remote);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
