//! Integration tests: a real broker on an ephemeral port, driven by real AMQP clients
//! (lapin, amqprs) and raw TCP sockets. One test binary, one module per area.
//!
//! Set `HAREMQ_TEST_EXTERNAL_URL=amqp://guest:guest@127.0.0.1:5680/%2f` to run the same
//! tests against another broker (e.g. the RabbitMQ reference node) instead.

mod common;
mod util;

mod bad_input;
mod consume;
mod consumers;
mod dashboard;
mod definitions;
mod errors;
mod examples;
mod exchange_ext;
mod exchanges;
mod lifecycle;
mod management;
mod management_actions;
mod management_limits;
mod management_stats;
mod netfuzz;
mod policies;
mod publish;
mod queues;
mod reply_to;
mod robustness;
mod security;
mod streams;
mod tls;
