//! HareMQ: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
//!
//! The library's surface is what it takes to run a broker: a [`Config`], [`start`],
//! the [`BrokerHandle`] that stops it, and its [`admin::Admin`] API (vhosts, users,
//! permissions, limits). The binary (`src/main.rs`) parses flags and
//! calls [`start`]; the integration tests call it with an ephemeral port. Everything
//! else is crate-private (the fuzz targets reach the parsers through the hidden
//! `fuzzing` module); `ARCHITECTURE.md` is the map.

pub mod admin;
mod amqp;
mod auth;
mod broker;
mod clients;
mod cluster;

mod config;
mod definitions;
mod disk;
mod error;
mod exchange;
#[doc(hidden)]
pub mod fuzzing;
mod management;
mod membership;
mod memory;
mod message;
mod policy;
mod queue;
mod server;
mod stats;
mod store;
mod tls;
mod util;
mod vhost;
mod wire;

pub use config::{CertLoginFrom, ClusterConfig, Config, Peer, SanType, TlsConfig, UserConfig};
pub use server::{start, BrokerHandle};
