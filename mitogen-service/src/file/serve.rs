//! The serving side: registered paths and cached pushes, and the service
//! methods that start transfers.

use super::error::{KindError, Place, Stage};
use super::pump::{Pump, Transfer};
use super::source::Source;
use super::{FetchArgs, FetchReply, FileError, Progress};
use crate::service::{Service, ServiceCx, ServiceExt, ServiceMethod, local_instance};
use mitogen_core::layer::LayerRouter;
use mitogen_core::{CallError, CallErrorKind, Context, ContextId, FnError, Policy, Router, Sender};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Serves registered files, chunked and flow-controlled. One per context.
///
/// A transfer sends one version of its source or fails: after the last
/// read the source's size, mtime and ctime are compared with what they were
/// when it was opened, and a pushed version's checksum with the one it was
/// pushed under. A change fails the transfer with [`Cause::Changed`]
/// (nothing is written at the destination). Like rsync's check, this
/// cannot see a rewrite that leaves size and both times as they were (one
/// within the same timestamp tick as the previous write); pushes, keyed by
/// checksum, can. A path replaced by another file (rename) does not tear a
/// copy: the open file is read whole.
///
/// [`Cause::Changed`]: super::Cause::Changed
pub struct FileService {
    registered: Mutex<Registered>,
    pub(super) pump: Arc<Pump>,
}

impl std::fmt::Debug for FileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileService").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Registered {
    paths: HashSet<PathBuf>,
    prefixes: Vec<PathBuf>,
    /// Open files served by key (pushes), with the path each is a version of.
    files: HashMap<String, (String, Source)>,
}

/// Why a file cannot be served.
pub(super) enum OpenError {
    /// The caller may not have it (not registered, or outside every prefix).
    Refused(CallErrorKind),
    /// It is allowed but cannot be opened.
    File(FileError),
}

impl Service for FileService {
    const NAME: &'static str = "mitogen.file";

    /// Activating it serves nothing until files are registered, so a child
    /// may (push intermediaries are activated by their children's requests).
    fn activation_policy() -> Policy {
        Policy::Any
    }

    fn activate(router: &Router) -> Result<Self, FnError> {
        let router = router.downgrade();
        let pump = Arc::new(Pump::default());
        let ack = router.new_handle();
        let weak = Arc::downgrade(&pump);
        router.add_handler(ack, Policy::Any, move |msg, _| {
            if let (Some(p), Ok((id, acked))) = (weak.upgrade(), msg.decode::<(u64, u64)>()) {
                p.ack(msg.src_id, id, acked);
            }
        });
        *pump.ack.lock() = Some(Sender {
            context: router.id(),
            handle: ack,
        });
        let (p, r) = (pump.clone(), router);
        std::thread::Builder::new()
            .name("mitogen-file-pump".into())
            .spawn(move || p.run(&r))?;
        Ok(Self {
            registered: Mutex::new(Registered::default()),
            pump,
        })
    }
}

impl FileService {
    /// This context's file service (activated if needed).
    ///
    /// # Errors
    /// If mitogen-service was not registered (`mitogen_service::register`).
    pub fn local(router: &Router) -> Result<Arc<Self>, CallErrorKind> {
        local_instance::<Self>(router)
    }

    /// Allows fetching this one file.
    ///
    /// # Errors
    /// If the path does not exist.
    pub fn register_path(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let p = std::fs::canonicalize(path)?;
        self.registered.lock().paths.insert(p);
        Ok(())
    }

    /// Allows fetching anything below this directory (after resolving
    /// symlinks and `..`, so nothing outside it).
    ///
    /// # Errors
    /// If the directory does not exist.
    pub fn register_prefix(&self, dir: impl AsRef<Path>) -> std::io::Result<()> {
        let p = std::fs::canonicalize(dir)?;
        self.registered.lock().prefixes.push(p);
        Ok(())
    }

    /// Serves an open file under `key`, as the current version of `origin`:
    /// older versions of `origin` are no longer served (transfers running
    /// from them finish; their files close when the last one does).
    pub(crate) fn register_file(&self, key: &str, origin: &str, source: Source) {
        let mut r = self.registered.lock();
        r.files.retain(|k, (o, _)| o != origin || k == key);
        r.files.insert(key.to_owned(), (origin.to_owned(), source));
    }

    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.registered.lock().files.contains_key(key)
    }

    /// Progress of the transfers of `path` to `target` this service is
    /// running or has finished (the most recent one).
    pub fn progress(&self, target: ContextId, path: &str) -> Option<Progress> {
        self.pump.progress(target, path)
    }

    pub(super) fn open(&self, router: &Router, path: &str) -> Result<Source, OpenError> {
        if let Some((_, f)) = self.registered.lock().files.get(path) {
            return Ok(f.clone());
        }
        let refused =
            |why: String| OpenError::Refused(crate::ServiceError::PolicyRefused(why).kind());
        let canon = std::fs::canonicalize(path)
            .map_err(|e| refused(format!("{path}: not registered ({e})")))?;
        {
            let r = self.registered.lock();
            if !(r.paths.contains(&canon) || r.prefixes.iter().any(|p| canon.starts_with(p))) {
                let escaped = r.prefixes.iter().any(|p| Path::new(path).starts_with(p))
                    || path.contains("..");
                return Err(refused(if escaped {
                    format!(
                        "{path} resolves to {}, outside every registered prefix",
                        canon.display()
                    )
                } else {
                    format!("{path} is not registered with the file service")
                }));
            }
        }
        let place = Place::new(router, &canon);
        let file = File::open(&canon).map_err(|e| OpenError::File(place.err(Stage::Open, e)))?;
        Source::from_file(file, canon.clone())
            .map_err(|(stage, cause)| OpenError::File(place.err(stage, cause)))
    }
}

/// `mitogen.file.fetch`: start streaming a registered file to `sink`.
pub(super) struct Fetch;
impl ServiceMethod for Fetch {
    type Service = FileService;
    const NAME: &'static str = "fetch";
    type Args = FetchArgs;
    type Output = Result<FetchReply, FileError>;
    fn policy() -> Policy {
        Policy::Any
    }
    fn call(svc: &FileService, cx: &ServiceCx<'_>, a: FetchArgs) -> Result<Self::Output, FnError> {
        let src = match svc.open(cx.router(), &a.path) {
            Ok(s) => s,
            Err(OpenError::Refused(k)) => return Err(Box::new(KindError(k))),
            Err(OpenError::File(e)) => return Ok(Err(e)),
        };
        let ack = svc
            .pump
            .ack
            .lock()
            .ok_or("file service has no ack handle")?;
        let (size, mode, mtime) = (src.size, src.mode, src.mtime);
        let id = svc
            .pump
            .start(Transfer::new(cx.caller(), a.sink, a.path, src));
        Ok(Ok(FetchReply {
            id,
            size,
            mode,
            mtime,
            ack,
        }))
    }
}

/// `mitogen.file.register`: a parent lets its child serve a path (for
/// fetching files from a target).
pub(super) struct RegisterPath;
impl ServiceMethod for RegisterPath {
    type Service = FileService;
    const NAME: &'static str = "register";
    type Args = String;
    type Output = Result<(), FileError>;
    fn call(svc: &FileService, cx: &ServiceCx<'_>, path: String) -> Result<Self::Output, FnError> {
        Ok(svc
            .register_path(&path)
            .map_err(|e| Place::new(cx.router(), Path::new(&path)).err(Stage::Open, e)))
    }
}

/// `mitogen.file.register_prefix`: a parent lets its child serve a tree.
pub(super) struct RegisterPrefix;
impl ServiceMethod for RegisterPrefix {
    type Service = FileService;
    const NAME: &'static str = "register_prefix";
    type Args = String;
    type Output = ();
    fn call(svc: &FileService, _: &ServiceCx<'_>, dir: String) -> Result<(), FnError> {
        Ok(svc.register_prefix(dir)?)
    }
}

/// Lets `ctx` serve files below `dir` (it must have parent authority over
/// `ctx`, as a controller has over its tree).
///
/// # Errors
/// The call error.
pub fn register_remote_prefix(ctx: &Context, dir: &str) -> Result<(), CallError> {
    ctx.call_service::<RegisterPrefix>(&dir.to_owned())
}

/// Lets `ctx` serve the file `path`.
///
/// # Errors
/// The call error, or a [`FileError`] at [`Stage::Open`] if `ctx` has no
/// such file.
pub fn register_remote_path(ctx: &Context, path: &str) -> Result<(), super::TransferError> {
    Ok(ctx.call_service::<RegisterPath>(&path.to_owned())??)
}
