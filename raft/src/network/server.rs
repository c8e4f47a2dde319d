//! The listening side: one listener per node, a task per connection, requests dispatched to
//! the group's Raft instance by the node.

use std::sync::Arc;
use std::time::Duration;

use smol::net::{TcpListener, TcpStream};

use super::auth::{handshake, Role};
use super::frame::{read_frame, write_frame, FrameError};
use super::message::RpcRequest;
use crate::node::Shared;

/// A peer gets this long to complete the handshake, so a silent client can't pin a task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `stop` is closed (node shutdown).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: smol::channel::Receiver<()>) {
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (shared, stop) = (shared.clone(), stop.clone());
                    smol::spawn(async move {
                        smol::future::or(connection(stream, shared), async {
                            let _ = stop.recv().await;
                        })
                        .await
                    })
                    .detach();
                }
                Err(e) => {
                    log::warn!("raft: accept failed: {e}");
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    };
    smol::future::or(accept, async {
        let _ = stop.recv().await;
    })
    .await
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let peer_addr = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let auth = smol::future::or(
        async {
            handshake(&mut stream, &shared.dialer.secret, shared.dialer.node_id, Role::Listener)
                .await
                .map_err(|e| e.to_string())
        },
        async {
            smol::Timer::after(HANDSHAKE_TIMEOUT).await;
            Err("handshake timed out".to_string())
        },
    )
    .await;
    let peer = match auth {
        Ok(peer) => peer,
        Err(e) => {
            log::warn!("raft: rejected connection from {peer_addr:?}: {e}");
            return;
        }
    };
    loop {
        let req: RpcRequest = match read_frame(&mut stream).await {
            Ok(req) => req,
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                log::warn!("raft: closing connection from node {peer} ({peer_addr:?}): {e}");
                return;
            }
        };
        shared.dialer.contacts.heard_from(peer);
        if let RpcRequest::OpenPipeline(group) = req {
            return crate::pipeline::serve(stream, shared, peer, group).await;
        }
        if let RpcRequest::OpenService(name) = req {
            return crate::service::accept(stream, &shared, peer, &name);
        }
        let resp = shared.handle(req).await;
        if let Err(e) = write_frame(&mut stream, &resp).await {
            log::debug!("raft: connection from node {peer} closed: {e}");
            return;
        }
    }
}
