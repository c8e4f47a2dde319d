//! Issue 13: policies and operator policies, set over the management HTTP API (ureq)
//! and observed by AMQP clients (lapin): applied at once to existing queues, x-argument
//! precedence, priorities, operator limits, restarts, definitions, and RabbitMQ's
//! status codes and bodies.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::{json, Value};

use crate::common::*;
use crate::management::{http, GUEST};
use crate::util::*;

/// A broker with the management API (None against an external broker).
fn broker() -> Option<(TestBroker, String)> {
    let broker = start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return None;
    }
    let api = api_of(&broker);
    Some((broker, api))
}

fn api_of(broker: &TestBroker) -> String {
    format!("http://{}/api", broker.handle().management_addr().expect("management API listening"))
}

async fn put_policy(api: &str, kind: &str, name: &str, body: Value) -> u16 {
    http("PUT", format!("{api}/{kind}/%2F/{name}"), GUEST, Some(body)).await.status
}

async fn declare_with(ch: &Channel, name: &str, args: &[(&str, AMQPValue)]) {
    let mut t = FieldTable::default();
    for (k, v) in args {
        t.insert((*k).into(), v.clone());
    }
    within("queue.declare", ch.queue_declare(name.into(), QueueDeclareOptions::default(), t))
        .await
        .expect("queue.declare");
}

async fn publish_n(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish(ch, "", queue, i.to_string().as_bytes()).await;
    }
}

/// Polls the ready count until it is `expected` (policies apply at once, but a
/// publish's frames may still be in flight when the check starts).
async fn wait_count(ch: &Channel, queue: &str, expected: u32) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let n = message_count(ch, queue).await;
        if n == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "queue '{queue}' has {n} messages, expected {expected}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn queue_json(api: &str, queue: &str) -> Value {
    let a = http("GET", format!("{api}/queues/%2F/{queue}"), GUEST, None).await;
    assert_eq!(a.status, 200);
    a.json()
}

#[tokio::test]
async fn max_length_policy_trims_an_existing_queue_and_clearing_restores_its_arguments() {
    let Some((broker, api)) = broker() else { return };
    let (_c, ch) = open(&broker).await;
    let q = unique("pol-len");
    declare_with(&ch, &q, &[("x-max-length", AMQPValue::LongInt(5))]).await;
    publish_n(&ch, &q, 5).await;
    wait_count(&ch, &q, 5).await;

    let p = unique("p");
    let def = json!({"pattern": format!("^{q}$"), "definition": {"max-length": 2}, "apply-to": "queues"});
    assert_eq!(put_policy(&api, "policies", &p, def).await, 201);
    // Trimmed from the head at once (drop-head).
    assert_eq!(message_count(&ch, &q).await, 2);
    assert_eq!(drain(&ch, &q).await, ["3", "4"]);
    let listed = queue_json(&api, &q).await;
    assert_eq!(listed["policy"], json!(p));
    assert_eq!(listed["operator_policy"], Value::Null);
    assert_eq!(listed["effective_policy_definition"], json!({"max-length": 2}));

    assert_eq!(http("DELETE", format!("{api}/policies/%2F/{p}"), GUEST, None).await.status, 204);
    publish_n(&ch, &q, 8).await;
    // Its own x-max-length again.
    wait_count(&ch, &q, 5).await;
    let listed = queue_json(&api, &q).await;
    assert_eq!(listed["policy"], Value::Null);
    assert_eq!(listed["effective_policy_definition"], json!({}));
}

#[tokio::test]
async fn message_ttl_policy_expires_and_dead_letter_exchange_policy_dead_letters() {
    let Some((broker, api)) = broker() else { return };
    let (_c, ch) = open(&broker).await;
    let prefix = unique("pol-ttl");
    let (ttl_q, dl_q, dlq) = (format!("{prefix}.ttl"), format!("{prefix}.dl"), format!("{prefix}.dead"));
    let dlx = format!("{prefix}.dlx");
    declare_exchange(&ch, &dlx, ExchangeKind::Fanout).await;
    declare_queue(&ch, &dlq).await;
    bind(&ch, &dlq, &dlx, "").await;
    declare_queue(&ch, &ttl_q).await;
    declare_queue(&ch, &dl_q).await;
    publish_n(&ch, &ttl_q, 3).await;
    wait_count(&ch, &ttl_q, 3).await;

    let body = json!({"pattern": format!("^{prefix}\\.ttl$"), "definition": {"message-ttl": 0}});
    assert_eq!(put_policy(&api, "policies", &unique("ttl"), body).await, 201);
    // The new TTL applies to the head of the existing queue.
    wait_count(&ch, &ttl_q, 0).await;

    let body = json!({"pattern": format!("^{prefix}\\.dl$"), "definition": {"dead-letter-exchange": dlx}});
    assert_eq!(put_policy(&api, "policies", &unique("dlx"), body).await, 201);
    publish(&ch, "", &dl_q, b"rejected").await;
    let got = within("basic.get", ch.basic_get(dl_q.as_str().into(), BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message");
    within("basic.reject", got.delivery.acker.reject(BasicRejectOptions { requeue: false })).await.expect("reject");
    wait_count(&ch, &dlq, 1).await;
    let dead = within("basic.get", ch.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .expect("the dead-lettered message");
    assert_eq!(dead.delivery.data, b"rejected");
    let headers = dead.delivery.properties.headers().clone().expect("x-death headers");
    assert!(headers.inner().contains_key("x-death"));
}

#[tokio::test]
async fn arguments_beat_policies_and_the_higher_priority_policy_wins() {
    let Some((broker, api)) = broker() else { return };
    let (_c, ch) = open(&broker).await;
    let prefix = unique("pol-prio");
    let (low, high, mine) = (format!("{prefix}.low"), format!("{prefix}.high"), format!("{prefix}.mine"));
    for x in [&low, &high, &mine] {
        declare_exchange(&ch, x, ExchangeKind::Fanout).await;
        declare_queue(&ch, &format!("{x}.q")).await;
        bind(&ch, &format!("{x}.q"), x, "").await;
    }
    let (p_low, p_high) = (unique("low"), unique("high"));
    let pattern = format!("^{prefix}\\.work");
    let body = |dlx: &str, priority: i64, len: u64| json!({"pattern": pattern, "priority": priority, "definition": {"dead-letter-exchange": dlx, "max-length": len}});
    assert_eq!(put_policy(&api, "policies", &p_low, body(&low, 1, 1)).await, 201);
    assert_eq!(put_policy(&api, "policies", &p_high, body(&high, 5, 10)).await, 201);

    // No arguments: the priority-5 policy (dead-letters to `high`, max-length 10).
    let plain = format!("{prefix}.work.plain");
    declare_queue(&ch, &plain).await;
    assert_eq!(queue_json(&api, &plain).await["policy"], json!(p_high));
    publish_n(&ch, &plain, 12).await;
    wait_count(&ch, &format!("{high}.q"), 2).await;
    wait_count(&ch, &plain, 10).await;

    // x-dead-letter-exchange beats the policy's; for a limit the lower one applies.
    let own = format!("{prefix}.work.own");
    declare_with(
        &ch,
        &own,
        &[
            ("x-dead-letter-exchange", AMQPValue::LongString(mine.as_str().into())),
            ("x-max-length", AMQPValue::LongInt(3)),
        ],
    )
    .await;
    publish_n(&ch, &own, 4).await;
    wait_count(&ch, &format!("{mine}.q"), 1).await;
    wait_count(&ch, &own, 3).await;
    assert_eq!(message_count(&ch, &format!("{high}.q")).await, 2);

    // Raising the low one's priority moves every matching queue to it at once.
    assert_eq!(put_policy(&api, "policies", &p_low, body(&low, 9, 1)).await, 204);
    wait_count(&ch, &plain, 1).await;
    wait_count(&ch, &format!("{low}.q"), 9).await;
    assert_eq!(queue_json(&api, &plain).await["policy"], json!(p_low));
}

#[tokio::test]
async fn an_operator_policy_lowers_the_policy_limit() {
    let Some((broker, api)) = broker() else { return };
    let (_c, ch) = open(&broker).await;
    let q = unique("pol-op");
    declare_queue(&ch, &q).await;
    let (p, op) = (unique("p"), unique("op"));
    let pattern = format!("^{q}$");
    let body =
        json!({"pattern": pattern, "definition": {"max-length": 5, "dead-letter-exchange": "x"}, "apply-to": "queues"});
    assert_eq!(put_policy(&api, "policies", &p, body).await, 201);
    let body = json!({"pattern": pattern, "definition": {"max-length": 2, "message-ttl": 60000}, "apply-to": "queues"});
    assert_eq!(put_policy(&api, "operator-policies", &op, body).await, 201);
    publish_n(&ch, &q, 6).await;
    wait_count(&ch, &q, 2).await;
    let listed = queue_json(&api, &q).await;
    assert_eq!(listed["policy"], json!(p));
    assert_eq!(listed["operator_policy"], json!(op));
    assert_eq!(
        listed["effective_policy_definition"],
        json!({"max-length": 2, "dead-letter-exchange": "x", "message-ttl": 60000})
    );
    // A looser operator limit leaves the policy's.
    let body = json!({"pattern": pattern, "definition": {"max-length": 50}, "apply-to": "queues"});
    assert_eq!(put_policy(&api, "operator-policies", &op, body).await, 204);
    publish_n(&ch, &q, 6).await;
    wait_count(&ch, &q, 5).await;

    // Operator policies take limits only.
    let refused = http(
        "PUT",
        format!("{api}/operator-policies/%2F/{op}"),
        GUEST,
        Some(json!({"pattern": ".*", "definition": {"dead-letter-exchange": "a"}})),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.json(),
        json!({"error": "bad_request", "reason": "Validation failed\n\n[{<<\"dead-letter-exchange\">>,<<\"a\">>}] are not recognised policy settings\n"})
    );
}

#[tokio::test]
async fn policies_survive_a_restart_and_go_with_their_vhost() {
    let Some((mut broker, api)) = broker() else { return };
    let q = unique("pol-durable");
    {
        let (_c, ch) = open(&broker).await;
        within(
            "queue.declare",
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await
        .expect("declare");
    }
    let body =
        json!({"pattern": format!("^{q}$"), "definition": {"max-length": 1}, "priority": 3, "apply-to": "queues"});
    assert_eq!(put_policy(&api, "policies", "keep", body).await, 201);
    let body = json!({"pattern": "^none$", "definition": {"expires": 1000}});
    assert_eq!(put_policy(&api, "operator-policies", "op-keep", body).await, 201);
    let admin = broker.admin();
    admin.add_vhost("gone").expect("vhost");
    let body = json!({"pattern": ".*", "definition": {"max-length": 1}});
    assert_eq!(http("PUT", format!("{api}/policies/gone/p"), GUEST, Some(body)).await.status, 201);
    admin.delete_vhost("gone").expect("vhost deleted");
    admin.add_vhost("gone").expect("vhost again");

    broker.restart();
    let api = api_of(&broker);
    let listed = http("GET", format!("{api}/policies"), GUEST, None).await.json();
    assert_eq!(
        listed,
        json!([{"vhost": "/", "name": "keep", "pattern": format!("^{q}$"), "apply-to": "queues",
                "definition": {"max-length": 1}, "priority": 3}])
    );
    let op = http("GET", format!("{api}/operator-policies/%2F/op-keep"), GUEST, None).await.json();
    assert_eq!(op["definition"], json!({"expires": 1000}));
    let (_c, ch) = open(&broker).await;
    let props = BasicProperties::default().with_delivery_mode(2);
    for body in [b"a", b"b", b"c"] {
        publish_props(&ch, "", &q, body, props.clone()).await;
    }
    wait_count(&ch, &q, 1).await;
    assert_eq!(drain(&ch, &q).await, ["c"]);
    assert_eq!(queue_json(&api, &q).await["policy"], json!("keep"));
}

#[tokio::test]
async fn definitions_carry_policies_all_or_nothing() {
    let Some((a, api_a)) = broker() else { return };
    let Some((b, api_b)) = broker() else { return };
    let body = json!({"pattern": "^orders\\.", "definition": {"message-ttl": 60000, "overflow": "reject-publish"},
                      "priority": 2, "apply-to": "queues"});
    assert_eq!(put_policy(&api_a, "policies", "ttl", body).await, 201);
    let body = json!({"pattern": "^ex$", "definition": {"alternate-exchange": "ae"}, "apply-to": "exchanges"});
    assert_eq!(put_policy(&api_a, "policies", "ae", body).await, 201);
    let defs = http("GET", format!("{api_a}/definitions"), GUEST, None).await.json();
    assert_eq!(defs["policies"].as_array().map(Vec::len), Some(2));
    let imported = http("POST", format!("{api_b}/definitions"), GUEST, Some(defs.clone())).await;
    assert_eq!(imported.status, 204, "{imported:?}");
    let listed = http("GET", format!("{api_b}/policies"), GUEST, None).await.json();
    assert_eq!(listed, defs["policies"]);

    // One invalid policy: nothing of the file is applied.
    let mut bad = defs.clone();
    bad["queues"] = json!([{"name": "fresh", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}]);
    bad["policies"] = json!([
        {"vhost": "/", "name": "new-one", "pattern": ".*", "apply-to": "all", "definition": {"max-length": 1}, "priority": 0},
        {"vhost": "/", "name": "broken", "pattern": ".*", "apply-to": "all", "definition": {"nope": 1}, "priority": 0}
    ]);
    let refused = http("POST", format!("{api_b}/definitions"), GUEST, Some(bad)).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(http("GET", format!("{api_b}/policies"), GUEST, None).await.json(), defs["policies"]);
    assert_eq!(http("GET", format!("{api_b}/queues/%2F/fresh"), GUEST, None).await.status, 404);
    drop((a, b));
}

#[tokio::test]
async fn http_answers_follow_rabbitmq() {
    let Some((broker, api)) = broker() else { return };
    let (_c, ch) = open(&broker).await;
    let put = |path: String, body: Value| http("PUT", format!("{api}/{path}"), GUEST, Some(body));
    let bad = |reason: &str| json!({"error": "bad_request", "reason": reason});

    let a = put("policies/%2F/e".into(), json!({"pattern": "^x", "definition": {"foo": 1}})).await;
    assert_eq!(
        (a.status, a.json()),
        (400, bad("Validation failed\n\n[{&lt;&lt;\"foo\"&gt;&gt;,1}] are not recognised policy settings\n"))
    );
    let a = put("policies/%2F/e".into(), json!({"pattern": "^x", "definition": {"max-length": -1}})).await;
    assert_eq!((a.status, a.json()), (400, bad("Validation failed\n\n-1 is not a valid maximum length\n")));
    let a = put("policies/%2F/e".into(), json!({"pattern": "^x", "definition": {}})).await;
    assert_eq!((a.status, a.json()), (400, bad("Validation failed\n\nno policy provided\n")));
    let a = put("policies/%2F/e".into(), json!({"definition": {"max-length": 1}})).await;
    assert_eq!((a.status, a.json()), (400, bad("[{key_missing,pattern}]")));
    let a =
        put("policies/%2F/e".into(), json!({"pattern": "^x", "definition": {"max-length": 1}, "priority": "a"})).await;
    assert_eq!(
        (a.status, a.json()),
        (400, bad("Validation failed\n\npriority should be a number, actually was &lt;&lt;\"a\"&gt;&gt;\n"))
    );
    let a = put("policies/nowhere/e".into(), json!({"pattern": "^x", "definition": {"max-length": 1}})).await;
    assert_eq!((a.status, a.json()), (404, json!({"error": "not_found", "reason": "vhost_not_found"})));
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    let a = http("GET", format!("{api}/policies/%2F/none"), GUEST, None).await;
    assert_eq!((a.status, a.json()), (404, not_found.clone()));
    let a = http("DELETE", format!("{api}/policies/%2F/none"), GUEST, None).await;
    assert_eq!((a.status, a.json()), (404, not_found.clone()));
    assert_eq!(http("GET", format!("{api}/policies/nowhere"), GUEST, None).await.status, 404);

    // An exchange policy: its alternate exchange takes what the exchange cannot route.
    let x = unique("pol-x");
    let ae = format!("{x}.ae");
    declare_exchange(&ch, &x, ExchangeKind::Direct).await;
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    declare_queue(&ch, &format!("{ae}.q")).await;
    bind(&ch, &format!("{ae}.q"), &ae, "").await;
    let body = json!({"pattern": format!("^{x}$"), "definition": {"alternate-exchange": ae}, "apply-to": "exchanges"});
    assert_eq!(put(format!("policies/%2F/{x}"), body).await.status, 201);
    publish(&ch, &x, "nowhere", b"to-ae").await;
    wait_count(&ch, &format!("{ae}.q"), 1).await;
    let listed = http("GET", format!("{api}/exchanges/%2F/{x}"), GUEST, None).await.json();
    assert_eq!(listed["policy"], json!(x));
    let other = http("GET", format!("{api}/exchanges/%2F/{ae}"), GUEST, None).await.json();
    assert!(other.get("policy").is_none(), "no policy key without a policy: {other}");
    let one = http("GET", format!("{api}/policies/%2F/{x}"), GUEST, None).await.json();
    assert_eq!(
        one,
        json!({"vhost": "/", "name": x, "pattern": format!("^{x}$"), "apply-to": "exchanges",
               "definition": {"alternate-exchange": ae}, "priority": 0})
    );

    // Tags: management users list, only policymakers (with access) and administrators
    // write; operator policies one by one are for administrators.
    let admin = broker.admin();
    admin.add_user("mg", Some("mg"), &["management"]).unwrap();
    admin.add_user("pm", Some("pm"), &["policymaker"]).unwrap();
    for u in ["mg", "pm"] {
        admin.set_permissions(u, "/", ".*", ".*", ".*").unwrap();
    }
    let body = json!({"pattern": "^zz", "definition": {"max-length": 1}});
    let a = http("PUT", format!("{api}/policies/%2F/by-mg"), Some(("mg", "mg")), Some(body.clone())).await;
    assert_eq!(
        (a.status, a.json()),
        (401, json!({"error": "not_authorised", "reason": "User not authorised to access object"}))
    );
    let a = http("PUT", format!("{api}/policies/%2F/by-pm"), Some(("pm", "pm")), Some(body.clone())).await;
    assert_eq!(a.status, 201);
    let listed = http("GET", format!("{api}/policies"), Some(("mg", "mg")), None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json().as_array().map(Vec::len), Some(2));
    let a = http("PUT", format!("{api}/operator-policies/%2F/by-pm"), Some(("pm", "pm")), Some(body)).await;
    assert_eq!((a.status, a.json()), (401, json!({"error": "not_authorised", "reason": "Not administrator user"})));
    let a = http("GET", format!("{api}/operator-policies"), Some(("mg", "mg")), None).await;
    assert_eq!((a.status, a.json()), (200, json!([])));
    assert_eq!(http("DELETE", format!("{api}/policies/%2F/by-pm"), Some(("pm", "pm")), None).await.status, 204);
}

#[tokio::test]
async fn expires_and_overflow_policies_act_as_their_arguments() {
    let Some((broker, api)) = broker() else { return };
    let (_c, ch) = open(&broker).await;

    // expires: an unused queue is deleted once the policy's period passes.
    let idle = unique("pol-idle");
    declare_queue(&ch, &idle).await;
    let body = json!({"pattern": format!("^{idle}$"), "definition": {"expires": 100}});
    assert_eq!(put_policy(&api, "policies", &unique("exp"), body).await, 201);
    let deadline = std::time::Instant::now() + WAIT;
    while http("GET", format!("{api}/queues/%2F/{idle}"), GUEST, None).await.status != 404 {
        assert!(std::time::Instant::now() < deadline, "queue '{idle}' was not deleted by its expires policy");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // overflow reject-publish with a lower max-length: what is there stays (RabbitMQ
    // trims only under drop-head), new messages are refused (nacked).
    let full = unique("pol-full");
    declare_queue(&ch, &full).await;
    publish_n(&ch, &full, 5).await;
    wait_count(&ch, &full, 5).await;
    let body = json!({"pattern": format!("^{full}$"), "definition": {"max-length": 2, "overflow": "reject-publish"}});
    assert_eq!(put_policy(&api, "policies", &unique("full"), body).await, 201);
    confirm_select(&ch).await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            full.as_str().into(),
            BasicPublishOptions::default(),
            b"refused",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    let c = within("publisher confirm", confirm).await.expect("confirm");
    assert!(c.is_nack(), "expected a nack from reject-publish: {c:?}");
    assert_eq!(message_count(&ch, &full).await, 5);
}
