//! Starting alone, pairing, takeover by the SECOND and its refusals, fencing.

use std::time::Instant;

use super::*;
use crate::failover::{CheckerAction, Event, Memory, State};
#[test]
fn start_alone_probes_the_vip_then_runs() {
    alone(Instant::now(), true);
}

#[test]
fn start_alone_waits_while_the_vip_answers() {
    let mut a = Node::new(params(true), g(5, &[]), SAFE, Instant::now());
    a.on(0, Event::Start);
    a.on(
        0,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    assert_eq!(a.on(2000, Event::Tick), [ProbeVip]);
    let out = a.on(
        2100,
        Event::VipProbeResult {
            someone_answers: true,
        },
    );
    assert_eq!(
        out,
        [Note("another host answers for the VIP: no takeover".into())]
    );
    assert_eq!(a.on(2500, Event::Tick), [], "no probe before probe_retry");
    assert_eq!(a.on(3100, Event::Tick), [ProbeVip]);
    assert_eq!(a.e.state(), State::Wait);
}

#[test]
fn start_alone_without_witness_or_with_a_possibly_newer_peer_waits() {
    let mut a = Node::new(params(true), g(5, &[]), SAFE, Instant::now());
    a.on(0, Event::Start);
    let out = a.on(2000, Event::Tick);
    assert_eq!(
        acts(out),
        [StopApplication, RemoveVip],
        "leftovers cleaned, no probe"
    );
    let mut b = Node::new(params(true), g(5, &[]), Memory::default(), Instant::now());
    b.on(0, Event::Start);
    b.on(
        0,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    let out = b.on(2000, Event::Tick);
    assert_eq!(acts(out), [StopApplication, RemoveVip]);
    assert_eq!(b.e.state(), State::Wait);
}

#[test]
fn peer_appears_prim_and_second() {
    let (a, b) = pair(Instant::now());
    assert!(
        a.e.memory().peer_may_be_newer,
        "the in-sync SECOND could take over"
    );
    assert!(b.e.memory().peer_may_be_newer);
}

#[test]
fn second_in_sync_takes_over_after_the_timeout_when_the_vip_is_free() {
    let (_a, mut b) = pair(Instant::now());
    b.on(
        2800,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    assert_eq!(b.run(2800, 3600), [], "within the timeout");
    assert_eq!(b.run(3600, 3700), [ProbeVip]);
    let out = b.on(
        3800,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Second, State::Alone)]);
    assert!(reason_of(&out).contains("in sync"));
    assert_eq!(acts(out), STARTS_ALONE);
}

#[test]
fn second_does_not_take_over_while_the_vip_answers() {
    let (_a, mut b) = pair(Instant::now());
    b.on(
        2800,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    assert_eq!(b.run(2800, 3700), [ProbeVip]);
    let out = b.on(
        3800,
        Event::VipProbeResult {
            someone_answers: true,
        },
    );
    assert_eq!(
        out,
        [Note("another host answers for the VIP: no takeover".into())]
    );
    assert_eq!(
        b.e.state(),
        State::Second,
        "agent death on PRIM: no second writer"
    );
}

#[test]
fn second_resyncing_or_stale_or_failing_never_takes_over() {
    let (_a, mut b) = pair(Instant::now());
    b.on(
        2800,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    b.on(
        2800,
        Event::ReplicationStatus {
            in_sync: false,
            resyncing: true,
        },
    );
    let out = b.run(2800, 3700);
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert!(reason_of(&out).contains("not in sync"));
    assert_eq!(acts(out), [ReplicateStop]);

    let (mut a, mut b) = pair(Instant::now());
    b.on(
        2800,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    // The primary went on to a newer generation that B did not adopt yet.
    a.on(2800, Event::Generations(g(9, &[7, 5])));
    a.on(2900, Event::Tick);
    b.on(2900, a.hb());
    let out = b.run(2900, 4000);
    assert!(reason_of(&out).contains("generations say the peer's data is newer"));

    let (_a, mut b) = pair(Instant::now());
    b.on(
        2800,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
    let failed = Event::CheckerFailed {
        checker: "tcp".into(),
        action: CheckerAction::Restart,
    };
    assert_eq!(b.on(2800, failed), []);
    let out = b.run(2800, 3700);
    assert!(reason_of(&out).contains("checker tcp fails"));
}

#[test]
fn isolated_runner_fences_itself() {
    let mut a = alone(Instant::now(), true);
    let out = a.on(
        2500,
        Event::Witness {
            index: 0,
            reachable: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Alone, State::Wait)]);
    assert!(reason_of(&out).contains("fenced"));
    assert_eq!(acts(out), [StopApplication, RemoveVip, ReplicateStop]);
    // The witness returns: the peer cannot hold newer data, so it runs again.
    assert_eq!(
        a.on(
            3000,
            Event::Witness {
                index: 0,
                reachable: true
            }
        ),
        [ProbeVip]
    );
    let out = a.on(
        3100,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
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
fn an_interrupted_resync_makes_equal_generations_older() {
    let (mut a, mut b) = pair(Instant::now());
    // B fell behind (a resync started) while A stayed in the same generation.
    let out = b.on(
        2700,
        Event::ReplicationStatus {
            in_sync: false,
            resyncing: true,
        },
    );
    assert_eq!(
        out,
        [Persist(Memory {
            peer_may_be_newer: true,
            was_running: false,
            consistent: false
        })]
    );
    a.on(2800, Event::Stop);
    let out = b.on(2810, a.hb());
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert!(reason_of(&out).contains("the peer has the newest data but cannot run"));
    assert!(!b.beacon.as_ref().expect("beacon").consistent);
    let out = b.on(2900, Event::AdminPrim { force: false });
    assert!(
        matches!(out.as_slice(), [Note(n), ..] if n.starts_with("tandem prim refused")),
        "{out:?}"
    );
    assert_eq!(b.on(3000, Event::AdminPrim { force: true }), [ProbeVip]);
}
