//! Engine bugs the simulation found, each replayed as an exact command sequence:
//! the seed that showed it and what went wrong are named on each test.

use std::time::Instant;

use super::{
    Command::*, Node, STARTS_ALONE, acts, alone, g, pair_with, params, reason_of, tr, transitions,
};
use crate::failover::{Event, Memory, Params, State};

fn witness(n: &mut Node, ms: u64) {
    n.on(
        ms,
        Event::Witness {
            index: 0,
            reachable: true,
        },
    );
}

fn checked(ties_won: bool) -> Params {
    Params {
        node_checkers: vec!["mount".into()],
        ..params(ties_won)
    }
}

/// Seed 1207 (both WAIT forever): B followed A with newer generations of its own
/// (kept aside), and its resync did not finish. B's copy is A's data half copied:
/// its generations still look newer, but it cannot run, and A, complete, waited
/// for B's "newer" data. The incomplete copy counts as the older one whatever
/// the generations say; its own changes are still kept aside when it follows.
#[test]
fn an_incomplete_copy_with_newer_generations_is_the_older_one() {
    let t0 = Instant::now();
    let was_primary = Memory {
        peer_may_be_newer: true,
        was_running: true,
        consistent: true,
    };
    let mut a = Node::new(params(true), g(7, &[5]), was_primary, t0);
    let half_copied = Memory {
        peer_may_be_newer: false,
        was_running: false,
        consistent: false,
    };
    let mut b = Node::new(params(false), g(9, &[7, 5]), half_copied, t0);
    a.on(0, Event::Start);
    witness(&mut a, 0);
    b.on(0, Event::Start);
    witness(&mut b, 0);

    let out = b.on(50, a.hb());
    assert_eq!(transitions(&out), []);
    assert_eq!(
        out,
        [
            Persist(Memory {
                peer_may_be_newer: true,
                was_running: false,
                consistent: false
            }),
            StopApplication,
            RemoveVip,
            Note("the peer has the newest data".into())
        ]
    );
    let out = a.on(50, b.hb());
    assert_eq!(acts(out), [ProbeVip], "A holds the complete copy");
    let out = a.on(
        150,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
    assert_eq!(reason_of(&out), "this node has the newest data");
    assert_eq!(acts(out), STARTS_ALONE);
    a.on(150, Event::Generations(g(11, &[7, 5])));
    let out = b.on(200, a.hb());
    assert_eq!(transitions(&out), [tr(State::Wait, State::Second)]);
    assert_eq!(
        acts(out),
        [ReplicateSecondary { diverged: true }],
        "B's own changes since generation 7 are still kept aside"
    );
}

/// Seed 1001 (stale promotion): B followed A while A ran ALONE and caught up, so
/// B adopted A's generation; A, not having heard B yet, still did not wait for it
/// and wrote on, then was stopped. Equal generations then claimed equal data and
/// B started without A's last writes. A SECOND whose source is ALONE counts as
/// incomplete until it hears it PRIM.
#[test]
fn a_second_of_an_alone_source_is_incomplete_until_it_hears_it_prim() {
    let t0 = Instant::now();
    let mut a = alone(t0, true);
    let mut b = Node::new(params(false), g(5, &[]), Memory::default(), t0);
    b.on(2200, Event::Start);
    witness(&mut b, 2200);
    a.on(2200, Event::Tick);
    let out = b.on(2200, a.hb());
    assert_eq!(transitions(&out), [tr(State::Wait, State::Second)]);
    b.on(2300, Event::Generations(g(7, &[5])));
    b.on(
        2300,
        Event::ReplicationStatus {
            in_sync: true,
            resyncing: false,
        },
    );
    assert!(!b.e.memory().consistent, "A, ALONE, does not wait for B");
    assert!(!b.beacon.as_ref().expect("a heartbeat").consistent);
    // A never hears B (its heartbeats are lost) and is stopped.
    let out = a.on(2400, Event::Stop);
    assert_eq!(transitions(&out), [tr(State::Alone, State::Stop)]);
    let out = b.on(2450, a.hb());
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert_eq!(
        reason_of(&out),
        "the peer has the newest data but cannot run the application"
    );
    assert_eq!(acts(out), [ReplicateStop], "no probe: B does not start");
    // A comes back and runs again; B follows.
    a.on(3000, Event::Start);
    let out = a.on(3000, b.hb());
    assert_eq!(acts(out), [ProbeVip]);
    let out = a.on(
        3100,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(reason_of(&out), "this node has the newest data");
    let out = b.on(3150, a.hb());
    assert_eq!(transitions(&out), [tr(State::Wait, State::Second)]);
}

/// Seed 431 (two runners): A, handing its application over (stopped, VIP gone),
/// lost its SECOND, which had meanwhile taken over unheard (A was frozen and the
/// VIP's network cut). A aborted the handover and added the VIP back at once. It
/// now probes the VIP first, as a takeover does.
#[test]
fn an_aborted_handover_probes_the_vip_before_restarting() {
    for someone_answers in [true, false] {
        let (mut a, _b) = pair_with(Instant::now(), checked(true), params(false));
        a.on(
            3000,
            Event::NodeCheckerFailed {
                checker: "mount".into(),
            },
        );
        assert_eq!(a.on(3050, Event::AppStopped), [RemoveVip, DrainReplication]);
        // B was last heard at 2650.
        assert_eq!(a.run(3050, 3600), []);
        let out = a.run(3600, 3650);
        assert_eq!(transitions(&out), [tr(State::Prim, State::Alone)]);
        assert_eq!(
            acts(out),
            [NewGeneration, ReplicateAlone, ProbeVip],
            "no AddVip before the probe"
        );
        assert_eq!(a.run(3650, 3700), [], "one probe at a time");
        let out = a.on(3750, Event::VipProbeResult { someone_answers });
        if someone_answers {
            assert_eq!(transitions(&out), [tr(State::Alone, State::Wait)]);
            assert_eq!(
                reason_of(&out),
                "handover abandoned: the peer is silent and another host answers for the VIP"
            );
            assert_eq!(acts(out), [ReplicateStop]);
        } else {
            assert_eq!(transitions(&out), []);
            assert_eq!(acts(out), [AddVip, AnnounceVip, StartApplication]);
        }
    }
}

/// Seed 451 (two runners): A, handing its application over, went unheard by B,
/// which took over (the VIP A had just dropped was free). When A heard B ALONE it
/// aborted the handover and, winning the tie, started its application and VIP
/// again beside B's. It now leaves them stopped until B yields.
#[test]
fn an_aborted_handover_does_not_restart_beside_a_peer_that_took_over() {
    let (mut a, mut b) = pair_with(Instant::now(), checked(true), params(false));
    witness(&mut b, 2700);
    a.on(
        3000,
        Event::NodeCheckerFailed {
            checker: "mount".into(),
        },
    );
    assert_eq!(a.on(3050, Event::AppStopped), [RemoveVip, DrainReplication]);
    // A's heartbeats no longer reach B (last one at 2650): B takes over.
    assert_eq!(b.run(2700, 3600), []);
    assert_eq!(b.run(3600, 3650), [ProbeVip]);
    let out = b.on(
        3700,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Second, State::Alone)]);
    b.on(3700, Event::Generations(g(9, &[7, 5])));
    // A hears B ALONE.
    assert_eq!(
        a.on(3710, b.hb()),
        [
            Note("swap aborted: the peer no longer follows".into()),
            Note("the peer runs the application: it yields before this node resumes".into())
        ]
    );
    // B, the tie loser, yields; then A runs again.
    let out = b.on(3720, a.hb());
    assert_eq!(transitions(&out), [tr(State::Alone, State::Second)]);
    let out = a.on(3730, b.hb());
    assert_eq!(transitions(&out), []);
    assert_eq!(acts(out), [AddVip, AnnounceVip, StartApplication]);
}

/// Seed 9704 (silent loss, found once the above were fixed): with the heartbeats
/// cut, A went ALONE with a new generation and wrote on; B's replication link was
/// up, so B, in sync, adopted that generation, then took over as if A were still
/// PRIM and started a generation claiming all of A's. A SECOND whose generation
/// changes while in sync learns that its source ran ALONE, unheard: its copy is
/// incomplete and it does not take over.
#[test]
fn a_second_that_adopts_a_generation_while_in_sync_does_not_take_over() {
    let (_a, mut b) = pair_with(Instant::now(), params(true), params(false));
    witness(&mut b, 2700);
    // A's last heartbeat reached B at 2650.
    assert_eq!(
        b.on(2700, Event::Generations(g(9, &[7, 5]))),
        [Persist(Memory {
            peer_may_be_newer: true,
            was_running: false,
            consistent: false
        })]
    );
    assert_eq!(b.run(2700, 3600), []);
    let out = b.run(3600, 3650);
    assert_eq!(transitions(&out), [tr(State::Second, State::Wait)]);
    assert_eq!(
        reason_of(&out),
        "the peer is silent on every network; no takeover: the peer last ran alone: its data \
         may be newer"
    );
    assert_eq!(acts(out), [ReplicateStop]);
}

/// Seeds 10961 and 17948 (both WAIT forever): each node followed the other on a
/// stale heartbeat (one saw the other still PRIM, the other saw it ALONE), so both
/// copies became incomplete; with different generations each pointed at the
/// other's "newest data" that could not run. Two incomplete copies are diverged
/// whatever the generations say: the administrator keeps one side.
#[test]
fn two_incomplete_copies_wait_for_the_administrator() {
    let t0 = Instant::now();
    let incomplete = Memory {
        peer_may_be_newer: true,
        was_running: false,
        consistent: false,
    };
    let mut a = Node::new(params(true), g(7, &[5]), incomplete, t0);
    let mut b = Node::new(params(false), g(9, &[7, 5]), incomplete, t0);
    a.on(0, Event::Start);
    witness(&mut a, 0);
    b.on(0, Event::Start);
    witness(&mut b, 0);
    let diverged = Note(
        "data diverged: both nodes changed it on their own; keep one side with tandem prim \
         --force"
            .into(),
    );
    assert_eq!(
        acts(b.on(50, a.hb())),
        [StopApplication, RemoveVip],
        "B, newer by its generations, does not wait for A either"
    );
    assert!(b.e.diverged());
    assert_eq!(a.on(50, b.hb()), [StopApplication, RemoveVip, diverged]);
    assert!(a.e.diverged());
    assert_eq!(a.on(100, Event::AdminPrim { force: true }), [ProbeVip]);
    let out = a.on(
        200,
        Event::VipProbeResult {
            someone_answers: false,
        },
    );
    assert_eq!(transitions(&out), [tr(State::Wait, State::Alone)]);
}
