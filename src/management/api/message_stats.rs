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
    message_stats_with(m, keys, |i| details(track, i))
}

/// `message_stats` whose `_details` come from `details(i)`.
pub fn message_stats_with(m: &MessageStats, keys: Keys, details: impl Fn(usize) -> Value) -> Value {
    let mut out = Map::new();
    for (i, (key, value)) in MESSAGE_KEYS.iter().zip(message_values(m)).enumerate() {
        if keys == Keys::NonZero && value == 0 {
            continue;
        }
        out.insert(key.to_string(), json!(value));
        out.insert(format!("{key}_details"), details(i));
    }
    Value::Object(out)
}

/// `{"rate": r}` for value `i` of `track`.
pub fn details(track: Option<&Track>, i: usize) -> Value {
    json!({"rate": track.map_or(0.0, |t| round(t.rate(i)))})
}

/// A history request (`?msg_rates_age=600&msg_rates_incr=5`, `lengths_*` likewise, in
/// seconds): how far back and how far apart.
#[derive(Clone, Copy)]
pub struct Window {
    pub age_ms: u64,
    pub incr_ms: u64,
}

impl Window {
    /// The window a call asks for with `{prefix}_age` and `{prefix}_incr` (both needed).
    pub fn from_call(call: &crate::management::router::Call, prefix: &str) -> Option<Window> {
        let get = |k: &str| call.query(&format!("{prefix}_{k}")).and_then(|v| v.parse::<u64>().ok());
        let (age_ms, incr_ms) = (get("age")?.saturating_mul(1000), get("incr")?.saturating_mul(1000));
        // At most 1,000 samples per series.
        (incr_ms > 0).then(|| Window { age_ms, incr_ms: incr_ms.max(age_ms / 1000) })
    }
}

/// `details` with RabbitMQ's `samples` (newest first, at multiples of the increment),
/// `avg` and `avg_rate` over the window, from `history` (oldest first).
pub fn details_over(
    track: Option<&Track>,
    i: usize,
    history: &std::collections::VecDeque<(u64, Vec<u64>)>,
    w: Window,
) -> Value {
    let mut out = details(track, i);
    let now = crate::message::now_ms();
    let newest = now - now % w.incr_ms;
    let mut samples = Vec::new();
    let mut t = newest;
    while t.saturating_add(w.age_ms) >= newest {
        // The latest sample taken at or before t.
        let value = history.iter().rev().find(|(at, _)| *at <= t).and_then(|(_, v)| v.get(i).copied());
        match value {
            Some(v) => samples.push((t, v)),
            None => break,
        }
        match t.checked_sub(w.incr_ms) {
            Some(next) => t = next,
            None => break,
        }
    }
    let n = samples.len();
    let avg = if n == 0 { 0.0 } else { samples.iter().map(|(_, v)| *v as f64).sum::<f64>() / n as f64 };
    let avg_rate = match (samples.first(), samples.last()) {
        (Some((t1, v1)), Some((t0, v0))) if t1 > t0 => (*v1 as f64 - *v0 as f64) * 1000.0 / (t1 - t0) as f64,
        _ => 0.0,
    };
    out["samples"] = samples.iter().map(|(t, v)| json!({"sample": v, "timestamp": t})).collect();
    out["avg"] = json!(round(avg));
    out["avg_rate"] = json!(round(avg_rate));
    out
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
