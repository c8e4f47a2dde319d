//! Authenticated TCP between nodes: framing, the handshake, the RPCs, both sides.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod frame;
pub(crate) mod message;
pub(crate) mod server;
