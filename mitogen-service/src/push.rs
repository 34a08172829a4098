//! Pushing one file to many contexts through the tree, each byte crossing
//! each link once.
//!
//! ```text
//! controller ── serves the file
//!   └── intermediary ── Ensure(key): fetch once from its parent, keep an
//!         │             unnamed copy, serve it under the same key
//!         ├── target 1 ── PushFetch: Ensure on its parent, then fetch from it
//!         ├── ...
//!         └── target 8
//! ```
//!
//! Every context asks only its own parent, which fetches from *its* parent
//! first if it has no copy yet (once, however many children ask), so the
//! controller's link to the intermediary carries the file once.

use crate::file::{FileService, WriteOptions, fetch};
use crate::service::{ServiceCx, ServiceExt, ServiceMethod};
use mitogen_core::{Context, FnError, Policy, Router};
use parking_lot::{Condvar, Mutex};
use std::path::Path;
use std::time::{Duration, Instant};

/// `mitogen.file.ensure`: make `key` available here, fetching it from this
/// context's parent once.
pub(crate) struct Ensure;
impl ServiceMethod for Ensure {
    type Service = FileService;
    const NAME: &'static str = "ensure";
    type Args = String;
    type Output = ();
    fn policy() -> Policy {
        Policy::ImmediateChild
    }
    fn call(svc: &FileService, cx: &ServiceCx<'_>, key: String) -> Result<(), FnError> {
        ensure(svc, cx.router(), &key)
    }
}

/// Keys being fetched right now, so concurrent requests wait for one fetch.
static IN_FLIGHT: Mutex<Vec<String>> = Mutex::new(Vec::new());
static DONE: Condvar = Condvar::new();

fn ensure(svc: &FileService, router: &Router, key: &str) -> Result<(), FnError> {
    {
        let mut busy = IN_FLIGHT.lock();
        loop {
            if svc.has_key(key) || Path::new(key).exists() && router.parent_id().is_none() {
                return Ok(());
            }
            if !busy.iter().any(|k| k == key) {
                busy.push(key.to_owned());
                break;
            }
            DONE.wait_for(&mut busy, Duration::from_millis(100));
        }
    }
    let result = fetch_into_cache(svc, router, key);
    IN_FLIGHT.lock().retain(|k| k != key);
    DONE.notify_all();
    result
}

fn fetch_into_cache(svc: &FileService, router: &Router, key: &str) -> Result<(), FnError> {
    let parent = router
        .parent_id()
        .ok_or("the controller has no copy of the pushed file registered")?;
    let parent = router.context(parent);
    parent.call_service::<Ensure>(&key.to_owned())?;
    // An unnamed file in the temp directory: gone when this context exits.
    let dir = std::env::temp_dir();
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        &dir,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )?;
    let mut cache = std::fs::File::from(fd);
    let (meta, stat) = crate::file::fetch_to_file(router, &parent, key, &mut cache)?;
    svc.register_file(
        key,
        std::sync::Arc::new(cache),
        stat.size,
        meta.mode,
        meta.mtime,
    );
    Ok(())
}

/// `mitogen.file.push_fetch`, run in each target: get the file from the
/// parent into `dest`.
pub(crate) struct PushFetch;
impl ServiceMethod for PushFetch {
    type Service = FileService;
    const NAME: &'static str = "push_fetch";
    type Args = (String, String, WriteOptions);
    type Output = crate::file::FileStat;
    fn call(
        _: &FileService,
        cx: &ServiceCx<'_>,
        (key, dest, opts): Self::Args,
    ) -> Result<Self::Output, FnError> {
        let router = cx.router();
        let parent = router.context(router.parent_id().ok_or("no parent")?);
        parent.call_service::<Ensure>(&key)?;
        let stat = fetch(router, &parent, &key, Path::new(&dest), &opts)?;
        PUSHED.lock().push(dest);
        PUSHED_CV.notify_all();
        Ok(stat)
    }
}

static PUSHED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PUSHED_CV: Condvar = Condvar::new();

/// In a target: waits until a push has written `dest` (or the deadline).
/// Returns whether it has.
pub fn wait_pushed(dest: &str, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let mut pushed = PUSHED.lock();
    while !pushed.iter().any(|p| p == dest) {
        if PUSHED_CV.wait_until(&mut pushed, end).timed_out() {
            return pushed.iter().any(|p| p == dest);
        }
    }
    true
}

/// Pushes local `src` to `dest` on every target, through the tree: each
/// target fetches from its parent, which fetches once from its own parent.
/// Returns each target's result, in order.
pub fn push_file(
    router: &Router,
    src: &Path,
    dest: &str,
    targets: &[Context],
    opts: &WriteOptions,
) -> Vec<Result<crate::file::FileStat, crate::file::TransferError>> {
    let prepared = FileService::local(router)
        .map_err(|k| k.to_string())
        .and_then(|svc| {
            svc.register_path(src).map_err(|e| e.to_string())?;
            std::fs::canonicalize(src)
                .map(|p| p.display().to_string())
                .map_err(|e| e.to_string())
        });
    let key = match prepared {
        Ok(k) => k,
        Err(e) => {
            return targets
                .iter()
                .map(|t| {
                    Err(crate::file::TransferError::Interrupted {
                        path: format!("{} to {}", src.display(), t.name()),
                        reason: e.clone(),
                    })
                })
                .collect();
        }
    };
    let pending: Vec<_> = targets
        .iter()
        .map(|t| t.call_service_async::<PushFetch>(&(key.clone(), dest.to_owned(), opts.clone())))
        .collect();
    pending.into_iter().map(|p| Ok(p?.wait()?)).collect()
}
