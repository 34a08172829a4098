//! What a target runs for a copy, and the conveniences that call it.

use super::error::kind_err;
use super::serve::RegisterPath;
use super::{
    FileService, FileStat, INLINE_MAX, Progress, TransferError, WriteOptions, fetch, write_atomic,
};
use crate::service::{ServiceCx, ServiceExt, ServiceMethod};
use mitogen_core::{Blob, Context, ContextId, FnError, Router};
use std::path::Path;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Functions the target runs, and the conveniences that call them

/// `mitogen.file.write`: writes inline bytes atomically.
pub(super) struct WriteFile;
impl ServiceMethod for WriteFile {
    type Service = FileService;
    const NAME: &'static str = "write";
    type Args = (String, Blob, WriteOptions);
    type Output = FileStat;
    fn call(
        _: &FileService,
        _: &ServiceCx<'_>,
        (path, data, opts): Self::Args,
    ) -> Result<FileStat, FnError> {
        Ok(write_atomic(Path::new(&path), &data, &opts)?)
    }
}

/// Fetches a file from another context's file service into the called
/// one: `(from, path, dest, options)`. What [`put_file`] asks the target to
/// do; call it (with [`ServiceExt::call_service`]) to copy between any two
/// contexts. It runs on a service worker, so the context's main thread
/// stays free for calls during the transfer.
#[derive(Debug)]
pub struct FetchFrom;
impl ServiceMethod for FetchFrom {
    type Service = FileService;
    const NAME: &'static str = "fetch_from";
    type Args = (ContextId, String, String, WriteOptions);
    type Output = FileStat;
    fn call(
        _: &FileService,
        cx: &ServiceCx<'_>,
        (from, path, dest, opts): Self::Args,
    ) -> Result<FileStat, FnError> {
        let from = cx.router().context(from);
        Ok(fetch(cx.router(), &from, &path, Path::new(&dest), &opts)?)
    }
}

/// Copies local file `src` to `dest` on `target`. Files up to
/// [`INLINE_MAX`] go in one call; larger ones stream from this context's
/// file service, with `progress` called about every 100 ms.
///
/// # Errors
/// [`TransferError`]; nothing is left at `dest` on error.
pub fn put_file(
    router: &Router,
    target: &Context,
    src: &Path,
    dest: &str,
    opts: &WriteOptions,
    mut progress: impl FnMut(Progress),
) -> Result<FileStat, TransferError> {
    let wrap = |source| TransferError::Write {
        path: src.to_owned(),
        source,
    };
    let meta = std::fs::metadata(src).map_err(wrap)?;
    if meta.len() <= INLINE_MAX {
        let data = std::fs::read(src).map_err(wrap)?;
        use std::os::unix::fs::MetadataExt;
        let mut o = opts.clone();
        o.mode = o.mode.or_else(|| Some(meta.mode() & 0o7777));
        o.mtime = o.mtime.or_else(|| meta.modified().ok());
        let stat = target.call_service::<WriteFile>(&(dest.to_owned(), Blob(data), o))?;
        progress(Progress {
            done: stat.size,
            total: stat.size,
            rate: 0.0,
        });
        return Ok(stat);
    }
    let svc = FileService::local(router).map_err(|k| kind_err(target, "put_file", k))?;
    svc.register_path(src).map_err(wrap)?;
    let key = std::fs::canonicalize(src)
        .map_err(wrap)?
        .display()
        .to_string();
    let pending = target.call_service_async::<FetchFrom>(&(
        router.id(),
        key.clone(),
        dest.to_owned(),
        opts.clone(),
    ))?;
    loop {
        match pending.receiver().recv_timeout(Duration::from_millis(100)) {
            Err(mitogen_core::RecvError::Timeout) => {
                if let Some(p) = svc.progress(target.id(), &key) {
                    progress(p);
                }
            }
            r => {
                let stat = pending.finish(r)?;
                if let Some(p) = svc.progress(target.id(), &key) {
                    progress(Progress {
                        done: stat.size,
                        ..p
                    });
                }
                return Ok(stat);
            }
        }
    }
}

/// Writes `data` to `dest` on `target` atomically, in one call.
///
/// # Errors
/// [`TransferError::Call`] with what the target reported.
pub fn put_bytes(
    target: &Context,
    dest: &str,
    data: Vec<u8>,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    Ok(target.call_service::<WriteFile>(&(dest.to_owned(), Blob(data), opts.clone()))?)
}

/// Copies `src` on `source` to local `dest` (the source serves it for this).
///
/// # Errors
/// [`TransferError`].
pub fn fetch_file(
    router: &Router,
    source: &Context,
    src: &str,
    dest: &Path,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    source.call_service::<RegisterPath>(&src.to_owned())?;
    fetch(router, source, src, dest, opts)
}
