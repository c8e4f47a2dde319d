//! A publishing channel's memory of its last permission check.
//!
//! basic.publish needs write permission on its exchange. Checking means a regular
//! expression match under a lock; the channel remembers instead the last exchange it
//! was allowed to publish to, stamped with the grants' generation, and reuses the
//! answer while the generation is unchanged (one relaxed atomic load and a string
//! compare per publish). Any permission change bumps the generation, so a revocation
//! reaches open channels at their next publish. Only granted checks are remembered: a
//! refusal closes the channel.

use crate::auth::access::{ResourceKind, SessionAccess};
use crate::auth::permissions::Access;
use crate::error::AmqpResult;

#[derive(Default)]
pub struct PublishAccess {
    entry: Option<Granted>,
}

struct Granted {
    generation: u64,
    exchange: Box<str>,
    /// A topic permission is set on the exchange: routing keys are checked too.
    topic: bool,
}

impl PublishAccess {
    /// 403 unless the user may publish to `exchange`; returns whether a topic
    /// permission on it must check the routing key as well.
    pub fn check(&mut self, access: &SessionAccess, exchange: &str) -> AmqpResult<bool> {
        let generation = access.generation();
        if let Some(g) = &self.entry {
            if g.generation == generation && &*g.exchange == exchange {
                return Ok(g.topic);
            }
        }
        let current = access.current();
        current.check(Access::Write, ResourceKind::Exchange, exchange)?;
        let topic = current.topic_rule(exchange).is_some();
        self.entry = Some(Granted { generation: current.generation, exchange: exchange.into(), topic });
        Ok(topic)
    }
}
