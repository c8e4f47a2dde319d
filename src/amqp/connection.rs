//! One client connection: the handshake, the frame loop and connection-level methods.
//!
//! The connection task is deliberately thin: it turns bytes into frames, hands each to
//! its channel and writes replies into the [`Outbox`]. A separate writer task owns the
//! socket's write side (batched writes, heartbeats, missed-heartbeat detection).
//! Frames are handled synchronously, and publisher confirms produced while handling
//! one read's worth of frames go out as one `multiple` ack before the next read.

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{channel as chan, connection as conn, AMQPClass};
use amq_protocol::types::{AMQPValue, ChannelId, FieldTable, LongString, ShortString};
use async_io::Timer;
use async_net::TcpStream;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::channel::{Channel, Context};
use super::frame::{next_frame, write_heartbeat, write_method, Frame, PROTOCOL_HEADER};
use super::outbox::{Batch, Outbox};
use crate::auth::{AuthError, MECHANISMS};
use crate::broker::{Broker, ClientConnection};
use crate::error::AmqpError;
use crate::queue::ConnectionId;
use crate::vhost::VHost;

/// How long a client has for the whole handshake (RabbitMQ's `handshake_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a publisher held by an alarm looks again (message memory falls on any
/// thread: acks, expiry, queue deletion; disk space is re-read at most once a second).
const MEMORY_ALARM_POLL: Duration = Duration::from_millis(20);
/// The smallest frame_max a client may negotiate (AMQP's frame-min-size).
const FRAME_MIN_SIZE: u32 = 4096;

/// Liveness shared by the reader and the writer task.
struct Liveness {
    epoch: Instant,
    last_read_ms: AtomicU64,
    /// Negotiated heartbeat in seconds (0 = off); set after tune-ok.
    heartbeat_s: AtomicU64,
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The peer counts as heard from now (a read, or a wait the broker imposed).
    fn touch(&self) {
        self.last_read_ms.store(self.now_ms(), Ordering::Relaxed);
    }
}

/// A read buffer holding unparsed bytes in `buf[start..end]`.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// Starts small (idle connections are cheap) and grows while reads fill it.
    fn new() -> Self {
        Self { buf: vec![0; 4096], start: 0, end: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes, making room for a frame of up to `max_frame` bytes.
    async fn fill(&mut self, stream: &mut TcpStream, max_frame: usize) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && (self.end == self.buf.len() || self.buf.len() - self.start < max_frame) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Full: a frame needs more room, or the client sends faster than one
            // buffer per read. Grow up to a whole frame or 256 KiB, whichever is larger.
            let cap = max_frame.max(256 * 1024);
            let grow = (self.buf.len() * 2).min(cap).max(self.buf.len() + 1);
            self.buf.resize(grow, 0);
        }
        stream.read(&mut self.buf[self.end..]).await.inspect(|&n| self.end += n)
    }
}

/// Why the frame loop stopped.
enum Stop {
    /// The peer went away or broke the protocol beyond reply.
    Gone,
    /// The connection was closed in an orderly way.
    Closed,
    /// We sent connection.close for an error the peer may not have finished sending:
    /// drain its input before closing, so it is not reset mid-write.
    Failed,
}

struct Connection {
    broker: Arc<Broker>,
    id: ConnectionId,
    peer: SocketAddr,
    outbox: Arc<Outbox>,
    liveness: Arc<Liveness>,
    user: String,
    vhost: Option<Arc<VHost>>,
    frame_max: u32,
    channel_max: u16,
    channels: Vec<Option<Channel>>,
    /// Channels with publisher confirms to flush after this read.
    confirms_due: Vec<ChannelId>,
    /// We sent connection.close and wait for close-ok.
    closing: bool,
    /// Wall clock of the last read (one clock read per batch, not per message).
    read_at_ms: u64,
    /// This connection has published: the memory alarm holds it back.
    published: bool,
    /// The client announced the `connection.blocked` capability.
    wants_blocked: bool,
}

/// Serves one accepted TCP connection until it closes.
pub async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, ex: Arc<async_executor::Executor<'static>>) {
    let _ = stream.set_nodelay(true);
    let outbox = Outbox::new(broker.config.frame_max);
    outbox.attach_socket(std::sync::Arc::<async_io::Async<std::net::TcpStream>>::from(stream.clone()));
    let id = broker.register_connection(Arc::new(Handle(outbox.clone())));
    let liveness = Arc::new(Liveness {
        epoch: Instant::now(),
        last_read_ms: AtomicU64::new(0),
        heartbeat_s: AtomicU64::new(0),
    });
    let writer = ex.spawn(write_loop(stream.clone(), outbox.clone(), liveness.clone(), peer));
    let mut c = Connection {
        broker: broker.clone(),
        id,
        peer,
        outbox: outbox.clone(),
        liveness,
        user: String::new(),
        vhost: None,
        frame_max: broker.config.frame_max,
        channel_max: broker.config.channel_max,
        channels: Vec::new(),
        confirms_due: Vec::new(),
        closing: false,
        read_at_ms: crate::message::now_ms(),
        published: false,
        wants_blocked: false,
    };
    let mut stream_r = stream.clone();
    let stop = c.run(&mut stream_r).await;
    c.teardown();
    outbox.close();
    writer.await;
    let _ = stream.shutdown(Shutdown::Both);
    broker.unregister_connection(id);
    match stop {
        Stop::Closed => log::debug!("connection {peer} closed"),
        Stop::Gone | Stop::Failed => log::debug!("connection {peer} ended"),
    }
}

/// The broker's handle on a connection.
struct Handle(Arc<Outbox>);

impl ClientConnection for Handle {
    /// Closing from outside (broker shutdown) sends connection.close 320. The
    /// connection ends when the client answers close-ok (or when shutdown gives up
    /// waiting), so the client reads the reason before the socket closes.
    fn force_close(&self, reason: &str) {
        let err = AmqpError::ConnectionForced(reason.to_string());
        let mut out = self.0.lock();
        write_method(out.buf(), 0, close_method(&err, 0, 0));
    }
}

/// Whether a client's properties announce `capability` in their capabilities table.
fn has_capability(client_properties: &FieldTable, capability: &str) -> bool {
    match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => matches!(caps.inner().get(capability), Some(AMQPValue::Boolean(true))),
        _ => false,
    }
}

fn close_method(err: &AmqpError, class_id: u16, method_id: u16) -> AMQPClass {
    AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
        reply_code: err.reply_code(),
        reply_text: err.reply_text().into(),
        class_id,
        method_id,
    }))
}

impl Connection {
    fn send(&self, channel: ChannelId, method: AMQPClass) {
        let mut out = self.outbox.lock();
        write_method(out.buf(), channel, method);
    }

    async fn run(&mut self, stream: &mut TcpStream) -> Stop {
        let mut rb = ReadBuf::new();
        let handshake = future::or(
            async { Some(self.handshake(stream, &mut rb).await) },
            async {
                Timer::after(HANDSHAKE_TIMEOUT).await;
                None
            },
        )
        .await;
        match handshake {
            Some(Ok(())) => {}
            Some(Err(Stop::Failed)) => {
                discard_until_closed(stream, &mut rb, self.frame_max).await;
                return Stop::Failed;
            }
            Some(Err(stop)) => return stop,
            None => {
                log::warn!("{}: handshake timed out", self.peer);
                return Stop::Gone;
            }
        }
        self.frame_loop(stream, &mut rb).await
    }

    /// Reads until one complete frame is buffered and returns it (handshake only).
    async fn read_method(&mut self, stream: &mut TcpStream, rb: &mut ReadBuf) -> Result<AMQPClass, Stop> {
        loop {
            match next_frame(rb.data(), self.frame_max) {
                Ok(Some((frame, n))) => {
                    let frame = match frame {
                        Frame::Heartbeat(_) => None,
                        Frame::Method(0, m) => Some(Ok(m)),
                        _ => Some(Err(())),
                    };
                    rb.start += n;
                    match frame {
                        None => continue,
                        Some(Ok(m)) => return Ok(m),
                        Some(Err(())) => {
                            self.fail(&AmqpError::CommandInvalid("expected a connection method on channel 0".into()), 0, 0);
                            return Err(Stop::Gone);
                        }
                    }
                }
                Ok(None) => match rb.fill(stream, self.frame_max as usize).await {
                    Ok(0) | Err(_) => return Err(Stop::Gone),
                    Ok(_) => {}
                },
                Err(e) => {
                    self.fail(&e, 0, 0);
                    return Err(Stop::Failed);
                }
            }
        }
    }

    /// Logs a connection error and sends connection.close (the caller then stops).
    fn fail(&self, err: &AmqpError, class_id: u16, method_id: u16) {
        log::warn!("{}: closing connection: {err}", self.peer);
        self.send(0, close_method(err, class_id, method_id));
    }

    async fn handshake(&mut self, stream: &mut TcpStream, rb: &mut ReadBuf) -> Result<(), Stop> {
        while rb.data().len() < PROTOCOL_HEADER.len() {
            match rb.fill(stream, 4096).await {
                Ok(0) | Err(_) => return Err(Stop::Gone),
                Ok(_) => {}
            }
        }
        if &rb.data()[..8] != PROTOCOL_HEADER {
            log::warn!("{}: bad protocol header {:?}", self.peer, &rb.data()[..8]);
            self.outbox.lock().buf().extend_from_slice(PROTOCOL_HEADER);
            return Err(Stop::Gone);
        }
        rb.start += 8;
        self.send(0, AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: MECHANISMS.into(),
            locales: "en_US".into(),
        })));

        let start_ok = match self.read_method(stream, rb).await? {
            AMQPClass::Connection(conn::AMQPMethod::StartOk(s)) => s,
            _ => return self.handshake_error(AmqpError::CommandInvalid("expected connection.start-ok".into())),
        };
        self.wants_blocked = has_capability(&start_ok.client_properties, "connection.blocked");
        let mechanism = start_ok.mechanism.as_str();
        match self.broker.users.authenticate(mechanism, start_ok.response.as_bytes(), self.peer.ip()) {
            Ok(user) => self.user = user,
            Err(AuthError::UnknownMechanism(m)) => {
                return self.handshake_error(AmqpError::CommandInvalid(format!(
                    "unknown authentication mechanism '{m}'"
                )))
            }
            Err(e) => {
                log::warn!("{}: login refused: {e:?}", self.peer);
                return self.handshake_error(AmqpError::AccessRefused(format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                )));
            }
        }

        let broker = self.broker.clone();
        let cfg = &broker.config;
        self.send(0, AMQPClass::Connection(conn::AMQPMethod::Tune(conn::Tune {
            channel_max: cfg.channel_max,
            frame_max: cfg.frame_max,
            heartbeat: cfg.heartbeat,
        })));
        let tune_ok = match self.read_method(stream, rb).await? {
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(t)) => t,
            _ => return self.handshake_error(AmqpError::CommandInvalid("expected connection.tune-ok".into())),
        };
        let server_frame_max = cfg.frame_max;
        let frame_max = if tune_ok.frame_max == 0 { server_frame_max } else { tune_ok.frame_max };
        if frame_max > server_frame_max {
            return self.handshake_error(AmqpError::NotAllowed(format!(
                "frame_max={frame_max} > {server_frame_max} max size"
            )));
        }
        if frame_max < FRAME_MIN_SIZE {
            return self.handshake_error(AmqpError::NotAllowed(format!(
                "frame_max={frame_max} < {FRAME_MIN_SIZE} min size"
            )));
        }
        self.frame_max = frame_max;
        self.outbox.set_frame_max(frame_max);
        self.channel_max = match tune_ok.channel_max {
            0 => cfg.channel_max,
            n => n.min(cfg.channel_max),
        };
        self.liveness.heartbeat_s.store(u64::from(tune_ok.heartbeat), Ordering::Relaxed);

        let open = match self.read_method(stream, rb).await? {
            AMQPClass::Connection(conn::AMQPMethod::Open(o)) => o,
            _ => return self.handshake_error(AmqpError::CommandInvalid("expected connection.open".into())),
        };
        match self.broker.vhost(open.virtual_host.as_str()) {
            Some(v) => self.vhost = Some(v),
            None => {
                return self.handshake_error(AmqpError::NotAllowed(format!(
                    "vhost {} not found",
                    open.virtual_host
                )))
            }
        }
        self.send(0, AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})));
        log::debug!("{}: connection {} open as {}", self.peer, self.id, self.user);
        Ok(())
    }

    fn handshake_error<T>(&mut self, err: AmqpError) -> Result<T, Stop> {
        self.fail(&err, 0, 0);
        Err(Stop::Failed)
    }

    async fn frame_loop(&mut self, stream: &mut TcpStream, rb: &mut ReadBuf) -> Stop {
        self.read_at_ms = crate::message::now_ms();
        loop {
            // Replies and deliveries produced by this read go out when the batch ends.
            let batch = Batch::open();
            loop {
                let (frame, n) = match next_frame(rb.data(), self.frame_max) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        // The byte stream cannot be trusted any more: send the close,
                        // then discard input until the peer hangs up (so it is not
                        // reset mid-write and can read the reason).
                        self.fail(&e, 0, 0);
                        rb.start = rb.end;
                        // A batch must never be held across an await (it is per thread).
                        drop(batch);
                        discard_until_closed(stream, rb, self.frame_max).await;
                        return Stop::Failed;
                    }
                };
                let consumed = rb.start + n;
                let r = self.handle_frame(frame);
                rb.start = consumed;
                if let Some(stop) = r {
                    return stop;
                }
            }
            for id in std::mem::take(&mut self.confirms_due) {
                if let Some(Some(ch)) = self.channels.get_mut(usize::from(id)) {
                    ch.flush_confirms();
                }
            }
            drop(batch);
            self.hold_back().await;
            let read = if self.closing {
                future::or(rb.fill(stream, self.frame_max as usize), async {
                    Timer::after(CLOSE_TIMEOUT).await;
                    Ok(0)
                })
                .await
            } else {
                rb.fill(stream, self.frame_max as usize).await
            };
            match read {
                Ok(0) | Err(_) => return Stop::Gone,
                Ok(_) => {
                    self.liveness.touch();
                    self.read_at_ms = crate::message::now_ms();
                }
            }
        }
    }

    /// Flow control before the next read: a publishing connection waits out the
    /// memory and disk alarms, and every connection waits while the store writer is
    /// behind (the peer's writes back up in TCP meanwhile). Waits are bounded steps so
    /// the peer's liveness stays fresh.
    async fn hold_back(&mut self) {
        if self.published {
            if let Some(reason) = self.alarm() {
                self.wait_out_alarms(reason).await;
            }
        }
        if let Some(store) = self.broker.store.as_ref().filter(|s| s.is_behind()) {
            while store.is_behind() {
                store.wait_for_room(Duration::from_secs(1)).await;
                self.liveness.touch();
            }
        }
    }

    /// The raised resource alarm, if any, as the reason `connection.blocked` gives.
    fn alarm(&self) -> Option<&'static str> {
        if self.broker.memory.is_raised() {
            Some("low on memory")
        } else if self.broker.disk.is_raised() {
            Some("low on disk")
        } else {
            None
        }
    }

    /// A resource alarm is raised and this connection publishes: stop reading until
    /// every alarm is cleared (the client's writes back up in TCP), telling the client
    /// with `connection.blocked`/`unblocked` if it asked for that. Consumers, on this
    /// connection's queues or others, keep draining meanwhile.
    async fn wait_out_alarms(&mut self, reason: &str) {
        log::debug!("{}: blocked: {reason}", self.peer);
        if self.wants_blocked {
            self.send(0, AMQPClass::Connection(conn::AMQPMethod::Blocked(conn::Blocked { reason: reason.into() })));
        }
        while self.alarm().is_some() && !self.broker.is_shutting_down() {
            Timer::after(MEMORY_ALARM_POLL).await;
            self.liveness.touch();
        }
        if self.wants_blocked {
            self.send(0, AMQPClass::Connection(conn::AMQPMethod::Unblocked(conn::Unblocked {})));
        }
        log::debug!("{}: unblocked", self.peer);
    }

    /// Handles one frame; `Some` ends the connection.
    fn handle_frame(&mut self, frame: Frame<'_>) -> Option<Stop> {
        if self.closing {
            // After our connection.close only close/close-ok matter.
            return match frame {
                Frame::Method(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) => Some(Stop::Closed),
                Frame::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(_))) => {
                    self.send(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})));
                    Some(Stop::Closed)
                }
                _ => None,
            };
        }
        let (channel, class_method) = match &frame {
            Frame::Method(ch, m) => (*ch, (m.get_amqp_class_id(), m.get_amqp_method_id())),
            Frame::Publish(ch, _) => (*ch, (60, 40)),
            Frame::Ack(ch, ..) => (*ch, (60, 80)),
            Frame::Header(ch, _) | Frame::Body(ch, _) => (*ch, (0, 0)),
            Frame::Heartbeat(0) => return None,
            Frame::Heartbeat(_) => {
                return self.connection_error(AmqpError::UnexpectedFrame("heartbeat on a non-zero channel".into()), (0, 0))
            }
            Frame::QosPrefetchSize(_, size) => {
                return self.connection_error(AmqpError::NotImplemented(format!("prefetch_size!=0 ({size})")), (60, 10))
            }
        };
        if channel == 0 {
            return match frame {
                Frame::Method(_, AMQPClass::Connection(m)) => self.connection_method(m),
                Frame::Method(..) | Frame::Publish(..) | Frame::Ack(..) => self.connection_error(
                    AmqpError::ChannelError("unexpected method in connection state running".into()),
                    class_method,
                ),
                _ => self.connection_error(
                    AmqpError::UnexpectedFrame("expected method frame, got non method frame instead".into()),
                    (0, 0),
                ),
            };
        }
        if channel > self.channel_max {
            return self.connection_error(
                AmqpError::ChannelError(format!("channel {channel} exceeds channel_max {}", self.channel_max)),
                class_method,
            );
        }
        let idx = usize::from(channel);
        self.note_outside_close(idx);
        let result = match frame {
            Frame::Method(_, AMQPClass::Channel(chan::AMQPMethod::Open(_))) => {
                if self.channels.get(idx).is_some_and(Option::is_some) {
                    Err(AmqpError::ChannelError("second 'channel.open' seen".into()))
                } else {
                    if self.channels.len() <= idx {
                        self.channels.resize_with(idx + 1, || None);
                    }
                    self.channels[idx] = Some(Channel::new(channel, self.outbox.clone()));
                    self.send(channel, AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})));
                    Ok(())
                }
            }
            Frame::Method(_, AMQPClass::Channel(chan::AMQPMethod::Close(_))) => {
                if let Some(mut ch) = self.channels.get_mut(idx).and_then(Option::take) {
                    if let Some(v) = &self.vhost {
                        ch.teardown(v);
                    }
                }
                self.send(channel, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})));
                Ok(())
            }
            Frame::Method(_, AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) => {
                if self.channels.get(idx).and_then(Option::as_ref).is_some_and(|c| c.closing) {
                    self.channels[idx] = None;
                }
                Ok(())
            }
            frame => self.channel_frame(idx, frame),
        };
        match result {
            Ok(()) => None,
            Err(e) if e.is_connection_error() => self.connection_error(e, class_method),
            Err(e) => {
                self.channel_error(idx, e, class_method);
                None
            }
        }
    }

    fn channel_frame(&mut self, idx: usize, frame: Frame<'_>) -> Result<(), AmqpError> {
        let Some(vhost) = self.vhost.as_ref() else {
            return Err(AmqpError::CommandInvalid("connection not open".into()));
        };
        let Some(ch) = self.channels.get_mut(idx).and_then(Option::as_mut) else {
            return Err(AmqpError::ChannelError("expected 'channel.open'".into()));
        };
        if ch.closing {
            return Ok(());
        }
        let ctx = Context {
            vhost,
            store: &self.broker.store,
            conn_id: self.id,
            user: &self.user,
            outbox: &self.outbox,
            now_ms: self.read_at_ms,
        };
        if matches!(
            frame,
            Frame::Publish(..) | Frame::Method(_, AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(_)))
        ) {
            self.published = true;
        }
        let r = match frame {
            Frame::Method(_, m) => ch.handle_method(&ctx, m),
            Frame::Publish(_, p) => ch.handle_publish(&ctx, p),
            Frame::Ack(_, tag, multiple) => ch.handle_ack(&ctx, tag, multiple),
            Frame::Header(_, h) => ch.handle_header(&ctx, h),
            Frame::Body(_, b) => ch.handle_body(&ctx, b),
            Frame::Heartbeat(_) | Frame::QosPrefetchSize(..) => Ok(()),
        };
        if ch.has_confirms_due() && !self.confirms_due.contains(&ch.id()) {
            self.confirms_due.push(ch.id());
        }
        r
    }

    /// A channel closed from another thread (the store thread sent channel.close for a
    /// failed tx.commit) is closing from now on, as after a channel error.
    fn note_outside_close(&mut self, idx: usize) {
        let Some(ch) = self.channels.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if !ch.closing && ch.shared.closed_outside() {
            ch.closing = true;
            if let Some(v) = &self.vhost {
                ch.teardown(v);
            }
        }
    }

    fn channel_error(&mut self, idx: usize, err: AmqpError, (class_id, method_id): (u16, u16)) {
        log::info!("{}: closing channel {idx}: {err}", self.peer);
        let Some(ch) = self.channels.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        // Confirms due before the error still go out first.
        ch.flush_confirms();
        ch.closing = true;
        if let Some(v) = &self.vhost {
            ch.teardown(v);
        }
        let id = ch.id();
        self.send(id, AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
            reply_code: err.reply_code(),
            reply_text: err.reply_text().into(),
            class_id,
            method_id,
        })));
    }

    fn connection_error(&mut self, err: AmqpError, (class_id, method_id): (u16, u16)) -> Option<Stop> {
        self.fail(&err, class_id, method_id);
        self.closing = true;
        None
    }

    fn connection_method(&mut self, m: conn::AMQPMethod) -> Option<Stop> {
        match m {
            conn::AMQPMethod::Close(c) => {
                log::debug!("{}: client closed connection: {} {}", self.peer, c.reply_code, c.reply_text);
                self.send(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})));
                Some(Stop::Closed)
            }
            conn::AMQPMethod::CloseOk(_) => Some(Stop::Closed),
            conn::AMQPMethod::UpdateSecret(_) => {
                // The built-in user table has no expiring credentials; accept the new
                // secret as RabbitMQ does for backends without token refresh.
                self.send(0, AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(conn::UpdateSecretOk {})));
                None
            }
            conn::AMQPMethod::Blocked(_) | conn::AMQPMethod::Unblocked(_) => None,
            other => self.connection_error(
                AmqpError::CommandInvalid(format!(
                    "method 10.{} is not valid here",
                    AMQPClass::Connection(other).get_amqp_method_id()
                )),
                (10, 0),
            ),
        }
    }

    /// Releases everything the connection held: channels (requeueing unacked
    /// messages) and exclusive queues.
    fn teardown(&mut self) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        for ch in self.channels.iter_mut().filter_map(Option::take) {
            let mut ch = ch;
            ch.teardown(&vhost);
        }
        for q in vhost.exclusive_queues_of(self.id) {
            vhost.delete_queue(&q);
        }
    }
}

/// After we sent connection.close: drops input until the peer's close-ok, EOF or
/// [`CLOSE_TIMEOUT`]. After a framing error the stream may be misaligned, so bytes that
/// do not parse are dropped wholesale.
async fn discard_until_closed(stream: &mut TcpStream, rb: &mut ReadBuf, frame_max: u32) {
    let _ = future::or(
        async {
            loop {
                loop {
                    match next_frame(rb.data(), frame_max) {
                        Ok(Some((Frame::Method(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))), _))) => return,
                        Ok(Some((_, n))) => rb.start += n,
                        Ok(None) => break,
                        Err(_) => {
                            rb.start = rb.end;
                            break;
                        }
                    }
                }
                match rb.fill(stream, frame_max as usize).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        },
        async {
            Timer::after(CLOSE_TIMEOUT).await;
        },
    )
    .await;
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
        "consumer_priorities",
        "connection.blocked",
    ] {
        caps.insert(ShortString::from(cap), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    for (k, v) in [
        ("product", "HareMQ"),
        ("version", env!("CARGO_PKG_VERSION")),
        ("platform", "Rust"),
        ("copyright", "The HareMQ authors"),
        ("information", "Licensed under the Apache License 2.0"),
        ("cluster_name", "haremq"),
    ] {
        props.insert(ShortString::from(k), AMQPValue::LongString(LongString::from(v)));
    }
    props.insert(ShortString::from("capabilities"), AMQPValue::FieldTable(caps));
    props
}

/// The writer task: sends what the outbox collects, heartbeats when idle, and closes
/// the socket when the client has been silent for two heartbeat intervals.
async fn write_loop(mut stream: TcpStream, outbox: Arc<Outbox>, liveness: Arc<Liveness>, peer: SocketAddr) {
    let mut buf = Vec::new();
    let mut ticker = Timer::never();
    let mut tick_interval = 0u64;
    let mut last_write_ms = 0u64;
    loop {
        let hb = liveness.heartbeat_s.load(Ordering::Relaxed);
        if hb != tick_interval {
            tick_interval = hb;
            ticker = if hb == 0 { Timer::never() } else { Timer::interval(Duration::from_millis(hb * 500)) };
        }
        let got = future::or(async { Some(outbox.take(&mut buf).await) }, async {
            (&mut ticker).await;
            None
        })
        .await;
        match got {
            Some(true) => {}
            Some(false) => break,
            None => {
                let now = liveness.now_ms();
                let last_read = liveness.last_read_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last_read) > 2 * hb * 1000 {
                    log::warn!("{peer}: missed heartbeats from client, timeout: {hb}s");
                    outbox.close();
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                if now.saturating_sub(last_write_ms) >= hb * 500 {
                    // Through the outbox, so it is ordered with batch writes.
                    write_heartbeat(outbox.lock().buf());
                }
                continue;
            }
        }
        if stream.write_all(&buf).await.is_err() {
            outbox.close();
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        buf.clear();
        last_write_ms = liveness.now_ms();
        for q in outbox.drained() {
            q.dispatch();
        }
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown(Shutdown::Both);
}
