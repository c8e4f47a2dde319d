//! Settling deliveries: basic.ack, basic.nack and basic.reject (immediately, or held
//! by an open transaction), and requeueing in runs.

use std::sync::Arc;

use super::{Channel, Context};
use crate::amqp::delivery::Unacked;
use crate::error::{AmqpError, AmqpResult};
use crate::queue::QueueOp;

#[derive(Clone, Copy)]
pub(super) enum Settle {
    Ack,
    Requeue,
    Discard,
}

impl Channel {
    /// A basic.ack frame (parsed by the fast path; see `frame::parse_ack`).
    pub fn handle_ack(&mut self, ctx: &Context<'_>, tag: u64, multiple: bool) -> AmqpResult<()> {
        self.expect_method()?;
        self.settle(ctx, tag, multiple, Settle::Ack)
    }

    pub(super) fn settle(&mut self, ctx: &Context<'_>, tag: u64, multiple: bool, how: Settle) -> AmqpResult<()> {
        let _ = ctx;
        if let Some(tx) = self.tx.as_mut() {
            tx.settlements.push((tag, multiple, how));
            return Ok(());
        }
        self.settle_now(tag, multiple, how)
    }

    pub(super) fn settle_now(&mut self, tag: u64, multiple: bool, how: Settle) -> AmqpResult<()> {
        let mut taken = std::mem::take(&mut self.taken);
        {
            let mut st = self.shared.lock();
            if !st.unacked.take(tag, multiple, &mut taken) {
                // A delivery requeued by a consumer timeout: its late settlement is
                // ignored (with `multiple`, the earlier outstanding ones still count).
                if !st.timed_out.remove(&tag) {
                    drop(st);
                    self.taken = taken;
                    return Err(AmqpError::PreconditionFailed(format!("unknown delivery tag {tag}")));
                }
                if multiple {
                    st.unacked.take_through(tag, &mut taken);
                }
            }
            if multiple && !st.timed_out.is_empty() {
                if tag == 0 {
                    st.timed_out.clear();
                } else {
                    st.timed_out = st.timed_out.split_off(&(tag + 1));
                }
            }
            st.release(&taken);
            if let Settle::Ack = how {
                self.shared.counts.acked(taken.len() as u64);
            }
        }
        if !matches!(how, Settle::Ack) {
            // A stream takes nothing back and dead-letters nothing: 540, which closes
            // the connection; what was taken goes back as the teardown would put it.
            if let Some(e) = taken.iter().find_map(|u| u.queue.refuse(QueueOp::NackOrReject).err()) {
                requeue_all(&mut taken);
                self.taken = taken;
                return Err(e);
            }
        }
        match how {
            Settle::Requeue => requeue_all(&mut taken),
            Settle::Ack => {
                for u in &taken {
                    u.queue.ack(&u.message);
                }
            }
            // Dead-lettered (reason `rejected`) where the queue has a DLX.
            Settle::Discard => {
                for u in taken.drain(..) {
                    u.queue.reject(u.message);
                }
            }
        }
        taken.clear();
        self.taken = taken;
        self.dispatch_consumer_queues();
        Ok(())
    }
}

/// Requeues settled deliveries, one lock per run of same-queue messages.
pub(super) fn requeue_all(taken: &mut Vec<Unacked>) {
    let mut start = 0;
    while start < taken.len() {
        let q = taken[start].queue.clone();
        let mut end = start + 1;
        while end < taken.len() && Arc::ptr_eq(&taken[end].queue, &q) {
            end += 1;
        }
        q.requeue(&mut taken[start..end].iter().map(|u| u.message.clone()));
        start = end;
    }
    taken.clear();
}
