//! One simulated machine: its agent (an engine, or none while it is down), what it
//! persists (data, generations, memory), its application and VIP, and its
//! simulated replication layer.

use std::{collections::HashSet, time::Instant};

use agent_common::wire::Generations;

use crate::failover::{Engine, Event, Memory, State};

/// A node's replicated data: the ids of the writes it holds, in order, with a
/// rolling hash so that two copies compare in constant time.
#[derive(Clone, Debug, Default)]
pub(super) struct Log {
    pub(super) ids: Vec<u64>,
    hash: u64,
}

impl Log {
    pub(super) fn push(&mut self, id: u64) {
        self.ids.push(id);
        self.hash = (self.hash ^ id)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(7);
    }

    pub(super) fn same(&self, other: &Log) -> bool {
        self.ids.len() == other.ids.len() && self.hash == other.hash
    }

    /// The writes held here and not in `other`.
    pub(super) fn missing_from(&self, other: &Log) -> Vec<u64> {
        let theirs: HashSet<u64> = other.ids.iter().copied().collect();
        self.ids
            .iter()
            .copied()
            .filter(|id| !theirs.contains(id))
            .collect()
    }
}

/// The replication role the engine gave the simulated replication layer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Role {
    None,
    Primary,
    Secondary { keep_aside: bool },
}

pub(super) struct Node {
    pub(super) engine: Option<Engine>,
    /// The machine runs; false after a node crash until the restart.
    pub(super) machine_up: bool,
    pub(super) frozen_until: Option<Instant>,
    pub(super) restart_at: Option<Instant>,
    /// After a simulated `tandem stop`, when `tandem start` follows.
    pub(super) admin_start_at: Option<Instant>,
    pub(super) gens: Generations,
    pub(super) memory: Memory,
    pub(super) log: Log,
    /// This node's own writes that a resync was told to keep aside
    /// (`ReplicateSecondary { diverged: true }`): reported, never served again, so
    /// the peer does not lack them when it runs.
    pub(super) aside: HashSet<u64>,
    /// The application runs (a frozen orphan after an agent death does not).
    pub(super) app: bool,
    pub(super) vip: bool,
    pub(super) role: Role,
    pub(super) in_sync: bool,
    pub(super) resync_done: Option<Instant>,
    pub(super) drain: bool,
    /// Events for the engine that are not heartbeats, due at a time.
    pub(super) inbox: Vec<(Instant, Event)>,
    pub(super) probe_at: Option<Instant>,
    pub(super) witness: bool,
    pub(super) checker_failing: bool,
    pub(super) checker_reported: Option<Instant>,
    /// The node checker fails: this node could not run the application.
    pub(super) node_check_failing: bool,
    /// The logical time of the newest heartbeat this node ever received.
    pub(super) aware: u64,
    /// The simulation asked this node for `prim --force`.
    pub(super) forced: bool,
    pub(super) last_state: State,
    /// Since when the agent hears neither its peer nor its witness.
    pub(super) isolated_since: Option<Instant>,
}

impl Node {
    pub(super) fn new() -> Self {
        Self {
            engine: None,
            machine_up: true,
            frozen_until: None,
            restart_at: None,
            admin_start_at: None,
            gens: Generations::default(),
            memory: Memory::default(),
            log: Log::default(),
            aside: HashSet::new(),
            app: false,
            vip: false,
            role: Role::None,
            in_sync: false,
            resync_done: None,
            drain: false,
            inbox: Vec::new(),
            probe_at: None,
            witness: true,
            checker_failing: false,
            checker_reported: None,
            node_check_failing: false,
            aware: 0,
            forced: false,
            last_state: State::Stop,
            isolated_since: None,
        }
    }

    /// The agent runs and is not frozen.
    pub(super) fn live(&self) -> bool {
        self.engine.is_some() && self.frozen_until.is_none()
    }

    pub(super) fn state(&self) -> Option<State> {
        self.engine.as_ref().map(Engine::state)
    }

    /// The agent dies; the replication layer (part of it) with it.
    pub(super) fn lose_agent(&mut self) {
        self.engine = None;
        self.frozen_until = None;
        self.admin_start_at = None;
        self.inbox.clear();
        self.probe_at = None;
        self.role = Role::None;
        self.in_sync = false;
        self.resync_done = None;
        self.drain = false;
        self.forced = false;
        self.last_state = State::Stop;
    }
}
