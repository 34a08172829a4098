//! mitogen-ansible: runs Ansible modules with exactly ansible-core's semantics.
//!
//! **Not implemented yet.** This crate will run every Ansible module style
//! (new-style Python, binary, WANT_JSON, old-style key=value, scripts) on any
//! context, with ansible-core's argument passing, stdio handling, temp
//! directories, async job files and result shaping, checked side by side
//! against real ansible-core.
