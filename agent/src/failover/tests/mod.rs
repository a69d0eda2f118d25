//! Exact command sequences for each transition of the engine: the harness.

use std::time::{Duration, Instant};

use agent_common::wire::Generations;

use super::{Beacon, Command, Engine, Event, Memory, Params, State};

use Command::*;

mod node_checks;
mod roles;
mod seeds;
mod takeover;

pub(super) fn g(current: u64, history: &[u64]) -> Generations {
    Generations {
        current,
        history: history.to_vec(),
    }
}

pub(super) fn params(ties_won: bool) -> Params {
    Params {
        networks: 2,
        witnesses: 1,
        ties_won,
        max_restarts: 2,
        restart_window: Duration::from_secs(60),
        incarnation: if ties_won { 1 } else { 2 },
        ..Params::default()
    }
}

pub(super) fn tr(from: State, to: State) -> (State, State) {
    (from, to)
}

/// One engine, its clock origin and the last heartbeat it asked to send.
pub(super) struct Node {
    pub(super) e: Engine,
    pub(super) t0: Instant,
    pub(super) beacon: Option<Beacon>,
}

impl Node {
    pub(super) fn new(p: Params, gens: Generations, memory: Memory, t0: Instant) -> Self {
        Self {
            e: Engine::new(p, gens, memory, t0),
            t0,
            beacon: None,
        }
    }

    /// Handles `ev` at `ms` after the origin; the commands without heartbeats.
    pub(super) fn on(&mut self, ms: u64, ev: Event) -> Vec<Command> {
        let out = self.e.handle(self.t0 + Duration::from_millis(ms), ev);
        let mut rest = Vec::new();
        for c in out {
            match c {
                SendHeartbeat(b) => self.beacon = Some(b),
                c => rest.push(c),
            }
        }
        rest
    }

    /// Ticks every 50 ms after `from` up to `to`, as the runtime does.
    pub(super) fn run(&mut self, from: u64, to: u64) -> Vec<Command> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            t = (t + 50).min(to);
            out.extend(self.on(t, Event::Tick));
        }
        out
    }

    pub(super) fn hb(&self) -> Event {
        Event::Heartbeat {
            network: 0,
            beacon: self.beacon.clone().expect("a heartbeat was sent"),
        }
    }
}

/// What a node that starts the application on its own is told, in order: a new
/// data generation, replication without the peer, the VIP, the application.
pub(super) const STARTS_ALONE: [Command; 5] = [
    NewGeneration,
    ReplicateAlone,
    AddVip,
    AnnounceVip,
    StartApplication,
];

/// The (from, to) pairs of the transitions in `cmds`.
pub(super) fn transitions(cmds: &[Command]) -> Vec<(State, State)> {
    cmds.iter()
        .filter_map(|c| match c {
            Transition { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

pub(super) fn reason_of(cmds: &[Command]) -> String {
    cmds.iter()
        .find_map(|c| match c {
            Transition { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a transition")
}

/// Drops notes and persists, to compare the actions alone.
pub(super) fn acts(cmds: Vec<Command>) -> Vec<Command> {
    cmds.into_iter()
        .filter(|c| !matches!(c, Note(_) | Persist(_) | Transition { .. }))
        .collect()
}

pub(super) const SAFE: Memory = Memory {
    peer_may_be_newer: false,
    was_running: false,
    consistent: true,
};

/// A node started alone whose memory says the peer holds nothing newer: ALONE.
pub(super) fn alone(t0: Instant, ties_won: bool) -> Node {
    alone_with(t0, params(ties_won))
}

/// [`alone`] with `p`; its node checkers pass from the start.
pub(super) fn alone_with(t0: Instant, p: Params) -> Node {
    let checkers = p.node_checkers.clone();
    let mut a = Node::new(p, g(5, &[]), SAFE, t0);
    let out = a.on(0, Event::Start);
    assert_eq!(transitions(&out), [tr(State::Stop, State::Wait)]);
    assert_eq!(acts(out), []);
    for checker in checkers {
        assert_eq!(a.on(0, Event::NodeCheckerOk { checker }), []);
    }
    assert_eq!(
        a.on(
            0,
            Event::Witness {
                index: 0,
                reachable: true
            }
        ),
        []
    );
    assert_eq!(
        a.on(1500, Event::Tick),
        [],
        "still waiting to hear the peer"
    );
    assert_eq!(a.on(2000, Event::Tick), [ProbeVip]);
    let out = a.on(
        2100,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(
        out[0],
        Persist(Memory {
            peer_may_be_newer: false,
            was_running: true,
            consistent: true
        })
    );
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
    assert_eq!(acts(out), STARTS_ALONE);
    assert_eq!(a.e.state(), State::Alone);
    a.on(2100, Event::Generations(g(7, &[5])));
    a
}

/// A runs ALONE; B starts fresh, hears A, becomes SECOND; A becomes PRIM.
pub(super) fn pair(t0: Instant) -> (Node, Node) {
    pair_with(t0, params(true), params(false))
}

/// [`pair`] with A's and B's parameters; their node checkers pass from the start.
pub(super) fn pair_with(t0: Instant, pa: Params, pb: Params) -> (Node, Node) {
    let mut a = alone_with(t0, pa);
    let checkers = pb.node_checkers.clone();
    let mut b = Node::new(pb, g(5, &[]), Memory::default(), t0);
    b.on(2200, Event::Start);
    for checker in checkers {
        assert_eq!(b.on(2200, Event::NodeCheckerOk { checker }), []);
    }
    let out = b.on(
        2200,
        a.on(2200, Event::Tick)
            .is_empty()
            .then(|| a.hb())
            .expect("quiet"),
    );
    assert_eq!(transitions(&out), [tr(State::Wait, State::Second)]);
    assert_eq!(
        acts(out),
        [
            StopApplication,
            RemoveVip,
            ReplicateSecondary { diverged: false }
        ]
    );
    let out = a.on(2250, b.hb());
    assert_eq!(transitions(&out), [tr(State::Alone, State::Prim)]);
    assert_eq!(acts(out), [ReplicatePrimary]);
    b.on(
        2600,
        Event::ReplicationStatus {
            in_sync: true,
            resyncing: false,
        },
    );
    b.on(2600, Event::Generations(g(7, &[5])));
    a.on(
        2600,
        Event::ReplicationStatus {
            in_sync: true,
            resyncing: false,
        },
    );
    a.on(2650, b.hb());
    assert!(!b.e.memory().consistent, "B has not heard A as PRIM yet");
    b.on(2650, a.hb());
    assert!(b.e.memory().consistent, "in sync with a PRIM");
    // B's copy counts as complete only once it heard A as PRIM (an ALONE source
    // does not wait for it): A learns so from B's next heartbeat.
    a.on(2650, b.hb());
    assert_eq!((a.e.state(), b.e.state()), (State::Prim, State::Second));
    (a, b)
}
