//! Issue 13: the management HTTP API over real HTTP (ureq) to a broker whose API
//! listens on an ephemeral port, checked against RabbitMQ 3.10.8's status codes and
//! bodies; what it creates is then used over AMQP (lapin).

use base64::Engine;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{json, Value};

use crate::common::*;
use crate::util;

/// A broker with the management API on an ephemeral port (none against an external
/// broker: these tests need the in-process one).
fn broker() -> Option<(TestBroker, String)> {
    let broker = start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return None;
    }
    let addr = broker.handle().management_addr().expect("management API listening");
    Some((broker, format!("http://{addr}/api")))
}

/// One HTTP answer: status, `www-authenticate` header, body (JSON when there is one).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    challenge: Option<String>,
    allow: Option<String>,
    text: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

/// A blocking request (run on tokio's blocking pool so lapin's connections keep
/// running meanwhile).
pub(crate) async fn http(
    method: &str,
    url: impl Into<String>,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> Answer {
    let (method, url) = (method.to_string(), url.into());
    let auth = auth.map(|(u, p)| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .allow_non_standard_methods(true)
            .build()
            .into();
        let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        if let Some(a) = auth {
            req = req.header("authorization", format!("Basic {a}"));
        }
        let result = match body {
            Some(b) => agent.run(req.header("content-type", "application/json").body(b.to_string()).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let (challenge, allow) = (header("www-authenticate"), header("allow"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        Answer { status, challenge, allow, text }
    })
    .await
    .unwrap()
}

pub(crate) const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));
const REALM: &str = "Basic realm=\"RabbitMQ Management\"";

#[tokio::test]
async fn authentication_follows_rabbitmq() {
    let Some((broker, api)) = broker() else { return };
    let url = format!("{api}/overview");
    let none = http("GET", &url, None, None).await;
    assert_eq!((none.status, none.challenge.as_deref(), none.text.as_str()), (401, Some(REALM), ""));
    let wrong = http("GET", &url, Some(("guest", "nope")), None).await;
    assert_eq!((wrong.status, wrong.challenge.as_deref()), (401, Some(REALM)));
    assert_eq!(wrong.json(), json!({"error": "not_authorized", "reason": "Login failed"}));
    let unknown = http("GET", &url, Some(("nobody", "x")), None).await;
    assert_eq!(unknown.status, 401);

    let admin = broker.admin();
    admin.add_user("plain", Some("p"), &[]).unwrap();
    let plain = http("GET", &url, Some(("plain", "p")), None).await;
    assert_eq!(plain.status, 401);
    assert_eq!(plain.json(), json!({"error": "not_authorised", "reason": "Not management user"}));

    admin.add_user("mon", Some("p"), &["monitoring"]).unwrap();
    let mon = Some(("mon", "p"));
    assert_eq!(http("GET", &url, mon, None).await.status, 200);
    assert_eq!(http("GET", &format!("{api}/queues"), mon, None).await.status, 200);
    assert_eq!(
        http("GET", &format!("{api}/whoami"), mon, None).await.json(),
        json!({"name": "mon", "tags": ["monitoring"]})
    );
    let put = http("PUT", &format!("{api}/vhosts/mon-made"), mon, Some(json!({}))).await;
    assert_eq!(put.status, 401);
    assert_eq!(put.json(), json!({"error": "not_authorised", "reason": "Not administrator user"}));
    assert_eq!(http("GET", &format!("{api}/users"), mon, None).await.status, 401);
    assert!(admin.vhosts().iter().all(|v| v.name != "mon-made"));

    // A `management` user sees only the vhosts it has permissions in.
    admin.add_vhost("seen").unwrap();
    admin.add_vhost("unseen").unwrap();
    admin.add_user("mg", Some("p"), &["management"]).unwrap();
    admin.set_permissions("mg", "seen", ".*", ".*", ".*").unwrap();
    let vhosts = http("GET", &format!("{api}/vhosts"), Some(("mg", "p")), None).await.json();
    let names: Vec<&str> = vhosts.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["seen"]);
    assert_eq!(http("GET", &format!("{api}/queues/unseen"), Some(("mg", "p")), None).await.status, 401);
    let o = http("GET", &format!("{api}/overview"), Some(("mg", "p")), None).await.json();
    // Its vhost's default exchange and five amq.* ones; of connections and channels only
    // its own (none).
    assert_eq!(
        o["object_totals"],
        json!({"connections": 0, "channels": 0, "exchanges": 6, "queues": 0, "consumers": 0})
    );
}

#[tokio::test]
async fn not_found_and_wrong_method_follow_rabbitmq() {
    let Some((_broker, api)) = broker() else { return };
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    for path in ["nope", "vhosts/missing", "queues/%2F/missing", "exchanges/%2F/missing", "users/missing", "a/b/c/d/e"]
    {
        let a = http("GET", &format!("{api}/{path}"), GUEST, None).await;
        assert_eq!((a.status, a.json()), (404, not_found.clone()), "{path}");
    }
    let a = http("DELETE", &format!("{api}/vhosts/missing"), GUEST, None).await;
    assert_eq!(a.status, 404);
    let a = http("POST", &format!("{api}/vhosts/x"), GUEST, None).await;
    assert_eq!((a.status, a.allow.as_deref(), a.text.as_str()), (405, Some("HEAD, GET, PUT, DELETE, OPTIONS"), ""));
    let a = http("PUT", &format!("{api}/overview"), GUEST, None).await;
    assert_eq!((a.status, a.allow.as_deref()), (405, Some("HEAD, GET, OPTIONS")));
    let a = http("PUT", &format!("{api}/vhosts/bad-json"), GUEST, None).await;
    assert_eq!(a.status, 201, "an empty body is an empty object");
    let a = http("PUT", &format!("{api}/users/u"), GUEST, Some(json!({"password": "p"}))).await;
    assert_eq!(a.json(), json!({"error": "bad_request", "reason": "tags_not_present"}));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_bad_request() {
    let Some((broker, api)) = broker() else { return };
    let addr = broker.handle().management_addr().unwrap();
    // Sent raw: ureq would only send valid JSON through the helper.
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let body = "{bad";
        write!(
            s,
            "PUT /api/vhosts/v HTTP/1.1\r\nhost: x\r\nauthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.ends_with(r#"{"error":"bad_request","reason":"not_json"}"#), "{text}");
    assert!(http("GET", &format!("{api}/vhosts/v"), GUEST, None).await.status == 404);
}

#[tokio::test]
async fn overview_and_health() {
    let Some((broker, api)) = broker() else { return };
    let o = http("GET", &format!("{api}/overview"), GUEST, None).await.json();
    assert_eq!(o["product_name"], "HareMQ");
    assert_eq!(o["rabbitmq_version"], "3.10.0");
    assert!(o["node"].as_str().unwrap().starts_with("haremq@"));
    // The vhost `/` has the default exchange and the five amq.* ones (amq.rabbitmq.trace does not exist).
    assert_eq!(
        o["object_totals"],
        json!({"connections": 0, "channels": 0, "exchanges": 6, "queues": 0, "consumers": 0})
    );
    assert_eq!(o["queue_totals"]["messages"], 0);
    assert_eq!(o["message_stats"]["publish_details"], json!({"rate": 0.0}));
    let ports: Vec<(String, u64)> = o["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["protocol"].as_str().unwrap().to_string(), l["port"].as_u64().unwrap()))
        .collect();
    let mgmt = broker.handle().management_addr().unwrap().port();
    assert_eq!(ports, [("amqp".to_string(), u64::from(broker.addr().port())), ("http".to_string(), u64::from(mgmt))]);
    let h = http("GET", &format!("{api}/health/checks/alarms"), GUEST, None).await;
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn vhost_user_and_permissions_made_over_http_let_a_client_in() {
    let Some((broker, api)) = broker() else { return };
    let put = |path: &str, body: Value| http("PUT", format!("{api}/{path}"), GUEST, Some(body));
    assert_eq!(put("vhosts/shop", json!({"description": "the shop", "tags": "prod,eu"})).await.status, 201);
    assert_eq!(put("vhosts/shop", json!({})).await.status, 204);
    let v = http("GET", &format!("{api}/vhosts/shop"), GUEST, None).await.json();
    assert_eq!((v["description"].clone(), v["tags"].clone()), (json!("the shop"), json!(["prod", "eu"])));
    assert_eq!(put("vhosts/shop", json!({"tags": ["prod"]})).await.status, 204);
    let v = http("GET", &format!("{api}/vhosts/shop"), GUEST, None).await.json();
    assert_eq!((v["description"].clone(), v["tags"].clone()), (json!("the shop"), json!(["prod"])));

    assert_eq!(put("users/alice", json!({"password": "s3cret", "tags": ["management"]})).await.status, 201);
    assert_eq!(put("users/alice", json!({"password": "s3cret", "tags": "management,monitoring"})).await.status, 204);
    let u = http("GET", &format!("{api}/users/alice"), GUEST, None).await.json();
    assert_eq!(u["tags"], json!(["management", "monitoring"]));
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");

    let perms = json!({"configure": "^a-", "write": ".*", "read": ".*"});
    assert_eq!(put("permissions/shop/alice", perms.clone()).await.status, 201);
    assert_eq!(put("permissions/shop/alice", perms).await.status, 204);
    let p = http("GET", &format!("{api}/permissions/shop/alice"), GUEST, None).await.json();
    assert_eq!(p, json!({"user": "alice", "vhost": "shop", "configure": "^a-", "write": ".*", "read": ".*"}));
    let of_user = http("GET", &format!("{api}/users/alice/permissions"), GUEST, None).await.json();
    assert_eq!(of_user.as_array().unwrap().len(), 1);
    let of_vhost = http("GET", &format!("{api}/vhosts/shop/permissions"), GUEST, None).await.json();
    assert_eq!(of_vhost, json!([p]));
    assert_eq!(http("GET", &format!("{api}/vhosts/nowhere/permissions"), GUEST, None).await.status, 404);
    assert_eq!(put("permissions/nowhere/alice", json!({"configure": "", "write": "", "read": ""})).await.status, 404);
    let topic = json!({"exchange": "amq.topic", "write": "^a\\.", "read": ".*"});
    assert_eq!(put("topic-permissions/shop/alice", topic).await.status, 201);
    let t = http("GET", &format!("{api}/topic-permissions/shop/alice"), GUEST, None).await.json();
    assert_eq!(t, json!([{"user": "alice", "vhost": "shop", "exchange": "amq.topic", "write": "^a\\.", "read": ".*"}]));
    let t_vhost = http("GET", &format!("{api}/vhosts/shop/topic-permissions"), GUEST, None).await.json();
    assert_eq!(t_vhost, t);

    // The user logs in to the vhost over AMQP, within its rights.
    let conn = util::within(
        "connect",
        lapin::Connection::connect(&broker.url_for("alice", "s3cret", "shop"), lapin::ConnectionProperties::default()),
    )
    .await
    .expect("alice logs in to shop");
    let ch = util::channel(&conn).await;
    ch.queue_declare("a-q".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("allowed");
    let refused = ch.queue_declare("b-q".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(util::code(&refused.unwrap_err()), Some(403));
    drop(conn);

    // Deleting takes the rights away, then the user, then the vhost.
    assert_eq!(http("DELETE", &format!("{api}/permissions/shop/alice"), GUEST, None).await.status, 204);
    assert_eq!(http("DELETE", &format!("{api}/permissions/shop/alice"), GUEST, None).await.status, 404);
    assert_eq!(http("DELETE", &format!("{api}/users/alice"), GUEST, None).await.status, 204);
    assert_eq!(http("GET", &format!("{api}/users/alice"), GUEST, None).await.status, 404);
    assert_eq!(http("DELETE", &format!("{api}/vhosts/shop"), GUEST, None).await.status, 204);
    assert_eq!(http("GET", &format!("{api}/vhosts/shop"), GUEST, None).await.status, 404);
}

#[tokio::test]
async fn queues_exchanges_and_bindings_are_listed() {
    let Some((broker, api)) = broker() else { return };
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "listed").await;
    util::declare_exchange(&ch, "listed-x", lapin::ExchangeKind::Topic).await;
    util::bind(&ch, "listed", "listed-x", "a.#").await;
    util::confirm_select(&ch).await;
    for _ in 0..3 {
        util::publish_confirmed(&ch, "listed-x", "a.b", b"m", Default::default()).await;
    }
    let q = http("GET", &format!("{api}/queues/%2F/listed"), GUEST, None).await.json();
    assert_eq!(q["name"], "listed");
    assert_eq!(q["vhost"], "/");
    assert_eq!(q["type"], "classic");
    assert_eq!(q["state"], "running");
    assert_eq!(q["messages_ready"], 3);
    assert_eq!(q["consumers"], 0);
    assert_eq!(q["messages_unacknowledged"], 0);
    assert_eq!(q["messages"], 3);
    assert_eq!(q["message_stats"]["publish"], 3);
    let all = http("GET", &format!("{api}/queues"), GUEST, None).await.json();
    assert_eq!(all.as_array().unwrap().len(), 1);

    let x = http("GET", &format!("{api}/exchanges/%2F/listed-x"), GUEST, None).await.json();
    assert_eq!((x["type"].clone(), x["durable"].clone()), (json!("topic"), json!(false)));
    let default = http("GET", &format!("{api}/exchanges/%2F/amq.default"), GUEST, None).await.json();
    assert_eq!(default["name"], "");
    let exchanges = http("GET", &format!("{api}/exchanges/%2F"), GUEST, None).await.json();
    // The default exchange (once), amq.direct, amq.fanout, amq.headers, amq.match,
    // amq.topic and listed-x.
    assert_eq!(exchanges.as_array().unwrap().len(), 7);
    assert_eq!(exchanges.as_array().unwrap().iter().filter(|x| x["name"] == "").count(), 1);

    let b = http("GET", &format!("{api}/bindings/%2F"), GUEST, None).await.json();
    assert_eq!(
        b,
        json!([
            {"source": "", "vhost": "/", "destination": "listed", "destination_type": "queue",
             "routing_key": "listed", "arguments": {}, "properties_key": "listed"},
            {"source": "listed-x", "vhost": "/", "destination": "listed", "destination_type": "queue",
             "routing_key": "a.#", "arguments": {}, "properties_key": "a.%23"},
        ])
    );
}

#[tokio::test]
async fn definitions_move_between_brokers_over_http() {
    let Some((a, api_a)) = broker() else { return };
    let admin = a.admin();
    admin.add_vhost("moved").unwrap();
    admin.add_user("mover", Some("pw"), &["management"]).unwrap();
    admin.set_permissions("mover", "moved", ".*", ".*", ".*").unwrap();
    let (_conn, ch) = util::open(&a).await;
    ch.queue_declare("kept".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let exported = http("GET", &format!("{api_a}/definitions"), GUEST, None).await;
    assert_eq!(exported.status, 200);
    let defs = exported.json();

    let Some((b, api_b)) = broker() else { return };
    let imported = http("POST", &format!("{api_b}/definitions"), GUEST, Some(defs.clone())).await;
    assert_eq!((imported.status, imported.text.as_str()), (204, ""));
    let again = http("GET", &format!("{api_b}/definitions"), GUEST, None).await.json();
    assert_eq!(again, defs);
    let conn = util::within(
        "connect",
        lapin::Connection::connect(&b.url_for("mover", "pw", "moved"), lapin::ConnectionProperties::default()),
    )
    .await;
    assert!(conn.is_ok(), "the moved user logs in to the moved vhost");

    // A refused import changes nothing and says why.
    let bad = json!({"vhosts": [{"name": "fresh"}], "queues": [{"name": "q", "vhost": "nope", "durable": true,
        "auto_delete": false, "arguments": {}}]});
    let refused = http("POST", &format!("{api_b}/definitions"), GUEST, Some(bad)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"], "bad_request");
    assert!(b.admin().vhosts().iter().all(|v| v.name != "fresh"));
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let Some((broker, api)) = broker() else { return };
    let addr = broker.handle().management_addr().unwrap();
    let raw = |head: String, body_len: usize| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut w = s.try_clone().unwrap();
            // The server may answer and close before all is sent: write errors are fine.
            let writer = std::thread::spawn(move || {
                let _ = w.write_all(head.as_bytes());
                let chunk = vec![b' '; 1 << 16];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if w.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
            });
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            drop(s);
            let _ = writer.join();
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let big_header = format!("GET /api/overview HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(1 << 20));
    let text = raw(big_header, 0).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 431"), "{text:.200}");
    let len = (16 << 20) + 1;
    let head = format!(
        "POST /api/definitions HTTP/1.1\r\nhost: x\r\nauthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\ncontent-length: {len}\r\n\r\n"
    );
    let text = raw(head, len).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 413"), "{text:.200}");
    // The API still answers.
    assert_eq!(http("GET", format!("{api}/overview"), GUEST, None).await.status, 200);
}

#[tokio::test]
async fn aliveness_test_publishes_and_gets_a_message() {
    let Some((broker, api)) = broker() else { return };
    for _ in 0..2 {
        let a = http("GET", &format!("{api}/aliveness-test/%2F"), GUEST, None).await;
        assert_eq!((a.status, a.json()), (200, json!({"status": "ok"})));
    }
    // The queue stays, empty, as in RabbitMQ.
    let q = http("GET", &format!("{api}/queues/%2F/aliveness-test"), GUEST, None).await.json();
    assert_eq!((q["messages_ready"].clone(), q["durable"].clone()), (json!(0), json!(false)));
    assert_eq!(http("GET", &format!("{api}/aliveness-test/missing"), GUEST, None).await.status, 404);
    broker.admin().add_user("mon", Some("p"), &["monitoring"]).unwrap();
    let refused = http("GET", &format!("{api}/aliveness-test/%2F"), Some(("mon", "p")), None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.json(),
        json!({"error": "not_authorised", "reason": "User not authorised to access virtual host"})
    );
}

#[tokio::test]
async fn a_vhosts_definitions_move_to_another_vhost() {
    let Some((broker, api)) = broker() else { return };
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "vq").await;
    util::declare_exchange(&ch, "vx", lapin::ExchangeKind::Fanout).await;
    util::bind(&ch, "vq", "vx", "").await;
    let defs = http("GET", &format!("{api}/definitions/%2F"), GUEST, None).await.json();
    let keys: Vec<&str> = defs.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["bindings", "exchanges", "parameters", "policies", "queues", "rabbit_version"]);
    assert_eq!(defs["queues"][0]["name"], "vq");
    assert!(defs["queues"][0].get("vhost").is_none(), "vhost-scoped items name no vhost: {defs}");
    assert_eq!(defs["bindings"][0]["source"], "vx");

    broker.admin().add_vhost("copy").unwrap();
    let post = http("POST", &format!("{api}/definitions/copy"), GUEST, Some(defs.clone())).await;
    assert_eq!(post.status, 204, "{}", post.text);
    let q = http("GET", &format!("{api}/queues/copy/vq"), GUEST, None).await.json();
    assert_eq!(q["vhost"], "copy");
    let b = http("GET", &format!("{api}/exchanges/copy/vx/bindings/source"), GUEST, None).await.json();
    assert_eq!(b[0]["destination"], "vq");
    assert_eq!(http("GET", &format!("{api}/definitions/nope"), GUEST, None).await.status, 404);
    let with_users = json!({"users": [{"name": "x", "password_hash": "", "tags": ""}], "queues": []});
    assert_eq!(http("POST", &format!("{api}/definitions/copy"), GUEST, Some(with_users)).await.status, 400);
}
