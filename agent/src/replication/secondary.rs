//! The secondary's protocol core, sans-IO: frames from the primary in, records to
//! apply, syncs and acknowledgements out.
//!
//! Records are applied strictly in sequence; a barrier makes everything before it
//! durable before anything after it is applied, which is what keeps the copy a state
//! the primary's files could have been left in by a power cut. Acknowledgements are
//! sent at once after a barrier (an application waits for it) and otherwise batched.

use std::time::{Duration, Instant};

use agent_common::wire::{Ack, Frame, Record, WireOp};

/// How often progress is acknowledged when no barrier asks for it.
pub const ACK_EVERY: Duration = Duration::from_millis(20);

/// What the runtime must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Apply this record to the local directory with the given index.
    Apply {
        local: usize,
        record: Record,
    },
    /// Make everything applied so far durable.
    Sync,
    Send(Frame),
    /// The copy is now identical to the primary's as of the resync: adopt its
    /// generations.
    InSync,
    /// The primary broke the protocol: close with this message.
    Close(String),
}

/// The secondary's replication state for one connection.
#[derive(Debug)]
pub struct Secondary {
    /// The primary's directory indexes mapped to ours.
    dirs: Vec<usize>,
    applied: u64,
    durable: u64,
    acked: Ack,
    last_ack: Instant,
    resync_done: Option<u64>,
    in_sync: bool,
    /// `applied` at this session's last sync: a barrier with nothing applied since
    /// needs none. (Before the first one, records of an earlier session may not be
    /// durable yet, so the first barrier always syncs.)
    synced_at: Option<u64>,
}

impl Secondary {
    /// `dirs[i]` is our index of the primary's directory `i`.
    #[must_use]
    pub fn new(dirs: Vec<usize>, now: Instant) -> Self {
        Self {
            dirs,
            applied: 0,
            durable: 0,
            acked: Ack::default(),
            last_ack: now,
            resync_done: None,
            in_sync: false,
            synced_at: None,
        }
    }

    #[must_use]
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    #[must_use]
    pub fn resync_done(&self) -> bool {
        self.resync_done.is_some()
    }

    #[must_use]
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// One frame from the primary.
    pub fn on_frame(&mut self, frame: Frame, out: &mut Vec<Command>) {
        match frame {
            Frame::Record(r) => {
                if r.seq != self.applied + 1 {
                    out.push(Command::Close(format!(
                        "record {} after {}: out of sequence",
                        r.seq, self.applied
                    )));
                    return;
                }
                let Some(&local) = self.dirs.get(usize::from(r.dir)) else {
                    out.push(Command::Close(format!(
                        "record {} names unknown directory {}",
                        r.seq, r.dir
                    )));
                    return;
                };
                let barrier = r.op == WireOp::Barrier;
                let before = self.applied;
                self.applied = r.seq;
                if !barrier {
                    out.push(Command::Apply { local, record: r });
                    return;
                }
                // Every sync is a syncfs(2) (or several fsyncs): a barrier that
                // follows another with nothing between costs the disk nothing new,
                // and in the lab, where both agents share a kernel, each sync is a
                // sync-all the primary's probes report.
                if self.synced_at != Some(before) {
                    out.push(Command::Sync);
                }
                self.synced_at = Some(self.applied);
                self.durable = self.applied;
                self.settle(out);
                self.ack(out);
            }
            Frame::ResyncDone { seq } => {
                if seq != self.applied {
                    out.push(Command::Close(format!(
                        "resync done at {seq} but {} records came",
                        self.applied
                    )));
                    return;
                }
                // The resync's records must be durable before the copy counts as
                // the primary's: sync now rather than at the next barrier.
                self.resync_done = Some(seq);
                out.push(Command::Sync);
                self.synced_at = Some(self.applied);
                self.durable = self.applied;
                self.settle(out);
                self.ack(out);
            }
            Frame::Error { message } => {
                out.push(Command::Close(format!("primary refused: {message}")))
            }
            other => out.push(Command::Close(format!(
                "unexpected frame {}",
                frame_name(&other)
            ))),
        }
    }

    /// Time passes: acknowledge what was applied since the last ack.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.applied > self.acked.applied && now.duration_since(self.last_ack) >= ACK_EVERY {
            self.last_ack = now;
            self.ack(out);
        }
    }

    fn settle(&mut self, out: &mut Vec<Command>) {
        if !self.in_sync && self.resync_done.is_some_and(|s| self.durable >= s) {
            self.in_sync = true;
            out.push(Command::InSync);
        }
    }

    fn ack(&mut self, out: &mut Vec<Command>) {
        self.acked = Ack {
            applied: self.applied,
            durable: self.durable,
        };
        out.push(Command::Send(Frame::Ack(self.acked)));
    }
}

/// A frame's name for logs (never its content, which may be large or hostile).
#[must_use]
pub fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "hello",
        Frame::Record(_) => "record",
        Frame::Ack(_) => "ack",
        Frame::Manifest(_) => "manifest",
        Frame::ManifestDone => "manifest-done",
        Frame::ManifestRequest(_) => "manifest-request",
        Frame::ResyncDone { .. } => "resync-done",
        Frame::Error { .. } => "error",
    }
}

/// A record operation's name for logs (never its content).
#[must_use]
pub fn op_name(op: &WireOp) -> &'static str {
    match op {
        WireOp::Write { .. } => "write",
        WireOp::Punch { .. } => "punch",
        WireOp::Truncate { .. } => "truncate",
        WireOp::Create { .. } => "create",
        WireOp::Remove => "remove",
        WireOp::Rename { .. } => "rename",
        WireOp::Exchange { .. } => "exchange",
        WireOp::Link { .. } => "link",
        WireOp::SetAttrs(_) => "set-attrs",
        WireOp::Barrier => "barrier",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64, op: WireOp) -> Frame {
        Frame::Record(Record {
            seq,
            dir: 0,
            path: b"f".to_vec(),
            op,
        })
    }

    #[test]
    fn applies_in_order_syncs_at_barriers_and_acks() {
        let t = Instant::now();
        let mut s = Secondary::new(vec![3], t);
        let mut out = Vec::new();
        s.on_frame(Frame::ResyncDone { seq: 0 }, &mut out);
        assert_eq!(
            out,
            vec![
                Command::Sync,
                Command::InSync,
                Command::Send(Frame::Ack(Ack::default()))
            ]
        );
        out.clear();
        s.on_frame(r(1, WireOp::Truncate { size: 0 }), &mut out);
        assert!(matches!(&out[..], [Command::Apply { local: 3, .. }]));
        out.clear();
        s.on_frame(r(2, WireOp::Barrier), &mut out);
        assert_eq!(
            out,
            vec![
                Command::Sync,
                Command::Send(Frame::Ack(Ack {
                    applied: 2,
                    durable: 2
                }))
            ]
        );
    }

    /// A barrier right after a barrier (or after the resync's end) has nothing new
    /// to make durable: no second sync, but an acknowledgement all the same.
    #[test]
    fn a_barrier_with_nothing_applied_since_the_last_sync_does_not_sync() {
        let t = Instant::now();
        let mut s = Secondary::new(vec![0], t);
        let mut out = Vec::new();
        s.on_frame(r(1, WireOp::Barrier), &mut out);
        assert_eq!(
            out.first(),
            Some(&Command::Sync),
            "the session's first syncs"
        );
        out.clear();
        s.on_frame(r(2, WireOp::Barrier), &mut out);
        let ack = |n| {
            Command::Send(Frame::Ack(Ack {
                applied: n,
                durable: n,
            }))
        };
        assert_eq!(out, vec![ack(2)]);
        out.clear();
        s.on_frame(Frame::ResyncDone { seq: 2 }, &mut out);
        assert_eq!(out, vec![Command::Sync, Command::InSync, ack(2)]);
        out.clear();
        s.on_frame(r(3, WireOp::Barrier), &mut out);
        assert_eq!(out, vec![ack(3)]);
        out.clear();
        s.on_frame(r(4, WireOp::Truncate { size: 0 }), &mut out);
        s.on_frame(r(5, WireOp::Barrier), &mut out);
        assert!(out.contains(&Command::Sync), "{out:?}");
    }

    #[test]
    fn gaps_unknown_dirs_and_stray_frames_close() {
        let t = Instant::now();
        let mut out = Vec::new();
        Secondary::new(vec![0], t).on_frame(r(2, WireOp::Barrier), &mut out);
        assert!(matches!(&out[..], [Command::Close(_)]));
        out.clear();
        let mut s = Secondary::new(vec![], t);
        s.on_frame(r(1, WireOp::Barrier), &mut out);
        assert!(matches!(&out[..], [Command::Close(_)]));
        out.clear();
        s.on_frame(Frame::ManifestDone, &mut out);
        assert!(matches!(&out[..], [Command::Close(_)]));
    }

    #[test]
    fn not_in_sync_until_the_resync_is_durable() {
        let t = Instant::now();
        let mut s = Secondary::new(vec![0], t);
        let mut out = Vec::new();
        s.on_frame(r(1, WireOp::Truncate { size: 1 }), &mut out);
        assert!(!s.in_sync());
        s.on_tick(t + ACK_EVERY, &mut out);
        assert!(out.contains(&Command::Send(Frame::Ack(Ack {
            applied: 1,
            durable: 0
        }))));
        s.on_frame(Frame::ResyncDone { seq: 1 }, &mut out);
        assert!(s.in_sync());
    }
}
