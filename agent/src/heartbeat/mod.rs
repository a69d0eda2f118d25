//! Heartbeats: each node tells its peer, over UDP on one or more networks, that it is
//! alive and what state it is in, authenticated with a shared key and safe against
//! replay; the round-trip time of each network is measured on the way.
//!
//! ```text
//!   engine ──watch<Payload>──▶ Heartbeats ──mpsc<Received>──▶ engine
//!                               │ one task per network
//!                               ▼
//!            UDP local ◀──────▶ UDP peer   (every `interval`, and on change)
//! ```
//!
//! Every packet carries our node name, the network's name, our epoch (random per
//! start), a sequence number (per network, from 1), the engine's [`Payload`], and an
//! echo of the last packet we accepted from the peer with how long we held it. The
//! echo does two jobs: it measures the round-trip time without synchronised clocks,
//! and it proves a packet fresh (the rules are in `replay.rs`). A peer's packets are
//! delivered only once they echo one of ours sent within `window`, so a node that
//! cannot hear its peer delivers nothing from it, and a recording of an old run of
//! the peer is never delivered.
//!
//! Sockets are created by [`Heartbeats::start`] in the calling thread, so they live
//! in that thread's network namespace whatever thread later drives them.

mod link;
mod packet;
mod replay;
mod sent;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, io::Read, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::Instrument;

use self::link::{Counters, Identity, Link};
pub use self::{
    link::CounterSnapshot,
    packet::{KEY_LEN, Key, MAX_DATAGRAM, Payload, derive_key, fingerprint_secret},
};
use self::{replay::ReplayGuard, sent::SentLog};

/// One network heartbeats travel on.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct NetworkSpec {
    /// The network's name; both nodes must use the same one (it is authenticated).
    pub name: String,
    /// Our address on it (the socket binds here).
    pub local: SocketAddr,
    /// The peer's address on it; datagrams from anywhere else are refused.
    pub peer: SocketAddr,
}

/// What [`Heartbeats::start`] needs.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    /// At least one network.
    pub networks: Vec<NetworkSpec>,
    /// Time between two heartbeats on each network.
    pub interval: Duration,
    /// A peer's packet is delivered only if it echoes one of ours sent at most this
    /// long ago; at least twice `interval`.
    pub window: Duration,
    /// The shared key, from [`derive_key`].
    pub key: Key,
    /// Our node name.
    pub node: String,
    /// The peer's node name.
    pub peer_node: String,
}

/// One heartbeat accepted from the peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The network it came on.
    pub network: String,
    /// The peer's state.
    pub payload: Payload,
    /// The round-trip time it measured on its network.
    pub rtt: Option<Duration>,
    /// When it arrived.
    pub at: Instant,
    /// The peer's epoch (random per start of its agent).
    pub peer_epoch: u64,
    /// Its sequence number in that epoch and network.
    pub seq: u64,
    /// The first heartbeat accepted from this epoch on this network: the peer's agent
    /// (re)started, or this is first contact.
    pub new_epoch: bool,
}

/// Running heartbeat tasks; dropping this stops them.
#[derive(Debug)]
pub struct Heartbeats {
    epoch: u64,
    networks: Vec<Running>,
}

#[derive(Debug)]
struct Running {
    name: String,
    local: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

/// Why heartbeats could not start.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The socket of a network could not be bound.
    #[error("cannot bind heartbeat network {network} to {addr}: {source}")]
    Bind {
        network: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Two networks share a name.
    #[error("heartbeat network {0} is configured twice")]
    DuplicateNetwork(String),
    /// `interval` is zero.
    #[error("heartbeat interval must be positive")]
    IntervalZero,
    /// No network is configured.
    #[error("no heartbeat network configured")]
    NoNetwork,
    /// The epoch could not be drawn.
    #[error("cannot read random bytes for the heartbeat epoch: {0}")]
    Random(std::io::Error),
    /// `node` and `peer_node` are equal, which would let our own packets pass as
    /// the peer's if reflected.
    #[error("node and peer node names must differ")]
    SameNodeNames,
    /// `window` is shorter than twice `interval`.
    #[error("heartbeat window {window:?} must be at least twice the interval {interval:?}")]
    WindowTooShort {
        window: Duration,
        interval: Duration,
    },
}

// === impl HeartbeatConfig ===

impl HeartbeatConfig {
    /// The default interval (as issue 4 asks: 100 ms).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    /// The default freshness window.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

    fn validate(&self) -> Result<(), HeartbeatError> {
        if self.networks.is_empty() {
            return Err(HeartbeatError::NoNetwork);
        }
        for (i, n) in self.networks.iter().enumerate() {
            if self.networks[..i].iter().any(|m| m.name == n.name) {
                return Err(HeartbeatError::DuplicateNetwork(n.name.clone()));
            }
        }
        if self.interval.is_zero() {
            return Err(HeartbeatError::IntervalZero);
        }
        // The peer echoes our latest packet, sent up to one interval before its own
        // send, which may itself lag by one of its intervals.
        if self.window < self.interval * 2 {
            return Err(HeartbeatError::WindowTooShort {
                window: self.window,
                interval: self.interval,
            });
        }
        if self.node == self.peer_node {
            return Err(HeartbeatError::SameNodeNames);
        }
        Ok(())
    }
}

// === impl Heartbeats ===

impl Heartbeats {
    /// Binds one socket per network (in the calling thread's network namespace) and
    /// spawns its task on the current tokio runtime. `payload` is what we send; the
    /// receiver yields the peer's accepted heartbeats from all networks.
    pub fn start(
        config: HeartbeatConfig,
        payload: watch::Receiver<Payload>,
    ) -> Result<(Self, mpsc::Receiver<Received>), HeartbeatError> {
        config.validate()?;
        let epoch = random_u64().map_err(HeartbeatError::Random)?;
        let identity = Arc::new(Identity {
            key: config.key,
            node: config.node,
            peer_node: config.peer_node,
            epoch,
        });
        let (tx, rx) = mpsc::channel(RECEIVED_QUEUE);
        // Bind everything first, so that a failure spawns nothing.
        let mut sockets = Vec::with_capacity(config.networks.len());
        for spec in config.networks {
            let socket = bind(&spec).map_err(|source| HeartbeatError::Bind {
                network: spec.name.clone(),
                addr: spec.local,
                source,
            })?;
            sockets.push((spec, socket));
        }
        let mut networks = Vec::with_capacity(sockets.len());
        for (spec, socket) in sockets {
            let counters = Arc::new(Counters::default());
            let local = socket.local_addr().unwrap_or(spec.local);
            let span = tracing::info_span!("heartbeat", network = %spec.name);
            let link = Link {
                name: spec.name.clone(),
                peer: spec.peer,
                socket,
                identity: Arc::clone(&identity),
                counters: Arc::clone(&counters),
                out: tx.clone(),
                payload: payload.clone(),
                interval: config.interval,
                seq: 0,
                sent: SentLog::new(config.window),
                guard: ReplayGuard::default(),
                last_rx: None,
                answered_at: None,
            };
            let task = tokio::spawn(link.run().instrument(span));
            networks.push(Running {
                name: spec.name,
                local,
                counters,
                task,
            });
        }
        tracing::info!(epoch, networks = networks.len(), "Heartbeats started");
        Ok((Self { epoch, networks }, rx))
    }

    /// Our epoch for this start.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The counters of every network, by name.
    pub fn counters(&self) -> BTreeMap<String, CounterSnapshot> {
        self.networks
            .iter()
            .map(|n| (n.name.clone(), n.counters.snapshot()))
            .collect()
    }

    /// The address each network's socket is bound to (useful with port 0).
    pub fn local_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.networks
            .iter()
            .map(|n| (n.name.clone(), n.local))
            .collect()
    }

    /// Stops every task and waits until their sockets are closed.
    pub async fn stop(mut self) {
        for n in self.networks.drain(..) {
            n.task.abort();
            // The only error left is the cancellation we asked for.
            let _ = n.task.await;
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        for n in &self.networks {
            n.task.abort();
        }
    }
}

/// Binds a network's socket, marked as network control traffic (DSCP CS6, as VRRP
/// does) so that switches and qdiscs that honour it keep heartbeats ahead of bulk
/// replication traffic.
pub(crate) fn bind(spec: &NetworkSpec) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = std::net::UdpSocket::bind(spec.local)?;
    if spec.local.is_ipv4() {
        setsockopt(&socket, sockopt::Ipv4Tos, &TOS_NETWORK_CONTROL)?;
    } else {
        setsockopt(&socket, sockopt::Ipv6TClass, &TOS_NETWORK_CONTROL)?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

fn random_u64() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u64::from_ne_bytes(bytes))
}

/// DSCP CS6 in the (former) TOS byte.
const TOS_NETWORK_CONTROL: i32 = 0xc0;
/// How many accepted heartbeats may wait for the consumer before new ones are dropped.
const RECEIVED_QUEUE: usize = 1024;
