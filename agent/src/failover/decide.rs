//! The engine's decisions, re-evaluated after every event from what it knows: who
//! runs the application, when a SECOND takes over, when a node fences itself.

use std::time::Instant;

use super::{
    engine::{Engine, Handover, Res},
    types::{Beacon, Command, Preference},
};
use crate::{replication::generation::Relation, status::State};

/// What a node that does not run the application should do about it.
enum Choice {
    /// Start it here (after the VIP probe), for this reason.
    Start(String),
    /// The peer should start it; this node waits.
    PeerStarts(String),
    /// Nobody may start it.
    Nobody(String),
}

impl Engine {
    pub(super) fn decide(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.expire(now, out);
        // A transition can enable the next one (SECOND gives up, then an
        // administrator's `prim` applies to WAIT); a few rounds settle it.
        for _ in 0..3 {
            let before = self.state;
            match self.state {
                State::Stop => {}
                State::Wait | State::Second => self.decide_idle(now, out),
                State::Alone | State::Prim => self.decide_running(now, out),
            }
            if self.state == before {
                break;
            }
        }
        self.vip_clear = false;
    }

    /// Timers that ran out.
    fn expire(&mut self, now: Instant, out: &mut Vec<Command>) {
        let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        if due(self.swap_request_until) {
            self.swap_request_until = None;
            self.swap_retry_at = Some(now + self.p.swap_timeout);
            self.note("swap abandoned: the primary did not hand over", out);
        }
        if due(self.swap_retry_at) {
            self.swap_retry_at = None;
        }
        if due(self.handing_over_until) {
            self.handing_over_until = None;
            self.note("swap abandoned: the peer did not take over", out);
        }
        if let Some(Handover::Stopping { until } | Handover::Draining { until }) = self.handover
            && now >= until
        {
            self.handover = None;
            self.note("swap abandoned: the handover did not complete in time", out);
        }
        if due(self.blocked_until) {
            self.blocked_until = None;
        }
        if self.probe_sent.is_some_and(|s| now >= s + self.p.probe_timeout) {
            self.probe_sent = None;
        }
    }

    fn decide_running(&mut self, now: Instant, out: &mut Vec<Command>) {
        let peer = self.peer.clone().filter(|_| self.peer_connected(now));
        let following = peer.as_ref().is_some_and(|b| b.state == State::Second);
        if self.handover.is_some() && !following {
            self.handover = None;
            self.note("swap aborted: the peer no longer follows", out);
        }
        match peer {
            None => {
                if !self.witness_ok() {
                    self.fail_over(
                        "isolated: the peer is silent on every network and no witness \
                         answers; fenced"
                            .into(),
                        out,
                    );
                    return;
                }
                if self.state == State::Prim {
                    self.go_alone("the peer is silent on every network".into(), out);
                }
            }
            Some(b) if matches!(b.state, State::Prim | State::Alone) => {
                let wins = match self.p.preference {
                    Preference::ThisNode => true,
                    Preference::PeerNode => false,
                    Preference::None => self.p.ties_won,
                };
                if !wins {
                    self.ensure_stopped(out);
                    self.enter_second(
                        "both nodes ran the application: this node yields and keeps its \
                         changes aside"
                            .into(),
                        true,
                        out,
                    );
                    return;
                }
                self.note("both nodes run the application: the peer yields", out);
            }
            Some(b) if b.state == State::Second => {
                if self.state == State::Alone {
                    self.transition(State::Prim, "the peer is SECOND".into(), out);
                    out.push(Command::ReplicatePrimary);
                }
                if self.handover.is_none() && b.swap_request && b.consistent && b.can_run {
                    self.begin_handover(now, out);
                }
            }
            Some(b) => {
                let waited = self
                    .peer_not_following_since
                    .is_some_and(|t| now >= t + self.p.heartbeat_timeout);
                if self.state == State::Prim && (b.state == State::Stop || waited) {
                    self.go_alone(format!("the peer is {}", b.state.as_str()), out);
                }
            }
        }
        if self.handover.is_none() {
            // Restores the application and the VIP after an abandoned handover.
            self.ensure_running(out);
        }
    }

    fn decide_idle(&mut self, now: Instant, out: &mut Vec<Command>) {
        let peer = self.peer.clone().filter(|_| self.peer_connected(now));
        match peer {
            Some(b) if matches!(b.state, State::Prim | State::Alone) => self.follow(now, &b, out),
            Some(b) => {
                let choice = self.pair_choice(now, &b, out);
                self.act(now, choice, out);
            }
            None if self.state == State::Second => match self.takeover_blocker(now) {
                Some(why) => {
                    self.transition(
                        State::Wait,
                        format!("the peer is silent on every network; no takeover: {why}"),
                        out,
                    );
                    out.push(Command::ReplicateStop);
                }
                None => self.try_start(
                    now,
                    "the peer is silent on every network; data in sync; VIP free".into(),
                    out,
                ),
            },
            None => {
                let booting = self.booting.is_some_and(|t| now < t);
                if booting && self.admin_prim.is_none() {
                    // Leftovers of a previous agent wait for the decision, unless this
                    // node is isolated: then they go once the witness had time to answer.
                    if !self.witness_ok() && now >= self.started_at + self.p.heartbeat_timeout {
                        self.ensure_stopped(out);
                    }
                    return;
                }
                self.booting = None;
                let choice = self.alone_choice(now, out);
                self.act(now, choice, out);
            }
        }
    }

    /// The peer runs the application: follow it as SECOND.
    fn follow(&mut self, now: Instant, b: &Beacon, out: &mut Vec<Command>) {
        if self.admin_prim.take().is_some() {
            self.note("tandem prim refused: the peer runs the application (use tandem swap)", out);
        }
        self.handing_over_until = None;
        self.diverged = false;
        if self.state == State::Wait {
            // Our own changes are kept aside when our data moved on from the peer's.
            let diverged = matches!(
                self.compare(b),
                Relation::Newer | Relation::Diverged | Relation::PeerEmpty
            );
            self.ensure_stopped(out);
            self.enter_second(format!("the peer is {}", b.state.as_str()), diverged, out);
        } else if self.p.preference == Preference::ThisNode
            && b.state == State::Prim
            && self.can_run(now)
            && self.swap_request_until.is_none()
            && self.swap_retry_at.is_none()
        {
            self.swap_request_until = Some(now + self.p.swap_timeout);
            self.note("failback: asking the peer to hand over to the preferred node", out);
        }
    }

    fn act(&mut self, now: Instant, choice: Choice, out: &mut Vec<Command>) {
        match choice {
            Choice::Start(reason) => self.try_start(now, reason, out),
            Choice::PeerStarts(why) => {
                self.ensure_stopped(out);
                if self.state == State::Wait {
                    self.note(&why, out);
                }
            }
            Choice::Nobody(why) => {
                self.ensure_stopped(out);
                if self.state == State::Second && self.handing_over_until.is_none() {
                    self.transition(State::Wait, why, out);
                    out.push(Command::ReplicateStop);
                } else {
                    self.note(&why, out);
                }
            }
        }
    }

    /// Neither node runs the application and the peer is heard: the data decides.
    fn pair_choice(&mut self, now: Instant, b: &Beacon, out: &mut Vec<Command>) -> Choice {
        let rel = self.compare(b);
        self.diverged = false;
        match self.admin_prim {
            Some(true) => {
                return Choice::Start(format!(
                    "administrator override: tandem prim --force (data {rel:?} to the peer's)"
                ));
            }
            Some(false)
                if matches!(rel, Relation::Same | Relation::Newer | Relation::PeerEmpty)
                    && self.memory.consistent
                    && self.failing.is_empty() =>
            {
                return Choice::Start("administrator: tandem prim".into());
            }
            Some(false) => {
                self.admin_prim = None;
                self.note(
                    &format!("tandem prim refused: data {rel:?} to the peer's, or a checker fails"),
                    out,
                );
            }
            None => {}
        }
        let mut me = self.can_run(now);
        if !me && self.hold {
            // `tandem second` yields to a peer that can run; it does not leave the
            // application stopped when the peer cannot.
            self.hold = false;
            let peer_could =
                b.can_run && matches!(rel, Relation::Same | Relation::Older | Relation::Empty);
            if self.can_run(now) && !peer_could {
                self.note("tandem second lifted: the peer cannot run the application", out);
                me = true;
            } else {
                self.hold = true;
            }
        }
        match rel {
            Relation::Diverged => {
                self.diverged = true;
                Choice::Nobody(
                    "data diverged: both nodes changed it on their own; keep one side with \
                     tandem prim --force"
                        .into(),
                )
            }
            Relation::Older | Relation::Empty if b.can_run => {
                Choice::PeerStarts("the peer has the newest data".into())
            }
            Relation::Older | Relation::Empty => {
                Choice::Nobody("the peer has the newest data but cannot run the application".into())
            }
            Relation::Newer | Relation::PeerEmpty if me => {
                Choice::Start("this node has the newest data".into())
            }
            Relation::Newer | Relation::PeerEmpty => Choice::Nobody(
                "this node has the newest data but cannot run the application".into(),
            ),
            Relation::Same => match (me, b.can_run) {
                (true, false) => Choice::Start("same data; the peer cannot run the application".into()),
                (false, true) => Choice::PeerStarts("same data; the peer runs the application".into()),
                (false, false) => Choice::Nobody("neither node can run the application".into()),
                (true, true) if self.wins_tie(b) => {
                    Choice::Start("same data; this node is chosen to run the application".into())
                }
                (true, true) => Choice::PeerStarts("same data; the peer is chosen".into()),
            },
        }
    }

    /// Both could run on the same data: a node resuming after an agent restart,
    /// then the preferred node, then the static tie-break.
    fn wins_tie(&self, b: &Beacon) -> bool {
        if self.resume != b.was_primary {
            return self.resume;
        }
        match self.p.preference {
            Preference::ThisNode => true,
            Preference::PeerNode => false,
            Preference::None => self.p.ties_won,
        }
    }

    /// The peer is silent and this node is WAIT: may it run the application alone?
    fn alone_choice(&mut self, now: Instant, out: &mut Vec<Command>) -> Choice {
        if !self.witness_ok() {
            return Choice::Nobody("no witness answers: this node may be the isolated one".into());
        }
        match self.admin_prim {
            Some(true) => {
                return Choice::Start(
                    "administrator override: tandem prim --force (the peer is silent; its \
                     data may be newer)"
                        .into(),
                );
            }
            Some(false) if self.memory.peer_may_be_newer || !self.failing.is_empty() => {
                self.admin_prim = None;
                self.note(
                    "tandem prim refused: the peer may hold newer data, or a checker fails; \
                     use --force",
                    out,
                );
            }
            Some(false) => return Choice::Start("administrator: tandem prim".into()),
            None => {}
        }
        if self.memory.peer_may_be_newer {
            return Choice::Nobody(
                "the peer may hold newer data: waiting for it (or tandem prim --force)".into(),
            );
        }
        if !self.can_run(now) {
            return Choice::Nobody(self.cannot_run_why(now));
        }
        Choice::Start("the peer is silent and holds no newer data".into())
    }

    /// Why a SECOND whose peer went silent must not take over, if it must not.
    fn takeover_blocker(&self, now: Instant) -> Option<String> {
        if !self.witness_ok() {
            return Some("no witness answers".into());
        }
        if self.resyncing || !self.in_sync {
            return Some("this node is not in sync".into());
        }
        if let Some(b) = &self.peer {
            if matches!(self.compare(b), Relation::Older | Relation::Diverged | Relation::Empty) {
                return Some("generations say the peer's data is newer".into());
            }
            // Its first word as ALONE may still carry the old generations.
            if b.state == State::Alone {
                return Some("the peer last ran alone: its data may be newer".into());
            }
        }
        if !self.failing.is_empty() || self.blocked_until.is_some_and(|t| now < t) {
            return Some(self.cannot_run_why(now));
        }
        None
    }

    fn cannot_run_why(&self, now: Instant) -> String {
        if !self.memory.consistent {
            "this node's data is incomplete (a resync did not finish)".into()
        } else if let Some(c) = self.failing.iter().next() {
            format!("checker {c} fails")
        } else if self.blocked_until.is_some_and(|t| now < t) {
            "the application failed repeatedly here".into()
        } else if self.hold {
            "held by tandem second".into()
        } else {
            "handing over to the peer".into()
        }
    }

    /// Probes the VIP, and starts once a probe found it free.
    fn try_start(&mut self, now: Instant, reason: String, out: &mut Vec<Command>) {
        if self.vip_clear {
            self.vip_clear = false;
            self.start_running(now, reason, out);
        } else if self.probe_sent.is_none() && self.probe_busy_until.is_none_or(|t| now >= t) {
            self.probe_sent = Some(now);
            out.push(Command::ProbeVip);
        }
    }

    fn start_running(&mut self, now: Instant, reason: String, out: &mut Vec<Command>) {
        // An in-sync SECOND with the same data follows at once: no new generation.
        let with_follower = self.peer_connected(now)
            && self.peer.as_ref().is_some_and(|b| {
                b.state == State::Second && b.consistent && self.compare(b) == Relation::Same
            });
        if self.admin_prim == Some(true) {
            self.memory.peer_may_be_newer = false;
        }
        self.memory.consistent = true;
        if with_follower {
            self.transition(State::Prim, reason, out);
            out.push(Command::ReplicatePrimary);
        } else {
            self.transition(State::Alone, reason, out);
            out.push(Command::NewGeneration);
            out.push(Command::ReplicateAlone);
        }
        self.ensure_running(out);
        self.admin_prim = None;
        self.hold = false;
        self.booting = None;
        self.resume = false;
        self.handing_over_until = None;
        self.swap_request_until = None;
        self.diverged = false;
        self.probe_busy_until = None;
    }

    fn go_alone(&mut self, reason: String, out: &mut Vec<Command>) {
        self.transition(State::Alone, reason, out);
        out.push(Command::NewGeneration);
        out.push(Command::ReplicateAlone);
    }

    fn enter_second(&mut self, reason: String, diverged: bool, out: &mut Vec<Command>) {
        self.transition(State::Second, reason, out);
        out.push(Command::ReplicateSecondary { diverged });
        self.in_sync = false;
        self.resyncing = true;
        self.memory.consistent = false;
        self.hold = false;
        self.booting = None;
        self.resume = false;
        self.admin_prim = None;
        debug_assert!(self.app == Res::Off);
    }
}
