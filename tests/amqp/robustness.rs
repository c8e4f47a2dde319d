//! Issue 11, the network-facing part: input that used to crash the process (nesting,
//! over-long short strings), panic containment, heartbeat payloads, the delay on failed
//! logins, and a bounded network fuzz run. Raw TCP sockets, with what RabbitMQ 3.10
//! answers noted per case.

use crate::common::{start_broker, unique, TestBroker, WAIT};
use crate::util;
use amq_protocol::frame::{parse_frame, AMQPFrame};
use amq_protocol::protocol::{channel, connection, queue, AMQPClass};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
/// HareMQ's limit (`MAX_NESTING`): the outermost table is level 1.
const MAX_NESTING: usize = 32;

pub fn frame(ty: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

pub fn shortstr(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

pub fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

pub fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    p
}

/// A field table (length prefix and entries) from encoded entries.
fn table(entries: &[u8]) -> Vec<u8> {
    let mut t = (entries.len() as u32).to_be_bytes().to_vec();
    t.extend_from_slice(entries);
    t
}

/// A table entry `key` → `levels` arrays nested inside each other (5 bytes a level),
/// built iteratively as a peer would send it.
fn deep_entry(key: &[u8], levels: usize) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::new();
    for _ in 0..levels {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(v.len() as u32).to_be_bytes());
        outer.extend_from_slice(&v);
        v = outer;
    }
    let mut e = Vec::new();
    shortstr(&mut e, key);
    e.extend_from_slice(&v);
    e
}

/// A table entry `key` → longstr `value`.
fn longstr_entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    shortstr(&mut e, key);
    e.push(b'S');
    longstr(&mut e, value);
    e
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
pub enum End {
    /// connection.close with (reply code, reply text).
    Close(u16, String),
    /// The socket was closed without a connection.close.
    Dropped,
}

/// A raw AMQP client on a blocking socket.
pub struct Wire {
    pub s: TcpStream,
}

impl Wire {
    pub fn tcp(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).expect("tcp connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        Wire { s }
    }

    /// A socket whose source address is `from` (any 127.x address is loopback on Linux).
    fn tcp_from(addr: SocketAddr, from: IpAddr) -> Wire {
        let sock = socket_from(from, addr);
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_nodelay(true).unwrap();
        Wire { s: sock }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed the socket after an error.
        let _ = self.s.write_all(bytes);
    }

    /// Protocol header, then reads connection.start.
    pub fn header(&mut self) {
        self.send(PROTOCOL_HEADER);
        match self.read_frame() {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))) => {}
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// connection.start-ok with the given client-properties table, mechanism and response.
    pub fn start_ok(&mut self, client_properties: &[u8], mechanism: &[u8], response: &[u8]) {
        let mut args = client_properties.to_vec();
        shortstr(&mut args, mechanism);
        longstr(&mut args, response);
        shortstr(&mut args, b"en_US");
        self.send(&frame(1, 0, &method(10, 11, &args)));
    }

    /// The whole handshake as guest, then channel 1.
    pub fn open(addr: SocketAddr) -> Wire {
        let mut w = Wire::tcp(addr);
        w.header();
        w.start_ok(&table(&[]), b"PLAIN", b"\0guest\0guest");
        w.tune_and_open();
        w
    }

    /// After a successful start-ok: tune-ok, connection.open, channel.open 1.
    pub fn tune_and_open(&mut self) {
        match self.read_frame() {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))) => {}
            other => panic!("expected connection.tune, got {other:?}"),
        }
        let mut args = 2047u16.to_be_bytes().to_vec();
        args.extend_from_slice(&131_072u32.to_be_bytes());
        args.extend_from_slice(&0u16.to_be_bytes());
        self.send(&frame(1, 0, &method(10, 31, &args)));
        let mut args = Vec::new();
        shortstr(&mut args, b"/");
        shortstr(&mut args, b"");
        args.push(0);
        self.send(&frame(1, 0, &method(10, 40, &args)));
        match self.read_frame() {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        self.send(&frame(1, 1, &method(20, 10, &[0])));
        match self.read_frame() {
            Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    /// Reads one frame; None on EOF or reset.
    pub fn read_frame(&mut self) -> Option<AMQPFrame> {
        let mut header = [0u8; 7];
        if !read_full(&mut self.s, &mut header) {
            return None;
        }
        let size = u32::from_be_bytes(header[3..7].try_into().unwrap()) as usize;
        let mut buf = header.to_vec();
        buf.resize(7 + size + 1, 0);
        if !read_full(&mut self.s, &mut buf[7..]) {
            return None;
        }
        match parse_frame(buf.as_slice()) {
            Ok((_, f)) => Some(f),
            Err(e) => panic!("server sent an unparsable frame {buf:?}: {e:?}"),
        }
    }

    /// Reads until the server ends the connection (answering connection.close).
    pub fn read_end(&mut self) -> End {
        loop {
            match self.read_frame() {
                None => return End::Dropped,
                Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                    self.send(&frame(1, 0, &method(10, 51, &[])));
                    return End::Close(c.reply_code, c.reply_text.as_str().to_string());
                }
                Some(_) => continue,
            }
        }
    }
}

pub fn socket_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    // std has no bind-before-connect; libc does.
    use std::os::fd::FromRawFd;
    let IpAddr::V4(from) = from else { panic!("IPv4 only") };
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let local = sockaddr(from, 0);
        assert_eq!(libc::bind(fd, &local as *const _ as *const libc::sockaddr, len), 0, "bind {from}");
        let remote = sockaddr(*to.ip(), to.port());
        assert_eq!(libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len), 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}

/// Fills `buf`; false on EOF or reset. Panics on timeout.
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut off = 0;
    while off < buf.len() {
        match s.read(&mut buf[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("timed out after {WAIT:?} reading from the broker")
            }
            Err(e) => panic!("read error: {e}"),
        }
    }
    true
}

/// A fresh lapin connection can still declare a queue and round-trip a message.
pub fn assert_broker_still_serves(broker: &TestBroker) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let (_conn, ch) = util::open(broker).await;
        util::confirm_select(&ch).await;
        let q = unique("still-serving");
        util::declare_queue(&ch, &q).await;
        util::publish_confirmed(&ch, "", &q, b"alive", Default::default()).await;
        assert_eq!(util::drain(&ch, &q).await, vec!["alive"]);
    });
}

#[track_caller]
fn assert_close(end: End, code: u16, text_prefix: &str) {
    match end {
        End::Close(c, text) => {
            assert_eq!(c, code, "reply text: {text}");
            assert!(text.starts_with(text_prefix), "reply text {text:?} does not start with {text_prefix:?}");
        }
        End::Dropped => panic!("expected connection.close {code}, the socket was just closed"),
    }
}

/// queue.declare arguments on channel 1 (not passive, no flags).
fn queue_declare(name: &[u8], args_table: &[u8]) -> Vec<u8> {
    let mut a = vec![0, 0];
    shortstr(&mut a, name);
    a.push(0);
    a.extend_from_slice(args_table);
    frame(1, 1, &method(50, 10, &a))
}

// ---- Nesting ----------------------------------------------------------------------

/// RabbitMQ 3.10 refuses any frame over 4096 bytes before tune (this one is 10 KB) and
/// drops the socket; it accepts deep nesting that fits. HareMQ's limit is 32 levels;
/// deeper is 501 FRAME_ERROR, the answer for any method whose arguments do not decode.
#[test]
fn deeply_nested_client_properties_before_login() {
    let broker = start_broker();
    let mut w = Wire::tcp(broker.addr());
    w.header();
    w.start_ok(&table(&deep_entry(b"x", 2000)), b"PLAIN", b"\0guest\0guest");
    match w.read_end() {
        End::Close(code, text) => {
            assert_eq!(code, 501, "{text}");
            assert!(text.starts_with("FRAME_ERROR - cannot decode arguments of method 10.11"), "{text}");
            assert!(text.contains("nested deeper than 32 levels"), "{text}");
        }
        End::Dropped if broker.is_external() => {}
        End::Dropped => panic!("expected connection.close 501"),
    }
    // The limit itself is fine.
    let mut w = Wire::tcp(broker.addr());
    w.header();
    w.start_ok(&table(&deep_entry(b"x", MAX_NESTING - 1)), b"PLAIN", b"\0guest\0guest");
    w.tune_and_open();
    assert_broker_still_serves(&broker);
}

/// The AMQPLAIN response is a field table of its own (inside start-ok's longstr).
#[test]
fn deeply_nested_amqplain_response_is_a_refused_login() {
    let broker = start_broker();
    let mut w = Wire::tcp(broker.addr());
    w.header();
    let mut response = longstr_entry(b"LOGIN", b"guest");
    response.extend_from_slice(&longstr_entry(b"PASSWORD", b"guest"));
    response.extend_from_slice(&deep_entry(b"x", 2000));
    w.start_ok(&table(&[]), b"AMQPLAIN", &response);
    match w.read_end() {
        End::Close(code, text) => {
            assert_eq!(code, 403, "{text}");
            assert!(text.starts_with("ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN"));
        }
        End::Dropped => panic!("expected connection.close 403"),
    }
    assert_broker_still_serves(&broker);
}

/// Every method with a field table: the arguments nest 2,000 levels deep. RabbitMQ 3.10
/// accepts the nesting (its parser is not recursive on the native stack); a malformed
/// table crashes its channel and drops the socket. HareMQ answers 501 FRAME_ERROR.
#[test]
fn deeply_nested_method_tables_are_frame_errors() {
    let broker = start_broker();
    let deep = table(&deep_entry(b"x", 2000));
    let q = unique("nest");
    let with_table = |shorts: usize, strings: &[&[u8]], octets: usize| {
        let mut a = vec![0u8; 2 * shorts];
        for s in strings {
            shortstr(&mut a, s);
        }
        a.extend(std::iter::repeat_n(0u8, octets));
        a.extend_from_slice(&deep);
        a
    };
    let cases: Vec<((u16, u16), Vec<u8>)> = vec![
        ((50, 10), with_table(1, &[q.as_bytes()], 1)),
        ((50, 20), with_table(1, &[q.as_bytes(), b"amq.direct", b"k"], 1)),
        ((50, 50), with_table(1, &[q.as_bytes(), b"amq.direct", b"k"], 0)),
        ((40, 10), with_table(1, &[b"nest-x", b"direct"], 1)),
        ((40, 30), with_table(1, &[b"amq.fanout", b"amq.direct", b"k"], 1)),
        ((40, 40), with_table(1, &[b"amq.fanout", b"amq.direct", b"k"], 1)),
        ((60, 20), with_table(1, &[q.as_bytes(), b"tag"], 1)),
    ];
    for ((class, meth), args) in cases {
        let mut w = Wire::open(broker.addr());
        w.send(&frame(1, 1, &method(class, meth, &args)));
        if broker.is_external() {
            let _ = w.read_end();
            continue;
        }
        let end = w.read_end();
        let prefix = format!("FRAME_ERROR - cannot decode arguments of method {class}.{meth}: field table nested");
        assert_close(end, 501, &prefix);
    }
    // 32 levels (the arguments table and 31 arrays in it) are accepted.
    let mut w = Wire::open(broker.addr());
    w.send(&queue_declare(q.as_bytes(), &table(&deep_entry(b"x-custom", MAX_NESTING - 1))));
    match w.read_frame() {
        Some(AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    assert_broker_still_serves(&broker);
}

/// A content header whose headers table nests too deep. RabbitMQ 3.10 decodes headers
/// lazily and answers a malformed table with 541 INTERNAL_ERROR; HareMQ checks the
/// header when it arrives: 501 FRAME_ERROR, as for any undecodable content header.
#[test]
fn deeply_nested_message_headers_are_frame_errors() {
    let broker = start_broker();
    let q = unique("nest-h");
    let mut w = Wire::open(broker.addr());
    w.send(&queue_declare(q.as_bytes(), &table(&[])));
    let _ = w.read_frame();
    let mut publish = vec![0, 0];
    shortstr(&mut publish, b"");
    shortstr(&mut publish, q.as_bytes());
    publish.push(0);
    let header = |headers: &[u8]| {
        let mut p = 60u16.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&(1u16 << 13).to_be_bytes());
        p.extend_from_slice(headers);
        frame(2, 1, &p)
    };
    // At the limit: delivered.
    w.send(&frame(1, 1, &method(60, 40, &publish)));
    w.send(&header(&table(&deep_entry(b"h", MAX_NESTING - 1))));
    w.send(&frame(3, 1, b"x"));
    // Too deep.
    w.send(&frame(1, 1, &method(60, 40, &publish)));
    w.send(&header(&table(&deep_entry(b"h", 3000))));
    w.send(&frame(3, 1, b"y"));
    let end = w.read_end();
    if !broker.is_external() {
        assert_close(end, 501, "FRAME_ERROR - cannot decode content header: field table nested deeper than 32 levels");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_c, ch) = util::open(&broker).await;
            assert_eq!(util::drain(&ch, &q).await, vec!["x"]);
        });
    }
    assert_broker_still_serves(&broker);
}

// ---- Short strings ----------------------------------------------------------------

/// `x-dead-letter-routing-key` becomes the routing key of dead-lettered messages, a
/// short string. RabbitMQ 3.10 accepts 300 bytes at declare and then fails delivering
/// such a message (basic.get: 541 INTERNAL_ERROR); HareMQ used to panic there with the
/// message already taken off the queue. Now the declare is refused with 406.
#[test]
fn dead_letter_routing_key_longer_than_a_short_string_is_refused() {
    let broker = start_broker();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_conn, ch) = util::open(&broker).await;
        let q = unique("dlrk");
        let mut args = lapin::types::FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), lapin::types::AMQPValue::LongString("amq.fanout".into()));
        args.insert(
            "x-dead-letter-routing-key".into(),
            lapin::types::AMQPValue::LongString("k".repeat(300).into()),
        );
        let res = ch.queue_declare(q.as_str().into(), Default::default(), args).await;
        util::assert_amqp_err(
            res,
            406,
            &format!("PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': {{routing_key_too_long,300}}"),
        );
    });
    assert_broker_still_serves(&broker);
}

// ---- Panic containment ------------------------------------------------------------

/// Queues with this prefix make basic.get panic after taking the message, in debug
/// builds of HareMQ only (`amqp::panics::test_trigger`): no real input panics any more.
const PANIC_QUEUE_PREFIX: &str = "haremq-test-panic-";

async fn passive(ch: &lapin::Channel, q: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        q.into(),
        lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
        Default::default(),
    )
    .await
}

/// A panic while handling a frame closes that connection with 541 INTERNAL_ERROR and
/// tears it down like any other close: its unacked deliveries are requeued, its
/// consumers removed, its exclusive queues deleted; the message basic.get had taken is
/// back in its queue; the executor threads survive (three panics on a two-thread
/// broker), and other connections never notice.
#[test]
fn a_panic_closes_only_its_connection_with_541_and_loses_nothing() {
    if !cfg!(debug_assertions) {
        return; // the trigger exists in debug builds only
    }
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let p = format!("{PANIC_QUEUE_PREFIX}{}", unique("q"));
    let work = unique("work");
    let (bystander, bch) = rt.block_on(async {
        let (conn, ch) = util::open(&broker).await;
        util::confirm_select(&ch).await;
        util::declare_queue(&ch, &p).await;
        util::declare_queue(&ch, &work).await;
        util::publish_confirmed(&ch, "", &p, b"precious", Default::default()).await;
        for body in [&b"w1"[..], b"w2"] {
            util::publish_confirmed(&ch, "", &work, body, Default::default()).await;
        }
        (conn, ch)
    });
    for round in 0..3 {
        let mut w = Wire::open(broker.addr());
        // An exclusive queue and a consumer holding unacked deliveries.
        let excl = format!("excl-{round}-{}", unique("e"));
        let mut a = vec![0, 0];
        shortstr(&mut a, excl.as_bytes());
        a.push(0b100); // exclusive
        a.extend_from_slice(&table(&[]));
        w.send(&frame(1, 1, &method(50, 10, &a)));
        let mut a = vec![0, 0];
        shortstr(&mut a, work.as_bytes());
        shortstr(&mut a, b"");
        a.push(0);
        a.extend_from_slice(&table(&[]));
        w.send(&frame(1, 1, &method(60, 20, &a)));
        let mut deliveries = 0;
        while deliveries < 2 {
            match w.read_frame() {
                Some(AMQPFrame::Method(1, AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Deliver(_)))) => {
                    deliveries += 1
                }
                Some(_) => {}
                None => panic!("connection closed before the deliveries"),
            }
        }
        // basic.get on the panicking queue.
        let mut a = vec![0, 0];
        shortstr(&mut a, p.as_bytes());
        a.push(0); // no-ack = false
        w.send(&frame(1, 1, &method(60, 70, &a)));
        assert_eq!(w.read_end(), End::Close(541, "INTERNAL_ERROR - see the broker log".into()));
        rt.block_on(async {
            // Teardown ran: requeued, consumer gone, exclusive queue deleted.
            let deadline = Instant::now() + WAIT;
            loop {
                let q = passive(&bch, &work).await.expect("work queue");
                if q.message_count() == 2 && q.consumer_count() == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "teardown did not run: {q:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (_c, ch) = util::open(&broker).await;
            util::assert_amqp_err(passive(&ch, &excl).await, 404, "NOT_FOUND");
            // The message basic.get had taken is still there.
            assert_eq!(passive(&bch, &p).await.expect("panic queue").message_count(), 1);
        });
    }
    assert!(bystander.status().connected(), "an unrelated connection was affected");
    rt.block_on(async {
        assert_eq!(util::drain(&bch, &work).await, vec!["w1", "w2"]);
    });
    assert_broker_still_serves(&broker);
}

// ---- Heartbeats and logins --------------------------------------------------------

/// A heartbeat frame has no payload. RabbitMQ 3.10 answers one that has with
/// `FRAME_ERROR - type 8, all octets = <<"abc">>: unknown_frame` (also on channel 1,
/// and `<<1,2,255>>` for unprintable bytes).
#[test]
fn heartbeat_with_a_payload_is_frame_error_501() {
    let broker = start_broker();
    for (channel, payload, text) in [
        (0u16, &b"abc"[..], r#"FRAME_ERROR - type 8, all octets = <<"abc">>: unknown_frame"#),
        (1, b"xy", r#"FRAME_ERROR - type 8, all octets = <<"xy">>: unknown_frame"#),
        (0, &[1, 2, 255], "FRAME_ERROR - type 8, all octets = <<1,2,255>>: unknown_frame"),
    ] {
        let mut w = Wire::open(broker.addr());
        w.send(&frame(8, channel, payload));
        assert_eq!(w.read_end(), End::Close(501, text.into()));
    }
    assert_broker_still_serves(&broker);
}

/// Starts a login as guest with `password` from `from`; returns the socket after
/// start-ok and when it was sent.
fn login_from(broker: &TestBroker, from: IpAddr, password: &str) -> (Wire, Instant) {
    let mut w = Wire::tcp_from(broker.addr(), from);
    w.header();
    w.start_ok(&table(&[]), b"PLAIN", format!("\0guest\0{password}").as_bytes());
    (w, Instant::now())
}

fn assert_refused(w: &mut Wire) {
    match w.read_end() {
        End::Close(403, text) => assert_eq!(
            text,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
        ),
        other => panic!("expected connection.close 403, got {other:?}"),
    }
}

/// A failed login is answered after about a second, with RabbitMQ's reply unchanged;
/// failures from one address are answered a second apart, and logins from another
/// address are not slowed meanwhile. (Any 127.x address is loopback, so guest may log in
/// from each.)
#[test]
fn failed_logins_are_delayed_per_source_address() {
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let attacker: IpAddr = "127.0.0.3".parse().unwrap();
    let other: IpAddr = "127.0.0.4".parse().unwrap();
    // One failure: about a second.
    let (mut w, sent) = login_from(&broker, attacker, "wrong");
    assert_refused(&mut w);
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(900), "refused after {took:?}");
    // Three at once from the same address: answered one after another.
    let mut tries: Vec<_> = (0..3).map(|_| login_from(&broker, attacker, "wrong")).collect();
    let started = Instant::now();
    // Meanwhile another address logs in at once.
    let (mut good, _) = login_from(&broker, other, "guest");
    good.tune_and_open();
    let fast = started.elapsed();
    assert!(fast < Duration::from_millis(700), "a login from another address took {fast:?}");
    let mut answered = Vec::new();
    for (w, sent) in &mut tries {
        assert_refused(w);
        answered.push(sent.elapsed());
    }
    answered.sort();
    assert!(answered[2] >= Duration::from_millis(2700), "three failures answered after {answered:?}");
    assert!(answered[0] >= Duration::from_millis(900), "{answered:?}");
    // A good login from the attacker's address waits for those to be answered, then
    // works as usual.
    let (mut ok, _) = login_from(&broker, attacker, "guest");
    ok.tune_and_open();
    assert_broker_still_serves(&broker);
}

// ---- Dead-letter chains -----------------------------------------------------------

/// A message dead-lettered along a chain of queues (each drops it at once with
/// `x-max-length` 0 and dead-letters it to the next through the default exchange).
/// Each hop used to recurse on the stack of the connection that published, so a long
/// enough chain (found by the network fuzz test with a dead-letter loop across queues)
/// overflowed it and aborted the process. Now the hops run one after another.
#[test]
fn a_long_dead_letter_chain_does_not_overflow_the_stack() {
    const HOPS: usize = 400;
    let broker = start_broker();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_conn, ch) = util::open(&broker).await;
        let base = unique("chain");
        let name = |i: usize| format!("{base}-{i}");
        use lapin::types::AMQPValue;
        for i in (0..HOPS).rev() {
            let mut args = lapin::types::FieldTable::default();
            if i + 1 < HOPS {
                args.insert("x-max-length".into(), AMQPValue::LongInt(0));
                args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
                args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(name(i + 1).into()));
            }
            ch.queue_declare(name(i).as_str().into(), Default::default(), args).await.expect("declare");
        }
        util::confirm_select(&ch).await;
        // 400 hops re-encode an x-death list that grows by one entry a hop (80,000
        // entries in all): seconds in a debug build, more on a loaded machine. The
        // publisher's confirm comes once the whole chain has been walked.
        let deadline = Instant::now() + WAIT * 6;
        let confirm = ch
            .basic_publish("".into(), name(0).as_str().into(), Default::default(), b"traveller", Default::default())
            .await
            .expect("basic.publish");
        let confirmed = tokio::time::timeout(WAIT * 6, confirm).await.expect("the confirm within a minute");
        assert!(confirmed.expect("confirm").is_ack());
        while util::message_count(&ch, &name(HOPS - 1)).await != 1 {
            assert!(Instant::now() < deadline, "the message did not reach the end of the chain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = ch
            .basic_get(name(HOPS - 1).as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("a message");
        assert_eq!(got.delivery.data, b"traveller");
        let deaths = match got.delivery.properties.headers().as_ref().and_then(|h| h.inner().get("x-death")) {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().len(),
            other => panic!("x-death: {other:?}"),
        };
        assert_eq!(deaths, HOPS - 1);
    });
    assert_broker_still_serves(&broker);
}

/// Full queues bound to one fanout exchange, each dead-lettering into it: one publish
/// pushes out a head in every queue, each of which goes to every other queue, and so on
/// (a dead-letter storm; cycle detection ends each message's trip, but the number of
/// trips multiplies). The network fuzz test found it: it recursed until the stack
/// overflowed and the process aborted. Now the cascade is iterative and bounded
/// (`MAX_CASCADE`), and the broker answers everyone afterwards.
#[test]
fn a_dead_letter_storm_neither_overflows_nor_hangs() {
    const QUEUES: usize = 8;
    let broker = start_broker();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_conn, ch) = util::open(&broker).await;
        let x = unique("storm-x");
        util::declare_exchange(&ch, &x, lapin::ExchangeKind::Fanout).await;
        use lapin::types::AMQPValue;
        let mut names = Vec::new();
        for i in 0..QUEUES {
            let q = format!("{x}-{i}");
            let mut args = lapin::types::FieldTable::default();
            args.insert("x-max-length".into(), AMQPValue::LongInt(2));
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(x.as_str().into()));
            ch.queue_declare(q.as_str().into(), Default::default(), args).await.expect("declare");
            util::confirm_select(&ch).await;
            util::publish_confirmed(&ch, "", &q, b"resident", Default::default()).await;
            util::publish_confirmed(&ch, "", &q, b"resident", Default::default()).await;
            names.push(q);
        }
        for q in &names {
            util::bind(&ch, q, &x, "").await;
        }
        let started = Instant::now();
        util::publish_confirmed(&ch, &x, "", b"spark", Default::default()).await;
        eprintln!("storm took {:?}", started.elapsed());
        for q in &names {
            assert!(util::message_count(&ch, q).await <= 2);
        }
    });
    assert_broker_still_serves(&broker);
}
