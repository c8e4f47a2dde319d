//! The opening handshake: protocol header, start/start-ok (SASL), tune/tune-ok and
//! connection.open, within the handshake timeout (`handshake_timeout_ms`, RabbitMQ's
//! `handshake_timeout`, counted from the TCP accept, so a TLS handshake shares it).

use std::sync::atomic::Ordering;
use std::time::Instant;

use amq_protocol::protocol::{connection as conn, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use smol::io::AsyncRead;
use smol::Timer;

use super::*;
use crate::auth::mechanisms::{self, Mechanism};

/// The smallest frame_max a client may negotiate (AMQP's frame-min-size).
pub(super) const FRAME_MIN_SIZE: u32 = 4096;

/// Whether a client's properties announce `capability` in their capabilities table.
pub(super) fn has_capability(client_properties: &FieldTable, capability: &str) -> bool {
    match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => matches!(caps.inner().get(capability), Some(AMQPValue::Boolean(true))),
        _ => false,
    }
}

pub(super) fn server_properties() -> FieldTable {
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

impl Connection {
    /// Reads until one complete frame is buffered and returns it (handshake only).
    pub(super) async fn read_method<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        rb: &mut ReadBuf,
    ) -> Result<AMQPClass, Stop> {
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
                            self.fail(
                                &AmqpError::CommandInvalid("expected a connection method on channel 0".into()),
                                0,
                                0,
                            );
                            return Err(Stop::Failed);
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

    pub(super) async fn handshake<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        rb: &mut ReadBuf,
    ) -> Result<(), Stop> {
        while rb.data().len() < PROTOCOL_HEADER.len() {
            match rb.fill(stream, 4096).await {
                Ok(0) | Err(_) => return Err(Stop::Gone),
                Ok(_) => {}
            }
        }
        if &rb.data()[..8] != PROTOCOL_HEADER {
            log::warn!("{}: bad protocol header {:?}", self.peer, &rb.data()[..8]);
            self.outbox.lock().buf().extend_from_slice(PROTOCOL_HEADER);
            // Not reset: the peer reads the header, then the end of the stream.
            return Err(Stop::Closed);
        }
        rb.start += 8;
        let offered = mechanisms::offered(&self.broker.config.auth_mechanisms, self.client_cert.is_some());
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                mechanisms: mechanisms::start_list(&offered).into(),
                locales: "en_US".into(),
            })),
        );

        let start_ok = match self.read_method(stream, rb).await? {
            AMQPClass::Connection(conn::AMQPMethod::StartOk(s)) => s,
            _ => return self.handshake_error(AmqpError::CommandInvalid("expected connection.start-ok".into())),
        };
        self.wants_blocked = has_capability(&start_ok.client_properties, "connection.blocked");
        let mechanism = start_ok.mechanism.as_str();
        // RabbitMQ's two errors: a name it does not know, and one it knows but did not
        // offer (not configured, or EXTERNAL without a client certificate).
        let chosen = match Mechanism::from_name(mechanism) {
            None => {
                return self.handshake_error(AmqpError::CommandInvalid(format!(
                    "unknown authentication mechanism '{mechanism}'"
                )))
            }
            Some(m) if !offered.contains(&m) => {
                return self.handshake_error(AmqpError::CommandInvalid(format!(
                    "invalid authentication mechanism '{mechanism}'"
                )))
            }
            Some(m) => m,
        };
        let broker = self.broker.clone();
        let users = &broker.users;
        // Wait while this address's failed logins are being answered (auth::throttle).
        if let Some(turn) = users.throttle.turn(self.peer.ip(), Instant::now()) {
            Timer::at(turn).await;
        }
        let login = match (chosen, &self.client_cert) {
            (Mechanism::External, Some(cert)) => match &cert.login {
                Ok(name) => users.authenticate_external(name, self.peer.ip()).map_err(|e| format!("{e:?}")),
                Err(why) => Err(format!("EXTERNAL: {why}")),
            },
            _ => users.authenticate(mechanism, start_ok.response.as_bytes(), self.peer.ip()).map_err(|e| match e {
                AuthError::UnknownMechanism(m) => format!("mechanism {m} not implemented"),
                e => format!("{e:?}"),
            }),
        };
        match login {
            Ok(user) => {
                let mut meta = self.view.meta();
                meta.user = user.clone();
                meta.auth_mechanism = mechanism.to_string();
                meta.client_properties = start_ok.client_properties.clone();
                drop(meta);
                self.user = user;
            }
            Err(e) => {
                let now = Instant::now();
                match users.throttle.should_log(now) {
                    Some(n) => {
                        log::warn!("{}: login refused: {e} ({n} refused login(s) since the last such line)", self.peer)
                    }
                    None => log::debug!("{}: login refused: {e}", self.peer),
                }
                let answer_at = users.throttle.failed(self.peer.ip(), now);
                Timer::at(answer_at).await;
                return self.handshake_error(AmqpError::AccessRefused(format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                )));
            }
        }

        let cfg = &broker.config;
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Tune(conn::Tune {
                channel_max: cfg.channel_max,
                frame_max: cfg.frame_max,
                heartbeat: cfg.heartbeat,
            })),
        );
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
            return self
                .handshake_error(AmqpError::NotAllowed(format!("frame_max={frame_max} < {FRAME_MIN_SIZE} min size")));
        }
        self.frame_max = frame_max;
        self.outbox.set_frame_max(frame_max);
        self.channel_max = match (tune_ok.channel_max, cfg.channel_max) {
            (0, max) | (max, 0) => max,
            (n, max) => n.min(max),
        };
        self.channels.dense_max = self.channel_max;
        self.liveness.heartbeat_s.store(u64::from(tune_ok.heartbeat), Ordering::Relaxed);
        {
            let mut meta = self.view.meta();
            meta.frame_max = frame_max;
            meta.channel_max = self.channel_max;
            meta.heartbeat_s = tune_ok.heartbeat;
        }

        let open = match self.read_method(stream, rb).await? {
            AMQPClass::Connection(conn::AMQPMethod::Open(o)) => o,
            _ => return self.handshake_error(AmqpError::CommandInvalid("expected connection.open".into())),
        };
        let Some(vhost) = self.broker.vhost(open.virtual_host.as_str()) else {
            return self.handshake_error(AmqpError::NotAllowed(format!("vhost {} not found", open.virtual_host)));
        };
        // Limits and the user's permission to use the vhost (RabbitMQ's order).
        match self.broker.open_connection(self.id, &self.user, &vhost) {
            Ok(user_channels) => self.channels.user_open = Some(user_channels),
            Err(e) => return self.handshake_error(e),
        }
        self.access = Some(SessionAccess::new(self.broker.users.grants.clone(), &self.user, &vhost.name));
        self.impersonator = self.broker.users.users.get(&self.user).is_some_and(|u| u.has_tag("impersonator"));
        self.view.meta().vhost = vhost.name.to_string();
        self.vhost = Some(vhost);
        self.send(0, AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})));
        log::debug!("{}: connection {} open as {}", self.peer, self.id, self.user);
        Ok(())
    }

    pub(super) fn handshake_error<T>(&mut self, err: AmqpError) -> Result<T, Stop> {
        self.fail(&err, 0, 0);
        Err(Stop::Failed)
    }
}
