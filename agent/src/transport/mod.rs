//! The connection to the peer node: QUIC (quinn) with mutual TLS (rustls, ring only)
//! where each side accepts exactly one pinned certificate, and an ordered stream of
//! length-prefixed [`Frame`](agent_common::wire::Frame)s on top.
//!
//! ```text
//!   keygen ──> <node>.crt + <node>.key        peer's .crt or "sha256:…" ──> PeerPin
//!                      │                                       │
//!                      └──── Identity ──┐   ┌──────────────────┘
//!                                       ▼   ▼
//!                       Endpoint::bind(listen, identity, pin, timing)
//!                       ├─ connect(peer) ─┐
//!                       └─ accept() ──────┴─> PeerConn ─> FrameSender + FrameReceiver
//! ```
//!
//! One endpoint both listens and connects, so either node may dial the other. There is
//! no plaintext mode and no certificate authority: the certificate the peer shows must
//! be the pinned one, and it must prove it holds the key in the TLS handshake.
//!
//! - `identity`: key generation, fingerprints, loading the local identity and the pin.
//! - `tls`: the rustls configurations and the pin verifiers.
//! - `endpoint`: the quinn endpoint and connections.
//! - `framed`: frames over one bidirectional stream.

mod endpoint;
mod error;
mod framed;
mod identity;
mod tls;

pub use endpoint::{Endpoint, PeerConn, PeerLink, Timing};
pub use error::TransportError;
pub use framed::{FrameReceiver, FrameSender};
pub use identity::{Identity, KeyPaths, PeerPin, fingerprint, keygen};

#[cfg(test)]
mod tests;
