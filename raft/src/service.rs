//! Application services over the cluster link: besides Raft traffic, the application
//! can open authenticated, ordered streams of its own messages between nodes (the
//! broker forwards publishes to, and consumes from, a classic queue's home node this
//! way).
//!
//! A dialer connects, passes the same handshake as Raft links (the cluster secret)
//! and names the service; the listening node hands the connection to the handler the
//! application registered under that name ([`RaftNode::serve`]). Messages are framed
//! as Raft messages are (a length, at most 64 MiB, then postcard), so a broken or
//! hostile peer cannot make the receiver allocate more.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;

use crate::network::auth::{handshake, Role};
use crate::network::frame::{read_frame, write_frame, MAX_FRAME};
use crate::network::message::RpcRequest;
use crate::node::Shared;
use crate::{NodeId, RaftNode};

/// What a service does with a connection a peer opened to it.
pub type ServiceHandler = Arc<dyn Fn(NodeId, ServiceStream) + Send + Sync>;

/// An authenticated connection to or from peer node [`peer`](Self::peer).
pub struct ServiceStream {
    stream: TcpStream,
    peer: NodeId,
}

impl ServiceStream {
    /// The node at the other end (authenticated by the handshake).
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// A reading and a writing half, for a reader task and a writer task.
    pub fn split(self) -> (ServiceReader, ServiceWriter) {
        (ServiceReader(self.stream.clone()), ServiceWriter { stream: self.stream, buf: Vec::new() })
    }
}

/// The reading half of a [`ServiceStream`].
pub struct ServiceReader(TcpStream);

impl ServiceReader {
    /// The next message; an error when the connection closed or sent garbage.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, String> {
        read_frame(&mut self.0).await.map_err(|e| e.to_string())
    }
}

/// The writing half of a [`ServiceStream`].
pub struct ServiceWriter {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ServiceWriter {
    /// Writes messages as one batch (one write, one flush). A message too large for a
    /// frame fails the whole batch before anything is written.
    pub async fn send_all<'a, T: Serialize + 'a>(
        &mut self,
        msgs: impl IntoIterator<Item = &'a T>,
    ) -> Result<(), String> {
        self.buf.clear();
        for msg in msgs {
            let at = self.buf.len();
            self.buf.extend_from_slice(&[0; 4]);
            let buf = std::mem::take(&mut self.buf);
            self.buf = postcard::to_extend(msg, buf).map_err(|e| e.to_string())?;
            let len = self.buf.len() - at - 4;
            let len =
                u32::try_from(len).ok().filter(|l| *l <= MAX_FRAME).ok_or("message exceeds the frame size limit")?;
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        self.stream.write_all(&self.buf).await.map_err(|e| e.to_string())?;
        self.stream.flush().await.map_err(|e| e.to_string())?;
        // A burst's buffer is not kept for ever.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Closes the connection (the peer's reader sees its end).
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl RaftNode {
    /// Registers the handler for connections peers open to service `name`.
    pub fn serve(&self, name: &str, handler: ServiceHandler) {
        crate::node::lock(&self.shared.services).insert(name.to_string(), handler);
    }

    /// Opens a connection to service `name` on node `target`, whose cluster address is
    /// `addr` (a configured route to `target` overrides it), within `timeout`.
    pub async fn connect(
        &self,
        target: NodeId,
        addr: std::net::SocketAddr,
        name: &str,
        timeout: Duration,
    ) -> Result<ServiceStream, String> {
        let dialer = self.shared.dialer.clone();
        let addr = dialer.route(target, addr);
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let peer = handshake(&mut stream, &dialer.secret, dialer.node_id, Role::Dialer)
                .await
                .map_err(|e| e.to_string())?;
            if peer != target {
                return Err(format!("{addr} is node {peer}, not node {target}"));
            }
            write_frame(&mut stream, &RpcRequest::OpenService(name.to_string())).await.map_err(|e| e.to_string())?;
            Ok(ServiceStream { stream, peer })
        };
        smol::future::or(attempt, async {
            smol::Timer::after(timeout).await;
            Err(format!("connecting to node {target} at {addr} timed out"))
        })
        .await
    }
}

/// A peer opened a service connection: hands it to the service's handler.
pub(crate) fn accept(stream: TcpStream, shared: &Arc<Shared>, peer: NodeId, name: &str) {
    let handler = crate::node::lock(&shared.services).get(name).cloned();
    match handler {
        Some(handler) => handler(peer, ServiceStream { stream, peer }),
        None => log::warn!("raft: node {peer} asked for service '{name}', which this node does not offer"),
    }
}
