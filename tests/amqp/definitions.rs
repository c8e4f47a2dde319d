//! Definitions (issue 12): RabbitMQ's definitions.json imported at boot and at run time,
//! exported, and moved between brokers. The fixture is RabbitMQ 3.10.8's own export
//! (`rabbitmqctl import_definitions` of a hand-written file, then
//! `rabbitmqctl export_definitions`, trimmed to its entries).

use crate::common::{start_broker, start_broker_with, unique, WAIT};
use crate::util;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::Value;

const RABBITMQ_EXPORT: &str = include_str!("fixtures/rabbitmq-3.10-definitions.json");

fn passive_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

/// The topology of a RabbitMQ export works when loaded at boot (`definitions` in the
/// config, as RabbitMQ's `load_definitions`): a topic exchange routes through an
/// exchange-to-exchange binding into a headers exchange, queue arguments (TTL, DLX,
/// max-length) are in force, and its policy is imported too (policies.rs checks them).
#[tokio::test]
async fn a_rabbitmq_export_loads_at_boot_and_works() {
    let file = std::env::temp_dir().join(format!("{}.json", unique("haremq-defs")));
    std::fs::write(&file, RABBITMQ_EXPORT).unwrap();
    let path = file.clone();
    let broker = start_broker_with(move |c| c.definitions = Some(path));
    let _ = std::fs::remove_file(&file);
    if broker.is_external() {
        return;
    }
    let (_conn, ch) = util::open(&broker).await;
    for q in ["fixture-orders", "fixture-dead", "fixture-eu-audit"] {
        ch.queue_declare(q.into(), passive_queue(), FieldTable::default()).await.expect("queue imported");
    }
    // Routed by the topic binding.
    util::publish(&ch, "fixture-events", "orders.created", b"order 1").await;
    assert_eq!(util::drain(&ch, "fixture-orders").await, vec!["order 1"]);
    // Through the exchange-to-exchange binding and the headers binding (x-match all).
    let mut headers = FieldTable::default();
    headers.insert("region".into(), AMQPValue::LongString("eu".into()));
    util::publish_props(
        &ch,
        "fixture-events",
        "audit.login",
        b"eu login",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    assert_eq!(util::drain(&ch, "fixture-eu-audit").await, vec!["eu login"]);
    // The users, permissions and topic permissions came too. guest now has RabbitMQ's
    // hash of "guest" (a login above used it); fixture-app is passwordless.
    let admin = broker.admin();
    let app = admin.user("fixture-app").expect("user imported");
    assert_eq!(app.tags, vec!["management", "monitoring"]);
    assert_eq!(app.password_hash, None);
    assert_eq!(
        admin.user("guest").and_then(|u| u.password_hash).as_deref(),
        Some("v0LrZjZOAK+R9J3ZjA3oIHCV718UxR+GYacJBL9Z90Hi8Gsa")
    );
    let perms = admin.permissions();
    let p = perms.iter().find(|p| p.user == "fixture-app").expect("permissions imported");
    assert_eq!((p.vhost.as_str(), p.configure.as_str(), p.write.as_str()), ("/", "^fixture-.*", ".*"));
    let topic = admin.topic_permissions();
    assert!(topic.iter().any(|t| t.user == "fixture-app" && t.exchange == "fixture-events" && t.write == "^orders\\."));
    // x-message-ttl 60000 is the queue's: a redeclare without it is refused.
    let redeclare = ch.queue_declare(
        "fixture-orders".into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    );
    util::assert_amqp_err(redeclare.await, 406, "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl'");
}

/// Export from one broker, import into a fresh one: the same topology, and an
/// application's messages flow the same way; exporting again gives the same document.
#[tokio::test]
async fn definitions_round_trip_between_brokers() {
    let a = start_broker();
    if a.is_external() {
        return;
    }
    let admin = a.admin();
    admin.add_vhost_with("rt-vhost", "moved with its owner", &["prod"]).unwrap();
    admin.add_user("rt-user", Some("s3cret"), &["monitoring"]).unwrap();
    admin.set_permissions("rt-user", "rt-vhost", "^rt-", ".*", ".*").unwrap();
    admin.set_topic_permissions("rt-user", "rt-vhost", "amq.topic", "^a\\.", ".*").unwrap();
    admin
        .set_vhost_limits("rt-vhost", haremq::admin::VHostLimits { max_connections: Some(5), max_queues: Some(10) })
        .unwrap();
    let (_ca, ch) = util::open(&a).await;
    util::declare_exchange(&ch, "rt-x", ExchangeKind::Direct).await;
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString("dead".into()));
    ch.queue_declare("rt-q".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare");
    util::bind(&ch, "rt-q", "rt-x", "k").await;
    // Exclusive queues belong to their connection and are not exported.
    ch.queue_declare(
        "rt-excl".into(),
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("exclusive");
    let exported = a.handle().export_definitions();
    let json: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(json["product_name"], "HareMQ");
    let queues: Vec<&str> = json["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(queues, vec!["rt-q"]);
    assert_eq!(json["queues"][0]["arguments"]["x-max-priority"], 5);

    let b = start_broker();
    b.handle().import_definitions(&exported).expect("import");
    // Importing the same document again changes nothing.
    b.handle().import_definitions(&exported).expect("import twice");
    assert_eq!(b.handle().export_definitions(), exported);
    let (_cb, ch) = util::open(&b).await;
    util::publish(&ch, "rt-x", "k", b"moved").await;
    assert_eq!(util::drain(&ch, "rt-q").await, vec!["moved"]);
    // The user logs in to the moved vhost with its password, and its rights came along.
    let conn = lapin::Connection::connect(&b.url_for("rt-user", "s3cret", "rt-vhost"), Default::default())
        .await
        .expect("the imported user logs in");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("rt-mine".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("allowed");
    util::assert_amqp_err(
        ch.queue_declare("other".into(), QueueDeclareOptions::default(), FieldTable::default()).await,
        403,
        "ACCESS_REFUSED - access to queue 'other' in vhost 'rt-vhost' refused for user 'rt-user'",
    );
    let limits = b.admin().vhosts().into_iter().find(|v| v.name == "rt-vhost").expect("vhost").limits;
    assert_eq!((limits.max_connections, limits.max_queues), (Some(5), Some(10)));
}

/// An import is all or nothing: a binding to a queue that exists nowhere is refused
/// with an error naming it, and the exchange and queue before it were not kept.
#[tokio::test]
async fn a_refused_import_changes_nothing() {
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let doc = r#"{
        "exchanges": [{"name": "atomic-x", "vhost": "/", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "queues": [{"name": "atomic-q", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}],
        "bindings": [
            {"source": "atomic-x", "vhost": "/", "destination": "atomic-q", "destination_type": "queue", "routing_key": "", "arguments": {}},
            {"source": "atomic-x", "vhost": "/", "destination": "nowhere", "destination_type": "queue", "routing_key": "", "arguments": {}}
        ]
    }"#;
    let err = broker.handle().import_definitions(doc).expect_err("refused");
    assert!(
        err.contains("binding from 'atomic-x' to queue 'nowhere'") && err.contains("does not exist"),
        "the error names the entry: {err}"
    );
    let (_conn, ch) = util::open(&broker).await;
    util::assert_amqp_err(
        ch.queue_declare("atomic-q".into(), passive_queue(), FieldTable::default()).await,
        404,
        "NOT_FOUND - no queue 'atomic-q'",
    );
    let ch = util::channel(&_conn).await;
    let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
    util::assert_amqp_err(
        ch.exchange_declare("atomic-x".into(), ExchangeKind::Fanout, passive, FieldTable::default()).await,
        404,
        "NOT_FOUND - no exchange 'atomic-x'",
    );
    // Security entries are put back too: the user of a refused file is not kept, and
    // guest's tags are what they were.
    let guest_before = broker.admin().user("guest");
    let doc = r#"{
        "users": [
            {"name": "atomic-user", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []},
            {"name": "guest", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["none"]}
        ],
        "queues": [{"name": "amq.reserved", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}]
    }"#;
    let err = broker.handle().import_definitions(doc).expect_err("refused");
    assert!(err.contains("queue 'amq.reserved'"), "{err}");
    assert!(broker.admin().user("atomic-user").is_none(), "the created user was removed");
    assert_eq!(broker.admin().user("guest"), guest_before, "guest restored");
    // A bad regular expression is found before anything changes.
    let doc = r#"{"users": [{"name": "re-user", "password_hash": "", "tags": []}],
                  "permissions": [{"user": "re-user", "vhost": "/", "configure": "(", "write": "", "read": ""}]}"#;
    let err = broker.handle().import_definitions(doc).expect_err("refused");
    assert!(err.contains("permissions of user 're-user' in vhost '/'"), "{err}");
    assert!(broker.admin().user("re-user").is_none());
    // Bad arguments are refused with RabbitMQ's text, also naming the entry.
    let doc = r#"{"queues": [{"name": "bad-ttl", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-message-ttl": -1}}]}"#;
    let err = broker.handle().import_definitions(doc).expect_err("refused");
    assert!(err.contains("queue 'bad-ttl' in vhost '/'") && err.contains("x-message-ttl"), "{err}");
}

/// A definitions file that cannot be imported stops the start, naming the entry.
#[test]
fn a_bad_definitions_file_stops_the_start() {
    let file = std::env::temp_dir().join(format!("{}.json", unique("haremq-bad-defs")));
    std::fs::write(
        &file,
        r#"{"exchanges": [{"name": "x", "vhost": "/", "type": "no-such-type", "durable": true, "arguments": {}}]}"#,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(unique("haremq-bad-defs-data"));
    let config = haremq::Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.clone(),
        definitions: Some(file.clone()),
        ..Default::default()
    };
    let err = haremq::start(config).err().expect("the start is refused");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let text = err.to_string();
    assert!(text.contains("exchange 'x' in vhost '/'") && text.contains("no-such-type"), "{text}");
    let _ = WAIT;
}
