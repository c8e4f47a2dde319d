//! Malformed input on raw TCP sockets. Each case checks what RabbitMQ 3.10 answers and that
//! the broker keeps serving other connections afterwards.

use crate::common::{start_broker, unique, TestBroker, WAIT};
use crate::util;
use amq_protocol::frame::{parse_frame, AMQPFrame};
use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::AMQPValue;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

fn frame(ty: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    frame_with_end(ty, channel, payload, 0xCE)
}

fn frame_with_end(ty: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(end);
    f
}

fn shortstr(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    p
}

fn channel_open() -> Vec<u8> {
    method(20, 10, &[0]) // out-of-band shortstr ""
}

fn basic_publish(routing_key: &str) -> Vec<u8> {
    let mut args = vec![0, 0]; // ticket
    shortstr(&mut args, b""); // exchange
    shortstr(&mut args, routing_key.as_bytes());
    args.push(0); // mandatory/immediate
    method(60, 40, &args)
}

fn content_header(class: u16, body_size: u64) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes()); // weight
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // no properties
    p
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
enum End {
    /// connection.close with (reply code, reply text, class id, method id).
    Close(u16, String, u16, u16),
    /// The socket was closed (EOF or reset) without a connection.close.
    Dropped,
}

/// A raw AMQP connection.
struct Raw {
    s: TcpStream,
    frame_max: u32,
}

impl Raw {
    fn tcp(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).expect("tcp connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Protocol header, start/start-ok (PLAIN guest/guest), tune/tune-ok, open/open-ok.
    fn handshake(addr: SocketAddr) -> Raw {
        let (mut raw, _start, tune) = Self::start_and_tune(addr);
        raw.tune_ok_and_open(tune.channel_max, tune.frame_max);
        match raw.read_frame().expect("connection.open-ok") {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        raw
    }

    /// Protocol header, start, start-ok; returns connection.start and connection.tune.
    fn start_and_tune(addr: SocketAddr) -> (Raw, connection::Start, connection::Tune) {
        let mut s = Self::tcp(addr);
        s.write_all(PROTOCOL_HEADER).unwrap();
        let mut raw = Raw { s, frame_max: 0 };
        let start = match raw.read_frame().expect("connection.start") {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(start))) => start,
            other => panic!("expected connection.start, got {other:?}"),
        };
        assert_eq!((start.version_major, start.version_minor), (0, 9));
        let mechs = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
        assert!(mechs.split(' ').any(|m| m == "PLAIN"), "mechanisms {mechs:?}");
        let mut args = 0u32.to_be_bytes().to_vec(); // empty client-properties table
        shortstr(&mut args, b"PLAIN");
        let response = b"\0guest\0guest";
        args.extend_from_slice(&(response.len() as u32).to_be_bytes());
        args.extend_from_slice(response);
        shortstr(&mut args, b"en_US");
        raw.send(&frame(1, 0, &method(10, 11, &args)));
        let tune = match raw.read_frame().expect("connection.tune") {
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        (raw, start, tune)
    }

    /// Sends tune-ok with the given limits (no heartbeats) and connection.open for "/".
    fn tune_ok_and_open(&mut self, channel_max: u16, frame_max: u32) {
        self.tune_ok_heartbeat_and_open(channel_max, frame_max, 0);
    }

    /// Like [`tune_ok_and_open`](Self::tune_ok_and_open) with a heartbeat interval.
    fn tune_ok_heartbeat_and_open(&mut self, channel_max: u16, frame_max: u32, heartbeat: u16) {
        self.frame_max = frame_max;
        let mut args = channel_max.to_be_bytes().to_vec();
        args.extend_from_slice(&frame_max.to_be_bytes());
        args.extend_from_slice(&heartbeat.to_be_bytes());
        self.send(&frame(1, 0, &method(10, 31, &args)));
        let mut args = Vec::new();
        shortstr(&mut args, b"/");
        shortstr(&mut args, b"");
        args.push(0);
        self.send(&frame(1, 0, &method(10, 40, &args)));
    }

    /// Handshake plus channel 1 opened.
    fn with_channel(addr: SocketAddr) -> Raw {
        let mut raw = Self::handshake(addr);
        raw.send(&frame(1, 1, &channel_open()));
        match raw.read_frame().expect("channel.open-ok") {
            AMQPFrame::Method(1, AMQPClass::Channel(_)) => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    /// Reads one frame; None on EOF/reset.
    fn read_frame(&mut self) -> Option<AMQPFrame> {
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
        assert_eq!(buf[7 + size], 0xCE, "server frame must end with 0xCE");
        match parse_frame(buf.as_slice()) {
            Ok((rest, f)) => {
                assert!(rest.is_empty());
                Some(f)
            }
            Err(e) => panic!("server sent an unparsable frame {buf:?}: {e:?}"),
        }
    }

    /// Reads until the server closes the connection; answers connection.close with close-ok and
    /// then expects the socket to be closed.
    fn read_end(&mut self) -> End {
        loop {
            match self.read_frame() {
                None => return End::Dropped,
                Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                    self.send(&frame(1, 0, &method(10, 51, &[])));
                    // After close-ok the server closes the socket.
                    let mut b = [0u8; 64];
                    match self.s.read(&mut b) {
                        Ok(0) => {}
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                        other => panic!("socket still open after close-ok: {other:?}"),
                    }
                    return End::Close(c.reply_code, c.reply_text.as_str().to_string(), c.class_id, c.method_id);
                }
                Some(AMQPFrame::Heartbeat) => continue,
                Some(other) => panic!("unexpected frame while waiting for connection.close: {other:?}"),
            }
        }
    }
}

/// Fills `buf`; false on EOF or connection reset. Panics on timeout.
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

/// Reads everything until EOF/reset.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read error after {out:?}: {e}"),
        }
    }
}

/// A fresh lapin connection can still declare a queue and round-trip a message.
fn assert_broker_still_serves(broker: &TestBroker) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let (_conn, ch) = util::open(broker).await;
        util::confirm_select(&ch).await;
        let q = unique("after-bad-input");
        util::declare_queue(&ch, &q).await;
        util::publish_confirmed(&ch, "", &q, b"alive", Default::default()).await;
        assert_eq!(util::drain(&ch, &q).await, vec!["alive"]);
    });
}

fn assert_close(end: End, code: u16, text_prefix: &str) {
    match end {
        End::Close(c, text, _, _) => {
            assert_eq!(c, code, "reply text: {text}");
            assert!(text.starts_with(text_prefix), "reply text {text:?} does not start with {text_prefix:?}");
        }
        End::Dropped => panic!("expected connection.close {code}, the socket was just closed"),
    }
}

#[test]
fn garbage_protocol_header_gets_supported_header_and_close() {
    let broker = start_broker();
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"AMQP\x00\x00\x08\x00", // AMQP 0-8
        b"AMQP\x01\x01\x00\x0a", // old 0-10 style header
        b"AMQP\x00\x01\x00\x00", // AMQP 1.0 (no plugin)
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
    ] {
        let mut s = Raw::tcp(broker.addr());
        s.write_all(garbage).unwrap();
        let reply = read_to_end(&mut s);
        assert_eq!(reply, PROTOCOL_HEADER, "reply to {garbage:?}");
    }
    assert_broker_still_serves(&broker);
}

#[test]
fn handshake_by_hand_works() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    // Clean connection.close from the client: the server answers close-ok.
    let mut args = 200u16.to_be_bytes().to_vec();
    shortstr(&mut args, b"bye");
    args.extend_from_slice(&[0, 0, 0, 0]);
    raw.send(&frame(1, 0, &method(10, 50, &args)));
    match raw.read_frame() {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
}

#[test]
fn wrong_frame_end_byte_is_frame_error_501() {
    let broker = start_broker();
    let mut raw = Raw::handshake(broker.addr());
    raw.send(&frame_with_end(1, 1, &channel_open(), 0x00));
    let end = raw.read_end();
    // RabbitMQ: "FRAME_ERROR - type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}"
    assert_close(end, 501, "FRAME_ERROR");
    assert_broker_still_serves(&broker);
}

#[test]
fn frame_larger_than_frame_max_is_frame_error_501() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    let payload = vec![b'x'; raw.frame_max as usize + 10];
    raw.send(&frame(3, 1, &payload));
    let end = raw.read_end();
    // RabbitMQ: "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131082,131064}"
    assert_close(end, 501, "FRAME_ERROR");
    assert_broker_still_serves(&broker);
}

#[test]
fn unknown_frame_type_is_frame_error_501() {
    let broker = start_broker();
    let mut raw = Raw::handshake(broker.addr());
    raw.send(&frame(9, 0, b"abc"));
    // RabbitMQ: "FRAME_ERROR - type 9, all octets = <<\"abc\">>: unknown_frame"
    assert_close(raw.read_end(), 501, "FRAME_ERROR");
    assert_broker_still_serves(&broker);
}

#[test]
fn unknown_class_or_method_drops_the_connection() {
    let broker = start_broker();
    for (class, meth) in [(99u16, 99u16), (60, 99)] {
        let mut raw = Raw::with_channel(broker.addr());
        raw.send(&frame(1, 1, &method(class, meth, &[])));
        let end = raw.read_end();
        // RabbitMQ 3.10 crashes the connection process ({unknown_method_id,{60,99}}) and closes
        // the socket without a connection.close. A broker that answers 540 NOT_IMPLEMENTED or
        // 503 COMMAND_INVALID first is accepted as well.
        match end {
            End::Dropped => {}
            End::Close(code, text, _, _) => {
                assert!(code == 540 || code == 503, "unexpected close {code} {text}")
            }
        }
    }
    assert_broker_still_serves(&broker);
}

#[test]
fn malformed_method_arguments_are_frame_error_501() {
    let broker = start_broker();
    // queue.declare whose queue-name shortstr claims 16 bytes but only 2 follow.
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(1, 1, &method(50, 10, &[0, 0, 16, b'a', b'b'])));
    // RabbitMQ: "FRAME_ERROR - cannot decode <<0,0,16,97,98>>" (class 50, method 10)
    assert_close(raw.read_end(), 501, "FRAME_ERROR");
    // A shortstr that is not UTF-8.
    let mut raw = Raw::with_channel(broker.addr());
    let mut args = vec![0, 0];
    shortstr(&mut args, b"\xff\xfe");
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 1, &method(50, 10, &args)));
    // RabbitMQ: "FRAME_ERROR - Malformed UTF-8 in shortstr"
    assert_close(raw.read_end(), 501, "FRAME_ERROR");
    assert_broker_still_serves(&broker);
}

#[test]
fn content_header_with_huge_body_size() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(1, 1, &basic_publish("q")));
    raw.send(&frame(2, 1, &content_header(60, 1u64 << 63)));
    // RabbitMQ 3.10 accepts the header and waits for 2^63 bytes of body. A method frame in the
    // middle of the content is then 505 UNEXPECTED_FRAME ("expected content body, got non content
    // body frame instead", class 60 method 40). A broker that rejects the header right away with
    // 501/505 is accepted too.
    raw.send(&frame(1, 1, &channel_open()));
    if broker.is_external() {
        match raw.read_end() {
            End::Close(code, text, _, _) => assert!(code == 505 || code == 501, "{code} {text}"),
            End::Dropped => panic!("expected connection.close"),
        }
    } else {
        // HareMQ checks the announced size against max_message_size (128 MiB) when the
        // header arrives and closes only the channel, instead of waiting for 2^63 bytes.
        match raw.read_frame() {
            Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => {
                assert_eq!(c.reply_code, 406);
                assert!(
                    c.reply_text.as_str().starts_with(
                        "PRECONDITION_FAILED - message size 9223372036854775808 is larger than configured max size"
                    ),
                    "{}",
                    c.reply_text
                );
            }
            other => panic!("expected channel.close 406, got {other:?}"),
        }
    }
    assert_broker_still_serves(&broker);
}

#[test]
fn body_frame_without_publish_is_unexpected_frame_505() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(3, 1, b"hello"));
    let end = raw.read_end();
    assert_eq!(
        end,
        End::Close(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead".into(), 0, 0)
    );
    // Same for a content header without a publish.
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(2, 1, &content_header(60, 5)));
    assert_close(raw.read_end(), 505, "UNEXPECTED_FRAME");
    assert_broker_still_serves(&broker);
}

#[test]
fn method_in_the_middle_of_content_is_505() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(1, 1, &basic_publish("q")));
    raw.send(&frame(1, 1, &basic_publish("q")));
    // RabbitMQ: "UNEXPECTED_FRAME - expected content header for class 60, got non content header
    // frame instead" (class 60, method 40)
    assert_close(raw.read_end(), 505, "UNEXPECTED_FRAME");
    // Content header of the wrong class.
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(1, 1, &basic_publish("q")));
    raw.send(&frame(2, 1, &content_header(50, 5)));
    // RabbitMQ: "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead"
    assert_close(raw.read_end(), 505, "UNEXPECTED_FRAME");
    assert_broker_still_serves(&broker);
}

#[test]
fn heartbeat_on_a_non_zero_channel_is_505() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(8, 1, b""));
    // RabbitMQ: "UNEXPECTED_FRAME - type 8, all octets = <<>>"
    assert_close(raw.read_end(), 505, "UNEXPECTED_FRAME");
    assert_broker_still_serves(&broker);
}

#[test]
fn channel_misuse_is_channel_error_504() {
    let broker = start_broker();
    // A method on a channel that was never opened.
    let mut raw = Raw::handshake(broker.addr());
    let mut args = vec![0, 0];
    shortstr(&mut args, b"x");
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 5, &method(50, 10, &args)));
    assert_eq!(raw.read_end(), End::Close(504, "CHANNEL_ERROR - expected 'channel.open'".into(), 50, 10));
    // channel.open twice on the same channel.
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(1, 1, &channel_open()));
    assert_eq!(raw.read_end(), End::Close(504, "CHANNEL_ERROR - second 'channel.open' seen".into(), 20, 10));
    // A channel-class method on channel 0.
    let mut raw = Raw::handshake(broker.addr());
    raw.send(&frame(1, 0, &method(50, 10, &args)));
    assert_close(raw.read_end(), 504, "CHANNEL_ERROR");
    assert_broker_still_serves(&broker);
}

#[test]
fn closing_the_socket_mid_frame_leaves_the_broker_serving() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    let full = frame(1, 1, &basic_publish("q"));
    raw.send(&full[..5]);
    drop(raw);
    // Also mid-content: publish + header, half a body, then gone.
    let mut raw = Raw::with_channel(broker.addr());
    raw.send(&frame(1, 1, &basic_publish("q")));
    raw.send(&frame(2, 1, &content_header(60, 100)));
    raw.send(&frame(3, 1, &[7u8; 50]));
    drop(raw);
    // And before finishing the handshake.
    let mut s = Raw::tcp(broker.addr());
    s.write_all(PROTOCOL_HEADER).unwrap();
    drop(s);
    assert_broker_still_serves(&broker);
    // A raw connection works too.
    let _raw = Raw::with_channel(broker.addr());
}

#[test]
fn connection_start_and_tune_advertise_what_rabbitmq_does() {
    let broker = start_broker();
    let (_raw, start, tune) = Raw::start_and_tune(broker.addr());
    let props = start.server_properties.inner();
    let caps = match props.get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.inner().clone(),
        other => panic!("server_properties.capabilities missing: {other:?}"),
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        // RabbitMQ also advertises connection.blocked; HareMQ advertises only what it
        // implements, and does not implement that yet.
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "consumer_priorities",
    ] {
        assert_eq!(caps.get(cap), Some(&AMQPValue::Boolean(true)), "capability {cap}");
    }
    assert_eq!(String::from_utf8_lossy(start.locales.as_bytes()), "en_US");
    // RabbitMQ 3.10 defaults.
    assert_eq!((tune.channel_max, tune.frame_max, tune.heartbeat), (2047, 131072, 60));
}

#[test]
fn server_respects_a_smaller_client_frame_max() {
    let broker = start_broker();
    let (mut raw, _start, tune) = Raw::start_and_tune(broker.addr());
    raw.tune_ok_and_open(tune.channel_max, 4096);
    match raw.read_frame().expect("connection.open-ok") {
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
        other => panic!("expected connection.open-ok, got {other:?}"),
    }
    raw.send(&frame(1, 1, &channel_open()));
    raw.read_frame().expect("channel.open-ok");
    let q = unique("small-frames");
    let mut args = vec![0, 0];
    shortstr(&mut args, q.as_bytes());
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 1, &method(50, 10, &args)));
    match raw.read_frame() {
        Some(AMQPFrame::Method(1, AMQPClass::Queue(_))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    raw.send(&frame(1, 1, &basic_publish(&q)));
    raw.send(&frame(2, 1, &content_header(60, body.len() as u64)));
    for chunk in body.chunks(4096 - 8) {
        raw.send(&frame(3, 1, chunk));
    }
    // basic.get (no-ack) and reassemble: every body frame must fit in 4096 bytes.
    let mut args = vec![0, 0];
    shortstr(&mut args, q.as_bytes());
    args.push(1);
    raw.send(&frame(1, 1, &method(60, 70, &args)));
    let mut got = Vec::new();
    let mut frames = 0;
    loop {
        match raw.read_frame().expect("frame") {
            AMQPFrame::Method(1, AMQPClass::Basic(m)) => {
                assert!(format!("{m:?}").starts_with("GetOk"), "expected basic.get-ok, got {m:?}")
            }
            AMQPFrame::Header(1, h) => assert_eq!(h.body_size, body.len() as u64),
            AMQPFrame::Body(1, data) => {
                assert!(data.len() <= 4096 - 8, "body frame of {} bytes exceeds frame_max 4096", data.len());
                frames += 1;
                got.extend_from_slice(&data);
                if got.len() >= body.len() {
                    break;
                }
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(frames, 3);
    assert!(got == body, "body corrupted");
}

#[test]
fn tune_ok_outside_the_servers_limits_is_refused() {
    let broker = start_broker();
    // frame_max below the 4096 minimum. RabbitMQ 3.10 logs "negotiated frame_max = 1000 is lower
    // than the minimum allowed value (4096)" and closes the socket ~3 s later without a
    // connection.close (no connection.open-ok either).
    let (mut raw, _start, tune) = Raw::start_and_tune(broker.addr());
    raw.tune_ok_and_open(tune.channel_max, 1000);
    match raw.read_end() {
        End::Dropped => {}
        End::Close(code, text, _, _) => assert!(code == 530 || code == 501 || code == 503, "{code} {text}"),
    }
    assert_broker_still_serves(&broker);
}

#[test]
fn qos_with_prefetch_size_is_not_implemented_540() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    let mut args = 1u32.to_be_bytes().to_vec(); // prefetch_size
    args.extend_from_slice(&0u16.to_be_bytes()); // prefetch_count
    args.push(0); // global
    raw.send(&frame(1, 1, &method(60, 10, &args)));
    assert_eq!(raw.read_end(), End::Close(540, "NOT_IMPLEMENTED - prefetch_size!=0 (1)".into(), 60, 10));
    assert_broker_still_serves(&broker);
}

#[test]
fn after_a_channel_close_methods_are_ignored_until_close_ok_and_the_channel_can_reopen() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    let missing = unique("missing");
    let mut args = vec![0, 0];
    shortstr(&mut args, missing.as_bytes());
    args.push(1); // passive
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 1, &method(50, 10, &args)));
    match raw.read_frame() {
        Some(AMQPFrame::Method(1, AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 404);
            assert_eq!(c.reply_text.as_str(), format!("NOT_FOUND - no queue '{missing}' in vhost '/'"));
            assert_eq!((c.class_id, c.method_id), (50, 10));
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
    // Until the client's close-ok, anything else on the channel is discarded (no reply, no error).
    let mut args = vec![0, 0];
    shortstr(&mut args, unique("ignored").as_bytes());
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 1, &method(50, 10, &args)));
    raw.send(&frame(1, 1, &method(20, 41, &[]))); // channel.close-ok
    raw.send(&frame(1, 1, &channel_open()));
    match raw.read_frame() {
        Some(AMQPFrame::Method(1, AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::OpenOk(_)))) => {}
        other => panic!("expected channel.open-ok for the reopened channel, got {other:?}"),
    }
}

#[test]
fn heartbeats_are_sent_and_a_silent_client_is_disconnected() {
    let broker = start_broker();
    let (mut raw, _start, tune) = Raw::start_and_tune(broker.addr());
    raw.tune_ok_heartbeat_and_open(tune.channel_max, tune.frame_max, 1);
    match raw.read_frame().expect("connection.open-ok") {
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
        other => panic!("expected connection.open-ok, got {other:?}"),
    }
    // This client never sends anything: the server keeps sending heartbeats, then gives
    // up after two missed intervals and closes the socket (read_frame: None).
    let mut heartbeats = 0;
    while let Some(f) = raw.read_frame() {
        match f {
            AMQPFrame::Heartbeat => heartbeats += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(heartbeats >= 1, "the server sends heartbeats");
    assert_broker_still_serves(&broker);
}

#[test]
fn a_client_that_sends_heartbeats_stays_connected() {
    let broker = start_broker();
    let (mut raw, _start, tune) = Raw::start_and_tune(broker.addr());
    raw.tune_ok_heartbeat_and_open(tune.channel_max, tune.frame_max, 1);
    let mut seen = 0;
    // Answer each server heartbeat with one of ours for a few rounds (> 2 intervals).
    while seen < 5 {
        match raw.read_frame().expect("connection stays open") {
            AMQPFrame::Heartbeat => {
                seen += 1;
                raw.send(&frame(8, 0, &[]));
            }
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    raw.send(&frame(1, 1, &channel_open()));
    loop {
        match raw.read_frame().expect("channel.open-ok") {
            AMQPFrame::Heartbeat => continue,
            AMQPFrame::Method(1, AMQPClass::Channel(_)) => break,
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }
}

/// Sends channel.open on `ch` and expects channel.open-ok.
fn open_channel(raw: &mut Raw, ch: u16) {
    raw.send(&frame(1, ch, &channel_open()));
    match raw.read_frame() {
        Some(AMQPFrame::Method(n, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) if n == ch => {}
        other => panic!("expected channel.open-ok on channel {ch}, got {other:?}"),
    }
}

/// Handshake with the given channel_max, no heartbeats.
fn handshake_with_channel_max(addr: SocketAddr, channel_max: u16) -> Raw {
    let (mut raw, _start, tune) = Raw::start_and_tune(addr);
    raw.tune_ok_and_open(channel_max, tune.frame_max);
    match raw.read_frame().expect("connection.open-ok") {
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
        other => panic!("expected connection.open-ok, got {other:?}"),
    }
    raw
}

#[test]
fn any_channel_number_opens_but_channel_max_bounds_the_open_channels() {
    let broker = start_broker();
    let mut raw = handshake_with_channel_max(broker.addr(), 10);
    // RabbitMQ 3.10 accepts any number up to 65535, whatever channel_max is...
    open_channel(&mut raw, 11);
    open_channel(&mut raw, 65535);
    for ch in 1..=8 {
        open_channel(&mut raw, ch);
    }
    // ...and counts the channels open at once: channel.close frees one.
    raw.send(&frame(1, 65535, &method(20, 40, &[0, 200, 0, 0, 0, 0, 0])));
    match raw.read_frame() {
        Some(AMQPFrame::Method(65535, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)))) => {}
        other => panic!("expected channel.close-ok on channel 65535, got {other:?}"),
    }
    open_channel(&mut raw, 9);
    // The eleventh open channel is refused with a connection error.
    raw.send(&frame(1, 100, &channel_open()));
    assert_eq!(
        raw.read_end(),
        End::Close(
            530,
            "NOT_ALLOWED - number of channels opened (10) has reached the negotiated channel_max (10)".into(),
            0,
            0
        )
    );
    // A channel the server closed counts until the client's close-ok.
    let mut raw = handshake_with_channel_max(broker.addr(), 2);
    open_channel(&mut raw, 1);
    open_channel(&mut raw, 2);
    let mut args = vec![0, 0];
    shortstr(&mut args, unique("missing").as_bytes());
    args.push(1); // passive
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 2, &method(50, 10, &args)));
    match raw.read_frame() {
        Some(AMQPFrame::Method(2, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => assert_eq!(c.reply_code, 404),
        other => panic!("expected channel.close 404, got {other:?}"),
    }
    raw.send(&frame(1, 3, &channel_open()));
    assert_eq!(
        raw.read_end(),
        End::Close(
            530,
            "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)".into(),
            0,
            0
        )
    );
    // With the default channel_max, channel 65535 opens and works.
    let mut raw = Raw::handshake(broker.addr());
    open_channel(&mut raw, 65535);
    let q = unique("channel-65535");
    let mut args = vec![0, 0];
    shortstr(&mut args, q.as_bytes());
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 65535, &method(50, 10, &args)));
    match raw.read_frame() {
        Some(AMQPFrame::Method(65535, AMQPClass::Queue(_))) => {}
        other => panic!("expected queue.declare-ok on channel 65535, got {other:?}"),
    }
    assert_broker_still_serves(&broker);
}

/// connection.close-ok from the client.
fn close_ok() -> Vec<u8> {
    frame(1, 0, &method(10, 51, &[]))
}

/// Handshake and channel 1, then a heartbeat on channel 1 makes the server send
/// connection.close 505.
fn server_closed_connection(addr: SocketAddr) -> Raw {
    let mut raw = Raw::with_channel(addr);
    raw.send(&frame(8, 1, b""));
    match raw.read_frame() {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
            assert_eq!(c.reply_code, 505)
        }
        other => panic!("expected connection.close 505, got {other:?}"),
    }
    raw
}

#[test]
fn after_its_connection_close_the_server_ignores_everything_but_close_ok() {
    let broker = start_broker();
    let mut raw = server_closed_connection(broker.addr());
    // More bad input before the close-ok: another heartbeat on channel 1, a body frame
    // on a channel, a method on a never-opened channel, an unknown frame type and a
    // frame with a bad end byte. RabbitMQ answers none of them (AMQP: after sending
    // connection.close, discard everything but close and close-ok).
    raw.send(&frame(8, 1, b""));
    raw.send(&frame(3, 1, b"body"));
    raw.send(&frame(1, 7, &method(50, 10, &[0, 0, 1, b'q', 0, 0, 0, 0, 0])));
    raw.send(&frame(9, 0, b"abc"));
    raw.send(&frame_with_end(1, 1, &channel_open(), 0x00));
    raw.send(&close_ok());
    // No second connection.close: the next thing is the end of the stream.
    assert!(raw.read_frame().is_none(), "the server sent a frame after its connection.close");
    assert_broker_still_serves(&broker);
}

#[test]
fn a_client_that_never_answers_connection_close_is_dropped_after_a_bounded_wait() {
    let broker = start_broker();
    let mut raw = server_closed_connection(broker.addr());
    // The client keeps sending heartbeats instead of close-ok. RabbitMQ drops it after
    // 30 s, HareMQ after 3 s.
    let bound = if broker.is_external() { Duration::from_secs(40) } else { Duration::from_secs(8) };
    let started = Instant::now();
    raw.s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        assert!(started.elapsed() < bound, "the connection is still open after {bound:?}");
        if raw.s.write_all(&frame(8, 0, b"")).is_err() {
            break;
        }
        match raw.s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!("unexpected bytes after connection.close: {:?}", &buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => break, // reset: the server gave up
        }
    }
    assert_broker_still_serves(&broker);
}

#[test]
fn a_client_still_sending_after_its_connection_close_is_not_reset() {
    let broker = start_broker();
    let mut raw = Raw::with_channel(broker.addr());
    let q = unique("burst-close");
    let mut args = vec![0, 0];
    shortstr(&mut args, q.as_bytes());
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    raw.send(&frame(1, 1, &method(50, 10, &args)));
    match raw.read_frame() {
        Some(AMQPFrame::Method(1, AMQPClass::Queue(_))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    // As a client that queued a burst of 20-byte publishes and then closes (amqplib:
    // 2,046 sendToQueue calls, then close()), with frames it queued on its channel still
    // being flushed after the connection.close (2 MB of them), all written before
    // reading anything.
    let publish =
        [frame(1, 1, &basic_publish(&q)), frame(2, 1, &content_header(60, 20)), frame(3, 1, &[b'x'; 20])].concat();
    let mut bytes = publish.repeat(2046);
    let mut close = 200u16.to_be_bytes().to_vec();
    shortstr(&mut close, b"Goodbye");
    close.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend(frame(1, 0, &method(10, 50, &close)));
    bytes.extend(publish.repeat(2 * 1024 * 1024 / publish.len()));
    let written = raw.s.write_all(&bytes);
    assert!(written.is_ok(), "the broker reset the connection while the client was sending: {written:?}");
    match raw.read_frame() {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    // Then the server either closes its end cleanly (HareMQ: EOF) or waits for the
    // client to close (RabbitMQ), but never resets the connection.
    if broker.is_external() {
        raw.s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    }
    let mut buf = [0u8; 64];
    match raw.s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if broker.is_external() && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected the end of the stream after close-ok, got {other:?}"),
    }
    // The client is still flushing: the broker keeps discarding what arrives (a reset
    // would fail these writes with EPIPE) until the client closes its end.
    let more = publish.repeat(64 * 1024 / publish.len());
    for i in 0..256 {
        if let Err(e) = raw.s.write_all(&more) {
            panic!("write {i} after close-ok failed (the broker reset the connection): {e}");
        }
    }
    drop(raw);
    assert_broker_still_serves(&broker);
}
