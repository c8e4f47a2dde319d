//! HareMQ: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
//!
//! The binary (`src/main.rs`) parses flags and calls [`start`]; integration tests call
//! [`start`] directly with an ephemeral port. See `ARCHITECTURE.md` for the map.

pub mod amqp;
pub mod auth;
pub mod broker;
pub mod config;
pub mod disk;
pub mod error;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod memory;
pub mod message;
pub mod queue;
pub mod server;
pub mod store;
pub mod util;
pub mod vhost;

pub use config::Config;
pub use server::{start, BrokerHandle};
