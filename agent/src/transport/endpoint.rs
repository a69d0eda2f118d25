//! The quinn endpoint: one UDP socket that both accepts the peer's connections and
//! opens connections to it, and the connection it yields, [`PeerConn`], with its one
//! ordered bidirectional stream of frames.
//!
//! The connecting side opens the stream; QUIC only shows a stream to the other side
//! when its first bytes arrive, so **the connecting side must send the first frame**
//! (the `Hello`) before the accepting side's [`Endpoint::accept`] can return it.
//! Handshakes in progress are kept inside the endpoint, so one slow or hostile
//! handshake never holds up the next, and a failed one is an `Err` from `accept`,
//! after which the endpoint goes on serving.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use agent_common::wire::ALPN;
use futures::{StreamExt, stream::FuturesUnordered};
use quinn::{
    IdleTimeout, TransportConfig, VarInt,
    crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig},
};
use tokio::sync::Mutex;

use super::{FrameReceiver, FrameSender, Identity, PeerPin, TransportError, tls};

/// How quickly a silent peer is declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often each side sends a keep-alive when it has nothing else to send; must be
    /// well below `idle_timeout` (a third or less, so that a lost packet or two is not
    /// taken for a dead peer).
    pub keep_alive: Duration,
    /// A connection that hears nothing for this long is closed as timed out; this is
    /// the bound on noticing a dead peer, and also on a handshake that stalls.
    pub idle_timeout: Duration,
}

/// A QUIC endpoint that accepts connections from the pinned peer and connects to it.
pub struct Endpoint {
    inner: quinn::Endpoint,
    timing: Timing,
    /// The ALPN a connection must have negotiated; always [`ALPN`] outside tests.
    alpn: Vec<u8>,
    /// Incoming connections whose handshake (and first stream) is not finished yet.
    pending: Mutex<FuturesUnordered<PendingAccept>>,
}

type PendingAccept = Pin<Box<dyn Future<Output = Result<PeerConn, TransportError>> + Send>>;

impl Endpoint {
    /// Binds the endpoint's UDP socket to `listen` (port 0 picks one). Must be called
    /// inside a tokio runtime, which drives the endpoint from then on.
    pub fn bind(
        listen: SocketAddr,
        identity: &Identity,
        pin: &PeerPin,
        timing: Timing,
    ) -> Result<Endpoint, TransportError> {
        Endpoint::bind_with_alpn(listen, identity, pin, timing, ALPN)
    }

    /// [`Endpoint::bind`] with another ALPN, so that tests can play a foreign peer.
    pub(super) fn bind_with_alpn(
        listen: SocketAddr,
        identity: &Identity,
        pin: &PeerPin,
        timing: Timing,
        alpn: &[u8],
    ) -> Result<Endpoint, TransportError> {
        let transport = Arc::new(transport_config(timing)?);

        let server_tls = tls::server_config(identity, pin, alpn).map_err(TransportError::Tls)?;
        let server_tls = QuicServerConfig::try_from(server_tls)
            .map_err(|e| TransportError::Tls(rustls::Error::General(e.to_string())))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(transport.clone());
        // A peer that changes address must reconnect (and so handshake again) rather
        // than carry the connection along; it also lets a peer that vanished and
        // came back elsewhere be noticed by the idle timeout.
        server.migration(false);

        let client_tls = tls::client_config(identity, pin, alpn).map_err(TransportError::Tls)?;
        let client_tls = QuicClientConfig::try_from(client_tls)
            .map_err(|e| TransportError::Tls(rustls::Error::General(e.to_string())))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);

        let mut inner =
            quinn::Endpoint::server(server, listen).map_err(|error| TransportError::Bind {
                addr: listen,
                error,
            })?;
        inner.set_default_client_config(client);
        Ok(Endpoint {
            inner,
            timing,
            alpn: alpn.to_vec(),
            pending: Mutex::new(FuturesUnordered::new()),
        })
    }

    /// The address the endpoint listens on (with the port picked when 0 was asked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Connects to the peer and opens the frame stream. Send the first frame at once:
    /// the peer's `accept` only returns the connection once it arrives.
    pub async fn connect(&self, peer: SocketAddr) -> Result<PeerConn, TransportError> {
        let connecting = self
            .inner
            .connect(peer, SERVER_NAME)
            .map_err(|error| TransportError::Connect { peer, error })?;
        let conn = connecting
            .await
            .map_err(|error| TransportError::Connection { peer, error })?;
        check_alpn(&conn, &self.alpn)?;
        let (send, recv) = conn.open_bi().await.map_err(|error| {
            conn.close(CLOSE_PROTOCOL, b"no stream");
            TransportError::NoStream { peer, error }
        })?;
        Ok(PeerConn::new(conn, send, recv))
    }

    /// The next connection from the peer, once its handshake is done and its frame
    /// stream has arrived; `Err` for one that failed (a wrong certificate, a wrong
    /// ALPN, no stream in time), `None` once the endpoint is closed. Cancel-safe:
    /// handshakes in progress stay with the endpoint.
    pub async fn accept(&self) -> Option<Result<PeerConn, TransportError>> {
        let mut pending = self.pending.lock().await;
        loop {
            tokio::select! {
                // Finished handshakes first, so that a flood of new ones cannot starve them.
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => return Some(done),
                incoming = self.inner.accept() => {
                    let incoming = incoming?;
                    if pending.len() >= MAX_PENDING_HANDSHAKES {
                        incoming.refuse();
                        continue;
                    }
                    pending.push(Box::pin(finish_accept(
                        incoming,
                        self.alpn.clone(),
                        self.timing.idle_timeout,
                    )));
                }
            }
        }
    }

    /// Closes every connection at once and stops accepting; `accept` then returns None.
    pub fn close(&self, reason: &str) {
        self.inner.close(CLOSE_NORMAL, reason.as_bytes());
    }

    /// Waits until every connection has finished closing (bounded by its idle timeout),
    /// so that the peer is told before the process exits.
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }

    /// The quinn endpoint, for tests that must misbehave below the frame layer.
    #[cfg(test)]
    pub(super) fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr().ok())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// A connection to the peer with its frame stream.
#[derive(Debug)]
pub struct PeerConn {
    link: PeerLink,
    sender: FrameSender,
    receiver: FrameReceiver,
}

impl PeerConn {
    fn new(conn: quinn::Connection, send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        PeerConn {
            link: PeerLink { conn },
            sender: FrameSender::new(send),
            receiver: FrameReceiver::new(recv),
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.link.remote_address()
    }

    /// The current estimate of the round-trip time.
    pub fn rtt(&self) -> Duration {
        self.link.rtt()
    }

    /// Closes the connection at once; see [`PeerLink::close`].
    pub fn close(&self, reason: &str) {
        self.link.close(reason);
    }

    /// The connection itself, shared with any task that needs it.
    pub fn link(&self) -> &PeerLink {
        &self.link
    }

    pub fn sender(&mut self) -> &mut FrameSender {
        &mut self.sender
    }

    pub fn receiver(&mut self) -> &mut FrameReceiver {
        &mut self.receiver
    }

    /// Splits the connection so that sending and receiving can live in different tasks.
    pub fn into_parts(self) -> (PeerLink, FrameSender, FrameReceiver) {
        (self.link, self.sender, self.receiver)
    }
}

/// A handle on the connection (cheap to clone): its address, round-trip time and end.
#[derive(Clone, Debug)]
pub struct PeerLink {
    conn: quinn::Connection,
}

impl PeerLink {
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// Closes the connection at once, with `reason` for the peer's log. Frames not yet
    /// delivered are dropped: to end cleanly, [`FrameSender::finish`] and wait for the
    /// peer to close, or close after the peer's last acknowledgement.
    pub fn close(&self, reason: &str) {
        self.conn.close(CLOSE_NORMAL, reason.as_bytes());
    }

    /// Waits until the connection is over, and says why (timed out, closed by the peer...).
    pub async fn closed(&self) -> TransportError {
        TransportError::Connection {
            peer: self.conn.remote_address(),
            error: self.conn.closed().await,
        }
    }

    /// The quinn connection, for statistics.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }
}

/// The name a client asks for. The pin verifier ignores names, but TLS needs one.
const SERVER_NAME: &str = "tandem-peer";

/// Application close codes.
const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(1);

/// Handshakes in progress beyond this are refused at once: only one peer exists, and
/// it needs one connection at a time.
const MAX_PENDING_HANDSHAKES: usize = 16;

/// Flow-control windows, large enough that one ordered stream fills a fast link (a
/// 16 MiB window sustains about 1.3 GB/s at 100 µs and 130 MB/s at 1 ms round trip).
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
const SEND_WINDOW: u64 = 32 << 20;

fn transport_config(timing: Timing) -> Result<TransportConfig, TransportError> {
    if timing.keep_alive.is_zero() {
        return Err(TransportError::Timing(
            "the keep-alive interval must not be zero",
        ));
    }
    if timing.keep_alive >= timing.idle_timeout {
        return Err(TransportError::Timing(
            "the keep-alive interval must be shorter than the idle timeout",
        ));
    }
    let idle = IdleTimeout::try_from(timing.idle_timeout)
        .map_err(|_| TransportError::Timing("the idle timeout is too long"))?;
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(timing.keep_alive))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW)
        // One frame stream per connection; the peer may open no other.
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    Ok(config)
}

/// Completes an incoming connection: the handshake, then the peer's stream.
async fn finish_accept(
    incoming: quinn::Incoming,
    alpn: Vec<u8>,
    stream_timeout: Duration,
) -> Result<PeerConn, TransportError> {
    let peer = incoming.remote_address();
    let conn = incoming
        .await
        .map_err(|error| TransportError::Connection { peer, error })?;
    check_alpn(&conn, &alpn)?;
    match tokio::time::timeout(stream_timeout, conn.accept_bi()).await {
        Ok(Ok((send, recv))) => Ok(PeerConn::new(conn, send, recv)),
        Ok(Err(error)) => Err(TransportError::NoStream { peer, error }),
        Err(_elapsed) => {
            conn.close(CLOSE_PROTOCOL, b"no stream");
            Err(TransportError::StreamTimeout { peer })
        }
    }
}

/// rustls already refuses a handshake without a common ALPN in QUIC; this check makes
/// sure no configuration change can let a foreign protocol through.
fn check_alpn(conn: &quinn::Connection, alpn: &[u8]) -> Result<(), TransportError> {
    let negotiated = conn
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if negotiated.as_deref() == Some(alpn) {
        Ok(())
    } else {
        conn.close(CLOSE_PROTOCOL, b"wrong protocol");
        Err(TransportError::WrongProtocol {
            peer: conn.remote_address(),
        })
    }
}
