//! The engine: its state, the handling of each event, and the bookkeeping shared by
//! the decisions in [`super::decide`] (resources, transitions, heartbeats).

use std::{
    collections::{BTreeSet, VecDeque},
    time::Instant,
};

use agent_common::wire::Generations;

use super::types::{Beacon, CheckerAction, Command, Event, Memory, Params};
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
    persisted: Memory,
    pub(super) gens: Generations,
    pub(super) in_sync: bool,
    pub(super) resyncing: bool,
    /// When a heartbeat last arrived, per network.
    heard: Vec<Option<Instant>>,
    /// The peer's latest beacon (kept after the peer is lost: its last word).
    pub(super) peer: Option<Beacon>,
    /// Since when the peer, heard and not running, has not been SECOND.
    pub(super) peer_not_following_since: Option<Instant>,
    witness: Vec<bool>,
    pub(super) failing: BTreeSet<String>,
    restarts: VecDeque<Instant>,
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
    seq: u64,
    next_send: Instant,
    last_sent: Option<Beacon>,
    last_seen: Instant,
    last_note: String,
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
            peer: None,
            peer_not_following_since: None,
            failing: BTreeSet::new(),
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

    /// Both nodes changed data on their own and neither runs the application: the
    /// administrator chooses the data to keep with `tandem prim --force`.
    #[must_use]
    pub fn diverged(&self) -> bool {
        self.diverged
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

    fn on_event(&mut self, now: Instant, event: Event, out: &mut Vec<Command>) {
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
                if self.state == State::Second {
                    self.memory.consistent = in_sync && !resyncing;
                }
            }
            Event::Generations(g) => self.gens = g,
            Event::AppStarted => {}
            Event::AppStartFailed => {
                if self.running() && self.app == Res::On && self.handover.is_none() {
                    self.app_failure(now, "the start command failed", out);
                }
            }
            Event::AppStopped => {
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
                    self.memory.consistent = true;
                    self.handing_over_until = Some(now + self.p.swap_timeout);
                    self.transition(State::Second, "swap: handed over to the peer".into(), out);
                    out.push(Command::ReplicateSecondary { diverged: false });
                }
            }
            Event::CheckerFailed { checker, action } => {
                let what = format!("checker {checker} failed");
                self.failing.insert(checker);
                if self.running() && self.handover.is_none() {
                    match action {
                        CheckerAction::Restart => self.app_failure(now, &what, out),
                        CheckerAction::Failover => self.fail_over(format!("{what}: failing over"), out),
                    }
                }
            }
            Event::CheckerOk { checker } => {
                self.failing.remove(&checker);
            }
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

    fn start(&mut self, now: Instant, out: &mut Vec<Command>) {
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

    fn on_heartbeat(&mut self, now: Instant, network: usize, beacon: Beacon) {
        let Some(slot) = self.heard.get_mut(network) else {
            return;
        };
        *slot = Some(now);
        let fresh = self
            .peer
            .as_ref()
            .is_none_or(|p| p.incarnation != beacon.incarnation || beacon.seq > p.seq);
        if !fresh {
            return;
        }
        let running = matches!(beacon.state, State::Prim | State::Alone);
        if running || beacon.state == State::Second {
            self.peer_not_following_since = None;
        } else if self.peer_not_following_since.is_none() {
            self.peer_not_following_since = Some(now);
        }
        let peer_data_newer = matches!(
            self.compare(&beacon),
            Relation::Older | Relation::Diverged | Relation::Empty
        );
        self.memory.peer_may_be_newer = match beacon.state {
            State::Prim | State::Alone => true,
            State::Second => beacon.consistent || peer_data_newer,
            State::Wait | State::Stop => peer_data_newer,
        };
        self.peer = Some(beacon);
    }

    fn admin_second(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.state == State::Stop {
            self.start(now, out);
        }
        match self.state {
            State::Second => self.note("tandem second: already SECOND", out),
            State::Alone | State::Prim => {
                if self.peer_can_take_over(now) {
                    self.begin_handover(now, out);
                } else {
                    self.fail_over("administrator: tandem second".into(), out);
                    self.hold = true;
                }
            }
            State::Wait | State::Stop => {
                self.hold = true;
                self.admin_prim = None;
                self.note("tandem second: waiting for the peer to run the application", out);
            }
        }
    }

    fn admin_swap(&mut self, now: Instant, out: &mut Vec<Command>) {
        match self.state {
            State::Prim if self.peer_can_take_over(now) => self.begin_handover(now, out),
            State::Second
                if self.peer_connected(now)
                    && self.peer_state() == Some(State::Prim)
                    && self.can_run(now) =>
            {
                self.swap_request_until = Some(now + self.p.swap_timeout);
                self.note("tandem swap: asking the primary to hand over", out);
            }
            _ => self.note(
                "tandem swap refused: needs PRIM and an in-sync SECOND able to run the application",
                out,
            ),
        }
    }

    /// The peer is SECOND, in sync, and able to run the application.
    pub(super) fn peer_can_take_over(&self, now: Instant) -> bool {
        self.peer_connected(now)
            && self
                .peer
                .as_ref()
                .is_some_and(|b| b.state == State::Second && b.consistent && b.can_run)
    }

    pub(super) fn begin_handover(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.handover = Some(Handover::Stopping {
            until: now + self.p.swap_timeout,
        });
        self.note("swap: stopping the application to hand over to the peer", out);
        self.app = Res::Off;
        out.push(Command::StopApplication);
    }

    /// A failure of the running application: restart it here, or fail over once the
    /// restarts allowed in the window are used up.
    fn app_failure(&mut self, now: Instant, what: &str, out: &mut Vec<Command>) {
        let window = self.p.restart_window;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() < self.p.max_restarts as usize {
            self.restarts.push_back(now);
            let msg = format!(
                "{what}: restarting the application ({} of {} within {window:?})",
                self.restarts.len(),
                self.p.max_restarts
            );
            self.note(&msg, out);
            out.push(Command::StopApplication);
            out.push(Command::StartApplication);
        } else {
            self.blocked_until = Some(now + window);
            let max = self.p.max_restarts;
            self.fail_over(format!("{what}: {max} restarts within {window:?} used up; failing over"), out);
        }
    }

    /// Stops running the application here so that the peer may take over.
    pub(super) fn fail_over(&mut self, reason: String, out: &mut Vec<Command>) {
        self.ensure_stopped(out);
        out.push(Command::ReplicateStop);
        self.handover = None;
        self.transition(State::Wait, reason, out);
    }

    /// Whether this node would run the application if chosen.
    pub(super) fn can_run(&self, now: Instant) -> bool {
        self.state != State::Stop
            && self.failing.is_empty()
            && self.blocked_until.is_none_or(|t| now >= t)
            && !self.hold
            && self.handover.is_none()
            && self.handing_over_until.is_none()
            && self.memory.consistent
            && (self.state != State::Second || (self.in_sync && !self.resyncing))
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

    /// [`Self::relation`] with the peer's beacon, where equal generations with
    /// incomplete data on one side make that side the older one.
    pub(super) fn compare(&self, b: &Beacon) -> Relation {
        match (self.relation(&b.generations), self.memory.consistent, b.consistent) {
            (Relation::Same, false, true) => Relation::Older,
            (Relation::Same, true, false) => Relation::Newer,
            // Neither copy is complete: only the administrator can choose.
            (Relation::Same, false, false) => Relation::Diverged,
            (rel, _, _) => rel,
        }
    }

    pub(super) fn ensure_stopped(&mut self, out: &mut Vec<Command>) {
        if self.app != Res::Off {
            self.app = Res::Off;
            out.push(Command::StopApplication);
        }
        if self.vip != Res::Off {
            self.vip = Res::Off;
            out.push(Command::RemoveVip);
        }
    }

    pub(super) fn ensure_running(&mut self, out: &mut Vec<Command>) {
        if self.vip != Res::On {
            self.vip = Res::On;
            out.push(Command::AddVip);
            out.push(Command::AnnounceVip);
        }
        if self.app != Res::On {
            self.app = Res::On;
            out.push(Command::StartApplication);
        }
    }

    pub(super) fn transition(&mut self, to: State, reason: String, out: &mut Vec<Command>) {
        if to == self.state {
            return;
        }
        out.push(Command::Transition {
            from: self.state,
            to,
            reason: reason.clone(),
        });
        self.state = to;
        self.reason = reason;
        self.last_note.clear();
        // A swap request belongs to the SECOND that made it.
        self.swap_request_until = None;
    }

    /// A log line, suppressed when it repeats the previous one.
    pub(super) fn note(&mut self, msg: &str, out: &mut Vec<Command>) {
        if self.last_note != msg {
            self.last_note = msg.to_string();
            out.push(Command::Note(msg.to_string()));
        }
    }

    pub(super) fn reset_phases(&mut self) {
        self.booting = None;
        self.probe_sent = None;
        self.probe_busy_until = None;
        self.vip_clear = false;
        self.admin_prim = None;
        self.handover = None;
        self.handing_over_until = None;
        self.swap_request_until = None;
        self.hold = false;
        self.diverged = false;
        self.resume = false;
    }

    /// A handle call long after the previous one means this process was stalled
    /// (frozen, swapped out): the peer could not be heard meanwhile, so the time
    /// each network had left is given back instead of declaring the peer lost.
    fn catch_up(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_seen);
        let stall = (self.p.heartbeat_timeout / 2).max(self.p.heartbeat_interval * 3);
        if gap > stall {
            let last = self.last_seen;
            for t in self.heard.iter_mut().flatten() {
                if *t + self.p.heartbeat_timeout > last {
                    *t += gap;
                }
            }
        }
        self.last_seen = now;
    }

    /// Sends a heartbeat when one is due or when its content changed.
    fn heartbeat(&mut self, now: Instant, out: &mut Vec<Command>) {
        let mut beacon = Beacon {
            incarnation: self.p.incarnation,
            seq: 0,
            state: self.state,
            generations: self.gens.clone(),
            consistent: match self.state {
                State::Prim | State::Alone => true,
                State::Second => self.in_sync && !self.resyncing,
                State::Wait | State::Stop => self.memory.consistent,
            },
            can_run: self.can_run(now),
            was_primary: self.resume,
            swap_request: self.swap_request_until.is_some(),
        };
        let changed = self.last_sent.as_ref() != Some(&beacon);
        if changed || now >= self.next_send {
            self.last_sent = Some(beacon.clone());
            self.seq += 1;
            beacon.seq = self.seq;
            self.next_send = now + self.p.heartbeat_interval;
            out.push(Command::SendHeartbeat(beacon));
        }
    }
}
