//! A vhost's limits (RabbitMQ's vhost limits): how many connections and queues it
//! may have at once. Read without locks (connection.open, queue creation).

use std::sync::atomic::{AtomicU64, Ordering};

/// `None`: no limit. RabbitMQ's negative values (no limit) map to `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VHostLimits {
    pub max_connections: Option<u64>,
    pub max_queues: Option<u64>,
}

const NONE: u64 = u64::MAX;

/// The limits as atomics (`u64::MAX` for none).
pub(super) struct LimitCells {
    max_connections: AtomicU64,
    max_queues: AtomicU64,
}

impl Default for LimitCells {
    fn default() -> Self {
        Self { max_connections: AtomicU64::new(NONE), max_queues: AtomicU64::new(NONE) }
    }
}

impl LimitCells {
    pub(super) fn get(&self) -> VHostLimits {
        let read = |c: &AtomicU64| Some(c.load(Ordering::Relaxed)).filter(|&v| v != NONE);
        VHostLimits { max_connections: read(&self.max_connections), max_queues: read(&self.max_queues) }
    }

    pub(super) fn set(&self, limits: VHostLimits) {
        let cell = |v: Option<u64>| v.map_or(NONE, |v| v.min(NONE - 1));
        self.max_connections.store(cell(limits.max_connections), Ordering::Relaxed);
        self.max_queues.store(cell(limits.max_queues), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cells = LimitCells::default();
        assert_eq!(cells.get(), VHostLimits::default());
        for limits in [
            VHostLimits { max_connections: Some(0), max_queues: None },
            VHostLimits { max_connections: None, max_queues: Some(u64::MAX) },
            VHostLimits::default(),
        ] {
            cells.set(limits);
            let expected = VHostLimits { max_queues: limits.max_queues.map(|v| v.min(NONE - 1)), ..limits };
            assert_eq!(cells.get(), expected);
        }
    }
}
