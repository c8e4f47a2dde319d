//! A connection's open channels, by number.

use std::collections::BTreeMap;

use amq_protocol::types::ChannelId;

use super::*;

/// The open channels. RabbitMQ accepts any channel number up to 65535 and bounds only
/// how many are open at once, so numbers up to the negotiated channel_max (the ones
/// clients allocate) are slots of a vector the hot path indexes, and higher ones live in
/// a map, where they cost no slots for the numbers in between.
pub(super) struct Channels {
    pub(super) dense: Vec<Option<Channel>>,
    pub(super) sparse: BTreeMap<ChannelId, Channel>,
    /// The highest number kept in `dense`.
    pub(super) dense_max: ChannelId,
    /// Channels open (including those waiting for the client's channel.close-ok).
    pub(super) open: usize,
    /// The user's open channels over all its connections (its `max-channels`): the
    /// connection adds one before each insert (`Broker::open_channel`), removals here
    /// take it off.
    pub(super) user_open: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Listings see the open channels here.
    view: Arc<ConnectionView>,
}

impl Channels {
    pub(super) fn new(dense_max: ChannelId, view: Arc<ConnectionView>) -> Self {
        Self { dense: Vec::new(), sparse: BTreeMap::new(), dense_max, open: 0, user_open: None, view }
    }

    pub(super) fn get(&self, id: ChannelId) -> Option<&Channel> {
        if id <= self.dense_max {
            self.dense.get(usize::from(id)).and_then(Option::as_ref)
        } else {
            self.sparse.get(&id)
        }
    }

    pub(super) fn get_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        if id <= self.dense_max {
            self.dense.get_mut(usize::from(id)).and_then(Option::as_mut)
        } else {
            self.sparse.get_mut(&id)
        }
    }

    /// Adds a channel whose number is not in use.
    pub(super) fn insert(&mut self, id: ChannelId, ch: Channel) {
        self.view.channel_opened(&ch.shared);
        if id <= self.dense_max {
            let idx = usize::from(id);
            if self.dense.len() <= idx {
                self.dense.resize_with(idx + 1, || None);
            }
            self.dense[idx] = Some(ch);
        } else {
            self.sparse.insert(id, ch);
        }
        self.open += 1;
    }

    pub(super) fn take(&mut self, id: ChannelId) -> Option<Channel> {
        let ch = if id <= self.dense_max {
            self.dense.get_mut(usize::from(id)).and_then(Option::take)
        } else {
            self.sparse.remove(&id)
        };
        if ch.is_some() {
            self.view.channel_closed(id);
            self.open -= 1;
            self.release_user_channels(1);
        }
        ch
    }

    fn release_user_channels(&self, n: u64) {
        if let Some(c) = &self.user_open {
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(n)));
        }
    }

    pub(super) fn take_all(&mut self) -> Vec<Channel> {
        self.release_user_channels(self.open as u64);
        self.view.channels_closed();
        self.open = 0;
        let sparse = std::mem::take(&mut self.sparse).into_values();
        self.dense.iter_mut().filter_map(Option::take).chain(sparse).collect()
    }
}
