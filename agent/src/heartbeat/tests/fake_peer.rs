//! Heartbeat tests against a hand-driven fake peer that holds the key: it replays,
//! restarts with new and old epochs, forges and garbles packets.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::timeout,
};

use super::{config, free_addr, key, net, next, payload};
use crate::heartbeat::{
    Heartbeats, Payload, Received,
    packet::{self, Body, Echo, seal, seal_raw},
};

#[tokio::test]
async fn payload_change_is_sent_at_once() {
    let (a, b) = (free_addr([127, 0, 18, 1]), free_addr([127, 0, 18, 2]));
    let (tx, p) = watch::channel(payload("SECOND", 1));
    let mut cfg = config("a", "b", vec![net("n1", a, b)], 5000);
    cfg.window = Duration::from_secs(10);
    let (_hb, _rx) = Heartbeats::start(cfg, p).expect("a");
    let peer = FakePeer::new(b, a).await;
    assert_eq!(peer.heard().await.payload.state.as_str(), "SECOND");
    tx.send_replace(payload("PRIM", 2));
    let next = timeout(Duration::from_millis(500), peer.heard())
        .await
        .expect("sent at once");
    assert_eq!(next.payload, payload("PRIM", 2));
}

/// A peer driven by hand, with the right key.
struct FakePeer {
    socket: UdpSocket,
    target: SocketAddr,
}

impl FakePeer {
    async fn new(local: SocketAddr, target: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind(local).await.expect("bind fake"),
            target,
        }
    }

    /// The next heartbeat the real node sends us, opened.
    async fn heard(&self) -> Body {
        let mut buf = [0u8; 2048];
        let (n, _) = timeout(Duration::from_secs(3), self.socket.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        packet::open(&key(), &buf[..n]).expect("valid heartbeat")
    }

    /// An echo of the real node's latest heartbeat.
    async fn fresh_echo(&self) -> Option<Echo> {
        let b = self.heard().await;
        Some(Echo {
            epoch: b.epoch,
            seq: b.seq,
            held_us: 0,
        })
    }

    async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.target).await.expect("send");
    }

    fn packet(epoch: u64, seq: u64, echo: Option<Echo>) -> Vec<u8> {
        let body = Body {
            node: "b".into(),
            network: "n1".into(),
            epoch,
            seq,
            echo,
            payload: payload("SECOND", seq),
        };
        seal(&key(), &body).expect("seal")
    }
}

async fn quiet(rx: &mut mpsc::Receiver<Received>) -> bool {
    timeout(Duration::from_millis(150), rx.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn replayed_and_old_epoch_packets_are_rejected() {
    let (a, b) = (free_addr([127, 0, 14, 1]), free_addr([127, 0, 14, 2]));
    let (_t, p) = watch::channel(Payload::default());
    let (hb, mut rx) =
        Heartbeats::start(config("a", "b", vec![net("n1", a, b)], 30), p).expect("a");
    let peer = FakePeer::new(b, a).await;

    let first = FakePeer::packet(1111, 5, peer.fresh_echo().await);
    peer.send(&first).await;
    let r = next(&mut rx).await;
    assert!(
        r.new_epoch && r.seq == 5 && r.peer_epoch == 1111 && r.rtt.is_some(),
        "{r:?}"
    );

    // The same bytes again, and an older sequence number: replays.
    peer.send(&first).await;
    peer.send(&FakePeer::packet(1111, 4, peer.fresh_echo().await))
        .await;
    assert!(quiet(&mut rx).await);
    assert_eq!(hb.counters()["n1"].rejected_replay, 2);

    // The peer restarts with a new epoch: accepted (and flagged) once fresh.
    peer.send(&FakePeer::packet(2222, 1, peer.fresh_echo().await))
        .await;
    let r = next(&mut rx).await;
    assert!(r.new_epoch && r.peer_epoch == 2222, "{r:?}");

    // A packet from the replaced epoch, even with a higher sequence and a fresh
    // echo, is a replay of the peer's past.
    peer.send(&FakePeer::packet(1111, 99, peer.fresh_echo().await))
        .await;
    assert!(quiet(&mut rx).await);
    assert_eq!(hb.counters()["n1"].rejected_replay, 3);

    // A never-seen epoch without an echo of our recent packets is not delivered.
    peer.send(&FakePeer::packet(3333, 1, None)).await;
    let stale = Some(Echo {
        epoch: hb.epoch() ^ 1,
        seq: 1,
        held_us: 0,
    });
    peer.send(&FakePeer::packet(3333, 2, stale)).await;
    assert!(quiet(&mut rx).await);
    assert_eq!(hb.counters()["n1"].unverified, 2);
    // The current epoch goes on being accepted.
    peer.send(&FakePeer::packet(2222, 2, peer.fresh_echo().await))
        .await;
    assert_eq!(next(&mut rx).await.seq, 2);
}

#[tokio::test]
async fn echo_older_than_the_window_is_not_fresh() {
    let (a, b) = (free_addr([127, 0, 15, 1]), free_addr([127, 0, 15, 2]));
    let (_t, p) = watch::channel(Payload::default());
    let mut cfg = config("a", "b", vec![net("n1", a, b)], 50);
    cfg.window = Duration::from_millis(200);
    let (hb, mut rx) = Heartbeats::start(cfg, p).expect("a");
    let peer = FakePeer::new(b, a).await;
    let old = peer.fresh_echo().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    peer.send(&FakePeer::packet(1, 1, old)).await;
    assert!(quiet(&mut rx).await);
    assert_eq!(hb.counters()["n1"].unverified, 1);
}

#[tokio::test]
async fn garbage_forgeries_and_strangers_are_counted_not_fatal() {
    let (a, b) = (free_addr([127, 0, 16, 1]), free_addr([127, 0, 16, 2]));
    let stranger_addr = free_addr([127, 0, 16, 3]);
    let (_t, p) = watch::channel(Payload::default());
    let (hb, mut rx) =
        Heartbeats::start(config("a", "b", vec![net("n1", a, b)], 30), p).expect("a");
    let peer = FakePeer::new(b, a).await;
    let echo = peer.fresh_echo().await;

    peer.send(b"").await;
    peer.send(&[0xff; 1500]).await;
    let mut forged = FakePeer::packet(1, 1, echo.clone());
    let last = forged.len() - 1;
    forged[last] ^= 1;
    peer.send(&forged).await;
    // Authenticated but for another network or node: refused.
    let mut body = Body {
        node: "b".into(),
        network: "n2".into(),
        epoch: 1,
        seq: 1,
        echo: echo.clone(),
        payload: Payload::default(),
    };
    peer.send(&seal(&key(), &body).expect("seal")).await;
    body.network = "n1".into();
    body.node = "a".into();
    peer.send(&seal(&key(), &body).expect("seal")).await;
    // Authenticated garbage (a body that does not decode).
    let mut raw = b"TDHB\x01".to_vec();
    raw.extend_from_slice(&[0xff; 40]);
    peer.send(&seal_raw(&key(), raw).expect("seal")).await;
    // A valid packet from the wrong address.
    let stranger = FakePeer::new(stranger_addr, a).await;
    stranger.send(&FakePeer::packet(1, 1, echo.clone())).await;

    assert!(quiet(&mut rx).await);
    let c = hb.counters()["n1"];
    assert_eq!(
        (c.rejected_malformed, c.rejected_mac, c.rejected_source),
        (5, 1, 1),
        "{c:?}"
    );
    // Still alive and accepting the real peer.
    peer.send(&FakePeer::packet(1, 1, peer.fresh_echo().await))
        .await;
    assert_eq!(next(&mut rx).await.seq, 1);
}
