//! A minimal AMQP 0-9-1 client connection: handshake (PLAIN), synchronous RPCs for
//! topology, and a large read buffer that hands out many frames per `read`.

use std::time::Duration;

use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, ChannelId, FieldTable, LongString};
use amq_protocol::uri::AMQPUri;
use smol::{io::AsyncReadExt, io::AsyncWriteExt};

use crate::proto::{self, RawFrame, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER};
pub use crate::tls::{ReadStream, WriteStream};

pub type Res<T> = Result<T, String>;

/// Default read buffer: big enough for many frames per syscall.
const READ_BUF: usize = 1 << 20;
/// The frame_max we ask for (RabbitMQ's default).
const WANT_FRAME_MAX: u32 = 131_072;

/// The read half: a large buffer refilled by `fill`, consumed frame by frame.
pub struct Reader {
    stream: ReadStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Largest frame accepted (our negotiated frame_max, or a handshake bound).
    pub max_frame: usize,
}

impl Reader {
    pub fn new(stream: ReadStream, cap: usize) -> Reader {
        Reader { stream, buf: vec![0; cap], start: 0, end: 0, max_frame: WANT_FRAME_MAX as usize }
    }

    /// Reads more bytes (at least one) into the buffer. EOF is an error.
    pub async fn fill(&mut self) -> Res<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.buf.len() / 4 && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A single frame bigger than the buffer: grow (bounded by max_frame checks).
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await.map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            return Err("connection closed by broker (EOF)".into());
        }
        self.end += n;
        Ok(n)
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// The next complete frame's kind, channel and (copied) payload; for slow paths.
    pub async fn next_frame_owned(&mut self) -> Res<(u8, ChannelId, Vec<u8>)> {
        loop {
            if let Some((f, n)) = proto::split_frame(self.data(), self.max_frame)? {
                let out = (f.kind, f.channel, f.payload.to_vec());
                self.consume(n);
                return Ok(out);
            }
            self.fill().await?;
        }
    }
}

/// Turns a broker close into an error message.
pub fn close_error(class: &AMQPClass) -> Option<String> {
    match class {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Some(format!(
            "connection closed by broker: {} {} (class {} method {})",
            c.reply_code, c.reply_text, c.class_id, c.method_id
        )),
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Some(format!(
            "channel closed by broker: {} {} (class {} method {})",
            c.reply_code, c.reply_text, c.class_id, c.method_id
        )),
        _ => None,
    }
}

/// Writes all of `buf` and flushes (TLS may hold encrypted bytes back until then; a
/// no-op on plain TCP).
pub async fn write_all(stream: &mut WriteStream, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

pub struct Conn {
    pub stream: WriteStream,
    pub reader: Reader,
    pub wbuf: Vec<u8>,
    pub frame_max: u32,
}

impl Conn {
    /// Connects, authenticates with PLAIN and opens the URI's vhost.
    pub async fn open(uri: &AMQPUri) -> Res<Conn> {
        let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
        let (read, stream) = crate::tls::connect(uri).await?;
        let mut conn = Conn {
            reader: Reader::new(read, READ_BUF),
            stream,
            wbuf: Vec::with_capacity(64 * 1024),
            frame_max: WANT_FRAME_MAX,
        };
        conn.handshake(uri).await.map_err(|e| format!("handshake with {addr}: {e}"))?;
        Ok(conn)
    }

    async fn handshake(&mut self, uri: &AMQPUri) -> Res<()> {
        self.wbuf.extend_from_slice(PROTOCOL_HEADER);
        self.flush().await?;
        let start = match self.recv_method().await? {
            (_, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
            (_, other) => return Err(format!("expected connection.start, got {other:?}")),
        };
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
        if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
            return Err(format!("broker does not offer PLAIN (offers {mechanisms})"));
        }
        let mut caps = FieldTable::default();
        caps.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
        caps.insert("basic.nack".into(), AMQPValue::Boolean(true));
        caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
        let mut props = FieldTable::default();
        props.insert("product".into(), AMQPValue::LongString("haremq-perf".into()));
        props.insert("version".into(), AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let user = &uri.authority.userinfo;
        let response = format!("\0{}\0{}", user.username, user.password);
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        );
        self.flush().await?;
        let tune = match self.recv_method().await {
            Ok((_, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) => t,
            Ok((_, other)) => return Err(format!("expected connection.tune, got {other:?}")),
            Err(e) if e.contains("EOF") || e.contains("read error") => {
                return Err(format!("{e} after start-ok: authentication failed for user {:?}?", user.username))
            }
            Err(e) => return Err(e),
        };
        let want = uri.query.frame_max.unwrap_or(WANT_FRAME_MAX);
        let frame_max = match tune.frame_max {
            0 => want,
            server => server.min(want),
        };
        let channel_max = match tune.channel_max {
            0 => 2047,
            n => n,
        };
        self.frame_max = frame_max;
        self.reader.max_frame = frame_max.max(4096) as usize;
        let heartbeat = uri.query.heartbeat.unwrap_or(0);
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat,
            })),
        );
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        );
        self.flush().await?;
        match self.recv_method().await? {
            (_, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => Ok(()),
            (_, other) => Err(format!("expected connection.open-ok, got {other:?}")),
        }
    }

    /// Queues a method frame in the write buffer.
    pub fn send(&mut self, channel: ChannelId, method: AMQPClass) {
        proto::write_method(&mut self.wbuf, channel, method);
    }

    pub async fn flush(&mut self) -> Res<()> {
        if !self.wbuf.is_empty() {
            write_all(&mut self.stream, &self.wbuf).await.map_err(|e| format!("write error: {e}"))?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next method frame; heartbeats and content are skipped; broker closes are errors
    /// (a connection.close is answered with close-ok first).
    pub async fn recv_method(&mut self) -> Res<(ChannelId, AMQPClass)> {
        loop {
            let (kind, ch, payload) = self.reader.next_frame_owned().await?;
            if kind == FRAME_HEARTBEAT {
                continue;
            }
            if kind != FRAME_METHOD {
                continue;
            }
            let class = proto::parse_method(&payload)?;
            if let Some(err) = close_error(&class) {
                let ack = match class {
                    AMQPClass::Connection(_) => {
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))
                    }
                    _ => AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                };
                self.send(ch, ack);
                let _ = self.flush().await;
                return Err(err);
            }
            return Ok((ch, class));
        }
    }

    /// Sends a method and waits for the next method on that channel (its reply).
    pub async fn rpc(&mut self, channel: ChannelId, method: AMQPClass) -> Res<AMQPClass> {
        self.send(channel, method);
        self.flush().await?;
        loop {
            let (ch, class) = self.recv_method().await?;
            if ch == channel {
                return Ok(class);
            }
        }
    }

    pub async fn open_channel(&mut self, channel: ChannelId) -> Res<()> {
        match self.rpc(channel, AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}))).await? {
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) => Ok(()),
            other => Err(format!("expected channel.open-ok, got {other:?}")),
        }
    }

    /// Best-effort graceful close: connection.close, then wait (bounded) for close-ok.
    pub async fn close(mut self) {
        self.wbuf.clear();
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        if self.flush().await.is_err() {
            return;
        }
        let wait = async {
            loop {
                match self.reader.next_frame_owned().await {
                    Ok((FRAME_METHOD, 0, p)) if proto::method_ids(&p) == Some((10, 51)) => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        };
        smol::future::or(wait, async {
            smol::Timer::after(Duration::from_secs(2)).await;
        })
        .await;
    }
}

/// Splits all complete frames currently buffered, calling `f` on each; returns when the
/// buffer holds no complete frame. Errors from `f` stop the walk.
pub fn for_each_frame(reader: &mut Reader, mut f: impl FnMut(RawFrame<'_>) -> Res<()>) -> Res<()> {
    let max = reader.max_frame;
    let mut used = 0;
    let result = {
        let data = reader.data();
        loop {
            match proto::split_frame(&data[used..], max) {
                Ok(Some((frame, n))) => {
                    used += n;
                    if let Err(e) = f(frame) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
    };
    reader.consume(used);
    result
}
