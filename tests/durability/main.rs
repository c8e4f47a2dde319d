//! Durability tests against the real `haremq` binary: restart, SIGKILL at arbitrary
//! moments, the data-directory lock, a corrupt store and graceful SIGTERM.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

mod memory;
mod storefault;
mod streams;

const WAIT: Duration = Duration::from_secs(20);

/// A data directory removed when the test ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "haremq-dur-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker process.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    /// Starts `haremq` on an ephemeral port and waits for its "listening" line.
    fn start(dir: &Path) -> Broker {
        Self::start_with(dir, None)
    }

    /// [`Broker::start`] with a configuration file holding `config` (TOML).
    fn start_with(dir: &Path, config: Option<&str>) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_haremq"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(dir);
        if let Some(text) = config {
            std::fs::create_dir_all(dir).expect("data dir");
            let file = dir.join("test-config.toml");
            std::fs::write(&file, text).expect("write config");
            cmd.arg("--config").arg(file);
        }
        let mut child =
            cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn haremq");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        let _ = tx.send(addr.trim().to_string());
                        sent = true;
                    }
                }
                eprintln!("[broker] {line}");
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("broker reports its address");
        Broker { child, addr: addr.parse().expect("socket address") }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("broker did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(b: &Broker) -> (Connection, Channel) {
    let conn = tokio::time::timeout(WAIT, Connection::connect(&b.url(), ConnectionProperties::default()))
        .await
        .expect("connect in time")
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare(ch: &Channel, name: &str, durable: bool) {
    ch.queue_declare(name.into(), QueueDeclareOptions { durable, ..Default::default() }, FieldTable::default())
        .await
        .expect("queue.declare");
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// Drains a queue with basic.get; returns (body, redelivered) in order.
async fn drain_raw(ch: &Channel, queue: &str) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    while let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("get") {
        out.push((m.delivery.data.clone(), m.delivery.redelivered));
    }
    out
}

/// Like [`drain_raw`] for text bodies.
async fn drain(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    drain_raw(ch, queue).await.into_iter().map(|(b, r)| (String::from_utf8(b).expect("utf-8 body"), r)).collect()
}

async fn passive_exists(conn: &Connection, kind: &str, name: &str) -> bool {
    let ch = conn.create_channel().await.expect("channel");
    let r = match kind {
        "queue" => ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
        _ => {
            ch.exchange_declare(
                name.into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
        }
    };
    r.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_exactly_the_durable_state() {
    let dir = DataDir::new("restart");
    let b = Broker::start(&dir.0);
    {
        let (conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        ch.exchange_declare(
            "dur-x".into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("durable exchange");
        ch.exchange_declare(
            "tmp-x".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("transient exchange");
        declare(&ch, "dur-q", true).await;
        declare(&ch, "tmp-q", false).await;
        ch.queue_bind("dur-q".into(), "dur-x".into(), "a.*".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("bind");
        for i in 0..5 {
            publish(&ch, "dur-x", "a.b", format!("p{i}").as_bytes(), persistent()).await;
        }
        publish(&ch, "", "dur-q", b"transient-on-durable", BasicProperties::default()).await;
        publish(&ch, "", "tmp-q", b"persistent-on-transient", persistent()).await;
        // Deliver p0 and p1 without acking: they must come back as redelivered.
        let ch2 = conn.create_channel().await.expect("channel");
        let d0 = ch2.basic_get("dur-q".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("p0");
        let d1 = ch2.basic_get("dur-q".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("p1");
        assert_eq!((&d0.delivery.data[..], &d1.delivery.data[..]), (&b"p0"[..], &b"p1"[..]));
        // Ack p1: it must not come back.
        d1.delivery.ack(BasicAckOptions::default()).await.expect("ack");
        // Make sure the ack is processed before stopping (a synchronous round trip).
        ch2.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    }
    assert_eq!(b.terminate(), Some(0), "graceful shutdown exits 0");

    let b = Broker::start(&dir.0);
    let (conn, ch) = connect(&b).await;
    assert!(passive_exists(&conn, "exchange", "dur-x").await, "durable exchange survives");
    assert!(!passive_exists(&conn, "exchange", "tmp-x").await, "transient exchange is gone");
    assert!(passive_exists(&conn, "queue", "dur-q").await, "durable queue survives");
    assert!(!passive_exists(&conn, "queue", "tmp-q").await, "transient queue is gone");
    let got = drain(&ch, "dur-q").await;
    let expected: Vec<(String, bool)> =
        vec![("p0".into(), true), ("p2".into(), false), ("p3".into(), false), ("p4".into(), false)];
    assert_eq!(got, expected, "persistent messages survive in order; the delivered one is redelivered");
    // The binding survived too.
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    publish(&ch, "dur-x", "a.c", b"after", persistent()).await;
    assert_eq!(drain(&ch, "dur-q").await, vec![("after".to_string(), false)]);
}

/// Publishes numbered persistent messages with confirms until the broker dies,
/// returning the numbers whose confirm arrived. `confirmed_count` is kept current so
/// another thread can pick the moment to kill the broker.
async fn publish_until_killed(b: &Broker, queue: &str, confirmed_count: &AtomicU32) -> BTreeSet<u32> {
    let (_conn, ch) = connect(b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    declare(&ch, queue, true).await;
    let mut confirmed = BTreeSet::new();
    let mut window = std::collections::VecDeque::new();
    for i in 0u32.. {
        let sent = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &i.to_be_bytes(), persistent())
            .await;
        match sent {
            Ok(c) => window.push_back((i, c)),
            Err(_) => break,
        }
        if window.len() >= 64 {
            let (n, c) = window.pop_front().expect("non-empty");
            match c.await {
                Ok(conf) if conf.is_ack() => {
                    confirmed.insert(n);
                    confirmed_count.fetch_add(1, Ordering::Relaxed);
                }
                _ => break,
            }
        }
        if i > 1_000_000 {
            panic!("broker was never killed");
        }
    }
    // Confirms that arrived before the connection dropped still count.
    while let Some((n, c)) = window.pop_front() {
        if let Ok(conf) = c.await {
            if conf.is_ack() {
                confirmed.insert(n);
            }
        }
    }
    confirmed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_never_loses_a_confirmed_message() {
    let dir = DataDir::new("kill9");
    // Different kill points: SIGKILL once this many confirms have arrived (plus
    // whatever is in flight at that instant, which varies from run to run).
    for (round, kill_after) in [40u32, 700, 150, 2500].into_iter().enumerate() {
        let b = Broker::start(&dir.0);
        let pid = b.child.id();
        let count = std::sync::Arc::new(AtomicU32::new(0));
        let watched = count.clone();
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + WAIT;
            while watched.load(Ordering::Relaxed) < kill_after && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        });
        let queue = format!("crash-{round}");
        let confirmed = publish_until_killed(&b, &queue, &count).await;
        killer.join().expect("killer");
        b.kill9();
        assert!(confirmed.len() >= kill_after as usize, "round {round}: killed after {kill_after} confirms");

        let b = Broker::start(&dir.0);
        let (_conn, ch) = connect(&b).await;
        let got = drain_raw(&ch, &queue).await;
        let numbers: Vec<u32> =
            got.iter().map(|(body, _)| u32::from_be_bytes([body[0], body[1], body[2], body[3]])).collect();
        let unique: BTreeSet<u32> = numbers.iter().copied().collect();
        assert_eq!(unique.len(), numbers.len(), "round {round}: no message is duplicated");
        let missing: Vec<_> = confirmed.difference(&unique).take(5).collect();
        assert!(missing.is_empty(), "round {round}: confirmed messages lost, e.g. {missing:?}");
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "round {round}: order kept");
        b.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_do_not_come_back_after_kill9() {
    let dir = DataDir::new("ackcrash");
    let b = Broker::start(&dir.0);
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "acks", true).await;
        declare(&ch, "fence", true).await;
        for i in 0..100u32 {
            publish(&ch, "", "acks", format!("m{i}").as_bytes(), persistent()).await;
        }
        // Ack the first 60 through basic.get, then a synchronous round trip so the
        // acks are handled; their removal is committed by the next group commit.
        for _ in 0..60 {
            let m = ch.basic_get("acks".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("msg");
            m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        // A confirmed publish after the acks: once it is confirmed, everything the
        // broker received before it (the acks included) is on disk.
        publish(&ch, "", "fence", b"fence", persistent()).await;
    }
    b.kill9();
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    let got: Vec<String> = drain(&ch, "acks").await.into_iter().map(|(b, _)| b).collect();
    let expected: Vec<String> = (60..100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
}

#[test]
fn second_broker_on_same_data_dir_refuses() {
    let dir = DataDir::new("lock");
    let _first = Broker::start(&dir.0);
    let out = Command::new(env!("CARGO_BIN_EXE_haremq"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .output()
        .expect("run second broker");
    assert!(!out.status.success(), "second broker must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another HareMQ process"), "clear message, got: {stderr}");
}

#[test]
fn corrupt_store_is_a_clear_error() {
    let dir = DataDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    let file = dir.0.join("haremq.redb");
    std::fs::write(&file, vec![0xAB; 64 * 1024]).expect("write garbage");
    let out = Command::new(env!("CARGO_BIN_EXE_haremq"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .output()
        .expect("run broker");
    assert!(!out.status.success(), "a corrupt store must stop the broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("haremq.redb"), "the error names the file, got: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic, got: {stderr}");
    // The file is left untouched for recovery.
    assert_eq!(std::fs::read(&file).expect("read").len(), 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_320_and_exits_0() {
    let dir = DataDir::new("sigterm");
    let b = Broker::start(&dir.0);
    let (conn, _ch) = connect(&b).await;
    let mut events = Box::pin(conn.events_listener());
    assert_eq!(b.terminate(), Some(0));
    let err = tokio::time::timeout(WAIT, async {
        use smol::stream::StreamExt;
        while let Some(ev) = events.next().await {
            if let lapin::Event::Error(e) = ev {
                return Some(e);
            }
        }
        None
    })
    .await
    .expect("client told in time")
    .expect("an error event");
    let code = match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    };
    assert_eq!(code, Some(320), "connection.close 320 CONNECTION_FORCED, got {err:?}");
}

/// Consumes `n` messages with manual acks (prefetch 500) and returns their numbers.
async fn consume_numbers(ch: &Channel, queue: &str, n: usize) -> Vec<u32> {
    use smol::stream::StreamExt;
    ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(queue.into(), "pager".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("delivery in time")
            .expect("stream open")
            .expect("delivery");
        out.push(u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]]));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    ch.basic_cancel("pager".into(), BasicCancelOptions::default()).await.expect("cancel");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_durable_queue_pages_bodies_out_and_back_in() {
    // More than the 8192 entries a queue keeps in memory, so the tail is paged out,
    // read back while consuming, and recovered paged after a restart.
    const N: u32 = 20_000;
    let dir = DataDir::new("paging");
    let b = Broker::start(&dir.0);
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "long", true).await;
        publish_numbers_sized(&ch, "long", 0, N, 200).await;
        let first = consume_numbers(&ch, "long", 10_000).await;
        assert_eq!(first, (0..10_000).collect::<Vec<_>>(), "in order across the paged region");
    }
    assert_eq!(b.terminate(), Some(0));
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    let rest = consume_numbers(&ch, "long", 10_000).await;
    assert_eq!(rest, (10_000..N).collect::<Vec<_>>(), "the rest survives a restart, in order");
    assert!(drain_raw(&ch, "long").await.is_empty());
}

/// Polls the ready count of `queue` until it is `n`.
async fn wait_count(ch: &Channel, queue: &str, n: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        if q.message_count() == n {
            return;
        }
        assert!(Instant::now() < deadline, "queue {queue} has {} messages, expected {n}", q.message_count());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_of_persistent_messages_holds_across_restarts_and_dead_letters_durably() {
    use lapin::types::{AMQPValue, LongString};
    let dir = DataDir::new("ttl");
    let b = Broker::start(&dir.0);
    let published;
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "ttl-dlq", true).await;
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(3000));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(&b""[..])));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(&b"ttl-dlq"[..])));
        ch.queue_declare("ttl-src".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .expect("declare ttl-src");
        published = Instant::now();
        publish(&ch, "", "ttl-src", b"queue-ttl", persistent()).await;
        publish(&ch, "", "ttl-src", b"message-ttl", persistent().with_expiration("2000".into())).await;
    }
    b.kill9();
    let b = Broker::start(&dir.0);
    {
        let (_conn, ch) = connect(&b).await;
        // Recovered with their original deadlines; the timer dead-letters them with no
        // client touching the source queue.
        wait_count(&ch, "ttl-dlq", 2).await;
        assert!(published.elapsed() >= Duration::from_millis(3000), "expired before its TTL");
        let m = ch.basic_get("ttl-dlq".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("msg");
        let headers = m.delivery.properties.headers().clone().expect("headers");
        assert_eq!(
            headers.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString(LongString::from(&b"expired"[..])))
        );
        m.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    // The dead-lettered copies are durable; no crash point loses them (at worst a copy
    // is in both queues, and the source one expires again).
    b.kill9();
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    wait_count(&ch, "ttl-src", 0).await;
    let mut got: Vec<String> = drain(&ch, "ttl-dlq").await.into_iter().map(|(b, _)| b).collect();
    got.sort();
    got.dedup();
    assert_eq!(got, ["message-ttl", "queue-ttl"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_survive_kill9_and_arrive_once_when_due() {
    use lapin::types::{AMQPValue, ShortString};
    let dir = DataDir::new("delayed");
    let b = Broker::start(&dir.0);
    let published_at = std::time::SystemTime::now();
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-delayed-type"), AMQPValue::LongString("direct".into()));
        ch.exchange_declare(
            "later".into(),
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            args,
        )
        .await
        .expect("durable delayed exchange");
        declare(&ch, "later-q", true).await;
        ch.queue_bind("later-q".into(), "later".into(), "k".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("bind");
        for (body, ms) in [("second", 1500i64), ("first", 1200)] {
            let mut h = FieldTable::default();
            h.insert(ShortString::from("x-delay"), AMQPValue::LongLongInt(ms));
            publish(&ch, "later", "k", body.as_bytes(), persistent().with_headers(h)).await;
        }
        // Confirmed: both are on disk, still held.
        assert!(drain(&ch, "later-q").await.is_empty(), "not due yet");
    }
    b.kill9();
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 2 && Instant::now() < deadline {
        got.extend(drain(&ch, "later-q").await.into_iter().map(|(body, _)| body));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, vec!["first".to_string(), "second".to_string()], "both arrive, in due order");
    let elapsed = published_at.elapsed().unwrap_or_default();
    assert!(elapsed >= Duration::from_millis(1200), "not before the delay: {elapsed:?}");
    // Routed ones are deleted from the store: another restart brings nothing back.
    drop(ch);
    assert_eq!(b.terminate(), Some(0));
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(drain(&ch, "later-q").await.is_empty(), "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_queue_keeps_its_order_across_kill9() {
    // More than the 8192 entries a queue keeps loaded, so part of the queue is
    // recovered paged and must still land in the right priority level.
    const N: u32 = 12_000;
    let dir = DataDir::new("priority");
    let b = Broker::start(&dir.0);
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), lapin::types::AMQPValue::ShortShortUInt(3));
        ch.queue_declare("prio".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
            .await
            .expect("queue.declare");
        let mut pending = std::collections::VecDeque::new();
        for i in 0..N {
            let mut body = i.to_be_bytes().to_vec();
            body.resize(100, b'x');
            // Priorities 0..=4 (4 counts as the max, 3); every fifth has none (0).
            let props = match i % 5 {
                0 => persistent(),
                p => persistent().with_priority(p as u8),
            };
            let c = ch
                .basic_publish("".into(), "prio".into(), BasicPublishOptions::default(), &body, props)
                .await
                .expect("publish");
            pending.push_back(c);
            if pending.len() >= 256 {
                assert!(pending.pop_front().expect("confirm").await.expect("confirm").is_ack());
            }
        }
        for c in pending {
            assert!(c.await.expect("confirm").is_ack());
        }
    }
    b.kill9();
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    let level = |i: u32| (i % 5).min(3);
    let mut expected: Vec<u32> = (0..N).collect();
    expected.sort_by_key(|&i| (std::cmp::Reverse(level(i)), i));
    let got: Vec<u32> =
        drain_raw(&ch, "prio").await.into_iter().map(|(b, _)| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "priority order after restart; first difference at {:?}",
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
}

/// Publishes `n` persistent 64-byte messages numbered `from..from + n` (big-endian
/// u32 first) with confirms, 256 in flight.
async fn publish_numbers(ch: &Channel, queue: &str, from: u32, n: u32) {
    publish_numbers_sized(ch, queue, from, n, 64).await
}

/// Publishes `from..from + n` as persistent messages of `size` bytes (the number first),
/// with at most 256 unconfirmed.
async fn publish_numbers_sized(ch: &Channel, queue: &str, from: u32, n: u32, size: usize) {
    let mut pending = std::collections::VecDeque::new();
    for i in from..from + n {
        let mut body = i.to_be_bytes().to_vec();
        body.resize(size, b'x');
        let c = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, persistent())
            .await
            .expect("publish");
        pending.push_back(c);
        if pending.len() >= 256 {
            assert!(pending.pop_front().expect("confirm").await.expect("confirm").is_ack());
        }
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_spilled_to_disk_survives_kill9_in_order_without_loss_or_duplicates() {
    // Far beyond the 8192 entries kept loaded: most of the queue exists only as
    // spilled runs (its rows in the store's index), and after kill -9 it is
    // recovered as runs again.
    const N: u32 = 30_000;
    let dir = DataDir::new("spilled-kill9");
    let b = Broker::start(&dir.0);
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "deep", true).await;
        publish_numbers(&ch, "deep", 0, N).await;
        wait_count(&ch, "deep", N).await;
        // Consume a little past the loaded head, so the first run has been read from.
        let first = consume_numbers(&ch, "deep", 9_000).await;
        assert_eq!(first, (0..9_000).collect::<Vec<_>>());
        // A confirmed publish after the acks: the store has committed them too.
        declare(&ch, "marker", true).await;
        publish_numbers(&ch, "marker", 0, 1).await;
    }
    b.kill9();
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    wait_count(&ch, "deep", N - 9_000).await;
    let rest = consume_numbers(&ch, "deep", (N - 9_000) as usize).await;
    assert_eq!(rest, (9_000..N).collect::<Vec<_>>(), "every confirmed message once, in order");
    assert!(drain_raw(&ch, "deep").await.is_empty(), "nothing delivered twice");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    publish_numbers(&ch, "marker", 1, 1).await;
    drop(ch);
    drop(_conn);
    // And once more: what was acked stays gone across a restart.
    b.kill9();
    let b = Broker::start(&dir.0);
    let (_conn, ch) = connect(&b).await;
    assert!(drain_raw(&ch, "deep").await.is_empty(), "acked messages do not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_across_spilled_runs_with_rejects_and_a_channel_close_loses_nothing() {
    use smol::stream::StreamExt;
    const N: u32 = 30_000;
    let dir = DataDir::new("spilled-requeue");
    let b = Broker::start(&dir.0);
    let (conn, ch) = connect(&b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    declare(&ch, "runs", true).await;
    publish_numbers(&ch, "runs", 0, N / 2).await;
    let mut acked = vec![0u32; N as usize];
    let mut last_fresh: Option<u32> = None;
    let mut fresh_in_order = |n: u32, redelivered: bool| {
        if !redelivered {
            assert!(last_fresh.is_none_or(|l| n > l), "first deliveries in order: {n} after {last_fresh:?}");
            last_fresh = Some(n);
        }
    };
    // Phase 1: reject every seventh first delivery (requeue), ack the rest; publish
    // the second half meanwhile; close the channel holding unacked deliveries.
    {
        let c1 = conn.create_channel().await.expect("channel");
        c1.basic_qos(400, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = c1
            .basic_consume("runs".into(), "c1".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        let mut done = 0;
        let mut published_rest = false;
        while done < 16_000 {
            let d = tokio::time::timeout(WAIT, consumer.next())
                .await
                .expect("delivery in time")
                .expect("stream open")
                .expect("delivery");
            let n = u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]]);
            fresh_in_order(n, d.redelivered);
            if !d.redelivered && n % 7 == 0 {
                d.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
            } else {
                d.ack(BasicAckOptions::default()).await.expect("ack");
                acked[n as usize] += 1;
                done += 1;
            }
            if done == 4_000 && !published_rest {
                published_rest = true;
                publish_numbers(&ch, "runs", N / 2, N / 2).await;
            }
        }
        // Up to 400 prefetched deliveries are unacked: closing requeues them.
        c1.close(200, "bye".into()).await.expect("close");
    }
    // Phase 2: another channel takes the rest.
    let c2 = conn.create_channel().await.expect("channel");
    c2.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = c2
        .basic_consume("runs".into(), "c2".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut total: u32 = acked.iter().sum();
    while total < N {
        let d = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("delivery in time")
            .expect("stream open")
            .expect("delivery");
        let n = u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]]);
        fresh_in_order(n, d.redelivered);
        d.ack(BasicAckOptions::default()).await.expect("ack");
        acked[n as usize] += 1;
        total += 1;
    }
    c2.basic_cancel("c2".into(), BasicCancelOptions::default()).await.expect("cancel");
    let missing: Vec<usize> = acked.iter().enumerate().filter(|(_, &c)| c != 1).map(|(i, _)| i).take(10).collect();
    assert!(missing.is_empty(), "each message acked exactly once; first exceptions {missing:?}");
    assert!(drain_raw(&c2, "runs").await.is_empty());
    wait_count(&c2, "runs", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_and_deleting_spilled_queues_is_durable() {
    // Purge and delete drop whole spilled runs in the store (their rows and message
    // records); after kill -9 nothing of them comes back.
    const N: u32 = 20_000;
    let dir = DataDir::new("spilled-purge");
    let b = Broker::start(&dir.0);
    {
        let (_conn, ch) = connect(&b).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        declare(&ch, "purged", true).await;
        declare(&ch, "deleted", true).await;
        publish_numbers(&ch, "purged", 0, N).await;
        publish_numbers(&ch, "deleted", 0, N).await;
        let purged = ch.queue_purge("purged".into(), QueuePurgeOptions::default()).await.expect("purge");
        assert_eq!(purged, N);
        let deleted = ch.queue_delete("deleted".into(), QueueDeleteOptions::default()).await.expect("delete");
        assert_eq!(deleted, N);
        // Published after the purge: kept, and behind nothing.
        publish_numbers(&ch, "purged", N, 3).await;
    }
    b.kill9();
    let b = Broker::start(&dir.0);
    let (conn, ch) = connect(&b).await;
    assert!(!passive_exists(&conn, "queue", "deleted").await);
    let left: Vec<u32> =
        drain_raw(&ch, "purged").await.into_iter().map(|(b, _)| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(left, vec![N, N + 1, N + 2]);
}

/// The memory alarm: with a small limit for message memory, the broker stops reading
/// from a connection that publishes transient messages nobody consumes yet. amqprs
/// does not announce `connection.blocked`, so it is sent nothing and keeps writing: the
/// queue depth shows the broker itself stopped reading. A consumer on another
/// connection keeps working, and as it drains the queue the publisher is read again.
/// Nothing is lost or reordered. (A broker process of its own: message memory is
/// counted per process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_alarm_holds_publishers_until_consumers_drain() {
    use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
    const N: u32 = 2_000;
    let dir = DataDir::new("memory-alarm");
    let b = Broker::start_with(&dir.0, Some("memory_limit = 262144\n"));
    let args = amqprs::connection::OpenConnectionArguments::new("127.0.0.1", b.addr.port(), "guest", "guest");
    let pub_conn = amqprs::connection::Connection::open(&args).await.expect("amqprs connects");
    let pch = pub_conn.open_channel(None).await.expect("channel");
    pch.queue_declare(QueueDeclareArguments::new("held")).await.expect("declare");
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            let mut body = i.to_be_bytes().to_vec();
            body.resize(1024, b'x');
            pch.basic_publish(Default::default(), body, BasicPublishArguments::new("", "held")).await.expect("publish");
        }
        pch
    });
    // The limit holds about 220 such messages and one read batch at most as many
    // again; without the alarm all 2,000 would be in within milliseconds.
    let (_conn, cch) = connect(&b).await;
    let depth = || async {
        cch.queue_declare(
            "held".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
    };
    let deadline = Instant::now() + WAIT;
    while depth().await < 200 {
        assert!(Instant::now() < deadline, "the publisher's messages did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        let held = depth().await;
        assert!(held <= 500, "{held} messages in: the publisher was not held back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = consume_numbers(&cch, "held", N as usize).await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message, in order");
    let pch = tokio::time::timeout(WAIT, publisher).await.expect("publisher finishes").expect("publisher task");
    pch.basic_publish(Default::default(), b"after".to_vec(), BasicPublishArguments::new("", "held"))
        .await
        .expect("publish after the alarm");
    drop(pch);
    let _ = pub_conn.close().await;
    assert_eq!(b.terminate(), Some(0));
}

/// The disk alarm: with `disk_free_limit` above any disk's free space, a connection is
/// blocked right after its first publish and, as lapin announces the capability, told
/// so with `connection.blocked`; nothing it publishes afterwards arrives, while another
/// connection consumes normally; the broker still shuts down cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_alarm_blocks_publishers_and_lets_consumers_work() {
    let dir = DataDir::new("disk-alarm");
    let b = Broker::start_with(&dir.0, Some("disk_free_limit = 9223372036854775807\n"));
    let (pub_conn, pch) = connect(&b).await;
    declare(&pch, "disk", false).await;
    pch.basic_publish("".into(), "disk".into(), BasicPublishOptions::default(), b"first", BasicProperties::default())
        .await
        .expect("publish");
    let deadline = Instant::now() + WAIT;
    while !pub_conn.status().blocked() {
        assert!(Instant::now() < deadline, "no connection.blocked within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // lapin holds frames while its connection is blocked, so this publish is not
    // awaited: it waits in the client (or the socket) until the broker reads again.
    let second = tokio::spawn(async move {
        let _ = pch
            .basic_publish(
                "".into(),
                "disk".into(),
                BasicPublishOptions::default(),
                b"second",
                BasicProperties::default(),
            )
            .await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_conn, cch) = connect(&b).await;
    let got = drain_raw(&cch, "disk").await;
    assert_eq!(got, vec![(b"first".to_vec(), false)], "only what came before the alarm");
    assert_eq!(b.terminate(), Some(0));
    let _ = tokio::time::timeout(WAIT, second).await;
}

/// Logs in as `user`/`password` on `/`; the reply code of a refusal.
async fn login(b: &Broker, user: &str, password: &str) -> Result<Connection, Option<u16>> {
    let url = format!("amqp://{user}:{password}@{}/%2f", b.addr);
    match tokio::time::timeout(WAIT, Connection::connect(&url, ConnectionProperties::default())).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(match e.kind() {
            lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
            _ => None,
        }),
        Err(_) => panic!("login as {user} timed out"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_users_seed_the_stored_user_table_on_the_first_start_only() {
    let dir = DataDir::new("seed-users");
    let b = Broker::start_with(&dir.0, Some("[[users]]\nname = \"alice\"\npassword = \"a1\"\n"));
    let c = login(&b, "alice", "a1").await.expect("alice, seeded with full permissions on /");
    let ch = c.create_channel().await.expect("channel");
    declare(&ch, "seeded", true).await;
    assert_eq!(login(&b, "guest", "guest").await.err(), Some(Some(403)), "guest is not configured");
    assert_eq!(b.terminate(), Some(0));
    // The table is stored: the configuration's users no longer change it.
    let b = Broker::start_with(&dir.0, Some("[[users]]\nname = \"bob\"\npassword = \"b1\"\n"));
    login(&b, "alice", "a1").await.expect("alice is kept");
    assert_eq!(login(&b, "bob", "b1").await.err(), Some(Some(403)), "users seed a new store only");
    b.kill9();
    let b = Broker::start(&dir.0);
    let c = login(&b, "alice", "a1").await.expect("alice after kill -9");
    assert!(passive_exists(&c, "queue", "seeded").await);
    assert_eq!(login(&b, "guest", "guest").await.err(), Some(Some(403)));
}
