//! Anti-replay for one peer on one network: which authenticated heartbeats are new.
//!
//! A packet is identified by (epoch, seq). Within an epoch the sequence number must
//! strictly increase (heartbeats are idempotent, so a reordered one is as good as
//! lost). Epochs are random per start and carry no order, so an old epoch is told
//! from a new one by two means:
//! - epochs this guard has seen replaced are remembered ([`RETIRED_EPOCHS`] of them)
//!   and refused for good;
//! - a different epoch replaces the current one only with a *fresh* packet, one that
//!   echoes a packet we sent within the freshness window. A recording of a past
//!   epoch echoes our own past, so it can never take over, not even right after
//!   our restart, when we remember nothing.
//!
//! A non-fresh packet from a new epoch is a *candidate*: its sequence number is
//! tracked (so that we echo it, which lets the peer's next packet become fresh) but
//! it is not delivered. Two nodes that start at once thus verify each other within
//! about two heartbeat intervals.

use std::collections::VecDeque;

/// The guard's decision on one authenticated packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Verdict {
    /// New and fresh: deliver it. `new_epoch` when it replaced the peer's epoch.
    Accept { new_epoch: bool },
    /// An epoch we saw replaced: a replay of a past run of the peer.
    OldEpoch,
    /// Its sequence number is not above the last one seen in its epoch.
    Replay,
    /// New but not fresh: echo it, do not deliver it.
    Unverified,
}

/// Per-peer, per-network replay state.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    /// The epoch whose fresh packets are delivered, and its last sequence number.
    current: Option<Track>,
    /// A different epoch seen without a fresh packet yet.
    candidate: Option<Track>,
    /// Epochs replaced by another, newest last.
    retired: VecDeque<u64>,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Track {
    epoch: u64,
    last_seq: u64,
}

// === impl ReplayGuard ===

impl ReplayGuard {
    /// Decides on a packet whose tag verified; `fresh` says whether it echoes one of
    /// our recent packets. Updates the state only for packets that are not replays.
    pub(crate) fn handle_packet(&mut self, epoch: u64, seq: u64, fresh: bool) -> Verdict {
        if self.retired.contains(&epoch) {
            return Verdict::OldEpoch;
        }
        if let Some(current) = &mut self.current
            && current.epoch == epoch
        {
            if seq <= current.last_seq {
                return Verdict::Replay;
            }
            current.last_seq = seq;
            return if fresh {
                Verdict::Accept { new_epoch: false }
            } else {
                Verdict::Unverified
            };
        }
        if let Some(candidate) = &self.candidate
            && candidate.epoch == epoch
            && seq <= candidate.last_seq
        {
            return Verdict::Replay;
        }
        let track = Track {
            epoch,
            last_seq: seq,
        };
        if !fresh {
            self.candidate = Some(track);
            return Verdict::Unverified;
        }
        self.candidate = None;
        if let Some(old) = self.current.replace(track) {
            self.retired.push_back(old.epoch);
            if self.retired.len() > RETIRED_EPOCHS {
                self.retired.pop_front();
            }
        }
        Verdict::Accept { new_epoch: true }
    }

    /// The peer's epoch whose packets are being delivered, if any.
    #[cfg(test)]
    pub(crate) fn current_epoch(&self) -> Option<u64> {
        self.current.map(|t| t.epoch)
    }
}

/// How many replaced epochs are remembered (a peer restarting this often within one
/// run of ours is already a fault worth seeing).
pub(crate) const RETIRED_EPOCHS: usize = 64;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn same_epoch_must_increase() {
        let mut g = ReplayGuard::default();
        assert_eq!(
            g.handle_packet(7, 1, true),
            Verdict::Accept { new_epoch: true }
        );
        assert_eq!(
            g.handle_packet(7, 2, true),
            Verdict::Accept { new_epoch: false }
        );
        assert_eq!(g.handle_packet(7, 2, true), Verdict::Replay);
        assert_eq!(g.handle_packet(7, 1, true), Verdict::Replay);
        assert_eq!(
            g.handle_packet(7, 9, true),
            Verdict::Accept { new_epoch: false }
        );
    }

    #[test]
    fn replaced_epoch_is_refused_for_good() {
        let mut g = ReplayGuard::default();
        g.handle_packet(1, 5, true);
        assert_eq!(
            g.handle_packet(2, 1, true),
            Verdict::Accept { new_epoch: true }
        );
        assert_eq!(g.handle_packet(1, 6, true), Verdict::OldEpoch);
        assert_eq!(g.current_epoch(), Some(2));
    }

    #[test]
    fn unverified_epoch_does_not_displace_current() {
        let mut g = ReplayGuard::default();
        g.handle_packet(1, 5, true);
        assert_eq!(g.handle_packet(3, 100, false), Verdict::Unverified);
        assert_eq!(g.current_epoch(), Some(1));
        assert_eq!(
            g.handle_packet(1, 6, true),
            Verdict::Accept { new_epoch: false }
        );
        // The candidate's sequence is tracked too.
        assert_eq!(g.handle_packet(3, 100, true), Verdict::Replay);
        assert_eq!(
            g.handle_packet(3, 101, true),
            Verdict::Accept { new_epoch: true }
        );
    }

    #[test]
    fn stale_packet_of_current_epoch_is_not_delivered() {
        let mut g = ReplayGuard::default();
        g.handle_packet(1, 1, true);
        assert_eq!(g.handle_packet(1, 2, false), Verdict::Unverified);
        assert_eq!(g.handle_packet(1, 2, true), Verdict::Replay);
    }

    proptest! {
        /// Whatever the sequence of packets, no (epoch, seq) is ever accepted twice,
        /// and no accepted epoch comes back once replaced.
        #[test]
        fn never_accepts_twice(packets in proptest::collection::vec(
            (0u64..4, 0u64..20, any::<bool>()), 0..200)) {
            let mut g = ReplayGuard::default();
            let mut accepted = std::collections::HashSet::new();
            let mut replaced = std::collections::HashSet::new();
            for (epoch, seq, fresh) in packets {
                let before = g.current_epoch();
                if let Verdict::Accept { .. } = g.handle_packet(epoch, seq, fresh) {
                    prop_assert!(accepted.insert((epoch, seq)));
                    prop_assert!(!replaced.contains(&epoch));
                    if let Some(b) = before && b != epoch {
                        replaced.insert(b);
                    }
                }
            }
        }
    }
}
