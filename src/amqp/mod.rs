//! The AMQP 0-9-1 protocol side: connections, channels, frames and the outbox.

pub mod access_cache;
pub mod channel;
pub mod channel_stats;
pub mod connection;
pub mod delivery;
pub mod frame;
pub mod outbox;
pub mod panics;
pub mod route_cache;
