//! Application services over the cluster link: two real nodes on loopback.

use std::sync::Arc;
use std::time::Duration;

use haremq_raft::{NodeConfig, RaftNode};

const SECRET: &str = "cluster-secret";
const WAIT: Duration = Duration::from_secs(5);

async fn node(id: u64, secret: &str, dir: &std::path::Path) -> Arc<RaftNode> {
    let config = NodeConfig::new(id, "127.0.0.1:0".parse().unwrap(), secret, dir);
    RaftNode::start(config).await.expect("node starts")
}

#[test]
fn a_service_stream_carries_ordered_messages_between_authenticated_nodes() {
    smol::block_on(async {
        let (d1, d2, d3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (n1, n2) = (node(1, SECRET, d1.path()).await, node(2, SECRET, d2.path()).await);
        // Node 2 answers each number with (who asked, the number + 1), in order.
        n2.serve(
            "echo",
            Arc::new(|peer, stream| {
                smol::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    while let Ok(n) = r.recv::<u64>().await {
                        if w.send_all([&(peer, n + 1)]).await.is_err() {
                            return;
                        }
                    }
                })
                .detach();
            }),
        );
        let stream = n1.connect(2, n2.local_addr(), "echo", WAIT).await.expect("connect");
        assert_eq!(stream.peer(), 2);
        let (mut r, mut w) = stream.split();
        let numbers: Vec<u64> = (0..1000).collect();
        w.send_all(&numbers).await.expect("one batch");
        for n in 0..1000u64 {
            assert_eq!(r.recv::<(u64, u64)>().await.expect("answer"), (1, n + 1), "in order, from node 1");
        }
        // The wrong node at that address is refused.
        assert!(n1.connect(3, n2.local_addr(), "echo", WAIT).await.is_err(), "node 2 is not node 3");
        // A service nobody offers: the connection is closed.
        let stream = n1.connect(2, n2.local_addr(), "nothing", WAIT).await.expect("connect");
        let (mut r, _w) = stream.split();
        let closed = smol::future::or(async { r.recv::<u64>().await.is_err() }, async {
            smol::Timer::after(WAIT).await;
            false
        });
        assert!(closed.await, "an unknown service's connection is closed");
        // A node with another secret gets no stream.
        let stranger = node(3, "not-the-secret", d3.path()).await;
        assert!(stranger.connect(2, n2.local_addr(), "echo", WAIT).await.is_err(), "wrong secret refused");
        for n in [n1, n2, stranger] {
            n.shutdown().await;
        }
    })
}
