//! Resource alarms are cluster-wide, as in RabbitMQ: while one node is low on disk (or
//! memory), publishers on every node are blocked.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

use super::definitions::connect;
use super::{wait_for, TestCluster, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_on_one_node_blocks_publishers_on_every_node() {
    let mut c = TestCluster::start(3);
    {
        let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
        ch.queue_declare(
            "alarmed".into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    }
    // Node 3 restarts wanting more free disk than any disk has: its alarm is raised.
    let config = c.node(3).dir.with_extension("toml");
    std::fs::write(&config, "disk_free_limit = 1000000000000000000\n").expect("write the config");
    c.node_mut(3).stop();
    c.node_mut(3).extra = vec!["--config".into(), config.display().to_string()];
    c.node_mut(3).start();
    c.wait_formed(&[1, 2, 3]);

    // A publisher on node 1 is blocked (its connection stops reading after a publish).
    let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let pending = ch
        .basic_publish("".into(), "alarmed".into(), BasicPublishOptions::default(), b"held", BasicProperties::default())
        .await
        .expect("publish");
    wait_for("node 1 to block its publisher for node 3's alarm", || {
        let (_, conns) = c.node(1).get("connections");
        conns.as_array()?.iter().any(|c| c["state"] == "blocked").then_some(())
    });

    // Node 3 back without the alarm: the publisher goes on and its publish is confirmed.
    c.node_mut(3).stop();
    c.node_mut(3).extra.clear();
    c.node_mut(3).start();
    let confirm = tokio::time::timeout(WAIT, pending).await.expect("confirmed in time").expect("confirm");
    assert!(confirm.is_ack());
    wait_for("node 1's publisher to run again", || {
        let (_, conns) = c.node(1).get("connections");
        conns.as_array()?.iter().all(|c| c["state"] != "blocked").then_some(())
    });
    let _ = std::fs::remove_file(config);
}
