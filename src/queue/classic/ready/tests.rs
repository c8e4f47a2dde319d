//! The ready list with a real store: spilling, paging back in, priorities, purge.
use super::*;
use crate::message::Message;
use crate::store::redb_store::RedbStore;
use crate::store::StoreOp;

const Q: QueueId = 7;

struct TestStore {
    handle: StoreHandle,
    dir: std::path::PathBuf,
    next_id: u64,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.handle.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestStore {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("haremq-ready-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = RedbStore::open(&dir).expect("open");
        let handle = StoreHandle::start(Box::new(store), 1, 100).expect("start");
        Self { handle, dir, next_id: 1 }
    }

    fn sync(&self) {
        smol::future::block_on(self.handle.sync());
    }

    /// A persistent message with body `n` (8 bytes) and priority `prio`, stored and
    /// enqueued at `seq` like a publish does.
    fn publish(&mut self, seq: u64, n: u64, prio: Option<u8>, refs: u32) -> QueuedMessage {
        let id = self.next_id;
        self.next_id += 1;
        let raw = match prio {
            Some(p) => {
                let props = amq_protocol::protocol::BasicProperties::default().with_priority(p);
                crate::message::properties::encode_properties(&props).into_boxed_slice()
            }
            None => Box::default(),
        };
        let m = Arc::new(Message {
            exchange: Arc::from(""),
            routing_key: "q".into(),
            raw_properties: raw,
            body: n.to_be_bytes().to_vec().into_boxed_slice(),
            persistent: true,
            published_ms: 0,
            ttl: None,
            store: crate::message::StoredMeta { id: Some(id), refs: refs.into(), committed: false.into() },
            charge: Default::default(),
        });
        self.handle.send(StoreOp::PutMessage(id, m.clone()));
        self.handle.send(StoreOp::Enqueue { queue: Q, seq, message: id });
        QueuedMessage::new(seq, false, m)
    }
}

fn number(m: &QueuedMessage) -> u64 {
    u64::from_be_bytes(m.message.body[..8].try_into().expect("8 bytes"))
}

/// Pushes `n` messages numbered from `from`, syncing the store every 1000 so
/// the entries behind the head get spilled.
fn fill(ts: &mut TestStore, list: &mut ReadyList, from: u64, n: u64, prio: impl Fn(u64) -> Option<u8>) {
    for i in from..from + n {
        let m = ts.publish(i, i, prio(i), 1);
        list.push_back(m);
        if i % 1000 == 999 {
            ts.sync();
        }
    }
    ts.sync();
    // Pushes examine a little at a time; a few more settle the tail.
    for l in &mut list.levels {
        if let Some(spill) = &list.spill {
            l.examine(spill, usize::MAX);
        }
    }
}

#[test]
fn a_long_queue_spills_into_a_few_runs_and_drains_in_order() {
    let mut ts = TestStore::new("drain");
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), Vec::new(), None);
    const N: u64 = 30_000;
    fill(&mut ts, &mut list, 0, N, |_| None);
    assert_eq!(list.len(), N as usize);
    assert_eq!(list.bytes(), N * 8);
    let loaded: usize = list.levels[0].head.len()
        + list.levels[0].middle.iter().filter(|e| matches!(e, Entry::Loaded(_))).count()
        + list.levels[0].tail.len();
    assert_eq!(loaded, LOADED_HEAD, "everything past the head is spilled");
    assert_eq!(list.runs(), 1);
    for i in 0..N {
        let m = list.pop_front().expect("message");
        assert_eq!((m.seq, number(&m)), (i, i));
        assert_eq!(list.len(), (N - i - 1) as usize);
        assert_eq!(list.bytes(), (N - i - 1) * 8);
    }
    assert!(list.pop_front().is_none());
}

#[test]
fn requeues_go_back_to_the_head_and_new_pushes_queue_behind_the_runs() {
    let mut ts = TestStore::new("requeue");
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), Vec::new(), None);
    fill(&mut ts, &mut list, 0, 20_000, |_| None);
    let mut taken: Vec<QueuedMessage> = (0..9000).filter_map(|_| list.pop_front()).collect();
    assert_eq!(taken.len(), 9000);
    // Requeue every other one (most recent first, like a channel close).
    let back: Vec<QueuedMessage> = taken.drain(..).filter(|m| m.seq % 2 == 0).rev().collect();
    for mut m in back {
        m.redelivered = true;
        list.insert_by_seq(m);
    }
    fill(&mut ts, &mut list, 20_000, 5_000, |_| None);
    let mut got = Vec::new();
    while let Some(m) = list.pop_front() {
        got.push((m.seq, m.redelivered));
    }
    let mut expected: Vec<(u64, bool)> = (0..9000).filter(|s| s % 2 == 0).map(|s| (s, true)).collect();
    expected.extend((9000..25_000).map(|s| (s, false)));
    assert_eq!(got, expected);
    assert_eq!((list.len(), list.bytes()), (0, 0));
}

#[test]
fn transient_and_shared_messages_stay_loaded_between_runs() {
    let mut ts = TestStore::new("mixed");
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), Vec::new(), None);
    for i in 0..20_000u64 {
        // Every 3000th is referenced by another queue too.
        let m = ts.publish(i, i, None, if i % 3000 == 0 { 2 } else { 1 });
        list.push_back(m);
        if i % 1000 == 999 {
            ts.sync();
        }
    }
    ts.sync();
    if let Some(spill) = &list.spill {
        list.levels[0].examine(spill, usize::MAX);
    }
    assert!(list.runs() >= 3, "shared messages split the runs: {}", list.runs());
    for i in 0..20_000u64 {
        let m = list.pop_front().expect("message");
        assert_eq!(number(&m), i);
    }
    assert_eq!((list.len(), list.bytes()), (0, 0));
}

#[test]
fn drain_hands_out_runs_and_empties_the_counters() {
    let mut ts = TestStore::new("purge");
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), Vec::new(), None);
    fill(&mut ts, &mut list, 0, 12_000, |_| None);
    let drained = list.drain();
    let (mut loaded, mut spilled) = (0, 0);
    for d in &drained {
        match d {
            Drained::Loaded(_) => loaded += 1,
            Drained::Run { count, level, .. } => {
                spilled += count;
                assert_eq!(*level, None);
            }
        }
    }
    assert_eq!((loaded, spilled), (LOADED_HEAD as u64, 12_000 - LOADED_HEAD as u64));
    assert_eq!((list.len(), list.bytes()), (0, 0));
    assert!(list.pop_front().is_none());
    // The store side of a purge: the run's rows and records go.
    for d in drained {
        if let Drained::Run { first_seq, last_seq, level, .. } = d {
            ts.handle.send(delete_run(Q, first_seq, last_seq, level));
        }
    }
    ts.sync();
    let rows = ts.handle.read_entries(Q, 0, u64::MAX, usize::MAX).expect("read");
    assert_eq!(rows.len(), LOADED_HEAD);
}

#[test]
fn priority_levels_spill_separately_and_serve_highest_first() {
    let mut ts = TestStore::new("prio");
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), Vec::new(), Some(3));
    const N: u64 = 40_000;
    let prio = |i: u64| Some((i % 4) as u8);
    fill(&mut ts, &mut list, 0, N, prio);
    assert_eq!(list.len(), N as usize);
    assert!(list.runs() >= 4);
    // Drop-head takes from the highest level; TTL looks at every level's head.
    let m = list.pop_front().expect("head");
    assert_eq!(number(&m), 3);
    let (first, level) = list.min_front(|m| Some(m.seq)).expect("heads");
    assert_eq!((first, level), (0, 0));
    let mut got = vec![number(&m)];
    while let Some(m) = list.pop_front() {
        got.push(number(&m));
    }
    let mut expected: Vec<u64> = (0..N).collect();
    expected.sort_by_key(|&i| (std::cmp::Reverse(i % 4), i));
    assert_eq!(got, expected);
    assert_eq!((list.len(), list.bytes()), (0, 0));
}

#[test]
fn recovered_runs_are_read_back_and_split_by_level() {
    let mut ts = TestStore::new("recover");
    const N: u64 = 5_000;
    for i in 0..N {
        ts.publish(i, i, Some((i % 3) as u8), 1);
    }
    ts.sync();
    // As a restart recovers it: one run, bytes unknown.
    let entries = vec![Entry::Run(Run::recovered(0, N - 1, N))];
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), entries, Some(2));
    assert_eq!((list.len(), list.bytes()), (N as usize, N * 8), "priority recovery learns the bytes");
    let mut got = Vec::new();
    while let Some(m) = list.pop_front() {
        got.push(number(&m));
    }
    let mut expected: Vec<u64> = (0..N).collect();
    expected.sort_by_key(|&i| (std::cmp::Reverse(i % 3), i));
    assert_eq!(got, expected);

    let entries = vec![Entry::Run(Run::recovered(0, N - 1, N))];
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), entries, None);
    assert_eq!((list.len(), list.bytes()), (N as usize, 0), "a classic queue does not read them at start");
    let m = list.pop_front().expect("head");
    assert_eq!(number(&m), 0);
    assert_eq!(list.len(), N as usize - 1);
    assert_eq!(list.bytes(), (PAGE_IN_BATCH as u64 - 1) * 8, "known once read back");
}

#[test]
fn a_run_whose_rows_are_gone_is_dropped_from_the_length() {
    let mut ts = TestStore::new("gone");
    for i in 0..100 {
        ts.publish(i, i, None, 1);
    }
    ts.handle.send(delete_run(Q, 50, 99, None));
    ts.sync();
    let entries = vec![Entry::Run(Run::recovered(0, 99, 100))];
    let mut list = ReadyList::new(Some((ts.handle.clone(), Q)), entries, None);
    let mut n = 0;
    while list.pop_front().is_some() {
        n += 1;
    }
    assert_eq!((n, list.len()), (50, 0));
}
