//! mitogen-service: policy-gated services, flow-controlled file transfer,
//! and tree push.
//!
//! - [`Service`] / [`ServiceMethod`]: named services with a policy per
//!   method and typed arguments, served by a worker pool in every context
//!   (a slow method never blocks the IO thread or other services). A
//!   service is created in a context on first use, and only a caller with
//!   parent authority may cause that. Call with [`ServiceExt::call_service`].
//! - [`FileService`]: serves registered paths and prefixes, streaming
//!   chunks under a per-transfer window so links stay full, slow receivers
//!   only slow themselves, and calls on a busy link are still answered.
//!   Receivers write atomically ([`fetch`]): nothing partial is ever left.
//! - [`put_file`], [`put_bytes`], [`fetch_file`]: the conveniences, with
//!   progress callbacks; small files travel inline in one call.
//! - [`push_file`]: one file to many contexts, each byte crossing each link
//!   once ([`wait_pushed`] in a target blocks until it has arrived).
//!
//! ```no_run
//! use mitogen_core::Local;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = mitogen_core::init(mitogen_service::register)?;
//! let child = router.connect(&Local::new())?;
//! let opts = mitogen_service::WriteOptions::default();
//! let stat = mitogen_service::put_file(&router, &child, "/etc/hostname".as_ref(), "/tmp/copy", &opts, |p| {
//!     eprintln!("{} / {} bytes at {:.0} B/s", p.done, p.total, p.rate);
//! })?;
//! # Ok(()) }
//! ```
//!
//! Dependencies beyond the core: `rustix` (O_TMPFILE, linkat, fchown, all
//! safe), `parking_lot`, `crossbeam-channel` (the worker pool), `bytes`,
//! `serde`, `postcard` (service request heads), `thiserror`, `log`.
#![forbid(unsafe_code)]

mod file;
mod push;
mod service;

pub use file::{
    CHUNK, Cause, Checksum, FetchFrom, FileError, FileService, FileStat, INLINE_MAX, Progress,
    Stage, TransferError, WriteOptions, fetch, fetch_file, put_bytes, put_file,
    register_remote_path, register_remote_prefix, write_atomic,
};
pub use push::{push_file, wait_pushed};
pub use service::{
    Service, ServiceCx, ServiceError, ServiceExt, ServiceMethod, Services, local_instance,
    register, register_with,
};
