//! Loopback tests of the whole transport, with real endpoints and real handshakes:
//! the shared helpers here, who is let in (and who is not) in `auth`, and frames, both
//! well-formed and hostile, and connection liveness in `stream`.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::wire::{
    self, ALPN, Ack, Frame, Generations, Hello, MAX_CHUNK_BYTES, MAX_FRAME_BYTES, Record,
    WireError, WireOp,
};
use quinn::crypto::rustls::QuicClientConfig;
use tempfile::TempDir;

use super::*;

/// A node's key pair on disk, and how the other node pins it.
struct TestNode {
    _dir: TempDir,
    identity: Identity,
    pin: PeerPin,
}

fn node(name: &str) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = keygen(dir.path(), name, false).expect("keygen");
    let identity = Identity::load(&paths.cert, &paths.key).expect("load identity");
    let pin = PeerPin::from_cert_file(&paths.cert).expect("pin");
    TestNode {
        _dir: dir,
        identity,
        pin,
    }
}

/// Generous, so that a loaded machine running a debug build is not taken for a dead
/// peer; the test of the timeout itself uses [`FAST`].
const TIMING: Timing = Timing {
    keep_alive: Duration::from_millis(300),
    idle_timeout: Duration::from_secs(5),
};

const FAST: Timing = Timing {
    keep_alive: Duration::from_millis(200),
    idle_timeout: Duration::from_millis(1500),
};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn bind(node: &TestNode, peer: &PeerPin) -> Endpoint {
    bind_timed(node, peer, TIMING)
}

fn bind_timed(node: &TestNode, peer: &PeerPin, timing: Timing) -> Endpoint {
    Endpoint::bind(loopback(), &node.identity, peer, timing).expect("bind")
}

fn addr(endpoint: &Endpoint) -> SocketAddr {
    endpoint.local_addr().expect("local address")
}

/// Every test step is bounded, so that a hang is a failure rather than a stuck run.
async fn within<T>(step: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), step)
        .await
        .expect("step timed out")
}

fn hello(node: &str) -> Frame {
    Frame::Hello(Hello {
        version: wire::PROTOCOL_VERSION,
        node: node.to_owned(),
        dirs: vec!["data".to_owned()],
        generations: Generations {
            current: 7,
            history: vec![3, 1],
        },
        primary: node == "a",
        unsure: false,
    })
}

fn write_record(seq: u64, len: usize) -> Frame {
    Frame::Record(Record {
        seq,
        dir: 0,
        path: b"db/table.dat".to_vec(),
        op: WireOp::Write {
            offset: seq * len as u64,
            // Varied bytes, so that a misplaced or reordered chunk cannot compare equal.
            data: (0..len)
                .map(|i| (i.wrapping_mul(31) as u64 + seq) as u8)
                .collect(),
        },
    })
}

/// Connects `client` to `server`, sends the first frame and accepts on the server.
async fn pair(client: &Endpoint, server: &Endpoint, first: &Frame) -> (PeerConn, PeerConn) {
    let target = addr(server);
    within(async {
        tokio::join!(
            async {
                let mut conn = client.connect(target).await.expect("connect");
                conn.sender().send(first).await.expect("send first frame");
                conn
            },
            async {
                server
                    .accept()
                    .await
                    .expect("endpoint open")
                    .expect("accept")
            },
        )
    })
    .await
}

/// What a client sees of a refused connection: an error from `connect`, or (when the
/// server refuses only after the client's side of the handshake is done) from `recv`.
async fn client_refused(client: &Endpoint, server: SocketAddr) -> TransportError {
    match client.connect(server).await {
        Err(error) => error,
        Ok(mut conn) => {
            // The send may still succeed into a buffer; the read must fail.
            let _ = conn.sender().send(&hello("x")).await;
            conn.receiver()
                .recv()
                .await
                .expect_err("a refused connection must not deliver frames")
        }
    }
}

mod auth;
mod stream;
