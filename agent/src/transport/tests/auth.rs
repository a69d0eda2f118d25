//! Who is let in: pinned certificates and fingerprints are, and an unpinned client, a
//! client without a certificate, a certificate without its key, a wrong server and a
//! foreign ALPN are not; a refused handshake never stops the endpoint.

use super::*;

#[tokio::test]
async fn fingerprint_pins_work() {
    let (a, b) = (node("a"), node("b"));
    let pin_a = PeerPin::parse_fingerprint(&a.identity.fingerprint()).expect("parse");
    let pin_b = PeerPin::parse_fingerprint(&b.identity.fingerprint()).expect("parse");
    let (ea, eb) = (bind(&a, &pin_b), bind(&b, &pin_a));
    let (_client, mut server) = pair(&ea, &eb, &hello("a")).await;
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(hello("a"))
    );
}

#[tokio::test]
async fn unpinned_client_is_refused_and_the_endpoint_keeps_serving() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let eb = bind(&b, &a.pin);
    // c trusts b, but b pins a, not c.
    let ec = bind(&c, &b.pin);
    let (client_err, accepted) =
        within(async { tokio::join!(client_refused(&ec, addr(&eb)), eb.accept()) }).await;
    let server_err = accepted
        .expect("endpoint open")
        .expect_err("c must be refused");
    assert!(
        matches!(server_err, TransportError::Connection { .. }),
        "{server_err:?}"
    );
    assert!(
        matches!(
            client_err,
            TransportError::Connection { .. } | TransportError::Read(_)
        ),
        "{client_err:?}"
    );

    // A client with no certificate at all is refused too (mandatory client auth).
    let no_cert = raw_client(&b.pin, |builder| builder.with_no_client_auth());
    let anonymous = async {
        let connecting = ec
            .quinn()
            .connect_with(no_cert, addr(&eb), "tandem-peer")
            .expect("start");
        if let Ok(conn) = connecting.await {
            conn.closed().await;
        }
    };
    let ((), accepted) = within(async { tokio::join!(anonymous, eb.accept()) }).await;
    let err = accepted
        .expect("endpoint open")
        .expect_err("no certificate");
    assert!(matches!(err, TransportError::Connection { .. }), "{err:?}");

    // The endpoint still serves the pinned peer.
    let ea = bind(&a, &b.pin);
    let (_client, mut server) = pair(&ea, &eb, &hello("a")).await;
    assert_eq!(
        within(server.receiver().recv()).await.expect("recv"),
        Some(hello("a"))
    );
}

/// A quinn client configuration built by hand from our pin verifier, for clients that
/// `Endpoint` would never build.
fn raw_client(
    server_pin: &PeerPin,
    auth: impl FnOnce(
        rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    ) -> rustls::ClientConfig,
) -> quinn::ClientConfig {
    let provider = tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::PinVerifier::new(
            server_pin.clone(),
            provider,
        )));
    let mut config = auth(builder);
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(config).expect("quic config"),
    ))
}

/// Always offers one certificate and key, even when they do not belong together.
#[derive(Debug)]
struct Impostor(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Impostor {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_pinned_certificate_without_its_key_is_refused() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let eb = bind(&b, &a.pin);
    let ec = bind(&c, &b.pin);
    // c shows a's (public) certificate but can only sign with its own key: the
    // handshake signature check, not the certificate comparison, must stop it.
    let key = tls::provider()
        .key_provider
        .load_private_key(c.identity.key())
        .expect("load key");
    let stolen = rustls::sign::CertifiedKey::new(vec![a.identity.cert.clone()], key);
    let impostor = raw_client(&b.pin, |builder| {
        builder.with_client_cert_resolver(Arc::new(Impostor(Arc::new(stolen))))
    });
    let attempt = async {
        let connecting = ec
            .quinn()
            .connect_with(impostor, addr(&eb), "tandem-peer")
            .expect("start");
        if let Ok(conn) = connecting.await {
            conn.closed().await;
        }
    };
    let ((), accepted) = within(async { tokio::join!(attempt, eb.accept()) }).await;
    let err = accepted
        .expect("endpoint open")
        .expect_err("impostor accepted");
    let TransportError::Connection { error, .. } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert!(error.to_string().contains("BadSignature"), "{error}");
}

#[tokio::test]
async fn server_with_the_wrong_certificate_is_refused_by_the_client() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let ea = bind(&a, &b.pin);
    // c accepts a, but a expects b: a must refuse c.
    let ec = bind(&c, &a.pin);
    let (client, accepted) =
        within(async { tokio::join!(ea.connect(addr(&ec)), ec.accept()) }).await;
    let client_err = client.expect_err("a must refuse c's certificate");
    assert!(
        matches!(client_err, TransportError::Connection { .. }),
        "{client_err:?}"
    );
    assert!(accepted.expect("endpoint open").is_err());
}

#[tokio::test]
async fn a_peer_without_the_tandem_alpn_is_refused() {
    let (a, b) = (node("a"), node("b"));
    let eb = bind(&b, &a.pin);
    let foreign = Endpoint::bind_with_alpn(loopback(), &a.identity, &b.pin, TIMING, b"other/1")
        .expect("bind");
    let (client, accepted) =
        within(async { tokio::join!(foreign.connect(addr(&eb)), eb.accept()) }).await;
    assert!(client.is_err(), "the foreign client connected");
    assert!(
        accepted.expect("endpoint open").is_err(),
        "the server accepted"
    );

    // And a foreign server is refused by a Tandem client.
    let foreign_server =
        Endpoint::bind_with_alpn(loopback(), &b.identity, &a.pin, TIMING, b"other/1")
            .expect("bind");
    let ea = bind(&a, &b.pin);
    let (client, accepted) =
        within(async { tokio::join!(ea.connect(addr(&foreign_server)), foreign_server.accept()) })
            .await;
    assert!(client.is_err(), "connected to a foreign server");
    assert!(accepted.expect("endpoint open").is_err());
}
