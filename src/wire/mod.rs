//! Wire-format helpers below every layer: bounded checks on AMQP's recursive field
//! tables and safe short strings. They know nothing of the broker, so the AMQP layer,
//! the core (message properties, queue arguments) and the store's readers all use
//! them.

pub mod nesting;
pub mod shortstr;
