//! The engine: its state, the handling of each event, and the bookkeeping shared by
//! the decisions in [`super::decide`] (resources, transitions, heartbeats).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Instant,
};

use agent_common::wire::Generations;

use super::types::{Beacon, CheckerAction, Command, Event, Memory, NodeCheck, Params};
use crate::{
    replication::generation::{Relation, relate},
    status::State,
};

/// The failover state machine of one node. Sans-IO: [`Engine::handle`] takes the
/// time and one event and returns the commands to execute, in order.
#[derive(Debug)]
pub struct Engine {
    pub(super) p: Params,
    pub(super) state: State,
    pub(super) reason: String,
    pub(super) memory: Memory,
    pub(super) persisted: Memory,
    pub(super) gens: Generations,
    pub(super) in_sync: bool,
    pub(super) resyncing: bool,
    /// As SECOND, the peer was last heard ALONE (not PRIM): its writes do not wait
    /// for this node, so being in sync says nothing about what it wrote since; the
    /// copy counts as incomplete until the peer is heard PRIM (see
    /// [`Self::second_consistency`]).
    pub(super) source_alone: bool,
    /// When a heartbeat last arrived, per network.
    pub(super) heard: Vec<Option<Instant>>,
    /// The peer's latest beacon (kept after the peer is lost: its last word).
    pub(super) peer: Option<Beacon>,
    /// Since when the peer, heard and not running, has not been SECOND.
    pub(super) peer_not_following_since: Option<Instant>,
    pub(super) witness: Vec<bool>,
    /// The application's checkers that crossed their threshold.
    pub(super) failing: BTreeSet<String>,
    /// Each node checker's last result (see [`super::node_checks`]).
    pub(super) node_checks: BTreeMap<String, NodeCheck>,
    /// The peer went silent while this node was an in-sync SECOND kept from taking
    /// over only by its node checkers: once they pass, with the peer still silent,
    /// it takes over as that SECOND would have.
    pub(super) deferred_takeover: bool,
    /// After an abandoned handover, when a runner whose node checker fails may
    /// try handing over again (in between, the application runs here again).
    pub(super) handover_retry_at: Option<Instant>,
    pub(super) restarts: VecDeque<Instant>,
    pub(super) blocked_until: Option<Instant>,
    /// `tandem second` on a node that does not follow a primary yet.
    pub(super) hold: bool,
    /// Until when a starting node waits to hear its peer.
    pub(super) booting: Option<Instant>,
    pub(super) started_at: Instant,
    pub(super) probe_sent: Option<Instant>,
    pub(super) probe_busy_until: Option<Instant>,
    /// A probe just found the VIP free; consumed by the decision it was sent for.
    pub(super) vip_clear: bool,
    /// `tandem prim` pending (`Some(force)`) until it succeeds or is refused.
    pub(super) admin_prim: Option<bool>,
    pub(super) handover: Option<Handover>,
    /// This node handed over and waits for the peer to start (swap, SECOND side).
    pub(super) handing_over_until: Option<Instant>,
    pub(super) swap_request_until: Option<Instant>,
    pub(super) swap_retry_at: Option<Instant>,
    pub(super) diverged: bool,
    /// The node ran the application before this engine started and has not decided
    /// yet whether to resume.
    pub(super) resume: bool,
    pub(super) app: Res,
    pub(super) vip: Res,
    pub(super) seq: u64,
    pub(super) next_send: Instant,
    pub(super) last_sent: Option<Beacon>,
    pub(super) last_seen: Instant,
    pub(super) last_note: String,
}

/// A primary's progress in handing over to its peer (swap, failback, `second`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Handover {
    /// The application is stopping.
    Stopping { until: Instant },
    /// The VIP is gone; the peer receives the last changes.
    Draining { until: Instant },
}

/// What this node believes about a resource it controls.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Res {
    /// Possibly left over by a previous run of the agent.
    Unknown,
    Off,
    On,
}

impl Engine {
    /// A stopped engine; the runtime then sends [`Event::Start`] to start the module.
    /// `generations` and `memory` are what the replication layer and the runtime
    /// persisted.
    #[must_use]
    pub fn new(p: Params, generations: Generations, memory: Memory, now: Instant) -> Self {
        let node_checks = p
            .node_checkers
            .iter()
            .map(|n| (n.clone(), NodeCheck::Pending))
            .collect();
        Self {
            heard: vec![None; p.networks],
            witness: vec![false; p.witnesses],
            p,
            state: State::Stop,
            reason: "not started".to_string(),
            memory,
            persisted: memory,
            gens: generations,
            in_sync: false,
            resyncing: false,
            source_alone: false,
            peer: None,
            peer_not_following_since: None,
            failing: BTreeSet::new(),
            node_checks,
            deferred_takeover: false,
            handover_retry_at: None,
            restarts: VecDeque::new(),
            blocked_until: None,
            hold: false,
            booting: None,
            started_at: now,
            probe_sent: None,
            probe_busy_until: None,
            vip_clear: false,
            admin_prim: None,
            handover: None,
            handing_over_until: None,
            swap_request_until: None,
            swap_retry_at: None,
            diverged: false,
            resume: false,
            app: Res::Unknown,
            vip: Res::Unknown,
            seq: 0,
            next_send: now,
            last_sent: None,
            last_seen: now,
            last_note: String::new(),
        }
    }

    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the node is in its state (the reason of the last transition).
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// What the runtime last persisted, or is asked to.
    #[must_use]
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// The peer's last known state, `None` when never heard.
    #[must_use]
    pub fn peer_state(&self) -> Option<State> {
        self.peer.as_ref().map(|b| b.state)
    }

    /// Whether the peer was heard on some network within the timeout.
    #[must_use]
    pub fn peer_connected(&self, now: Instant) -> bool {
        self.heard
            .iter()
            .flatten()
            .any(|t| now.saturating_duration_since(*t) < self.p.heartbeat_timeout)
    }

    /// Per network, whether the peer was heard on it within the timeout.
    #[must_use]
    pub fn networks_up(&self, now: Instant) -> Vec<bool> {
        self.heard
            .iter()
            .map(|t| t.is_some_and(|t| now.saturating_duration_since(t) < self.p.heartbeat_timeout))
            .collect()
    }

    /// Whether the peer, heard within the timeout, says it could run the
    /// application; `None` when it is not heard.
    #[must_use]
    pub fn peer_can_run(&self, now: Instant) -> Option<bool> {
        self.peer
            .as_ref()
            .filter(|_| self.peer_connected(now))
            .map(|b| b.can_run)
    }

    /// Whether the application's checker `name` crossed its threshold (and was not
    /// reported passing since).
    #[must_use]
    pub fn checker_failing(&self, name: &str) -> bool {
        self.failing.contains(name)
    }

    /// The last result of node checker `name`, if it is one.
    #[must_use]
    pub fn node_check(&self, name: &str) -> Option<NodeCheck> {
        self.node_checks.get(name).copied()
    }

    /// Whether an administrator's `tandem prim` waits to be carried out or refused.
    #[must_use]
    pub fn admin_prim_pending(&self) -> bool {
        self.admin_prim.is_some()
    }

    /// Both nodes changed data on their own and neither runs the application: the
    /// administrator chooses the data to keep with `tandem prim --force`.
    #[must_use]
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// A swap (or failback) is under way: asked for by this SECOND, handing over
    /// as PRIM, or handed over and waiting for the peer to start.
    #[cfg(test)]
    pub(super) fn swapping(&self) -> bool {
        self.swap_request_until.is_some()
            || self.handover.is_some()
            || self.handing_over_until.is_some()
    }

    /// When the engine next needs an [`Event::Tick`].
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let timeout = self.p.heartbeat_timeout;
        let mut t = self.next_send;
        let candidates = self
            .heard
            .iter()
            .flatten()
            .map(|h| *h + timeout)
            .chain(self.booting)
            .chain(self.probe_busy_until)
            .chain(self.probe_sent.map(|s| s + self.p.probe_timeout))
            .chain(self.blocked_until)
            .chain(self.handing_over_until)
            .chain(self.swap_request_until)
            .chain(self.swap_retry_at)
            .chain(self.handover_retry_at)
            .chain(self.peer_not_following_since.map(|s| s + timeout))
            .chain(self.handover.map(|h| match h {
                Handover::Stopping { until } | Handover::Draining { until } => until,
            }));
        for c in candidates {
            if c > self.last_seen && c < t {
                t = c;
            }
        }
        t
    }

    /// Handles one event at `now`; returns the commands to execute in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.catch_up(now);
        self.on_event(now, event, &mut out);
        self.decide(now, &mut out);
        self.memory.was_running = self.running() || self.resume;
        if self.memory != self.persisted {
            self.persisted = self.memory;
            out.insert(0, Command::Persist(self.memory));
        }
        self.heartbeat(now, &mut out);
        out
    }

    pub(super) fn on_event(&mut self, now: Instant, event: Event, out: &mut Vec<Command>) {
        match event {
            Event::Start => self.start(now, out),
            Event::Stop => {
                if self.state != State::Stop {
                    self.ensure_stopped(out);
                    out.push(Command::ReplicateStop);
                    self.reset_phases();
                    self.transition(State::Stop, "administrator: tandem stop".into(), out);
                }
            }
            Event::Tick => {}
            Event::Heartbeat { network, beacon } => self.on_heartbeat(now, network, beacon),
            Event::Witness { index, reachable } => {
                if let Some(w) = self.witness.get_mut(index) {
                    *w = reachable;
                }
            }
            Event::VipProbeResult { someone_answers } => {
                if self.probe_sent.take().is_some() {
                    if someone_answers {
                        self.probe_busy_until = Some(now + self.p.probe_retry);
                        self.note("another host answers for the VIP: no takeover", out);
                        if self.admin_prim.take().is_some() {
                            self.note("tandem prim refused: the VIP answers", out);
                        }
                    } else {
                        self.vip_clear = true;
                    }
                }
            }
            Event::ReplicationStatus { in_sync, resyncing } => {
                self.in_sync = in_sync;
                self.resyncing = resyncing;
                self.second_consistency();
            }
            Event::Generations(g) => {
                if self.state == State::Second && self.in_sync && g != self.gens {
                    // The source started a generation while this node was in sync
                    // with it: it ran ALONE, unheard (the heartbeats lost, the
                    // replication link up), and did not wait for this node since.
                    self.source_alone = true;
                }
                self.gens = g;
                self.second_consistency();
            }
            Event::AppStarted => {}
            Event::AppStartFailed => {
                if self.running() && self.app == Res::On && self.handover.is_none() {
                    self.app_failure(now, "the start command failed", out);
                }
            }
            Event::AppStopped => {
                // Application checkers judge the application running here; once it
                // is stopped their failures say nothing more, and the runtime stops
                // them with it (no CheckerOk would ever come). Kept, they would bar
                // this node from running the application for good, even when its
                // peer dies later. A restart is judged afresh.
                self.failing.clear();
                if let Some(Handover::Stopping { until }) = self.handover {
                    self.handover = Some(Handover::Draining { until });
                    self.vip = Res::Off;
                    out.push(Command::RemoveVip);
                    out.push(Command::DrainReplication);
                }
            }
            Event::Drained => {
                if matches!(self.handover, Some(Handover::Draining { .. })) {
                    self.handover = None;
                    self.in_sync = true;
                    self.resyncing = false;
                    self.source_alone = false;
                    self.memory.consistent = true;
                    self.handing_over_until = Some(now + self.p.swap_timeout);
                    let reason = match self.node_why() {
                        Some(why) => format!("swap: handed over to the peer ({why})"),
                        None => "swap: handed over to the peer".into(),
                    };
                    self.transition(State::Second, reason, out);
                    out.push(Command::ReplicateSecondary { diverged: false });
                }
            }
            Event::CheckerFailed { checker, action } => {
                let what = format!("checker {checker} failed");
                self.failing.insert(checker);
                if self.running() && self.handover.is_none() {
                    match action {
                        CheckerAction::Restart => self.app_failure(now, &what, out),
                        CheckerAction::Failover => {
                            self.fail_over(format!("{what}: failing over"), out)
                        }
                    }
                }
            }
            Event::CheckerOk { checker } => {
                self.failing.remove(&checker);
            }
            Event::NodeCheckerFailed { checker } => self.on_node_check(now, checker, false, out),
            Event::NodeCheckerOk { checker } => self.on_node_check(now, checker, true, out),
            Event::AdminPrim { force } => {
                if self.state == State::Stop {
                    self.start(now, out);
                }
                if self.running() {
                    self.note("tandem prim: this node already runs the application", out);
                } else {
                    self.admin_prim = Some(force);
                    self.blocked_until = None;
                    self.hold = false;
                }
            }
            Event::AdminSecond => self.admin_second(now, out),
            Event::AdminSwap => self.admin_swap(now, out),
        }
    }

    pub(super) fn start(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.state != State::Stop {
            self.note("tandem start: already started", out);
            return;
        }
        self.reset_phases();
        self.resume = self.memory.was_running;
        self.started_at = now;
        self.booting = Some(now + self.p.boot_wait);
        self.transition(State::Wait, "started: waiting to hear the peer".into(), out);
    }

    /// Whether this node would run the application if chosen (what its heartbeats
    /// tell the peer).
    #[must_use]
    pub fn can_run(&self, now: Instant) -> bool {
        self.state != State::Stop
            && self.failing.is_empty()
            && !self.node_failing()
            && self.blocked_until.is_none_or(|t| now >= t)
            && !self.hold
            && self.handover.is_none()
            && self.handing_over_until.is_none()
            && self.memory.consistent
            && (self.state != State::Second || (self.in_sync && !self.resyncing))
    }

    /// A SECOND's copy is complete when the replication layer says it is in sync
    /// and its source is PRIM. An ALONE source does not wait for its SECOND: what it
    /// wrote after the SECOND caught up may be missing here under the very
    /// generation this node adopted, and if the source stops or dies before it
    /// hears this node and turns PRIM, equal generations would claim equal data.
    /// So the copy stays incomplete from the moment the source is heard ALONE
    /// until it is heard PRIM, and a SECOND that leaves meanwhile (the source
    /// stopped, or went silent) keeps it so ([`Memory::consistent`]).
    pub(super) fn second_consistency(&mut self) {
        if self.state == State::Second {
            self.memory.consistent = self.in_sync && !self.resyncing && !self.source_alone;
        }
    }

    pub(super) fn witness_ok(&self) -> bool {
        self.witness.is_empty() || self.witness.iter().any(|w| *w)
    }

    pub(super) fn running(&self) -> bool {
        matches!(self.state, State::Alone | State::Prim)
    }

    /// This node's data compared with `peer`'s; two nodes that never held data are
    /// the same.
    pub(super) fn relation(&self, peer: &Generations) -> Relation {
        if self.gens.current == 0 && peer.current == 0 {
            Relation::Same
        } else {
            relate(&self.gens, peer)
        }
    }

    /// [`Self::relation`] with the peer's beacon, where incomplete data on one side
    /// makes that side the older one, whatever the generations say.
    ///
    /// A copy is incomplete only as (or after being) the SECOND of the peer: during a
    /// resync it is the peer's data half copied over this node's own, whose changes
    /// since the common generation were kept aside when the resync began (the
    /// follower's `diverged`, from the generations); in sync with an ALONE peer it
    /// may lack the peer's last writes ([`Self::second_consistency`]). Its
    /// generations stay what they were until the resync ends, so they may look
    /// newer than the complete copy's, or diverged from it once that copy ran
    /// alone: they no longer describe the data. Only the complete copy can run, and
    /// the peer that holds it is the one the incomplete copy followed (a runner is
    /// always complete, and only `prim --force` makes an incomplete copy run).
    pub(super) fn compare(&self, b: &Beacon) -> Relation {
        match (
            self.relation(&b.generations),
            self.memory.consistent,
            b.consistent,
        ) {
            (Relation::Same | Relation::Newer | Relation::Diverged, false, true) => Relation::Older,
            (Relation::Same | Relation::Older | Relation::Diverged, true, false) => Relation::Newer,
            // Neither copy is complete (each followed the other on a stale word
            // from it, and either resync may have begun): whatever the
            // generations say, only the administrator can choose.
            (_, false, false) => Relation::Diverged,
            (rel, _, _) => rel,
        }
    }
}
