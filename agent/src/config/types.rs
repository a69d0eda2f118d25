//! The validated configuration: typed values only, so code that holds a
//! [`Config`] never re-checks addresses, paths or durations.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// A validated configuration (see docs/configuration.md for every key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub origin: PathBuf,
    /// This node's name (`node`).
    pub node: String,
    /// The replication endpoint this node listens on (`listen`).
    pub listen: SocketAddr,
    /// This node's certificate and key (`identity`).
    pub identity: Identity,
    /// The other node (`peer`).
    pub peer: Peer,
    /// Where the agent keeps its own state (`state_dir`).
    pub state_dir: PathBuf,
    /// The local control socket (`control_socket`, default `<state_dir>/control.sock`).
    pub control_socket: PathBuf,
    /// The role this node starts in (`role`).
    pub role: Role,
    /// The replicated directories, in file order (`replicated`).
    pub replicated: Vec<Replicated>,
    /// Liveness probing between the nodes (`heartbeat`).
    pub heartbeat: Heartbeat,
    /// Full resynchronisation settings (`resync`).
    pub resync: Resync,
    /// How to start and stop the protected application (`application`), if any.
    pub application: Option<Application>,
}

/// This node's TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// PEM certificate, readable.
    pub certificate: PathBuf,
    /// PEM private key, readable.
    pub key: PathBuf,
}

/// The peer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node name (differs from ours).
    pub name: String,
    /// Its replication endpoint.
    pub address: SocketAddr,
    /// How its certificate is recognised.
    pub pin: PeerPinSpec,
}

/// How the peer's certificate is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPinSpec {
    /// The peer's exact certificate, as a PEM file.
    Certificate(PathBuf),
    /// The SHA-256 of the peer certificate's DER encoding: 64 lowercase hex digits
    /// (the `sha256:` prefix of the file is removed).
    Fingerprint(String),
}

/// The role a node starts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Decided with the peer at start.
    #[default]
    Auto,
    /// Start as primary.
    Primary,
    /// Start as secondary.
    Secondary,
}

/// One replicated directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replicated {
    /// Its name, unique in the file; both nodes use it to match directories.
    pub name: String,
    /// Its absolute, normalised path.
    pub path: PathBuf,
}

/// Heartbeat timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often a heartbeat is sent.
    pub interval: Duration,
    /// How long without one before the peer is considered gone (> 3 × interval).
    pub timeout: Duration,
}

/// Resynchronisation settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resync {
    /// Block size for comparing files, a power of two in [4 KiB, 16 MiB].
    pub block_size: u32,
}

/// The protected application's commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    /// Shell command that starts it.
    pub start: String,
    /// Shell command that stops it.
    pub stop: String,
    /// How long either command may take.
    pub timeout: Duration,
}

// === impl PeerPinSpec ===

impl PeerPinSpec {
    /// The fingerprint as bytes, for a `Fingerprint` pin.
    #[must_use]
    pub fn sha256(&self) -> Option<[u8; 32]> {
        let Self::Fingerprint(hex) = self else {
            return None;
        };
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2)?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(out)
    }
}

// === impl Role ===

impl Role {
    /// The spelling used in the file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

// === defaults ===

/// `heartbeat.interval` when not given.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// `heartbeat.timeout` when not given.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// `resync.block_size` when not given.
pub const DEFAULT_BLOCK_SIZE: u32 = 65_536;
/// `application.timeout` when not given.
pub const DEFAULT_APPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The file name of the control socket under `state_dir` when not given.
pub const DEFAULT_CONTROL_SOCKET_NAME: &str = "control.sock";
