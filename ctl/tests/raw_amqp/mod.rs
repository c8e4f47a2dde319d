//! Just enough of an AMQP 0-9-1 client, over a blocking socket, for the CLI tests to
//! have a connection, a channel and a consumer to list and a connection to close: PLAIN
//! login, channel.open, queue.declare, basic.qos, basic.consume, and reading the
//! broker's connection.close. (The broker's own tests use real client libraries; this
//! crate only needs something to look at.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

pub struct RawConnection {
    stream: TcpStream,
}

/// A method frame as read: channel, class and method ids, and the arguments.
pub struct Method {
    pub channel: u16,
    pub class: u16,
    pub method: u16,
    pub args: Vec<u8>,
}

impl RawConnection {
    /// Connects and logs in as guest to `/`, announcing `product` in the client
    /// properties.
    pub fn open(addr: SocketAddr, product: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("AMQP connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let mut c = RawConnection { stream };
        c.stream.write_all(b"AMQP\x00\x00\x09\x01").expect("protocol header");
        c.expect(0, 10, 10); // connection.start
        let mut args = Vec::new();
        let mut properties = Vec::new();
        shortstr(&mut properties, "product");
        properties.push(b'S');
        longstr(&mut properties, product.as_bytes());
        longstr(&mut args, &properties);
        shortstr(&mut args, "PLAIN");
        longstr(&mut args, b"\0guest\0guest");
        shortstr(&mut args, "en_US");
        c.send(0, 10, 11, &args); // start-ok
        let tune = c.expect(0, 10, 30);
        let mut tune_ok = tune.args[..6].to_vec(); // channel-max, frame-max as offered
        tune_ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        c.send(0, 10, 31, &tune_ok);
        let mut open = Vec::new();
        shortstr(&mut open, "/");
        shortstr(&mut open, "");
        open.push(0);
        c.send(0, 10, 40, &open);
        c.expect(0, 10, 41); // open-ok
        c
    }

    /// Opens channel 1, declares `queue` (transient) and consumes from it as `tag` with
    /// a prefetch of `prefetch` (manual acks).
    pub fn consume(&mut self, queue: &str, tag: &str, prefetch: u16) {
        self.send(1, 20, 10, &[0]); // channel.open
        self.expect(1, 20, 11);
        let mut declare = 0u16.to_be_bytes().to_vec();
        shortstr(&mut declare, queue);
        declare.push(0); // passive, durable, exclusive, auto-delete, no-wait: all off
        declare.extend_from_slice(&0u32.to_be_bytes()); // no arguments
        self.send(1, 50, 10, &declare);
        self.expect(1, 50, 11);
        let mut qos = 0u32.to_be_bytes().to_vec();
        qos.extend_from_slice(&prefetch.to_be_bytes());
        qos.push(0);
        self.send(1, 60, 10, &qos);
        self.expect(1, 60, 11);
        let mut consume = 0u16.to_be_bytes().to_vec();
        shortstr(&mut consume, queue);
        shortstr(&mut consume, tag);
        consume.push(0); // no-local, no-ack, exclusive, no-wait: all off
        consume.extend_from_slice(&0u32.to_be_bytes()); // no arguments
        self.send(1, 60, 20, &consume);
        self.expect(1, 60, 21);
    }

    /// Waits for the broker's connection.close; its reply code and text. Answers
    /// close-ok.
    pub fn closed_by_broker(&mut self) -> (u16, String) {
        let close = self.expect(0, 10, 50);
        let code = u16::from_be_bytes([close.args[0], close.args[1]]);
        let len = close.args[2] as usize;
        let text = String::from_utf8_lossy(&close.args[3..3 + len]).into_owned();
        self.send(0, 10, 51, &[]);
        (code, text)
    }

    /// The next method frame (content and heartbeat frames skipped), which must be the
    /// expected one.
    fn expect(&mut self, channel: u16, class: u16, method: u16) -> Method {
        let m = self.read_method();
        assert_eq!((m.channel, m.class, m.method), (channel, class, method), "unexpected method");
        m
    }

    fn read_method(&mut self) -> Method {
        loop {
            let mut head = [0u8; 7];
            self.stream.read_exact(&mut head).expect("frame header");
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            self.stream.read_exact(&mut payload).expect("frame payload");
            assert_eq!(payload[size], FRAME_END, "frame end");
            if head[0] != FRAME_METHOD {
                continue;
            }
            return Method {
                channel: u16::from_be_bytes([head[1], head[2]]),
                class: u16::from_be_bytes([payload[0], payload[1]]),
                method: u16::from_be_bytes([payload[2], payload[3]]),
                args: payload[4..size].to_vec(),
            };
        }
    }

    fn send(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend_from_slice(&method.to_be_bytes());
        payload.extend_from_slice(args);
        let mut frame = vec![FRAME_METHOD];
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(FRAME_END);
        self.stream.write_all(&frame).expect("send frame");
    }
}

fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}
