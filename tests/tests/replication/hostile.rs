//! A hostile peer: a wrong certificate is refused; records escaping the replicated
//! directory, out-of-sequence records and unknown directories close the connection;
//! nothing outside the root is touched, and the agent goes on serving.

use std::{path::Path, time::Duration};

use agent_common::wire::{
    Attrs, EntryKind, Frame, Generations, Hello, ManifestScope, PROTOCOL_VERSION, Record, WireOp,
};
use nix::sys::signal::Signal;
use tandem::{
    config::{Config, PeerPinSpec},
    transport::{Endpoint, Identity, PeerPin, Timing, keygen},
};

use super::{pair, serial, wait_identical};

/// Runs `f` on a thread inside network namespace `ns` (namespaces are per thread).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Heartbeats as node1 would send them while PRIM, from node1's namespace: the
/// hostile peer holds node1's credentials, so it can. node2 then follows it as
/// SECOND and keeps accepting its sessions (a SECOND whose peer is silent and whose
/// resync broke off would rightly stop replicating and wait). Stopped when dropped.
struct FakeHeartbeats {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHeartbeats {
    fn start(ns: &str, cfg: &Config) -> Self {
        use tandem::{
            failover::Beacon,
            heartbeat::{HeartbeatConfig, Heartbeats, NetworkSpec, derive_key, fingerprint_secret},
            status::State,
        };
        let me = Identity::load(&cfg.identity.certificate, &cfg.identity.key).expect("identity");
        let own = PeerPin::parse_fingerprint(&me.fingerprint())
            .expect("fp")
            .digest();
        let peer = match &cfg.peer.pin {
            PeerPinSpec::Certificate(p) => PeerPin::from_cert_file(p).expect("pin"),
            PeerPinSpec::Fingerprint(h) => {
                PeerPin::parse_fingerprint(&format!("sha256:{h}")).expect("pin")
            }
        }
        .digest();
        let net = cfg.heartbeat.networks[0].clone();
        let config = HeartbeatConfig {
            networks: vec![NetworkSpec {
                name: net.name,
                local: net.local,
                peer: net.peer,
            }],
            interval: cfg.heartbeat.interval,
            window: HeartbeatConfig::DEFAULT_WINDOW,
            key: derive_key(&fingerprint_secret(&own, &peer)),
            node: cfg.node.clone(),
            peer_node: cfg.peer.name.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ns = ns.to_string();
        let thread = std::thread::spawn(move || {
            let fd = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let beacon = Beacon {
                    incarnation: 1,
                    seq: 1,
                    state: State::Prim,
                    consistent: true,
                    can_run: true,
                    ..Beacon::default()
                };
                let (_keep, payload) = tokio::sync::watch::channel(beacon);
                // The killed agent's sockets close only once the kernel has
                // detached its probes.
                let mut tries = 0;
                let (hb, _rx) = loop {
                    match Heartbeats::start(config.clone(), payload.clone()) {
                        Ok(h) => break h,
                        Err(e) if tries < 120 => {
                            tries += 1;
                            eprintln!("fake heartbeats: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Err(e) => panic!("fake heartbeats: {e}"),
                    }
                };
                let _ = rx.await;
                hb.stop().await;
            });
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for FakeHeartbeats {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until node2 hears the fake heartbeats and is SECOND. The killed agent's
/// heartbeat sockets can stay bound for seconds; a session scripted before node2
/// hears node1 again would meet a SECOND that rightly stopped accepting sessions.
fn follows_fake_node1(lab: &tandem_tests::lab::Lab) {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    while std::time::Instant::now() < end {
        if let Ok(v) = lab.status(1) {
            let heard = v
                .pointer("/peer/connected")
                .and_then(serde_json::Value::as_bool);
            let state = v.get("state").and_then(serde_json::Value::as_str);
            if heard == Some(true) && state == Some("SECOND") {
                return;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "node2 does not follow the fake node1: {last}\n{}",
        lab.log_tail(1, 40)
    );
}

/// What node2 answered to one scripted session.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The connection was refused or closed without a Hello.
    Refused,
    /// The session got as far as the records, then node2 closed it (with its message).
    Closed(String),
    /// node2 accepted every record.
    Accepted,
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        node: "node1".into(),
        dirs: vec!["data".into()],
        generations: Generations::default(),
        primary: true,
        unsure: false,
    })
}

/// Plays node1 with `identity`, sends `records` after the manifest, reports.
fn session(cfg: &Config, identity: &Identity, records: Vec<Record>) -> Outcome {
    let pin = match &cfg.peer.pin {
        PeerPinSpec::Certificate(p) => PeerPin::from_cert_file(p).expect("pin"),
        PeerPinSpec::Fingerprint(h) => {
            PeerPin::parse_fingerprint(&format!("sha256:{h}")).expect("pin")
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let timing = Timing {
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(3),
        };
        let ep = Endpoint::bind("0.0.0.0:0".parse().expect("addr"), identity, &pin, timing)
            .expect("bind");
        let Ok(mut conn) = ep.connect(cfg.peer.address).await else {
            return Outcome::Refused;
        };
        if conn.sender().send(&hello()).await.is_err() {
            return Outcome::Refused;
        }
        match tokio::time::timeout(Duration::from_secs(5), conn.receiver().recv()).await {
            Ok(Ok(Some(Frame::Hello(_)))) => {}
            _ => return Outcome::Refused,
        }
        if conn
            .sender()
            .send(&Frame::ManifestRequest(ManifestScope::All))
            .await
            .is_err()
        {
            return Outcome::Closed("while asking for the manifest".into());
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), conn.receiver().recv()).await {
                Ok(Ok(Some(Frame::ManifestDone))) => break,
                Ok(Ok(Some(_))) => {}
                other => return Outcome::Closed(format!("during manifest: {other:?}")),
            }
        }
        for r in records {
            if conn.sender().send(&Frame::Record(r)).await.is_err() {
                break;
            }
        }
        let _ = conn.sender().send(&Frame::ResyncDone { seq: 0 }).await;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), conn.receiver().recv()).await {
                Ok(Ok(Some(Frame::Error { message }))) => return Outcome::Closed(message),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) => return Outcome::Closed("connection closed".into()),
                Err(_) => return Outcome::Accepted,
            }
        }
    })
}

fn rec(seq: u64, dir: u16, path: &[u8], op: WireOp) -> Record {
    Record {
        seq,
        dir,
        path: path.to_vec(),
        op,
    }
}

fn file() -> WireOp {
    WireOp::Create {
        kind: EntryKind::File,
        attrs: Attrs {
            mode: 0o644,
            ..Attrs::default()
        },
        target: None,
        rdev: 0,
    }
}

fn untouched(dir: &Path) {
    let n = std::fs::read_dir(dir).expect("read outside").count();
    assert_eq!(
        n,
        1,
        "something was written outside the root in {}",
        dir.display()
    );
}

#[test]
fn hostile_peer_is_refused_and_agent_keeps_serving() {
    let _g = serial();
    let lab = pair("hp");
    let cfg = Config::load(&lab.nodes[0].config).expect("node1 config");
    let ns = lab.nodes[0].namespace.clone();
    // Killed, not stopped: its VIP stays, so node2 stays SECOND (no takeover) and
    // keeps serving whoever claims to be node1.
    lab.signal_agent(0, Signal::SIGKILL).expect("stop node1");
    assert!(lab.wait_agent_gone(0, Duration::from_secs(30)));
    let heartbeats = FakeHeartbeats::start(&ns, &cfg);
    follows_fake_node1(&lab);
    let outside = lab.dir.join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("sentinel"), b"keep").expect("sentinel");

    // A certificate node2 does not pin.
    let keys = tempfile::tempdir().expect("tempdir");
    let k = keygen(keys.path(), "node1", false).expect("keygen");
    let stranger = Identity::load(&k.cert, &k.key).expect("identity");
    assert_eq!(
        in_netns(&ns, || session(&cfg, &stranger, vec![])),
        Outcome::Refused
    );

    let me = Identity::load(&cfg.identity.certificate, &cfg.identity.key).expect("identity");
    let escape = format!(
        "../{}",
        outside.file_name().expect("name").to_string_lossy()
    );
    let scripts: Vec<(&str, Vec<Record>)> = vec![
        (
            "dot-dot",
            vec![rec(1, 0, format!("{escape}/x").as_bytes(), file())],
        ),
        (
            "absolute",
            vec![rec(
                1,
                0,
                outside.join("x").to_string_lossy().as_bytes(),
                file(),
            )],
        ),
        (
            "through a symlink",
            vec![
                rec(
                    1,
                    0,
                    b"evil",
                    WireOp::Create {
                        kind: EntryKind::Symlink,
                        attrs: Attrs::default(),
                        target: Some(outside.to_string_lossy().as_bytes().to_vec()),
                        rdev: 0,
                    },
                ),
                rec(2, 0, b"evil/x", file()),
                rec(
                    3,
                    0,
                    b"evil/sentinel",
                    WireOp::Write {
                        offset: 0,
                        data: b"gone".to_vec(),
                    },
                ),
            ],
        ),
        (
            "rename out",
            vec![
                rec(1, 0, b"f", file()),
                rec(
                    2,
                    0,
                    b"f",
                    WireOp::Rename {
                        new_path: format!("{escape}/f").into_bytes(),
                    },
                ),
            ],
        ),
        ("sequence gap", vec![rec(5, 0, b"g", file())]),
        ("unknown directory", vec![rec(1, 9, b"g", file())]),
    ];
    for (name, records) in scripts {
        follows_fake_node1(&lab);
        let out = in_netns(&ns, || session(&cfg, &me, records));
        assert!(
            matches!(out, Outcome::Closed(_)),
            "{name}: node2 did not close the session: {out:?}"
        );
        eprintln!("{name}: {out:?}");
        untouched(&outside);
        assert_eq!(
            std::fs::read(outside.join("sentinel")).expect("sentinel"),
            b"keep",
            "{name}"
        );
    }
    // node2 still serves: the real node1 comes back and replicates.
    drop(heartbeats);
    lab.restart_missing().unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(0, "PRIM", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        lab.nodes[0].data_dir.join("after.txt"),
        b"still replicating\n",
    )
    .expect("write");
    let d = wait_identical(
        &lab.nodes[0].data_dir,
        &lab.nodes[1].data_dir,
        Duration::from_secs(30),
    );
    assert!(
        d.is_empty(),
        "{d:?}\n--- node1 ---\n{}\n--- node2 ---\n{}",
        lab.log_tail(0, 30),
        lab.log_tail(1, 30)
    );
}
