//! `message_stats` and `*_details` objects in RabbitMQ's shape: each count, and beside
//! it `<name>_details: {"rate": per second}` from the sampler.

use serde_json::{json, Map, Value};

use crate::management::rates::{message_values, Track, MESSAGE_KEYS};
use crate::stats::MessageStats;

/// Which counts an object shows: RabbitMQ lists every key for the overview and
/// channels, and only the non-zero ones for a queue.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    All,
    NonZero,
}

/// `message_stats` for counts `m`, with rates from `track` (whose first values are laid
/// out as [`message_values`]); a missing track gives rate 0.
pub fn message_stats(m: &MessageStats, track: Option<&Track>, keys: Keys) -> Value {
    let mut out = Map::new();
    for (i, (key, value)) in MESSAGE_KEYS.iter().zip(message_values(m)).enumerate() {
        if keys == Keys::NonZero && value == 0 {
            continue;
        }
        out.insert(key.to_string(), json!(value));
        out.insert(format!("{key}_details"), details(track, i));
    }
    Value::Object(out)
}

/// `{"rate": r}` for value `i` of `track`.
pub fn details(track: Option<&Track>, i: usize) -> Value {
    json!({"rate": track.map_or(0.0, |t| round(t.rate(i)))})
}

/// Rates to one decimal place, as RabbitMQ shows them.
fn round(r: f64) -> f64 {
    (r * 10.0).round() / 10.0
}

/// Where a queue's (and the overview's) message totals sit in its track, after the
/// [`message_values`].
pub const READY: usize = MESSAGE_KEYS.len();
pub const UNACKED: usize = MESSAGE_KEYS.len() + 1;
pub const TOTAL: usize = MESSAGE_KEYS.len() + 2;
