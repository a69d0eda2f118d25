//! The engine's actions: administrator commands, application failures, handovers,
//! and the bookkeeping every decision shares (resources, transitions, log lines).

use std::time::Instant;

use super::{
    engine::{Engine, Handover, Res},
    types::Command,
};
use crate::{replication::generation::Relation, status::State};

impl Engine {
    pub(super) fn admin_second(&mut self, now: Instant, out: &mut Vec<Command>) {
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
                self.note(
                    "tandem second: waiting for the peer to run the application",
                    out,
                );
            }
        }
    }

    pub(super) fn admin_swap(&mut self, now: Instant, out: &mut Vec<Command>) {
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
        self.note(
            "swap: stopping the application to hand over to the peer",
            out,
        );
        self.app = Res::Off;
        out.push(Command::StopApplication);
    }

    /// A failure of the running application: restart it here, or fail over once the
    /// restarts allowed in the window are used up.
    pub(super) fn app_failure(&mut self, now: Instant, what: &str, out: &mut Vec<Command>) {
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
            self.fail_over(
                format!("{what}: {max} restarts within {window:?} used up; failing over"),
                out,
            );
        }
    }

    /// Stops running the application here so that the peer may take over.
    pub(super) fn fail_over(&mut self, reason: String, out: &mut Vec<Command>) {
        self.ensure_stopped(out);
        out.push(Command::ReplicateStop);
        self.handover = None;
        self.transition(State::Wait, reason, out);
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
        if to != State::Wait {
            self.deferred_takeover = false;
        }
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
        self.deferred_takeover = false;
        self.handover_retry_at = None;
    }

    /// Probes the VIP, and starts once a probe found it free; waits first for every
    /// node checker's first result.
    pub(super) fn try_start(&mut self, now: Instant, reason: String, out: &mut Vec<Command>) {
        if let Some(name) = self.node_pending() {
            let msg = format!("waiting for the first result of node checker {name}");
            self.note(&msg, out);
            return;
        }
        if self.vip_clear {
            self.vip_clear = false;
            self.start_running(now, reason, out);
        } else if self.probe_sent.is_none() && self.probe_busy_until.is_none_or(|t| now >= t) {
            self.probe_sent = Some(now);
            out.push(Command::ProbeVip);
        }
    }

    pub(super) fn start_running(&mut self, now: Instant, reason: String, out: &mut Vec<Command>) {
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

    pub(super) fn go_alone(&mut self, reason: String, out: &mut Vec<Command>) {
        self.transition(State::Alone, reason, out);
        out.push(Command::NewGeneration);
        out.push(Command::ReplicateAlone);
    }

    pub(super) fn enter_second(&mut self, reason: String, diverged: bool, out: &mut Vec<Command>) {
        self.transition(State::Second, reason, out);
        out.push(Command::ReplicateSecondary { diverged });
        self.source_alone = self.peer_state() == Some(State::Alone);
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
