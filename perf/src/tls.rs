//! TLS for `amqps://` URIs: the rustls client configuration (trusting the CA in
//! `--tls-ca`, or checking nothing with `--tls-insecure`, for self-signed test setups)
//! and the stream halves a connection reads and writes, plain or TLS. The TLS halves
//! share the rustls stream behind a lock (`futures_lite::io::split`); writes must be
//! flushed, which is a no-op on plain TCP.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use amq_protocol::uri::{AMQPScheme, AMQPUri};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use smol::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use smol::net::TcpStream;

use crate::client::Res;

/// The TLS client configuration, set once from the command line.
static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Sets up TLS for amqps:// URIs: trust the CA certificates in `ca`, or (`insecure`)
/// accept any server certificate.
pub fn configure(ca: Option<&Path>, insecure: bool) -> Res<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider))).with_no_client_auth()
    } else if let Some(ca) = ca {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        for cert in certs {
            roots.add(cert).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        return Err("an amqps:// URI needs --tls-ca FILE (the CA that signed the broker's certificate) \
                    or --tls-insecure"
            .into());
    };
    let _ = CONFIG.set(Arc::new(config));
    Ok(())
}

/// Connects to the URI's broker: plain TCP for amqp://, TLS for amqps://.
pub async fn connect(uri: &AMQPUri) -> Res<(ReadStream, WriteStream)> {
    let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
    let tcp = TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    if uri.scheme != AMQPScheme::AMQPS {
        return Ok((ReadStream::Tcp(tcp.clone()), WriteStream::Tcp(tcp)));
    }
    let config = CONFIG.get().ok_or("amqps:// needs --tls-ca FILE or --tls-insecure")?;
    let name = ServerName::try_from(uri.authority.host.clone()).map_err(|e| format!("TLS server name: {e}"))?;
    let tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (r, w) = smol::io::split(tls);
    Ok((ReadStream::Tls(r), WriteStream::Tls(w)))
}

/// What a connection reads from.
pub enum ReadStream {
    Tcp(TcpStream),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// What a connection writes to (flush after writing: TLS may hold bytes back).
pub enum WriteStream {
    Tcp(TcpStream),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ReadStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteStream::Tcp(s) => Pin::new(s).poll_close(cx),
            WriteStream::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// `--tls-insecure`: any server certificate is accepted (signatures are still checked,
/// so the handshake itself is sound; only who signed the certificate is not).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
