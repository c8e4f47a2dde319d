//! Opening the store: clean shutdown and stores that are not what the last clean
//! shutdown left. (Dropping a redb database closes it cleanly, so a store that needs
//! repair is made by killing a broker: see the durability tests.)

use std::path::PathBuf;
use std::sync::Arc;

use super::super::clean::{self, Counts};
use super::super::{MessageRecord, Store, StoreError, StoreOp};
use super::{RedbStore, FILE_NAME};

/// A scratch data directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("haremq-start-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("dir");
        Dir(p)
    }

    fn file(&self) -> PathBuf {
        self.0.join(FILE_NAME)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn message() -> Arc<MessageRecord> {
    Arc::new(MessageRecord {
        exchange: "".into(),
        routing_key: "q".into(),
        raw_properties: Box::default(),
        body: b"body".to_vec().into_boxed_slice(),
        persistent: true,
        published_ms: 0,
        ttl: None,
    })
}

/// A queue with `n` messages, and one message record no entry references.
fn fill(store: &mut RedbStore, n: u64) {
    let mut ops = vec![StoreOp::PutQueue(super::super::QueueRecord {
        id: 1,
        vhost: "/".into(),
        name: "q".into(),
        auto_delete: false,
        arguments: Default::default(),
    })];
    for i in 1..=n {
        ops.push(StoreOp::PutMessage(i, message()));
        ops.push(StoreOp::Enqueue { queue: 1, seq: i, message: i });
    }
    ops.push(StoreOp::PutMessage(1000, message()));
    store.commit(&ops).expect("commit");
}

fn damaged(r: Result<impl Sized, StoreError>) -> String {
    match r {
        Err(StoreError::Damaged { detail, .. }) => detail,
        Err(e) => panic!("expected Damaged, got {e}"),
        Ok(_) => panic!("expected Damaged, got a store"),
    }
}

#[test]
fn a_clean_close_records_the_counts_and_the_next_open_needs_no_repair() {
    let dir = Dir::new("clean");
    let mut store = RedbStore::open(&dir.0).expect("open");
    store.load().expect("load");
    fill(&mut store, 3);
    store.close().expect("close");
    drop(store);
    assert_eq!(clean::read(&dir.0).expect("read"), Some(Counts { messages: 4, entries: 3, delayed: 0 }));
    let mut store = RedbStore::open(&dir.0).expect("reopen");
    assert!(!store.start.repaired, "no repair after a clean close");
    assert!(!store.start.rolled_back);
    let snap = store.load().expect("load");
    assert_eq!(snap.messages.len(), 3);
    assert_eq!(clean::read(&dir.0).expect("read"), None, "the record is gone once the store is in use");
    assert_eq!(store.counts().expect("counts").messages, 3, "garbage collected the unreferenced record");
}

#[test]
fn fewer_records_than_the_clean_shutdown_recorded_are_refused_unless_accepted() {
    let dir = Dir::new("fewer");
    let mut store = RedbStore::open(&dir.0).expect("open");
    store.load().expect("load");
    fill(&mut store, 3);
    store.close().expect("close");
    drop(store);
    // As if the file had been replaced by an older copy.
    clean::write(&dir.0, &Counts { messages: 9, entries: 8, delayed: 0 }).expect("record");
    let before = std::fs::read(dir.file()).expect("read");
    let detail = damaged(RedbStore::open(&dir.0));
    assert!(
        detail.contains("4 messages, 3 queue entries") && detail.contains("9 messages, 8 queue entries"),
        "{detail}"
    );
    assert!(std::fs::read(dir.file()).expect("read") == before, "the file was not changed");
    let mut store = RedbStore::open_with(&dir.0, true).expect("open, accepting");
    store.load().expect("load, accepting");
    assert_eq!(store.counts().expect("counts").messages, 4, "no garbage collection: the unmatched record stays");
}

#[test]
fn an_empty_or_missing_store_file_is_refused() {
    let dir = Dir::new("empty");
    let mut store = RedbStore::open(&dir.0).expect("open");
    store.load().expect("load");
    store.close().expect("close");
    drop(store);
    std::fs::write(dir.file(), b"").expect("truncate");
    assert!(damaged(RedbStore::open(&dir.0)).contains("empty (0 bytes)"));
    std::fs::remove_file(dir.file()).expect("remove");
    assert!(damaged(RedbStore::open(&dir.0)).contains("missing"));
    std::fs::write(dir.file(), b"").expect("truncate");
    let mut store = RedbStore::open_with(&dir.0, true).expect("accepted: starts empty");
    store.load().expect("load");
    assert!(dir.0.join(format!("{FILE_NAME}.empty")).exists(), "the empty file is kept aside");
}

#[test]
fn a_new_store_is_never_an_empty_file() {
    let dir = Dir::new("new");
    let store = RedbStore::open(&dir.0).expect("open");
    assert!(std::fs::metadata(dir.file()).expect("file").len() > 0);
    assert!(!dir.0.join(format!("{FILE_NAME}.new")).exists());
    drop(store);
}
