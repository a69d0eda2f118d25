//! Everything that can go wrong in the peer transport, as one typed enum: key and
//! certificate files, TLS configuration, the QUIC connection and the frame stream.
//!
//! Messages are one line and name the file or the peer involved; the cause, where
//! there is one, is the error's source, so `{e:#}` prints the whole chain.

use std::{io, net::SocketAddr, path::PathBuf};

use agent_common::wire::WireError;

/// Why the transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate file holds no usable certificate.
    #[error("{path}: no PEM certificate found ({reason})")]
    BadCertificate { path: PathBuf, reason: String },
    /// A peer fingerprint is not `sha256:` followed by 64 hexadecimal digits.
    #[error("bad peer fingerprint {input:?}: {reason}")]
    BadFingerprint { input: String, reason: &'static str },
    /// A key file holds no usable private key.
    #[error("{path}: no PEM private key found ({reason})")]
    BadKey { path: PathBuf, reason: String },
    /// A node name that cannot name files and a certificate.
    #[error("bad node name {node:?}: use letters, digits, '-' and '.' as in a host name")]
    BadNodeName { node: String },
    /// The QUIC socket could not be bound.
    #[error("cannot bind the peer endpoint to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        error: io::Error,
    },
    /// Outgoing connections cannot even be started (for example a bad address).
    #[error("cannot connect to {peer}")]
    Connect {
        peer: SocketAddr,
        #[source]
        error: quinn::ConnectError,
    },
    /// The QUIC handshake failed (a wrong pin, a wrong ALPN) or the connection was lost.
    #[error("peer {peer}: connection failed")]
    Connection {
        peer: SocketAddr,
        #[source]
        error: quinn::ConnectionError,
    },
    /// A key or certificate file could not be read or written.
    #[error("file {path}")]
    File {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate a key and certificate")]
    Generate(#[source] rcgen::Error),
    /// A key file exists and overwriting it was not asked for.
    #[error("{path} already exists; refusing to overwrite a private key")]
    KeyExists { path: PathBuf },
    /// The connection was set up but the stream that carries frames failed.
    #[error("peer {peer}: no frame stream")]
    NoStream {
        peer: SocketAddr,
        #[source]
        error: quinn::ConnectionError,
    },
    /// Reading a frame failed below the framing (the connection was lost or reset).
    #[error("cannot read from the peer")]
    Read(#[source] quinn::ReadError),
    /// The peer opened no frame stream within the idle timeout after the handshake.
    #[error("peer {peer} opened no frame stream in time")]
    StreamTimeout { peer: SocketAddr },
    /// The timings cannot be used (for example a keep-alive not below the idle timeout).
    #[error("bad peer timing: {0}")]
    Timing(&'static str),
    /// The TLS configuration could not be built from the identity.
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    /// The stream ended in the middle of a frame.
    #[error("the peer's stream ended inside a frame ({got} of {wanted} bytes)")]
    Truncated { got: usize, wanted: usize },
    /// A frame could not be encoded, or bytes from the peer are not a frame.
    #[error("bad frame")]
    Wire(#[source] WireError),
    /// Writing a frame failed (the connection was lost or the peer stopped reading).
    #[error("cannot write to the peer")]
    Write(#[source] quinn::WriteError),
    /// The handshake finished without the peer protocol: never accept such a peer.
    #[error("peer {peer} does not speak the Tandem protocol (ALPN)")]
    WrongProtocol { peer: SocketAddr },
}
