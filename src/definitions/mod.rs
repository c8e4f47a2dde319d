//! Definitions: the broker's topology (and, with users and permissions, its whole
//! setup) in RabbitMQ's `definitions.json` format, so a setup moves between RabbitMQ
//! and HareMQ unchanged. Imported at boot (`--definitions FILE`, config key
//! `definitions`, as RabbitMQ's `load_definitions`) and, later, through the management
//! API; exported the same way.
//!
//! An import is all or nothing: entries are applied in RabbitMQ's order (users, vhosts,
//! permissions, topic permissions, vhost limits, then exchanges, queues, bindings); the
//! security entries are all checked before any is applied, and the first entry
//! refused undoes everything this import changed, then the error names that entry. Entries that match what exists already are no-ops
//! (a redeclare), so importing the same file twice changes nothing.

pub mod arguments;
mod export;
mod format;
mod import;
mod security;

pub use export::export;
pub use format::Definitions;
pub use import::import;

/// Reads and parses a definitions file.
pub fn read_file(path: &std::path::Path) -> Result<Definitions, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read definitions file {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("invalid definitions file {}: {e}", path.display()))
}
