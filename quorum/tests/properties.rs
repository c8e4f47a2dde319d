//! Properties over random command sequences: determinism (also across a snapshot),
//! conservation of messages, no redelivery after settle, credit respected, delivery limit
//! respected, no message left waiting while a consumer has credit.

use std::collections::BTreeSet;

use haremq_quorum::*;
use proptest::prelude::*;

/// Subscribing consumers; `basic.get` uses separate keys (GETTERS).
fn consumer(i: u8) -> ConsumerKey {
    let i = u64::from(i % 4);
    ConsumerKey { node: 1 + i / 2, channel: 1 + i % 2, tag: format!("ctag-{i}") }
}

fn getter(i: u8) -> ConsumerKey {
    ConsumerKey { node: 1 + u64::from(i % 2), channel: 9, tag: String::new() }
}

/// A step before it is resolved against the machine (ids are picked from what the
/// consumer actually holds, plus some it does not).
#[derive(Clone, Debug)]
enum Op {
    Enqueue { size: u8, ttl: Option<u8>, advance: u8 },
    Checkout { c: u8, credit: u8 },
    Cancel { c: u8 },
    Detach { c: u8 },
    Settle { c: u8, picks: Vec<u8> },
    Return { c: u8, picks: Vec<u8> },
    Discard { c: u8, picks: Vec<u8> },
    Dequeue { g: u8, settled: bool },
    Purge,
    Tick { advance: u8 },
    CancelNode { node: u8 },
    SetConfig { max_length: Option<u8>, max_bytes: Option<u8>, reject: bool, ttl: Option<u8>, dlx: bool, sac: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let picks = || proptest::collection::vec(any::<u8>(), 0..4);
    prop_oneof![
        6 => (0..8u8, proptest::option::of(0..50u8), 0..10u8).prop_map(|(size, ttl, advance)| Op::Enqueue { size, ttl, advance }),
        2 => (any::<u8>(), 0..4u8).prop_map(|(c, credit)| Op::Checkout { c, credit }),
        1 => any::<u8>().prop_map(|c| Op::Cancel { c }),
        1 => any::<u8>().prop_map(|c| Op::Detach { c }),
        3 => (any::<u8>(), picks()).prop_map(|(c, picks)| Op::Settle { c, picks }),
        2 => (any::<u8>(), picks()).prop_map(|(c, picks)| Op::Return { c, picks }),
        1 => (any::<u8>(), picks()).prop_map(|(c, picks)| Op::Discard { c, picks }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(g, settled)| Op::Dequeue { g, settled }),
        1 => Just(Op::Purge),
        1 => (0..40u8).prop_map(|advance| Op::Tick { advance }),
        1 => (1..3u8).prop_map(|node| Op::CancelNode { node }),
        1 => (
            proptest::option::of(0..6u8),
            proptest::option::of(0..20u8),
            any::<bool>(),
            proptest::option::of(0..60u8),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(max_length, max_bytes, reject, ttl, dlx, sac)| Op::SetConfig {
                max_length,
                max_bytes,
                reject,
                ttl,
                dlx,
                sac
            }),
    ]
}

fn limit() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), Just(Some(0)), Just(Some(1)), Just(Some(3))]
}

/// Turns an op into a command given the current state: settle-like ops name some held
/// ids (by pick index) and, for odd picks past the holdings, ids the consumer does not
/// hold.
fn resolve(q: &QuorumQueue, op: &Op, clock: &mut u64, delivery_limit: Option<u32>) -> Command {
    let ids = |c: &ConsumerKey, picks: &[u8]| -> Vec<MsgId> {
        let held = q.held_by(c);
        picks
            .iter()
            .map(|&p| {
                if !held.is_empty() && p % 4 != 3 {
                    held[usize::from(p) % held.len()]
                } else {
                    MsgId(u64::from(p % 32))
                }
            })
            .collect()
    };
    match op {
        Op::Enqueue { size, ttl, advance } => {
            *clock += u64::from(*advance);
            let mut msg = Message::new(vec![*size; usize::from(*size)], *clock);
            msg.expires_at_ms = ttl.map(|t| *clock + u64::from(t));
            Command::Enqueue { msg, publisher: None }
        }
        Op::Checkout { c, credit } => Command::Checkout { consumer: consumer(*c), credit: u32::from(*credit) },
        Op::Cancel { c } => Command::Cancel { consumer: consumer(*c) },
        Op::Detach { c } => Command::Detach { consumer: consumer(*c) },
        Op::Settle { c, picks } => Command::Settle { consumer: consumer(*c), ids: ids(&consumer(*c), picks) },
        Op::Return { c, picks } => {
            // Returns also come from basic.get holders.
            let key = if c % 5 == 4 { getter(*c) } else { consumer(*c) };
            Command::Return { ids: ids(&key, picks), consumer: key }
        }
        Op::Discard { c, picks } => Command::Discard { consumer: consumer(*c), ids: ids(&consumer(*c), picks) },
        Op::Dequeue { g, settled } => Command::Dequeue { consumer: getter(*g), settled: *settled },
        Op::Purge => Command::Purge,
        Op::Tick { advance } => {
            *clock += u64::from(*advance);
            Command::Tick { now_ms: *clock }
        }
        Op::CancelNode { node } => Command::CancelNode { node: u64::from(*node) },
        Op::SetConfig { max_length, max_bytes, reject, ttl, dlx, sac } => Command::SetConfig(QueueConfig {
            delivery_limit,
            max_length: max_length.map(u64::from),
            max_length_bytes: max_bytes.map(u64::from),
            overflow: if *reject { Overflow::RejectPublish } else { Overflow::DropHead },
            message_ttl_ms: ttl.map(u64::from),
            dead_letter: *dlx,
            single_active_consumer: *sac,
        }),
    }
}

/// What the test knows about every accepted message's fate.
#[derive(Default)]
struct Ledger {
    accepted: BTreeSet<MsgId>,
    settled: BTreeSet<MsgId>,
    gone: BTreeSet<MsgId>,
}

fn all_keys() -> Vec<ConsumerKey> {
    (0..4).map(consumer).chain((0..2).map(getter)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_machine_keeps_its_promises(
        ops in proptest::collection::vec(op(), 0..80),
        delivery_limit in limit(),
        split in any::<proptest::sample::Index>(),
    ) {
        let config = QueueConfig { delivery_limit, ..QueueConfig::default() };
        let mut q = QuorumQueue::new(config.clone());
        let mut ledger = Ledger::default();
        let mut clock = 0u64;
        let mut log = Vec::new();
        let mut outputs = Vec::new();
        let split = split.index(ops.len() + 1);
        let mut snapshot = None;

        for (step, op) in ops.iter().enumerate() {
            if step == split {
                snapshot = Some(q.snapshot());
            }
            let cmd = resolve(&q, op, &mut clock, delivery_limit);
            // Facts from before the command: what a settle really settles, what a purge
            // removes.
            match &cmd {
                Command::Settle { consumer, ids } => {
                    let held: BTreeSet<MsgId> = q.held_by(consumer).into_iter().collect();
                    for id in ids.iter().filter(|id| held.contains(id)) {
                        ledger.settled.insert(*id);
                    }
                }
                Command::Purge => {
                    for id in q.ready_ids() {
                        prop_assert!(ledger.gone.insert(id));
                    }
                }
                _ => {}
            }
            let (reply, effects) = q.apply(cmd.clone());

            match &reply {
                Reply::Accepted { id } => prop_assert!(ledger.accepted.insert(*id), "id reused"),
                Reply::Message { id, delivery_count, redelivered, .. } => {
                    prop_assert!(!ledger.settled.contains(id) && !ledger.gone.contains(id), "settled message got again");
                    prop_assert_eq!(*redelivered, *delivery_count > 0);
                    if let Some(l) = delivery_limit {
                        prop_assert!(*delivery_count <= l);
                    }
                    if matches!(cmd, Command::Dequeue { settled: true, .. }) {
                        ledger.settled.insert(*id);
                    }
                }
                _ => {}
            }
            for e in &effects {
                match e {
                    Effect::Deliver { consumer, id, delivery_count, redelivered, .. } => {
                        prop_assert!(!ledger.settled.contains(id) && !ledger.gone.contains(id), "delivered after settle: {:?}", id);
                        prop_assert_eq!(*redelivered, *delivery_count > 0);
                        if let Some(l) = delivery_limit {
                            prop_assert!(*delivery_count <= l, "count {} over limit {}", delivery_count, l);
                        }
                        let credit = q.credit(consumer);
                        prop_assert!(credit.is_some(), "delivered to a non-consumer");
                        let credit = credit.unwrap_or(0);
                        prop_assert!(credit == 0 || q.held_by(consumer).len() <= credit as usize, "over credit");
                        if q.config().single_active_consumer {
                            prop_assert_eq!(Some(consumer), q.active_consumer());
                        }
                    }
                    Effect::DeadLetter { id, .. } | Effect::Dropped { id, .. } => {
                        prop_assert!(!ledger.settled.contains(id));
                        prop_assert!(ledger.gone.insert(*id), "dead-lettered twice");
                    }
                    Effect::ConsumerActive { .. } => {}
                }
            }

            // Conservation: every accepted message is in exactly one place.
            let ready: BTreeSet<MsgId> = q.ready_ids().collect();
            let mut checked_out = BTreeSet::new();
            for k in all_keys() {
                for id in q.held_by(&k) {
                    prop_assert!(checked_out.insert(id), "held twice");
                }
            }
            for id in &ledger.accepted {
                let places = [ready.contains(id), checked_out.contains(id), ledger.settled.contains(id), ledger.gone.contains(id)];
                prop_assert_eq!(places.iter().filter(|p| **p).count(), 1, "{:?} is in {:?}", id, places);
            }
            // Liveness of assignment: a ready message never waits while an eligible
            // consumer has free credit.
            if !ready.is_empty() {
                for k in (0..4).map(consumer) {
                    let eligible = !q.config().single_active_consumer || q.active_consumer() == Some(&k);
                    if let (true, Some(credit)) = (eligible, q.credit(&k)) {
                        prop_assert!(credit != 0 && q.held_by(&k).len() >= credit as usize, "{:?} idle with credit", k);
                    }
                }
            }
            let stats = q.stats();
            prop_assert_eq!(stats.ready as usize, ready.len());
            prop_assert_eq!(stats.checked_out as usize, checked_out.len());
            prop_assert_eq!(stats.ready + stats.checked_out + ledger.settled.len() as u64 + ledger.gone.len() as u64, stats.total_enqueued);

            log.push(cmd);
            outputs.push((reply, effects));
        }
        let snapshot = snapshot.unwrap_or_else(|| q.snapshot());

        // Determinism: a second replica applying the same log agrees at every step.
        let mut replica = QuorumQueue::new(config);
        for (cmd, out) in log.iter().zip(&outputs) {
            prop_assert_eq!(&replica.apply(cmd.clone()), out);
        }
        prop_assert_eq!(&replica, &q);
        prop_assert_eq!(replica.snapshot(), q.snapshot());

        // ... and so does one restored from a snapshot taken midway.
        let mut restored = QuorumQueue::restore(&snapshot).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (cmd, out) in log.iter().zip(&outputs).skip(split) {
            prop_assert_eq!(&restored.apply(cmd.clone()), out);
        }
        prop_assert_eq!(&restored, &q);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_command(&bytes);
        let _ = QuorumQueue::restore(&bytes);
    }
}
