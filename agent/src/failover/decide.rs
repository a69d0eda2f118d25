//! The engine's decisions, re-evaluated after every event from what it knows: who
//! runs the application, when a SECOND takes over, when a node fences itself.

use std::time::Instant;

use super::{
    engine::{Engine, Handover, Res},
    types::{Beacon, Command, Preference},
};
use crate::{replication::generation::Relation, status::State};

/// What a node that does not run the application should do about it.
pub(super) enum Choice {
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
    pub(super) fn expire(&mut self, now: Instant, out: &mut Vec<Command>) {
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
            self.handover_retry_at = Some(now + self.p.swap_timeout);
            self.note("swap abandoned: the handover did not complete in time", out);
        }
        if due(self.handover_retry_at) {
            self.handover_retry_at = None;
        }
        if due(self.blocked_until) {
            self.blocked_until = None;
        }
        if self
            .probe_sent
            .is_some_and(|s| now >= s + self.p.probe_timeout)
        {
            self.probe_sent = None;
        }
    }

    pub(super) fn decide_running(&mut self, now: Instant, out: &mut Vec<Command>) {
        let peer = self.peer.clone().filter(|_| self.peer_connected(now));
        let following = peer.as_ref().is_some_and(|b| b.state == State::Second);
        let heard = peer.is_some();
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
                // Static, so that both sides agree on who yields whatever they
                // last heard of each other.
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
                if self.app != Res::On || self.vip != Res::On {
                    // A handover aborted (the peer took over unheard): what it
                    // stopped here stays stopped until the peer yields, or this
                    // would be a second runner of its own making.
                    self.note(
                        "the peer runs the application: it yields before this node \
                         resumes",
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
                self.node_handover(now, &b, out);
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
            self.restore(now, heard, out);
        }
    }

    /// Restores the application and the VIP after an abandoned handover (a no-op
    /// while they run). Once the VIP was dropped (the handover was draining) and
    /// the peer is silent, the peer, an in-sync SECOND, may have taken over
    /// meanwhile: the VIP is probed first, as for a takeover, and a VIP that
    /// answers means the application runs elsewhere, so this node fails over
    /// instead of starting a second one.
    fn restore(&mut self, now: Instant, peer_heard: bool, out: &mut Vec<Command>) {
        if self.vip == Res::Off && !peer_heard && !self.vip_clear {
            if self.probe_busy_until.is_some_and(|t| now < t) {
                self.fail_over(
                    "handover abandoned: the peer is silent and another host answers for the \
                     VIP"
                    .into(),
                    out,
                );
            } else if self.probe_sent.is_none() {
                self.probe_sent = Some(now);
                out.push(Command::ProbeVip);
            }
            return;
        }
        self.ensure_running(out);
    }

    pub(super) fn decide_idle(&mut self, now: Instant, out: &mut Vec<Command>) {
        let peer = self.peer.clone().filter(|_| self.peer_connected(now));
        if peer.is_some() {
            // The peer speaks for itself again: the ordinary rules decide.
            self.deferred_takeover = false;
        }
        match peer {
            Some(b) if matches!(b.state, State::Prim | State::Alone) => self.follow(now, &b, out),
            Some(b) => {
                if self.handing_over_until.is_some() && !b.can_run {
                    // The target of this node's handover says it will not run the
                    // application (its copy turned out incomplete, or a checker
                    // fails): waiting for `swap_timeout` would only lengthen the
                    // outage. The ordinary rules decide from here.
                    self.handing_over_until = None;
                    self.note("swap abandoned: the peer cannot run the application", out);
                }
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
                    // Only the node checkers stand in the way: this node's data is
                    // as good as a SECOND's, so it stays ready to take over.
                    self.deferred_takeover = self.data_blocker(now).is_none();
                }
                None => self.try_start(
                    now,
                    "the peer is silent on every network; data in sync; VIP free".into(),
                    out,
                ),
            },
            None if self.deferred_takeover && self.admin_prim.is_none() => {
                self.deferred_takeover(now, out);
            }
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
    pub(super) fn follow(&mut self, now: Instant, b: &Beacon, out: &mut Vec<Command>) {
        if self.admin_prim.take().is_some() {
            self.note(
                "tandem prim refused: the peer runs the application (use tandem swap)",
                out,
            );
        }
        self.handing_over_until = None;
        self.diverged = false;
        if self.state == State::Wait {
            // Our own changes are kept aside when our data moved on from the peer's.
            // The generations alone say so too: an incomplete copy whose own
            // changes a resync did not finish overwriting counts as the older one
            // in `compare`, yet those changes must still be kept aside.
            let moved_on = |r: Relation| {
                matches!(
                    r,
                    Relation::Newer | Relation::Diverged | Relation::PeerEmpty
                )
            };
            let diverged = moved_on(self.compare(b)) || moved_on(self.relation(&b.generations));
            self.ensure_stopped(out);
            self.enter_second(format!("the peer is {}", b.state.as_str()), diverged, out);
        } else if self.p.preference == Preference::ThisNode
            && b.state == State::Prim
            && self.can_run(now)
            && self.swap_request_until.is_none()
            && self.swap_retry_at.is_none()
        {
            self.swap_request_until = Some(now + self.p.swap_timeout);
            self.note(
                "failback: asking the peer to hand over to the preferred node",
                out,
            );
        }
    }

    pub(super) fn act(&mut self, now: Instant, choice: Choice, out: &mut Vec<Command>) {
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
}
