//! One test per rule of the quorum queue state machine, through its public API.

use haremq_quorum::*;

fn key(tag: &str) -> ConsumerKey {
    ConsumerKey { node: 1, channel: 1, tag: tag.into() }
}

fn msg(body: &str) -> Message {
    Message::new(body.as_bytes().to_vec(), 0)
}

fn enqueue(q: &mut QuorumQueue, body: &str) -> (MsgId, Vec<Effect>) {
    match q.apply(Command::Enqueue { msg: msg(body), publisher: None }) {
        (Reply::Accepted { id }, fx) => (id, fx),
        other => panic!("not accepted: {other:?}"),
    }
}

fn checkout(q: &mut QuorumQueue, tag: &str, credit: u32) -> Vec<Effect> {
    q.apply(Command::Checkout { consumer: key(tag), credit }).1
}

/// (consumer tag, id, delivery_count) of each Deliver effect.
fn deliveries(fx: &[Effect]) -> Vec<(String, u64, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Deliver { consumer, id, delivery_count, .. } => Some((consumer.tag.clone(), id.0, *delivery_count)),
            _ => None,
        })
        .collect()
}

fn dead(fx: &[Effect]) -> Vec<(u64, DeadLetterReason)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::DeadLetter { id, reason, .. } => Some((id.0, *reason)),
            Effect::Dropped { id, reason } => Some((id.0, *reason)),
            _ => None,
        })
        .collect()
}

fn dlx_config() -> QueueConfig {
    QueueConfig { dead_letter: true, ..QueueConfig::default() }
}

#[test]
fn ids_are_assigned_in_order_and_messages_wait_for_a_consumer() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    assert_eq!(enqueue(&mut q, "a").0, MsgId(1));
    assert_eq!(enqueue(&mut q, "b").0, MsgId(2));
    assert_eq!(q.stats().ready, 2);
    assert_eq!(q.stats().ready_bytes, 2);
    let fx = checkout(&mut q, "c", 0);
    assert_eq!(deliveries(&fx), vec![("c".into(), 1, 0), ("c".into(), 2, 0)]);
    assert_eq!(q.stats().ready, 0);
    assert_eq!(q.stats().checked_out, 2);
}

#[test]
fn credit_limits_what_a_consumer_holds_and_settling_frees_it() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 2);
    for b in ["a", "b", "c"] {
        enqueue(&mut q, b);
    }
    assert_eq!(q.held_by(&key("c")), vec![MsgId(1), MsgId(2)]);
    assert_eq!(q.stats().ready, 1);
    let (reply, fx) = q.apply(Command::Settle { consumer: key("c"), ids: vec![MsgId(1)] });
    assert_eq!(reply, Reply::Ok);
    assert_eq!(deliveries(&fx), vec![("c".into(), 3, 0)]);
    assert_eq!(q.stats().total_acked, 1);
    // Raising the credit delivers more at once.
    enqueue(&mut q, "d");
    assert_eq!(q.stats().ready, 1);
    let fx = checkout(&mut q, "c", 3);
    assert_eq!(deliveries(&fx), vec![("c".into(), 4, 0)]);
}

#[test]
fn assignment_is_round_robin_in_checkout_order() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "x", 0);
    checkout(&mut q, "y", 0);
    let tags: Vec<String> = (0..4).flat_map(|i| deliveries(&enqueue(&mut q, &i.to_string()).1)).map(|d| d.0).collect();
    assert_eq!(tags, ["x", "y", "x", "y"]);
}

#[test]
fn cancel_returns_messages_to_the_head_in_order_counting_a_delivery() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 2);
    for b in ["a", "b", "c"] {
        enqueue(&mut q, b);
    }
    q.apply(Command::Cancel { consumer: key("c") });
    assert_eq!(q.ready_ids().collect::<Vec<_>>(), vec![MsgId(1), MsgId(2), MsgId(3)]);
    assert_eq!(q.stats().consumers, 0);
    let fx = checkout(&mut q, "d", 0);
    assert_eq!(deliveries(&fx), vec![("d".into(), 1, 1), ("d".into(), 2, 1), ("d".into(), 3, 0)]);
    assert!(matches!(&fx[0], Effect::Deliver { redelivered: true, .. }));
    assert!(matches!(&fx[2], Effect::Deliver { redelivered: false, .. }));
}

#[test]
fn return_requeues_at_the_head_and_redelivers() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 1);
    enqueue(&mut q, "a");
    enqueue(&mut q, "b");
    let (reply, fx) = q.apply(Command::Return { consumer: key("c"), ids: vec![MsgId(1)] });
    assert_eq!(reply, Reply::Ok);
    // Back at the head, ahead of "b", and delivered again at once.
    assert_eq!(deliveries(&fx), vec![("c".into(), 1, 1)]);
    assert_eq!(q.ready_ids().collect::<Vec<_>>(), vec![MsgId(2)]);
}

#[test]
fn delivery_limit_dead_letters_instead_of_requeueing() {
    let mut q = QuorumQueue::new(QueueConfig { delivery_limit: Some(2), ..dlx_config() });
    checkout(&mut q, "c", 1);
    enqueue(&mut q, "poison");
    let mut counts = Vec::new();
    let mut last = Vec::new();
    for _ in 0..3 {
        last = q.apply(Command::Return { consumer: key("c"), ids: vec![MsgId(1)] }).1;
        counts.extend(deliveries(&last).into_iter().map(|d| d.2));
    }
    assert_eq!(counts, vec![1, 2]);
    assert_eq!(dead(&last), vec![(1, DeadLetterReason::DeliveryLimit)]);
    assert!(matches!(&last[0], Effect::DeadLetter { msg, .. } if &*msg.body == b"poison"));
    assert_eq!(q.stats().ready + q.stats().checked_out, 0);
}

#[test]
fn no_delivery_limit_requeues_forever() {
    let mut q = QuorumQueue::new(QueueConfig { delivery_limit: None, ..QueueConfig::default() });
    checkout(&mut q, "c", 1);
    enqueue(&mut q, "a");
    for n in 1..=50 {
        let fx = q.apply(Command::Return { consumer: key("c"), ids: vec![MsgId(1)] }).1;
        assert_eq!(deliveries(&fx), vec![("c".into(), 1, n)]);
    }
}

#[test]
fn discard_dead_letters_as_rejected_or_drops_without_dlx() {
    let mut q = QuorumQueue::new(dlx_config());
    checkout(&mut q, "c", 0);
    enqueue(&mut q, "a");
    let fx = q.apply(Command::Discard { consumer: key("c"), ids: vec![MsgId(1)] }).1;
    assert!(matches!(&fx[..], [Effect::DeadLetter { id: MsgId(1), reason: DeadLetterReason::Rejected, .. }]));

    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 0);
    enqueue(&mut q, "a");
    let fx = q.apply(Command::Discard { consumer: key("c"), ids: vec![MsgId(1)] }).1;
    assert_eq!(fx, vec![Effect::Dropped { id: MsgId(1), reason: DeadLetterReason::Rejected }]);
}

#[test]
fn unknown_and_duplicate_ids_are_ignored() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 0);
    checkout(&mut q, "other", 0);
    enqueue(&mut q, "a"); // to c
    enqueue(&mut q, "b"); // to other
    let (reply, fx) =
        q.apply(Command::Settle { consumer: key("c"), ids: vec![MsgId(1), MsgId(1), MsgId(2), MsgId(99)] });
    assert_eq!(reply, Reply::UnknownIds { ids: vec![MsgId(1), MsgId(2), MsgId(99)] });
    assert!(fx.is_empty());
    assert_eq!(q.holder(MsgId(2)), Some(&key("other")));
    let (reply, _) = q.apply(Command::Return { consumer: key("gone"), ids: vec![MsgId(2)] });
    assert_eq!(reply, Reply::UnknownIds { ids: vec![MsgId(2)] });
    let (reply, _) = q.apply(Command::Discard { consumer: key("c"), ids: vec![MsgId(1)] });
    assert_eq!(reply, Reply::UnknownIds { ids: vec![MsgId(1)] });
    assert_eq!(q.stats().total_acked, 1);
    assert_eq!(q.stats().checked_out, 1);
}

#[test]
fn drop_head_drops_the_oldest_ready_messages() {
    let mut q = QuorumQueue::new(QueueConfig { max_length: Some(2), ..dlx_config() });
    checkout(&mut q, "c", 1);
    enqueue(&mut q, "held"); // checked out: does not count
    enqueue(&mut q, "a");
    enqueue(&mut q, "b");
    let (_, fx) = enqueue(&mut q, "c");
    assert_eq!(dead(&fx), vec![(2, DeadLetterReason::MaxLen)]);
    assert_eq!(q.ready_ids().collect::<Vec<_>>(), vec![MsgId(3), MsgId(4)]);

    let mut q = QuorumQueue::new(QueueConfig { max_length_bytes: Some(5), ..QueueConfig::default() });
    enqueue(&mut q, "abc");
    let (_, fx) = enqueue(&mut q, "def");
    assert_eq!(fx, vec![Effect::Dropped { id: MsgId(1), reason: DeadLetterReason::MaxLen }]);
    assert_eq!(q.stats().ready_bytes, 3);
}

#[test]
fn reject_publish_refuses_and_stores_nothing() {
    let mut q = QuorumQueue::new(QueueConfig {
        max_length: Some(1),
        overflow: Overflow::RejectPublish,
        ..QueueConfig::default()
    });
    enqueue(&mut q, "a");
    let (reply, fx) = q.apply(Command::Enqueue { msg: msg("b"), publisher: None });
    assert_eq!(reply, Reply::Rejected);
    assert!(fx.is_empty());
    assert_eq!(q.stats().ready, 1);
    assert_eq!(q.stats().total_enqueued, 1);
    // Once the queue drains, publishing works again, and ids stay dense.
    q.apply(Command::Dequeue { consumer: key("get"), settled: true });
    assert_eq!(enqueue(&mut q, "c").0, MsgId(2));

    let mut q = QuorumQueue::new(QueueConfig {
        max_length_bytes: Some(4),
        overflow: Overflow::RejectPublish,
        ..QueueConfig::default()
    });
    enqueue(&mut q, "abc");
    assert_eq!(q.apply(Command::Enqueue { msg: msg("de"), publisher: None }).0, Reply::Rejected);
    enqueue(&mut q, "d");
}

#[test]
fn ttl_expires_at_the_head_only() {
    let mut q = QuorumQueue::new(QueueConfig { message_ttl_ms: Some(100), ..dlx_config() });
    q.apply(Command::Enqueue { msg: Message::new(b"a".to_vec(), 1000), publisher: None });
    let mut long = Message::new(b"b".to_vec(), 1000);
    long.expires_at_ms = Some(1050); // per-message TTL shorter than the queue's
    q.apply(Command::Enqueue { msg: long, publisher: None });
    let (_, fx) = q.apply(Command::Tick { now_ms: 1099 });
    assert!(fx.is_empty());
    let (_, fx) = q.apply(Command::Tick { now_ms: 1100 });
    assert_eq!(dead(&fx), vec![(1, DeadLetterReason::Expired), (2, DeadLetterReason::Expired)]);

    // An unexpired head shields an expired message behind it.
    let mut q = QuorumQueue::new(QueueConfig::default());
    q.apply(Command::Enqueue { msg: Message::new(b"a".to_vec(), 0), publisher: None });
    let mut short = Message::new(b"b".to_vec(), 0);
    short.expires_at_ms = Some(10);
    q.apply(Command::Enqueue { msg: short, publisher: None });
    assert!(q.apply(Command::Tick { now_ms: 50 }).1.is_empty());
    assert_eq!(q.stats().ready, 2);
    // Once the head is taken, the expired message behind it reaches the head and expires
    // in the same command.
    let (reply, fx) = q.apply(Command::Dequeue { consumer: key("get"), settled: true });
    assert!(matches!(reply, Reply::Message { id: MsgId(1), remaining: 0, .. }));
    assert_eq!(fx, vec![Effect::Dropped { id: MsgId(2), reason: DeadLetterReason::Expired }]);
    assert_eq!(q.stats().ready, 0);
}

#[test]
fn ttl_zero_reaches_a_waiting_consumer_and_expires_otherwise() {
    let mut q = QuorumQueue::new(QueueConfig { message_ttl_ms: Some(0), ..QueueConfig::default() });
    let fx = q.apply(Command::Enqueue { msg: Message::new(b"a".to_vec(), 10), publisher: None }).1;
    assert_eq!(fx, vec![Effect::Dropped { id: MsgId(1), reason: DeadLetterReason::Expired }]);
    checkout(&mut q, "c", 0);
    let fx = q.apply(Command::Enqueue { msg: Message::new(b"b".to_vec(), 20), publisher: None }).1;
    assert_eq!(deliveries(&fx), vec![("c".into(), 2, 0)]);
}

#[test]
fn dequeue_gets_the_head_and_unsettled_gets_can_be_settled_or_returned() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    assert_eq!(q.apply(Command::Dequeue { consumer: key("get"), settled: false }).0, Reply::Empty);
    enqueue(&mut q, "a");
    enqueue(&mut q, "b");
    let (reply, _) = q.apply(Command::Dequeue { consumer: key("get"), settled: false });
    assert!(matches!(reply, Reply::Message { id: MsgId(1), redelivered: false, delivery_count: 0, remaining: 1, .. }));
    assert_eq!(q.holder(MsgId(1)), Some(&key("get")));
    assert_eq!(q.stats().consumers, 0, "a basic.get holder is not a consumer");
    q.apply(Command::Return { consumer: key("get"), ids: vec![MsgId(1)] });
    let (reply, _) = q.apply(Command::Dequeue { consumer: key("get"), settled: true });
    match reply {
        Reply::Message { id, msg, redelivered, delivery_count, remaining } => {
            assert_eq!((id, &*msg.body, redelivered, delivery_count, remaining), (MsgId(1), &b"a"[..], true, 1, 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(q.stats().total_acked, 1);
    assert_eq!(q.stats().total_delivered, 2);
}

#[test]
fn purge_removes_ready_messages_only() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 1);
    for b in ["a", "b", "c"] {
        enqueue(&mut q, b);
    }
    let (reply, fx) = q.apply(Command::Purge);
    assert_eq!(reply, Reply::Purged { count: 2 });
    assert!(fx.is_empty());
    assert_eq!(
        q.stats(),
        Stats {
            ready: 0,
            ready_bytes: 0,
            checked_out: 1,
            consumers: 1,
            total_enqueued: 3,
            total_delivered: 1,
            total_acked: 0
        }
    );
}

#[test]
fn cancel_node_returns_the_messages_of_all_its_consumers() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    let on = |node, tag: &str| ConsumerKey { node, channel: 7, tag: tag.into() };
    q.apply(Command::Checkout { consumer: on(1, "a"), credit: 1 });
    q.apply(Command::Checkout { consumer: on(2, "b"), credit: 1 });
    q.apply(Command::Checkout { consumer: on(1, "c"), credit: 1 });
    for b in ["1", "2", "3", "4"] {
        enqueue(&mut q, b);
    }
    let fx = q.apply(Command::CancelNode { node: 1 }).1;
    assert!(deliveries(&fx).is_empty(), "b still holds its message");
    assert_eq!(q.ready_ids().collect::<Vec<_>>(), vec![MsgId(1), MsgId(3), MsgId(4)]);
    assert_eq!(q.stats().consumers, 1);
    assert_eq!(q.holder(MsgId(2)), Some(&on(2, "b")));
}

#[test]
fn single_active_consumer_delivers_to_the_first_and_fails_over_in_order() {
    let mut q = QuorumQueue::new(QueueConfig { single_active_consumer: true, ..QueueConfig::default() });
    let fx = checkout(&mut q, "first", 1);
    assert_eq!(fx, vec![Effect::ConsumerActive { consumer: key("first") }]);
    assert!(checkout(&mut q, "second", 0).is_empty());
    for b in ["a", "b"] {
        enqueue(&mut q, b);
    }
    assert_eq!(q.held_by(&key("first")), vec![MsgId(1)]);
    assert!(q.held_by(&key("second")).is_empty());
    let fx = q.apply(Command::Cancel { consumer: key("first") }).1;
    assert_eq!(fx[0], Effect::ConsumerActive { consumer: key("second") });
    assert_eq!(deliveries(&fx), vec![("second".into(), 1, 1), ("second".into(), 2, 0)]);
    assert_eq!(q.active_consumer(), Some(&key("second")));
}

#[test]
fn duplicate_publishes_are_detected_per_channel() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    let p = |channel, seq| Some(Publisher { node: 1, channel, seq });
    assert!(matches!(q.apply(Command::Enqueue { msg: msg("a"), publisher: p(1, 1) }).0, Reply::Accepted { .. }));
    assert_eq!(q.apply(Command::Enqueue { msg: msg("a"), publisher: p(1, 1) }).0, Reply::Duplicate);
    assert!(matches!(q.apply(Command::Enqueue { msg: msg("b"), publisher: p(2, 1) }).0, Reply::Accepted { .. }));
    assert!(matches!(q.apply(Command::Enqueue { msg: msg("c"), publisher: p(1, 2) }).0, Reply::Accepted { .. }));
    assert_eq!(q.stats().ready, 3);
    // The node went away: its channels' sequences are forgotten.
    q.apply(Command::CancelNode { node: 1 });
    assert!(matches!(q.apply(Command::Enqueue { msg: msg("d"), publisher: p(1, 1) }).0, Reply::Accepted { .. }));
}

#[test]
fn set_config_applies_new_limits_and_single_active_consumer() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    for b in ["a", "b", "c"] {
        enqueue(&mut q, b);
    }
    let fx = q.apply(Command::SetConfig(QueueConfig { max_length: Some(1), ..QueueConfig::default() })).1;
    assert_eq!(dead(&fx), vec![(1, DeadLetterReason::MaxLen), (2, DeadLetterReason::MaxLen)]);
    assert_eq!(q.config().max_length, Some(1));
    checkout(&mut q, "x", 0);
    let fx = q.apply(Command::SetConfig(QueueConfig { single_active_consumer: true, ..QueueConfig::default() })).1;
    assert_eq!(fx, vec![Effect::ConsumerActive { consumer: key("x") }]);
}

#[test]
fn deliveries_share_the_body_instead_of_copying_it() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    let m = msg("shared");
    let body = m.body.clone();
    checkout(&mut q, "c", 0);
    let fx = q.apply(Command::Enqueue { msg: m, publisher: None }).1;
    let Effect::Deliver { msg, .. } = &fx[0] else { panic!("{fx:?}") };
    assert!(std::sync::Arc::ptr_eq(&msg.body, &body));
}

#[test]
fn snapshot_round_trips_and_corrupt_snapshots_are_errors() {
    let mut q = QuorumQueue::new(dlx_config());
    checkout(&mut q, "c", 1);
    for b in ["a", "b", "c"] {
        enqueue(&mut q, b);
    }
    let snap = q.snapshot();
    let restored = QuorumQueue::restore(&snap).expect("restore");
    assert_eq!(restored, q);
    assert_eq!(restored.snapshot(), snap);

    assert!(QuorumQueue::restore(&[]).is_err());
    assert_eq!(QuorumQueue::restore(&[99]), Err(Error::UnknownVersion(99)));
    for cut in 1..snap.len() {
        assert!(QuorumQueue::restore(&snap[..cut]).is_err(), "truncated at {cut}");
    }
    let mut trailing = snap.clone();
    trailing.push(0);
    assert!(QuorumQueue::restore(&trailing).is_err());
    // Flipping bytes must never panic (it may or may not decode to a consistent state).
    for i in 1..snap.len() {
        for bit in [0x01, 0x80] {
            let mut bad = snap.clone();
            bad[i] ^= bit;
            let _ = QuorumQueue::restore(&bad);
        }
    }
}

#[test]
fn commands_round_trip_and_bad_encodings_are_errors() {
    let cmds = vec![
        Command::Enqueue { msg: msg("body"), publisher: Some(Publisher { node: 1, channel: 2, seq: 3 }) },
        Command::Checkout { consumer: key("c"), credit: 10 },
        Command::Settle { consumer: key("c"), ids: vec![MsgId(1), MsgId(u64::MAX)] },
        Command::Tick { now_ms: 5 },
        Command::SetConfig(QueueConfig::default()),
        Command::Purge,
    ];
    for cmd in cmds {
        let bytes = encode_command(&cmd);
        assert_eq!(decode_command(&bytes), Ok(cmd.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_command(&bytes[..cut]).is_err());
        }
    }
    // An absurd length prefix for a Vec<MsgId> or body is an error, not an allocation.
    let mut huge = vec![2u8]; // Settle
    huge.extend([0, 0, 0]); // key: node 0, channel 0, tag ""
    huge.extend([0xff, 0xff, 0xff, 0xff, 0x0f]); // 2^32-1 ids follow
    assert!(decode_command(&huge).is_err());
    let mut body = vec![0u8]; // Enqueue
    body.extend([0xff, 0xff, 0xff, 0xff, 0x0f]); // a 4 GiB body
    assert!(decode_command(&body).is_err());
}

#[test]
fn detach_stops_deliveries_but_keeps_held_messages_settleable() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    checkout(&mut q, "c", 2);
    for b in ["a", "b", "c"] {
        enqueue(&mut q, b);
    }
    let fx = q.apply(Command::Detach { consumer: key("c") }).1;
    assert!(fx.is_empty());
    assert_eq!(q.stats().consumers, 0);
    assert_eq!(q.credit(&key("c")), None);
    // Settling frees credit, but nothing more is delivered to a detached consumer.
    let (reply, fx) = q.apply(Command::Settle { consumer: key("c"), ids: vec![MsgId(1)] });
    assert_eq!(reply, Reply::Ok);
    assert!(fx.is_empty());
    assert_eq!(q.ready_ids().collect::<Vec<_>>(), vec![MsgId(3)]);
    // What it still holds goes back when its channel closes.
    q.apply(Command::Cancel { consumer: key("c") });
    assert_eq!(q.ready_ids().collect::<Vec<_>>(), vec![MsgId(2), MsgId(3)]);
    assert!(q.held_by(&key("c")).is_empty());
}

#[test]
fn round_robin_continues_fairly_after_a_consumer_leaves() {
    let mut q = QuorumQueue::new(QueueConfig::default());
    for t in ["x", "y", "z"] {
        checkout(&mut q, t, 0);
    }
    let mut tags = Vec::new();
    for i in 0..2 {
        tags.extend(deliveries(&enqueue(&mut q, &i.to_string()).1).into_iter().map(|d| d.0));
    }
    // x leaves holding message 1, which goes to the next in turn (z, after y got 2).
    let fx = q.apply(Command::Cancel { consumer: key("x") }).1;
    tags.extend(deliveries(&fx).into_iter().map(|d| d.0));
    for i in 2..5 {
        tags.extend(deliveries(&enqueue(&mut q, &i.to_string()).1).into_iter().map(|d| d.0));
    }
    assert_eq!(tags, ["x", "y", "z", "y", "z", "y"]);
}

#[test]
fn an_origin_stamp_changes_nothing_the_machine_does() {
    let (mut plain, mut stamped) = (QuorumQueue::new(dlx_config()), QuorumQueue::new(dlx_config()));
    let commands = [
        Command::Enqueue { msg: msg("a"), publisher: None },
        Command::Enqueue { msg: msg("b"), publisher: None },
        Command::Checkout { consumer: key("c"), credit: 1 },
        Command::Discard { consumer: key("c"), ids: vec![MsgId(1)] },
        Command::SetConfig(QueueConfig { max_length: Some(0), ..dlx_config() }),
    ];
    for c in commands {
        let want = plain.apply(c.clone());
        let got = stamped.apply(Command::Origin { node: 7, command: Box::new(c) });
        assert_eq!(got, want);
    }
    assert_eq!(stamped.snapshot(), plain.snapshot());
}
