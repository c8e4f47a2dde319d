//! Issue 11, item 4: memory a peer can make the broker hold is bounded. A client that
//! never reads is sent at most the outbox's high-water mark (plus one message), and
//! uncommitted transactions and half-received bodies are counted by the memory alarm,
//! which stops reading the connection. Raw sockets (the clients misbehave on purpose)
//! against a broker process of its own, whose memory is read from /proc.

use super::*;
use amq_protocol::frame::{parse_frame, AMQPFrame};
use amq_protocol::protocol::{basic, connection, AMQPClass};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

const MIB: usize = 1024 * 1024;
/// Frame size the raw client negotiates (the broker's default).
const FRAME_MAX: usize = 131_072;

fn frame(ty: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(1, channel, &p)
}

/// basic.publish to the default exchange and a content header for `body_size` bytes.
fn publish_and_header(channel: u16, queue: &str, body_size: u64) -> Vec<u8> {
    let mut args = 0u16.to_be_bytes().to_vec();
    shortstr(&mut args, "");
    shortstr(&mut args, queue);
    args.push(0);
    let mut out = method(channel, 60, 40, &args);
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&body_size.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes()); // no properties
    out.extend(frame(2, channel, &header));
    out
}

/// A raw client, logged in as guest on `/`, announcing the `connection.blocked`
/// capability, with channels 1..=`channels` open.
fn raw_client(addr: SocketAddr, channels: u16) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    expect_method(&mut s, "connection.start", |m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Start(_))));
    // client-properties: {capabilities: {connection.blocked: true}}
    let mut caps = Vec::new();
    shortstr(&mut caps, "connection.blocked");
    caps.extend_from_slice(b"t\x01");
    let mut props = Vec::new();
    shortstr(&mut props, "capabilities");
    props.push(b'F');
    props.extend_from_slice(&(caps.len() as u32).to_be_bytes());
    props.extend(caps);
    let mut args = (props.len() as u32).to_be_bytes().to_vec();
    args.extend(props);
    shortstr(&mut args, "PLAIN");
    let response = b"\0guest\0guest";
    args.extend_from_slice(&(response.len() as u32).to_be_bytes());
    args.extend_from_slice(response);
    shortstr(&mut args, "en_US");
    s.write_all(&method(0, 10, 11, &args)).unwrap();
    expect_method(&mut s, "connection.tune", |m| matches!(m, AMQPClass::Connection(connection::AMQPMethod::Tune(_))));
    let mut args = 2047u16.to_be_bytes().to_vec();
    args.extend_from_slice(&(FRAME_MAX as u32).to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&method(0, 10, 31, &args)).unwrap();
    let mut args = Vec::new();
    shortstr(&mut args, "/");
    shortstr(&mut args, "");
    args.push(0);
    s.write_all(&method(0, 10, 40, &args)).unwrap();
    expect_method(&mut s, "connection.open-ok", |m| {
        matches!(m, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
    });
    for ch in 1..=channels {
        s.write_all(&method(ch, 20, 10, &[0])).unwrap();
        read_frame(&mut s).expect("channel.open-ok");
    }
    s
}

fn expect_method(s: &mut TcpStream, what: &str, is: impl Fn(&AMQPClass) -> bool) {
    match read_frame(s) {
        Some(AMQPFrame::Method(_, m)) if is(&m) => {}
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// Reads one frame; None on EOF or reset.
fn read_frame(s: &mut TcpStream) -> Option<AMQPFrame> {
    let mut buf = vec![0u8; 7];
    read_full(s, &mut buf)?;
    let size = u32::from_be_bytes(buf[3..7].try_into().unwrap()) as usize;
    buf.resize(7 + size + 1, 0);
    read_full(s, &mut buf[7..])?;
    match parse_frame(buf.as_slice()) {
        Ok((_, f)) => Some(f),
        Err(e) => panic!("unparsable frame from the broker: {e:?}"),
    }
}

fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> Option<()> {
    let mut off = 0;
    while off < buf.len() {
        match s.read(&mut buf[off..]) {
            Ok(0) => return None,
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("timed out reading from the broker")
            }
            Err(_) => return None,
        }
    }
    Some(())
}

/// A /proc/PID/status field in KiB (VmRSS: resident now; VmHWM: the peak).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("broker status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field in /proc status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

/// One 10 MiB message and 120 pairs of basic.get + basic.reject(requeue) from a client
/// that does not read: before the fix the broker handled all of them, holding every
/// get-ok for the client (over 1 GiB, with the memory alarm never raised). Now it stops
/// handling the client's frames once the high-water mark is queued, and resumes as the
/// client reads: every get-ok arrives, and the broker's peak memory stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_not_buffered_without_bound() {
    const PAIRS: u64 = 120;
    let dir = DataDir::new("unread");
    let b = Broker::start_with(&dir.0, Some("memory_limit = 50000000\n"));
    let pid = b.child.id();
    let (_conn, ch) = connect(&b).await;
    ch.queue_declare("big".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    ch.basic_publish("".into(), "big".into(), BasicPublishOptions::default(), &vec![7u8; 10 * MIB], Default::default())
        .await
        .expect("publish")
        .await
        .expect("confirmed");
    let addr = b.addr;
    let received = tokio::task::spawn_blocking(move || {
        let mut s = raw_client(addr, 1);
        let mut requests = Vec::new();
        for tag in 1..=PAIRS {
            let mut get = 0u16.to_be_bytes().to_vec();
            shortstr(&mut get, "big");
            get.push(0); // no_ack = false
            requests.extend(method(1, 60, 70, &get));
            let mut reject = tag.to_be_bytes().to_vec();
            reject.push(1); // requeue
            requests.extend(method(1, 60, 90, &reject));
        }
        s.write_all(&requests).expect("send the requests");
        // Not reading for a while: the broker must not buffer what it cannot send.
        let quiet_until = Instant::now() + Duration::from_secs(3);
        let mut peak = 0;
        while Instant::now() < quiet_until {
            peak = peak.max(proc_kib(pid, "VmRSS:"));
            std::thread::sleep(Duration::from_millis(50));
        }
        // Now read everything: each get-ok carries the whole message.
        let mut get_oks = 0;
        let mut body_bytes = 0usize;
        while get_oks < PAIRS || body_bytes < PAIRS as usize * 10 * MIB {
            match read_frame(&mut s).expect("the broker keeps the connection") {
                AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))) => get_oks += 1,
                AMQPFrame::Body(1, body) => body_bytes += body.len(),
                AMQPFrame::Method(_, m) => panic!("unexpected {m:?}"),
                _ => {}
            }
        }
        (get_oks, body_bytes, peak)
    })
    .await
    .expect("raw client");
    let (get_oks, body_bytes, quiet_peak) = received;
    assert_eq!(get_oks, PAIRS);
    assert_eq!(body_bytes, PAIRS as usize * 10 * MIB);
    let hwm = proc_kib(pid, "VmHWM:");
    eprintln!("broker RSS peak while the client did not read: {} MiB; VmHWM {} MiB", mib(quiet_peak), mib(hwm));
    assert!(mib(hwm) < 250, "the broker's memory peaked at {} MiB for one 10 MiB message", mib(hwm));
    // The message went back to the queue after the last reject.
    let q = ch
        .queue_declare("big".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("passive declare");
    assert_eq!(q.message_count(), 1);
}

/// Sends `total` bytes of frames produced by `next` from a thread until the broker
/// stops reading; returns when a reader on the same socket saw `connection.blocked`,
/// with how many bytes had been written by then. Panics if everything was written
/// without the broker blocking the connection.
fn send_until_blocked(
    s: TcpStream,
    total: u64,
    mut next: impl FnMut(&mut Vec<u8>) + Send + 'static,
) -> (TcpStream, u64) {
    let written = Arc::new(AtomicU64::new(0));
    let blocked = Arc::new(AtomicBool::new(false));
    let mut w = s.try_clone().unwrap();
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::with_capacity(FRAME_MAX + 64);
            while written.load(Ordering::Relaxed) < total {
                buf.clear();
                next(&mut buf);
                if w.write_all(&buf).is_err() {
                    return; // the test closed the socket
                }
                written.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let mut r = s.try_clone().unwrap();
    let reader = {
        let blocked = blocked.clone();
        std::thread::spawn(move || {
            r.set_read_timeout(None).unwrap();
            while let Some(f) = read_frame(&mut r) {
                if let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Blocked(_))) = f {
                    blocked.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let deadline = Instant::now() + WAIT;
    while !blocked.load(Ordering::Relaxed) {
        assert!(
            !writer.is_finished(),
            "all {} MiB were taken without the memory alarm blocking the connection",
            mib(total / 1024)
        );
        assert!(Instant::now() < deadline, "no connection.blocked");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = written.load(Ordering::Relaxed);
    let _ = s.shutdown(Shutdown::Both);
    writer.join().unwrap();
    reader.join().unwrap();
    (s, sent)
}

/// After the misbehaving connection is gone, its memory is released, the alarm clears
/// and a normal publisher is served again.
async fn assert_alarm_clears(b: &Broker) {
    let (_conn, ch) = connect(b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    ch.queue_declare("after".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let confirm = ch
        .basic_publish("".into(), "after".into(), BasicPublishOptions::default(), b"ok", Default::default())
        .await
        .expect("publish");
    tokio::time::timeout(WAIT, confirm).await.expect("confirmed once the alarm cleared").expect("confirm");
}

/// tx.select, then 300 uncommitted 1 MiB publishes under a 50 MB limit: before the fix
/// the broker held all 300 MiB and never raised the alarm. Now the transaction's
/// pending publishes count as message memory: the alarm rises and the connection is no
/// longer read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_publishes_count_against_the_memory_limit() {
    let dir = DataDir::new("tx-memory");
    let b = Broker::start_with(&dir.0, Some("memory_limit = 50000000\n"));
    let pid = b.child.id();
    let (_conn, ch) = connect(&b).await;
    ch.queue_declare("txq".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let mut s = raw_client(b.addr, 1);
    s.write_all(&method(1, 90, 10, &[])).unwrap();
    read_frame(&mut s).expect("tx.select-ok");
    // Each publish: method, header, then the 1 MiB body in frame-sized pieces.
    let chunk = FRAME_MAX - 8;
    let mut left = 0usize;
    let body = vec![1u8; chunk];
    let (_s, sent) = send_until_blocked(s, 300 * MIB as u64, move |buf| {
        if left == 0 {
            buf.extend(publish_and_header(1, "txq", MIB as u64));
            left = MIB;
        }
        let n = left.min(chunk);
        buf.extend(frame(3, 1, &body[..n]));
        left -= n;
    });
    let rss = mib(proc_kib(pid, "VmRSS:"));
    eprintln!("blocked after {} MiB sent; broker RSS {rss} MiB", mib(sent / 1024));
    assert!(sent < 150 * MIB as u64, "{} MiB taken before the alarm", mib(sent / 1024));
    assert!(rss < 200, "broker RSS {rss} MiB under a 50 MB limit");
    assert_alarm_clears(&b).await;
}

/// Six channels each announce a 128 MiB body and send 80 MiB of it: before the fix the
/// half-received bodies (797 MiB) were held with the alarm never raised. Now a body
/// counts as it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_received_bodies_count_against_the_memory_limit() {
    let dir = DataDir::new("partial-bodies");
    let b = Broker::start_with(&dir.0, Some("memory_limit = 50000000\n"));
    let pid = b.child.id();
    let (_conn, ch) = connect(&b).await;
    ch.queue_declare("partial".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let s = raw_client(b.addr, 6);
    let chunk = FRAME_MAX - 8;
    let body = vec![2u8; chunk];
    let mut started = 0u16;
    let mut turn = 0u16;
    let (_s, sent) = send_until_blocked(s, 6 * 80 * MIB as u64, move |buf| {
        if started < 6 {
            started += 1;
            buf.extend(publish_and_header(started, "partial", 128 * MIB as u64));
        }
        turn = turn % 6 + 1;
        buf.extend(frame(3, turn, &body));
    });
    let rss = mib(proc_kib(pid, "VmRSS:"));
    eprintln!("blocked after {} MiB sent; broker RSS {rss} MiB", mib(sent / 1024));
    assert!(sent < 150 * MIB as u64, "{} MiB taken before the alarm", mib(sent / 1024));
    assert!(rss < 200, "broker RSS {rss} MiB under a 50 MB limit");
    assert_alarm_clears(&b).await;
}
