//! Heartbeat tests: two real endpoints on loopback and in a namespace pair, and a
//! hand-driven fake peer that replays, forges and garbles packets.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use proptest::prelude::*;
use tokio::{sync::watch, time::timeout};

use agent_common::wire::Generations;

use super::{
    packet::{Body, Echo, seal, seal_raw},
    *,
};
use crate::status::State;
use crate::vip::testnet::{NsPair, run_in, v4};

mod fake_peer;

pub(super) fn key() -> Key {
    derive_key(b"test secret")
}

/// A loopback address with a port free at the time of the call.
pub(super) fn free_addr(ip: [u8; 4]) -> SocketAddr {
    let s = std::net::UdpSocket::bind((Ipv4Addr::from(ip), 0)).expect("bind");
    s.local_addr().expect("local addr")
}

pub(super) fn config(
    node: &str,
    peer: &str,
    networks: Vec<NetworkSpec>,
    interval_ms: u64,
) -> HeartbeatConfig {
    HeartbeatConfig {
        networks,
        interval: Duration::from_millis(interval_ms),
        window: HeartbeatConfig::DEFAULT_WINDOW,
        key: key(),
        node: node.to_owned(),
        peer_node: peer.to_owned(),
    }
}

pub(super) fn net(name: &str, local: SocketAddr, peer: SocketAddr) -> NetworkSpec {
    NetworkSpec {
        name: name.to_owned(),
        local,
        peer,
    }
}

pub(super) fn payload(state: &str, generation: u64) -> Payload {
    let state = match state {
        "PRIM" => State::Prim,
        "SECOND" => State::Second,
        "ALONE" => State::Alone,
        "WAIT" => State::Wait,
        _ => State::Stop,
    };
    Payload {
        state,
        generations: Generations {
            current: generation,
            history: vec![],
        },
        consistent: true,
        ..Payload::default()
    }
}

pub(super) async fn next(rx: &mut mpsc::Receiver<Received>) -> Received {
    timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("heartbeat in time")
        .expect("open")
}

#[tokio::test]
async fn pair_delivers_on_every_network_and_measures_rtt() {
    let (a1, b1) = (free_addr([127, 0, 11, 1]), free_addr([127, 0, 11, 2]));
    let (a2, b2) = (free_addr([127, 0, 12, 1]), free_addr([127, 0, 12, 2]));
    let (_tx_a, payload_a) = watch::channel(payload("PRIM", 7));
    let (_tx_b, payload_b) = watch::channel(payload("SECOND", 7));
    let (hb_a, mut rx_a) = Heartbeats::start(
        config("a", "b", vec![net("n1", a1, b1), net("n2", a2, b2)], 100),
        payload_a,
    )
    .expect("start a");
    let (hb_b, mut rx_b) = Heartbeats::start(
        config("b", "a", vec![net("n1", b1, a1), net("n2", b2, a2)], 100),
        payload_b,
    )
    .expect("start b");

    let mut networks = std::collections::BTreeSet::new();
    let mut rtts = Vec::new();
    while networks.len() < 2 || rtts.len() < 10 {
        let r = next(&mut rx_b).await;
        assert_eq!(r.payload, payload("PRIM", 7));
        assert_eq!(r.peer_epoch, hb_a.epoch());
        networks.insert(r.network.clone());
        rtts.extend(r.rtt);
    }
    // Loopback answers in microseconds. Without taking off the time the peer held
    // our packet, the figures would spread over the 100 ms interval.
    rtts.sort();
    assert!(rtts[rtts.len() / 2] < Duration::from_millis(20), "{rtts:?}");
    assert_eq!(next(&mut rx_a).await.payload, payload("SECOND", 7));

    for (name, c) in hb_b.counters() {
        assert!(c.sent > 0 && c.received > 0, "{name}: {c:?}");
        assert_eq!(
            c.rejected_mac + c.rejected_replay + c.rejected_malformed,
            0,
            "{name}: {c:?}"
        );
    }
    hb_a.stop().await;
    hb_b.stop().await;
}

/// A peer that starts while we run hears us after its first heartbeat's round
/// trip, not at our next tick: its first packet is answered at once.
#[tokio::test]
async fn a_starting_peer_is_answered_at_once() {
    let (a, b) = (free_addr([127, 0, 14, 1]), free_addr([127, 0, 14, 2]));
    let (_ta, pa) = watch::channel(payload("PRIM", 3));
    let (_tb, pb) = watch::channel(payload("WAIT", 3));
    let slow = |node, peer, n| HeartbeatConfig {
        window: Duration::from_secs(10),
        ..config(node, peer, vec![n], 2000)
    };
    let (hb_a, _rx_a) = Heartbeats::start(slow("a", "b", net("n1", a, b)), pa).expect("a");
    // a's first heartbeat goes to nobody; its next is two seconds away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (hb_b, mut rx_b) = Heartbeats::start(slow("b", "a", net("n1", b, a)), pb).expect("b");
    let r = next(&mut rx_b).await;
    assert_eq!(r.payload, payload("PRIM", 3));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "heard after {:?}",
        started.elapsed()
    );
    hb_a.stop().await;
    hb_b.stop().await;
}

#[tokio::test]
async fn wrong_key_is_rejected() {
    let (a, b) = (free_addr([127, 0, 13, 1]), free_addr([127, 0, 13, 2]));
    let (_ta, pa) = watch::channel(Payload::default());
    let (_tb, pb) = watch::channel(Payload::default());
    let (hb_a, mut rx_a) =
        Heartbeats::start(config("a", "b", vec![net("n1", a, b)], 20), pa).expect("a");
    let mut other = config("b", "a", vec![net("n1", b, a)], 20);
    other.key = derive_key(b"another secret");
    let (hb_b, _rx_b) = Heartbeats::start(other, pb).expect("b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx_a.try_recv().is_err(),
        "nothing delivered under a wrong key"
    );
    let c = hb_a.counters()["n1"];
    assert!(c.rejected_mac >= 5 && c.received == 0, "{c:?}");
    drop(hb_b);
}

#[test]
fn invalid_configurations_are_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = runtime.enter();
    let (_t, p) = watch::channel(Payload::default());
    let a = free_addr([127, 0, 17, 1]);
    let b = free_addr([127, 0, 17, 2]);
    let check = |cfg: HeartbeatConfig| Heartbeats::start(cfg, p.clone()).map(|_| ()).unwrap_err();
    assert!(matches!(
        check(config("a", "b", vec![], 100)),
        HeartbeatError::NoNetwork
    ));
    assert!(matches!(
        check(config("a", "a", vec![net("n", a, b)], 100)),
        HeartbeatError::SameNodeNames
    ));
    assert!(matches!(
        check(config("a", "b", vec![net("n", a, b), net("n", b, a)], 100)),
        HeartbeatError::DuplicateNetwork(_)
    ));
    assert!(matches!(
        check(config("a", "b", vec![net("n", a, b)], 1500)),
        HeartbeatError::WindowTooShort { .. }
    ));
    let held = std::net::UdpSocket::bind(a).expect("hold the port");
    assert!(matches!(
        check(config("a", "b", vec![net("n", a, b)], 100)),
        HeartbeatError::Bind { .. }
    ));
    drop(held);
}

#[tokio::test]
async fn sockets_are_marked_as_network_control() {
    use nix::sys::socket::{getsockopt, sockopt};
    let v4 = bind(&net(
        "n",
        free_addr([127, 0, 19, 1]),
        free_addr([127, 0, 19, 2]),
    ))
    .expect("v4");
    assert_eq!(getsockopt(&v4, sockopt::Ipv4Tos).expect("tos"), 0xc0);
    let any6 = "[::1]:0".parse().expect("addr");
    let v6 = bind(&net("n", any6, any6)).expect("v6");
    assert_eq!(getsockopt(&v6, sockopt::Ipv6TClass).expect("tclass"), 0xc0);
}

#[test]
fn key_derivation_is_stable_and_symmetric() {
    assert_eq!(derive_key(b"x"), derive_key(b"x"));
    assert_ne!(derive_key(b"x"), derive_key(b"y"));
    assert_eq!(
        fingerprint_secret(b"aa", b"bb"),
        fingerprint_secret(b"bb", b"aa")
    );
    assert_ne!(
        fingerprint_secret(b"ab", b"c"),
        fingerprint_secret(b"a", b"bc")
    );
    assert_eq!(format!("{:?}", key()), "Key(..)");
}

#[test]
fn heartbeats_cross_a_namespace_pair() {
    let pair = NsPair::new("hb");
    let side = |node: &'static str, peer: &'static str, me: u8, them: u8| {
        move || async move {
            let local = SocketAddr::from((v4(me), HB_PORT));
            let remote = SocketAddr::from((v4(them), HB_PORT));
            let (_t, p) = watch::channel(payload("PRIM", u64::from(me)));
            let (hb, mut rx) =
                Heartbeats::start(config(node, peer, vec![net("lan", local, remote)], 20), p)
                    .expect("start");
            let mut with_rtt = 0;
            while with_rtt < 5 {
                let r = next(&mut rx).await;
                assert_eq!(r.payload.generations.current, u64::from(them));
                with_rtt += usize::from(r.rtt.is_some());
            }
            // Keep answering a little so that the other side gets its echoes too.
            tokio::time::sleep(Duration::from_millis(200)).await;
            hb.counters()["lan"]
        }
    };
    let a = run_in(&pair.a, side("a", "b", 1, 2));
    let b = run_in(&pair.b, side("b", "a", 2, 1));
    for c in [a.join().expect("a"), b.join().expect("b")] {
        assert!(
            c.received >= 5 && c.rejected_mac == 0 && c.rejected_replay == 0,
            "{c:?}"
        );
    }
}

proptest! {
    /// Arbitrary bytes never panic the decoder, and are never taken for a heartbeat.
    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        prop_assert!(packet::open(&key(), &bytes).is_err());
    }

    /// Authenticated arbitrary bodies never panic the decoder either.
    #[test]
    fn authenticated_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut raw = b"TDHB\x01".to_vec();
        raw.extend_from_slice(&body);
        let sealed = seal_raw(&key(), raw).expect("seal");
        let _ = packet::open(&key(), &sealed);
    }

    /// Whatever we seal opens to the same body, and any single bit flip is caught.
    #[test]
    fn seal_round_trips_and_detects_flips(
        generation: u64, consistent: bool, can_run: bool, incarnation: u64,
        epoch: u64, seq: u64, flip in any::<proptest::sample::Index>(),
    ) {
        let body = Body {
            node: "b".into(), network: "n".into(), epoch, seq,
            echo: Some(Echo { epoch: !epoch, seq: 3, held_us: 9 }),
            payload: Payload {
                incarnation,
                seq: 1,
                state: State::Prim,
                generations: Generations { current: generation, history: vec![generation ^ 1] },
                consistent,
                can_run,
                ..Payload::default()
            },
        };
        let mut bytes = seal(&key(), &body).expect("seal");
        prop_assert_eq!(packet::open(&key(), &bytes).expect("open"), body);
        let i = flip.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        prop_assert!(packet::open(&key(), &bytes).is_err());
    }
}

const HB_PORT: u16 = 7410;
