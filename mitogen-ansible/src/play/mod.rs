//! Plays: inventory, playbooks, templating, the executor.
pub mod template;
pub mod yaml;
