//! What a target runs for a copy, and the conveniences that call it.

use super::error::{Cause, Place, Stage, kind_err};
use super::receive::write_here;
use super::serve::RegisterPath;
use super::source::Source;
use super::{FileService, FileStat, INLINE_MAX, Progress, TransferError, WriteOptions, fetch};
use crate::service::{ServiceCx, ServiceExt, ServiceMethod};
use mitogen_core::{Blob, Context, ContextId, FnError, Router};
use std::path::Path;
use std::time::Duration;

/// `mitogen.file.write`: writes inline bytes atomically.
pub(super) struct WriteFile;
impl ServiceMethod for WriteFile {
    type Service = FileService;
    const NAME: &'static str = "write";
    type Args = (String, Blob, WriteOptions);
    type Output = Result<FileStat, TransferError>;
    fn call(
        _: &FileService,
        cx: &ServiceCx<'_>,
        (path, data, opts): Self::Args,
    ) -> Result<Self::Output, FnError> {
        Ok(write_here(cx.router(), Path::new(&path), &data, &opts).map_err(Into::into))
    }
}

/// Fetches a file from another context's file service into the called
/// one: `(from, path, dest, options)`. What [`put_file`] asks the target to
/// do; call it (with [`ServiceExt::call_service`]) to copy between any two
/// contexts. It runs on a service worker, so the context's main thread
/// stays free for calls during the transfer. A failed transfer is the
/// inner `Err`, a [`TransferError`] as [`fetch`] returns it.
#[derive(Debug)]
pub struct FetchFrom;
impl ServiceMethod for FetchFrom {
    type Service = FileService;
    const NAME: &'static str = "fetch_from";
    type Args = (ContextId, String, String, WriteOptions);
    type Output = Result<FileStat, TransferError>;
    fn call(
        _: &FileService,
        cx: &ServiceCx<'_>,
        (from, path, dest, opts): Self::Args,
    ) -> Result<Self::Output, FnError> {
        let from = cx.router().context(from);
        Ok(fetch(cx.router(), &from, &path, Path::new(&dest), &opts))
    }
}

/// Copies local file `src` to `dest` on `target`. Files up to
/// [`INLINE_MAX`] go in one call; larger ones stream from this context's
/// file service, with `progress` called about every 100 ms.
///
/// # Errors
/// [`TransferError`]: a [`FileError`](super::FileError) names `src` here
/// for opening and reading it, and `dest` on `target` for checks and
/// writes. A source modified while it is read fails with
/// [`Cause::Changed`] (see [`FileService`] for what
/// that check can see). Nothing is left at `dest` on error.
pub fn put_file(
    router: &Router,
    target: &Context,
    src: &Path,
    dest: &str,
    opts: &WriteOptions,
    mut progress: impl FnMut(Progress),
) -> Result<FileStat, TransferError> {
    let here = Place::new(router, src);
    let file = std::fs::File::open(src).map_err(|e| here.err(Stage::Open, e))?;
    let source =
        Source::from_file(file, src.to_owned()).map_err(|(stage, cause)| here.err(stage, cause))?;
    if source.size <= INLINE_MAX {
        let mut data = Vec::with_capacity(source.size as usize);
        std::io::Read::read_to_end(&mut &*source.file, &mut data)
            .map_err(|e| here.err(Stage::Read, e))?;
        let mut sum = super::Checksum::default();
        sum.update(&data);
        source.verify(&here, sum.finish())?;
        if data.len() as u64 != source.size {
            return Err(here
                .err(
                    Stage::Read,
                    Cause::Changed(format!("read {} bytes of {}", data.len(), source.size)),
                )
                .into());
        }
        let mut o = opts.clone();
        o.mode = o.mode.or(Some(source.mode));
        o.mtime = o.mtime.or(Some(source.mtime));
        let stat = target.call_service::<WriteFile>(&(dest.to_owned(), Blob(data), o))??;
        progress(Progress {
            done: stat.size,
            total: stat.size,
            rate: 0.0,
        });
        return Ok(stat);
    }
    drop(source);
    let svc = FileService::local(router).map_err(|k| kind_err(target, "put_file", k))?;
    let key = std::fs::canonicalize(src)
        .map_err(|e| here.err(Stage::Open, e))?
        .display()
        .to_string();
    svc.register_path(&key)
        .map_err(|e| here.err(Stage::Open, e))?;
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
                let stat = pending.finish(r)??;
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
/// [`TransferError`]: a [`FileError`](super::FileError) naming `dest` on
/// `target`, or the call error.
pub fn put_bytes(
    target: &Context,
    dest: &str,
    data: Vec<u8>,
    opts: &WriteOptions,
) -> Result<FileStat, TransferError> {
    target.call_service::<WriteFile>(&(dest.to_owned(), Blob(data), opts.clone()))?
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
    source.call_service::<RegisterPath>(&src.to_owned())??;
    fetch(router, source, src, dest, opts)
}
