//! The tx class: tx.select, tx.commit (publishes and settlements held since the last
//! commit are applied in order; commit-ok waits for the disk when any was persistent)
//! and tx.rollback.

use amq_protocol::protocol::{tx, AMQPClass};

use super::publish::Pending;
use super::settle::Settle;
use super::{ok, Channel, Context};
use crate::amqp::frame::write_method;
use crate::error::{AmqpError, AmqpResult};

/// The work of an open transaction, applied in order on commit.
#[derive(Default)]
pub(super) struct Transaction {
    pub(super) publishes: Vec<Pending>,
    pub(super) settlements: Vec<(u64, bool, Settle)>,
}

impl Channel {
    pub(super) fn transaction(&mut self, ctx: &Context<'_>, m: tx::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        let not_transactional = || AmqpError::PreconditionFailed("channel is not transactional".into());
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::PreconditionFailed("cannot switch from confirm to tx mode".into()));
                }
                self.tx.get_or_insert_with(Transaction::default);
                self.shared.modes.transactional.store(true, std::sync::atomic::Ordering::Relaxed);
                ok(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
            }
            tx::AMQPMethod::Commit(_) => {
                let work = std::mem::take(self.tx.as_mut().ok_or_else(not_transactional)?);
                let mut stored = 0;
                for p in work.publishes {
                    stored += self.route_publish(ctx, p)?.stored;
                }
                for (tag, multiple, how) in work.settlements {
                    self.settle_now(tag, multiple, how)?;
                }
                let reply = AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}));
                match ctx.store {
                    // Persistent messages of the transaction are on disk before commit-ok.
                    Some(store) if stored > 0 => {
                        let shared = self.shared.clone();
                        store.after_commit(Box::new(move |durable| {
                            if durable {
                                let mut out = shared.outbox.lock();
                                write_method(out.buf(), shared.id, reply);
                            } else {
                                // The commit failed: RabbitMQ's reply when a transaction's
                                // publish is nacked.
                                let err = AmqpError::PreconditionFailed("partial tx completion".into());
                                shared.close_from_outside(&err, (90, 20));
                            }
                        }));
                        Ok(None)
                    }
                    _ => ok(reply),
                }
            }
            tx::AMQPMethod::Rollback(_) => {
                *self.tx.as_mut().ok_or_else(not_transactional)? = Transaction::default();
                ok(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})))
            }
            other => Err(AmqpError::CommandInvalid(format!(
                "method 90.{} is not valid from a client",
                AMQPClass::Tx(other).get_amqp_method_id()
            ))),
        }
    }
}
