//! A bounded network fuzz run inside `cargo test`: a valid session (handshake,
//! declares with argument tables, a publish whose header carries a nested headers table,
//! consume, get, acks, deletes, close) is sent again and again with one or two frames
//! mutated (bytes flipped, type octets planted, truncated, sizes changed, bytes inserted,
//! frames dropped or repeated), each session on its own socket from its own loopback
//! address (so failed logins are not queued behind each other). Deterministic seed;
//! about 20 s. The broker must never panic (a contained panic would answer 541
//! INTERNAL_ERROR, which fails the test) or abort (the test process would die), must
//! close every connection after the client's EOF, and must serve a normal lapin client
//! afterwards.

use crate::common::{start_broker, TestBroker};
use crate::robustness::assert_broker_still_serves;
use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass, BasicProperties};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEED: u64 = 0x4841_5245_4d51_0011;
const WORKERS: usize = 6;
const RUN_FOR: Duration = Duration::from_secs(20);
const MAX_CASES: usize = 6000;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn encode(f: &AMQPFrame) -> Vec<u8> {
    gen_frame(f)(WriteContext::from(Vec::new())).expect("encodes").write
}

fn m(ch: u16, class: AMQPClass) -> Vec<u8> {
    encode(&AMQPFrame::Method(ch, class))
}

/// The valid session, one entry per frame (the protocol header first).
fn session(case: usize) -> Vec<Vec<u8>> {
    let q = format!("fz-q-{}", case % 50);
    let mut caps = FieldTable::default();
    caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("netfuzz".into()));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let mut qargs = FieldTable::default();
    qargs.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    qargs.insert("x-max-length".into(), AMQPValue::ShortInt(100));
    qargs.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("amq.fanout".into()));
    qargs.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    let mut xargs = FieldTable::default();
    xargs.insert("alternate-exchange".into(), AMQPValue::LongString("amq.fanout".into()));
    let mut inner = FieldTable::default();
    inner.insert("n".into(), AMQPValue::LongLongInt(-3));
    let mut arr = FieldArray::default();
    arr.push(AMQPValue::FieldTable(inner));
    arr.push(AMQPValue::Double(1.5));
    arr.push(AMQPValue::ByteArray(vec![1, 2, 3].into()));
    let mut headers = FieldTable::default();
    headers.insert("CC".into(), AMQPValue::FieldArray(vec![AMQPValue::LongString("k2".into())].into()));
    headers.insert("x-deep".into(), AMQPValue::FieldArray(arr));
    headers.insert("x-delay".into(), AMQPValue::LongInt(10));
    let properties = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(3)
        .with_expiration("60000".into())
        .with_message_id(format!("id-{}", case % 7).as_str().into())
        .with_timestamp(1_700_000_000);
    use basic::AMQPMethod as B;
    use connection::AMQPMethod as C;
    vec![
        b"AMQP\x00\x00\x09\x01".to_vec(),
        m(
            0,
            AMQPClass::Connection(C::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
        ),
        m(0, AMQPClass::Connection(C::TuneOk(connection::TuneOk { channel_max: 16, frame_max: 8192, heartbeat: 0 }))),
        m(0, AMQPClass::Connection(C::Open(connection::Open { virtual_host: "/".into() }))),
        m(1, AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))),
        m(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "fz-x".into(),
                kind: "topic".into(),
                passive: false,
                durable: case.is_multiple_of(3),
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: xargs,
            })),
        ),
        m(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q.as_str().into(),
                passive: false,
                durable: case.is_multiple_of(3),
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: qargs,
            })),
        ),
        m(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: q.as_str().into(),
                exchange: "fz-x".into(),
                routing_key: "k.#".into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
        m(1, AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }))),
        m(1, AMQPClass::Basic(B::Qos(basic::Qos { prefetch_count: 10, global: false }))),
        m(
            1,
            AMQPClass::Basic(B::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: q.as_str().into(),
                mandatory: true,
                immediate: false,
            })),
        ),
        encode(&AMQPFrame::Header(1, AMQPContentHeader { class_id: 60, body_size: 5, properties: properties.clone() })),
        encode(&AMQPFrame::Body(1, b"hello".to_vec())),
        m(
            1,
            AMQPClass::Basic(B::Publish(basic::Publish {
                exchange: "fz-x".into(),
                routing_key: "k.a".into(),
                mandatory: false,
                immediate: false,
            })),
        ),
        encode(&AMQPFrame::Header(1, AMQPContentHeader { class_id: 60, body_size: 3, properties })),
        encode(&AMQPFrame::Body(1, b"abc".to_vec())),
        m(
            1,
            AMQPClass::Basic(B::Consume(basic::Consume {
                queue: q.as_str().into(),
                consumer_tag: "ct".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        ),
        m(1, AMQPClass::Basic(B::Get(basic::Get { queue: q.as_str().into(), no_ack: false }))),
        m(1, AMQPClass::Basic(B::Ack(basic::Ack { delivery_tag: 1, multiple: false }))),
        m(1, AMQPClass::Basic(B::Nack(basic::Nack { delivery_tag: 2, multiple: true, requeue: true }))),
        m(1, AMQPClass::Basic(B::Reject(basic::Reject { delivery_tag: 3, requeue: false }))),
        encode(&AMQPFrame::Heartbeat),
        m(1, AMQPClass::Basic(B::Cancel(basic::Cancel { consumer_tag: "ct".into(), nowait: false }))),
        m(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                queue: q.as_str().into(),
                exchange: "fz-x".into(),
                routing_key: "k.#".into(),
                arguments: FieldTable::default(),
            })),
        ),
        m(1, AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge { queue: q.as_str().into(), nowait: false }))),
        m(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        ),
        m(
            0,
            AMQPClass::Connection(C::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        ),
    ]
}

/// Appends an entry nesting `levels` arrays to the field table that ends the payload of
/// method frame `f` (whose table starts at payload offset `table_at`), built by hand as
/// a peer would send it (the recursive encoder would need the stack the broker must not).
fn nest_in_table(f: &mut Vec<u8>, table_at: usize, levels: usize) {
    let mut v: Vec<u8> = Vec::new();
    for _ in 0..levels {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(v.len() as u32).to_be_bytes());
        outer.extend_from_slice(&v);
        v = outer;
    }
    let end = f.pop().expect("frame end");
    f.extend_from_slice(&[1, b'z']);
    f.extend_from_slice(&v);
    f.push(end);
    let at = 7 + table_at;
    let len = u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]) + 2 + v.len() as u32;
    f[at..at + 4].copy_from_slice(&len.to_be_bytes());
    let size = (f.len() - 8) as u32;
    f[3..7].copy_from_slice(&size.to_be_bytes());
}

/// Mutates one frame of `frames` (or the list itself).
fn mutate(rng: &mut Rng, frames: &mut Vec<Vec<u8>>) {
    let i = 1 + rng.below(frames.len() - 1);
    let f = &mut frames[i];
    if f.is_empty() {
        return;
    }
    match rng.below(9) {
        // Flip bytes in the payload.
        0 | 1 => {
            for _ in 0..1 + rng.below(3) {
                if f.len() > 8 {
                    let at = 7 + rng.below(f.len() - 8);
                    f[at] ^= 1 << rng.below(8);
                }
            }
        }
        // A random byte anywhere, the envelope included.
        2 => {
            let at = rng.below(f.len());
            f[at] = rng.next() as u8;
        }
        // Plant a field type octet or a length-ish value in the payload.
        3 => {
            if f.len() > 8 {
                let at = 7 + rng.below(f.len() - 8);
                f[at] = *[b'A', b'F', b'S', b'x', b'V', 0xff, 0].get(rng.below(7)).unwrap();
            }
        }
        // Truncate the stream inside this frame.
        4 => {
            let keep = rng.below(f.len());
            f.truncate(keep);
            frames.truncate(i + 1);
        }
        // Change the size field without changing the payload.
        5 => {
            if f.len() >= 7 {
                let size = u32::from_be_bytes([f[3], f[4], f[5], f[6]]);
                let new = match rng.below(3) {
                    0 => size.wrapping_add(1 + rng.below(8) as u32),
                    1 => size.saturating_sub(1 + rng.below(8) as u32),
                    _ => rng.next() as u32,
                };
                f[3..7].copy_from_slice(&new.to_be_bytes());
            }
        }
        // Insert bytes into the payload, size fixed up.
        6 => {
            if f.len() > 8 {
                let at = 7 + rng.below(f.len() - 8);
                let n = 1 + rng.below(6);
                for _ in 0..n {
                    f.insert(at, rng.next() as u8);
                }
                let size = (f.len() - 8) as u32;
                f[3..7].copy_from_slice(&size.to_be_bytes());
            }
        }
        // Drop the frame.
        7 => {
            frames.remove(i);
        }
        // Repeat it.
        _ => {
            let copy = f.clone();
            frames.insert(i, copy);
        }
    }
}

/// What a case saw: a 541 close (a contained panic) is a failure.
fn run_case(addr: SocketAddr, case: usize) -> Result<(), String> {
    let mut rng = Rng::new(SEED ^ (case as u64).wrapping_mul(0x1000_0001));
    let mut frames = session(case);
    if rng.below(12) == 0 {
        // Structure-aware: queue.declare's arguments nest deep (frame 6: class, method,
        // ticket, then the queue name and the flags octet before the table).
        let q_len = usize::from(frames[6][7 + 6]);
        let levels = 1 + rng.below(4000);
        nest_in_table(&mut frames[6], 4 + 2 + 1 + q_len + 1, levels);
    }
    for _ in 0..1 + rng.below(2) {
        mutate(&mut rng, &mut frames);
    }
    let from = Ipv4Addr::new(127, 1 + (case >> 16) as u8, (case >> 8) as u8, case as u8);
    let mut s = connect_from(IpAddr::V4(from), addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let bytes: Vec<u8> = frames.concat();
    // The broker may close early (after an error); that is fine.
    let _ = s.write_all(&bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("case {case}: no EOF from the broker: {e} after {} bytes", got.len())),
        }
    }
    let mut rest = got.as_slice();
    while let Ok((r, f)) = parse_frame(rest) {
        if let AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))) = &f {
            if c.reply_code == 541 {
                return Err(format!("case {case}: 541 {} (a panic) for frames {frames:?}", c.reply_text));
            }
        }
        rest = r;
    }
    Ok(())
}

fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let (IpAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket fd, owned by the TcpStream on success and closed otherwise.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

#[test]
fn mutated_sessions_never_panic_or_stop_the_broker() {
    let broker: TestBroker = start_broker();
    if broker.is_external() {
        return;
    }
    let addr = broker.addr();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + RUN_FOR;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let case = next.fetch_add(1, Ordering::Relaxed);
                    if case >= MAX_CASES || Instant::now() > deadline {
                        return Ok(());
                    }
                    run_case(addr, case)?;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker").unwrap_or_else(|e| panic!("{e}"));
    }
    let cases = next.load(Ordering::Relaxed).min(MAX_CASES);
    eprintln!("netfuzz: {cases} mutated sessions (seed {SEED:#x})");
    assert!(cases >= 300, "only {cases} sessions ran");
    assert_broker_still_serves(&broker);
}
