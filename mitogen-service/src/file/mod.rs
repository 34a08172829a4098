//! `FileService`: flow-controlled file streaming through the context tree,
//! and atomic writes on the receiving side.
//!
//! ```text
//! receiver (any context)                          FileService (serving context)
//! fetch(): check dest (not a directory; its directory exists, is writable)
//!          call Fetch(path, sink) ───────────────► resolve: registered path or prefix?
//!          ◄─── reply: size, mode, mtime, ack address   (canonical path: no `..` or symlink escape)
//!          ◄─── chunk (raw) ◄─┐ pump thread, round robin over transfers:
//!          ─── ack(bytes) ────┘   send while unacked < window and the link queue is short
//!          ◄─── end(size, checksum)   only if the source is unchanged after the last read,
//!               or error(FileError)   else Changed
//! write chunks to an unnamed temp file in the destination directory
//! (O_TMPFILE), check size and checksum, fsync, set mode/owner/mtime, then
//! link it in and rename it over the destination.
//! ```
//!
//! Holes in a sparse source (found with `SEEK_DATA`/`SEEK_HOLE`) travel as
//! a length, not as zeros; the receiver seeks over them, and sets the
//! file's size at the end, so the copy is as sparse as the source.
//!
//! Each transfer's window (unacknowledged bytes) grows from 2 MiB toward
//! twice the transfer's bandwidth-delay product (at most 32 MiB), so a fast
//! link is kept full and a slow receiver only ever holds up its own window.
//! The pump also stops feeding a link whose queue in this process exceeds
//! 512 KiB, so a call on a link busy with bulk data waits behind at most
//! that much. If the receiver or the sender dies, the unnamed temp file
//! disappears with the receiving process or is dropped: no partial file and
//! no temp file is left behind.

mod checksum;
mod error;
mod pump;
mod put;
mod receive;
mod serve;
mod source;
mod window;

pub use checksum::Checksum;
pub use error::{Cause, FileError, Stage, TransferError};
pub(crate) use error::{KindError, Place};
pub(crate) use source::Source;

/// A file in this context, for building [`FileError`]s about it.
pub(crate) fn place<'a>(router: &'a mitogen_core::Router, path: &'a std::path::Path) -> Place<'a> {
    Place::new(router, path)
}
pub use put::{FetchFrom, fetch_file, put_bytes, put_file};
pub(crate) use receive::fetch_to_file;
pub use receive::{fetch, write_atomic};
pub use serve::{FileService, register_remote_path, register_remote_prefix};

use crate::service::Services;
use mitogen_core::Sender;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Bytes per data message.
pub const CHUNK: usize = 256 * 1024;
/// Files up to this size go inline in one call (no extra round trip).
pub const INLINE_MAX: u64 = 64 * 1024;
const MIN_WINDOW: u64 = 2 << 20;
/// The receiver acknowledges every this many bytes (a quarter of the
/// smallest window, so the sender never waits on a batched ack).
const ACK_EVERY: u64 = MIN_WINDOW / 4;
const MAX_WINDOW: u64 = 32 << 20;
const LINK_QUEUE_CAP: usize = 512 * 1024;
/// A transfer with no data for this long fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a received file is written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Permission bits (default: the source's, or 0o644 for bytes).
    pub mode: Option<u32>,
    /// Owner uid and gid (needs the privilege to chown).
    pub owner: Option<(u32, u32)>,
    /// Modification time (default: the source's).
    pub mtime: Option<SystemTime>,
    /// Reader-side delay per chunk (tests of slow receivers only).
    #[doc(hidden)]
    pub slow_ms_per_chunk: u64,
    /// Reader-side pause until this path exists (tests only).
    #[doc(hidden)]
    pub pause_until_exists: Option<String>,
    /// Receive and check everything but write nothing (benchmarks of the
    /// protocol against `ssh host 'cat >/dev/null'`).
    #[doc(hidden)]
    pub discard: bool,
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Bytes written.
    pub size: u64,
    /// The checksum both ends computed.
    pub checksum: u64,
}

/// Progress of a transfer, for callbacks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes the receiver has confirmed.
    pub done: u64,
    /// Total size.
    pub total: u64,
    /// Bytes per second so far.
    pub rate: f64,
}

// ---------------------------------------------------------------------------
// Wire messages

#[derive(Debug, Serialize, Deserialize)]
struct FetchArgs {
    path: String,
    sink: Sender,
}

/// The reply to a fetch: what will be streamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FetchReply {
    id: u64,
    size: u64,
    pub(crate) mode: u32,
    pub(crate) mtime: SystemTime,
    ack: Sender,
}

/// Sent on the data channel after the last chunk (typed, so it cannot be
/// mistaken for data, which is raw).
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    /// The next `len` bytes are a hole in the source (they read as zeros):
    /// the receiver skips them, so a sparse file stays sparse. Holes move
    /// no bytes and take no room in the window: acknowledgements count
    /// data bytes only.
    Hole {
        len: u64,
    },
    End {
        size: u64,
        checksum: u64,
    },
    /// The sender cannot go on (the source cannot be read, or changed).
    Error(FileError),
}

pub(crate) fn register_builtin(s: &mut Services) {
    use serve::{Fetch, RegisterPath, RegisterPrefix};
    s.add::<Fetch>()
        .add::<RegisterPath>()
        .add::<RegisterPrefix>()
        .add::<put::WriteFile>()
        .add::<FetchFrom>()
        .add::<crate::push::Ensure>()
        .add::<crate::push::PushFetch>();
}
