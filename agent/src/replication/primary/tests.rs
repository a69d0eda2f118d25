//! Exact command sequences of the primary core, and a seeded simulation of a primary
//! and a peer with losses, delays and reconnections, checking invariants each step.

use std::collections::{HashMap, VecDeque};

use super::*;

fn rec(path: &str, data: &[u8]) -> Record {
    Record {
        seq: 0,
        dir: 0,
        path: path.as_bytes().to_vec(),
        op: WireOp::Write {
            offset: 0,
            data: data.to_vec(),
        },
    }
}

fn seqs(cmds: &[Command]) -> Vec<u64> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send(Frame::Record(r)) => Some(r.seq),
            _ => None,
        })
        .collect()
}

fn live(p: &mut Primary, now: Instant) {
    let mut out = Vec::new();
    p.handle(Input::Linked, now, &mut out);
    p.handle(Input::ResyncComplete, now, &mut out);
    assert_eq!(out, vec![Command::Send(Frame::ResyncDone { seq: 0 })]);
}

#[test]
fn barrier_waits_for_durable_ack() {
    let t = Instant::now();
    let mut p = Primary::new(Duration::from_secs(1), t);
    live(&mut p, t);
    let mut out = Vec::new();
    p.handle(Input::Captured(vec![rec("a", b"xy")]), t, &mut out);
    p.handle(Input::Barrier(7), t, &mut out);
    assert_eq!(seqs(&out), vec![1, 2]);
    assert_eq!(p.lag_bytes(), 2);
    out.clear();
    p.handle(
        Input::Ack(Ack {
            applied: 2,
            durable: 1,
        }),
        t,
        &mut out,
    );
    assert!(out.is_empty(), "not durable yet: {out:?}");
    assert!(p.in_sync());
    p.handle(
        Input::Ack(Ack {
            applied: 2,
            durable: 2,
        }),
        t,
        &mut out,
    );
    assert_eq!(out, vec![Command::Release(7)]);
    assert_eq!(p.lag_bytes(), 0);
    assert_eq!(p.released_unprotected, 0);
}

/// A capture flush that ends in a barrier of its own (the probes saw the
/// application's previous fsync, or a sync(2) anywhere on the filesystem) used to be
/// followed by the held call's barrier: two syncs at the peer per fsync, and, in the
/// lab, a sync-all the probes report again.
#[test]
fn a_barrier_right_after_a_barrier_waits_for_it() {
    let t = Instant::now();
    let mut p = Primary::new(Duration::from_secs(1), t);
    live(&mut p, t);
    let mut out = Vec::new();
    p.handle(
        Input::Captured(vec![rec("a", b"xy"), barrier()]),
        t,
        &mut out,
    );
    p.handle(Input::Barrier(7), t, &mut out);
    p.handle(Input::Barrier(8), t, &mut out);
    assert_eq!(seqs(&out), vec![1, 2], "no barrier of their own: {out:?}");
    out.clear();
    p.handle(
        Input::Ack(Ack {
            applied: 1,
            durable: 0,
        }),
        t,
        &mut out,
    );
    assert!(out.is_empty(), "not durable yet: {out:?}");
    p.handle(
        Input::Ack(Ack {
            applied: 2,
            durable: 2,
        }),
        t,
        &mut out,
    );
    assert_eq!(out, vec![Command::Release(7), Command::Release(8)]);
    out.clear();
    // Nothing sent since a barrier the peer has made durable: nothing to wait for.
    p.handle(Input::Barrier(9), t, &mut out);
    assert_eq!(out, vec![Command::Release(9)]);
    assert_eq!(p.released_unprotected, 0);
    // After a record, a barrier again.
    p.handle(Input::Captured(vec![rec("a", b"z")]), t, &mut out);
    p.handle(Input::Barrier(10), t, &mut out);
    assert_eq!(seqs(&out), vec![3, 4]);
}

#[test]
fn silent_peer_is_given_up_after_timeout_and_calls_released() {
    let t = Instant::now();
    let mut p = Primary::new(Duration::from_secs(1), t);
    live(&mut p, t);
    let mut out = Vec::new();
    p.handle(Input::Barrier(1), t, &mut out);
    out.clear();
    p.handle(Input::Tick, t + Duration::from_millis(900), &mut out);
    assert!(out.is_empty());
    p.handle(Input::Tick, t + Duration::from_millis(1100), &mut out);
    assert_eq!(
        out,
        vec![
            Command::Drop("the peer acknowledged nothing within the timeout"),
            Command::Release(1)
        ]
    );
    assert_eq!(p.link(), Link::Down);
    assert_eq!(p.released_unprotected, 1);
}

/// A peer that keeps acknowledging a long backlog, but not the barrier a call
/// waits for, is given up once that call has waited the timeout: the barrier
/// listener's own limit comes just after, and a call it lets run is one the
/// primary would not know was unprotected.
#[test]
fn a_call_waiting_longer_than_the_timeout_gives_a_slow_peer_up() {
    let t = Instant::now();
    let mut p = Primary::new(Duration::from_secs(1), t);
    live(&mut p, t);
    let mut out = Vec::new();
    let backlog: Vec<Record> = (0..10).map(|_| rec("a", b"x")).collect();
    p.handle(Input::Captured(backlog), t, &mut out);
    p.handle(Input::Barrier(1), t, &mut out);
    out.clear();
    for i in 1..=10u64 {
        let now = t + Duration::from_millis(100 * i);
        p.handle(
            Input::Ack(Ack {
                applied: i.min(9),
                durable: 0,
            }),
            now,
            &mut out,
        );
        p.handle(Input::Tick, now, &mut out);
        assert!(out.is_empty(), "at {i}: {out:?}");
    }
    p.handle(Input::Tick, t + Duration::from_millis(1001), &mut out);
    assert_eq!(
        out,
        vec![
            Command::Drop("a durability call waited longer than the timeout"),
            Command::Release(1)
        ]
    );
    assert_eq!(p.released_unprotected, 1);
    assert_eq!(p.link(), Link::Down);
}

#[test]
fn live_records_wait_behind_the_resync() {
    let t = Instant::now();
    let mut p = Primary::new(Duration::from_secs(1), t);
    let mut out = Vec::new();
    p.handle(Input::Captured(vec![rec("lost", b"x")]), t, &mut out);
    assert!(out.is_empty(), "nothing is sent without a peer");
    p.handle(Input::Linked, t, &mut out);
    p.handle(Input::Captured(vec![rec("live", b"x")]), t, &mut out);
    p.handle(Input::Barrier(3), t, &mut out);
    assert_eq!(
        out,
        vec![Command::Release(3)],
        "released at once while resyncing"
    );
    out.clear();
    p.handle(Input::Resync(vec![rec("resync", b"r")]), t, &mut out);
    p.handle(Input::ResyncComplete, t, &mut out);
    let order: Vec<String> = out
        .iter()
        .map(|c| match c {
            Command::Send(Frame::Record(r)) => String::from_utf8_lossy(&r.path).into_owned(),
            Command::Send(Frame::ResyncDone { seq }) => format!("done@{seq}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(order, vec!["resync", "done@1", "live", ""]);
    assert_eq!(seqs(&out), vec![1, 2, 3]);
    assert!(!p.in_sync());
    p.handle(
        Input::Ack(Ack {
            applied: 1,
            durable: 1,
        }),
        t,
        &mut out,
    );
    assert!(p.in_sync());
}

#[test]
fn acks_beyond_what_was_sent_are_clipped() {
    let t = Instant::now();
    let mut p = Primary::new(Duration::from_secs(1), t);
    live(&mut p, t);
    let mut out = Vec::new();
    p.handle(Input::Barrier(1), t, &mut out);
    p.handle(
        Input::Ack(Ack {
            applied: u64::MAX,
            durable: u64::MAX,
        }),
        t,
        &mut out,
    );
    assert_eq!(
        p.acked(),
        Ack {
            applied: 1,
            durable: 1
        }
    );
    p.handle(Input::Barrier(2), t, &mut out);
    out.clear();
    p.handle(
        Input::Ack(Ack {
            applied: 1,
            durable: 1,
        }),
        t,
        &mut out,
    );
    assert!(out.is_empty(), "barrier 2 (seq 2) still waits");
}

/// xorshift64*: small, seedable, good enough to drive a simulation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The peer as the simulation sees it: applies records in order, makes them durable
/// at barriers, acknowledges after a delay, and may vanish.
#[derive(Default)]
struct Peer {
    wire: VecDeque<Frame>,
    applied: u64,
    durable: u64,
    barriers: Vec<u64>,
}

fn simulate(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let timeout = Duration::from_millis(1000);
    let start = Instant::now();
    let mut now = start;
    let mut p = Primary::new(timeout, now);
    let mut peer: Option<Peer> = None;
    let mut next_id = 0u64;
    // Waiter -> (barrier seq or None when released unprotected, time held).
    let mut held: HashMap<WaiterId, Instant> = HashMap::new();
    let mut released = std::collections::HashSet::new();
    let mut last_sent = 0u64;
    let mut out = Vec::new();
    let mut silent = false;
    // When the peer last answered with an ack (the core may give up only after a
    // timeout of silence).
    let mut peer_answered = start;
    let mut barrier_seq_of: HashMap<WaiterId, u64> = HashMap::new();
    for step in 0..5000 {
        now += Duration::from_millis(rng.below(50));
        let input = match rng.below(12) {
            0..=3 => Input::Captured(vec![rec("f", &[1; 3])]),
            4 | 5 => {
                next_id += 1;
                held.insert(next_id, now);
                Input::Barrier(next_id)
            }
            6 if peer.is_none() => {
                peer = Some(Peer::default());
                silent = rng.below(4) == 0;
                peer_answered = now;
                last_sent = 0;
                Input::Linked
            }
            7 if p.link() == Link::Resyncing => Input::ResyncComplete,
            8 if peer.is_some() && rng.below(8) == 0 => {
                peer = None;
                Input::Unlinked
            }
            9 | 10 => {
                // The peer works through what it received and acknowledges.
                match peer.as_mut() {
                    Some(pe) if !silent => {
                        while let Some(f) = pe.wire.pop_front() {
                            if let Frame::Record(r) = f {
                                pe.applied = r.seq;
                                if r.op == WireOp::Barrier {
                                    pe.durable = r.seq;
                                    pe.barriers.push(r.seq);
                                }
                            }
                        }
                        peer_answered = now;
                        Input::Ack(Ack {
                            applied: pe.applied,
                            durable: pe.durable,
                        })
                    }
                    _ => Input::Tick,
                }
            }
            _ => Input::Tick,
        };
        let barrier_id = match &input {
            Input::Barrier(id) => Some(*id),
            _ => None,
        };
        out.clear();
        p.handle(input, now, &mut out);
        if let Some(id) = barrier_id {
            // The call covers every record sent before it, whether it got a barrier
            // of its own or waits for the one just before it.
            let cover = out
                .iter()
                .filter_map(|c| match c {
                    Command::Send(Frame::Record(r)) => Some(r.seq),
                    _ => None,
                })
                .max()
                .unwrap_or(last_sent);
            barrier_seq_of.insert(id, cover);
        }
        let durable = p.acked().durable;
        for c in &out {
            match c {
                Command::Send(f) => {
                    if let Frame::Record(r) = f {
                        assert_eq!(r.seq, last_sent + 1, "seed {seed} step {step}: gap");
                        last_sent = r.seq;
                    }
                    let pe = peer.as_mut();
                    assert!(pe.is_some(), "seed {seed} step {step}: send without a peer");
                    if let Some(pe) = pe {
                        pe.wire.push_back(f.clone());
                    }
                }
                Command::Release(id) => {
                    assert!(released.insert(*id), "seed {seed}: {id} released twice");
                    if let Some(&seq) = barrier_seq_of.get(id)
                        && p.link() == Link::Live
                    {
                        assert!(
                            durable >= seq,
                            "seed {seed} step {step}: {id} released before seq {seq} durable"
                        );
                    }
                    held.remove(id);
                }
                Command::Drop(_) => {
                    assert!(
                        silent || now.duration_since(peer_answered) > timeout,
                        "seed {seed} step {step}: a peer that answered {:?} ago was given up",
                        now.duration_since(peer_answered)
                    );
                    peer = None;
                }
            }
        }
        for (id, since) in &held {
            assert!(
                now.duration_since(*since) <= timeout + Duration::from_millis(200),
                "seed {seed} step {step}: {id} held {:?}",
                now.duration_since(*since)
            );
        }
        if step % 7 == 0 {
            out.clear();
            p.handle(Input::Tick, now, &mut out);
            for c in &out {
                if let Command::Release(id) = c {
                    assert!(released.insert(*id), "seed {seed}: {id} released twice");
                    held.remove(id);
                }
                if let Command::Drop(_) = c {
                    peer = None;
                }
            }
        }
    }
}

#[test]
fn seeded_simulation_keeps_invariants() {
    let seeds: u64 = std::env::var("TANDEM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for seed in 1..=seeds {
        simulate(seed);
    }
}
