//! Mutual challenge-response authentication with the shared cluster secret.
//!
//! Each side sends a random 32-byte nonce with its node id; each then proves it knows the
//! secret with HMAC-SHA256(secret, peer's nonce ‖ own node id ‖ own role). The role (dialer or
//! listener) keeps one side's proof from being reflected back as the other's, and the fresh
//! nonces keep a recorded proof from being replayed. Proofs are checked in constant time.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use smol::net::TcpStream;

use super::frame::{read_frame, write_frame, FrameError};

#[derive(Serialize, Deserialize)]
struct Hello {
    node_id: u64,
    nonce: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Proof(Vec<u8>);

#[derive(Clone, Copy)]
pub enum Role {
    Dialer,
    Listener,
}

impl Role {
    fn tag(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Listener => b"listener",
        }
    }
    fn peer(self) -> Role {
        match self {
            Role::Dialer => Role::Listener,
            Role::Listener => Role::Dialer,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer {0} failed authentication (wrong cluster secret?)")]
    BadProof(u64),
}

fn mac(secret: &[u8], nonce: &[u8; 32], node_id: u64, role: Role) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(nonce);
    mac.update(&node_id.to_be_bytes());
    mac.update(role.tag());
    mac
}

/// Runs the handshake on a fresh connection; returns the authenticated peer's node id.
pub async fn handshake(stream: &mut TcpStream, secret: &[u8], node_id: u64, role: Role) -> Result<u64, AuthError> {
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    write_frame(stream, &Hello { node_id, nonce }).await?;
    let peer: Hello = read_frame(stream).await?;
    let proof = mac(secret, &peer.nonce, node_id, role).finalize().into_bytes().to_vec();
    write_frame(stream, &Proof(proof)).await?;
    let Proof(theirs) = read_frame(stream).await?;
    mac(secret, &nonce, peer.node_id, role.peer())
        .verify_slice(&theirs)
        .map_err(|_| AuthError::BadProof(peer.node_id))?;
    Ok(peer.node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(
        dialer_secret: &'static [u8],
        listener_secret: &'static [u8],
    ) -> (Result<u64, AuthError>, Result<u64, AuthError>) {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = smol::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            handshake(&mut s, listener_secret, 2, Role::Listener).await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let client = handshake(&mut c, dialer_secret, 1, Role::Dialer).await;
        (client, server.await)
    }

    #[test]
    fn same_secret_authenticates_both_sides() {
        smol::block_on(async {
            let (c, s) = pair(b"secret", b"secret").await;
            assert_eq!(c.unwrap(), 2);
            assert_eq!(s.unwrap(), 1);
        })
    }

    #[test]
    fn different_secrets_fail_on_both_sides() {
        smol::block_on(async {
            let (c, s) = pair(b"secret", b"other").await;
            assert!(matches!(c, Err(AuthError::BadProof(2))));
            assert!(matches!(s, Err(AuthError::BadProof(1))));
        })
    }
}
