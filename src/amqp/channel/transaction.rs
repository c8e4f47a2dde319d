//! The tx class: tx.select, tx.commit (publishes and settlements held since the last
//! commit are applied in order; commit-ok waits for the disk when any was persistent,
//! and for the log of every quorum queue a publish went to) and tx.rollback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use amq_protocol::protocol::{tx, AMQPClass};

use super::publish::Pending;
use super::settle::Settle;
use super::{ok, Channel, Context};
use crate::amqp::delivery::ChannelShared;
use crate::amqp::frame::write_method;
use crate::error::{AmqpError, AmqpResult};
use crate::queue::ConfirmHolder;

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
                // Quorum queues hold the commit as they hold a confirm: until their
                // entry is committed and applied. One "hold" stands for the routing
                // itself, so commit-ok cannot go before every publish was handed over.
                let commit = Arc::new(TxCommit {
                    shared: self.shared.clone(),
                    pending: AtomicUsize::new(1),
                    failed: AtomicBool::new(false),
                });
                let holder: Arc<dyn ConfirmHolder> = commit.clone();
                let mut stored = 0;
                for p in work.publishes {
                    stored += self.route_publish_held(ctx, p, Some(&holder))?.stored;
                }
                for (tag, multiple, how) in work.settlements {
                    self.settle_now(tag, multiple, how)?;
                }
                match ctx.store {
                    // Persistent messages of the transaction are on disk before commit-ok.
                    Some(store) if stored > 0 => {
                        commit.hold(0);
                        let c = commit.clone();
                        store.after_commit(Box::new(move |durable| c.release(0, durable)));
                    }
                    _ => {}
                }
                if commit.pending.load(Ordering::Acquire) == 1 && !commit.failed.load(Ordering::Acquire) {
                    // Nothing to wait for: reply in line, as before any of this.
                    commit.pending.store(0, Ordering::Release);
                    return ok(AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
                }
                commit.release(0, true);
                Ok(None)
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

/// One tx.commit waiting for what its publishes went to: the store (persistent
/// messages in durable queues) and quorum queues' logs. Commit-ok is written when the
/// last of them is done; if any could not take its message (a failed store commit, a
/// quorum queue entry that did not commit), the channel is closed with RabbitMQ's
/// reply for a transaction whose publish was nacked. A queue refusing a publish by its
/// overflow rule is no failure (RabbitMQ 3.10 sends commit-ok then).
struct TxCommit {
    shared: Arc<ChannelShared>,
    pending: AtomicUsize,
    failed: AtomicBool,
}

impl ConfirmHolder for TxCommit {
    fn hold(&self, _seq: u64) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn release(&self, _seq: u64, stored: bool) {
        if !stored {
            self.failed.store(true, Ordering::Release);
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if self.failed.load(Ordering::Acquire) {
            let err = AmqpError::PreconditionFailed("partial tx completion".into());
            self.shared.close_from_outside(&err, (90, 20));
        } else {
            let mut out = self.shared.outbox.lock();
            write_method(out.buf(), self.shared.id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
        }
    }

    fn refused(&self, seq: u64) {
        self.release(seq, true);
    }
}
