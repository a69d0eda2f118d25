//! Exact command sequences for each transition of the engine.

use std::time::{Duration, Instant};

use agent_common::wire::Generations;

use super::{Beacon, CheckerAction, Command, Engine, Event, Memory, Params, Preference, State};

use Command::*;

fn g(current: u64, history: &[u64]) -> Generations {
    Generations {
        current,
        history: history.to_vec(),
    }
}

fn params(ties_won: bool) -> Params {
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

fn tr(from: State, to: State) -> (State, State) {
    (from, to)
}

/// One engine, its clock origin and the last heartbeat it asked to send.
struct Node {
    e: Engine,
    t0: Instant,
    beacon: Option<Beacon>,
}

impl Node {
    fn new(p: Params, gens: Generations, memory: Memory, t0: Instant) -> Self {
        Self {
            e: Engine::new(p, gens, memory, t0),
            t0,
            beacon: None,
        }
    }

    /// Handles `ev` at `ms` after the origin; the commands without heartbeats.
    fn on(&mut self, ms: u64, ev: Event) -> Vec<Command> {
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
    fn run(&mut self, from: u64, to: u64) -> Vec<Command> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            t = (t + 50).min(to);
            out.extend(self.on(t, Event::Tick));
        }
        out
    }

    fn hb(&self) -> Event {
        Event::Heartbeat {
            network: 0,
            beacon: self.beacon.clone().expect("a heartbeat was sent"),
        }
    }
}

/// The (from, to) pairs of the transitions in `cmds`.
fn transitions(cmds: &[Command]) -> Vec<(State, State)> {
    cmds.iter()
        .filter_map(|c| match c {
            Transition { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn reason_of(cmds: &[Command]) -> String {
    cmds.iter()
        .find_map(|c| match c {
            Transition { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a transition")
}

/// Drops notes and persists, to compare the actions alone.
fn acts(cmds: Vec<Command>) -> Vec<Command> {
    cmds.into_iter()
        .filter(|c| !matches!(c, Note(_) | Persist(_) | Transition { .. }))
        .collect()
}

const SAFE: Memory = Memory {
    peer_may_be_newer: false,
    was_running: false,
    consistent: true,
};

/// A node started alone whose memory says the peer holds nothing newer: ALONE.
fn alone(t0: Instant, ties_won: bool) -> Node {
    let mut a = Node::new(params(ties_won), g(5, &[]), SAFE, t0);
    let out = a.on(0, Event::Start);
    assert_eq!(transitions(&out), [tr(State::Stop, State::Wait)]);
    assert_eq!(acts(out), []);
    assert_eq!(a.on(0, Event::Witness { index: 0, reachable: true }), []);
    assert_eq!(a.on(1500, Event::Tick), [], "still waiting to hear the peer");
    assert_eq!(a.on(2000, Event::Tick), [ProbeVip]);
    let out = a.on(2100, Event::VipProbeResult { someone_answers: false });
    assert_eq!(out[0], Persist(Memory { peer_may_be_newer: false, was_running: true, consistent: true }));
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
    assert_eq!(
        acts(out),
        [NewGeneration, ReplicateAlone, AddVip, AnnounceVip, StartApplication]
    );
    assert_eq!(a.e.state(), State::Alone);
    a.on(2100, Event::Generations(g(7, &[5])));
    a
}

#[test]
fn start_alone_probes_the_vip_then_runs() {
    alone(Instant::now(), true);
}

#[test]
fn start_alone_waits_while_the_vip_answers() {
    let mut a = Node::new(params(true), g(5, &[]), SAFE, Instant::now());
    a.on(0, Event::Start);
    a.on(0, Event::Witness { index: 0, reachable: true });
    assert_eq!(a.on(2000, Event::Tick), [ProbeVip]);
    let out = a.on(2100, Event::VipProbeResult { someone_answers: true });
    assert_eq!(out, [Note("another host answers for the VIP: no takeover".into())]);
    assert_eq!(a.on(2500, Event::Tick), [], "no probe before probe_retry");
    assert_eq!(a.on(3100, Event::Tick), [ProbeVip]);
    assert_eq!(a.e.state(), State::Wait);
}

#[test]
fn start_alone_without_witness_or_with_a_possibly_newer_peer_waits() {
    let mut a = Node::new(params(true), g(5, &[]), SAFE, Instant::now());
    a.on(0, Event::Start);
    let out = a.on(2000, Event::Tick);
    assert_eq!(acts(out), [StopApplication, RemoveVip], "leftovers cleaned, no probe");
    let mut b = Node::new(params(true), g(5, &[]), Memory::default(), Instant::now());
    b.on(0, Event::Start);
    b.on(0, Event::Witness { index: 0, reachable: true });
    let out = b.on(2000, Event::Tick);
    assert_eq!(acts(out), [StopApplication, RemoveVip]);
    assert_eq!(b.e.state(), State::Wait);
}

/// A runs ALONE; B starts fresh, hears A, becomes SECOND; A becomes PRIM.
fn pair(t0: Instant) -> (Node, Node) {
    let mut a = alone(t0, true);
    let mut b = Node::new(params(false), g(5, &[]), Memory::default(), t0);
    b.on(2200, Event::Start);
    let out = b.on(2200, a.on(2200, Event::Tick).is_empty().then(|| a.hb()).expect("quiet"));
    assert_eq!(transitions(&out), [tr(State::Wait, State::Second)]);
    assert_eq!(
        acts(out),
        [StopApplication, RemoveVip, ReplicateSecondary { diverged: false }]
    );
    let out = a.on(2250, b.hb());
    assert_eq!(transitions(&out), [tr(State::Alone, State::Prim)]);
    assert_eq!(acts(out), [ReplicatePrimary]);
    b.on(2600, Event::ReplicationStatus { in_sync: true, resyncing: false });
    b.on(2600, Event::Generations(g(7, &[5])));
    a.on(2600, Event::ReplicationStatus { in_sync: true, resyncing: false });
    a.on(2650, b.hb());
    b.on(2650, a.hb());
    assert_eq!((a.e.state(), b.e.state()), (State::Prim, State::Second));
    (a, b)
}

#[test]
fn peer_appears_prim_and_second() {
    let (a, b) = pair(Instant::now());
    assert!(a.e.memory().peer_may_be_newer, "the in-sync SECOND could take over");
    assert!(b.e.memory().peer_may_be_newer);
}

#[test]
fn second_in_sync_takes_over_after_the_timeout_when_the_vip_is_free() {
    let (_a, mut b) = pair(Instant::now());
    b.on(2800, Event::Witness { index: 0, reachable: true });
    assert_eq!(b.run(2800, 3600), [], "within the timeout");
    assert_eq!(b.run(3600, 3700), [ProbeVip]);
    let out = b.on(3800, Event::VipProbeResult { someone_answers: false });
    assert_eq!(transitions(&out), [tr(State::Second, State::Alone)]);
    assert!(reason_of(&out).contains("in sync"));
    assert_eq!(
        acts(out),
        [NewGeneration, ReplicateAlone, AddVip, AnnounceVip, StartApplication]
    );
}

#[test]
fn second_does_not_take_over_while_the_vip_answers() {
    let (_a, mut b) = pair(Instant::now());
    b.on(2800, Event::Witness { index: 0, reachable: true });
    assert_eq!(b.run(2800, 3700), [ProbeVip]);
    let out = b.on(3800, Event::VipProbeResult { someone_answers: true });
    assert_eq!(out, [Note("another host answers for the VIP: no takeover".into())]);
    assert_eq!(b.e.state(), State::Second, "agent death on PRIM: no second writer");
}

#[test]
fn second_resyncing_or_stale_or_failing_never_takes_over() {
    let (_a, mut b) = pair(Instant::now());
    b.on(2800, Event::Witness { index: 0, reachable: true });
    b.on(2800, Event::ReplicationStatus { in_sync: false, resyncing: true });
    let out = b.run(2800, 3700);
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert!(reason_of(&out).contains("not in sync"));
    assert_eq!(acts(out), [ReplicateStop]);

    let (mut a, mut b) = pair(Instant::now());
    b.on(2800, Event::Witness { index: 0, reachable: true });
    // The primary went on to a newer generation that B did not adopt yet.
    a.on(2800, Event::Generations(g(9, &[7, 5])));
    a.on(2900, Event::Tick);
    b.on(2900, a.hb());
    let out = b.run(2900, 4000);
    assert!(reason_of(&out).contains("generations say the peer's data is newer"));

    let (_a, mut b) = pair(Instant::now());
    b.on(2800, Event::Witness { index: 0, reachable: true });
    let failed = Event::CheckerFailed { checker: "tcp".into(), action: CheckerAction::Restart };
    assert_eq!(b.on(2800, failed), []);
    let out = b.run(2800, 3700);
    assert!(reason_of(&out).contains("checker tcp fails"));
}

#[test]
fn isolated_runner_fences_itself() {
    let mut a = alone(Instant::now(), true);
    let out = a.on(2500, Event::Witness { index: 0, reachable: false });
    assert_eq!(transitions(&out), [tr(State::Alone, State::Wait)]);
    assert!(reason_of(&out).contains("fenced"));
    assert_eq!(acts(out), [StopApplication, RemoveVip, ReplicateStop]);
    // The witness returns: the peer cannot hold newer data, so it runs again.
    assert_eq!(a.on(3000, Event::Witness { index: 0, reachable: true }), [ProbeVip]);
    let out = a.on(3100, Event::VipProbeResult { someone_answers: false });
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
}

#[test]
fn prim_loses_peer_goes_alone_with_a_new_generation() {
    let (mut a, _b) = pair(Instant::now());
    assert_eq!(a.run(2650, 3600), []);
    let out = a.run(3600, 3700);
    assert_eq!(transitions(&out), [tr(State::Prim, State::Alone)]);
    assert_eq!(acts(out), [NewGeneration, ReplicateAlone]);
}

#[test]
fn swap_hands_over_without_loss() {
    let (mut a, mut b) = pair(Instant::now());
    let out = a.on(3000, Event::AdminSwap);
    assert_eq!(acts(out), [StopApplication]);
    assert_eq!(a.on(3200, Event::AppStopped), [RemoveVip, DrainReplication]);
    let out = a.on(3300, Event::Drained);
    assert_eq!(transitions(&out), [tr(State::Prim, State::Second)]);
    assert_eq!(acts(out), [ReplicateSecondary { diverged: false }]);
    assert_eq!(b.on(3310, a.hb()), [ProbeVip]);
    let out = b.on(3400, Event::VipProbeResult { someone_answers: false });
    assert_eq!(transitions(&out), [tr(State::Second, State::Prim)]);
    assert_eq!(acts(out), [ReplicatePrimary, AddVip, AnnounceVip, StartApplication]);
    assert_eq!(a.on(3410, b.hb()), []);
    assert_eq!((a.e.state(), b.e.state()), (State::Second, State::Prim));
}

#[test]
fn swap_requested_on_the_second_and_failback_to_the_preferred_node() {
    let (mut a, mut b) = pair(Instant::now());
    assert_eq!(b.on(3000, Event::AdminSwap), [Note("tandem swap: asking the primary to hand over".into())]);
    assert_eq!(acts(a.on(3010, b.hb())), [StopApplication]);

    // Failback: B prefers itself and asks on its own once in sync.
    let t0 = Instant::now();
    let mut a = alone(t0, true);
    let mut b = Node::new(Params { preference: Preference::ThisNode, ..params(false) }, g(5, &[]), Memory::default(), t0);
    a.on(2200, Event::Tick);
    b.on(2200, Event::Start);
    b.on(2200, a.hb());
    a.on(2250, b.hb());
    b.on(2600, Event::ReplicationStatus { in_sync: true, resyncing: false });
    b.on(2600, Event::Generations(g(7, &[5])));
    a.on(2600, Event::ReplicationStatus { in_sync: true, resyncing: false });
    a.on(2650, b.hb());
    let out = b.on(2700, a.hb());
    assert_eq!(out, [Note("failback: asking the peer to hand over to the preferred node".into())]);
    assert_eq!(acts(a.on(2710, b.hb())), [StopApplication]);
    a.on(2800, Event::AppStopped);
    a.on(2900, Event::Drained);
    b.on(2910, a.hb());
    b.on(3000, Event::VipProbeResult { someone_answers: false });
    a.on(3010, b.hb());
    assert_eq!((a.e.state(), b.e.state()), (State::Second, State::Prim));
}

#[test]
fn prim_force_is_the_recorded_override() {
    let mut a = Node::new(params(true), g(5, &[]), Memory::default(), Instant::now());
    a.on(0, Event::Start);
    a.on(0, Event::Witness { index: 0, reachable: true });
    a.on(2000, Event::Tick);
    assert_eq!(a.e.state(), State::Wait);
    let out = a.on(2100, Event::AdminPrim { force: false });
    assert_eq!(
        out,
        [
            Note("tandem prim refused: the peer may hold newer data, or a checker fails; use --force".into()),
            Note("the peer may hold newer data: waiting for it (or tandem prim --force)".into()),
        ]
    );
    assert_eq!(a.on(2200, Event::AdminPrim { force: true }), [ProbeVip]);
    let out = a.on(2300, Event::VipProbeResult { someone_answers: false });
    assert_eq!(out[0], Persist(Memory { peer_may_be_newer: false, was_running: true, consistent: true }));
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
    assert!(reason_of(&out).contains("tandem prim --force"));
    assert!(a.e.reason().contains("--force"));
}

#[test]
fn both_restarted_the_newest_data_runs() {
    let t0 = Instant::now();
    let mut a = Node::new(params(false), g(7, &[5]), Memory::default(), t0);
    let mut b = Node::new(params(true), g(5, &[]), Memory::default(), t0);
    a.on(0, Event::Start);
    b.on(0, Event::Start);
    let out = b.on(10, a.hb());
    assert_eq!(out, [StopApplication, RemoveVip, Note("the peer has the newest data".into())]);
    // B is WAIT with older data: A may now also start alone after a restart.
    let quiet = Persist(Memory { peer_may_be_newer: false, was_running: false, consistent: true });
    assert_eq!(a.on(10, b.hb()), [quiet, ProbeVip], "A has newer data though B wins ties");
    let out = a.on(100, Event::VipProbeResult { someone_answers: false });
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
    let out = b.on(110, a.hb());
    assert_eq!(acts(out), [ReplicateSecondary { diverged: false }]);
    a.on(120, b.hb());
    assert_eq!((a.e.state(), b.e.state()), (State::Prim, State::Second));
}

#[test]
fn both_restarted_with_diverged_data_wait_for_the_administrator() {
    let t0 = Instant::now();
    let mut a = Node::new(params(false), g(7, &[5]), Memory::default(), t0);
    let mut b = Node::new(params(true), g(9, &[5]), Memory::default(), t0);
    a.on(0, Event::Start);
    b.on(0, Event::Start);
    b.on(10, a.hb());
    a.on(10, b.hb());
    assert!(a.e.diverged() && b.e.diverged());
    assert_eq!(a.on(20, Event::AdminPrim { force: true }), [ProbeVip]);
    a.on(30, Event::VipProbeResult { someone_answers: false });
    let out = b.on(40, a.hb());
    assert_eq!(acts(out), [ReplicateSecondary { diverged: true }], "B's changes kept aside");
}

#[test]
fn restarted_agent_resumes_its_role_without_a_new_generation() {
    let (_a, mut b) = pair(Instant::now());
    let t0 = b.t0;
    let resume = Memory { peer_may_be_newer: true, was_running: true, consistent: true };
    // B (SECOND in sync, ties lost) hears the restarted A, which claims its old role.
    let mut a = Node::new(params(false), g(7, &[5]), resume, t0);
    a.on(3000, Event::Start);
    let quiet = Persist(Memory { peer_may_be_newer: false, was_running: false, consistent: true });
    assert_eq!(b.on(3010, a.hb()), [quiet]);
    assert_eq!(a.on(3010, b.hb()), [ProbeVip]);
    let out = a.on(3100, Event::VipProbeResult { someone_answers: false });
    assert_eq!(transitions(&out), [tr(State::Wait, State::Prim)]);
    assert_eq!(acts(out), [ReplicatePrimary, AddVip, AnnounceVip, StartApplication]);
}

#[test]
fn checker_restarts_locally_then_fails_over() {
    let (mut a, mut b) = pair(Instant::now());
    let failed = || Event::CheckerFailed { checker: "tcp".into(), action: CheckerAction::Restart };
    for n in 1..=2 {
        let out = a.on(3000 + n, failed());
        assert_eq!(acts(out), [StopApplication, StartApplication], "restart {n}");
    }
    let out = a.on(3010, failed());
    assert_eq!(transitions(&out), [tr(State::Prim, State::Wait)]);
    assert_eq!(acts(out), [StopApplication, RemoveVip, ReplicateStop]);
    // The in-sync SECOND takes over; A follows it once it runs.
    let quiet = Persist(Memory { peer_may_be_newer: false, was_running: false, consistent: true });
    assert_eq!(b.on(3020, a.hb()), [quiet, ProbeVip]);
    let out = b.on(3100, Event::VipProbeResult { someone_answers: false });
    assert_eq!(transitions(&out), [tr(State::Second, State::Alone)]);
    let out = a.on(3110, b.hb());
    assert_eq!(transitions(&out), [tr(State::Wait, State::Second)]);
}

#[test]
fn both_running_the_tie_loser_yields_and_keeps_its_changes() {
    let t0 = Instant::now();
    let mut a = alone(t0, true);
    let mut b = alone(t0, false);
    assert_eq!(acts(a.on(2200, b.hb())), []);
    let out = b.on(2200, a.hb());
    assert_eq!(transitions(&out), [tr(State::Alone, State::Second)]);
    assert_eq!(acts(out), [StopApplication, RemoveVip, ReplicateSecondary { diverged: true }]);
}

#[test]
fn stop_and_bad_peer_input() {
    let mut a = alone(Instant::now(), true);
    let junk = Event::Heartbeat { network: 99, beacon: a.beacon.clone().expect("beacon") };
    assert_eq!(a.on(2200, junk), []);
    assert_eq!(a.on(2200, Event::Witness { index: 7, reachable: true }), []);
    let out = a.on(2300, Event::Stop);
    assert_eq!(transitions(&out), [tr(State::Alone, State::Stop)]);
    assert_eq!(acts(out), [StopApplication, RemoveVip, ReplicateStop]);
}

#[test]
fn heartbeats_are_periodic_and_poll_timeout_asks_for_them() {
    let t0 = Instant::now();
    let mut e = Engine::new(params(true), g(0, &[]), Memory::default(), t0);
    let out = e.handle(t0, Event::Start);
    assert!(out.iter().any(|c| matches!(c, SendHeartbeat(b) if b.state == State::Wait)));
    assert_eq!(e.poll_timeout(), t0 + Duration::from_millis(100));
    let quiet = e.handle(t0 + Duration::from_millis(50), Event::Tick);
    assert!(quiet.is_empty());
    let out = e.handle(t0 + Duration::from_millis(100), Event::Tick);
    assert!(matches!(out.as_slice(), [SendHeartbeat(b)] if b.seq == 2));
}
