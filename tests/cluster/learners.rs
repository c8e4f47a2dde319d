//! A quorum queue through a node that is not one of its members: the node follows
//! the queue's log as a learner, so clients can publish to and consume from it there,
//! also when the node joined the cluster after the queue was declared.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

use super::definitions::{connect, get, publish};
use super::{wait_for, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_later_serves_the_existing_quorum_queues() {
    let mut c = TestCluster::start(3);
    {
        let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        ch.queue_declare("early".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .expect("declare quorum queue");
    }
    publish(&c.node(2).url(), "", "early", b"before node 4").await;

    c.add_node(4, 1, &[1, 2, 3, 4]);

    // Node 4 is not among the queue's 3 members, yet serves it.
    // It follows the queue's log: it knows the queue's 3 voters (it is not one).
    let members = wait_for("node 4 to follow the queue's log", || {
        let (code, q) = c.node(4).get("queues/%2F/early");
        let members: Vec<u64> = q["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m.as_str()?.split('@').next()?.strip_prefix("haremq-")?.parse().ok())
            .collect();
        (code == 200 && !members.is_empty()).then_some(members)
    });
    assert_eq!(members.len(), 3, "still replicated on 3 voters: {members:?}");
    assert!(!members.contains(&4), "node 4 is a learner, not a voter: {members:?}");
    let url4 = c.node(4).url();
    assert_eq!(get(&url4, "early").await, b"before node 4", "a message published before node 4 joined");
    publish(&url4, "", "early", b"through node 4").await;
    assert_eq!(get(&c.node(3).url(), "early").await, b"through node 4");
    // Declared through a non-member: declare-ok once the queue is served there too.
    let (_conn, ch) = connect(&url4).await.expect("connect to node 4");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(1));
    ch.queue_declare("single".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare a one-member quorum queue through node 4");
    for id in 1..=4 {
        publish(&c.node(id).url(), "", "single", format!("via {id}").as_bytes()).await;
    }
    for id in 1..=4 {
        assert_eq!(get(&url4, "single").await, format!("via {id}").into_bytes(), "in order");
    }
}
