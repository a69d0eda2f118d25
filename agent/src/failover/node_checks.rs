//! Node checkers: what this node needs to run the application (a mount, a link, a
//! daemon, a licence), checked in every state. Unlike the application's checkers,
//! which say the running application is unwell, a node checker says this node
//! could not run the application, wherever it currently runs.
//!
//! ```text
//!  NodeCheckerFailed ──▶ can_run = false (told to the peer in every heartbeat)
//!    SECOND:      does not take over; if the peer goes silent meanwhile: WAIT,
//!                 and takes over once the checker passes (deferred takeover)
//!    PRIM/ALONE:  hands the application to an in-sync SECOND that can run it;
//!                 with none, keeps running here (stopping would help nobody)
//!    WAIT:        starts nothing
//!  NodeCheckerOk ─────▶ eligible again
//! ```
//!
//! SafeKit's node-level checkers (ping, interface) use its `wait` action, which
//! stops the application even when no other node can run it, so that both nodes
//! losing their router leaves the service stopped. Here a running application is
//! only moved, never stopped for a node checker: a node whose uplink, mount or
//! daemon is gone serves no worse by running on, and the service comes back by
//! itself when the fault clears, as when the witness alone is lost. A node that
//! does not run the application never starts it while a node checker fails.

use std::time::Instant;

use super::{
    engine::Engine,
    types::{Beacon, Command, NodeCheck},
};

impl Engine {
    /// A node checker's result: a first result, a failure or a recovery.
    pub(super) fn on_node_check(
        &mut self,
        now: Instant,
        checker: String,
        passing: bool,
        out: &mut Vec<Command>,
    ) {
        let new = if passing {
            NodeCheck::Passing
        } else {
            NodeCheck::Failing
        };
        let old = self.node_checks.insert(checker.clone(), new);
        if old == Some(new) {
            return;
        }
        let msg = match new {
            // The handover that follows says so (see `node_handover`).
            NodeCheck::Failing if self.running() && self.peer_can_take_over(now) => return,
            NodeCheck::Failing if self.running() => format!(
                "node checker {checker} failed: no peer can take the application over, so it \
                 keeps running here"
            ),
            NodeCheck::Failing => format!(
                "node checker {checker} failed: this node cannot run the application until it \
                 passes"
            ),
            NodeCheck::Passing if old == Some(NodeCheck::Failing) => {
                format!("node checker {checker} passes again")
            }
            // A first result that passes is what is expected: not worth a line.
            NodeCheck::Passing | NodeCheck::Pending => return,
        };
        self.note(&msg, out);
    }

    /// Some node checker crossed its failure threshold.
    pub(super) fn node_failing(&self) -> bool {
        self.node_checks.values().any(|c| *c == NodeCheck::Failing)
    }

    /// Why the node checkers keep this node from running the application, if they
    /// do.
    pub(super) fn node_why(&self) -> Option<String> {
        self.node_checks
            .iter()
            .find(|(_, c)| **c == NodeCheck::Failing)
            .map(|(name, _)| format!("node checker {name} fails"))
    }

    /// A node checker without a result yet: nothing starts here until it has one,
    /// so that a node does not start the application in the moment before it
    /// learns it cannot run it.
    pub(super) fn node_pending(&self) -> Option<&str> {
        self.node_checks
            .iter()
            .find(|(_, c)| **c == NodeCheck::Pending)
            .map(|(name, _)| name.as_str())
    }

    /// A runner whose node checker fails hands the application over to its SECOND
    /// `b` once that SECOND is in sync and able to run it. Re-evaluated after every
    /// event, so a SECOND that catches up or recovers later still gets it.
    pub(super) fn node_handover(&mut self, now: Instant, b: &Beacon, out: &mut Vec<Command>) {
        let ready = b.consistent && b.can_run;
        let may_retry = self.handover_retry_at.is_none_or(|t| now >= t);
        if self.handover.is_some() || !ready || !may_retry {
            return;
        }
        let Some(why) = self.node_why() else {
            return;
        };
        self.note(
            &format!("{why}: handing the application over to the peer"),
            out,
        );
        self.begin_handover(now, out);
    }

    /// A WAIT node whose takeover was deferred by its node checkers, the peer still
    /// silent: takes over once they pass, or gives the takeover up when something
    /// else now stands in the way (then only the ordinary rules of a WAIT node
    /// apply).
    pub(super) fn deferred_takeover(&mut self, now: Instant, out: &mut Vec<Command>) {
        if let Some(why) = self.data_blocker(now) {
            self.deferred_takeover = false;
            self.note(&format!("deferred takeover given up: {why}"), out);
        } else if self.can_run(now) {
            self.try_start(
                now,
                "node checkers pass again; the peer is still silent on every network; data in \
                 sync as of its loss; VIP free"
                    .into(),
                out,
            );
        }
    }
}
