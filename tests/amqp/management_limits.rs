//! Issue 13 (robustness of the management listener): failed HTTP logins are as slow as
//! AMQP ones, and open management connections are capped.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::management::http;

fn broker() -> Option<(TestBroker, String)> {
    let broker = start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return None;
    }
    let addr = broker.handle().management_addr().expect("management API listening");
    Some((broker, addr.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_answered_slowly_one_after_another() {
    let Some((_broker, addr)) = broker() else { return };
    let url = format!("http://{addr}/api/overview");
    let started = Instant::now();
    let (a, b) =
        tokio::join!(http("GET", &url, Some(("guest", "x")), None), http("GET", &url, Some(("guest", "y")), None));
    assert_eq!((a.status, b.status), (401, 401));
    // The second failure from the address is answered a delay after the first.
    assert!(started.elapsed() >= Duration::from_secs(2), "two failures took {:?}", started.elapsed());
    // The right password is answered as soon as the address's failures have been.
    assert_eq!(http("GET", &url, Some(("guest", "guest")), None).await.status, 200);
}

#[test]
fn management_connections_are_capped() {
    let Some((_broker, addr)) = broker() else { return };
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(std::net::TcpStream::connect(&addr).unwrap());
    }
    // Every held connection is being served (a request on the first is answered).
    let probe = |s: &mut std::net::TcpStream| -> usize {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(b"GET /api/overview HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut buf = [0u8; 64];
        s.read(&mut buf).unwrap_or(0)
    };
    // Each is answered once: then all 256 have been accepted and count (a connect
    // returns once the kernel queued it, before the broker's accept loop saw it).
    for (i, s) in held.iter_mut().enumerate() {
        assert!(probe(s) > 0, "held connection {i} is served");
    }
    // One more is closed at once, unanswered.
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(probe(&mut extra), 0, "the connection over the cap is closed");
    // Closing some makes room again.
    held.truncate(200);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        if probe(&mut s) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no room after closing connections");
        std::thread::sleep(Duration::from_millis(50));
    }
}
