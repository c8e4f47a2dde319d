//! Replicated definitions: vhosts, users and permissions made through one node's
//! management API, exchanges and bindings made through another node's AMQP, hold on
//! every node; a node that was down catches up when it comes back.

use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;

use super::{http, TestCluster, WAIT};

pub(super) async fn connect(url: &str) -> Option<(Connection, lapin::Channel)> {
    let conn =
        tokio::time::timeout(WAIT, Connection::connect(url, ConnectionProperties::default())).await.ok()?.ok()?;
    let ch = conn.create_channel().await.ok()?;
    Some((conn, ch))
}

/// Retries `f` every 50 ms until it gives Some (the change reached that node), or
/// panics after [`WAIT`].
pub(super) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether exchange `name` exists on the node at `url` (a passive declare).
async fn has_exchange(url: &str, name: &str) -> bool {
    let (_conn, ch) = connect(url).await.expect("connect");
    let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
    ch.exchange_declare(name.into(), ExchangeKind::Direct, passive, FieldTable::default()).await.is_ok()
}

/// Publishes `body` to `exchange` with `key` through `url` and waits for its confirm.
pub(super) async fn publish(url: &str, exchange: &str, key: &str, body: &[u8]) {
    let (_conn, ch) = connect(url).await.expect("connect");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    let props = BasicProperties::default().with_delivery_mode(2);
    let confirm = ch
        .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "publish to '{exchange}' with '{key}' confirmed");
}

/// The next message of `queue` through `url`, waiting for one to arrive.
pub(super) async fn get(url: &str, queue: &str) -> Vec<u8> {
    let (_conn, ch) = connect(url).await.expect("connect");
    eventually(&format!("a message in '{queue}'"), || {
        let ch = ch.clone();
        async move {
            let m = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.ok()??;
            Some(m.delivery.data)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_made_through_any_node_hold_on_every_node() {
    let mut c = TestCluster::start(3);
    let urls: Vec<String> = (1..=3).map(|id| c.node(id).url()).collect();

    // A vhost, a user and its permissions, each through another node's API.
    assert_eq!(http("PUT", &c.node(1).api("vhosts/team"), Some(json!({}))).0, 201);
    assert_eq!(http("PUT", &c.node(2).api("users/alice"), Some(json!({"password": "s3cret", "tags": ""}))).0, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert!(http("PUT", &c.node(3).api("permissions/team/alice"), Some(all)).0 < 300);
    for id in 1..=3 {
        let alice = format!("amqp://alice:s3cret@{}/team", c.node(id).amqp.expect("running"));
        eventually(&format!("alice to log in to 'team' on node {id}"), || connect(&alice)).await;
    }

    // Exchanges and a quorum queue's binding through node 2's AMQP.
    {
        let (_conn, ch) = connect(&urls[1]).await.expect("connect to node 2");
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare("orders".into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .expect("declare topic exchange");
        ch.exchange_declare("all".into(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .expect("declare fanout exchange");
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        ch.queue_declare("orders-q".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .expect("declare quorum queue");
        ch.queue_bind(
            "orders-q".into(),
            "orders".into(),
            "eu.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the quorum queue");
        ch.exchange_bind(
            "orders".into(),
            "all".into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind exchange to exchange");
        // An inequivalent redeclare is refused as on a single node.
        let err = ch
            .exchange_declare("orders".into(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .expect_err("inequivalent redeclare");
        assert!(err.to_string().contains("inequivalent arg 'type'"), "{err}");
    }
    for url in &urls {
        eventually("the exchanges on every node", || async {
            (has_exchange(url, "orders").await && has_exchange(url, "all").await).then_some(())
        })
        .await;
    }
    // Routed the same way everywhere: published through node 3, read through node 1.
    publish(&urls[2], "orders", "eu.de", b"via topic").await;
    assert_eq!(get(&urls[0], "orders-q").await, b"via topic");
    publish(&urls[0], "all", "eu.fr", b"via fanout").await;
    assert_eq!(get(&urls[1], "orders-q").await, b"via fanout");

    // A policy and a quorum queue through the HTTP API of other nodes.
    let policy = json!({"pattern": "^orders", "definition": {"max-length": 100}, "apply-to": "queues"});
    assert!(http("PUT", &c.node(1).api("policies/%2F/cap"), Some(policy)).0 < 300);
    let queue = json!({"durable": true, "arguments": {"x-queue-type": "quorum"}});
    assert_eq!(http("PUT", &c.node(2).api("queues/%2F/http-qq"), Some(queue)).0, 201);
    super::wait_for("the policy and the queue on every node", || {
        (1..=3)
            .all(|id| {
                let (code, q) = c.node(id).get("queues/%2F/http-qq");
                code == 200 && q["type"] == "quorum" && c.node(id).get("policies/%2F/cap").0 == 200
            })
            .then_some(())
    });
    assert!(http("DELETE", &c.node(3).api("queues/%2F/http-qq"), None).0 < 300);
    assert!(http("DELETE", &c.node(3).api("policies/%2F/cap"), None).0 < 300);
    super::wait_for("the queue and the policy gone everywhere", || {
        (1..=3)
            .all(|id| c.node(id).get("queues/%2F/http-qq").0 == 404 && c.node(id).get("policies/%2F/cap").0 == 404)
            .then_some(())
    });

    // Node 3 misses changes while it is down and catches up when it is back.
    c.node_mut(3).kill9();
    {
        let (_conn, ch) = connect(&urls[0]).await.expect("connect to node 1");
        ch.exchange_declare(
            "late".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare while node 3 is down");
        ch.exchange_delete("all".into(), ExchangeDeleteOptions::default()).await.expect("delete 'all'");
    }
    assert!(http("DELETE", &c.node(2).api("users/alice"), None).0 < 300);
    c.node_mut(3).start();
    let url3 = c.node(3).url();
    eventually("node 3 to learn of 'late'", || async { has_exchange(&url3, "late").await.then_some(()) }).await;
    eventually("node 3 to forget 'all'", || async { (!has_exchange(&url3, "all").await).then_some(()) }).await;
    let alice3 = format!("amqp://alice:s3cret@{}/team", c.node(3).amqp.expect("running"));
    eventually("alice to be refused on node 3", || async { connect(&alice3).await.is_none().then_some(()) }).await;
    publish(&url3, "orders", "eu.it", b"after the restart").await;
    assert_eq!(get(&urls[1], "orders-q").await, b"after the restart");
}

/// A node restarting replays its metadata log: a vhost deleted and created again
/// earlier in that log must not take the classic queue (and its messages) made in
/// the new vhost since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_replay_a_deletion_over_what_came_after() {
    let mut c = TestCluster::start(3);
    let api = |path: &str| c.node(1).api(path);
    assert_eq!(http("PUT", &api("vhosts/v"), Some(json!({}))).0, 201);
    assert!(http("DELETE", &api("vhosts/v"), None).0 < 300);
    assert_eq!(http("PUT", &api("vhosts/v"), Some(json!({}))).0, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert!(http("PUT", &api("permissions/v/guest"), Some(all)).0 < 300);
    let url2 = format!("amqp://guest:guest@{}/v", c.node(2).amqp.expect("running"));
    let (_conn, ch) = eventually("guest to log in to 'v' on node 2", || connect(&url2)).await;
    ch.queue_declare("keep".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare a classic queue");
    drop(ch);
    publish(&url2, "", "keep", b"kept").await;
    c.node_mut(2).stop();
    c.node_mut(2).start();
    let url2 = format!("amqp://guest:guest@{}/v", c.node(2).amqp.expect("running"));
    assert_eq!(get(&url2, "keep").await, b"kept", "the classic queue and its message survived the replay");
}

/// A node that was away while the log was truncated catches up from a snapshot, and
/// the snapshot's deletions (tombstones) take what was deleted meanwhile from it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_a_snapshot_loses_what_was_deleted_while_it_was_away() {
    let mut c = TestCluster::start_with(3, &["--cluster-snapshot-every", "20"]);
    let (api1, api2) = (c.node(1).api(""), c.node(2).api(""));
    assert_eq!(http("PUT", &format!("{api1}users/bob"), Some(json!({"password": "pw", "tags": ""}))).0, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert!(http("PUT", &format!("{api1}permissions/%2F/bob"), Some(all)).0 < 300);
    {
        let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
        ch.exchange_declare(
            "old".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare 'old'");
    }
    let param = |api: &str, name: &str| format!("{api}global-parameters/{name}");
    assert_eq!(http("PUT", &param(&api1, "region"), Some(json!({"value": "eu"}))).0, 201);
    let bob3 = format!("amqp://bob:pw@{}/%2f", c.node(3).amqp.expect("running"));
    eventually("bob to log in on node 3", || connect(&bob3)).await;
    let api3 = c.node(3).api("");
    super::wait_for("node 3 to have the global parameter", || {
        (super::http("GET", &param(&api3, "region"), None).1["value"] == "eu").then_some(())
    });
    let url3 = c.node(3).url();
    eventually("node 3 to have 'old'", || async { has_exchange(&url3, "old").await.then_some(()) }).await;

    c.node_mut(3).kill9();
    assert!(http("DELETE", &format!("{api2}users/bob"), None).0 < 300);
    assert!(http("DELETE", &param(&api2, "region"), None).0 < 300);
    assert_eq!(http("PUT", &param(&api2, "tier"), Some(json!({"value": {"level": 2}}))).0, 201);
    {
        let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
        ch.exchange_delete("old".into(), ExchangeDeleteOptions::default()).await.expect("delete 'old'");
        // Enough entries for the leader to snapshot and truncate its log past them.
        for i in 0..60 {
            ch.exchange_declare(
                format!("filler-{i}").as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare a filler");
        }
    }
    c.node_mut(3).start();
    let url3 = c.node(3).url();
    eventually("node 3 to catch up", || async { has_exchange(&url3, "filler-59").await.then_some(()) }).await;
    eventually("node 3 to forget 'old'", || async { (!has_exchange(&url3, "old").await).then_some(()) }).await;
    let bob3 = format!("amqp://bob:pw@{}/%2f", c.node(3).amqp.expect("running"));
    eventually("bob to be refused on node 3", || async { connect(&bob3).await.is_none().then_some(()) }).await;
    let api3 = c.node(3).api("");
    assert_eq!(http("GET", &param(&api3, "region"), None).0, 404, "cleared while node 3 was away");
    assert_eq!(http("GET", &param(&api3, "tier"), None).1["value"]["level"], 2, "set while node 3 was away");
}

/// A definitions file imported through one node's API holds on every node: its
/// exchanges and bindings replicate, its quorum queue is replicated and its classic
/// queue lives on the importing node and is served by all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_imported_through_one_node_hold_on_every_node() {
    let c = TestCluster::start(3);
    let defs = json!({
        "exchanges": [{"name": "imp-x", "vhost": "/", "type": "fanout", "durable": true,
                       "auto_delete": false, "internal": false, "arguments": {}}],
        "queues": [
            {"name": "imp-q", "vhost": "/", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "quorum"}},
            {"name": "imp-c", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}
        ],
        "bindings": [
            {"source": "imp-x", "vhost": "/", "destination": "imp-q", "destination_type": "queue",
             "routing_key": "", "arguments": {}},
            {"source": "imp-x", "vhost": "/", "destination": "imp-c", "destination_type": "queue",
             "routing_key": "", "arguments": {}}
        ]
    });
    let (code, reply) = http("POST", &c.node(2).api("definitions"), Some(defs));
    assert!(code < 300, "import through node 2: {code} {reply}");
    let (_, q) = c.node(2).get("queues/%2F/imp-q");
    assert_eq!(q["type"], "quorum", "a replicated quorum queue, not a local stand-in: {q}");
    let url3 = c.node(3).url();
    eventually("node 3 to have the exchange", || async { has_exchange(&url3, "imp-x").await.then_some(()) }).await;
    eventually("node 3 to route to both queues", || async {
        let (_conn, ch) = connect(&url3).await?;
        let q = ch
            .queue_declare(
                "imp-c".into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .ok()?;
        (q.message_count() == 0).then_some(())
    })
    .await;
    publish(&url3, "imp-x", "", b"imported").await;
    assert_eq!(get(&c.node(1).url(), "imp-q").await, b"imported");
    assert_eq!(get(&c.node(1).url(), "imp-c").await, b"imported");
    let (_, cq) = c.node(1).get("queues/%2F/imp-c");
    assert!(cq["node"].as_str().is_some_and(|n| n.starts_with("haremq-2@")), "the importing node is its home: {cq}");
}
