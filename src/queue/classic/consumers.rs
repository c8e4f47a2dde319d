//! A classic queue's consumers: dispatch (consumer priorities, round-robin within a
//! priority, single active consumer), registration, and consumer-timeout sweeps.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

impl ClassicQueue {
    pub(super) fn dispatch_locked(&self, st: &mut QueueState) {
        if st.consumers.is_empty() {
            return;
        }
        // The handle deliveries carry (for settling later), taken once there is
        // something to deliver (most dispatches after an ack find the queue empty);
        // gone only mid-drop.
        let mut handle: Option<Arc<Queue>> = None;
        'messages: loop {
            self.expire_head(st, true);
            if st.ready.front().is_none() {
                return;
            }
            let n = st.consumers.len();
            if n == 0 {
                return;
            }
            if handle.is_none() {
                handle = self.handle();
            }
            let Some(this) = handle.as_ref() else {
                return;
            };
            if self.declared.single_active_consumer {
                let Some(idx) = Self::sac_index(st) else {
                    return;
                };
                match self.offer_to(this, st, idx) {
                    Offer::Delivered { .. } => continue 'messages,
                    Offer::Busy => return,
                    Offer::Gone => {
                        self.drop_gone(st, idx);
                        continue 'messages;
                    }
                }
            }
            // Highest priority group first; round-robin within a group; a lower group
            // only when every consumer of the higher ones is busy.
            let mut g_start = 0;
            while g_start < n {
                let g_end = if st.uniform {
                    n
                } else {
                    let p = st.consumers[g_start].priority;
                    g_start + st.consumers[g_start..].iter().take_while(|c| c.priority == p).count()
                };
                let len = g_end - g_start;
                let first = if (g_start..g_end).contains(&st.next_consumer) { st.next_consumer - g_start } else { 0 };
                for i in 0..len {
                    let idx = g_start + (first + i) % len;
                    match self.offer_to(this, st, idx) {
                        Offer::Delivered { .. } => {
                            st.next_consumer = idx + 1;
                            if st.next_consumer >= g_end {
                                st.next_consumer = g_start;
                            }
                            continue 'messages;
                        }
                        Offer::Busy => {}
                        Offer::Gone => {
                            // The channel closed under us; it removes its consumers
                            // itself, but skip it now so dispatch does not spin on it.
                            self.drop_gone(st, idx);
                            continue 'messages;
                        }
                    }
                }
                g_start = g_end;
            }
            return;
        }
    }

    /// Offers the head message to consumer `idx`; on delivery takes it off the queue.
    pub(super) fn offer_to(&self, this: &Arc<Queue>, st: &mut QueueState, idx: usize) -> Offer {
        let Some(head) = st.ready.front() else {
            return Offer::Busy;
        };
        let slot = &st.consumers[idx];
        let offer = slot.channel.offer(this, &slot.tag, head);
        if let Offer::Delivered { no_ack } = offer {
            if let Some(m) = st.ready.pop_front() {
                self.counters.delivered(true, no_ack, m.redelivered);
                if no_ack {
                    self.forget(&m);
                } else {
                    self.mark_delivered(&m);
                    if let (Some(t), None) = (self.consumer_timeout, st.timeout_check_at) {
                        st.timeout_check_at = Some(Instant::now() + sweep_interval(t));
                    }
                }
            }
        }
        offer
    }

    /// Removes a consumer whose channel is gone.
    pub(super) fn drop_gone(&self, st: &mut QueueState, idx: usize) {
        st.consumers.remove(idx);
        if st.next_consumer > idx {
            st.next_consumer -= 1;
        }
        Self::consumers_changed(st);
    }

    /// Bookkeeping after the consumer list changed.
    pub(super) fn consumers_changed(st: &mut QueueState) {
        st.uniform = st.consumers.first().map(|c| c.priority) == st.consumers.last().map(|c| c.priority);
        if st.consumers.is_empty() {
            st.exclusive_consumer = false;
            st.next_consumer = 0;
            st.sac_active = None;
        } else if st.next_consumer >= st.consumers.len() {
            st.next_consumer = 0;
        }
    }

    /// Single active consumer: the index of the consumer that may receive now, if any.
    /// The first registered consumer of the highest priority becomes active; when one
    /// of a higher priority than the active one registers, it takes over once the
    /// active one has settled all its deliveries (until then nobody receives, so the
    /// order of processing is kept), as RabbitMQ's documentation describes.
    pub(super) fn sac_index(st: &mut QueueState) -> Option<usize> {
        let cur = st
            .sac_active
            .as_ref()
            .and_then(|(tag, ch)| st.consumers.iter().position(|c| same_sink(&*c.channel, &**ch) && c.tag == *tag));
        let pick = match cur {
            Some(i) if i != 0 && st.consumers[0].priority > st.consumers[i].priority => {
                if st.consumers[i].channel.unacked(&st.consumers[i].tag) > 0 {
                    return None;
                }
                0
            }
            Some(i) => return Some(i),
            None => 0,
        };
        let c = st.consumers.get(pick)?;
        st.sac_active = Some((c.tag.clone(), c.channel.clone()));
        Some(pick)
    }

    /// The consumer-timeout sweep: finds the consumers whose oldest unacked delivery
    /// from this queue is older than the timeout, and schedules the next sweep while
    /// any consumer holds deliveries. A delivery's age is bounded from below by the
    /// sweep marks (see `ConsumerSlot::marks`), so a consumer is never cancelled early
    /// and at most two sweep intervals late.
    pub(super) fn sweep_consumer_timeouts(&self, st: &mut QueueState) -> Vec<(Arc<str>, Arc<dyn ConsumerSink>)> {
        let Some(timeout) = self.consumer_timeout else {
            st.timeout_check_at = None;
            return Vec::new();
        };
        let now = Instant::now();
        let mut victims = Vec::new();
        let mut holding = false;
        for slot in st.consumers.iter_mut() {
            let Some((oldest, next_tag)) = slot.channel.oldest_unacked(&slot.tag) else {
                slot.marks.clear();
                continue;
            };
            while slot.marks.front().is_some_and(|&(_, t)| t <= oldest) {
                slot.marks.pop_front();
            }
            if slot.marks.front().is_some_and(|&(at, _)| now.duration_since(at) >= timeout) {
                victims.push((slot.tag.clone(), slot.channel.clone()));
                slot.marks.clear();
                continue;
            }
            holding = true;
            if slot.marks.back().is_none_or(|&(_, t)| t < next_tag) {
                slot.marks.push_back((now, next_tag));
            }
        }
        st.timeout_check_at = holding.then(|| now + sweep_interval(timeout));
        victims
    }

    /// Cancels a consumer that held a delivery too long: the client gets basic.cancel,
    /// the channel stays open, the consumer's unacked deliveries are requeued.
    pub(super) fn time_out_consumer(&self, tag: Arc<str>, channel: Arc<dyn ConsumerSink>) {
        let Some(unacked) = channel.time_out(&tag) else {
            return;
        };
        log::warn!(
            "consumer '{tag}' on {} of queue '{}' in vhost '{}' held a delivery unacked longer than \
             {} ms: cancelled, {} deliveries requeued",
            channel.describe(),
            self.name,
            self.vhost,
            self.consumer_timeout.map_or(0, |t| t.as_millis()),
            unacked.len()
        );
        let delete = self.remove_consumer(&tag, &*channel);
        self.requeue(&mut unacked.into_iter());
        if delete {
            self.delete_from_vhost();
        }
    }

    pub(super) fn add_consumer_locked(
        &self,
        st: &mut QueueState,
        tag: Arc<str>,
        channel: Arc<dyn ConsumerSink>,
        exclusive: bool,
        priority: i32,
    ) -> AmqpResult<()> {
        if st.deleted {
            return Err(AmqpError::NotFound(self.no_queue_text()));
        }
        if st.exclusive_consumer || (exclusive && !st.consumers.is_empty()) {
            return Err(AmqpError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        st.exclusive_consumer = exclusive;
        let pos = st.consumers.partition_point(|c| c.priority >= priority);
        if pos < st.next_consumer {
            st.next_consumer += 1;
        }
        st.consumers.insert(pos, ConsumerSlot { tag, channel, priority, marks: VecDeque::new() });
        Self::consumers_changed(st);
        self.dispatch_locked(st);
        Ok(())
    }

    pub(super) fn remove_consumer_locked(&self, st: &mut QueueState, tag: &str, channel: &dyn ConsumerSink) -> bool {
        let Some(idx) = st.consumers.iter().position(|c| same_sink(&*c.channel, channel) && &*c.tag == tag) else {
            return false;
        };
        st.consumers.remove(idx);
        if st.next_consumer > idx {
            st.next_consumer -= 1;
        }
        if st.sac_active.as_ref().is_some_and(|(t, ch)| same_sink(&**ch, channel) && &**t == tag) {
            st.sac_active = None;
        }
        Self::consumers_changed(st);
        if st.consumers.is_empty() {
            // Unused from now on (x-expires).
            st.last_used = Instant::now();
        }
        st.consumers.is_empty() && self.settings.auto_delete && !st.deleted
    }
}

/// How often a queue with unacked consumer deliveries checks the consumer timeout.
pub(super) fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 8).max(Duration::from_millis(5))
}
