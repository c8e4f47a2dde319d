//! The security tables: vhosts, users, permissions and topic permissions round-trip,
//! and deleting a vhost or a user deletes exactly its rows.

use std::path::PathBuf;
use std::sync::Arc;

use super::super::{
    BindingRecord, ExchangeRecord, MessageRecord, PermissionRecord, QueueRecord, Store, StoreOp, TopicPermissionRecord,
    UserRecord, VHostRecord,
};
use super::RedbStore;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("haremq-sec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("dir");
    Dir(p)
}

/// Everything a vhost can hold, for vhost `v` (queue id `id`).
fn vhost_rows(v: &str, id: u64, message: u64) -> Vec<StoreOp> {
    vec![
        StoreOp::PutVHost(VHostRecord { name: v.into(), max_queues: Some(3), ..Default::default() }),
        StoreOp::PutExchange(ExchangeRecord {
            vhost: v.into(),
            name: "x".into(),
            kind: "direct".into(),
            auto_delete: false,
            internal: false,
            arguments: Default::default(),
        }),
        StoreOp::PutQueue(QueueRecord {
            id,
            vhost: v.into(),
            name: "q".into(),
            auto_delete: false,
            arguments: Default::default(),
        }),
        StoreOp::PutBinding(BindingRecord {
            vhost: v.into(),
            source: "x".into(),
            destination: "q".into(),
            to_queue: true,
            routing_key: "k".into(),
            arguments: Default::default(),
        }),
        StoreOp::PutMessage(
            message,
            Arc::new(MessageRecord {
                exchange: "x".into(),
                routing_key: "k".into(),
                raw_properties: Box::default(),
                body: b"b".to_vec().into_boxed_slice(),
                persistent: true,
                published_ms: 0,
                ttl: None,
            }),
        ),
        StoreOp::Enqueue { queue: id, seq: 1, message },
        StoreOp::PutPermission(PermissionRecord {
            user: "u".into(),
            vhost: v.into(),
            configure: ".*".into(),
            write: "".into(),
            read: "^r".into(),
        }),
        StoreOp::PutTopicPermission(TopicPermissionRecord {
            user: "u".into(),
            vhost: v.into(),
            exchange: "amq.topic".into(),
            write: "^{username}".into(),
            read: ".*".into(),
        }),
    ]
}

#[test]
fn deleting_a_vhost_deletes_exactly_its_rows() {
    let d = dir("vhost");
    let mut store = RedbStore::open(&d.0).expect("open");
    let mut ops = vhost_rows("/", 1, 1);
    ops.extend(vhost_rows("/v", 2, 2));
    ops.push(StoreOp::PutUser(UserRecord { name: "u".into(), tags: vec!["t".into()], ..Default::default() }));
    store.commit(&ops).expect("commit");
    store.commit(&[StoreOp::DeleteVHost { name: "/v".into() }]).expect("delete vhost");
    let snap = store.load().expect("load");
    assert_eq!(snap.vhosts.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["/"]);
    assert_eq!(snap.vhosts[0].max_queues, Some(3));
    assert!(snap.exchanges.iter().all(|e| e.vhost == "/") && snap.exchanges.len() == 1);
    assert_eq!(snap.queues.iter().map(|q| q.id).collect::<Vec<_>>(), [1]);
    assert!(snap.bindings.iter().all(|b| b.vhost == "/") && snap.bindings.len() == 1);
    assert!(snap.entries.contains_key(&1) && !snap.entries.contains_key(&2));
    assert_eq!(snap.permissions.len(), 1);
    assert_eq!(snap.permissions[0].vhost, "/");
    assert_eq!(snap.permissions[0].read, "^r");
    assert_eq!(snap.topic_permissions.len(), 1);
    assert_eq!(snap.topic_permissions[0].write, "^{username}");
    assert_eq!(snap.users.len(), 1);
    assert_eq!(snap.users[0].tags, ["t"]);
    // The deleted vhost's message record, referenced by nothing now, was collected
    // by the load's garbage collection.
    assert!(snap.messages.contains_key(&1));
    let read = store.reader().read_messages(&[1, 2]).expect("read");
    assert!(read[0].is_some() && read[1].is_none());
}

#[test]
fn deleting_a_user_deletes_its_permissions() {
    let d = dir("user");
    let mut store = RedbStore::open(&d.0).expect("open");
    let mut ops = vhost_rows("/", 1, 1);
    ops.push(StoreOp::PutUser(UserRecord { name: "u".into(), ..Default::default() }));
    ops.push(StoreOp::PutUser(UserRecord { name: "w".into(), ..Default::default() }));
    ops.push(StoreOp::PutPermission(PermissionRecord { user: "w".into(), vhost: "/".into(), ..Default::default() }));
    store.commit(&ops).expect("commit");
    store.commit(&[StoreOp::DeleteUser { name: "u".into() }]).expect("delete user");
    let snap = store.load().expect("load");
    assert_eq!(snap.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["w"]);
    assert_eq!(snap.permissions.iter().map(|p| p.user.as_str()).collect::<Vec<_>>(), ["w"]);
    assert!(snap.topic_permissions.is_empty());
    store
        .commit(&[
            StoreOp::DeletePermission { user: "w".into(), vhost: "/".into() },
            StoreOp::PutTopicPermission(TopicPermissionRecord {
                user: "w".into(),
                vhost: "/".into(),
                exchange: "t".into(),
                ..Default::default()
            }),
            StoreOp::DeleteTopicPermission { user: "w".into(), vhost: "/".into(), exchange: "t".into() },
        ])
        .expect("commit");
    let snap = store.load().expect("load");
    assert!(snap.permissions.is_empty() && snap.topic_permissions.is_empty());
}
