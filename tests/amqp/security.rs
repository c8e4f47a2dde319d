//! Issue 12: vhosts, users, permissions, topic permissions and limits, through the
//! admin API and real clients. Every permission rule has an allowed and a refused
//! case with RabbitMQ's code and text (checked against RabbitMQ 3.10).
//!
//! The user `u` in most tests has permissions chosen so that a name's letters say
//! what it allows: configure `C`, write `W`, read `R` (RabbitMQ matches unanchored,
//! so `q-CW` may be configured and written but not read).

use std::future::Future;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::common::*;
use crate::util::*;
use haremq::admin::{UserLimits, VHostLimits};

const U: &str = "u";
const PW: &str = "pw";

/// An in-process broker (these tests need its admin API; against an external broker
/// they do nothing).
fn in_process() -> Option<TestBroker> {
    let broker = start_broker();
    (!broker.is_external()).then_some(broker)
}

/// A broker with user `u`/`pw` holding configure `C`, write `W`, read `R` on `/`.
fn broker_with_u() -> Option<TestBroker> {
    let broker = in_process()?;
    let admin = broker.admin();
    admin.add_user(U, Some(PW), &["management"]).expect("add_user");
    admin.set_permissions(U, "/", "C", "W", "R").expect("set_permissions");
    Some(broker)
}

async fn connect_as(broker: &TestBroker, user: &str, password: &str, vhost: &str) -> lapin::Result<Connection> {
    within("connect", Connection::connect(&broker.url_for(user, password, vhost), ConnectionProperties::default()))
        .await
}

async fn open_as(broker: &TestBroker, user: &str, vhost: &str) -> (Connection, Channel) {
    let password = if user == "guest" { "guest" } else { PW };
    let conn = connect_as(broker, user, password, vhost).await.expect("connects");
    let ch = channel(&conn).await;
    (conn, ch)
}

fn refused(kind: &str, name: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user 'u'")
}

/// Runs `op` on a fresh channel of `conn` and checks it fails with exactly `code` and
/// `text`.
async fn expect_err<T: std::fmt::Debug, F: Future<Output = lapin::Result<T>>>(
    conn: &Connection,
    code_expected: u16,
    text_expected: &str,
    op: impl FnOnce(Channel) -> F,
) {
    let ch = channel(conn).await;
    match within("operation", op(ch)).await {
        Ok(v) => panic!("expected {code_expected} {text_expected:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(code(&e), Some(code_expected), "{e:?}");
            assert_eq!(text(&e), text_expected);
        }
    }
}

async fn declare_ex(ch: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default()).await
}

async fn declare_q(ch: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default()).await
}

async fn publish_confirmed_on(ch: Channel, exchange: &str, key: &str) -> lapin::Result<lapin::Confirmation> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), b"m", BasicProperties::default())
        .await?
        .await
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_declare_and_delete_need_configure() {
    let Some(broker) = broker_with_u() else { return };
    let (conn, ch) = open_as(&broker, U, "/").await;
    declare_ex(&ch, "x-C", ExchangeKind::Direct).await.expect("configure allowed");
    expect_err(&conn, 403, &refused("exchange", "x-W"), |ch| async move {
        declare_ex(&ch, "x-W", ExchangeKind::Direct).await
    })
    .await;
    // Passive declares need no permission at all.
    ch.exchange_declare(
        "amq.direct".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("passive declare without configure");
    // A new exchange with an alternate exchange: read on itself, write on the alternate.
    let (_g, gch) = open_as(&broker, "guest", "/").await;
    declare_ex(&gch, "x-other", ExchangeKind::Fanout).await.unwrap();
    let ae = |alt: &'static str, name: &'static str| {
        move |ch: Channel| async move {
            ch.exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                table(&[("alternate-exchange", alt)]),
            )
            .await
        }
    };
    expect_err(&conn, 403, &refused("exchange", "x-C-ae"), ae("x-W", "x-C-ae")).await;
    expect_err(&conn, 403, &refused("exchange", "x-other"), ae("x-other", "x-CR-ae")).await;
    let ch2 = channel(&conn).await;
    ae("x-W", "x-CR-ae")(ch2).await.expect("read on itself, write on the alternate");
    // Delete: configure on the exchange.
    ch.exchange_delete("x-C".into(), ExchangeDeleteOptions::default()).await.expect("delete allowed");
    expect_err(&conn, 403, &refused("exchange", "x-other"), |ch| async move {
        ch.exchange_delete("x-other".into(), ExchangeDeleteOptions::default()).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_declare_and_delete_need_configure() {
    let Some(broker) = broker_with_u() else { return };
    // Anchored here: a random amq.gen-… name may well contain a `C`.
    broker.admin().set_permissions(U, "/", "^q-C", "W", "R").unwrap();
    let (conn, ch) = open_as(&broker, U, "/").await;
    declare_q(&ch, "q-C").await.expect("configure allowed");
    expect_err(&conn, 403, &refused("queue", "q-W"), |ch| async move { declare_q(&ch, "q-W").await }).await;
    // Server-named queues are checked under their generated amq.gen-… name.
    let ch2 = channel(&conn).await;
    let err = declare_q(&ch2, "").await.expect_err("amq.gen-… does not match C");
    assert_eq!(code(&err), Some(403));
    assert!(text(&err).starts_with("ACCESS_REFUSED - access to queue 'amq.gen-"), "{}", text(&err));
    assert!(text(&err).ends_with("' in vhost '/' refused for user 'u'"), "{}", text(&err));
    // Passive declare of a queue u may not configure: allowed.
    let (_g, gch) = open_as(&broker, "guest", "/").await;
    declare_q(&gch, "q-other").await.unwrap();
    ch.queue_declare(
        "q-other".into(),
        QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("passive declare without configure");
    // A new queue with a dead-letter exchange: read on the queue, write on the DLX.
    let dlx = |name: &'static str, x: &'static str| {
        move |ch: Channel| async move {
            ch.queue_declare(name.into(), QueueDeclareOptions::default(), table(&[("x-dead-letter-exchange", x)])).await
        }
    };
    expect_err(&conn, 403, &refused("queue", "q-C-dlx"), dlx("q-C-dlx", "x-W")).await;
    expect_err(&conn, 403, &refused("exchange", "amq.default"), dlx("q-CR-dlx", "")).await;
    dlx("q-CR-dlx", "x-W")(channel(&conn).await).await.expect("read on the queue, write on the DLX");
    // Delete: configure on the queue.
    ch.queue_delete("q-C".into(), QueueDeleteOptions::default()).await.expect("delete allowed");
    expect_err(&conn, 403, &refused("queue", "q-other"), |ch| async move {
        ch.queue_delete("q-other".into(), QueueDeleteOptions::default()).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_need_write_on_destination_and_read_on_source() {
    let Some(broker) = broker_with_u() else { return };
    let (_g, gch) = open_as(&broker, "guest", "/").await;
    for q in ["q-W", "q-R"] {
        declare_q(&gch, q).await.unwrap();
    }
    for x in ["x-R", "x-W", "x-RW"] {
        declare_ex(&gch, x, ExchangeKind::Direct).await.unwrap();
    }
    let (conn, ch) = open_as(&broker, U, "/").await;
    let qbind = |q: &'static str, x: &'static str| {
        move |ch: Channel| async move {
            ch.queue_bind(q.into(), x.into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await
        }
    };
    qbind("q-W", "x-R")(ch.clone()).await.expect("write on queue, read on exchange");
    expect_err(&conn, 403, &refused("queue", "q-R"), qbind("q-R", "x-R")).await;
    expect_err(&conn, 403, &refused("exchange", "x-W"), qbind("q-W", "x-W")).await;
    // The default exchange is refused for everyone, after the destination's check.
    expect_err(&conn, 403, "ACCESS_REFUSED - operation not permitted on the default exchange", qbind("q-W", "")).await;
    let qunbind = |q: &'static str, x: &'static str| {
        move |ch: Channel| async move { ch.queue_unbind(q.into(), x.into(), "k".into(), FieldTable::default()).await }
    };
    expect_err(&conn, 403, &refused("queue", "q-R"), qunbind("q-R", "x-R")).await;
    expect_err(&conn, 403, &refused("exchange", "x-W"), qunbind("q-W", "x-W")).await;
    qunbind("q-W", "x-R")(ch.clone()).await.expect("unbind allowed");
    let xbind = |dest: &'static str, src: &'static str, bind: bool| {
        move |ch: Channel| async move {
            if bind {
                ch.exchange_bind(
                    dest.into(),
                    src.into(),
                    "k".into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            } else {
                ch.exchange_unbind(
                    dest.into(),
                    src.into(),
                    "k".into(),
                    ExchangeUnbindOptions::default(),
                    FieldTable::default(),
                )
                .await
            }
        }
    };
    xbind("x-W", "x-R", true)(ch.clone()).await.expect("write on destination, read on source");
    expect_err(&conn, 403, &refused("exchange", "x-R"), xbind("x-R", "x-RW", true)).await;
    expect_err(&conn, 403, &refused("exchange", "x-W"), xbind("x-RW", "x-W", true)).await;
    expect_err(&conn, 403, &refused("exchange", "x-R"), xbind("x-R", "x-RW", false)).await;
    xbind("x-W", "x-R", false)(ch.clone()).await.expect("exchange.unbind allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_needs_write_consume_get_purge_need_read() {
    let Some(broker) = broker_with_u() else { return };
    let (_g, gch) = open_as(&broker, "guest", "/").await;
    for q in ["q-R", "q-W"] {
        declare_q(&gch, q).await.unwrap();
    }
    declare_ex(&gch, "x-W", ExchangeKind::Fanout).await.unwrap();
    declare_ex(&gch, "x-R", ExchangeKind::Fanout).await.unwrap();
    gch.queue_bind("q-R".into(), "x-W".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let (conn, ch) = open_as(&broker, U, "/").await;
    let confirm = publish_confirmed_on(channel(&conn).await, "x-W", "").await.expect("write allowed");
    assert!(confirm.is_ack());
    expect_err(&conn, 403, &refused("exchange", "x-R"), |ch| async move { publish_confirmed_on(ch, "x-R", "").await })
        .await;
    // The default exchange is 'amq.default' to permissions.
    expect_err(&conn, 403, &refused("exchange", "amq.default"), |ch| async move {
        publish_confirmed_on(ch, "", "q-R").await
    })
    .await;
    // Refused before the existence check, as RabbitMQ: no 404 for a name u may not use.
    expect_err(&conn, 403, &refused("exchange", "missing"), |ch| async move {
        publish_confirmed_on(ch, "missing", "").await
    })
    .await;
    let got = ch.basic_get("q-R".into(), BasicGetOptions { no_ack: true }).await.expect("get allowed");
    assert!(got.is_some());
    expect_err(&conn, 403, &refused("queue", "q-W"), |ch| async move {
        ch.basic_get("q-W".into(), BasicGetOptions::default()).await
    })
    .await;
    ch.basic_consume("q-R".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume allowed");
    expect_err(&conn, 403, &refused("queue", "q-W"), |ch| async move {
        ch.basic_consume("q-W".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await
    })
    .await;
    ch.queue_purge("q-R".into(), QueuePurgeOptions::default()).await.expect("purge allowed");
    expect_err(&conn, 403, &refused("queue", "q-W"), |ch| async move {
        ch.queue_purge("q-W".into(), QueuePurgeOptions::default()).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_changes_reach_open_channels() {
    let Some(broker) = broker_with_u() else { return };
    let (_g, gch) = open_as(&broker, "guest", "/").await;
    declare_ex(&gch, "x-W", ExchangeKind::Fanout).await.unwrap();
    let (_conn, ch) = open_as(&broker, U, "/").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let publish = |ch: &Channel| {
        let ch = ch.clone();
        async move {
            ch.basic_publish("x-W".into(), "".into(), BasicPublishOptions::default(), b"m", BasicProperties::default())
                .await?
                .await
        }
    };
    assert!(publish(&ch).await.expect("allowed").is_ack());
    assert!(publish(&ch).await.expect("allowed, cached").is_ack());
    broker.admin().set_permissions(U, "/", "C", "", "R").unwrap();
    let err = within("publish", publish(&ch)).await.expect_err("revoked for the open channel too");
    assert_eq!(code(&err), Some(403));
    assert_eq!(text(&err), refused("exchange", "x-W"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_check_routing_and_binding_keys() {
    let Some(broker) = broker_with_u() else { return };
    let admin = broker.admin();
    admin.set_permissions(U, "/", ".*", ".*", ".*").unwrap();
    admin.set_topic_permissions(U, "/", "amq.topic", "^{username}\\.", "^{vhost}-r\\.").unwrap();
    let (conn, ch) = open_as(&broker, U, "/").await;
    declare_q(&ch, "tq").await.unwrap();
    let confirm = publish_confirmed_on(channel(&conn).await, "amq.topic", "u.orders").await.expect("write allowed");
    assert!(confirm.is_ack());
    expect_err(
        &conn,
        403,
        "ACCESS_REFUSED - access to topic 'bob.orders' in exchange 'amq.topic' in vhost '/' refused for user 'u'",
        |ch| async move { publish_confirmed_on(ch, "amq.topic", "bob.orders").await },
    )
    .await;
    let bind = |key: &'static str| {
        move |ch: Channel| async move {
            ch.queue_bind(
                "tq".into(),
                "amq.topic".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    };
    bind("/-r.#")(channel(&conn).await).await.expect("read allowed on the binding key");
    expect_err(
        &conn,
        403,
        "ACCESS_REFUSED - access to topic 'x.#' in exchange 'amq.topic' in vhost '/' refused for user 'u'",
        bind("x.#"),
    )
    .await;
    // Other exchanges (and non-topic ones) are not restricted.
    publish_confirmed_on(channel(&conn).await, "amq.direct", "bob.orders").await.expect("no topic permission there");
    // Cleared: everything goes.
    admin.clear_topic_permissions(U, "/", None).unwrap();
    publish_confirmed_on(channel(&conn).await, "amq.topic", "bob.orders").await.expect("cleared");
    assert!(admin.topic_permissions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_open_needs_permissions_in_the_vhost() {
    let Some(broker) = in_process() else { return };
    let admin = broker.admin();
    admin.add_user("nobody", Some(PW), &[]).unwrap();
    let err = connect_as(&broker, "nobody", PW, "/").await.expect_err("no permissions on /");
    assert_eq!(code(&err), Some(530), "{err:?}");
    assert_eq!(text(&err), "NOT_ALLOWED - access to vhost '/' refused for user 'nobody'");
    admin.set_permissions("nobody", "/", "", "", "").unwrap();
    connect_as(&broker, "nobody", PW, "/").await.expect("any permissions let it in");
    let err = connect_as(&broker, "nobody", PW, "nope").await.expect_err("unknown vhost");
    assert_eq!(text(&err), "NOT_ALLOWED - vhost nope not found");
    let err = connect_as(&broker, "nobody", "wrong", "/").await.expect_err("bad password");
    assert_eq!(code(&err), Some(403));
    // Passwordless users cannot log in with PLAIN.
    admin.add_user("cert-only", None, &[]).unwrap();
    admin.set_permissions("cert-only", "/", ".*", ".*", ".*").unwrap();
    let err = connect_as(&broker, "cert-only", "", "/").await.expect_err("no password");
    assert_eq!(code(&err), Some(403));
    assert_eq!(admin.user("cert-only").unwrap().password_hash, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_isolated() {
    let Some(broker) = in_process() else { return };
    let admin = broker.admin();
    for v in ["va", "vb"] {
        admin.add_vhost(v).unwrap();
        admin.set_permissions("guest", v, ".*", ".*", ".*").unwrap();
    }
    assert_eq!(admin.add_vhost("va"), Err(haremq::admin::AdminError::VHostExists("va".into())));
    let (_a, cha) = open_as(&broker, "guest", "va").await;
    let (_b, chb) = open_as(&broker, "guest", "vb").await;
    declare_q(&cha, "same").await.unwrap();
    declare_q(&chb, "same").await.unwrap();
    publish(&cha, "", "same", b"in a").await;
    assert_eq!(message_count(&cha, "same").await, 1);
    assert_eq!(message_count(&chb, "same").await, 0, "the same name in another vhost is another queue");
    // Each vhost has its own amq.* exchanges; an exchange of one is unknown in the other.
    declare_ex(&cha, "only-a", ExchangeKind::Fanout).await.unwrap();
    let err = chb
        .exchange_declare(
            "only-a".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect_err("not in vb");
    assert_eq!(text(&err), "NOT_FOUND - no exchange 'only-a' in vhost 'vb'");
    let ch = channel(&_b).await;
    ch.exchange_declare(
        "amq.topic".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("amq.topic in every vhost");
    let names: Vec<String> = admin.vhosts().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["/", "va", "vb"]);
}

/// Listens for the server's connection.close on `conn` (from now on); the future
/// returns (code, text).
pub(crate) fn closed_by_server(conn: &Connection) -> impl Future<Output = (Option<u16>, String)> + '_ {
    let events = conn.events_listener();
    server_close(events)
}

async fn server_close(events: impl smol::stream::Stream<Item = lapin::Event>) -> (Option<u16>, String) {
    use smol::stream::StreamExt;
    let mut events = Box::pin(events);
    let err = within("connection.close from the server", async {
        while let Some(ev) = events.next().await {
            if let lapin::Event::Error(e) = ev {
                return e;
            }
        }
        panic!("events ended without an error");
    })
    .await;
    (code(&err), text(&err))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_closes_its_connections_and_removes_its_data() {
    let Some(mut broker) = in_process() else { return };
    let admin = broker.admin();
    admin.add_vhost("doomed").unwrap();
    admin.set_permissions("guest", "doomed", ".*", ".*", ".*").unwrap();
    let (conn, ch) = open_as(&broker, "guest", "doomed").await;
    ch.queue_declare("dq".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish_confirmed(&ch, "", "dq", b"persistent", BasicProperties::default().with_delivery_mode(2)).await;
    let (_other, other_ch) = open_as(&broker, "guest", "/").await;
    let closing = closed_by_server(&conn);
    let admin2 = admin.clone();
    let deleting = tokio::task::spawn_blocking(move || admin2.delete_vhost("doomed"));
    let (c, t) = closing.await;
    deleting.await.unwrap().expect("deleted");
    assert_eq!((c, t.as_str()), (Some(320), "CONNECTION_FORCED - vhost 'doomed' is deleted"));
    // Connections to other vhosts are untouched.
    declare_q(&other_ch, "still-fine").await.expect("/ unaffected");
    let err = connect_as(&broker, "guest", "guest", "doomed").await.expect_err("gone");
    assert_eq!(text(&err), "NOT_ALLOWED - vhost doomed not found");
    assert!(admin.permissions().iter().all(|p| p.vhost != "doomed"));
    // After a restart it is still gone, and recreating it does not bring the queue back.
    broker.restart();
    let admin = broker.admin();
    assert!(admin.vhosts().iter().all(|v| v.name != "doomed"));
    admin.add_vhost("doomed").unwrap();
    admin.set_permissions("guest", "doomed", ".*", ".*", ".*").unwrap();
    let (_c, ch) = open_as(&broker, "guest", "doomed").await;
    let err = ch
        .queue_declare("dq".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect_err("the queue went with its vhost");
    assert_eq!(text(&err), "NOT_FOUND - no queue 'dq' in vhost 'doomed'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_closes_its_connections() {
    let Some(broker) = broker_with_u() else { return };
    let (conn, _ch) = open_as(&broker, U, "/").await;
    let closing = closed_by_server(&conn);
    let admin = broker.admin();
    let deleting = tokio::task::spawn_blocking(move || admin.delete_user(U));
    let (c, t) = closing.await;
    deleting.await.unwrap().expect("deleted");
    assert_eq!((c, t.as_str()), (Some(320), "CONNECTION_FORCED - user 'u' is deleted"));
    let err = connect_as(&broker, U, PW, "/").await.expect_err("no such user");
    assert_eq!(code(&err), Some(403));
    assert!(broker.admin().permissions().iter().all(|p| p.user != U));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_survive_a_restart() {
    let Some(mut broker) = in_process() else { return };
    let admin = broker.admin();
    admin.add_vhost_with("kept", "a test vhost", &["t1"]).unwrap();
    admin.add_user("alice", Some("secret"), &["administrator", "custom-tag"]).unwrap();
    admin.set_permissions("alice", "kept", "^a", "^b", "^c").unwrap();
    admin.set_topic_permissions("alice", "kept", "amq.topic", "^w", "^r").unwrap();
    admin.set_vhost_limits("kept", VHostLimits { max_connections: Some(5), max_queues: Some(7) }).unwrap();
    admin.set_user_limits("alice", UserLimits { max_connections: Some(3), max_channels: Some(4) }).unwrap();
    let before = (admin.vhosts(), admin.users(), admin.permissions(), admin.topic_permissions());
    broker.restart();
    let admin = broker.admin();
    let after = (admin.vhosts(), admin.users(), admin.permissions(), admin.topic_permissions());
    assert_eq!(before, after);
    let kept = after.0.iter().find(|v| v.name == "kept").expect("vhost kept");
    assert_eq!((kept.description.as_str(), kept.tags.clone()), ("a test vhost", vec!["t1".to_string()]));
    let alice = admin.user("alice").expect("user kept");
    assert_eq!(alice.tags, ["administrator", "custom-tag"]);
    assert_eq!(alice.hashing_algorithm, "rabbit_password_hashing_sha256");
    assert!(admin.check_password("alice", "secret").is_some());
    assert!(admin.check_password("alice", "Secret").is_none());
    // The configured guest was seeded once, with full rights on /, and still works.
    let guest = admin.user("guest").expect("guest seeded");
    assert_eq!(guest.tags, ["administrator"]);
    let conn = connect_as(&broker, "alice", "secret", "kept").await.expect("alice logs in after restart");
    // Permissions hold: configure ^a, and nothing else.
    declare_q(&channel(&conn).await, "a-queue").await.expect("configure ^a");
    let err = declare_q(&channel(&conn).await, "b-queue").await.expect_err("configure ^a only");
    assert_eq!(text(&err), "ACCESS_REFUSED - access to queue 'b-queue' in vhost 'kept' refused for user 'alice'");
    let _ = open(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_limits_refuse_with_rabbitmq_errors() {
    let Some(broker) = in_process() else { return };
    let admin = broker.admin();
    admin.add_vhost("lim").unwrap();
    admin.set_permissions("guest", "lim", ".*", ".*", ".*").unwrap();
    admin.set_vhost_limits("lim", VHostLimits { max_connections: Some(1), max_queues: Some(2) }).unwrap();
    let (conn, ch) = open_as(&broker, "guest", "lim").await;
    let err = connect_as(&broker, "guest", "guest", "lim").await.expect_err("one connection only");
    assert_eq!(code(&err), Some(530));
    assert_eq!(
        text(&err),
        "NOT_ALLOWED - access to vhost 'lim' refused for user 'guest': connection limit (1) is reached"
    );
    declare_q(&ch, "l1").await.unwrap();
    declare_q(&ch, "l2").await.unwrap();
    declare_q(&ch, "l1").await.expect("redeclaring an existing queue is not a new queue");
    expect_err(
        &conn,
        406,
        "PRECONDITION_FAILED - cannot declare queue 'l3': queue limit in vhost 'lim' (2) is reached",
        |ch| async move { declare_q(&ch, "l3").await },
    )
    .await;
    admin.set_vhost_limits("lim", VHostLimits::default()).unwrap();
    declare_q(&channel(&conn).await, "l3").await.expect("limit cleared");
    connect_as(&broker, "guest", "guest", "lim").await.expect("limit cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_refuse_with_rabbitmq_errors() {
    let Some(broker) = broker_with_u() else { return };
    let admin = broker.admin();
    admin.set_user_limits(U, UserLimits { max_connections: Some(1), max_channels: Some(2) }).unwrap();
    let conn = connect_as(&broker, U, PW, "/").await.unwrap();
    let err = connect_as(&broker, U, PW, "/").await.expect_err("one connection");
    assert_eq!(code(&err), Some(530));
    assert_eq!(text(&err), "NOT_ALLOWED - connection refused for user 'u': user connection limit (1) is reached");
    let ch1 = channel(&conn).await;
    let _ch2 = channel(&conn).await;
    let err = within("channel.open", conn.create_channel()).await.expect_err("two channels");
    assert_eq!(code(&err), Some(530));
    assert_eq!(
        text(&err),
        "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (2)"
    );
    drop(ch1);
    // Guest is not limited by u's limits.
    let (_g, _) = open(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_channels_free_the_user_channel_limit() {
    let Some(broker) = broker_with_u() else { return };
    broker.admin().set_user_limits(U, UserLimits { max_connections: None, max_channels: Some(1) }).unwrap();
    let conn = connect_as(&broker, U, PW, "/").await.unwrap();
    for _ in 0..3 {
        let ch = channel(&conn).await;
        ch.close(200, "bye".into()).await.expect("close");
    }
    let conn2 = connect_as(&broker, U, PW, "/").await.unwrap();
    channel(&conn2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonator_may_set_any_user_id() {
    let Some(broker) = broker_with_u() else { return };
    let admin = broker.admin();
    admin.set_permissions(U, "/", ".*", ".*", ".*").unwrap();
    let (conn, _) = open_as(&broker, U, "/").await;
    let publish_as = |who: &'static str| {
        move |ch: Channel| async move {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            ch.basic_publish(
                "amq.fanout".into(),
                "".into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default().with_user_id(who.into()),
            )
            .await?
            .await
        }
    };
    expect_err(
        &conn,
        406,
        "PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'u'",
        publish_as("other"),
    )
    .await;
    admin.set_user_tags(U, &["impersonator"]).unwrap();
    let (conn, _) = open_as(&broker, U, "/").await;
    publish_as("other")(channel(&conn).await).await.expect("impersonator");
}
