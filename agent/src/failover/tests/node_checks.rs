//! Node checkers: a SECOND that cannot run does not take over (and takes over once
//! it can, the peer still silent), a runner that cannot run hands over to a healthy
//! SECOND or keeps running without one, and nothing starts before a first result.

use std::time::Instant;

use super::{
    Command::*, Node, STARTS_ALONE, acts, alone_with, g, pair_with, params, reason_of, tr,
    transitions,
};
use crate::failover::{Event, Memory, Params, State};

fn checked(ties_won: bool) -> Params {
    Params {
        node_checkers: vec!["mount".into()],
        ..params(ties_won)
    }
}

fn failed() -> Event {
    Event::NodeCheckerFailed {
        checker: "mount".into(),
    }
}

fn passed() -> Event {
    Event::NodeCheckerOk {
        checker: "mount".into(),
    }
}

fn witness(n: &mut Node, ms: u64, reachable: bool) {
    n.on(
        ms,
        Event::Witness {
            index: 0,
            reachable,
        },
    );
}

fn can_run(n: &Node) -> bool {
    n.beacon.as_ref().expect("a heartbeat was sent").can_run
}

/// B (SECOND) loses its mount, then A dies: B waits instead of taking over, and
/// takes over once the mount is back, A still silent.
#[test]
fn second_that_cannot_run_does_not_take_over_until_its_checker_passes() {
    let (mut a, mut b) = pair_with(Instant::now(), params(true), checked(false));
    witness(&mut b, 2700, true);
    assert!(can_run(&b));
    assert_eq!(
        b.on(2800, failed()),
        [Note(
            "node checker mount failed: this node cannot run the application until it passes"
                .into()
        )]
    );
    assert!(!can_run(&b), "the peer is told at once");
    assert_eq!(a.on(2850, b.hb()), []);
    assert_eq!(
        a.e.peer_can_run(a.t0 + std::time::Duration::from_millis(2850)),
        Some(false)
    );
    // A's last heartbeat reached B at 2650; A is dead from now on.
    assert_eq!(b.run(2800, 3600), []);
    let out = b.run(3600, 3700);
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert_eq!(
        reason_of(&out),
        "the peer is silent on every network; no takeover: node checker mount fails"
    );
    assert_eq!(acts(out), [ReplicateStop]);
    assert_eq!(
        b.run(3700, 9000),
        [],
        "no takeover while the mount is missing"
    );
    // The mount returns: B takes over as the SECOND it was would have.
    assert_eq!(
        b.on(9000, passed()),
        [Note("node checker mount passes again".into()), ProbeVip]
    );
    let out = b.on(
        9100,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
    assert_eq!(
        reason_of(&out),
        "node checkers pass again; the peer is still silent on every network; data in sync \
         as of its loss; VIP free"
    );
    assert_eq!(acts(out), STARTS_ALONE);
}

/// A deferred takeover ends when something other than the node checkers stands in
/// the way: here the witness goes, which means this node may be the isolated one.
#[test]
fn deferred_takeover_is_given_up_when_the_witness_goes() {
    let (_a, mut b) = pair_with(Instant::now(), params(true), checked(false));
    witness(&mut b, 2700, true);
    b.on(2800, failed());
    let out = b.run(2800, 3700);
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert_eq!(
        b.on(
            4000,
            Event::Witness {
                index: 0,
                reachable: false
            }
        ),
        [Note(
            "deferred takeover given up: no witness answers".into()
        )]
    );
    witness(&mut b, 4500, true);
    // Now only the rules of any WAIT node apply: the peer may hold newer data.
    let out = b.on(5000, passed());
    assert_eq!(
        out,
        [
            Note("node checker mount passes again".into()),
            Note("the peer may hold newer data: waiting for it (or tandem prim --force)".into())
        ]
    );
}

/// A (PRIM) loses its mount while B is an in-sync SECOND: A hands over, B runs.
#[test]
fn primary_that_cannot_run_hands_over_to_a_healthy_second() {
    let (mut a, mut b) = pair_with(Instant::now(), checked(true), params(false));
    assert_eq!(
        a.on(3000, failed()),
        [
            Note("node checker mount fails: handing the application over to the peer".into()),
            Note("swap: stopping the application to hand over to the peer".into()),
            StopApplication
        ]
    );
    assert_eq!(a.on(3050, Event::AppStopped), [RemoveVip, DrainReplication]);
    let out = a.on(3100, Event::Drained);
    assert_eq!(transitions(&out), [tr(State::Prim, State::Second)]);
    assert_eq!(
        reason_of(&out),
        "swap: handed over to the peer (node checker mount fails)"
    );
    assert_eq!(acts(out), [ReplicateSecondary { diverged: false }]);
    assert!(!can_run(&a));
    assert_eq!(acts(b.on(3150, a.hb())), [ProbeVip]);
    let out = b.on(
        3250,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Second, State::Prim)]);
    assert_eq!(
        reason_of(&out),
        "same data; the peer cannot run the application"
    );
    assert_eq!(
        acts(out),
        [ReplicatePrimary, AddVip, AnnounceVip, StartApplication]
    );
    assert_eq!(acts(a.on(3300, b.hb())), []);
    assert_eq!(a.e.state(), State::Second);
    // A's mount returns: A is an able SECOND again, without taking the service back.
    assert_eq!(
        a.on(4000, passed()),
        [Note("node checker mount passes again".into())]
    );
    assert!(can_run(&a));
}

/// A runs ALONE and loses its mount: with no peer to take over it keeps running;
/// once a peer has joined and caught up, A hands the application to it.
#[test]
fn runner_without_a_healthy_peer_keeps_running_then_hands_over() {
    let t0 = Instant::now();
    let mut a = alone_with(t0, checked(true));
    assert_eq!(
        a.on(2500, failed()),
        [Note(
            "node checker mount failed: no peer can take the application over, so it keeps \
             running here"
                .into()
        )]
    );
    assert_eq!(a.run(2500, 6000), []);
    assert_eq!(a.e.state(), State::Alone);
    assert!(!can_run(&a));
    // B joins and resyncs: A becomes PRIM but keeps the application meanwhile.
    let mut b = Node::new(params(false), g(5, &[]), Memory::default(), t0);
    b.on(6000, Event::Start);
    a.on(6000, Event::Tick);
    b.on(6000, a.hb());
    let out = a.on(6050, b.hb());
    assert_eq!(transitions(&out), [tr(State::Alone, State::Prim)]);
    assert_eq!(acts(out), [ReplicatePrimary]);
    // B hears A as PRIM: once in sync, its copy is complete.
    b.on(6100, a.hb());
    b.on(
        6100,
        Event::ReplicationStatus {
            in_sync: false,
            resyncing: true,
        },
    );
    assert_eq!(
        a.on(6150, b.hb()),
        [],
        "a resyncing SECOND cannot take over"
    );
    b.on(6500, Event::Generations(g(7, &[5])));
    b.on(
        6500,
        Event::ReplicationStatus {
            in_sync: true,
            resyncing: false,
        },
    );
    assert_eq!(
        a.on(6550, b.hb()),
        [
            // An in-sync SECOND could take over: it may hold newer data from now on.
            Persist(Memory {
                peer_may_be_newer: true,
                was_running: true,
                consistent: true
            }),
            Note("node checker mount fails: handing the application over to the peer".into()),
            Note("swap: stopping the application to hand over to the peer".into()),
            StopApplication
        ]
    );
}

/// No start before every node checker has a first result; a pending checker is
/// not told to the peer as a failure.
#[test]
fn nothing_starts_before_a_first_result() {
    let t0 = Instant::now();
    let mut a = Node::new(checked(true), g(5, &[]), super::SAFE, t0);
    a.on(0, Event::Start);
    witness(&mut a, 0, true);
    assert_eq!(
        a.on(2000, Event::Tick),
        [Note(
            "waiting for the first result of node checker mount".into()
        )]
    );
    assert!(can_run(&a), "pending is not a failure for the peer");
    assert_eq!(a.run(2000, 3000), []);
    assert_eq!(a.on(3000, passed()), [ProbeVip]);

    // A first result that fails: this node never starts.
    let mut a = Node::new(checked(true), g(5, &[]), super::SAFE, t0);
    a.on(0, Event::Start);
    witness(&mut a, 0, true);
    a.on(2000, Event::Tick);
    assert_eq!(
        a.on(2500, failed()),
        [
            Note(
                "node checker mount failed: this node cannot run the application until it passes"
                    .into()
            ),
            // What a previous agent may have left running goes.
            StopApplication,
            RemoveVip,
            Note("node checker mount fails".into())
        ]
    );
    assert_eq!(a.run(2500, 6000), []);
    assert_eq!(a.e.state(), State::Wait);
    // The administrator can still override.
    assert_eq!(a.on(6000, Event::AdminPrim { force: true }), [ProbeVip]);
}

/// A handover that does not complete is abandoned after the swap timeout; the
/// application then runs here again for a swap timeout before the next attempt.
#[test]
fn an_abandoned_handover_is_retried_after_a_pause() {
    let (mut a, mut b) = pair_with(Instant::now(), checked(true), params(false));
    a.on(3000, failed());
    assert_eq!(a.on(3050, Event::AppStopped), [RemoveVip, DrainReplication]);
    // B keeps following, but the drain never completes.
    let mut t = 3050;
    let out = exchange(&mut a, &mut b, &mut t, 63_200);
    assert_eq!(
        out,
        [
            Note("swap abandoned: the handover did not complete in time".into()),
            AddVip,
            AnnounceVip,
            StartApplication
        ]
    );
    let out = exchange(&mut a, &mut b, &mut t, 123_200);
    assert_eq!(
        out,
        [
            Note("node checker mount fails: handing the application over to the peer".into()),
            Note("swap: stopping the application to hand over to the peer".into()),
            StopApplication
        ]
    );
}

/// Both nodes hear each other every 100 ms from `t` until `end`; what A did.
fn exchange(a: &mut Node, b: &mut Node, t: &mut u64, end: u64) -> Vec<super::Command> {
    let mut out = Vec::new();
    while *t < end {
        *t += 100;
        b.on(*t, Event::Tick);
        out.extend(a.on(*t, b.hb()));
        b.on(*t, a.hb());
    }
    out
}
