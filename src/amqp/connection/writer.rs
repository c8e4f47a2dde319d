//! The writer task: flushes the outbox to the socket, sends heartbeats and notices a
//! silent peer.

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use smol::io::{AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{future, Timer};

use super::*;

/// The writer task: sends what the outbox collects into `stream` (the socket, or the
/// TLS stream's write half), heartbeats when idle, and closes the socket `tcp` when the
/// client has been silent for two heartbeat intervals.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut stream: W,
    tcp: TcpStream,
    outbox: Arc<Outbox>,
    liveness: Arc<Liveness>,
    peer: SocketAddr,
) {
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
                    let _ = tcp.shutdown(Shutdown::Both);
                    return;
                }
                if now.saturating_sub(last_write_ms) >= hb * 500 {
                    // Through the outbox, so it is ordered with batch writes.
                    write_heartbeat(outbox.lock().buf());
                }
                continue;
            }
        }
        // `flush` pushes out what TLS still holds encrypted (a no-op on plain TCP).
        if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
            outbox.close();
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
        buf.clear();
        if buf.capacity() > HIGH_WATER {
            // A large message went out: do not keep its buffer for the connection's life.
            buf = Vec::new();
        }
        last_write_ms = liveness.now_ms();
        for q in outbox.drained() {
            q.dispatch();
        }
    }
    let _ = stream.flush().await;
    // Our side only: the reader may still have to drain the peer's (see `linger`).
    // `close` is `shutdown(Write)` on plain TCP; TLS sends close_notify first.
    let _ = stream.close().await;
}
