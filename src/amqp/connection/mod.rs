//! One client connection: the handshake, the frame loop and connection-level methods.
//!
//! The connection task is deliberately thin: it turns bytes into frames, hands each to
//! its channel and writes replies into the [`Outbox`]. A separate writer task owns the
//! socket's write side (batched writes, heartbeats, missed-heartbeat detection).
//! Frames are handled synchronously, and publisher confirms produced while handling
//! one read's worth of frames go out as one `multiple` ack before the next read.
//!
//! The connection is generic over its [`Transport`]'s read and write halves: plain TCP
//! (both halves are the socket, and batches write to it directly, see [`Outbox`]) or
//! TLS (the halves of the rustls stream; everything goes through the writer task).
//! Monomorphised, the plain path is the same code it was before TLS existed.

mod channels;
mod closing;
mod handshake;
mod read_buf;
mod view;
mod writer;

use channels::Channels;
use closing::*;
use read_buf::ReadBuf;
use view::ConnectionView;
use writer::write_loop;

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{channel as chan, connection as conn, AMQPClass};
use amq_protocol::types::ChannelId;
use smol::future;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use smol::Timer;

use super::channel::{Channel, Context};
use super::frame::{next_frame, write_heartbeat, write_method, Frame, PROTOCOL_HEADER};
use super::outbox::{Batch, Outbox, HIGH_WATER};
use crate::auth::access::SessionAccess;
use crate::auth::AuthError;
use crate::broker::{Broker, ClientConnection};
use crate::error::AmqpError;
use crate::queue::ConnectionId;
use crate::tls::{Acceptor, ClientCert};
use crate::vhost::VHost;

/// How often a publisher held by an alarm looks again (message memory falls on any
/// thread: acks, expiry, queue deletion; disk space is re-read at most once a second).
const MEMORY_ALARM_POLL: Duration = Duration::from_millis(20);

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

/// Why the frame loop stopped.
enum Stop {
    /// The peer went away, or did not answer our connection.close in time: the socket
    /// is closed at once.
    Gone,
    /// The close handshake is complete (close-ok sent or received): our side is shut
    /// down and the socket closed once the peer has closed its side (see [`linger`]).
    Closed,
    /// We sent connection.close during the handshake: wait for the peer's close-ok.
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
    /// The user's rights in the vhost (set by connection.open, with `vhost`).
    access: Option<SessionAccess>,
    /// The user has the `impersonator` tag: it may publish with any `user_id`.
    impersonator: bool,
    /// Set by the broker when it closed this connection from outside (vhost or user
    /// deleted, shutdown): from the next frame on, the connection is closing.
    forced: Arc<AtomicBool>,
    frame_max: u32,
    /// The most channels open at once (negotiated; 0 = no limit).
    channel_max: u16,
    channels: Channels,
    /// Channels with publisher confirms to flush after this read.
    confirms_due: Vec<ChannelId>,
    /// We sent connection.close and wait for close-ok until this deadline; every
    /// other frame is discarded meanwhile, and no second connection.close is sent.
    closing: Option<Instant>,
    /// Wall clock of the last read (one clock read per batch, not per message).
    read_at_ms: u64,
    /// This connection has published: the memory alarm holds it back.
    published: bool,
    /// The client announced the `connection.blocked` capability.
    wants_blocked: bool,
    /// The verified certificate of a TLS client that presented one (SASL EXTERNAL).
    client_cert: Option<ClientCert>,
    /// The handshake must be done by then (it started at the TCP accept).
    handshake_deadline: Instant,
    /// What listings see of this connection.
    view: Arc<ConnectionView>,
}

/// The byte stream a connection runs on, split into the half the connection task reads
/// and the half the writer task writes.
struct Transport<R, W> {
    /// The TCP socket underneath: shut down to end the connection at once, and with
    /// plain TCP the socket read batches write to directly.
    tcp: TcpStream,
    reader: R,
    writer: W,
    /// TLS: no direct batch writes (the bytes must be encrypted, in order, by the
    /// writer task).
    tls: bool,
    client_cert: Option<ClientCert>,
}

/// When a connection accepted now must have finished its handshake.
fn handshake_deadline(broker: &Broker) -> Instant {
    Instant::now() + Duration::from_millis(broker.config.handshake_timeout_ms)
}

/// Serves one accepted plain TCP connection until it closes.
pub async fn serve_plain(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, ex: Arc<smol::Executor<'static>>) {
    let deadline = handshake_deadline(&broker);
    let _ = stream.set_nodelay(true);
    let transport =
        Transport { tcp: stream.clone(), reader: stream.clone(), writer: stream, tls: false, client_cert: None };
    serve(broker, transport, peer, deadline, ex).await
}

/// Serves one accepted TLS connection: the TLS handshake, then the AMQP connection,
/// both within the handshake timeout. A failed handshake ends only this socket.
pub async fn serve_tls(
    broker: Arc<Broker>,
    acceptor: Arc<Acceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    ex: Arc<smol::Executor<'static>>,
) {
    let deadline = handshake_deadline(&broker);
    let _ = stream.set_nodelay(true);
    let Some((tls, client_cert)) = acceptor.accept(stream.clone(), peer, deadline).await else {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    let (reader, writer) = smol::io::split(tls);
    let transport = Transport { tcp: stream, reader, writer, tls: true, client_cert };
    serve(broker, transport, peer, deadline, ex).await
}

/// Serves one connection until it closes.
async fn serve<R, W>(
    broker: Arc<Broker>,
    transport: Transport<R, W>,
    peer: SocketAddr,
    handshake_deadline: Instant,
    ex: Arc<smol::Executor<'static>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Transport { tcp: stream, reader: mut stream_r, writer, tls, client_cert } = transport;
    let outbox = Outbox::new(broker.config.frame_max);
    if !tls {
        outbox.attach_socket(std::sync::Arc::<smol::Async<std::net::TcpStream>>::from(stream.clone()));
    }
    let forced = Arc::new(AtomicBool::new(false));
    let local = stream.local_addr().unwrap_or(peer);
    let view = ConnectionView::new(peer, local, tls, broker.retired.clone());
    let id = broker.register_connection(Arc::new(Handle(outbox.clone(), forced.clone(), view.clone())));
    let _ = view.id.set(id);
    let liveness =
        Arc::new(Liveness { epoch: Instant::now(), last_read_ms: AtomicU64::new(0), heartbeat_s: AtomicU64::new(0) });
    let writer = ex.spawn({
        let outbox = outbox.clone();
        let write = write_loop(writer, stream.clone(), outbox.clone(), liveness.clone(), peer);
        async move {
            if let Err(payload) = smol::future::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(write)).await {
                log::error!("{peer}: writer task panicked: {}", super::panics::message(&*payload));
                outbox.close();
            }
        }
    });
    let mut c = Connection {
        broker: broker.clone(),
        id,
        peer,
        outbox: outbox.clone(),
        liveness,
        user: String::new(),
        vhost: None,
        access: None,
        impersonator: false,
        forced,
        frame_max: broker.config.frame_max,
        channel_max: broker.config.channel_max,
        channels: Channels::new(broker.config.channel_max, view.clone()),
        confirms_due: Vec::new(),
        closing: None,
        read_at_ms: crate::message::now_ms(),
        published: false,
        wants_blocked: false,
        client_cert,
        handshake_deadline,
        view,
    };
    // Panics while handling a frame are caught in the frame loop; this catches the rest
    // (handshake, flow control) so teardown still runs and the executor thread lives.
    let stop = match smol::future::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(c.run(&mut stream_r))).await {
        Ok(stop) => stop,
        Err(payload) => {
            log::error!("{peer}: connection {id} panicked: {}", super::panics::message(&*payload));
            c.fail(&AmqpError::InternalError("see the broker log".into()), 0, 0);
            Stop::Failed
        }
    };
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.teardown())) {
        log::error!("{peer}: connection {id} panicked in teardown: {}", super::panics::message(&*payload));
    }
    outbox.close();
    // Sends what is queued (the close-ok or close last), then shuts down our side.
    writer.await;
    broker.unregister_connection(id);
    if let Stop::Closed = stop {
        linger(&mut stream_r).await;
    }
    let _ = stream.shutdown(Shutdown::Both);
    match stop {
        Stop::Closed => log::debug!("connection {peer} closed"),
        Stop::Gone | Stop::Failed => log::debug!("connection {peer} ended"),
    }
}

/// The broker's handle on a connection: its outbox, the flag that tells the
/// connection task it was closed from outside, and what listings see.
struct Handle(Arc<Outbox>, Arc<AtomicBool>, Arc<ConnectionView>);

impl ClientConnection for Handle {
    /// Closing from outside (broker shutdown, vhost or user deleted) sends
    /// connection.close 320, once. The connection ends when the client answers
    /// close-ok (or after `CLOSE_TIMEOUT`), so the client reads the reason before the
    /// socket closes.
    fn force_close(&self, reason: &str) {
        if self.1.swap(true, Ordering::AcqRel) {
            return;
        }
        let err = AmqpError::ConnectionForced(reason.to_string());
        let mut out = self.0.lock();
        write_method(out.buf(), 0, close_method(&err, 0, 0));
    }

    fn info(&self) -> crate::clients::ConnectionInfo {
        self.2.info(&self.0)
    }
}

impl Connection {
    fn send(&self, channel: ChannelId, method: AMQPClass) {
        let mut out = self.outbox.lock();
        write_method(out.buf(), channel, method);
    }

    async fn run<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> Stop {
        let mut rb = ReadBuf::new(self.view.clone());
        let deadline = self.handshake_deadline;
        let handshake = future::or(async { Some(self.handshake(stream, &mut rb).await) }, async {
            Timer::at(deadline).await;
            None
        })
        .await;
        match handshake {
            Some(Ok(())) => {}
            Some(Err(Stop::Failed)) => {
                return discard_until_closed(stream, &mut rb, self.frame_max, self.close_deadline()).await;
            }
            Some(Err(stop)) => return stop,
            None => {
                log::warn!("{}: handshake timed out", self.peer);
                return Stop::Gone;
            }
        }
        self.frame_loop(stream, &mut rb).await
    }

    async fn frame_loop<R: AsyncRead + Unpin>(&mut self, stream: &mut R, rb: &mut ReadBuf) -> Stop {
        self.read_at_ms = crate::message::now_ms();
        loop {
            // Replies and deliveries produced by this read go out when the batch ends.
            let batch = Batch::open();
            let mut congested = false;
            loop {
                let (frame, n) = match next_frame(rb.data(), self.frame_max) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        // The byte stream cannot be trusted any more: send the close
                        // (unless it was sent already), then discard input until the
                        // peer's close-ok, so it is not reset mid-write and can read the
                        // reason.
                        self.fail(&e, 0, 0);
                        rb.start = rb.end;
                        // A batch must never be held across an await (it is per thread).
                        drop(batch);
                        return discard_until_closed(stream, rb, self.frame_max, self.close_deadline()).await;
                    }
                };
                let consumed = rb.start + n;
                let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle_frame(frame))) {
                    Ok(r) => r,
                    // A bug, not the peer's fault: this connection ends (541), the
                    // others and the process go on (see `panics`).
                    Err(payload) => {
                        log::error!(
                            "{}: connection {} panicked handling a frame, closing it with 541: {}",
                            self.peer,
                            self.id,
                            super::panics::message(&*payload)
                        );
                        self.connection_error(AmqpError::InternalError("see the broker log".into()), (0, 0))
                    }
                };
                rb.start = consumed;
                if let Some(stop) = r {
                    return stop;
                }
                if self.outbox.queued() > HIGH_WATER {
                    // The client is not reading what it asked for (a basic.get loop,
                    // say): handle nothing more of its input until it catches up.
                    congested = true;
                    break;
                }
            }
            for id in std::mem::take(&mut self.confirms_due) {
                if let Some(ch) = self.channels.get_mut(id) {
                    ch.flush_confirms();
                }
            }
            drop(batch);
            self.note_forced_close();
            if congested && self.closing.is_none() {
                // Frames may be left in the read buffer: handle them before reading more.
                self.wait_for_reader().await;
                continue;
            }
            let read = match self.closing {
                // Bounded however much the peer keeps sending (heartbeats, say).
                Some(deadline) => {
                    future::or(rb.fill(stream, self.frame_max as usize), async {
                        Timer::at(deadline).await;
                        log::info!("{}: no connection.close-ok within {CLOSE_TIMEOUT:?}", self.peer);
                        Ok(0)
                    })
                    .await
                }
                None => {
                    self.hold_back().await;
                    rb.fill(stream, self.frame_max as usize).await
                }
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

    /// Waits while more than the outbox's high-water mark is queued for the client.
    /// The client taking bytes counts as hearing from it (its heartbeats are not read
    /// meanwhile); one that reads nothing at all is left to TCP.
    async fn wait_for_reader(&mut self) {
        loop {
            let before = self.outbox.queued();
            if self.outbox.wait_writable(Duration::from_secs(1)).await || self.forced.load(Ordering::Relaxed) {
                break;
            }
            if self.outbox.queued() < before {
                self.liveness.touch();
            }
        }
        self.liveness.touch();
    }

    /// The raised resource alarm, here or on another node of the cluster, if any, as
    /// the reason `connection.blocked` gives.
    fn alarm(&self) -> Option<&'static str> {
        let remote = self.broker.remote_alarms.load(Ordering::Relaxed);
        if self.broker.memory.is_raised() || remote & crate::broker::REMOTE_MEMORY != 0 {
            Some("low on memory")
        } else if self.broker.disk.is_raised() || remote & crate::broker::REMOTE_DISK != 0 {
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
        self.view.blocked.store(true, Ordering::Relaxed);
        if self.wants_blocked {
            self.send(0, AMQPClass::Connection(conn::AMQPMethod::Blocked(conn::Blocked { reason: reason.into() })));
        }
        while self.alarm().is_some() && !self.forced.load(Ordering::Relaxed) {
            Timer::after(MEMORY_ALARM_POLL).await;
            self.liveness.touch();
        }
        if self.wants_blocked {
            self.send(0, AMQPClass::Connection(conn::AMQPMethod::Unblocked(conn::Unblocked {})));
        }
        self.view.blocked.store(false, Ordering::Relaxed);
        log::debug!("{}: unblocked", self.peer);
    }

    /// The broker sent (or is sending) connection.close 320 through our outbox: from
    /// now on the connection is closing (only close/close-ok are handled).
    fn note_forced_close(&mut self) {
        if self.closing.is_none() && self.forced.load(Ordering::Relaxed) {
            self.closing = Some(Instant::now() + CLOSE_TIMEOUT);
        }
    }

    /// Handles one frame; `Some` ends the connection.
    fn handle_frame(&mut self, frame: Frame<'_>) -> Option<Stop> {
        // One relaxed load per frame: nothing after a forced close is acted on.
        self.note_forced_close();
        if self.closing.is_some() {
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
                return self
                    .connection_error(AmqpError::UnexpectedFrame("heartbeat on a non-zero channel".into()), (0, 0))
            }
            Frame::QosPrefetchSize(size) => {
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
        // Any channel number is accepted, as in RabbitMQ 3.10; channel_max bounds how
        // many are open at once.
        self.note_outside_close(channel);
        let result = match frame {
            Frame::Method(_, AMQPClass::Channel(chan::AMQPMethod::Open(_))) => {
                if self.channels.get(channel).is_some() {
                    Err(AmqpError::ChannelError("second 'channel.open' seen".into()))
                } else if self.channel_max != 0 && self.channels.open >= usize::from(self.channel_max) {
                    // RabbitMQ's reply (a connection error, class and method 0).
                    return self.connection_error(
                        AmqpError::NotAllowed(format!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.open, self.channel_max
                        )),
                        (0, 0),
                    );
                } else {
                    if let Some(counter) = self.channels.user_open.clone() {
                        // The user's max-channels (RabbitMQ: a connection error, 530).
                        if let Err(e) = self.broker.open_channel(&self.user, &counter) {
                            return self.connection_error(e, (0, 0));
                        }
                    }
                    self.channels.insert(channel, Channel::new(channel, self.outbox.clone()));
                    self.send(channel, AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})));
                    Ok(())
                }
            }
            Frame::Method(_, AMQPClass::Channel(chan::AMQPMethod::Close(_))) => {
                if let Some(mut ch) = self.channels.take(channel) {
                    if let Some(v) = &self.vhost {
                        ch.teardown(v);
                    }
                }
                self.send(channel, AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})));
                Ok(())
            }
            Frame::Method(_, AMQPClass::Channel(chan::AMQPMethod::CloseOk(_))) => {
                if self.channels.get(channel).is_some_and(|c| c.closing) {
                    self.channels.take(channel);
                }
                Ok(())
            }
            frame => self.channel_frame(channel, frame),
        };
        match result {
            Ok(()) => None,
            Err(e) if e.is_connection_error() => self.connection_error(e, class_method),
            Err(e) => {
                self.channel_error(channel, e, class_method);
                None
            }
        }
    }

    fn channel_frame(&mut self, channel: ChannelId, frame: Frame<'_>) -> Result<(), AmqpError> {
        let (Some(vhost), Some(access)) = (self.vhost.as_ref(), self.access.as_ref()) else {
            return Err(AmqpError::CommandInvalid("connection not open".into()));
        };
        let Some(ch) = self.channels.get_mut(channel) else {
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
            access,
            impersonator: self.impersonator,
            now_ms: self.read_at_ms,
            cluster: self.broker.cluster(),
        };
        if matches!(
            frame,
            Frame::Publish(..)
                | Frame::Method(_, AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(_)))
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
    fn note_outside_close(&mut self, channel: ChannelId) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if !ch.closing && ch.shared.closed_outside() {
            ch.closing = true;
            if let Some(v) = &self.vhost {
                ch.teardown(v);
            }
        }
    }

    fn channel_error(&mut self, channel: ChannelId, err: AmqpError, (class_id, method_id): (u16, u16)) {
        log::info!("{}: closing channel {channel}: {err}", self.peer);
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        // Confirms due before the error still go out first.
        ch.flush_confirms();
        ch.closing = true;
        if let Some(v) = &self.vhost {
            ch.teardown(v);
        }
        let id = ch.id();
        self.send(
            id,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: err.reply_code(),
                reply_text: err.reply_text().into(),
                class_id,
                method_id,
            })),
        );
    }

    fn connection_error(&mut self, err: AmqpError, (class_id, method_id): (u16, u16)) -> Option<Stop> {
        self.fail(&err, class_id, method_id);
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
        for mut ch in self.channels.take_all() {
            ch.teardown(&vhost);
        }
        for q in vhost.exclusive_queues_of(self.id) {
            vhost.delete_queue(&q);
        }
    }
}
