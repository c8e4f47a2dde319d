//! Test harness: start a broker per test on 127.0.0.1:0 with its own data directory.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A broker for one test. Dropping it stops the broker and removes its data directory.
pub struct TestBroker {
    handle: Option<haremq::BrokerHandle>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    url: String,
    data_dir: Option<std::path::PathBuf>,
    config: Option<haremq::Config>,
}

impl TestBroker {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process broker (tests that need it skip external brokers first).
    pub fn handle(&self) -> &haremq::BrokerHandle {
        self.handle.as_ref().expect("an in-process broker")
    }

    /// The TLS listener's address, when the test configured one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// True when the tests run against an external broker (see `main.rs`).
    pub fn is_external(&self) -> bool {
        self.handle.is_none()
    }

    /// The broker's administration API (vhosts, users, permissions, limits).
    pub fn admin(&self) -> haremq::admin::Admin {
        self.handle.as_ref().expect("an in-process broker").admin()
    }

    /// `amqp://user:password@ADDR/vhost` (the vhost percent-encoded).
    pub fn url_for(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost: String = vhost
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    /// Shuts the broker down cleanly and starts it again on the same data directory
    /// and configuration (on a new port).
    pub fn restart(&mut self) {
        let handle = self.handle.take().expect("an in-process broker");
        handle.shutdown();
        let mut config = self.config.clone().expect("config");
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        let handle = haremq::start(config).expect("broker restarts");
        self.addr = handle.local_addr();
        self.url = format!("amqp://guest:guest@{}/%2f", self.addr);
        self.handle = Some(handle);
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts a fresh broker on an ephemeral loopback port.
pub fn start_broker() -> TestBroker {
    start_broker_with(|_| {})
}

/// Starts a broker after letting the test adjust its configuration.
pub fn start_broker_with(adjust: impl FnOnce(&mut haremq::Config)) -> TestBroker {
    let _ = env_logger::builder().is_test(true).try_init();
    if let Ok(url) = std::env::var("HAREMQ_TEST_EXTERNAL_URL") {
        let hostport = url
            .split('@')
            .nth(1)
            .and_then(|s| s.split('/').next())
            .expect("HAREMQ_TEST_EXTERNAL_URL like amqp://u:p@host:port/%2f");
        let addr = hostport.parse().expect("host:port as an IP socket address");
        return TestBroker { handle: None, addr, url, data_dir: None, tls_addr: None, config: None };
    }
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "haremq-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut config = haremq::Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        management: None,
        prometheus: None,
        data_dir: dir.clone(),
        ..Default::default()
    };
    adjust(&mut config);
    let handle = haremq::start(config.clone()).expect("broker starts");
    let addr = handle.local_addr();
    let tls_addr = handle.tls_addr();
    let url = format!("amqp://guest:guest@{addr}/%2f");
    TestBroker { handle: Some(handle), addr, url, data_dir: Some(dir), tls_addr, config: Some(config) }
}

/// A unique name for queues/exchanges, so tests never collide (also on an external broker).
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);
