//! Issue 13, second slice: the management API's actions (declare, delete, purge, get,
//! publish, bindings), pagination, limits, nodes, parameters and the health checks,
//! over real HTTP (ureq), with the effects checked over AMQP (lapin). Expected
//! statuses and bodies are RabbitMQ 3.10.8's, taken from the reference node.

use base64::Engine;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};

use crate::common::*;
use crate::util;

fn broker() -> Option<(TestBroker, String)> {
    let broker = start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return None;
    }
    let addr = broker.handle().management_addr().expect("management API listening");
    Some((broker, format!("http://{addr}/api")))
}

#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Status and JSON body, for comparing error answers in one assertion.
    fn both(&self) -> (u16, Value) {
        let body = if self.text.is_empty() { Value::Null } else { self.json() };
        (self.status, body)
    }
}

async fn http_as(method: &str, url: String, user: (&str, &str), body: Option<Value>) -> Answer {
    let method = method.to_string();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.0, user.1));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .allow_non_standard_methods(true)
            .build()
            .into();
        let req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url)
            .header("authorization", format!("Basic {auth}"));
        let result = match body {
            Some(b) => agent.run(req.header("content-type", "application/json").body(b.to_string()).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        Answer { status, location, text }
    })
    .await
    .unwrap()
}

/// The API as guest (administrator, all permissions in `/`).
struct Api(String);

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        http_as(method, format!("{}/{path}", self.0), ("guest", "guest"), body).await
    }
    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }
    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(body)).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None).await
    }
}

fn err(status: u16, error: &str, reason: &str) -> (u16, Value) {
    (status, json!({"error": error, "reason": reason}))
}

#[tokio::test]
async fn queues_are_declared_got_purged_and_deleted_over_http() {
    let Some((broker, api)) = broker() else { return };
    let api = Api(api);
    let args = json!({"durable": true, "arguments": {"x-max-length": 10}});
    assert_eq!(api.put("queues/%2F/orders", args.clone()).await.status, 201);
    assert_eq!(api.put("queues/%2F/orders", args).await.status, 204);
    assert_eq!(
        api.put("queues/%2F/orders", json!({"durable": false})).await.both(),
        err(
            400,
            "bad_request",
            "inequivalent arg 'durable' for queue 'orders' in vhost '/': received 'false' but current is 'true'"
        )
    );
    assert_eq!(
        api.put("queues/%2F/orders", json!({"durable": true, "arguments": {"x-max-length": 11}})).await.both(),
        err(
            400,
            "bad_request",
            "inequivalent arg 'x-max-length' for queue 'orders' in vhost '/': received '11' but current is '10'"
        )
    );
    assert_eq!(api.put("queues/nowhere/q", json!({})).await.both(), err(404, "not_found", "vhost_not_found"));
    assert_eq!(api.put("queues/%2F/amq.q", json!({})).await.both(), err(401, "not_authorised", "Access refused."));
    let not_json = api.call("PUT", "queues/%2F/q", None).await;
    assert_eq!(not_json.status, 201, "an empty body declares with the defaults");

    // The queue is there over AMQP, durable, with its argument.
    let (_conn, ch) = util::open(&broker).await;
    let mut lapin_args = FieldTable::default();
    lapin_args.insert("x-max-length".into(), AMQPValue::LongLongInt(10));
    ch.queue_declare("orders".into(), QueueDeclareOptions { durable: true, ..Default::default() }, lapin_args)
        .await
        .expect("an equivalent AMQP declare");
    util::publish(&ch, "", "orders", b"one").await;
    util::publish(&ch, "", "orders", b"\xff\x00").await;
    let deadline = std::time::Instant::now() + WAIT;
    while util::message_count(&ch, "orders").await < 2 {
        assert!(std::time::Instant::now() < deadline, "messages never arrived");
        tokio::task::yield_now().await;
    }

    // Get with requeue: both come back redelivered, the binary one as base64.
    let get = json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000});
    let got = api.post("queues/%2F/orders/get", get.clone()).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json(),
        json!([
            {"payload_bytes": 3, "redelivered": false, "exchange": "", "routing_key": "orders", "message_count": 1,
             "properties": [], "payload": "one", "payload_encoding": "string"},
            {"payload_bytes": 2, "redelivered": false, "exchange": "", "routing_key": "orders", "message_count": 0,
             "properties": [], "payload": "/wA=", "payload_encoding": "base64"},
        ])
    );
    let stats = api.get("queues/%2F/orders").await.json();
    assert_eq!(
        (stats["messages_ready"].clone(), stats["messages_unacknowledged"].clone()),
        (json!(2), json!(0)),
        "requeued: ready again, nothing left unacknowledged"
    );
    let again = api
        .post(
            "queues/%2F/orders/get",
            json!({"count": 1, "ackmode": "reject_requeue_true", "encoding": "base64", "truncate": 2}),
        )
        .await
        .json();
    assert_eq!((again[0]["redelivered"].clone(), again[0]["payload"].clone()), (json!(true), json!("b24=")));
    let over_amqp = ch.basic_get("orders".into(), BasicGetOptions { no_ack: false }).await.unwrap().expect("a message");
    assert!(over_amqp.delivery.redelivered, "requeued by the API, so redelivered");
    assert_eq!(over_amqp.delivery.data, b"one");
    drop(over_amqp);
    ch.basic_recover(lapin::options::BasicRecoverOptions { requeue: true }).await.unwrap();

    // Errors, as RabbitMQ words them.
    let bad = |body: Value| api.post("queues/%2F/orders/get", body);
    assert_eq!(
        bad(json!({"ackmode": "ack_requeue_true", "encoding": "auto"})).await.both(),
        err(400, "bad_request", "[{key_missing,count}]")
    );
    assert_eq!(
        bad(json!({})).await.both(),
        err(400, "bad_request", "[{key_missing,ackmode},{key_missing,count},{key_missing,encoding}]")
    );
    assert_eq!(
        bad(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "x"})).await.both(),
        err(400, "bad_request", "Unsupported encoding. Please use auto or base64.")
    );
    assert_eq!(
        bad(json!({"count": "x", "ackmode": "ack_requeue_true", "encoding": "auto"})).await.both(),
        (400, json!({"error": "bad_request", "reason": ["not_integer", "x"]}))
    );
    assert_eq!(
        api.post("queues/%2F/nope/get", json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}))
            .await
            .both(),
        err(404, "not_found", "NOT_FOUND - no queue 'nope' in vhost '/'")
    );

    // Ack without requeue removes.
    let taken = bad(json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})).await.json();
    assert_eq!(taken[0]["payload"], "one");
    assert_eq!(util::message_count(&ch, "orders").await, 1);

    // Delete refuses a non-empty queue with if-empty; purge empties it.
    assert_eq!(
        api.delete("queues/%2F/orders?if-empty=true").await.both(),
        err(400, "bad_request", "queue 'orders' in vhost '/' not empty")
    );
    let consumer = util::consume(&ch, "q", false).await;
    assert_eq!(
        api.delete("queues/%2F/q?if-unused=true").await.both(),
        err(400, "bad_request", "queue 'q' in vhost '/' in use")
    );
    assert_eq!(api.delete("queues/%2F/orders/contents").await.status, 204);
    assert_eq!(util::message_count(&ch, "orders").await, 0);
    assert_eq!(api.delete("queues/%2F/nope/contents").await.status, 404);
    assert_eq!(api.delete("queues/%2F/orders?if-empty=true").await.status, 204);
    assert_eq!(api.delete("queues/%2F/orders").await.both(), err(404, "Object Not Found", "Not Found"));
    let gone = ch
        .queue_declare(
            "orders".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_eq!(util::code(&gone.unwrap_err()), Some(404));
    // Deleting a consumed queue is allowed without if-unused.
    assert_eq!(api.delete("queues/%2F/q").await.status, 204);
    drop(consumer);
    assert_eq!(api.get("queues/%2F/q").await.status, 404);
}

#[tokio::test]
async fn exchanges_are_declared_published_to_and_deleted_over_http() {
    let Some((broker, api)) = broker() else { return };
    let api = Api(api);
    assert_eq!(api.put("exchanges/%2F/orders-x", json!({"type": "topic", "durable": true})).await.status, 201);
    assert_eq!(api.put("exchanges/%2F/orders-x", json!({"type": "topic", "durable": true})).await.status, 204);
    assert_eq!(
        api.put("exchanges/%2F/orders-x", json!({"type": "fanout", "durable": true})).await.both(),
        err(
            400,
            "bad_request",
            "inequivalent arg 'type' for exchange 'orders-x' in vhost '/': received 'fanout' but current is 'topic'"
        )
    );
    assert_eq!(
        api.put("exchanges/%2F/odd", json!({"type": "nope"})).await.both(),
        err(400, "bad_request", "unknown exchange type 'nope'")
    );
    assert_eq!(api.put("exchanges/%2F/plain", json!({})).await.status, 201);
    assert_eq!(api.get("exchanges/%2F/plain").await.json()["type"], "direct");
    assert_eq!(api.put("exchanges/%2F/amq.direct", json!({"type": "direct", "durable": true})).await.status, 204);
    let refused = err(401, "not_authorised", "Access refused.");
    assert_eq!(api.put("exchanges/%2F/amq.mine", json!({"type": "direct"})).await.both(), refused);
    assert_eq!(api.put("exchanges/%2F/amq.default", json!({"type": "direct"})).await.both(), refused);
    assert_eq!(api.delete("exchanges/%2F/amq.direct").await.both(), refused);
    assert_eq!(api.delete("exchanges/%2F/amq.default").await.both(), refused);

    // Publish over HTTP, receive over AMQP with the properties.
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "orders").await;
    util::bind(&ch, "orders", "orders-x", "eu.#").await;
    let publish = json!({
        "properties": {"content_type": "text/plain", "delivery_mode": 2, "headers": {"h": "v", "n": 1},
                       "message_id": "m1", "priority": 3},
        "routing_key": "eu.de", "payload": "hallo", "payload_encoding": "string"
    });
    assert_eq!(api.post("exchanges/%2F/orders-x/publish", publish).await.both(), (200, json!({"routed": true})));
    let m = ch.basic_get("orders".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("published");
    assert_eq!(m.delivery.data, b"hallo");
    assert_eq!(m.delivery.routing_key.as_str(), "eu.de");
    let p = &m.delivery.properties;
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
    assert_eq!((*p.delivery_mode(), *p.priority()), (Some(2), Some(3)));
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
    let headers = p.headers().as_ref().expect("headers");
    assert_eq!(headers.inner().get("h"), Some(&AMQPValue::LongString("v".into())));

    let to_default =
        json!({"properties": {}, "routing_key": "orders", "payload": "aGk=", "payload_encoding": "base64"});
    assert_eq!(api.post("exchanges/%2F/amq.default/publish", to_default).await.json(), json!({"routed": true}));
    assert_eq!(util::get_body(&ch, "orders").await.as_deref(), Some(&b"hi"[..]));
    let nowhere = json!({"properties": {}, "routing_key": "us", "payload": "x", "payload_encoding": "string"});
    assert_eq!(api.post("exchanges/%2F/orders-x/publish", nowhere.clone()).await.json(), json!({"routed": false}));
    assert_eq!(
        api.post("exchanges/%2F/nox/publish", nowhere).await.both(),
        err(400, "bad_request", "404 NOT_FOUND - no exchange 'nox' in vhost '/'")
    );
    let missing = json!({"properties": {}, "routing_key": "x", "payload": "x"});
    assert_eq!(
        api.post("exchanges/%2F/orders-x/publish", missing).await.both(),
        err(400, "bad_request", "[{key_missing,payload_encoding}]")
    );
    assert_eq!(
        api.post("exchanges/%2F/orders-x/publish", json!({})).await.both(),
        err(
            400,
            "bad_request",
            "[{key_missing,routing_key},\n {key_missing,properties},\n {key_missing,payload},\n {key_missing,payload_encoding}]"
        )
    );
    let not_b64 = json!({"properties": {}, "routing_key": "x", "payload": "!!!", "payload_encoding": "base64"});
    assert_eq!(
        api.post("exchanges/%2F/orders-x/publish", not_b64).await.both(),
        (400, json!({"error": "bad_request", "reason": ["not_base64", "!!!"]}))
    );
    let bad_mode =
        json!({"properties": {"delivery_mode": "x"}, "routing_key": "x", "payload": "", "payload_encoding": "string"});
    assert_eq!(
        api.post("exchanges/%2F/orders-x/publish", bad_mode).await.both(),
        (400, json!({"error": "bad_request", "reason": ["not_int", "delivery_mode"]}))
    );
    let impostor =
        json!({"properties": {"user_id": "other"}, "routing_key": "x", "payload": "", "payload_encoding": "string"});
    assert_eq!(
        api.post("exchanges/%2F/orders-x/publish", impostor).await.both(),
        err(
            400,
            "bad_request",
            "406 PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'guest'"
        )
    );
    assert_eq!(api.put("exchanges/%2F/inner", json!({"type": "direct", "internal": true})).await.status, 201);
    let to_inner = json!({"properties": {}, "routing_key": "x", "payload": "", "payload_encoding": "string"});
    assert_eq!(
        api.post("exchanges/%2F/inner/publish", to_inner).await.both(),
        err(400, "bad_request", "403 ACCESS_REFUSED - cannot publish to internal exchange 'inner' in vhost '/'")
    );

    // Delete: if-unused refuses while it has bindings; then it goes.
    assert_eq!(
        api.delete("exchanges/%2F/orders-x?if-unused=true").await.both(),
        err(400, "bad_request", "exchange 'orders-x' in vhost '/' in use")
    );
    assert_eq!(api.delete("exchanges/%2F/orders-x").await.status, 204);
    assert_eq!(api.delete("exchanges/%2F/orders-x").await.both(), err(404, "Object Not Found", "Not Found"));
    let gone = ch.exchange_declare(
        "orders-x".into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    );
    assert_eq!(util::code(&gone.await.unwrap_err()), Some(404));
}

#[tokio::test]
async fn bindings_are_created_listed_and_deleted_over_http() {
    let Some((broker, api)) = broker() else { return };
    let api = Api(api);
    api.put("queues/%2F/q2", json!({})).await;
    api.put("exchanges/%2F/x1", json!({"type": "direct"})).await;
    api.put("exchanges/%2F/x2", json!({"type": "fanout"})).await;

    let created = api.post("bindings/%2F/e/x1/q/q2", json!({"routing_key": "a b/c%"})).await;
    assert_eq!((created.status, created.location.as_deref()), (201, Some("q2/a%2Bb%252Fc%2525")));
    let empty = api.post("bindings/%2F/e/x1/q/q2", json!({})).await;
    assert_eq!(empty.location.as_deref(), Some("q2/~"));
    let with_args = api.post("bindings/%2F/e/x1/q/q2", json!({"routing_key": "k2", "arguments": {"x-a": "b"}})).await;
    let location = with_args.location.expect("location");
    let props = location.strip_prefix("q2/").expect("relative to the request");
    assert_eq!(props, "k2~OfANRw", "RabbitMQ's key (phash2 of the arguments)");
    let e2e = api.post("bindings/%2F/e/x1/e/x2", json!({"routing_key": "k3"})).await;
    assert_eq!((e2e.status, e2e.location.as_deref()), (201, Some("x2/k3")));

    let listed = api.get("bindings/%2F/e/x1/q/q2").await.json();
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|b| b["properties_key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["~", "a+b%2Fc%25", props]);
    assert_eq!(
        api.get("bindings/%2F/e/x1/e/x2").await.json(),
        json!([{"source": "x1", "vhost": "/", "destination": "x2", "destination_type": "exchange",
                "routing_key": "k3", "arguments": {}, "properties_key": "k3"}])
    );
    assert_eq!(api.get("exchanges/%2F/x1/bindings/source").await.json().as_array().unwrap().len(), 4);
    assert_eq!(api.get("exchanges/%2F/x2/bindings/destination").await.json().as_array().unwrap().len(), 1);
    assert_eq!(api.get("exchanges/%2F/nope/bindings/source").await.json(), json!([]));
    assert_eq!(api.get("queues/nowhere/q2/bindings").await.both(), (200, json!([])));
    let of_queue = api.get("queues/%2F/q2/bindings").await.json();
    assert_eq!(of_queue[0]["source"], "");
    assert_eq!(of_queue.as_array().unwrap().len(), 4);

    // The binding routes over AMQP.
    let (_conn, ch) = util::open(&broker).await;
    util::publish(&ch, "x1", "a b/c%", b"via binding").await;
    let deadline = std::time::Instant::now() + WAIT;
    while util::message_count(&ch, "q2").await < 1 {
        assert!(std::time::Instant::now() < deadline, "never routed");
        tokio::task::yield_now().await;
    }

    // One binding by its key (percent-encoded in the path), then deleted.
    let one = api.get("bindings/%2F/e/x1/q/q2/a%2Bb%252Fc%2525").await;
    assert_eq!(one.json()["routing_key"], "a b/c%");
    assert_eq!(api.get(&format!("bindings/%2F/e/x1/q/q2/{props}")).await.json()["arguments"], json!({"x-a": "b"}));
    assert_eq!(api.delete(&format!("bindings/%2F/e/x1/q/q2/{props}")).await.status, 204);
    assert_eq!(api.delete("bindings/%2F/e/x1/q/q2/a%2Bb%252Fc%2525").await.status, 204);
    assert_eq!(
        api.delete("bindings/%2F/e/x1/q/q2/a%2Bb%252Fc%2525").await.both(),
        err(404, "Object Not Found", "Not Found")
    );
    assert_eq!(api.delete("bindings/%2F/e/x1/e/x2/k3").await.status, 204);
    assert_eq!(api.get("bindings/%2F/e/x1/e/x2").await.json(), json!([]));
    util::publish(&ch, "x1", "a b/c%", b"unrouted").await;
    util::publish(&ch, "", "q2", b"direct").await;
    assert_eq!(util::drain(&ch, "q2").await, ["via binding", "direct"]);

    // Errors.
    assert_eq!(
        api.post("bindings/%2F/e/nope/q/q2", json!({})).await.both(),
        err(404, "not_found", "no exchange 'nope' in vhost '/'")
    );
    assert_eq!(
        api.post("bindings/%2F/e/x1/q/nope", json!({})).await.both(),
        err(404, "not_found", "no queue 'nope' in vhost '/'")
    );
    assert_eq!(
        api.post("bindings/%2F/e/amq.default/q/q2", json!({"routing_key": "z"})).await.both(),
        err(401, "not_authorised", "Access refused.")
    );
}

#[tokio::test]
async fn list_endpoints_paginate_sort_and_select_columns() {
    let Some((_broker, api)) = broker() else { return };
    let api = Api(api);
    for name in ["alpha", "beta", "gamma", "delta", "Alps"] {
        api.put(&format!("queues/%2F/{name}"), json!({"durable": name.len() == 5})).await;
    }
    let page = api.get("queues/%2F?page=1&page_size=2&columns=name").await.json();
    assert_eq!(
        page,
        json!({"filtered_count": 5, "item_count": 2, "items": [{"name": "Alps"}, {"name": "alpha"}], "page": 1,
               "page_count": 3, "page_size": 2, "total_count": 5})
    );
    let last = api.get("queues/%2F?page=3&page_size=2&columns=name").await.json();
    assert_eq!(last["items"], json!([{"name": "gamma"}]));
    // A page starting just past the end is empty (RabbitMQ's lists:sublist rule).
    let past = api.get("queues/%2F?page=2&page_size=5").await.json();
    assert_eq!((past["item_count"].clone(), past["items"].clone()), (json!(0), json!([])));
    assert_eq!(
        api.get("queues/%2F?page=4&page_size=2").await.both(),
        err(400, "page_out_of_range", "Page out of range, page: 4 page size: 2, len: 5")
    );
    assert_eq!(
        api.get("queues/%2F?page=1&page_size=501").await.both(),
        err(400, "invalid_pagination_parameters", "Invalid pagination parameters: page number 1, page size 501")
    );
    assert_eq!(
        api.get("queues/%2F?page=0").await.both(),
        err(400, "invalid_pagination_parameters", "Invalid pagination parameters: page number 0, page size undefined")
    );
    assert_eq!(api.get("queues/%2F?page=x").await.both(), err(400, "bad_request", "Pagination parameters are invalid"));
    // The name filter: case-insensitive substring, or regex; ignored without a page.
    let al = api.get("queues?page=1&name=AL&columns=name").await.json();
    assert_eq!((al["filtered_count"].clone(), al["total_count"].clone()), (json!(2), json!(5)));
    let re = api.get("queues?page=1&name=%5Ea.*a%24&use_regex=true&columns=name").await.json();
    assert_eq!(re["items"], json!([{"name": "alpha"}]));
    assert_eq!(api.get("queues?name=zzz").await.json().as_array().unwrap().len(), 5);
    // Sort (stable) and reverse, dotted columns, without paging.
    let sorted = api.get("queues?sort=durable&sort_reverse=true&columns=name,durable").await.json();
    assert_eq!(
        sorted,
        json!([{"name": "gamma", "durable": true}, {"name": "delta", "durable": true}, {"name": "alpha", "durable": true},
               {"name": "beta", "durable": false}, {"name": "Alps", "durable": false}])
    );
    let nested = api.get("exchanges/%2F?columns=name,arguments.x&page=1&page_size=1").await.json();
    assert_eq!(nested["items"], json!([{"name": ""}]));
    // The same parameters on the other listings.
    assert_eq!(api.get("exchanges?page=1&page_size=3").await.json()["total_count"], 7);
    assert_eq!(api.get("bindings?page=1&page_size=1").await.json()["total_count"], 5);
    assert_eq!(api.get("vhosts?page=1&columns=name").await.json()["items"], json!([{"name": "/"}]));
    assert_eq!(api.get("users?columns=name").await.json(), json!([{"name": "guest"}]));
    for listing in ["connections", "channels", "consumers"] {
        let page = api.get(&format!("{listing}?page=1&page_size=10")).await.json();
        assert_eq!((page["total_count"].clone(), page["page_count"].clone()), (json!(0), json!(0)), "{listing}");
    }
}

#[tokio::test]
async fn vhost_and_user_limits_over_http() {
    let Some((broker, api)) = broker() else { return };
    let api = Api(api);
    assert_eq!(api.get("vhost-limits").await.json(), json!([]));
    assert_eq!(api.put("vhost-limits/%2F/max-queues", json!({"value": 1})).await.status, 204);
    assert_eq!(api.put("vhost-limits/%2F/max-connections", json!({"value": 7})).await.status, 204);
    let expected = json!([{"vhost": "/", "value": {"max-connections": 7, "max-queues": 1}}]);
    assert_eq!(api.get("vhost-limits").await.json(), expected);
    assert_eq!(api.get("vhost-limits/%2F").await.json(), expected);
    assert_eq!(api.get("vhost-limits/nowhere").await.status, 404);
    assert_eq!(
        api.put("vhost-limits/%2F/max-foo", json!({"value": 5})).await.both(),
        err(400, "bad_request", "Validation failed\n\nUnrecognised terms [{<<\"max-foo\">>,5}] in limits\n")
    );
    assert_eq!(
        api.put("vhost-limits/%2F/max-queues", json!({"value": "x"})).await.both(),
        err(400, "bad_request", "Validation failed\n\nmax-queues should be a number, actually was <<\"x\">>\n")
    );
    assert_eq!(
        api.put("vhost-limits/%2F/max-queues", json!({})).await.both(),
        err(400, "bad_request", "[{key_missing,value}]")
    );
    assert_eq!(
        api.put("vhost-limits/nowhere/max-queues", json!({"value": 1})).await.both(),
        err(404, "not_found", "vhost_not_found")
    );
    assert_eq!(api.get("vhost-limits/%2F/max-queues").await.status, 405);
    let params = api.get("parameters").await.json();
    assert_eq!(
        params,
        json!([{"value": {"max-connections": 7, "max-queues": 1}, "vhost": "/", "component": "vhost-limits", "name": "limits"}])
    );

    // The queue limit applies to AMQP clients.
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "first").await;
    let refused = ch.queue_declare("second".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(util::code(&refused.unwrap_err()), Some(406));
    assert_eq!(api.delete("vhost-limits/%2F/max-queues").await.status, 204);
    assert_eq!(api.delete("vhost-limits/%2F/max-queues").await.status, 204);
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "second").await;
    assert_eq!(api.get("vhost-limits/%2F").await.json(), json!([{"vhost": "/", "value": {"max-connections": 7}}]));

    // User limits.
    api.put("users/ann", json!({"password": "pw", "tags": "management"})).await;
    assert_eq!(api.get("user-limits").await.json(), json!([]));
    assert_eq!(api.put("user-limits/ann/max-channels", json!({"value": 5})).await.status, 204);
    assert_eq!(api.put("user-limits/ann/max-connections", json!({"value": 3})).await.status, 204);
    let ann = json!([{"user": "ann", "value": {"max-channels": 5, "max-connections": 3}}]);
    assert_eq!(api.get("user-limits").await.json(), ann);
    assert_eq!(api.get("user-limits/ann").await.json(), ann);
    assert_eq!(api.get("users/ann").await.json()["limits"], json!({"max-channels": 5, "max-connections": 3}));
    assert_eq!(api.get("user-limits/nobody").await.status, 404);
    assert_eq!(
        api.put("user-limits/nobody/max-channels", json!({"value": 5})).await.both(),
        (400, json!({"error": "bad_request", "reason": ["no_such_user", "nobody"]}))
    );
    assert_eq!(
        api.put("user-limits/ann/max-queues", json!({"value": 5})).await.both(),
        err(400, "bad_request", "Unrecognised terms [{<<\"max-queues\">>,5}] in user-limits")
    );
    // A management user sees its own limits only, and may not change them.
    let url = |p: &str| format!("{}/{p}", api.0);
    assert_eq!(http_as("GET", url("user-limits"), ("ann", "pw"), None).await.json(), ann);
    assert_eq!(http_as("GET", url("user-limits/guest"), ("ann", "pw"), None).await.json(), json!([]));
    assert_eq!(
        http_as("PUT", url("user-limits/ann/max-channels"), ("ann", "pw"), Some(json!({"value": 9}))).await.both(),
        err(401, "not_authorised", "Not administrator user")
    );
    assert_eq!(api.delete("user-limits/ann/max-channels").await.status, 204);
    assert_eq!(api.get("user-limits/ann").await.json(), json!([{"user": "ann", "value": {"max-connections": 3}}]));
}

#[tokio::test]
async fn a_management_user_needs_permissions_in_the_vhost() {
    let Some((_broker, api)) = broker() else { return };
    let admin = Api(api.clone());
    admin.put("users/nop", json!({"password": "pw", "tags": "management"})).await;
    admin.put("users/weak", json!({"password": "pw", "tags": "management"})).await;
    admin.put("permissions/%2F/weak", json!({"configure": "^$", "write": "^$", "read": "^$"})).await;
    admin.put("queues/%2F/q", json!({})).await;
    let as_user = |user: &'static str, method: &'static str, path: &str, body: Option<Value>| {
        http_as(method, format!("{api}/{path}"), (user, "pw"), body)
    };
    let no_vhost = err(401, "not_authorised", "User not authorised to access virtual host");
    assert_eq!(as_user("nop", "PUT", "queues/%2F/mine", Some(json!({}))).await.both(), no_vhost);
    let refused = err(401, "not_authorised", "Access refused.");
    let get = json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"});
    assert_eq!(as_user("nop", "POST", "queues/%2F/q/get", Some(get)).await.both(), no_vhost);
    let publish = json!({"properties": {}, "routing_key": "q", "payload": "x", "payload_encoding": "string"});
    assert_eq!(as_user("nop", "POST", "exchanges/%2F/amq.default/publish", Some(publish)).await.both(), no_vhost);
    assert_eq!(as_user("weak", "PUT", "queues/%2F/mine", Some(json!({}))).await.both(), refused);
    assert_eq!(as_user("weak", "DELETE", "queues/%2F/q", None).await.both(), refused);
    assert_eq!(as_user("weak", "DELETE", "queues/%2F/q/contents", None).await.both(), refused);
    assert_eq!(as_user("weak", "PUT", "exchanges/%2F/x", Some(json!({"type": "direct"}))).await.both(), refused);
    assert_eq!(as_user("weak", "POST", "bindings/%2F/e/amq.direct/q/q", Some(json!({}))).await.both(), refused);
    assert_eq!(
        as_user(
            "weak",
            "POST",
            "queues/%2F/q/get",
            Some(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}))
        )
        .await
        .both(),
        err(401, "not_authorised", "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'weak'")
    );
    let publish = json!({"properties": {}, "routing_key": "q", "payload": "x", "payload_encoding": "string"});
    assert_eq!(
        as_user("weak", "POST", "exchanges/%2F/amq.default/publish", Some(publish)).await.both(),
        err(
            400,
            "bad_request",
            "403 ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'weak'"
        )
    );
    assert_eq!(admin.get("queues/%2F/mine").await.status, 404, "nothing was declared");
    assert_eq!(as_user("weak", "GET", "nodes", None).await.both(), err(401, "not_authorised", "Not monitor user"));
    assert_eq!(
        as_user("weak", "GET", "parameters", None).await.both(),
        err(401, "not_authorised", "User not authorised to access object")
    );
    assert_eq!(
        as_user("weak", "GET", "global-parameters", None).await.both(),
        err(401, "not_authorised", "User not authorised to access object")
    );
    assert_eq!(as_user("weak", "GET", "vhost-limits", None).await.json(), json!([{"vhost": "/", "value": []}]));
}

#[tokio::test]
async fn nodes_parameters_and_health_checks() {
    let Some((broker, api)) = broker() else { return };
    let api = Api(api);
    let nodes = api.get("nodes").await.json();
    let node = &nodes[0];
    let name = node["name"].as_str().expect("a node name").to_string();
    assert!(name.contains('@'), "{name}");
    assert_eq!((node["running"].clone(), node["type"].clone()), (json!(true), json!("disc")));
    assert_eq!(node["os_pid"], json!(std::process::id().to_string()));
    assert!(node["mem_used"].as_u64().unwrap() > 0);
    assert!(node["fd_used"].as_u64().unwrap() > 0);
    assert!(node["processors"].as_u64().unwrap() >= 1);
    assert_eq!(node["mem_alarm"], false);
    assert!(node["exchange_types"].as_array().unwrap().iter().any(|t| t["name"] == "topic"));
    assert_eq!(api.get(&format!("nodes/{name}")).await.json()["name"], name);
    assert_eq!(api.get("nodes/rabbit@elsewhere").await.status, 404);
    assert_eq!(api.get("extensions").await.json(), json!([]));

    // Parameters: no components besides the vhost limits.
    assert_eq!(api.get("parameters").await.json(), json!([]));
    assert_eq!(api.get("parameters/shovel").await.json(), json!([]));
    assert_eq!(api.get("parameters/shovel/%2F").await.json(), json!([]));
    assert_eq!(api.get("parameters/shovel/%2F/x").await.status, 404);
    assert_eq!(
        api.put("parameters/shovel/%2F/x", json!({"value": {}})).await.both(),
        err(400, "bad_request", "Validation failed\n\ncomponent shovel not found\n")
    );
    assert_eq!(api.delete("parameters/shovel/%2F/x").await.status, 404);

    // Global parameters.
    assert_eq!(api.get("global-parameters/cluster_name").await.status, 404);
    assert_eq!(api.put("global-parameters/cluster_name", json!({"value": "hare"})).await.status, 201);
    assert_eq!(
        api.put("global-parameters/cluster_name", json!({"name": "cluster_name", "value": "hares"})).await.status,
        204
    );
    assert_eq!(
        api.get("global-parameters/cluster_name").await.json(),
        json!({"name": "cluster_name", "value": "hares"})
    );
    assert_eq!(api.get("global-parameters").await.json(), json!([{"name": "cluster_name", "value": "hares"}]));
    assert_eq!(
        api.put("global-parameters/x", json!({})).await.both(),
        err(400, "bad_request", "[{key_missing,value}]")
    );
    assert_eq!(api.delete("global-parameters/cluster_name").await.status, 204);
    assert_eq!(api.delete("global-parameters/cluster_name").await.status, 404);

    // Health checks.
    let ok = json!({"status": "ok"});
    assert_eq!(api.get("health/checks/local-alarms").await.both(), (200, ok.clone()));
    assert_eq!(api.get("health/checks/virtual-hosts").await.both(), (200, ok));
    let port = broker.addr().port();
    assert_eq!(
        api.get(&format!("health/checks/port-listener/{port}")).await.json(),
        json!({"status": "ok", "port": port})
    );
    let missing = api.get("health/checks/port-listener/1").await;
    assert_eq!(missing.status, 503);
    let body = missing.json();
    assert_eq!(
        (body["status"].clone(), body["reason"].clone(), body["missing"].clone()),
        (json!("failed"), json!("No active listener"), json!(1))
    );
    assert!(body["ports"].as_array().unwrap().contains(&json!(port)));
    assert_eq!(api.get("health/checks/port-listener/abc").await.both(), err(400, "bad_request", "Invalid port"));
    assert_eq!(
        api.get("health/checks/protocol-listener/amqp091").await.json(),
        json!({"status": "ok", "protocol": "amqp"})
    );
    let mqtt = api.get("health/checks/protocol-listener/mqtt").await;
    assert_eq!((mqtt.status, mqtt.json()["missing"].clone()), (503, json!("mqtt")));
    let single = json!({"status": "ok", "reason": "single node cluster"});
    assert_eq!(api.get("health/checks/node-is-quorum-critical").await.json(), single);
    assert_eq!(api.get("health/checks/node-is-mirror-sync-critical").await.json(), single);
}
