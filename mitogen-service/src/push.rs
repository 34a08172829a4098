//! Pushing one file to many contexts through the tree, each byte crossing
//! each link once.
//!
//! ```text
//! controller ── reads the file once for its checksum, serves that version
//!   │           under its key (path, size, checksum)
//!   └── intermediary ── Ensure(key): fetch once from its parent, keep an
//!         │             unnamed copy, serve it under the same key
//!         ├── target 1 ── PushFetch: Ensure on its parent, then fetch from it
//!         ├── ...
//!         └── target 8
//! ```
//!
//! Every context asks only its own parent, which fetches from *its* parent
//! first if it has no copy of that version yet (once, however many
//! children ask), so the controller's link to the intermediary carries the
//! file once. Because the key names the content, a changed file is a new
//! key: intermediaries fetch it again instead of serving the copy they
//! hold, and drop the older version. The per-router state (which keys are
//! being fetched, which destinations were written) lives in the router
//! ([`LayerRouter::extension`]), so two routers in one process never see each
//! other's pushes.

use crate::file::{
    Cause, FileError, FileService, FileStat, Source, Stage, TransferError, WriteOptions, fetch,
    fetch_to_file, place,
};
use crate::service::{ServiceCx, ServiceExt, ServiceMethod};
use mitogen_core::layer::LayerRouter;
use mitogen_core::{CallError, Context, FnError, Policy, Router};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One version of one file: what a push is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PushKey {
    /// The source's canonical path on the controller.
    path: String,
    size: u64,
    checksum: u64,
}

impl PushKey {
    /// The name the version is served under (never a valid path, so it
    /// cannot be confused with a registered one).
    fn key(&self) -> String {
        format!("push:{:016x}:{}:{}", self.checksum, self.size, self.path)
    }
}

/// Per-router push state.
#[derive(Default)]
struct PushState {
    /// Keys being fetched right now, so concurrent requests wait for one fetch.
    in_flight: Mutex<HashSet<String>>,
    fetched: Condvar,
    /// Destinations pushes have written in this context.
    pushed: Mutex<HashSet<String>>,
    written: Condvar,
}

fn state(router: &Router) -> Arc<PushState> {
    router.extension(PushState::default)
}

/// `mitogen.file.ensure`: make `key` available here, fetching it from this
/// context's parent once.
pub(crate) struct Ensure;
impl ServiceMethod for Ensure {
    type Service = FileService;
    const NAME: &'static str = "ensure";
    type Args = PushKey;
    type Output = Result<(), TransferError>;
    fn policy() -> Policy {
        Policy::ImmediateChild
    }
    fn call(svc: &FileService, cx: &ServiceCx<'_>, key: PushKey) -> Result<Self::Output, FnError> {
        Ok(ensure(svc, cx.router(), &key))
    }
}

fn ensure(svc: &FileService, router: &Router, key: &PushKey) -> Result<(), TransferError> {
    let st = state(router);
    let name = key.key();
    {
        let mut busy = st.in_flight.lock();
        loop {
            if svc.has_key(&name) {
                return Ok(());
            }
            if router.parent_id().is_none() {
                // Only the push that registered a version serves it here,
                // until a newer version of the same file replaces it.
                return Err(place(router, Path::new(&key.path))
                    .err(
                        Stage::Open,
                        Cause::Changed(format!(
                            "version {:016x} is no longer being pushed",
                            key.checksum
                        )),
                    )
                    .into());
            }
            if busy.insert(name.clone()) {
                break;
            }
            st.fetched.wait(&mut busy);
        }
    }
    let result = fetch_into_cache(svc, router, key, &name);
    st.in_flight.lock().remove(&name);
    st.fetched.notify_all();
    result
}

fn fetch_into_cache(
    svc: &FileService,
    router: &Router,
    key: &PushKey,
    name: &str,
) -> Result<(), TransferError> {
    let parent = router.context(router.parent_id().unwrap_or_else(|| router.id()));
    parent.call_service::<Ensure>(key)??;
    // An unnamed file in the temp directory: gone when this context exits.
    let dir = std::env::temp_dir();
    let label = PathBuf::from(format!("(cached copy of {})", key.path));
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        &dir,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| place(router, &dir).err(Stage::Create, std::io::Error::from(e)))?;
    let mut cache = std::fs::File::from(fd);
    let (meta, stat) = fetch_to_file(router, &parent, name, &mut cache, &label)?;
    let here = place(router, &label);
    if stat.checksum != key.checksum || stat.size != key.size {
        return Err(here
            .err(
                Stage::Verify,
                Cause::Corrupt {
                    got: stat.size,
                    want: key.size,
                    got_sum: stat.checksum,
                    want_sum: key.checksum,
                },
            )
            .into());
    }
    let mut source =
        Source::from_file(cache, label.clone()).map_err(|(stage, cause)| here.err(stage, cause))?;
    source.mode = meta.mode;
    source.mtime = meta.mtime;
    source.checksum = Some(key.checksum);
    svc.register_file(name, &key.path, source);
    Ok(())
}

/// `mitogen.file.push_fetch`, run in each target: get the file from the
/// parent into `dest`.
pub(crate) struct PushFetch;
impl ServiceMethod for PushFetch {
    type Service = FileService;
    const NAME: &'static str = "push_fetch";
    type Args = (PushKey, String, WriteOptions);
    type Output = Result<FileStat, TransferError>;
    fn call(
        _: &FileService,
        cx: &ServiceCx<'_>,
        (key, dest, opts): Self::Args,
    ) -> Result<Self::Output, FnError> {
        let router = cx.router();
        let parent = router.context(router.parent_id().ok_or("a push target has no parent")?);
        let pushed = parent
            .call_service::<Ensure>(&key)
            .map_err(TransferError::from)
            .and_then(|r| r)
            .and_then(|()| fetch(router, &parent, &key.key(), Path::new(&dest), &opts));
        if pushed.is_ok() {
            let st = state(router);
            st.pushed.lock().insert(dest);
            st.written.notify_all();
        }
        Ok(pushed)
    }
}

/// In a target: waits until a push has written `dest` here (or the
/// deadline). Returns whether it has.
pub fn wait_pushed(router: &Router, dest: &str, timeout: Duration) -> bool {
    let st = state(router);
    let end = Instant::now() + timeout;
    let mut pushed = st.pushed.lock();
    while !pushed.contains(dest) {
        if st.written.wait_until(&mut pushed, end).timed_out() {
            return pushed.contains(dest);
        }
    }
    true
}

/// Pushes local `src` to `dest` on every target, through the tree: each
/// target fetches from its parent, which fetches once from its own parent.
///
/// The push delivers what `src` holds when it starts: it reads `src` once
/// for its checksum, and the version is keyed by path, size and checksum,
/// so intermediaries holding an older version fetch this one instead. The
/// controller keeps serving the newest pushed version of each path (one
/// open file per path) for later pushes through new intermediaries.
///
/// Returns each target's result, in order: `Ok` carries the size and
/// checksum of the version pushed, which each target has verified.
///
/// # Errors
/// Per target, a [`TransferError`]; a source that changes while it is
/// read fails every target with [`Cause::Changed`].
pub fn push_file(
    router: &Router,
    src: &Path,
    dest: &str,
    targets: &[Context],
    opts: &WriteOptions,
) -> Vec<Result<FileStat, TransferError>> {
    let key = match prepare(router, src) {
        Ok(k) => k,
        Err(e) => return targets.iter().map(|_| Err(e.clone())).collect(),
    };
    let pending: Vec<_> = targets
        .iter()
        .map(|t| t.call_service_async::<PushFetch>(&(key.clone(), dest.to_owned(), opts.clone())))
        .collect();
    pending
        .into_iter()
        .zip(targets)
        .map(|(p, t)| {
            let stat = p?.wait()??;
            if stat.checksum != key.checksum || stat.size != key.size {
                return Err(FileError {
                    context: t.id(),
                    context_name: t.name().to_owned(),
                    path: PathBuf::from(dest),
                    stage: Stage::Verify,
                    cause: Cause::Corrupt {
                        got: stat.size,
                        want: key.size,
                        got_sum: stat.checksum,
                        want_sum: key.checksum,
                    },
                }
                .into());
            }
            Ok(stat)
        })
        .collect()
}

/// Reads `src` for its key and serves that version from here.
fn prepare(router: &Router, src: &Path) -> Result<PushKey, TransferError> {
    let svc = FileService::local(router).map_err(|kind| CallError {
        context: router.id(),
        context_name: router.name().to_owned(),
        function: "push_file".into(),
        kind,
    })?;
    let canon = std::fs::canonicalize(src).map_err(|e| place(router, src).err(Stage::Open, e))?;
    let source = Source::snapshot(&place(router, &canon))?;
    let key = PushKey {
        path: canon.display().to_string(),
        size: source.size,
        checksum: source.checksum.unwrap_or_default(),
    };
    svc.register_file(&key.key(), &key.path, source);
    Ok(key)
}
