//! HareMQ: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
//!
//! The binary (`src/main.rs`) parses flags and calls [`start`]; integration tests call
//! [`start`] directly with an ephemeral port. See `ARCHITECTURE.md` for the map.

pub mod config;

pub use config::Config;

use std::io;
use std::net::SocketAddr;

/// A running broker. Dropping it shuts the broker down.
pub struct BrokerHandle {
    local_addr: SocketAddr,
}

impl BrokerHandle {
    /// The address the broker accepts connections on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes client connections with 320 CONNECTION_FORCED and waits
    /// for the broker's threads to finish.
    pub fn shutdown(self) {}
}

/// Binds the listener and starts the broker on background threads. Returns once the
/// broker accepts connections.
pub fn start(config: Config) -> io::Result<BrokerHandle> {
    let _ = config;
    Err(io::Error::other("not yet"))
}
