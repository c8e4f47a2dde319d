//! Closing a connection without resetting the client: one connection.close, a bounded
//! wait for close-ok, then the write side shut down and input discarded until the
//! client closes (bounded too).

use std::time::{Duration, Instant};

use amq_protocol::protocol::{connection as conn, AMQPClass};
use smol::io::{AsyncRead, AsyncReadExt};
use smol::{future, Timer};

use super::*;

/// How long we wait for close-ok after sending connection.close (discarding every other
/// frame meanwhile) before dropping the socket. RabbitMQ waits 30 s.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// After the close handshake our side of the socket is shut down, and we read (and
/// discard) until the client closes its side, at most this long. Closing a socket with
/// unread bytes makes the kernel reset the connection, which fails a client still
/// flushing frames it queued (EPIPE) and can destroy the close-ok before it is read.
pub(super) const LINGER_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn close_method(err: &AmqpError, class_id: u16, method_id: u16) -> AMQPClass {
    AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
        reply_code: err.reply_code(),
        reply_text: crate::wire::shortstr::short(&err.reply_text()),
        class_id,
        method_id,
    }))
}

/// After we sent connection.close: drops input until the peer's close-ok (`Closed`), or
/// EOF or `deadline` (`Gone`). After a framing error the stream may be misaligned, so
/// bytes that do not parse are dropped wholesale.
pub(super) async fn discard_until_closed<R: AsyncRead + Unpin>(
    stream: &mut R,
    rb: &mut ReadBuf,
    frame_max: u32,
    deadline: Instant,
) -> Stop {
    future::or(
        async {
            loop {
                loop {
                    match next_frame(rb.data(), frame_max) {
                        Ok(Some((Frame::Method(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))), _))) => {
                            return Stop::Closed
                        }
                        Ok(Some((_, n))) => rb.start += n,
                        Ok(None) => break,
                        Err(_) => {
                            rb.start = rb.end;
                            break;
                        }
                    }
                }
                match rb.fill(stream, frame_max as usize).await {
                    Ok(0) | Err(_) => return Stop::Gone,
                    Ok(_) => {}
                }
            }
        },
        async {
            Timer::at(deadline).await;
            Stop::Gone
        },
    )
    .await
}

/// After the close handshake, with our side shut down (the peer reads the end of the
/// stream after our last frame): reads and discards until the peer closes its side or
/// [`LINGER_TIMEOUT`], so that what it still sends is not answered with a reset.
pub(super) async fn linger<R: AsyncRead + Unpin>(stream: &mut R) {
    let mut buf = vec![0u8; 16 * 1024];
    future::or(
        async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        },
        async {
            Timer::after(LINGER_TIMEOUT).await;
        },
    )
    .await;
}

impl Connection {
    /// Logs a connection error and sends connection.close, unless one was sent already:
    /// there is one per connection, and after it the peer's frames are discarded.
    pub(super) fn fail(&mut self, err: &AmqpError, class_id: u16, method_id: u16) {
        if self.closing.is_some() {
            log::debug!("{}: after connection.close: {err}", self.peer);
            return;
        }
        log::warn!("{}: closing connection: {err}", self.peer);
        self.send(0, close_method(err, class_id, method_id));
        self.closing = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    /// Until when we wait for close-ok after our connection.close.
    pub(super) fn close_deadline(&self) -> Instant {
        self.closing.unwrap_or_else(|| Instant::now() + CLOSE_TIMEOUT)
    }
}
