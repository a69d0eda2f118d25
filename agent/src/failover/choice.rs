//! Who should run the application when neither node does: the data generations,
//! the consistency of each copy, the checkers, the witnesses and the
//! administrator's requests decide.

use std::time::Instant;

use super::{
    decide::Choice,
    engine::Engine,
    types::{Beacon, Command, Preference},
};
use crate::{replication::generation::Relation, status::State};

impl Engine {
    /// Neither node runs the application and the peer is heard: the data decides.
    pub(super) fn pair_choice(
        &mut self,
        now: Instant,
        b: &Beacon,
        out: &mut Vec<Command>,
    ) -> Choice {
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
                    && self.failing.is_empty()
                    && !self.node_failing() =>
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
                self.note(
                    "tandem second lifted: the peer cannot run the application",
                    out,
                );
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
                (true, false) => {
                    Choice::Start("same data; the peer cannot run the application".into())
                }
                (false, true) => {
                    Choice::PeerStarts("same data; the peer runs the application".into())
                }
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
    pub(super) fn wins_tie(&self, b: &Beacon) -> bool {
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
    pub(super) fn alone_choice(&mut self, now: Instant, out: &mut Vec<Command>) -> Choice {
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
            Some(false)
                if self.memory.peer_may_be_newer
                    || !self.failing.is_empty()
                    || self.node_failing() =>
            {
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
    pub(super) fn takeover_blocker(&self, now: Instant) -> Option<String> {
        self.data_blocker(now).or_else(|| self.node_why())
    }

    /// [`Self::takeover_blocker`] without the node checkers: what makes a takeover
    /// unsafe or pointless for good, rather than until a checker passes.
    pub(super) fn data_blocker(&self, now: Instant) -> Option<String> {
        if !self.witness_ok() {
            return Some("no witness answers".into());
        }
        if self.resyncing || !self.in_sync {
            return Some("this node is not in sync".into());
        }
        if let Some(b) = &self.peer {
            // Its first word as ALONE may still carry the old generations; and an
            // ALONE source does not wait for this node ([`Self::second_consistency`]).
            if b.state == State::Alone || self.source_alone {
                return Some("the peer last ran alone: its data may be newer".into());
            }
            if matches!(
                self.compare(b),
                Relation::Older | Relation::Diverged | Relation::Empty
            ) {
                return Some("generations say the peer's data is newer".into());
            }
        }
        if !self.failing.is_empty() || self.blocked_until.is_some_and(|t| now < t) {
            return Some(self.cannot_run_why(now));
        }
        None
    }

    pub(super) fn cannot_run_why(&self, now: Instant) -> String {
        if !self.memory.consistent {
            "this node's data is incomplete (a resync did not finish)".into()
        } else if let Some(c) = self.failing.iter().next() {
            format!("checker {c} fails")
        } else if let Some(why) = self.node_why() {
            why
        } else if self.blocked_until.is_some_and(|t| now < t) {
            "the application failed repeatedly here".into()
        } else if self.hold {
            "held by tandem second".into()
        } else {
            "handing over to the peer".into()
        }
    }
}
