//! The TLS (AMQPS) transport: the rustls server configuration built from the `[tls]`
//! table (TLS 1.2 and 1.3, ring as the crypto provider, optional or required client
//! certificates verified against `ca`), the handshake under the connection's handshake
//! deadline, and what the connection learns from it: the verified client certificate's
//! login name, for SASL EXTERNAL.
//!
//! A failed or timed-out handshake ends only that TCP connection: it is logged at warn
//! level at most once per [`LOG_INTERVAL`] (the line counts the failures since the
//! previous one), the others at debug level, so a flood of garbage cannot flood the log.

mod peer_name;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_rustls::server::TlsStream;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use smol::net::TcpStream;
use smol::{future, Timer};

use crate::config::{CertLoginFrom, Config, SanType, TlsConfig};

/// A TLS connection's stream, once the handshake is done.
pub type ServerTlsStream = TlsStream<TcpStream>;

/// At most one warn-level line about failed handshakes per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The verified certificate a TLS client presented.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// The user SASL EXTERNAL logs in as, or why the certificate names none.
    pub login: Result<String, String>,
}

/// Where EXTERNAL finds the user name in a certificate (the `ssl_cert_login_*` keys).
#[derive(Clone, Copy, Debug)]
pub struct LoginFrom {
    pub from: CertLoginFrom,
    pub san_type: SanType,
    pub san_index: usize,
}

/// Accepts TLS connections: the handshake, its deadline and its failures' log lines.
pub struct Acceptor {
    inner: futures_rustls::TlsAcceptor,
    login: LoginFrom,
    failures: FailureLog,
}

impl Acceptor {
    /// The acceptor for `config.tls`, or `None` when TLS is off. Every problem with the
    /// files (missing, not PEM, a key that does not match) is an error naming the file.
    pub fn from_config(config: &Config) -> io::Result<Option<Self>> {
        let Some(tls) = &config.tls else {
            return Ok(None);
        };
        let server = server_config(tls)?;
        let login = LoginFrom {
            from: config.ssl_cert_login_from,
            san_type: config.ssl_cert_login_san_type,
            san_index: config.ssl_cert_login_san_index,
        };
        Ok(Some(Self { inner: Arc::new(server).into(), login, failures: FailureLog::default() }))
    }

    /// Runs the TLS handshake on an accepted socket until `deadline`. `None` when it
    /// failed or timed out (logged; the socket is closed when dropped).
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Option<(ServerTlsStream, Option<ClientCert>)> {
        let handshake = self.inner.accept(tcp);
        let done = future::or(async { Some(handshake.await) }, async {
            Timer::at(deadline).await;
            None
        })
        .await;
        match done {
            Some(Ok(stream)) => {
                let (_, conn) = stream.get_ref();
                // Only verified certificates get here: without `verify_peer` none is
                // asked for, with it the verifier refused the handshake otherwise.
                let cert = conn
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| ClientCert { login: peer_name::login_name(leaf, self.login) });
                log::debug!(
                    "{peer}: TLS handshake done ({:?}, {:?}, client certificate: {:?})",
                    conn.protocol_version(),
                    conn.negotiated_cipher_suite().map(|s| s.suite()),
                    cert.as_ref().map(|c| &c.login)
                );
                Some((stream, cert))
            }
            Some(Err(e)) => {
                self.failures.note(peer, &e.to_string());
                None
            }
            None => {
                self.failures.note(peer, "timed out");
                None
            }
        }
    }
}

/// Builds the rustls server configuration from the `[tls]` table.
fn server_config(tls: &TlsConfig) -> io::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    let builder = if tls.verify_peer {
        let Some(ca) = &tls.ca else {
            return Err(invalid(
                "[tls] verify_peer = true needs ca (the CA certificates clients are verified against)",
            ));
        };
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca)? {
            roots.add(cert).map_err(|e| invalid(format!("TLS CA file {}: {e}", ca.display())))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if tls.fail_if_no_peer_cert { verifier } else { verifier.allow_unauthenticated() };
        builder.with_client_cert_verifier(verifier.build().map_err(|e| invalid(format!("TLS client verifier: {e}")))?)
    } else if tls.fail_if_no_peer_cert {
        return Err(invalid("[tls] fail_if_no_peer_cert = true needs verify_peer = true"));
    } else {
        builder.with_no_client_auth()
    };
    let certs = load_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| invalid(format!("TLS key file {}: {e}", tls.key.display())))?;
    builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("TLS certificate {} and key {}: {e}", tls.cert.display(), tls.key.display())))
}

/// Every certificate in a PEM file; at least one.
fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("TLS certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("TLS certificate file {}: no certificate in it", path.display())));
    }
    Ok(certs)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Rate-limited logging of failed handshakes.
#[derive(Default)]
struct FailureLog(crate::util::LogLimiter);

impl FailureLog {
    fn note(&self, peer: SocketAddr, what: &str) {
        let covered = self.0.note(Instant::now(), LOG_INTERVAL);
        match covered {
            Some(n) => {
                log::warn!(
                    "{peer}: TLS handshake failed: {what} ({n} failed TLS handshake(s) since the last such line)"
                )
            }
            None => log::debug!("{peer}: TLS handshake failed: {what}"),
        }
    }
}
