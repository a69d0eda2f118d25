//! The validated configuration: typed values only, so code that holds a
//! [`Config`] never re-checks addresses, paths or durations.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

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
    /// How to start, stop and check the protected application (`application`), if any.
    pub application: Option<Application>,
    /// The virtual IP clients use (`vip`), if any.
    pub vip: Option<Vip>,
    /// How the pair decides who runs the application (`failover`).
    pub failover: Failover,
    /// Where Prometheus metrics are served (`metrics`); `None`: not served.
    pub metrics: Option<Metrics>,
    /// The web console (`console`); `None`: not served.
    pub console: Option<Console>,
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

/// Heartbeat timing and networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often a heartbeat is sent.
    pub interval: Duration,
    /// How long without one before the peer is considered gone (> 3 × interval).
    pub timeout: Duration,
    /// The networks heartbeats travel on (`heartbeat.networks`), at least one. When
    /// not given: one network named `replication` from `listen`'s address to
    /// `peer.address`'s, both on the replication port + 1.
    pub networks: Vec<HeartbeatNetwork>,
    /// A file holding the shared heartbeat secret (`heartbeat.secret_file`); when
    /// absent the key is derived from both nodes' certificate fingerprints.
    pub secret_file: Option<PathBuf>,
    /// The agent's nice value (`heartbeat.nice`, default -10), so that its
    /// heartbeats go out and are heard on time on a saturated machine. The
    /// application's commands run at the nice value the agent started with.
    pub nice: i32,
}

/// One heartbeat network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatNetwork {
    /// Its name, unique in the file and the same on both nodes.
    pub name: String,
    /// Our UDP address on it (a concrete address, not 0.0.0.0).
    pub local: SocketAddr,
    /// The peer's UDP address on it (same address family as `local`).
    pub peer: SocketAddr,
}

/// The virtual IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The address (`vip.address`, written `IP/PREFIX`).
    pub address: IpAddr,
    /// Its prefix length (at most 32 for IPv4, 128 for IPv6).
    pub prefix_len: u8,
    /// The interface it is added to (`vip.interface`).
    pub interface: String,
    /// Gratuitous ARPs / neighbour advertisements sent on takeover (`vip.announce_count`, default 5).
    pub announce_count: u32,
    /// Time between two of them (`vip.announce_interval`, default 200ms).
    pub announce_interval: Duration,
    /// After the burst, one more every this long (`vip.refresh`, default none).
    pub refresh: Option<Duration>,
    /// How long the probe before a takeover listens for a holder (`vip.probe_wait`, default 200ms).
    pub probe_wait: Duration,
}

/// Failover policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    /// The node that runs the application when both could, and takes it back once
    /// it is in sync again (`failover.preferred`: this node's or the peer's name).
    /// `None`: the survivor stays primary.
    pub preferred: Option<String>,
    /// How long a starting node waits to hear its peer before deciding alone
    /// (`failover.boot_wait`, default 2s).
    pub boot_wait: Duration,
    /// Addresses on the VIP's network probed (by ARP) to tell isolation from a
    /// peer failure (`failover.witnesses`); requires `vip`.
    pub witnesses: Vec<IpAddr>,
}

/// The web console (`console`; docs/console.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Console {
    /// The TCP address the console is served on (`console.listen`, default
    /// [`DEFAULT_CONSOLE_LISTEN`]).
    pub listen: SocketAddr,
    /// An argon2 or scrypt PHC string of the password (`console.password_hash`).
    pub password_hash: Option<String>,
    /// A file holding a bearer token (`console.token_file`); at least one of the
    /// two credentials is set.
    pub token_file: Option<PathBuf>,
    /// Lets the page drive itself from its URL fragment, for the browser test
    /// (`console.test_hooks`, default false).
    pub test_hooks: bool,
}

/// Loopback: the console is reached through an SSH tunnel or a reverse proxy
/// unless the administrator chooses a management network.
pub const DEFAULT_CONSOLE_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7480);

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// The TCP address `/metrics` is served on (`metrics.listen`).
    pub listen: SocketAddr,
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
    /// Local restarts allowed within `restart_window` before failing over
    /// (`application.max_restarts`, default 3).
    pub max_restarts: u32,
    /// (`application.restart_window`, default 1h).
    pub restart_window: Duration,
    /// Health checks (`application.checkers`): of the running application, and of
    /// this node's ability to run it (`scope: node`).
    pub checkers: Vec<Checker>,
}

/// One health check of the application or of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checker {
    /// Its name, unique among the checkers (`name`).
    pub name: String,
    /// When it runs and what its failure means (`scope`, default `application`).
    pub scope: CheckerScope,
    /// What it checks: exactly one of `tcp`, `command`, `process`, `docker`.
    pub kind: CheckerKind,
    /// Time between two checks (`interval`, default 1s).
    pub interval: Duration,
    /// How long one check may take (`timeout`, default 1s).
    pub timeout: Duration,
    /// Consecutive failures before it counts as failed (`failures`, default 3).
    pub failures: u32,
    /// What a failure does (`action`: `restart` (default for the application's
    /// checkers) or `failover` (the only action of a node checker)).
    pub action: CheckerAction,
}

/// What a checker watches, which decides when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckerScope {
    /// The running application: checked only while it runs on this node.
    Application,
    /// What this node needs to run the application (a mount, a link, a daemon):
    /// checked from start-up in every state; while it fails the node does not
    /// take the application over and hands it to a healthy peer.
    Node,
}

/// What a checker checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckerKind {
    /// A TCP connection to this address succeeds (`tcp: IP:PORT`).
    Tcp(SocketAddr),
    /// This shell command exits with 0 (`command: ...`).
    Command(String),
    /// A process with this exact name (comm) is alive (`process: NAME`).
    Process(String),
    /// A Docker container runs and, when it has a health check, is healthy
    /// (`docker: NAME_OR_ID`, `docker_socket: PATH`).
    #[cfg(feature = "docker")]
    Docker {
        /// The container's name or (full or abbreviated) id: validated as Docker
        /// names are, so it needs no escaping in the API's URL.
        container: String,
        /// The Docker Engine API's unix socket (default [`DEFAULT_DOCKER_SOCKET`]).
        socket: PathBuf,
    },
}

/// What a checker's failure does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckerAction {
    /// Restart locally up to `max_restarts`, then fail over.
    Restart,
    /// Fail over at once.
    Failover,
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

// === Docker container names ===

/// Docker's rule for container names, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, which ids
/// (hex) also follow; such a name is one URL path segment as it is, so the
/// `docker` checker's request needs no escaping.
#[cfg(feature = "docker")]
#[must_use]
pub fn is_container_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

// === defaults ===

/// `heartbeat.interval` when not given.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// `heartbeat.timeout` when not given.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default of `heartbeat.nice`: well ahead of ordinary work, not real time.
pub const DEFAULT_NICE: i32 = -10;
/// `resync.block_size` when not given.
pub const DEFAULT_BLOCK_SIZE: u32 = 65_536;
/// `application.timeout` when not given.
pub const DEFAULT_APPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// `application.max_restarts` when not given.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// `application.restart_window` when not given.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(3600);
/// `vip.announce_count` when not given (as Pacemaker's IPaddr2).
pub const DEFAULT_ANNOUNCE_COUNT: u32 = 5;
/// `vip.announce_interval` when not given.
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_millis(200);
/// `vip.probe_wait` when not given.
pub const DEFAULT_PROBE_WAIT: Duration = Duration::from_millis(200);
/// `failover.boot_wait` when not given.
pub const DEFAULT_BOOT_WAIT: Duration = Duration::from_secs(2);
/// Checker `interval` and `timeout` when not given.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Checker `failures` when not given.
pub const DEFAULT_CHECK_FAILURES: u32 = 3;
/// Checker `docker_socket` when not given: where dockerd listens by default.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The name of the default heartbeat network.
pub const DEFAULT_HEARTBEAT_NETWORK: &str = "replication";
/// The file name of the control socket under `state_dir` when not given.
pub const DEFAULT_CONTROL_SOCKET_NAME: &str = "control.sock";
