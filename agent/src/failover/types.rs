//! The failover engine's vocabulary: its parameters, what it persists, the events it
//! is fed, the commands it returns, and the heartbeat message it asks to be sent.

use std::time::Duration;

use agent_common::wire::Generations;
use serde::{Deserialize, Serialize};

use crate::status::State;

/// The engine's parameters, from the configuration.
#[derive(Clone, Debug)]
pub struct Params {
    /// How often a heartbeat is sent on every network.
    pub heartbeat_interval: Duration,
    /// The peer is lost when no heartbeat arrived on any network for this long.
    pub heartbeat_timeout: Duration,
    /// How long a starting node waits to hear its peer before deciding alone.
    pub boot_wait: Duration,
    /// After the VIP answered a probe, how long before probing again.
    pub probe_retry: Duration,
    /// A probe with no result after this long is sent again.
    pub probe_timeout: Duration,
    /// Number of heartbeat networks; heartbeats name theirs by index.
    pub networks: usize,
    /// Number of witness addresses. With none, the isolation check is disabled and
    /// only the VIP probe and the generations guard a takeover.
    pub witnesses: usize,
    /// Which node runs the application when both could (and automatic failback).
    pub preference: Preference,
    /// Whether this node wins a tie when neither is preferred. The runtime sets it
    /// on exactly one of the two nodes (the one whose name sorts first).
    pub ties_won: bool,
    /// Local restarts of the application allowed within `restart_window` before
    /// the node fails over.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// How long a swap (or failback) may take before it is abandoned.
    pub swap_timeout: Duration,
    /// Distinguishes this engine's heartbeats from those of its previous runs; the
    /// runtime draws it at random on start.
    pub incarnation: u64,
    /// The names of the node checkers (`scope: node`). The node starts nothing
    /// until each has reported a first result.
    pub node_checkers: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(1),
            boot_wait: Duration::from_secs(2),
            probe_retry: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(5),
            networks: 1,
            witnesses: 0,
            preference: Preference::None,
            ties_won: false,
            max_restarts: 3,
            restart_window: Duration::from_secs(3600),
            swap_timeout: Duration::from_secs(60),
            incarnation: 0,
            node_checkers: Vec::new(),
        }
    }
}

/// The preferred node, if any: it runs the application when both could, and takes
/// it back (automatic failback) once it is SECOND in sync.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum Preference {
    /// No preferred node: the survivor stays primary (no failback).
    #[default]
    None,
    /// The peer is preferred.
    PeerNode,
    /// This node is preferred.
    ThisNode,
}

/// What a checker's failure does on the node that runs the application.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum CheckerAction {
    /// Stop the application here at once so that the peer takes over.
    Failover,
    /// Restart the application here, up to `max_restarts` in `restart_window`,
    /// then fail over.
    Restart,
}

/// What a node checker last said about this node's ability to run the application.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum NodeCheck {
    /// No result yet (the agent just started). It does not count as a failure in
    /// what the peer is told, but nothing is started here until it has one.
    Pending,
    Passing,
    /// Crossed its failure threshold: the node must not take the application over.
    Failing,
}

/// What the engine needs to remember across restarts; the runtime stores it
/// crash-safely whenever a [`Command::Persist`] asks, before executing the commands
/// that follow it.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// The peer may hold data this node lacks: it ran the application, could take
    /// over (SECOND in sync), or its generations are newer or diverged. A node that
    /// remembers this never starts the application without hearing its peer, except
    /// by `tandem prim --force`. A node that never heard its peer assumes it.
    pub peer_may_be_newer: bool,
    /// This node ran the application: after an agent restart it resumes that role
    /// when the data allows.
    pub was_running: bool,
    /// This node's data is complete for its generation. A SECOND is not while it
    /// resyncs: its copy mixes old and new data until the resync ends, even though
    /// its generations may already equal the primary's.
    pub consistent: bool,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            peer_may_be_newer: true,
            was_running: false,
            consistent: true,
        }
    }
}

/// The heartbeat's content: what a node tells its peer several times a second.
/// The runtime adds authentication and anti-replay around it.
#[derive(Clone, Debug, Default, Eq, PartialEq, Serialize, Deserialize)]
pub struct Beacon {
    /// The sender's [`Params::incarnation`].
    pub incarnation: u64,
    /// Increases with every beacon of one incarnation, so that a late copy from a
    /// slower network does not overwrite a newer one.
    pub seq: u64,
    pub state: State,
    pub generations: Generations,
    /// The sender's data is complete for its generation: always for a primary; for a
    /// SECOND, in sync and not resyncing; otherwise as it last was (a resync that was
    /// interrupted leaves it false).
    pub consistent: bool,
    /// The sender would run the application if chosen: no failing checker (of the
    /// application or of the node), no administrator hold, not handing over, and in
    /// sync if it is SECOND.
    pub can_run: bool,
    /// The sender ran the application before its agent restarted and is deciding
    /// whether to resume.
    pub was_primary: bool,
    /// The sender (SECOND) asks its primary to hand over: `tandem swap` or failback.
    pub swap_request: bool,
}

/// What happened, fed to [`super::Engine::handle`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Event {
    /// `tandem prim [--force]`.
    AdminPrim { force: bool },
    /// `tandem second`.
    AdminSecond,
    /// `tandem swap`.
    AdminSwap,
    /// The start command failed or timed out.
    AppStartFailed,
    /// The start command succeeded.
    AppStarted,
    /// The stop command finished.
    AppStopped,
    /// A checker crossed its failure threshold. Repeated while it keeps failing.
    CheckerFailed {
        checker: String,
        action: CheckerAction,
    },
    /// A checker that had failed passes again.
    CheckerOk { checker: String },
    /// A node checker (one of [`Params::node_checkers`]) crossed its failure
    /// threshold: this node cannot run the application until it passes again.
    NodeCheckerFailed { checker: String },
    /// A node checker passed: its first result, or a recovery.
    NodeCheckerOk { checker: String },
    /// The peer acknowledged everything this primary wrote (after
    /// [`Command::DrainReplication`]).
    Drained,
    /// The replication layer's generations changed (after [`Command::NewGeneration`],
    /// or adopted from the primary once in sync).
    Generations(Generations),
    /// A heartbeat arrived on network `network`.
    Heartbeat { network: usize, beacon: Beacon },
    /// The replication layer's view: in sync, or resyncing. A lost connection is not
    /// reported as "not in sync": the last value stands until data is known to lag.
    ReplicationStatus { in_sync: bool, resyncing: bool },
    /// `tandem start`, or the agent starting the module at boot.
    Start,
    /// `tandem stop`.
    Stop,
    /// Time passed; sent at least at [`super::Engine::poll_timeout`].
    Tick,
    /// The answer to [`Command::ProbeVip`].
    VipProbeResult { someone_answers: bool },
    /// A witness's reachability changed (or was first measured).
    Witness { index: usize, reachable: bool },
}

/// What the runtime must do, in order. Application and VIP commands are idempotent
/// and executed one after another: a stop finishes before the next command runs.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Command {
    /// Add the VIP to its interface.
    AddVip,
    /// Gratuitous ARP / unsolicited neighbour advertisements for the VIP.
    AnnounceVip,
    /// Report [`Event::Drained`] once the peer holds everything written here.
    DrainReplication,
    /// Start a new data generation (this node changes data its peer lacks), then
    /// report it with [`Event::Generations`].
    NewGeneration,
    /// A log line that is not a state change.
    Note(String),
    /// Store this before executing the commands after it.
    Persist(Memory),
    /// RFC 5227-style ARP probe for the VIP; answer with [`Event::VipProbeResult`].
    ProbeVip,
    RemoveVip,
    /// Replication source that no longer waits for the peer: release waiting
    /// durability calls and record what changes.
    ReplicateAlone,
    /// Replication source whose durability points wait for the SECOND.
    ReplicatePrimary,
    /// Replication target. `diverged`: this node's own changes since the common
    /// generation must be kept aside and reported before they are overwritten.
    ReplicateSecondary {
        diverged: bool,
    },
    /// No replication role.
    ReplicateStop,
    /// Send this heartbeat on every network.
    SendHeartbeat(Beacon),
    StartApplication,
    StopApplication,
    /// The state changed; emitted exactly once per change, with its reason.
    Transition {
        from: State,
        to: State,
        reason: String,
    },
}
