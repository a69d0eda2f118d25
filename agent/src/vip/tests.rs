//! VIP tests in a private namespace pair (root only): netlink add/remove checked with
//! `ip -j addr`, announcements checked in the peer's neighbour table, the ARP probe
//! against a real holder.

use std::{net::IpAddr, time::Duration};

use super::{
    testnet::{IF_A, IF_B, NsPair, run_in, v4, v6},
    *,
};

#[test]
fn vip_is_added_listed_and_removed_through_netlink() {
    let net = NsPair::new("addr");
    let vip4 = IpAddr::V4(v4(50));
    let vip6 = IpAddr::V6(v6(0x50));
    let (added, again, listed, added6) = run_in(&net.a, move || async move {
        let nl = Addresses::open().expect("netlink");
        let added = nl.add(IF_A, vip4, 24).await.expect("add v4");
        let again = nl.add(IF_A, vip4, 24).await.expect("add v4 again");
        let added6 = nl.add(IF_A, vip6, 64).await.expect("add v6");
        (added, again, nl.list(IF_A).await.expect("list"), added6)
    })
    .join()
    .expect("thread");
    assert!(added && added6);
    assert!(!again, "a second add reports the address as already there");
    assert!(
        listed.contains(&IfAddress {
            addr: vip4,
            prefix_len: 24
        }),
        "{listed:?}"
    );
    assert!(listed.contains(&IfAddress {
        addr: IpAddr::V4(v4(1)),
        prefix_len: 24
    }));
    let seen = net.addresses(&net.a, IF_A);
    assert!(
        seen.contains(&vip4.to_string()) && seen.contains(&vip6.to_string()),
        "{seen:?}"
    );
    // nodad: the IPv6 VIP is usable at once, not tentative.
    let info = net.json(&net.a, &["addr", "show", "dev", IF_A]);
    let v6_entry = info[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .find(|i| i["local"] == vip6.to_string())
        .expect("v6 VIP listed")
        .clone();
    assert!(v6_entry.get("tentative").is_none(), "{v6_entry}");
    // The namespace B never saw it.
    assert!(!net.addresses(&net.b, IF_B).contains(&vip4.to_string()));

    let (removed, removed6, gone, contains) = run_in(&net.a, move || async move {
        let nl = Addresses::open().expect("netlink");
        let removed = nl.remove(IF_A, vip4).await.expect("remove v4");
        let removed6 = nl.remove(IF_A, vip6).await.expect("remove v6");
        let gone = nl.remove(IF_A, vip4).await.expect("remove absent");
        (
            removed,
            removed6,
            gone,
            nl.contains(IF_A, vip4).await.expect("contains"),
        )
    })
    .join()
    .expect("thread");
    assert!(removed && removed6 && !gone && !contains);
    let seen = net.addresses(&net.a, IF_A);
    assert!(
        !seen.contains(&vip4.to_string()) && !seen.contains(&vip6.to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&v4(1).to_string()),
        "the primary address stays: {seen:?}"
    );
}

#[test]
fn missing_interface_is_a_typed_error() {
    let net = NsPair::new("noif");
    // The root namespace's interfaces are not visible from inside the namespace.
    let (nl, raw) = run_in(&net.a, || async {
        let nl = Addresses::open().expect("netlink");
        let nl = nl.add("nosuch0", IpAddr::V4(v4(50)), 24).await;
        let raw = Announcer::open("nosuch0", IpAddr::V4(v4(50))).map(|_| ());
        (nl, raw)
    })
    .join()
    .expect("thread");
    assert!(matches!(nl, Err(VipError::Interface { .. })), "{nl:?}");
    assert!(matches!(raw, Err(VipError::Interface { .. })), "{raw:?}");
}

#[test]
fn gratuitous_arp_moves_the_peers_neighbour_entry() {
    let net = NsPair::new("garp");
    let vip = v4(50).to_string();
    // With arp_accept=0 an announcement updates an entry but creates none: make one
    // that points elsewhere, as after a failover.
    net.ip(
        &net.b,
        &[
            "neigh", "replace", &vip, "lladdr", STALE_MAC, "dev", IF_B, "nud", "stale",
        ],
    );
    let mac = run_in(&net.a, || async {
        let announcer = Announcer::open(IF_A, IpAddr::V4(v4(50))).expect("announcer");
        announcer
            .burst(2, Duration::from_millis(50))
            .await
            .expect("burst");
        announcer.mac()
    })
    .join()
    .expect("thread");
    assert_eq!(mac.to_string(), net.mac(&net.a, IF_A));
    assert_eq!(net.neighbour(&net.b, IF_B, &vip), Some(mac.to_string()));
}

#[test]
fn announcer_refreshes_periodically() {
    let net = NsPair::new("refresh");
    let vip = v4(51).to_string();
    let a = net.a.clone();
    net.ip(
        &net.b,
        &[
            "neigh", "replace", &vip, "lladdr", STALE_MAC, "dev", IF_B, "nud", "stale",
        ],
    );
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let runner = run_in(&a, move || async move {
        let announcer = Announcer::open(IF_A, IpAddr::V4(v4(51))).expect("announcer");
        let config = AnnounceConfig {
            count: 1,
            interval: Duration::from_millis(10),
            refresh: Some(Duration::from_millis(100)),
        };
        // Runs until the test says stop (the future is then dropped).
        let stop = tokio::task::spawn_blocking(move || rx.recv());
        tokio::select! {
            r = announcer.run(config) => r.expect("refresh never ends on its own"),
            _ = stop => {}
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    // Point the entry elsewhere again after the burst: only a refresh can fix it.
    net.ip(
        &net.b,
        &[
            "neigh", "replace", &vip, "lladdr", STALE_MAC, "dev", IF_B, "nud", "stale",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    tx.send(()).expect("stop");
    runner.join().expect("thread");
    assert_eq!(
        net.neighbour(&net.b, IF_B, &vip),
        Some(net.mac(&net.a, IF_A))
    );
}

#[test]
fn arp_probe_finds_the_holder_and_only_the_holder() {
    let net = NsPair::new("probe");
    let vip = v4(50);
    let probe_from_a = |net: &NsPair| {
        run_in(&net.a, move || async move {
            probe(IF_A, IpAddr::V4(vip), ProbeConfig::default())
                .await
                .expect("probe")
        })
        .join()
        .expect("thread")
    };
    assert_eq!(probe_from_a(&net), ProbeOutcome::Free);

    net.ip(&net.b, &["addr", "add", &format!("{vip}/24"), "dev", IF_B]);
    let b_mac = net.mac(&net.b, IF_B);
    match probe_from_a(&net) {
        ProbeOutcome::Held(mac) => assert_eq!(mac.to_string(), b_mac),
        other => panic!("holder not found: {other:?}"),
    }

    // A prober opened before a burst of announcements from B ignores those queued
    // frames once the holder is gone.
    let (a_ns, vip_ip) = (net.a.clone(), IpAddr::V4(vip));
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reused = run_in(&a_ns, move || async move {
        let prober = Prober::open(IF_A, vip_ip).expect("prober");
        opened_tx.send(()).expect("opened");
        tokio::task::spawn_blocking(move || go_rx.recv())
            .await
            .expect("join")
            .expect("go");
        prober.probe(ProbeConfig::default()).await.expect("probe")
    });
    opened_rx.recv().expect("opened");
    run_in(&net.b, move || async move {
        let announcer = Announcer::open(IF_B, vip_ip).expect("announcer");
        announcer
            .burst(3, Duration::from_millis(1))
            .await
            .expect("burst");
    })
    .join()
    .expect("thread");
    net.ip(&net.b, &["addr", "del", &format!("{vip}/24"), "dev", IF_B]);
    go_tx.send(()).expect("go");
    assert_eq!(reused.join().expect("thread"), ProbeOutcome::Free);

    // A leftover VIP on our own interface is not someone else holding it.
    net.ip(&net.a, &["addr", "add", &format!("{vip}/24"), "dev", IF_A]);
    assert_eq!(probe_from_a(&net), ProbeOutcome::Free);
}

#[test]
fn ipv6_probe_finds_the_holder() {
    let net = NsPair::new("probe6");
    let vip = v6(0x50);
    let probe_from_a = |net: &NsPair| {
        run_in(&net.a, move || async move {
            probe(IF_A, IpAddr::V6(vip), ProbeConfig::default())
                .await
                .expect("probe")
        })
        .join()
        .expect("thread")
    };
    assert_eq!(probe_from_a(&net), ProbeOutcome::Free);
    net.ip(
        &net.b,
        &["addr", "add", &format!("{vip}/64"), "dev", IF_B, "nodad"],
    );
    match probe_from_a(&net) {
        ProbeOutcome::Held(mac) => assert_eq!(mac.to_string(), net.mac(&net.b, IF_B)),
        other => panic!("holder not found: {other:?}"),
    }
}

#[test]
fn unsolicited_neighbour_advertisement_moves_the_peers_entry() {
    let net = NsPair::new("na");
    let vip = v6(0x50).to_string();
    net.ip(
        &net.b,
        &[
            "-6", "neigh", "replace", &vip, "lladdr", STALE_MAC, "dev", IF_B, "nud", "stale",
        ],
    );
    let mac = run_in(&net.a, || async {
        let announcer = Announcer::open(IF_A, IpAddr::V6(v6(0x50))).expect("announcer");
        announcer
            .burst(2, Duration::from_millis(50))
            .await
            .expect("burst");
        announcer.mac()
    })
    .join()
    .expect("thread");
    assert_eq!(net.neighbour(&net.b, IF_B, &vip), Some(mac.to_string()));
}

/// A MAC no interface has, for entries that must be corrected.
const STALE_MAC: &str = "02:00:00:00:00:99";
