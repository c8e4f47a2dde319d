//! Issue 13: what the management API and the Prometheus endpoint show of the traffic:
//! per-queue counts (unacknowledged included) and rates, the connections, channels and
//! consumers (and closing a connection over HTTP), the overview's totals, and
//! `/metrics` in RabbitMQ's metric names, checked by Prometheus's own parser when
//! `promtool` is installed.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicQosOptions};
use serde_json::{json, Value};

use crate::common::*;
use crate::management::{http, GUEST};
use crate::security::closed_by_server;
use crate::util;

/// A broker with the management API and Prometheus on ephemeral ports, sampling
/// rates every 200 ms (None against an external broker).
fn broker() -> Option<(TestBroker, String, String)> {
    let broker = start_broker_with(|c| {
        c.management = Some("127.0.0.1:0".parse().unwrap());
        c.prometheus = Some("127.0.0.1:0".parse().unwrap());
        c.stats_interval_ms = 200;
    });
    if broker.is_external() {
        return None;
    }
    let api = format!("http://{}/api", broker.handle().management_addr().expect("management API listening"));
    let metrics = format!("http://{}/metrics", broker.handle().prometheus_addr().expect("Prometheus listening"));
    Some((broker, api, metrics))
}

/// GETs `url` until `pred` holds on the JSON answer (or fails after the usual wait).
async fn wait_for(url: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = http("GET", url, GUEST, None).await.json();
        if pred(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: never true; last answer {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_unacked_deliveries_and_rates() {
    let Some((broker, api, _)) = broker() else { return };
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "counted").await;
    util::confirm_select(&ch).await;
    for _ in 0..10 {
        util::publish_confirmed(&ch, "", "counted", b"0123456789", Default::default()).await;
    }
    let url = format!("{api}/queues/%2F/counted");
    let q = http("GET", &url, GUEST, None).await.json();
    assert_eq!((q["messages"].clone(), q["messages_ready"].clone()), (json!(10), json!(10)));
    assert_eq!(q["message_bytes_ready"], 100);
    assert_eq!(q["message_stats"]["publish"], 10);

    // A consumer with prefetch 4 holds four unacked; acking two leaves two.
    let consumer_ch = util::channel(&_conn).await;
    consumer_ch.basic_qos(4, BasicQosOptions::default()).await.unwrap();
    let mut consumer = util::consume(&consumer_ch, "counted", false).await;
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(util::next_delivery(&mut consumer).await.delivery_tag);
    }
    let q = wait_for(&url, "4 unacked", |q| q["messages_unacknowledged"] == 4).await;
    assert_eq!((q["messages_ready"].clone(), q["messages"].clone()), (json!(6), json!(10)));
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["message_stats"]["deliver"], 4);
    for tag in &tags[..2] {
        consumer_ch.basic_ack(*tag, BasicAckOptions::default()).await.unwrap();
    }
    let q = wait_for(&url, "2 acked", |q| q["message_stats"]["ack"] == 2).await;
    // Acking freed credit: two more were delivered.
    assert_eq!(q["messages_unacknowledged"], 4);
    assert_eq!(q["messages_ready"], 4);
    assert_eq!(q["message_stats"]["deliver_get"], 6);

    // Closing the consumer's channel returns its unacked messages.
    consumer_ch.close(200, "bye".into()).await.unwrap();
    let q = wait_for(&url, "requeued", |q| q["messages_unacknowledged"] == 0).await;
    assert_eq!(q["messages_ready"], 8);

    // While publishing goes on, the sampler shows a publish rate.
    let publisher = tokio::spawn({
        let ch = ch.clone();
        async move {
            for _ in 0..400 {
                util::publish(&ch, "", "counted", b"r").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let q =
        wait_for(&url, "a publish rate", |q| q["message_stats"]["publish_details"]["rate"].as_f64() > Some(0.0)).await;
    assert!(q["messages_details"]["rate"].as_f64().is_some());
    let overview = wait_for(&format!("{api}/overview"), "an overview publish rate", |o| {
        o["message_stats"]["publish_details"]["rate"].as_f64() > Some(0.0)
    })
    .await;
    // Broker-wide counts are per process (other tests' brokers count too): at least ours.
    assert!(overview["message_stats"]["publish"].as_u64() >= Some(10));
    assert!(overview["message_stats"]["ack"].as_u64() >= Some(2));
    assert!(overview["queue_totals"]["messages_ready"].as_u64() >= Some(8));
    assert_eq!(overview["queue_totals"]["messages_unacknowledged"], 0);
    publisher.abort();

    // A history for graphs, as RabbitMQ's ?lengths_age=&lengths_incr= (seconds).
    let url = format!("{api}/overview?lengths_age=10&lengths_incr=1&msg_rates_age=10&msg_rates_incr=1");
    let o = wait_for(&url, "two samples", |o| {
        o["queue_totals"]["messages_ready_details"]["samples"].as_array().is_some_and(|s| s.len() >= 2)
    })
    .await;
    let samples = o["queue_totals"]["messages_ready_details"]["samples"].as_array().unwrap();
    let times: Vec<u64> = samples.iter().map(|s| s["timestamp"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] == w[1] + 1000), "newest first, 1 s apart: {times:?}");
    assert!(samples.iter().all(|s| s["sample"].as_u64() >= Some(8)), "{samples:?}");
    assert!(o["message_stats"]["publish_details"]["samples"][0]["sample"].as_u64() >= Some(10));
    assert!(o["message_stats"]["publish_details"]["avg_rate"].as_f64().is_some());

    // Once nothing moves, the queue says since when it is idle (RabbitMQ's format).
    let q = wait_for(&format!("{api}/queues/%2F/counted"), "idle_since", |q| q["idle_since"].is_string()).await;
    let since = q["idle_since"].as_str().unwrap();
    assert_eq!((since.len(), &since[10..11], &since[23..]), (29, "T", "+00:00"), "{since}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_consumers_are_listed_and_a_connection_can_be_closed() {
    let Some((broker, api, _)) = broker() else { return };
    let props = lapin::ConnectionProperties::default().with_connection_name("listed-conn".into());
    let conn = util::within("connect", lapin::Connection::connect(broker.url(), props)).await.unwrap();
    let ch = util::channel(&conn).await;
    util::declare_queue(&ch, "watched").await;
    util::confirm_select(&ch).await;
    ch.basic_qos(7, BasicQosOptions::default()).await.unwrap();
    let _consumer = util::consume(&ch, "watched", false).await;

    let conns = wait_for(&format!("{api}/connections"), "the connection", |v| {
        v.as_array().is_some_and(|a| a.iter().any(|c| c["user_provided_name"] == "listed-conn"))
    })
    .await;
    let c = conns.as_array().unwrap().iter().find(|c| c["user_provided_name"] == "listed-conn").unwrap().clone();
    assert_eq!((c["user"].clone(), c["vhost"].clone()), (json!("guest"), json!("/")));
    assert_eq!((c["protocol"].clone(), c["auth_mechanism"].clone()), (json!("AMQP 0-9-1"), json!("PLAIN")));
    assert_eq!(c["channels"], 1);
    assert_eq!(c["port"], broker.addr().port());
    assert!(c["recv_oct"].as_u64() > Some(0) && c["send_oct"].as_u64() > Some(0));
    let name = c["name"].as_str().unwrap().to_string();
    assert_eq!(name, format!("{}:{} -> {}", c["peer_host"].as_str().unwrap(), c["peer_port"], broker.addr()));
    let encoded = name.replace(' ', "%20").replace('>', "%3E");
    let one = http("GET", &format!("{api}/connections/{encoded}"), GUEST, None).await.json();
    assert_eq!(one["name"], name);
    let in_vhost = http("GET", &format!("{api}/vhosts/%2F/connections"), GUEST, None).await.json();
    assert_eq!(in_vhost.as_array().unwrap().len(), 1);

    let channels = http("GET", &format!("{api}/connections/{encoded}/channels"), GUEST, None).await.json();
    let chan = &channels[0];
    assert_eq!(chan["name"], format!("{name} (1)"));
    assert_eq!((chan["number"].clone(), chan["confirm"].clone()), (json!(1), json!(true)));
    assert_eq!((chan["prefetch_count"].clone(), chan["consumer_count"].clone()), (json!(7), json!(1)));
    assert_eq!(chan["connection_details"]["name"], name);
    let by_name = http("GET", &format!("{api}/channels/{encoded}%20(1)"), GUEST, None).await.json();
    assert_eq!(by_name["number"], 1);

    let consumers = http("GET", &format!("{api}/consumers/%2F"), GUEST, None).await.json();
    let k = &consumers[0];
    assert_eq!(k["queue"], json!({"name": "watched", "vhost": "/"}));
    assert_eq!((k["ack_required"].clone(), k["prefetch_count"].clone()), (json!(true), json!(7)));
    assert_eq!(k["channel_details"]["connection_name"], name);

    // A `management` user sees only its own connections and cannot close others'.
    let admin = broker.admin();
    admin.add_user("mona", Some("pw"), &["management"]).unwrap();
    admin.set_permissions("mona", "/", ".*", ".*", ".*").unwrap();
    let mona = Some(("mona", "pw"));
    assert_eq!(http("GET", &format!("{api}/connections"), mona, None).await.json(), json!([]));
    assert_eq!(http("DELETE", &format!("{api}/connections/{encoded}"), mona, None).await.status, 404);
    let overview = http("GET", &format!("{api}/overview"), mona, None).await.json();
    assert_eq!(overview["object_totals"]["connections"], 0);

    // DELETE closes it with 320 and the X-Reason text.
    let closing = closed_by_server(&conn);
    let closed = tokio::task::spawn_blocking({
        let url = format!("{api}/connections/{encoded}");
        move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let auth =
                format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "guest:guest"));
            agent.delete(&url).header("authorization", auth).header("x-reason", "maintenance").call().unwrap().status()
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.as_u16(), 204);
    let (code, text) = closing.await;
    assert_eq!((code, text.as_str()), (Some(320), "CONNECTION_FORCED - maintenance"));
    wait_for(&format!("{api}/connections"), "the connection gone", |v| v == &json!([])).await;
    assert_eq!(http("GET", &format!("{api}/connections/{encoded}"), GUEST, None).await.status, 404);
}

/// GET of a plain-text URL.
async fn get_text(url: &str) -> (u16, String, String) {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = agent.get(&url).call().unwrap();
        let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (resp.status().as_u16(), ctype, resp.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

/// The value of the sample line `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_use_rabbitmq_names_and_parse() {
    let Some((broker, _, metrics)) = broker() else { return };
    let (_conn, ch) = util::open(&broker).await;
    util::declare_queue(&ch, "scraped").await;
    util::confirm_select(&ch).await;
    for _ in 0..5 {
        util::publish_confirmed(&ch, "", "scraped", b"m", Default::default()).await;
    }
    let (status, ctype, text) = get_text(&metrics).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert_eq!(sample(&text, "rabbitmq_queues"), Some(1.0));
    assert_eq!(sample(&text, "rabbitmq_connections"), Some(1.0));
    assert_eq!(sample(&text, "rabbitmq_queue_messages_ready"), Some(5.0));
    assert_eq!(sample(&text, "rabbitmq_queue_messages_unacked"), Some(0.0));
    assert_eq!(sample(&text, "rabbitmq_alarms_memory_used_watermark"), Some(0.0));
    // Other tests in this process count too: at least ours.
    assert!(sample(&text, "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}") >= Some(5.0));
    assert!(sample(&text, "rabbitmq_global_messages_confirmed_total{protocol=\"amqp091\"}") >= Some(5.0));
    assert!(sample(&text, "haremq_store_commit_seconds_count").is_some());
    assert!(text.contains("# TYPE rabbitmq_queue_messages_ready gauge\n"));

    let (_, _, per_object) = get_text(&format!("{metrics}/per-object")).await;
    assert_eq!(sample(&per_object, "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"scraped\"}"), Some(5.0));
    let (status, _, _) = get_text(&metrics.replace("/metrics", "/nothing")).await;
    assert_eq!(status, 404);

    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        eprintln!("promtool not installed (Debian's prometheus package): exposition format not checked by it");
        return;
    }
    for body in [&text, &per_object] {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Clean: parsed, and nothing for promtool's linter to say either.
        assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics: {report}");
    }
}
