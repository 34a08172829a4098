//! Functions the test agents run (registered on both ends).

use mitogen_core::layer::LayerRouter;
use mitogen_core::{
    CallCx, ContextId, FnError, Function, Handle, Local, Message, Registry, Sender,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) fn register(reg: &mut Registry) {
    reg.add::<Pid>()
        .add::<Echo>()
        .add::<EchoBytes>()
        .add::<Add>()
        .add::<Fail>()
        .add::<Panic>()
        .add::<Incr>()
        .add::<Sleep>()
        .add::<CallOther>()
        .add::<Forge>()
        .add::<WriteRaw>()
        .add::<Log>()
        .add::<Stream>()
        .add::<WriteFileAfter>()
        .add::<SpawnChild>()
        .add::<AnnounceRoute>()
        .add::<BigReply>()
        .add::<SendBig>()
        .add::<QuotaFail>()
        .add::<Relay>()
        .add::<BlockUntil>()
        .add::<SawCancel>()
        .add::<StreamBytes>()
        .add::<PeakRss>()
        .add_error::<QuotaError>();
}

/// A typed error that must survive hops.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct QuotaError {
    pub(crate) used: u64,
}
impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quota exceeded: {} used", self.used)
    }
}
impl std::error::Error for QuotaError {}
impl mitogen_core::ErrorType for QuotaError {
    const CODE: &'static str = "test/quota";
}

static SAW_CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

macro_rules! function {
    ($(#[$m:meta])* $ty:ident, $name:literal, $args:ty => $out:ty, |$cx:pat_param, $a:pat_param| $body:expr) => {
        $(#[$m])*
        pub(crate) struct $ty;
        impl Function for $ty {
            const NAME: &'static str = $name;
            type Args = $args;
            type Output = $out;
            fn call($cx: &CallCx<'_>, $a: $args) -> Result<$out, FnError> {
                $body
            }
        }
    };
}

function!(Pid, "test::pid", () => u32, |_, ()| Ok(std::process::id()));
function!(Echo, "test::echo", u64 => u64, |_, v| Ok(v));
function!(EchoBytes, "test::echo_bytes", Vec<u8> => usize, |_, v| Ok(v.len()));
function!(Add, "test::add", (i64, i64) => i64, |_, (a, b)| Ok(a + b));
function!(Fail, "test::fail", String => (), |_, why| Err(why.into()));
function!(Panic, "test::panic", () => (), |_, ()| panic!("deliberate panic in agent"));
function!(
    /// Increments the agent's counter by `n` and returns the new value.
    Incr, "test::incr", u64 => u64, |_, n| {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        Ok(COUNT.fetch_add(n, Ordering::SeqCst) + n)
    }
);
function!(Sleep, "test::sleep", u64 => (), |_, ms| {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(())
});
function!(
    /// Calls `Pid` in another context through the tree; returns the error text.
    CallOther, "test::call_other", u32 => String, |cx, id| {
        let other = cx.router().context(ContextId(id));
        Ok(match other.call::<Pid>(&()) {
            Ok(pid) => format!("ok {pid}"),
            Err(e) => e.to_string(),
        })
    }
);
function!(
    /// Routes a message with forged source fields, then a genuine one.
    Forge, "test::forge", (Sender, u32, u32) => (), |cx, (to, src, auth)| {
        let mut forged = Message::typed(to.context, to.handle, &"forged")?;
        forged.src_id = ContextId(src);
        forged.auth_id = ContextId(auth);
        cx.router().route(forged);
        to.send(cx.router(), &"genuine")?;
        Ok(())
    }
);
function!(WriteRaw, "test::write_raw", Vec<u8> => bool, |cx, bytes| {
    Ok(mitogen_core::fuzzing::write_raw_to_parent(cx.router(), &bytes))
});
function!(Log, "test::log", String => (), |_, text| {
    log::info!("info: {text}");
    log::debug!("debug: {text}");
    Ok(())
});
function!(
    /// Sends `n` values to a sender, then closes it.
    Stream, "test::stream", (Sender, u64) => (), |cx, (to, n)| {
        for i in 0..n {
            to.send(cx.router(), &i)?;
        }
        to.close(cx.router());
        Ok(())
    }
);
function!(WriteFileAfter, "test::write_file_after", (String, u64) => (), |_, (path, ms)| {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(path, "done")?;
    Ok(())
});
function!(
    /// Starts a child of the called context itself (not via the controller's
    /// request): exercises id allocation from an agent. Returns its id and pid.
    SpawnChild, "test::spawn_child", () => (u32, u32), |cx, ()| {
        let child = cx.router().connect(&Local::new())?;
        Ok((child.id().0, child.call::<Pid>(&())?))
    }
);

/// Same name as `Add` but other arguments: the callee cannot decode them.
pub(crate) struct AddWrongArgs;
impl Function for AddWrongArgs {
    const NAME: &'static str = "test::add";
    type Args = ();
    type Output = i64;
    fn call(_: &CallCx<'_>, (): ()) -> Result<i64, FnError> {
        Ok(0)
    }
}

/// Never registered anywhere.
pub(crate) struct NotRegistered;
impl Function for NotRegistered {
    const NAME: &'static str = "test::not_registered";
    type Args = ();
    type Output = ();
    fn call(_: &CallCx<'_>, (): ()) -> Result<(), FnError> {
        Ok(())
    }
}

pub(crate) const UNUSED_HANDLE: Handle = Handle(4242);

function!(
    /// Announces a route for `id` to the parent, as if it lived behind us.
    AnnounceRoute, "test::announce_route", u32 => (), |cx, id| {
        let parent = cx.router().parent_id().ok_or("no parent")?;
        cx.router().send_stamped(Message::typed(parent, Handle::ADD_ROUTE, &(ContextId(id), "hijack"))?);
        Ok(())
    }
);

function!(BigReply, "test::big_reply", u64 => Vec<u8>, |_, n| Ok(vec![7; n as usize]));
function!(
    /// Sends one value of `n` bytes to a sender.
    SendBig, "test::send_big", (Sender, u64) => (), |cx, (to, n)| {
        to.send(cx.router(), &vec![7u8; n as usize])?;
        Ok(())
    }
);
function!(QuotaFail, "test::quota_fail", u64 => (), |_, used| {
    Err(Box::new(QuotaError { used }))
});
function!(
    /// Calls `QuotaFail` in another context and fails with its error.
    Relay, "test::relay", u32 => (), |cx, id| {
        cx.router().context(ContextId(id)).call::<QuotaFail>(&7)?;
        Ok(())
    }
);
function!(
    /// Creates the first file, waits (at most 30 s) until the second exists,
    /// then records whether the caller had given up by then.
    BlockUntil, "test::block_until", (String, String) => (), |cx, (started, path)| {
        std::fs::write(&started, "started")?;
        let t0 = std::time::Instant::now();
        while !std::path::Path::new(&path).exists() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(2));
        }
        SAW_CANCEL.store(cx.is_cancelled(), Ordering::SeqCst);
        Ok(())
    }
);
function!(SawCancel, "test::saw_cancel", () => bool, |_, ()| Ok(SAW_CANCEL.load(Ordering::SeqCst)));
function!(
    /// Sends `n` messages of `size` bytes to a sender, then closes it.
    StreamBytes, "test::stream_bytes", (Sender, u64, u64) => (), |cx, (to, n, size)| {
        let chunk = mitogen_core::Blob(vec![1u8; size as usize]);
        for _ in 0..n {
            to.send(cx.router(), &chunk)?;
        }
        to.close(cx.router());
        Ok(())
    }
);
function!(PeakRss, "test::peak_rss", () => u64, |_, ()| Ok(peak_rss_kib(std::process::id())));

/// `VmHWM` (peak resident set) of a process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
