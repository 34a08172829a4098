//! mitogen-service: policy-gated services and flow-controlled file transfer.
//!
//! **Not implemented yet** (tracked as issue 4). This crate will provide
//! named services with per-method policies served by a worker pool,
//! `FileService` (streams registered files through the context tree under a
//! per-stream window, fairly across targets, with atomic temp-file-and-rename
//! on the receiving side) and `PushFileService` (each byte crosses each link
//! once). It builds on `mitogen-core`'s `Router::pending_bytes` and
//! `Router::add_handler`.
