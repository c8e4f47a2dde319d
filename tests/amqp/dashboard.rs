//! Issue 13: the web dashboard in a real browser. Headless Chromium, driven through
//! chromedriver (spawned here on an ephemeral loopback port) with fantoccini, logs in,
//! declares a queue, publishes and gets a message back, all through the pages, against
//! a broker whose management listener serves both the dashboard and the API.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without
//! them the test says so and returns. Screenshots of the main pages are written to
//! `target/dashboard-screenshots/` for a person to look at.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::*;
use crate::util;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the UI gets for anything (the page refreshes every 5 s; rates are
/// sampled every 5 s).
const UI_WAIT: Duration = Duration::from_secs(20);

/// chromedriver in its own process group, with a fresh browser profile directory;
/// dropping it kills the group (chromedriver and any browser it left) and removes the
/// profile.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let profile = std::env::temp_dir().join(unique("haremq-chromium-profile"));
        std::fs::create_dir_all(&profile).expect("profile directory");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, port, profile };
        let deadline = Instant::now() + UI_WAIT;
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn client(&self) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1440,1000",
            "--force-device-scale-factor=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", self.profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0) above).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group only.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The text of the first element matching `css`, or None.
async fn text(c: &Client, css: &str) -> Option<String> {
    let v = c
        .execute("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", vec![json!(css)])
        .await
        .expect("script runs");
    v.as_str().map(|s| s.trim().to_string())
}

/// Polls the DOM until `css`'s text satisfies `ok`; panics with the last text seen.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let seen = text(c, css).await;
        if let Some(t) = seen.as_deref().filter(|t| ok(t)) {
            return t.to_string();
        }
        assert!(Instant::now() < deadline, "waited {UI_WAIT:?} for {what} ({css}); last seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Like [`wait_text`], pressing the dashboard's Refresh button every half second.
async fn refreshing_until(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let seen = text(c, css).await;
        if let Some(t) = seen.as_deref().filter(|t| ok(t)) {
            return t.to_string();
        }
        assert!(Instant::now() < deadline, "waited {UI_WAIT:?} for {what} ({css}); last seen: {seen:?}");
        click(c, "#refresh-now").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The publish rate in the queue page's "publish 0.2/s · deliver/get …" line.
fn publish_rate(rates: &str) -> f64 {
    rates.strip_prefix("publish ").and_then(|r| r.split("/s").next()).and_then(|r| r.parse().ok()).unwrap_or(0.0)
}

async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait().at_most(UI_WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"))
}

async fn type_into(c: &Client, css: &str, value: &str) {
    let input = wait_for(c, css).await;
    input.clear().await.expect("clear");
    input.send_keys(value).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    wait_for(c, css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Saves the viewport, scrolled to the top and without notices, as `target/dashboard-screenshots/NAME.png`.
async fn screenshot(c: &Client, name: &str) {
    // Without the notices, which would cover the page's corner.
    let tidy = "window.scrollTo(0, 0); document.querySelectorAll('#flash .note').forEach((n) => n.remove());";
    c.execute(tidy, vec![]).await.expect("scroll");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_declares_publishes_and_gets_in_a_browser() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!("SKIPPED dashboard browser test: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)");
        return;
    }
    let broker = start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return;
    }
    let base = format!("http://{}", broker.handle().management_addr().expect("management listening"));
    // An AMQP connection, so the connections page has something to list.
    let (_conn, _ch) = util::open(&broker).await;

    let driver = Driver::start();
    let client = driver.client().await;
    let flow = tokio::spawn(browse(client.clone(), base));
    let outcome = flow.await;
    let _ = client.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn browse(c: Client, base: String) {
    let base = base.as_str();
    c.goto(&format!("{base}/")).await.expect("dashboard loads");

    // A wrong password stays on the login form with an error.
    type_into(&c, "#login-user", "guest").await;
    type_into(&c, "#login-password", "not-the-password").await;
    click(&c, "#login-submit").await;
    wait_text(&c, "#login-error", "the login error", |t| t.contains("wrong username or password")).await;
    let app_hidden = c.execute("return document.getElementById('app').hidden", vec![]).await.expect("script");
    assert_eq!(app_hidden, json!(true), "a refused login must not show the dashboard");
    screenshot(&c, "login").await;

    type_into(&c, "#login-user", "guest").await;
    type_into(&c, "#login-password", "guest").await;
    click(&c, "#login-submit").await;
    wait_text(&c, "#whoami", "the logged-in user", |t| t == "guest").await;
    // The default exchange and the five amq.* ones.
    wait_text(&c, "[data-total=exchanges]", "the exchange total", |t| t.parse::<u32>().is_ok_and(|n| n >= 6)).await;

    // Declare a queue through the declare form.
    let queue = unique("dash-q");
    click(&c, "#tabs a[data-page=queues]").await;
    type_into(&c, "#queue-declare-name", &queue).await;
    click(&c, "#queue-declare-submit").await;
    let row = format!("tr[data-queue=\"{queue}\"]");
    wait_text(&c, &format!("{row} td[data-col=name]"), "the declared queue's row", |t| t == queue).await;

    // Publish through the queue page's form (the default exchange).
    click(&c, &format!("{row} td[data-col=name] a")).await;
    wait_text(&c, "#queue-name", "the queue page", |t| t == queue).await;
    let payload = "hello from the dashboard: ünïcode ✓";
    type_into(&c, "#publish-payload", payload).await;
    click(&c, "#publish-submit").await;
    wait_text(&c, "#flash .note", "the publish notice", |t| t.contains("Message published")).await;
    assert!(!text(&c, "#flash .note").await.unwrap_or_default().contains("not routed"));

    // The queue list shows it: one message ready, one in total.
    click(&c, "#tabs a[data-page=queues]").await;
    wait_text(&c, &format!("{row} td[data-col=messages_ready]"), "one message ready", |t| t == "1").await;
    wait_text(&c, &format!("{row} td[data-col=messages]"), "one message in total", |t| t == "1").await;

    // A publish rate above zero on the queue's page. Rates are sampled every 5 s and a
    // new queue's first sample is its baseline, so a message is published through the
    // form every second until a sample has seen one.
    click(&c, &format!("{row} td[data-col=name] a")).await;
    wait_text(&c, "#queue-name", "the queue page", |t| t == queue).await;
    let mut published = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        type_into(&c, "#publish-payload", &format!("rate probe {published}")).await;
        click(&c, "#publish-submit").await;
        published += 1;
        let counted = format!("ready {published} ");
        let rates = refreshing_until(&c, "#queue-messages", "the probe counted", |t| t.contains(&counted)).await;
        let rates = text(&c, "#queue-rates").await.unwrap_or(rates);
        if publish_rate(&rates) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the publish rate stayed zero: {rates}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    click(&c, "#tabs a[data-page=queues]").await;
    wait_text(&c, &format!("{row} td[data-col=messages]"), "the probes counted", |t| t == published.to_string()).await;
    screenshot(&c, "queues").await;

    // Get the first one back (requeued), with its payload intact.
    click(&c, &format!("{row} td[data-col=name] a")).await;
    wait_text(&c, "#queue-name", "the queue page", |t| t == queue).await;
    wait_for(&c, "#get-ackmode").await.select_by_value("ack_requeue_true").await.expect("ack mode");
    click(&c, "#get-submit").await;
    let got = wait_text(&c, "#get-results .message-payload", "the fetched message", |t| !t.is_empty()).await;
    assert_eq!(got, payload);
    let counted = format!("ready {published} ");
    wait_text(&c, "#queue-messages", "the queue's counts", |t| t.contains(&counted)).await;
    screenshot(&c, "queue").await;

    // Declare a fanout exchange, bind the queue to it, publish through the exchange's
    // page: the queue then holds one more message.
    let exchange = unique("dash-x");
    click(&c, "#tabs a[data-page=exchanges]").await;
    click(&c, "#panel-exchange-declare summary").await;
    type_into(&c, "#exchange-declare-name", &exchange).await;
    wait_for(&c, "#exchange-declare-type").await.select_by_value("fanout").await.expect("type");
    click(&c, "#exchange-declare-submit").await;
    let exchange_row = format!("tr[data-exchange=\"{exchange}\"]");
    wait_text(&c, &format!("{exchange_row} td[data-col=name]"), "the declared exchange", |t| t == exchange).await;
    wait_text(&c, "tr[data-exchange=\"amq.topic\"] td[data-col=name]", "amq.topic listed", |t| t == "amq.topic").await;
    screenshot(&c, "exchanges").await;

    c.goto(&format!("{base}/#/queues/%2F/{queue}")).await.expect("queue page");
    wait_text(&c, "#queue-name", "the queue page", |t| t == queue).await;
    type_into(&c, "#bind-source", &exchange).await;
    click(&c, "#bind-submit").await;
    wait_text(&c, "#queue-bindings", "the new binding", |t| t.contains(&exchange)).await;

    c.goto(&format!("{base}/#/exchanges/%2F/{exchange}")).await.expect("exchange page");
    type_into(&c, "#publish-payload", "through the fanout").await;
    click(&c, "#publish-submit").await;
    wait_text(&c, "#flash .note", "the publish notice", |t| t.contains("Message published")).await;
    assert!(!text(&c, "#flash .note").await.unwrap_or_default().contains("not routed"));
    c.goto(&format!("{base}/#/queues/%2F/{queue}")).await.expect("queue page");
    let counted = format!("ready {} ", published + 1);
    refreshing_until(&c, "#queue-messages", "the fanout's message", |t| t.contains(&counted)).await;

    click(&c, "#tabs a[data-page=connections]").await;
    wait_text(&c, "#panel-connections .panel-body", "the connections listing", |t| {
        t.contains("guest") || t.contains("does not list connections")
    })
    .await;
    screenshot(&c, "connections").await;

    // The overview graphs need two samples (5 s apart) to draw lines.
    click(&c, "#tabs a[data-page=overview]").await;
    wait_text(&c, "[data-total=queues]", "the queue total", |t| t.parse::<u32>().is_ok_and(|n| n >= 1)).await;
    let deadline = Instant::now() + UI_WAIT;
    loop {
        let n =
            c.execute("return document.getElementById('chart-queued')?.dataset.samples", vec![]).await.expect("script");
        if n.as_str().and_then(|s| s.parse::<u32>().ok()).is_some_and(|n| n >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the overview took no second sample");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&c, "overview").await;
}

/// The files over real HTTP, without a browser: the page, a module, a 304 on its
/// etag, and RabbitMQ's 404 for other paths outside the API.
#[tokio::test]
async fn dashboard_files_are_served_beside_the_api() {
    let broker = start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return;
    }
    let base = format!("http://{}", broker.handle().management_addr().expect("management listening"));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(WAIT)).build().into();
        let get = |path: &str, etag: Option<&str>| {
            let mut req = agent.get(format!("{base}{path}"));
            if let Some(e) = etag {
                req = req.header("if-none-match", e);
            }
            let mut resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
            let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap_or_default().to_string());
            let (ctype, etag) = (header("content-type"), header("etag"));
            let status = resp.status().as_u16();
            (status, ctype, etag, resp.body_mut().read_to_string().unwrap_or_default())
        };
        let (status, ctype, _, html) = get("/", None);
        assert_eq!((status, ctype.as_deref()), (200, Some("text/html; charset=utf-8")));
        assert!(html.contains("id=\"login-form\""), "{html}");
        let (status, ctype, etag, js) = get("/pages/queues.js", None);
        assert_eq!((status, ctype.as_deref()), (200, Some("text/javascript; charset=utf-8")));
        assert!(js.contains("export function mount"));
        let (status, _, _, body) = get("/pages/queues.js", etag.as_deref());
        assert_eq!((status, body.as_str()), (304, ""));
        let (status, ctype, _, body) = get("/nope.html", None);
        assert_eq!((status, ctype.as_deref()), (404, Some("application/json")));
        assert_eq!(body, r#"{"error":"Object Not Found","reason":"Not Found"}"#);
        let (status, _, _, _) = get("/api/overview", None);
        assert_eq!(status, 401, "the API still needs credentials");
    })
    .await
    .expect("HTTP checks");
}
