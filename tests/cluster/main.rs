//! Issue 15: clusters of real `haremq` processes on loopback. Every cluster link goes
//! through a test proxy (`proxy.rs`) so a test can partition a node for real.
//!
//! Each test starts its own nodes on ephemeral ports and data directories and waits on
//! conditions (with deadlines), never on sleeps alone.

mod alarms;
mod classic;
mod definitions;
mod learners;
mod lifecycle;
mod proxy;
mod quorum;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use proxy::Proxy;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "test-cluster-secret";

/// A port for a node's listener, which the node binds later. Taken below the
/// kernel's ephemeral range (32768+ on Linux): a port asked of the kernel (bind to 0)
/// and released could be handed to the next bind-to-0 — a proxy or a client of another
/// test running in parallel — before the node binds it ("address already in use").
/// Ports here are never handed out by the kernel; each is checked free and given once
/// per process, starting at a place that depends on the process id.
fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "haremq-cluster-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Polls `f` every 50 ms until it returns Some, or panics after [`WAIT`] with `what`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP request to a node's management API as guest; (status, JSON body or Null).
fn http(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(40)))
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .header("content-type", "application/json");
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    match agent.run(req.body(text).expect("request")) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&body).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// One `haremq` process of a test cluster.
struct Node {
    id: u64,
    child: Option<Child>,
    dir: PathBuf,
    cluster_port: u16,
    management_port: u16,
    /// `--peer` arguments: how this node reaches each other node.
    peers: Vec<String>,
    /// The AMQP listener of the running process.
    amqp: Option<SocketAddr>,
    /// More command-line arguments.
    extra: Vec<String>,
}

impl Node {
    fn new(id: u64, peers: Vec<String>) -> Node {
        Node {
            id,
            child: None,
            dir: temp_dir(&format!("n{id}")),
            cluster_port: free_port(),
            management_port: free_port(),
            peers,
            amqp: None,
            extra: Vec::new(),
        }
    }

    fn cluster_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.cluster_port))
    }

    /// Starts (or restarts) the process and waits until its AMQP listener is up.
    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_haremq"));
        cmd.args(["--listen", "127.0.0.1:0", "--prometheus", "", "--management"])
            .arg(format!("127.0.0.1:{}", self.management_port))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--node-id", &self.id.to_string(), "--cluster-listen"])
            .arg(self.cluster_addr().to_string())
            .args(["--cluster-secret", SECRET]);
        for p in &self.peers {
            cmd.args(["--peer", p]);
        }
        cmd.args(&self.extra);
        let mut child = cmd
            .env("RUST_LOG", "info,haremq_raft=info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haremq");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let id = self.id;
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.split("HareMQ listening on ").nth(1) {
                        let _ = tx.send(addr.trim().to_string());
                        sent = true;
                    }
                }
                eprintln!("[node {id}] {line}");
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("node starts listening");
        self.amqp = Some(addr.parse().expect("AMQP address"));
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + WAIT;
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("node {} did not exit after SIGTERM", self.id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.amqp.expect("running"))
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/{path}", self.management_port)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &self.api(path), None)
    }

    /// `/api/cluster` if the node answers.
    fn status(&self) -> Option<Value> {
        let (code, v) = self.get("cluster");
        (code == 200).then_some(v)
    }

    fn voters(&self) -> Option<Vec<u64>> {
        let s = self.status()?;
        let mut v: Vec<u64> =
            s["nodes"].as_array()?.iter().filter(|n| n["voter"] == true).filter_map(|n| n["id"].as_u64()).collect();
        v.sort_unstable();
        Some(v)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// N nodes whose every directed cluster link runs through its own proxy.
struct TestCluster {
    nodes: Vec<Node>,
    /// links[(from, to)]: the proxy `from` dials to reach `to`.
    links: Vec<((u64, u64), Proxy)>,
}

impl TestCluster {
    fn start(n: u64) -> TestCluster {
        Self::start_with(n, &[])
    }

    /// [`start`](Self::start) with more arguments for every node.
    fn start_with(n: u64, extra: &[&str]) -> TestCluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut links = Vec::new();
        let mut nodes = Vec::new();
        for from in 1..=n {
            let mut peers = Vec::new();
            for to in (1..=n).filter(|to| *to != from) {
                let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], ports[to as usize - 1])));
                peers.push(format!("{to}@{}", proxy.addr()));
                links.push(((from, to), proxy));
            }
            let mut node = Node::new(from, peers);
            node.cluster_port = ports[from as usize - 1];
            node.extra = extra.iter().map(|a| a.to_string()).collect();
            nodes.push(node);
        }
        for node in &mut nodes {
            node.start();
        }
        let c = TestCluster { nodes, links };
        c.wait_formed(&(1..=n).collect::<Vec<_>>());
        c
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("node")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    /// Waits until every node in `ids` reports the same leader (one of `ids`), a
    /// majority and the voters `ids`; returns the leader.
    fn wait_formed(&self, ids: &[u64]) -> u64 {
        wait_for(&format!("nodes {ids:?} to agree on a leader"), || {
            let mut leader = None;
            for id in ids {
                let s = self.node(*id).status()?;
                if s["has_quorum"] != true || self.node(*id).voters()? != ids {
                    return None;
                }
                let l = s["leader"].as_u64()?;
                if leader.is_some_and(|x| x != l) || !ids.contains(&l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
    }

    /// Starts node `id` knowing the founders 1-3 directly (so it never starts a
    /// cluster of its own), adds it through node `via`'s API (forwarded if `via` does
    /// not lead) and waits until `members` agree.
    fn add_node(&mut self, id: u64, via: u64, members: &[u64]) {
        let peers = (1..=3).map(|f| format!("{f}@{}", self.node(f).cluster_addr())).collect();
        let mut node = Node::new(id, peers);
        node.start();
        let addr = node.cluster_addr();
        self.nodes.push(node);
        let body = serde_json::json!({"id": id, "address": addr.to_string()});
        let (code, reply) = http("POST", &self.node(via).api("cluster/nodes"), Some(body));
        assert_eq!(code, 204, "{reply}");
        self.wait_formed(members);
    }

    /// Freezes (or thaws) every link to and from `id`: no bytes, no resets.
    fn freeze(&self, id: u64, frozen: bool) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.freeze(frozen);
            }
        }
    }

    /// Cuts (or heals) every link to and from `id`.
    fn partition(&self, id: u64, cut: bool) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                if cut {
                    proxy.cut()
                } else {
                    proxy.heal()
                }
            }
        }
    }
}

fn leader_of(node: &Node) -> Option<u64> {
    node.status()?["leader"].as_u64()
}

#[test]
fn three_nodes_form_a_cluster_and_know_each_other() {
    let c = TestCluster::start(3);
    // Each node announced its listeners through the metadata group: node 3 knows
    // where node 1's AMQP listener is.
    let nodes = wait_for("node 3 to list every node with its AMQP listener", || {
        let (code, nodes) = c.node(3).get("nodes");
        let list = nodes.as_array()?.clone();
        let announced = list.iter().filter(|n| n["listeners"].as_array().is_some_and(|l| !l.is_empty())).count();
        (code == 200 && list.len() == 3 && announced == 3).then_some(list)
    });
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.starts_with("haremq-1@")), "{names:?}");
    assert!(nodes.iter().all(|n| n["running"] == true || n["running"].is_null()), "{nodes:?}");
    for id in 1..=3 {
        let (code, body) = c.node(id).get("health/checks/node-is-quorum-critical");
        assert_eq!(code, 200, "node {id}: {body}");
        let (code, body) = c.node(id).get("health/checks/alarms");
        assert_eq!(code, 200, "node {id}: {body}");
    }
}

#[test]
fn killing_the_leader_elects_another_within_two_seconds() {
    let mut c = TestCluster::start(3);
    let old = c.wait_formed(&[1, 2, 3]);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    c.node_mut(old).kill9();
    let killed = Instant::now();
    let new = wait_for("a new leader among the survivors", || {
        let l = leader_of(c.node(survivors[0]))?;
        let s1 = c.node(survivors[1]).status()?;
        (l != old && s1["leader"].as_u64() == Some(l) && s1["has_quorum"] == true).then_some(l)
    });
    let failover = killed.elapsed();
    eprintln!("FAILOVER: node {old} killed, node {new} leads after {} ms", failover.as_millis());
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    // Two of three voters up: stopping either would cost the majority (the leader,
    // which hears from every member, notices the dead one is silent).
    let body = wait_for("node-is-quorum-critical to fail on the new leader", || {
        let (code, body) = c.node(new).get("health/checks/node-is-quorum-critical");
        (code == 503).then_some(body)
    });
    assert_eq!(body["status"], "failed");
    // So would stopping the follower: it asks the leader, which knows the dead node
    // is silent (a follower hears only from the leader).
    let follower = survivors.iter().copied().find(|id| *id != new).expect("a follower");
    let (code, body) = c.node(follower).get("health/checks/node-is-quorum-critical");
    assert_eq!(code, 503, "node-is-quorum-critical on the follower: {body}");
    // The killed node comes back and catches up.
    c.node_mut(old).start();
    c.wait_formed(&[1, 2, 3]);
    wait_for("node-is-quorum-critical to pass again", || {
        (c.node(new).get("health/checks/node-is-quorum-critical").0 == 200).then_some(())
    });
}

#[test]
fn a_partitioned_minority_says_so_and_catches_up_after_healing() {
    let c = TestCluster::start(3);
    let leader = c.wait_formed(&[1, 2, 3]);
    // Cut the leader off: the minority is the old leader itself.
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    c.partition(leader, true);
    wait_for("the cut-off node to report the lost majority", || {
        let (code, body) = c.node(leader).get("health/checks/alarms");
        let raised = body["alarms"].as_array()?.iter().any(|a| a["resource"] == "cluster_majority");
        (code == 503 && raised).then_some(())
    });
    let new = wait_for("the majority to elect a leader of its own", || {
        let l = leader_of(c.node(majority[0]))?;
        let s = c.node(majority[1]).status()?;
        (majority.contains(&l) && s["leader"].as_u64() == Some(l) && s["has_quorum"] == true).then_some(l)
    });
    assert_ne!(new, leader);
    for id in &majority {
        assert_eq!(c.node(*id).get("health/checks/alarms").0, 200, "node {id} is in the majority");
    }
    assert_eq!(c.node(leader).status().expect("status")["has_quorum"], false);
    c.partition(leader, false);
    wait_for("the healed node to rejoin the majority", || {
        let s = c.node(leader).status()?;
        (s["has_quorum"] == true && s["leader"].as_u64() == Some(new)).then_some(())
    });
    assert_eq!(c.node(leader).get("health/checks/alarms").0, 200);
}

#[test]
fn a_restarted_cluster_keeps_its_membership() {
    let mut c = TestCluster::start(3);
    c.wait_formed(&[1, 2, 3]);
    for id in 1..=3 {
        c.node_mut(id).stop();
    }
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    c.wait_formed(&[1, 2, 3]);
    wait_for("the announcements to be there after the restart", || {
        let (_, nodes) = c.node(2).get("nodes");
        let list = nodes.as_array()?;
        list.iter().all(|n| n["listeners"].as_array().is_some_and(|l| !l.is_empty())).then_some(())
    });
}

#[test]
fn a_fourth_node_joins_and_a_founder_leaves() {
    let mut c = TestCluster::start(3);
    c.wait_formed(&[1, 2, 3]);
    // Through a node that may not lead: the change is forwarded.
    c.add_node(4, 2, &[1, 2, 3, 4]);
    let (code, body) = http("DELETE", &c.node(3).api("cluster/nodes/1"), None);
    assert_eq!(code, 204, "{body}");
    wait_for("nodes 2-4 to agree without node 1", || {
        let ids = [2, 3, 4];
        ids.iter().all(|id| c.node(*id).voters().as_deref() == Some(&ids[..])).then_some(())
    });
    c.wait_formed(&[2, 3, 4]);
    let (code, _) = http("DELETE", &c.node(3).api("cluster/nodes/9"), None);
    assert_eq!(code, 404, "an unknown node");
}

#[test]
fn a_single_node_is_not_a_cluster() {
    let mut n = Node::new(1, Vec::new());
    // Started without any cluster flag.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_haremq"));
    cmd.args(["--listen", "127.0.0.1:0", "--prometheus", "", "--management"])
        .arg(format!("127.0.0.1:{}", n.management_port))
        .arg("--data-dir")
        .arg(&n.dir);
    n.child = Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"));
    let (code, body) = wait_for("the API", || {
        let r = n.get("cluster");
        (r.0 != 0).then_some(r)
    });
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"], "not_clustered");
    let (code, nodes) = n.get("nodes");
    assert_eq!(code, 200);
    assert_eq!(nodes.as_array().map(Vec::len), Some(1));
    assert!(nodes[0]["name"].as_str().is_some_and(|s| s.starts_with("haremq@")), "{nodes}");
    assert_eq!(n.get("health/checks/node-is-quorum-critical").0, 200);
}
