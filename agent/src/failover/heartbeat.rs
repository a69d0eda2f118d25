//! Heartbeats: the peer's, received (freshness, what they say about its data) and
//! timed out; this node's, sent periodically and whenever their content changes.

use std::time::Instant;

use super::{
    engine::Engine,
    types::{Beacon, Command},
};
use crate::{replication::generation::Relation, status::State};

impl Engine {
    pub(super) fn on_heartbeat(&mut self, now: Instant, network: usize, beacon: Beacon) {
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
        if self.state == State::Second {
            match beacon.state {
                State::Alone => self.source_alone = true,
                State::Prim => self.source_alone = false,
                _ => {}
            }
        }
        self.peer = Some(beacon);
        self.second_consistency();
    }

    /// A handle call long after the previous one means this process was stalled
    /// (frozen, swapped out): the peer could not be heard meanwhile, so the time
    /// each network had left is given back instead of declaring the peer lost.
    pub(super) fn catch_up(&mut self, now: Instant) {
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
    pub(super) fn heartbeat(&mut self, now: Instant, out: &mut Vec<Command>) {
        let mut beacon = Beacon {
            incarnation: self.p.incarnation,
            seq: 0,
            state: self.state,
            generations: self.gens.clone(),
            consistent: match self.state {
                State::Prim | State::Alone => true,
                State::Second => self.in_sync && !self.resyncing && !self.source_alone,
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
