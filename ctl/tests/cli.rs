//! `haremqctl` as scripts run it: the real binary against a real in-process broker whose
//! management API listens on an ephemeral loopback port; its output (the JSON format
//! parsed), its standard error and its exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod raw_amqp;

/// The exit codes `haremqctl --help` documents.
const USAGE: i32 = 2;
const LOCAL: i32 = 1;
const UNREACHABLE: i32 = 3;
const AUTHENTICATION: i32 = 4;
const NOT_FOUND: i32 = 5;
const CLIENT: i32 = 6;
const SERVER: i32 = 7;

/// A broker for one test; dropping it stops the broker and removes its data directory.
struct Broker {
    handle: Option<haremq::BrokerHandle>,
    dir: PathBuf,
    api: SocketAddr,
    amqp: SocketAddr,
}

impl Broker {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A broker whose configuration the test adjusts first.
    fn start_with(adjust: impl FnOnce(&mut haremq::Config)) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "haremqctl-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut config = haremq::Config {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            management: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: dir.clone(),
            ..Default::default()
        };
        adjust(&mut config);
        let handle = haremq::start(config).expect("broker starts");
        let api = handle.management_addr().expect("management API listening");
        let amqp = handle.local_addr();
        Broker { handle: Some(handle), dir, api, amqp }
    }

    /// Runs `haremqctl --port PORT ARGS...` as guest.
    fn ctl(&self, args: &[&str]) -> Run {
        let port = self.api.port().to_string();
        let mut all = vec!["--host", "127.0.0.1", "--port", &port];
        all.extend_from_slice(args);
        ctl(&all)
    }

    /// The same with `--format json`, which must succeed; its output parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        self.ctl(&all).ok().json()
    }

    fn temp_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One run of the binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit code 0 and nothing on standard error.
    fn ok(self) -> Self {
        assert_eq!((self.code, self.stderr.as_str()), (0, ""), "{self:?}");
        self
    }

    /// Asserts a failure with this exit code and a one-line message on standard error.
    fn fails(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.starts_with("haremqctl: ") || code == USAGE, "{self:?}");
        if code != USAGE {
            assert_eq!(self.stderr.lines().count(), 1, "one line on stderr: {self:?}");
        }
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

fn ctl(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_haremqctl"))
        .args(["--timeout", "30"])
        .args(args)
        .output()
        .expect("haremqctl runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// The object of a JSON list whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array().expect("a JSON list").iter().find(|o| o["name"] == name)
}

/// Polls `condition` until it holds or 10 s passed.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_and_usage_errors() {
    let help = ctl(&["--help"]).ok();
    for text in ["list", "declare", "--base-uri", "--format", "Exit codes", "broker unreachable"] {
        assert!(help.stdout.contains(text), "--help mentions {text}: {}", help.stdout);
    }
    let help = ctl(&["declare", "queue", "--help"]).ok();
    assert!(help.stdout.contains("--auto-delete") && help.stdout.contains("--arguments"), "{}", help.stdout);
    assert!(ctl(&["get", "messages", "--help"]).ok().stdout.contains("ack_requeue_false"));

    let unknown = ctl(&["list", "nonsense"]).fails(USAGE);
    assert!(unknown.stderr.contains("nonsense"), "{unknown:?}");
    ctl(&["declare", "queue", "--name", "q", "--arguments", "[1]"]).fails(USAGE);
    ctl(&["declare", "queue"]).fails(USAGE);
    let https = ctl(&["--base-uri", "https://127.0.0.1:1", "list", "queues"]).fails(USAGE);
    assert!(https.stderr.contains("https"), "{https:?}");
}

#[test]
fn a_broker_that_is_not_listening_exits_3() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port().to_string()
    };
    let run = ctl(&["--port", &port, "list", "queues"]).fails(UNREACHABLE);
    assert!(run.stderr.contains("broker unreachable at http://127.0.0.1:"), "{run:?}");
    assert_eq!(run.stdout, "");
}

#[test]
fn a_wrong_password_exits_4_with_rabbitmqs_reason() {
    let broker = Broker::start();
    let run = broker.ctl(&["--password", "wrong", "list", "queues"]).fails(AUTHENTICATION);
    assert!(run.stderr.contains("authentication failed (401)"), "{run:?}");
    assert!(run.stderr.contains("Login failed"), "{run:?}");
    let run = broker.ctl(&["-u", "nobody", "-p", "x", "show", "overview"]).fails(AUTHENTICATION);
    assert!(run.stderr.contains("GET /api/overview"), "{run:?}");
}

#[test]
fn unknown_objects_exit_5() {
    let broker = Broker::start();
    let run = broker.ctl(&["--vhost", "no such vhost", "list", "queues"]).fails(NOT_FOUND);
    assert!(run.stderr.contains("not found (404) on GET /api/queues/no%20such%20vhost: Not Found"), "{run:?}");
    broker.ctl(&["delete", "user", "--name", "nobody"]).fails(NOT_FOUND);
    broker.ctl(&["delete", "vhost", "--name", "nowhere"]).fails(NOT_FOUND);
    let forgiven = broker.ctl(&["delete", "user", "--name", "nobody", "--idempotently"]).ok();
    assert!(forgiven.stdout.contains("no user 'nobody'"), "{forgiven:?}");
}

#[test]
fn vhosts_users_and_permissions_round_trip() {
    let broker = Broker::start();
    let done = broker.ctl(&["declare", "vhost", "--name", "shop/eu", "--description", "orders", "--tags", "prod"]).ok();
    assert_eq!(done.stdout, "declared vhost 'shop/eu'\n");
    let vhosts = broker.json(&["list", "vhosts"]);
    let shop = named(&vhosts, "shop/eu").expect("the new vhost is listed");
    assert_eq!(shop["description"], "orders");
    assert!(named(&vhosts, "/").is_some(), "{vhosts}");

    broker.ctl(&["declare", "user", "--name", "alice", "--password", "s3cret", "--tags", "management"]).ok();
    let users = broker.json(&["list", "users"]);
    assert_eq!(named(&users, "alice").expect("alice is listed")["tags"], json!(["management"]));
    broker
        .ctl(&[
            "--vhost",
            "shop/eu",
            "declare",
            "permissions",
            "--user",
            "alice",
            "--configure",
            "^a",
            "--write",
            ".*",
            "--read",
            "",
        ])
        .ok();
    let permissions = broker.json(&["--vhost", "shop/eu", "list", "permissions"]);
    assert_eq!(
        permissions,
        json!([{"user": "alice", "vhost": "shop/eu", "configure": "^a", "write": ".*", "read": ""}])
    );
    let all = broker.json(&["list", "permissions", "--all-vhosts"]);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "guest in / and alice in shop/eu: {all}");

    // The password works: alice logs in to the API (a management user may read).
    let overview = broker.json(&["-u", "alice", "-p", "s3cret", "show", "overview"]);
    assert_eq!(overview["product_name"], "HareMQ");

    let table = broker.ctl(&["--vhost", "shop/eu", "list", "permissions"]).ok();
    assert_eq!(table.stdout, "user   vhost    configure  write  read\nalice  shop/eu  ^a         .*\n");

    broker.ctl(&["--vhost", "shop/eu", "delete", "permissions", "--user", "alice"]).ok();
    assert_eq!(broker.json(&["--vhost", "shop/eu", "list", "permissions"]), json!([]));
    broker.ctl(&["delete", "user", "--name", "alice"]).ok();
    broker.ctl(&["delete", "vhost", "--name", "shop/eu"]).ok();
    assert!(named(&broker.json(&["list", "vhosts"]), "shop/eu").is_none());
    assert!(named(&broker.json(&["list", "users"]), "alice").is_none());
}

#[test]
fn listings_in_table_and_json() {
    let broker = Broker::start();
    let exchanges = broker.json(&["list", "exchanges"]);
    assert_eq!(named(&exchanges, "amq.topic").expect("amq.topic")["type"], "topic");
    let table = broker.ctl(&["list", "exchanges"]).ok();
    let mut lines = table.stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["vhost", "name", "type", "durable", "auto_delete", "internal", "arguments"]);
    let direct = lines.find(|l| l.split_whitespace().nth(1) == Some("amq.direct")).expect("an amq.direct row");
    assert_eq!(
        direct.split_whitespace().collect::<Vec<_>>(),
        ["/", "amq.direct", "direct", "true", "false", "false", "{}"]
    );

    assert_eq!(broker.json(&["list", "queues"]), json!([]));
    assert_eq!(broker.ctl(&["list", "queues"]).ok().stdout.lines().count(), 1, "only the header");
    assert!(broker.json(&["list", "bindings", "--all-vhosts"]).is_array());
    assert!(broker.json(&["list", "users"]).is_array());
}

#[test]
fn overview_alarms_and_health() {
    let broker = Broker::start();
    let overview = broker.json(&["show", "overview"]);
    assert_eq!(overview["product_name"], "HareMQ");
    assert!(overview["object_totals"]["exchanges"].as_u64().is_some_and(|n| n == 6), "{overview}");
    let table = broker.ctl(&["show", "overview"]).ok();
    assert!(table.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["product", "HareMQ"]));

    assert_eq!(broker.json(&["show", "alarms"]), json!([]));
    let checks = broker.json(&["show", "health"]);
    let names: Vec<&Value> = checks.as_array().expect("a list").iter().map(|c| &c["check"]).collect();
    assert_eq!(
        names,
        ["alarms", "local-alarms", "virtual-hosts", "node-is-quorum-critical", "node-is-mirror-sync-critical"]
    );
    assert!(checks.as_array().expect("a list").iter().all(|c| c["status"] == "ok"), "{checks}");
    let table = broker.ctl(&["show", "health", "--check", "alarms"]).ok();
    assert_eq!(table.stdout, "check   status  reason\nalarms  ok\n");

    // Listener checks: the AMQP port is listened on, a port nobody uses is not.
    let port = broker.amqp.port().to_string();
    broker.ctl(&["show", "health", "--check", "alarms", "--port-listener", &port, "--protocol-listener", "amqp"]).ok();
    let run = broker.ctl(&["show", "health", "--port-listener", "1"]).fails(SERVER);
    assert!(run.stderr.contains("server error (503) on GET /api/health/checks/port-listener/1"), "{run:?}");
    let last: Vec<&str> = run.stdout.lines().last().expect("rows").split_whitespace().collect();
    assert_eq!(last, ["port-listener/1", "failed", "No", "active", "listener"], "{run:?}");
}

#[test]
fn an_alarm_is_listed_and_fails_the_health_check() {
    // No filesystem has this much free space: the disk alarm goes off once the broker
    // has measured.
    let broker = Broker::start_with(|c| c.disk_free_limit = 1 << 62);
    wait_until("the disk alarm", || broker.json(&["show", "alarms"]).as_array().is_some_and(|a| !a.is_empty()));
    let alarms = broker.json(&["show", "alarms"]);
    assert_eq!(alarms[0]["resource"], "disk", "{alarms}");
    let table = broker.ctl(&["show", "alarms"]).ok();
    assert!(table.stdout.starts_with("node") && table.stdout.contains("disk"), "{table:?}");

    let run = broker.ctl(&["show", "health"]).fails(SERVER);
    assert!(run.stderr.contains("server error (503) on GET /api/health/checks/alarms: There are alarms"), "{run:?}");
    let row = |name: &str| {
        run.stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).map(|l| l.split_whitespace().nth(1))
    };
    assert_eq!(
        (row("alarms"), row("local-alarms"), row("virtual-hosts")),
        (Some(Some("failed")), Some(Some("failed")), Some(Some("ok"))),
        "{run:?}"
    );
}

#[test]
fn definitions_export_and_import() {
    let broker = Broker::start();
    broker.ctl(&["declare", "vhost", "--name", "exported"]).ok();
    let file = broker.temp_file("definitions.json");
    let file = file.to_str().expect("UTF-8 path");
    broker.ctl(&["export", "definitions", "--file", file]).ok();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("file written")).expect("JSON");
    assert!(named(&written["vhosts"], "exported").is_some(), "{written}");
    let to_stdout = broker.ctl(&["export", "definitions"]).ok().json();
    assert_eq!(to_stdout["vhosts"], written["vhosts"]);

    broker.ctl(&["delete", "vhost", "--name", "exported"]).ok();
    assert!(named(&broker.json(&["list", "vhosts"]), "exported").is_none());
    broker.ctl(&["import", "definitions", "--file", file]).ok();
    assert!(named(&broker.json(&["list", "vhosts"]), "exported").is_some());

    // A file that is not JSON is refused before the broker sees it; one the broker
    // refuses exits 6 with its reason.
    let broken = broker.temp_file("broken.json");
    std::fs::write(&broken, "{not json").expect("write");
    let run = broker.ctl(&["import", "definitions", "--file", broken.to_str().unwrap()]).fails(LOCAL);
    assert!(run.stderr.contains("is not JSON"), "{run:?}");
    let missing = broker.temp_file("missing.json");
    broker.ctl(&["import", "definitions", "--file", missing.to_str().unwrap()]).fails(LOCAL);
    let refused = broker.temp_file("refused.json");
    std::fs::write(&refused, r#"{"permissions":[{"user":"ghost","vhost":"/","configure":"","write":"","read":""}]}"#)
        .expect("write");
    let run = broker.ctl(&["import", "definitions", "--file", refused.to_str().unwrap()]).fails(CLIENT);
    assert!(run.stderr.contains("client error (400) on POST /api/definitions: "), "{run:?}");
}

#[test]
fn base_uri_with_a_trailing_slash() {
    let broker = Broker::start();
    let base = format!("http://{}/", broker.api);
    let run = ctl(&["--base-uri", &base, "--format", "json", "list", "vhosts"]).ok();
    assert!(named(&run.json(), "/").is_some());
}

#[test]
fn connections_channels_consumers_and_close() {
    let broker = Broker::start();
    let mut client = raw_amqp::RawConnection::open(broker.amqp, "ctl-test-client");
    client.consume("work", "worker-1", 7);

    let connections = broker.json(&["list", "connections"]);
    let ours: Vec<&Value> = connections
        .as_array()
        .expect("a list")
        .iter()
        .filter(|c| c["client_properties"]["product"] == "ctl-test-client")
        .collect();
    assert_eq!(ours.len(), 1, "{connections}");
    assert_eq!(ours[0]["user"], "guest");
    let name = ours[0]["name"].as_str().expect("a name").to_string();
    assert!(broker.ctl(&["list", "connections"]).ok().stdout.contains(&name));

    let channels = broker.json(&["list", "channels"]);
    assert_eq!(channels[0]["prefetch_count"], 7, "{channels}");
    assert_eq!(channels[0]["consumer_count"], 1, "{channels}");
    let consumers = broker.json(&["list", "consumers"]);
    assert_eq!((&consumers[0]["consumer_tag"], &consumers[0]["queue"]["name"]), (&json!("worker-1"), &json!("work")));

    let done = broker.ctl(&["close", "connection", &name, "--reason", "maintenance"]).ok();
    assert_eq!(done.stdout, format!("closed connection '{name}'\n"));
    let (code, text) = client.closed_by_broker();
    assert_eq!(code, 320);
    assert!(text.contains("maintenance"), "{text}");
    wait_until("the connection to go", || broker.json(&["list", "connections"]) == json!([]));
    broker.ctl(&["close", "connection", &name]).fails(NOT_FOUND);
}
#[test]
fn queues_exchanges_and_bindings() {
    let broker = Broker::start();
    broker.ctl(&["declare", "exchange", "--name", "events", "--type", "topic"]).ok();
    let exchanges = broker.json(&["list", "exchanges"]);
    let events = named(&exchanges, "events").expect("the exchange is listed");
    assert_eq!((&events["type"], &events["durable"]), (&json!("topic"), &json!(true)));

    let done = broker.ctl(&["declare", "queue", "--name", "audit log", "--arguments", r#"{"x-max-length": 10}"#]).ok();
    assert_eq!(done.stdout, "declared queue 'audit log' in vhost '/'\n");
    let queues = broker.json(&["list", "queues"]);
    let audit = named(&queues, "audit log").expect("the queue is listed");
    assert_eq!((&audit["durable"], &audit["arguments"]["x-max-length"]), (&json!(true), &json!(10)), "{audit}");
    // Declaring it again the same way is fine; differently, RabbitMQ's 400 with its reason.
    broker.ctl(&["declare", "queue", "--name", "audit log", "--arguments", r#"{"x-max-length": 10}"#]).ok();
    let run = broker.ctl(&["declare", "queue", "--name", "audit log", "--durable", "false"]).fails(CLIENT);
    assert!(run.stderr.contains("client error (400) on PUT /api/queues/%2F/audit%20log: "), "{run:?}");
    assert!(run.stderr.contains("durable"), "{run:?}");

    broker
        .ctl(&["declare", "binding", "--source", "events", "--destination", "audit log", "--routing-key", "order.#"])
        .ok();
    let is_ours = |b: &Value| b["source"] == "events" && b["destination"] == "audit log";
    let bindings = broker.json(&["list", "bindings"]);
    let ours: Vec<&Value> = bindings.as_array().expect("a list").iter().filter(|b| is_ours(b)).collect();
    assert_eq!(ours.len(), 1, "{bindings}");
    assert_eq!((&ours[0]["routing_key"], &ours[0]["destination_type"]), (&json!("order.#"), &json!("queue")));

    let unbind = ["delete", "binding", "--source", "events", "--destination", "audit log", "--routing-key", "order.#"];
    broker.ctl(&unbind).ok();
    assert!(!broker.json(&["list", "bindings"]).as_array().expect("a list").iter().any(is_ours));
    let run = broker.ctl(&unbind).fails(NOT_FOUND);
    assert!(run.stderr.contains("not found: binding from exchange 'events' to queue 'audit log'"), "{run:?}");

    // A binding with arguments is found by them too (its properties key is a hash).
    let with_arguments = [
        "declare",
        "binding",
        "--source",
        "events",
        "--destination",
        "audit log",
        "--routing-key",
        "k",
        "--arguments",
        r#"{"x-match": "any", "n": 1}"#,
    ];
    broker.ctl(&with_arguments).ok();
    let mut delete = with_arguments;
    delete[0] = "delete";
    let mut other_arguments = delete;
    other_arguments[9] = r#"{"n": 2}"#;
    broker.ctl(&other_arguments).fails(NOT_FOUND);
    broker.ctl(&delete).ok();
    assert!(!broker.json(&["list", "bindings"]).as_array().expect("a list").iter().any(is_ours));

    broker.ctl(&["delete", "exchange", "--name", "events", "--if-unused"]).ok();
    broker.ctl(&["delete", "queue", "--name", "audit log"]).ok();
    assert_eq!(broker.json(&["list", "queues"]), json!([]));
    assert!(named(&broker.json(&["list", "exchanges"]), "events").is_none());
    broker.ctl(&["delete", "queue", "--name", "audit log"]).fails(NOT_FOUND);
    broker.ctl(&["delete", "exchange", "--name", "events"]).fails(NOT_FOUND);
    broker.ctl(&["delete", "queue", "--name", "audit log", "--idempotently"]).ok();
}

#[test]
fn publish_get_and_purge() {
    let broker = Broker::start();
    broker.ctl(&["declare", "queue", "--name", "inbox"]).ok();
    let routed = broker.json(&["publish", "message", "--routing-key", "inbox", "--payload", "first"]);
    assert_eq!(routed, json!({"routed": true}));
    let properties = r#"{"headers": {"k": "v"}, "delivery_mode": 2}"#;
    let run = broker
        .ctl(&[
            "publish",
            "message",
            "--exchange",
            "amq.direct",
            "--routing-key",
            "inbox",
            "--payload",
            "x",
            "--properties",
            properties,
        ])
        .ok();
    assert_eq!(run.stdout, "published, but not routed: no binding matched\n");
    broker
        .ctl(&["publish", "message", "--routing-key", "inbox", "--payload", "second", "--properties", properties])
        .ok();

    let got = broker.json(&["get", "messages", "--queue", "inbox", "--count", "5"]);
    let payloads: Vec<&Value> = got.as_array().expect("a list").iter().map(|m| &m["payload"]).collect();
    assert_eq!(payloads, [&json!("first"), &json!("second")], "{got}");
    assert_eq!(got[1]["properties"]["headers"]["k"], "v", "{got}");
    // ack_requeue_true (the default) put them back.
    let table = broker.ctl(&["get", "messages", "--queue", "inbox"]).ok();
    assert!(table.stdout.starts_with("exchange") && table.stdout.contains("first"), "{table:?}");

    let run = broker.ctl(&["delete", "queue", "--name", "inbox", "--if-empty"]).fails(CLIENT);
    assert!(run.stderr.contains("client error (400)"), "{run:?}");
    broker.ctl(&["purge", "queue", "--name", "inbox"]).ok();
    assert_eq!(broker.json(&["get", "messages", "--queue", "inbox"]), json!([]));
    broker.ctl(&["delete", "queue", "--name", "inbox", "--if-empty"]).ok();

    broker.ctl(&["get", "messages", "--queue", "inbox"]).fails(NOT_FOUND);
    broker.ctl(&["purge", "queue", "--name", "inbox"]).fails(NOT_FOUND);
    // RabbitMQ answers a publish to a missing exchange with 400 (the channel error's text).
    let run = broker.ctl(&["publish", "message", "--exchange", "nowhere", "--payload", "x"]).fails(CLIENT);
    assert!(run.stderr.contains("no exchange 'nowhere' in vhost '/'"), "{run:?}");
}

#[test]
fn cluster_status_of_a_one_node_cluster_and_of_a_single_node() {
    let single = Broker::start();
    let run = single.ctl(&["cluster", "status"]).fails(CLIENT);
    assert!(run.stderr.contains("this node is not part of a cluster"), "{run:?}");

    let node = Broker::start_with(|c| {
        c.cluster = Some(haremq::ClusterConfig {
            node_id: 7,
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            peers: Vec::new(),
            cluster_secret: "ctl-test".into(),
            snapshot_every: None,
        })
    });
    // A cluster of one elects itself.
    wait_until("the node to lead its cluster of one", || node.json(&["cluster", "status"])["leader"] == json!(7));
    let status = node.json(&["cluster", "status"]);
    assert_eq!(status["has_quorum"], true, "{status}");
    assert_eq!(status["nodes"][0]["id"], 7, "{status}");
    let table = node.ctl(&["cluster", "status"]).ok();
    assert!(table.stdout.starts_with("id  name"), "{table:?}");
    assert!(table.stdout.contains("haremq-7@"), "{table:?}");
    let run = node.ctl(&["cluster", "remove", "--id", "9"]).fails(NOT_FOUND);
    assert!(run.stderr.contains("404"), "{run:?}");
}
