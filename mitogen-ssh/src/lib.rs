//! mitogen-ssh: connection methods that wrap an external program.
//!
//! **Not implemented yet** (tracked as issue 3). This crate will provide
//! `ssh` (the system OpenSSH client, so `~/.ssh/config`, agents, ProxyJump
//! and certificates keep working), `sudo`, `su`, `doas` and container-exec
//! methods, each a `mitogen_core::Method` that bootstraps the
//! program's own binary on targets that have only `sh`, with `via` chains to
//! any depth. Until then, only the local transport in `mitogen-core` exists.
