//! The management HTTP API: RabbitMQ's `/api/...` (the management plugin's REST
//! interface) so that rabbitmqadmin, Terraform, rabbit-hole, KEDA and health checks
//! work unchanged.
//!
//! It sits beside the AMQP layer, not on it: it calls the core (`admin`, `definitions`,
//! the vhost listings, `broker`) and never `amqp`. HTTP/1.1 is hyper 1.x driven by the
//! broker's own smol executor through `smol-hyper`'s adapters. Each request's body is
//! read whole (at most `MAX_BODY` bytes) and then answered by synchronous code on
//! smol's blocking pool (`smol::unblock`): administrative changes wait for the store's
//! commit, which must not stall an executor thread.

mod api;
mod auth;
pub mod prometheus;
pub mod rates;
mod reply;
mod router;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::broker::Broker;
pub use reply::Reply;

/// The largest request body read (a definitions import); larger ones get 413.
const MAX_BODY: usize = 16 << 20;
/// The read buffer's bound, which bounds the request line and headers.
const MAX_HEAD: usize = 64 << 10;
/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers know besides the broker: the addresses the broker listens on.
pub struct Context {
    pub broker: Arc<Broker>,
    /// `(protocol, address)` of every listener, as `/api/overview` lists them.
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// Rates of change, sampled by a ticker.
    pub rates: Arc<rates::Rates>,
    /// Management connections open now (at most [`MAX_CONNECTIONS`]).
    pub open: std::sync::atomic::AtomicUsize,
    pub refused_log: crate::util::LogLimiter,
    /// RabbitMQ's global runtime parameters (`cluster_name`, ...), in memory only:
    /// the store has no record for them yet.
    pub global_parameters: std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
}

impl Context {
    pub fn new(broker: Arc<Broker>, listeners: Vec<(&'static str, SocketAddr)>, rates: Arc<rates::Rates>) -> Self {
        Self {
            broker,
            listeners,
            rates,
            open: Default::default(),
            refused_log: Default::default(),
            global_parameters: Default::default(),
        }
    }

    /// The global parameters, locked.
    pub fn global_parameters(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, serde_json::Value>> {
        self.global_parameters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One request, its body read, as the handlers see it.
pub struct Request {
    pub method: hyper::Method,
    /// The path after `/api`, split at `/` and percent-decoded (`%2F` is `/`).
    pub segments: Vec<String>,
    /// The query string's parameters, percent-decoded (`+` is a space), in order.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    /// The `X-Reason` header.
    pub reason: Option<String>,
    pub peer: SocketAddr,
    pub body: Bytes,
}

/// Most management connections open at once; more are closed at accept (a client
/// cannot exhaust the broker's sockets and tasks through the API).
const MAX_CONNECTIONS: usize = 256;

/// Counts an open management connection while it lives.
struct OpenConnection(Arc<Context>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves one management connection (HTTP/1.1, keep-alive) until it closes.
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>)
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::sync::atomic::Ordering;
    if ctx.open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
        ctx.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(n) = ctx.refused_log.note(std::time::Instant::now(), Duration::from_secs(10)) {
            log::warn!("management connection from {peer} refused: {MAX_CONNECTIONS} open ({n} refused since the last such line)");
        }
        return;
    }
    let _open = OpenConnection(ctx.clone());
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(req, peer, ctx).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(FuturesIo::new(stream), service)
        .await;
    if let Err(e) = result {
        log::debug!("management connection from {peer}: {e}");
    }
}

async fn answer(req: hyper::Request<Incoming>, peer: SocketAddr, ctx: Arc<Context>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let reply = if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Reply::error(413, "bad_request", "request body too large")
            } else {
                Reply::error(400, "bad_request", "unreadable request body")
            };
            // The rest of the body is not read: the connection cannot be reused.
            let mut reply = reply;
            reply.headers.push(("connection", "close".to_string()));
            return reply.into_response();
        }
    };
    let Some(segments) = router::split_path(parts.uri.path()) else {
        return Reply::not_found().into_response();
    };
    let request = Request {
        method: parts.method,
        segments,
        query: router::parse_query(parts.uri.query().unwrap_or("")),
        authorization: parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        reason: parts.headers.get("x-reason").and_then(|v| v.to_str().ok()).map(str::to_string),
        peer,
        body,
    };
    // An address whose failed logins are still being answered waits its turn.
    if request.authorization.is_some() {
        if let Some(at) = ctx.broker.users.throttle.turn(peer.ip(), std::time::Instant::now()) {
            smol::Timer::at(at).await;
        }
    }
    let reply = smol::unblock(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| router::handle(&ctx, &request)))
            .unwrap_or_else(|_| Reply::error(500, "internal_server_error", "the request handler failed"))
    })
    .await;
    if let Some(at) = reply.not_before {
        smol::Timer::at(at).await;
    }
    reply.into_response()
}
