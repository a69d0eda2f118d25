//! The primary's protocol core, sans-IO: captured records and durability points in,
//! frames to send and calls to release out. Time is passed in; the runtime performs
//! every I/O the commands name, in order.
//!
//! Invariants (checked by the tests and the simulation in `sim.rs`):
//! - records reach the peer with strictly increasing sequence numbers, in capture
//!   order, live records never before the resync that precedes them;
//! - a durability point is released while linked and in sync only once the peer
//!   reports every record up to it durable; otherwise (no peer, resyncing) at once,
//!   and the node is not in sync then;
//! - a peer that acknowledges nothing for `timeout` while something waits, or
//!   whose acknowledgements leave a held call waiting longer than `timeout`, is
//!   given up: every waiting call is released and the node goes ALONE.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use agent_common::wire::{Ack, Frame, Record, WireOp};

/// Identifies one held durability call.
pub type WaiterId = u64;

/// What the runtime tells the core.
#[derive(Debug)]
pub enum Input {
    /// Records from capture, in order (their `seq` is assigned here).
    Captured(Vec<Record>),
    /// A durability call waiting for everything captured before it.
    Barrier(WaiterId),
    /// The peer is connected, authenticated and is the resync target.
    Linked,
    /// Records that bring the peer's copy to ours (from the resync compare).
    Resync(Vec<Record>),
    /// The resync compare is over.
    ResyncComplete,
    Ack(Ack),
    /// The connection is gone.
    Unlinked,
    Tick,
}

/// What the core asks the runtime to do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Send(Frame),
    Release(WaiterId),
    /// Close the connection: the peer stopped answering.
    Drop(&'static str),
}

/// Where the link stands.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Link {
    Down,
    Resyncing,
    Live,
}

/// The primary's replication state.
#[derive(Debug)]
pub struct Primary {
    link: Link,
    timeout: Duration,
    last_seq: u64,
    /// The record the last resync ended at; in sync once it is durable.
    resync_done: Option<u64>,
    acked: Ack,
    last_progress: Instant,
    /// Sent and not yet applied: (seq, data bytes).
    inflight: VecDeque<(u64, u64)>,
    inflight_bytes: u64,
    /// Live records held while a resync runs.
    held: VecDeque<Record>,
    held_bytes: u64,
    /// Held calls by the barrier they wait for, with when each arrived.
    waiters: BTreeMap<u64, Vec<(WaiterId, Instant)>>,
    /// Whether the last record sent on this link is a `Barrier`: a durability point
    /// with nothing sent since then waits for that barrier rather than sending one
    /// of its own, which would cost the peer another sync of nothing.
    barrier_last: bool,
    /// Calls released without the peer having the data, and why.
    pub released_unprotected: u64,
}

impl Primary {
    #[must_use]
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            link: Link::Down,
            timeout,
            last_seq: 0,
            resync_done: None,
            acked: Ack::default(),
            last_progress: now,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            waiters: BTreeMap::new(),
            barrier_last: false,
            released_unprotected: 0,
        }
    }

    #[must_use]
    pub fn link(&self) -> Link {
        self.link
    }

    /// Whether the peer holds everything up to the last resync and is live: a
    /// durability point then waits for it.
    #[must_use]
    pub fn in_sync(&self) -> bool {
        self.link == Link::Live && self.resync_done.is_some_and(|s| self.acked.durable >= s)
    }

    /// Data bytes captured and not yet applied by the peer.
    #[must_use]
    pub fn lag_bytes(&self) -> u64 {
        self.inflight_bytes + self.held_bytes
    }

    /// Whether the runtime should take more captured records now (bounded memory).
    #[must_use]
    pub fn wants_more(&self, limit: u64) -> bool {
        self.lag_bytes() < limit
    }

    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    #[must_use]
    pub fn acked(&self) -> Ack {
        self.acked
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input, now: Instant, out: &mut Vec<Command>) {
        match input {
            Input::Captured(records) => {
                for r in records {
                    match self.link {
                        Link::Live => {
                            self.send(r, now, out);
                        }
                        Link::Resyncing => {
                            self.held_bytes += r.data_len();
                            self.held.push_back(r);
                        }
                        // Nobody to send to: the resync on return covers it.
                        Link::Down => {}
                    }
                }
            }
            Input::Barrier(id) => {
                if self.link == Link::Live && self.resync_done.is_some() {
                    self.wait_for_barrier(id, now, out);
                } else {
                    if self.link == Link::Resyncing {
                        self.held.push_back(barrier());
                    }
                    self.released_unprotected += 1;
                    out.push(Command::Release(id));
                }
            }
            Input::Linked => {
                self.link = Link::Resyncing;
                self.resync_done = None;
                self.acked = Ack::default();
                self.last_seq = 0;
                self.inflight.clear();
                self.inflight_bytes = 0;
                self.barrier_last = false;
                self.last_progress = now;
            }
            Input::Resync(records) => {
                if self.link == Link::Resyncing {
                    for r in records {
                        self.send(r, now, out);
                    }
                }
            }
            Input::ResyncComplete => {
                if self.link == Link::Resyncing {
                    self.resync_done = Some(self.last_seq);
                    out.push(Command::Send(Frame::ResyncDone { seq: self.last_seq }));
                    self.link = Link::Live;
                    let held = std::mem::take(&mut self.held);
                    self.held_bytes = 0;
                    for r in held {
                        self.send(r, now, out);
                    }
                }
            }
            Input::Ack(ack) => self.on_ack(ack, now, out),
            Input::Unlinked => self.unlink(out),
            Input::Tick => {
                let waiting = !self.waiters.is_empty() || !self.inflight.is_empty();
                if self.link != Link::Down
                    && waiting
                    && now.duration_since(self.last_progress) > self.timeout
                {
                    out.push(Command::Drop(
                        "the peer acknowledged nothing within the timeout",
                    ));
                    self.unlink(out);
                } else if self.link != Link::Down && self.oldest_wait(now) > self.timeout {
                    // A peer that acknowledges, but too slowly for a call that waits
                    // (a long backlog ahead of its barrier), is given up too: the call
                    // must not wait longer, and the listener's own limit, just after
                    // this one, would let it run without anyone knowing the peer
                    // lacks what it covers.
                    out.push(Command::Drop(
                        "a durability call waited longer than the timeout",
                    ));
                    self.unlink(out);
                }
            }
        }
    }

    /// Makes waiter `id` wait for a barrier covering everything sent so far: the
    /// last record when it is one, else a new one.
    fn wait_for_barrier(&mut self, id: WaiterId, now: Instant, out: &mut Vec<Command>) {
        if !self.barrier_last {
            let seq = self.send(barrier(), now, out);
            self.waiters.entry(seq).or_default().push((id, now));
            return;
        }
        // A capture flush often ends with a barrier of its own (the application's
        // previous fsync seen by the probes, a sync(2) anywhere on the filesystem),
        // right before the held call's: one barrier covers both.
        if self.acked.durable >= self.last_seq {
            out.push(Command::Release(id));
            return;
        }
        if self.inflight.is_empty() && self.waiters.is_empty() {
            // As in `send`: the peer's silence counts from the first thing it owes.
            self.last_progress = now;
        }
        self.waiters
            .entry(self.last_seq)
            .or_default()
            .push((id, now));
    }

    fn send(&mut self, mut r: Record, now: Instant, out: &mut Vec<Command>) -> u64 {
        if self.inflight.is_empty() && self.waiters.is_empty() {
            // The peer owed us nothing until now: its silence counts from here.
            self.last_progress = now;
        }
        self.barrier_last = r.op == WireOp::Barrier;
        self.last_seq += 1;
        r.seq = self.last_seq;
        let bytes = r.data_len();
        self.inflight.push_back((r.seq, bytes));
        self.inflight_bytes += bytes;
        out.push(Command::Send(Frame::Record(r)));
        self.last_seq
    }

    fn on_ack(&mut self, ack: Ack, now: Instant, out: &mut Vec<Command>) {
        if self.link == Link::Down {
            return;
        }
        // An ack for records never sent is a broken peer: believe only what we sent.
        let ack = Ack {
            applied: ack.applied.min(self.last_seq),
            durable: ack.durable.min(self.last_seq),
        };
        if ack.applied > self.acked.applied || ack.durable > self.acked.durable {
            self.last_progress = now;
        }
        self.acked.applied = self.acked.applied.max(ack.applied);
        self.acked.durable = self.acked.durable.max(ack.durable);
        while let Some(&(seq, bytes)) = self.inflight.front() {
            if seq > self.acked.applied {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        let durable = self.acked.durable;
        let later = self.waiters.split_off(&(durable + 1));
        for (_, ids) in std::mem::replace(&mut self.waiters, later) {
            out.extend(ids.into_iter().map(|(id, _)| Command::Release(id)));
        }
    }

    /// How long the longest-waiting held call has waited.
    fn oldest_wait(&self, now: Instant) -> Duration {
        // Calls arrive in barrier order, so the first barrier's first call is the
        // oldest.
        self.waiters
            .values()
            .next()
            .and_then(|ids| ids.first())
            .map_or(Duration::ZERO, |&(_, since)| now.duration_since(since))
    }

    fn unlink(&mut self, out: &mut Vec<Command>) {
        self.link = Link::Down;
        self.resync_done = None;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.held.clear();
        self.held_bytes = 0;
        for (_, ids) in std::mem::take(&mut self.waiters) {
            self.released_unprotected += ids.len() as u64;
            out.extend(ids.into_iter().map(|(id, _)| Command::Release(id)));
        }
    }
}

fn barrier() -> Record {
    Record {
        seq: 0,
        dir: 0,
        path: Vec::new(),
        op: WireOp::Barrier,
    }
}

#[cfg(test)]
mod tests;
