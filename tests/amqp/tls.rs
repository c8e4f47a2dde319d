//! TLS (AMQPS) and SASL EXTERNAL: lapin and amqprs over TLS, client certificates,
//! refused handshakes, the handshake timeout and the offered mechanisms. Certificates
//! are made per test with rcgen (a CA, a server certificate for 127.0.0.1/localhost,
//! client certificates); no key is checked in.

use crate::common::{start_broker_with, unique, TestBroker, WAIT};
use crate::util::*;
use amq_protocol::frame::{parse_frame, AMQPFrame};
use amq_protocol::protocol::{connection, AMQPClass};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

/// A certificate and its key, as PEM and DER.
struct Identity {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// A test CA, the broker's certificate and key files, and a way to make client
/// certificates. The directory is removed on drop.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        // Client libraries that build their rustls config with the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(unique("haremq-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "HareMQ test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let pki = Pki { dir, ca: Issuer::new(params, key), ca_pem: cert.pem(), ca_der: cert.der().clone() };
        std::fs::write(pki.path("ca.pem"), &pki.ca_pem).unwrap();
        let server = pki.issue("localhost", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(pki.path("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(pki.path("server.key"), &server.key_pem).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn issue(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A client certificate whose subject CN is `cn`.
    fn client(&self, cn: &str) -> Identity {
        self.issue(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn tls_config(&self, verify_peer: bool, fail_if_no_peer_cert: bool) -> haremq::TlsConfig {
        haremq::TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: Some(self.path("ca.pem")),
            verify_peer,
            fail_if_no_peer_cert,
        }
    }

    /// lapin's TLS settings: trust the test CA, present `client` if given.
    fn lapin_tls(&self, client: Option<&Identity>) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: client.map(|c| OwnedIdentity::PKCS8 {
                pem: c.cert_pem.clone().into_bytes(),
                key: c.key_pem.clone().into_bytes(),
            }),
            cert_chain: Some(self.ca_pem.clone()),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker with a TLS listener (and the plain one), plus alice and bob as users.
fn tls_broker(pki: &Pki, verify_peer: bool, fail_if_no_peer_cert: bool) -> TestBroker {
    tls_broker_with(pki, verify_peer, fail_if_no_peer_cert, |_| {})
}

fn tls_broker_with(
    pki: &Pki,
    verify_peer: bool,
    fail_if_no_peer_cert: bool,
    adjust: impl FnOnce(&mut haremq::Config),
) -> TestBroker {
    start_broker_with(|c| {
        c.tls = Some(pki.tls_config(verify_peer, fail_if_no_peer_cert));
        for name in ["alice", "bob"] {
            c.users.push(haremq::UserConfig { name: name.into(), password: format!("{name}-secret") });
        }
        adjust(c);
    })
}

fn tls_addr(broker: &TestBroker) -> SocketAddr {
    broker.tls_addr().expect("the broker has a TLS listener")
}

fn amqps_url(broker: &TestBroker, userinfo: &str, query: &str) -> String {
    format!("amqps://{userinfo}127.0.0.1:{}/%2f{query}", tls_addr(broker).port())
}

async fn lapin_tls(url: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime().expect("tokio runtime");
    within("lapin amqps connect", Connection::connect_with_config(url, ConnectionProperties::default(), tls, runtime))
        .await
}

/// Publishes one message through `conn` and consumes it back on the same connection.
async fn round_trip(conn: &Connection, props: BasicProperties) {
    let ch = channel(conn).await;
    let q = unique("tls-rt");
    within("declare", ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    let body = vec![7u8; 300_000]; // several frames and TLS records
    within("publish", ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), &body, props))
        .await
        .expect("publish");
    let mut consumer = within(
        "consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_publishes_and_consumes_over_tls() {
    let pki = Pki::new();
    let broker = tls_broker(&pki, false, false);
    if broker.is_external() {
        return;
    }
    let conn = lapin_tls(&amqps_url(&broker, "guest:guest@", ""), pki.lapin_tls(None)).await.expect("amqps connects");
    round_trip(&conn, BasicProperties::default()).await;
    within("close", conn.close(200, "bye".into())).await.expect("close");
    // The plain listener still works next to it.
    let (_c, ch) = open(&broker).await;
    declare_queue(&ch, &unique("plain-next-to-tls")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_publishes_and_consumes_over_tls() {
    use amqprs::channel::{BasicConsumeArguments, BasicPublishArguments, QueueDeclareArguments};
    use amqprs::connection::OpenConnectionArguments;
    use amqprs::tls::TlsAdaptor;
    let pki = Pki::new();
    let broker = tls_broker(&pki, false, false);
    if broker.is_external() {
        return;
    }
    let addr = tls_addr(&broker);
    let mut args = OpenConnectionArguments::new("127.0.0.1", addr.port(), "guest", "guest");
    args.tls_adaptor(TlsAdaptor::without_client_auth(Some(&pki.path("ca.pem")), "127.0.0.1".into()).expect("adaptor"));
    let conn = within("amqprs amqps connect", amqprs::connection::Connection::open(&args)).await.expect("connects");
    let ch = within("channel", conn.open_channel(None)).await.expect("channel");
    let q = unique("rs-tls");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    let (_tag, mut rx) =
        within("consume", ch.basic_consume_rx(BasicConsumeArguments::new(&q, "rs-tls").manual_ack(false).finish()))
            .await
            .expect("consume");
    for i in 0..3 {
        ch.basic_publish(Default::default(), format!("tls{i}").into_bytes(), BasicPublishArguments::new("", &q))
            .await
            .expect("publish");
    }
    for i in 0..3 {
        let msg = within("amqprs delivery", rx.recv()).await.expect("delivery");
        assert_eq!(msg.content.expect("body"), format!("tls{i}").into_bytes());
    }
    within("close", conn.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_logs_in_as_the_certificate_common_name() {
    let pki = Pki::new();
    let broker = tls_broker_with(&pki, true, false, |c| {
        c.auth_mechanisms = vec!["PLAIN".into(), "AMQPLAIN".into(), "EXTERNAL".into()];
    });
    if broker.is_external() {
        return;
    }
    let alice = pki.client("alice");
    let url = amqps_url(&broker, "", "?auth_mechanism=external");
    let conn = lapin_tls(&url, pki.lapin_tls(Some(&alice))).await.expect("EXTERNAL login as alice");
    // The broker checks user_id against the login: alice is accepted, guest is not.
    round_trip(&conn, BasicProperties::default().with_user_id("alice".into())).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let confirm = within(
        "publish",
        ch.basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_user_id("guest".into()),
        ),
    )
    .await
    .expect("publish is async");
    let res = within("confirm", confirm).await;
    assert_amqp_err(
        res,
        406,
        "PRECONDITION_FAILED - user_id property set to 'guest' but authenticated user was 'alice'",
    );

    // An unknown CN is refused with RabbitMQ's 403, after the failed-login delay.
    let mallory = pki.client("mallory");
    let err = lapin_tls(&url, pki.lapin_tls(Some(&mallory))).await.expect_err("mallory is no user");
    assert_eq!(code(&err), Some(403), "{err:?}");
    assert_eq!(
        text(&err),
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
    );
    // PLAIN still works on a connection with a certificate.
    let plain = amqps_url(&broker, "bob:bob-secret@", "");
    let conn = lapin_tls(&plain, pki.lapin_tls(Some(&mallory))).await.expect("PLAIN over TLS with a certificate");
    round_trip(&conn, BasicProperties::default().with_user_id("bob".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_if_no_peer_cert_refuses_clients_without_one() {
    let pki = Pki::new();
    let broker = tls_broker(&pki, true, true);
    if broker.is_external() {
        return;
    }
    let url = amqps_url(&broker, "guest:guest@", "");
    let err = lapin_tls(&url, pki.lapin_tls(None)).await.expect_err("no client certificate");
    assert_eq!(code(&err), None, "a TLS failure, not an AMQP one: {err:?}");
    // A certificate from another CA is refused too.
    let other = Pki::new();
    let stranger = other.client("alice");
    lapin_tls(&url, pki.lapin_tls(Some(&stranger))).await.expect_err("certificate from an unknown CA");
    // One from the right CA gets in.
    let alice = pki.client("alice");
    let conn = lapin_tls(&url, pki.lapin_tls(Some(&alice))).await.expect("with a certificate");
    round_trip(&conn, BasicProperties::default()).await;
}

/// A blocking raw client over TLS (rustls), for what client libraries do not show.
struct RawTls {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl RawTls {
    fn connect(addr: SocketAddr, pki: &Pki, client: Option<&Identity>) -> RawTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(id) => builder
                .with_client_auth_cert(
                    vec![id.cert_der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = RawTls { s: rustls::StreamOwned::new(conn, tcp) };
        let (conn, sock) = (&mut raw.s.conn, &mut raw.s.sock);
        while conn.is_handshaking() {
            conn.complete_io(sock).expect("TLS handshake");
        }
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
        self.s.flush().expect("flush");
    }

    /// Reads one frame; None at the end of the stream.
    fn read_frame(&mut self) -> Option<AMQPFrame> {
        let mut buf = vec![0u8; 7];
        if !read_full(&mut self.s, &mut buf) {
            return None;
        }
        let size = u32::from_be_bytes(buf[3..7].try_into().unwrap()) as usize;
        buf.resize(7 + size + 1, 0);
        if !read_full(&mut self.s, &mut buf[7..]) {
            return None;
        }
        Some(parse_frame(buf.as_slice()).expect("a valid frame").1)
    }

    /// Sends the protocol header and returns the mechanisms connection.start offers.
    fn mechanisms(&mut self) -> String {
        self.send(b"AMQP\x00\x00\x09\x01");
        match self.read_frame() {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(s)))) => {
                String::from_utf8(s.mechanisms.as_bytes().to_vec()).unwrap()
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// start-ok with `mechanism` and an empty response; returns the connection.close
    /// the broker answers with (code, text).
    fn choose(&mut self, mechanism: &str) -> (u16, String) {
        let mut args = vec![0, 0, 0, 0]; // client properties: an empty table
        args.push(mechanism.len() as u8);
        args.extend_from_slice(mechanism.as_bytes());
        args.extend_from_slice(&0u32.to_be_bytes()); // response
        args.push(5);
        args.extend_from_slice(b"en_US");
        self.send(&method_frame(10, 11, &args));
        loop {
            match self.read_frame() {
                Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                    return (c.reply_code, c.reply_text.as_str().to_string())
                }
                Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))) => {
                    return (0, "tune".into())
                }
                Some(_) => continue,
                None => panic!("the broker closed without connection.close"),
            }
        }
    }
}

fn method_frame(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    let mut f = vec![1, 0, 0];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    f.push(0xCE);
    f
}

/// Fills `buf`; false at the end of the stream (or a reset). Panics on a timeout.
fn read_full(s: &mut impl Read, buf: &mut [u8]) -> bool {
    let mut off = 0;
    while off < buf.len() {
        match s.read(&mut buf[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("timed out after {WAIT:?} reading from the broker")
            }
            Err(_) => return false,
        }
    }
    true
}

/// Reads a plain socket until the broker closes it; panics if it does not within WAIT.
fn wait_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("the broker did not close the connection within {WAIT:?}")
            }
            Err(_) => return, // reset
        }
    }
}

#[test]
fn auth_mechanisms_are_offered_in_order_and_external_only_with_a_certificate() {
    let pki = Pki::new();
    let broker = tls_broker_with(&pki, true, false, |c| {
        c.auth_mechanisms = vec!["EXTERNAL".into(), "AMQPLAIN".into(), "PLAIN".into()];
    });
    if broker.is_external() {
        return;
    }
    let addr = tls_addr(&broker);
    let alice = pki.client("alice");
    assert_eq!(RawTls::connect(addr, &pki, Some(&alice)).mechanisms(), "EXTERNAL AMQPLAIN PLAIN");
    assert_eq!(RawTls::connect(addr, &pki, None).mechanisms(), "AMQPLAIN PLAIN");
    let mut plain = crate::robustness::Wire::tcp(broker.addr());
    plain.send(b"AMQP\x00\x00\x09\x01");
    match plain.read_frame() {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(s)))) => {
            assert_eq!(s.mechanisms.as_bytes(), b"AMQPLAIN PLAIN")
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
    // EXTERNAL without a certificate is "invalid" (known, not offered); a name HareMQ
    // does not know is "unknown": RabbitMQ's two 503s.
    let mut c = RawTls::connect(addr, &pki, None);
    c.mechanisms();
    assert_eq!(c.choose("EXTERNAL"), (503, "COMMAND_INVALID - invalid authentication mechanism 'EXTERNAL'".into()));
    let mut c = RawTls::connect(addr, &pki, None);
    c.mechanisms();
    assert_eq!(c.choose("CRAM-MD5"), (503, "COMMAND_INVALID - unknown authentication mechanism 'CRAM-MD5'".into()));
    // EXTERNAL with a certificate: alice exists, so the broker goes on to tune.
    let mut c = RawTls::connect(addr, &pki, Some(&alice));
    c.mechanisms();
    assert_eq!(c.choose("EXTERNAL"), (0, "tune".into()));
}

#[test]
fn a_mechanism_left_out_of_auth_mechanisms_is_refused() {
    let pki = Pki::new();
    let broker = tls_broker_with(&pki, false, false, |c| c.auth_mechanisms = vec!["AMQPLAIN".into()]);
    if broker.is_external() {
        return;
    }
    let mut c = RawTls::connect(tls_addr(&broker), &pki, None);
    assert_eq!(c.mechanisms(), "AMQPLAIN");
    assert_eq!(c.choose("PLAIN"), (503, "COMMAND_INVALID - invalid authentication mechanism 'PLAIN'".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_does_not_disturb_other_connections() {
    let pki = Pki::new();
    let broker = tls_broker(&pki, false, false);
    if broker.is_external() {
        return;
    }
    let addr = tls_addr(&broker);
    let conn = lapin_tls(&amqps_url(&broker, "guest:guest@", ""), pki.lapin_tls(None)).await.expect("amqps connects");
    // Plain AMQP, random bytes and a truncated ClientHello, many times over, while the
    // TLS client works.
    let garbage = tokio::task::spawn_blocking(move || {
        let inputs: [&[u8]; 3] = [b"AMQP\x00\x00\x09\x01", &[0xAB; 3000], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]];
        for round in 0..30 {
            let mut s = TcpStream::connect(addr).expect("connect");
            let _ = s.write_all(inputs[round % inputs.len()]);
            if round % inputs.len() != 2 {
                // Refused outright; the truncated hello is left to the timeout below.
                wait_closed(&mut s);
            }
        }
    });
    for _ in 0..5 {
        round_trip(&conn, BasicProperties::default()).await;
    }
    within("garbage clients", garbage).await.expect("garbage thread");
    round_trip(&conn, BasicProperties::default()).await;
    // A new TLS client is served too.
    let conn2 = lapin_tls(&amqps_url(&broker, "guest:guest@", ""), pki.lapin_tls(None)).await.expect("connects");
    round_trip(&conn2, BasicProperties::default()).await;
}

#[test]
fn a_stalled_handshake_is_closed_by_the_handshake_timeout() {
    let pki = Pki::new();
    let broker = tls_broker_with(&pki, false, false, |c| c.handshake_timeout_ms = 300);
    if broker.is_external() {
        return;
    }
    let addr = tls_addr(&broker);
    // Nothing after the TCP connect; then half a ClientHello.
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
    wait_closed(&mut silent);
    wait_closed(&mut half);
    // TLS done, but no AMQP header: the same deadline ends it.
    let mut quiet = RawTls::connect(addr, &pki, None);
    assert!(quiet.read_frame().is_none(), "closed without a frame");
    // The plain listener applies the configured timeout too.
    let mut plain = TcpStream::connect(broker.addr()).unwrap();
    wait_closed(&mut plain);
    // And a prompt client still gets in.
    let mut ok = RawTls::connect(addr, &pki, None);
    assert_eq!(ok.mechanisms(), "PLAIN AMQPLAIN");
}

/// Issue 13: the management API over HTTPS with the AMQPS certificate, beside plain HTTP.
#[test]
fn management_api_over_https() {
    let pki = Pki::new();
    let broker = tls_broker_with(&pki, false, false, |c| {
        c.management = Some("127.0.0.1:0".parse().unwrap());
        c.management_tls = Some("127.0.0.1:0".parse().unwrap());
    });
    if broker.is_external() {
        return;
    }
    let https = broker.handle().management_tls_addr().expect("HTTPS listener");
    let mut raw = RawTls::connect(https, &pki, None);
    raw.send(b"GET /api/overview HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nconnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = raw.s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let overview: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let listeners: Vec<(String, u64)> = overview["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["protocol"].as_str().unwrap().to_string(), l["port"].as_u64().unwrap()))
        .collect();
    assert!(listeners.contains(&("https".to_string(), u64::from(https.port()))), "{listeners:?}");
    assert!(broker.handle().management_addr().is_some(), "plain HTTP stays on beside HTTPS");
    // Plain HTTP on the HTTPS port is refused by the handshake, nothing else.
    let mut plain = TcpStream::connect(https).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let _ = plain.write_all(b"GET /api/overview HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
}
