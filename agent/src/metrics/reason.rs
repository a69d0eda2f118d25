//! The reason class of a failover, for `tandem_failovers_total{reason}`.
//!
//! A transition's reason is free text meant for people; a label must take few,
//! stable values. The class is therefore derived from facts the failover actor
//! has at the moment of the transition: the state left, whether an
//! administrator's `tandem prim` was pending, and what the peer was last heard to
//! be. docs/metrics.md lists the classes.

use crate::status::State;

/// Why a node started running the application.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum FailoverReason {
    /// `tandem prim` (with or without `--force`) on this node.
    Admin,
    /// A SECOND took over a peer it no longer hears on any network.
    PeerLost,
    /// A SECOND took over a peer that is heard but gave the application up (a
    /// failing checker or application, `tandem stop` there).
    PeerStopped,
    /// A SECOND took over from a peer that handed over and became SECOND itself
    /// (`tandem swap`, failback to the preferred node, `tandem second` there).
    Swap,
    /// A WAIT node started the application by the pair's ordinary choice: when
    /// the agents start, or once it may run after having had to wait.
    Start,
}

impl FailoverReason {
    /// Every class, in the order the documentation lists them.
    pub const ALL: [Self; 5] = [
        Self::PeerLost,
        Self::PeerStopped,
        Self::Swap,
        Self::Admin,
        Self::Start,
    ];

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::PeerLost => "peer_lost",
            Self::PeerStopped => "peer_stopped",
            Self::Swap => "swap",
            Self::Start => "start",
        }
    }
}

/// The class of the transition `from` → `to`, or `None` when it is not a
/// failover: only entering PRIM or ALONE from WAIT or SECOND counts (ALONE →
/// PRIM and PRIM → ALONE change the peer's part, not who runs the application).
/// `peer` is the peer's state when it is heard, `None` when it is silent.
#[must_use]
pub fn classify_failover(
    from: State,
    to: State,
    admin_pending: bool,
    peer: Option<State>,
) -> Option<FailoverReason> {
    if !matches!(to, State::Prim | State::Alone) || !matches!(from, State::Wait | State::Second) {
        return None;
    }
    Some(if admin_pending {
        FailoverReason::Admin
    } else if from == State::Wait {
        FailoverReason::Start
    } else {
        match peer {
            None => FailoverReason::PeerLost,
            Some(State::Second) => FailoverReason::Swap,
            Some(_) => FailoverReason::PeerStopped,
        }
    })
}
