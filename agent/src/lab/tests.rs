//! Lab tests. Those that build namespaces need root (they are skipped with a
//! message otherwise); each uses its own prefix and directory and removes its lab
//! when it ends, also when it fails.

use std::{
    collections::BTreeSet,
    fs::File,
    net::{IpAddr, Ipv4Addr, UdpSocket},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use super::*;

/// Makes self-signed certificates with rcgen, counting the calls.
#[derive(Default)]
struct TestKeygen {
    calls: AtomicUsize,
}

impl Keygen for TestKeygen {
    fn make(&self, dir: &Path, node: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let made = rcgen::generate_simple_self_signed(vec![node.to_owned()])?;
        let crt = dir.join(format!("{node}.crt"));
        let key = dir.join(format!("{node}.key"));
        std::fs::write(&crt, made.cert.pem())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)?;
        std::io::Write::write_all(&mut f, made.signing_key.serialize_pem().as_bytes())?;
        Ok((crt, key))
    }
}

/// A lab with a unique prefix and directory, taken down when dropped.
struct TestLab {
    opts: LabOptions,
    _tmp: tempfile::TempDir,
}

impl TestLab {
    /// `None` (after saying why) when not root.
    fn new() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: the lab needs root");
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "tl{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut opts = LabOptions::new(prefix, tmp.path().join("lab"));
        opts.start_agents = false;
        opts.stop_grace = Duration::from_secs(2);
        Some(Self { opts, _tmp: tmp })
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Err(e) = down(&self.opts) {
            eprintln!("cleanup of lab {} failed: {e:#}", self.opts.prefix);
        }
    }
}

/// Runs `f` on a new thread that has entered namespace `ns` (namespaces are per
/// thread, so the test's own thread never moves).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> thread::JoinHandle<std::io::Result<T>> {
    let handle = netns::handle(ns);
    thread::spawn(move || {
        let file = File::open(handle)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        f()
    })
}

/// Whether a UDP datagram from namespace `from` reaches `to` (an address of
/// namespace `to_ns`) and its echo comes back: an end-to-end check of links,
/// bridge, addresses and ARP, like a ping, without needing a ping binary.
fn reachable(from: &str, to_ns: &str, to: Ipv4Addr) -> bool {
    const PORT: u16 = 47_000;
    let (ready_tx, ready_rx) = mpsc::channel();
    let responder = in_netns(to_ns, move || {
        let sock = UdpSocket::bind((to, PORT))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let _ = ready_tx.send(());
        let mut buf = [0u8; 64];
        let (n, peer) = sock.recv_from(&mut buf)?;
        sock.send_to(&buf[..n], peer)?;
        Ok(())
    });
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        panic!("responder in {to_ns} failed: {:?}", responder.join());
    }
    let sender = in_netns(from, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            sock.send_to(b"probe", (to, PORT))?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Ok(&buf[..n] == b"probe");
            }
        }
        Ok(false)
    });
    let ok = sender.join().expect("sender thread").expect("sender");
    let _ = responder.join();
    ok
}

fn assert_node1_reaches_everyone(layout: &Layout) {
    let n = &layout.namespaces;
    let a = &layout.addresses;
    for (ns, addr) in [
        (&n.node2, a.node2),
        (&n.node2, NODE2_PRIVATE_ADDR),
        (&n.client, a.client),
        (&n.witness, a.witness),
    ] {
        assert!(
            reachable(&n.node1, ns, addr),
            "{} cannot reach {addr}",
            n.node1
        );
    }
}

/// Sets bridge `bridge` (a whole lab network) down or up.
fn set_bridge(layout: &Layout, bridge: &str, up: bool) {
    let how = if up { "up" } else { "down" };
    netns::ip(&["-n", &layout.namespaces.bridge, "link", "set", bridge, how]).expect("bridge");
}

/// Waits until `pid` is inside namespace `ns` (it enters it before exec).
fn wait_in_netns(pid: u32, ns: &str) {
    let want = netns::inode(ns).expect("namespace inode");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
        if now.as_ref().ok() == Some(&want)
            && process::cmdline(pid).is_some_and(|c| c[0] == "sleep")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never ran in {ns}: {now:?} != {want}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn up_builds_a_lab_where_node1_reaches_everyone_and_down_removes_it() {
    let Some(lab) = TestLab::new() else { return };
    let keygen = TestKeygen::default();
    let layout = up(&lab.opts, &keygen).expect("up");

    for ns in layout.all_namespaces() {
        assert!(netns::exists(ns), "{ns} missing");
    }
    let br = &layout.namespaces.bridge;
    let ports = |bridge| -> BTreeSet<String> {
        netns::bridge_ports(br, bridge)
            .expect("ports")
            .into_iter()
            .collect()
    };
    let want: BTreeSet<String> = ["node1", "node2", "client", "witness"]
        .map(String::from)
        .into();
    assert_eq!(ports(BRIDGE), want);
    let want: BTreeSet<String> = ["node1-priv", "node2-priv"].map(String::from).into();
    assert_eq!(ports(PRIVATE_BRIDGE), want);
    for net in &layout.networks {
        for m in &net.members {
            assert_eq!(
                netns::addresses(&m.namespace, &net.interface).expect("addrs"),
                [format!("{}/24", m.address)]
            );
        }
    }
    // Only the nodes are on the private network.
    for ns in [&layout.namespaces.client, &layout.namespaces.witness] {
        assert!(!netns::link_exists(ns, netns::PRIVATE_INNER), "{ns}");
    }
    assert_node1_reaches_everyone(&layout);
    // Each network can be cut alone, as its switch failing would: the other still
    // joins the nodes, and the private one never reaches beyond them (the nodes'
    // default route is on the public network, whose gateway does not forward).
    let (n1, n2) = (&layout.namespaces.node1, &layout.namespaces.node2);
    set_bridge(&layout, PRIVATE_BRIDGE, false);
    assert!(!reachable(n1, n2, NODE2_PRIVATE_ADDR));
    assert!(reachable(n1, n2, layout.addresses.node2));
    set_bridge(&layout, PRIVATE_BRIDGE, true);
    set_bridge(&layout, BRIDGE, false);
    assert!(!reachable(n1, n2, layout.addresses.node2));
    assert!(reachable(n1, n2, NODE2_PRIVATE_ADDR));
    set_bridge(&layout, BRIDGE, true);
    assert!(!reachable(
        &layout.namespaces.client,
        n2,
        NODE2_PRIVATE_ADDR
    ));
    // The probe can fail: with the client's link down nothing comes back.
    let client = &layout.namespaces.client;
    netns::ip(&["-n", client, "link", "set", netns::INNER, "down"]).expect("link down");
    assert!(!reachable(
        &layout.namespaces.node1,
        client,
        layout.addresses.client
    ));
    netns::ip(&["-n", client, "link", "set", netns::INNER, "up"]).expect("link up");

    // Both configurations validate and pin each other's certificate.
    let c1 = Config::load(&layout.nodes[0].config).expect("node1 config");
    let c2 = Config::load(&layout.nodes[1].config).expect("node2 config");
    assert_eq!((c1.node.as_str(), c2.node.as_str()), ("node1", "node2"));
    assert_eq!(c1.listen, c2.peer.address);
    assert_eq!(c1.listen.ip(), IpAddr::V4(NODE1_PRIVATE_ADDR));
    assert_eq!(
        c1.peer.pin,
        crate::config::PeerPinSpec::Certificate(c2.identity.certificate.clone())
    );
    assert_eq!(c1.replicated[0].path, layout.nodes[0].data_dir);
    assert_eq!(c2.control_socket, layout.nodes[1].control_socket);
    // The VIP is on the lab interface, which exists in each node's namespace.
    for c in [&c1, &c2] {
        let vip = c.vip.as_ref().expect("vip");
        assert_eq!(
            (vip.address, vip.prefix_len),
            (IpAddr::V4(layout.vip), layout.prefix_len)
        );
        assert_eq!(vip.interface, netns::INNER);
        assert_eq!(c.failover.witnesses, [IpAddr::V4(layout.addresses.witness)]);
    }
    for (h1, h2) in c1.heartbeat.networks.iter().zip(&c2.heartbeat.networks) {
        assert_eq!((&h1.name, h1.peer), (&h2.name, h2.local));
    }
    assert_eq!(c1.heartbeat.networks.len(), 2);
    assert!(layout.nodes[0].data_dir.is_dir() && layout.nodes[1].state_dir.is_dir());

    let json = serde_json::to_value(&layout).expect("json");
    assert_eq!(json["prefix"], lab.opts.prefix.as_str());
    assert_eq!(
        json["namespaces"]["witness"],
        format!("{}-witness", lab.opts.prefix)
    );
    assert_eq!(json["addresses"]["client"], "10.213.7.100");
    assert_eq!(json["vip"], "10.213.7.50");
    assert_eq!(json["nodes"][1]["address"], "10.213.7.12");
    assert_eq!(json["nodes"][1]["private_address"], "10.213.8.12");
    assert_eq!(json["nodes"][0]["listen"], "10.213.8.11:7400");
    assert_eq!(json["networks"][0]["name"], "public");
    assert_eq!(json["networks"][0]["interface"], "eth0");
    assert_eq!(json["networks"][1]["name"], "private");
    assert_eq!(json["networks"][1]["bridge"], "br1");
    assert_eq!(json["networks"][1]["interface"], "eth1");
    assert_eq!(json["networks"][1]["members"][1]["address"], "10.213.8.12");
    assert!(json["nodes"][0]["agent_pid"].is_null());
    for key in [
        "name",
        "namespace",
        "config",
        "data_dir",
        "state_dir",
        "control_socket",
        "log",
    ] {
        assert!(json["nodes"][0][key].is_string(), "{key}");
    }

    let report = down(&lab.opts).expect("down");
    assert_eq!(report.namespaces.len(), 5);
    assert!(report.removed_dir);
    for ns in layout.all_namespaces() {
        assert!(!netns::exists(ns), "{ns} left behind");
    }
    assert!(!lab.opts.base_dir.exists());
    assert_eq!(down(&lab.opts).expect("second down"), DownReport::default());
}

#[test]
fn up_twice_leaves_one_lab_and_repairs_what_is_missing() {
    let Some(lab) = TestLab::new() else { return };
    let keygen = TestKeygen::default();
    let first = up(&lab.opts, &keygen).expect("up");
    let cert = std::fs::read(first.nodes[0].certificate.as_ref().expect("cert")).expect("read");
    let second = up(&lab.opts, &keygen).expect("second up");
    assert_eq!(first, second);
    assert_eq!(
        keygen.calls.load(Ordering::SeqCst),
        2,
        "keys are made once per node"
    );
    let again = std::fs::read(second.nodes[0].certificate.as_ref().expect("cert")).expect("read");
    assert_eq!(cert, again);
    for (bridge, ports) in [(BRIDGE, 4), (PRIVATE_BRIDGE, 2)] {
        assert_eq!(
            netns::bridge_ports(&second.namespaces.bridge, bridge)
                .expect("ports")
                .len(),
            ports
        );
    }
    for dev in [netns::INNER, netns::PRIVATE_INNER] {
        assert_eq!(
            netns::addresses(&second.namespaces.node1, dev)
                .expect("addrs")
                .len(),
            1
        );
    }

    // A namespace deleted by hand comes back on the next up.
    netns::remove(&second.namespaces.client).expect("remove client");
    let repaired = up(&lab.opts, &keygen).expect("repairing up");
    assert!(netns::exists(&repaired.namespaces.client));
    assert_node1_reaches_everyone(&repaired);
}

#[test]
fn down_cleans_up_a_partial_lab() {
    let Some(lab) = TestLab::new() else { return };
    let layout = up(&lab.opts, &TestKeygen::default()).expect("up");
    netns::remove(&layout.namespaces.node2).expect("remove node2");
    std::fs::remove_file(layout.record_path()).expect("remove record");
    let report = down(&lab.opts).expect("down");
    assert_eq!(report.namespaces.len(), 4);
    assert!(report.removed_dir);
    for ns in layout.all_namespaces() {
        assert!(!netns::exists(ns), "{ns} left behind");
    }

    // An up that stopped after two namespaces, before making its directory.
    netns::ensure(&layout.namespaces.bridge).expect("br");
    netns::ensure(&layout.namespaces.node1).expect("node1");
    let report = down(&lab.opts).expect("down");
    assert_eq!(report.namespaces.len(), 2);
    assert!(!report.removed_dir);
    assert!(!netns::exists(&layout.namespaces.node1));
}

#[test]
fn injected_command_runs_in_the_node_namespace_until_down() {
    let Some(mut lab) = TestLab::new() else {
        return;
    };
    lab.opts.start_agents = true;
    lab.opts.agent_command = Some(vec!["sleep".into(), "1000".into()]);
    let keygen = TestKeygen::default();
    let layout = up(&lab.opts, &keygen).expect("up");
    let pids: Vec<u32> = layout
        .nodes
        .iter()
        .map(|n| n.agent_pid.expect("pid"))
        .collect();
    for (node, pid) in layout.nodes.iter().zip(&pids) {
        wait_in_netns(*pid, &node.namespace);
        assert!(process::is_ours(*pid, &["sleep".into(), "1000".into()]));
    }
    let record: Layout =
        serde_json::from_str(&std::fs::read_to_string(layout.record_path()).expect("record"))
            .expect("parse");
    assert_eq!(
        record.nodes.iter().map(|n| n.agent_pid).collect::<Vec<_>>(),
        pids.iter().map(|p| Some(*p)).collect::<Vec<_>>()
    );
    let s = status(&lab.opts).expect("status");
    assert!(s.agents_alive.values().all(|a| *a), "{:?}", s.agents_alive);
    assert!(s.present.values().all(|p| *p));

    // Running agents are kept; a dead one is restarted.
    let again = up(&lab.opts, &keygen).expect("second up");
    assert_eq!(
        again.nodes.iter().map(|n| n.agent_pid).collect::<Vec<_>>(),
        record.nodes.iter().map(|n| n.agent_pid).collect::<Vec<_>>()
    );
    let target = nix::unistd::Pid::from_raw(i32::try_from(pids[0]).expect("pid"));
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).expect("kill");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process::is_alive(pids[0]) {
        assert!(Instant::now() < deadline, "killed agent still alive");
        thread::sleep(Duration::from_millis(20));
    }
    let restarted = up(&lab.opts, &keygen).expect("third up");
    let new_pid = restarted.nodes[0].agent_pid.expect("pid");
    assert_ne!(new_pid, pids[0]);
    assert_eq!(restarted.nodes[1].agent_pid, Some(pids[1]));
    wait_in_netns(new_pid, &restarted.nodes[0].namespace);

    let report = down(&lab.opts).expect("down");
    let mut stopped = report.stopped.clone();
    stopped.sort_unstable();
    let mut want = vec![new_pid, pids[1]];
    want.sort_unstable();
    assert_eq!(stopped, want);
    assert!(!process::is_alive(new_pid) && !process::is_alive(pids[1]));
}

#[test]
fn down_spares_a_recorded_pid_now_running_something_else() {
    let Some(lab) = TestLab::new() else { return };
    let mut layout = up(&lab.opts, &TestKeygen::default()).expect("up");
    let mut other = Command::new("sleep")
        .arg("1001")
        .spawn()
        .expect("spawn sleep");
    layout.nodes[0].agent_pid = Some(other.id());
    layout.nodes[0].agent_command = Some(vec!["sleep".into(), "1000".into()]);
    std::fs::write(
        layout.record_path(),
        serde_json::to_string(&layout).expect("json"),
    )
    .expect("write");
    let report = down(&lab.opts).expect("down");
    assert!(report.stopped.is_empty());
    assert!(
        other.try_wait().expect("try_wait").is_none(),
        "an unrelated process was stopped"
    );
    other.kill().expect("kill");
    other.wait().expect("wait");
}

#[test]
fn down_refuses_a_directory_it_did_not_make() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("precious"), "x").expect("write");
    let opts = LabOptions::new("tlnomarker", tmp.path());
    let e = down(&opts).expect_err("must refuse");
    assert!(e.to_string().contains("not removing"), "{e}");
    assert!(tmp.path().join("precious").exists());
}

#[test]
fn plan_names_everything_and_writes_valid_configurations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = LabOptions::new("plan", tmp.path().join("lab"));
    let mut layout = Layout::plan(&opts);
    assert_eq!(
        layout.all_namespaces(),
        [
            "plan-node1",
            "plan-node2",
            "plan-client",
            "plan-witness",
            "plan-br"
        ]
    );
    let keygen = TestKeygen::default();
    for node in &mut layout.nodes {
        prepare_node(node, None, &keygen).expect("prepare");
    }
    let (n1, n2) = (&layout.nodes[0], &layout.nodes[1]);
    std::fs::write(&n1.config, n1.config_yaml(n2).expect("yaml")).expect("write");
    let c = Config::load(&n1.config).expect("valid");
    // Replication on the private network.
    assert_eq!(c.listen.to_string(), "10.213.8.11:7400");
    assert_eq!(c.peer.address.to_string(), "10.213.8.12:7400");
    assert_eq!(c.state_dir, n1.state_dir);
    // Heartbeats on both networks, the VIP on the public interface, the witness.
    let hb = |name: &str, local: &str, peer: &str| crate::config::HeartbeatNetwork {
        name: name.into(),
        local: local.parse().expect("addr"),
        peer: peer.parse().expect("addr"),
    };
    assert_eq!(
        c.heartbeat.networks,
        [
            hb(PUBLIC_NETWORK, "10.213.7.11:7401", "10.213.7.12:7401"),
            hb(PRIVATE_NETWORK, "10.213.8.11:7401", "10.213.8.12:7401"),
        ]
    );
    let vip = c.vip.expect("vip");
    assert_eq!(vip.address.to_string(), "10.213.7.50");
    assert_eq!(vip.prefix_len, 24);
    assert_eq!(vip.interface, "eth0");
    assert_eq!(vip.interface, netns::INNER);
    assert_eq!(c.failover.witnesses, [IpAddr::V4(WITNESS_ADDR)]);
    assert_eq!(c.failover.preferred, None);
    assert_eq!(layout.node_interfaces(&n1.namespace), ["eth0", "eth1"]);
    assert_eq!(layout.node_interfaces("plan-client"), ["eth0"]);
    assert_eq!(
        layout.network(PRIVATE_NETWORK).map(|n| n.members.len()),
        Some(2)
    );

    assert_eq!(
        opts.agent_argv(&n1.config).expect("argv")[1..3],
        ["run", "-c"]
    );
    let mut custom = opts.clone();
    custom.agent_command = Some(vec!["echo".into(), CONFIG_PLACEHOLDER.into()]);
    assert_eq!(
        custom.agent_argv(Path::new("/x.yaml")).expect("argv"),
        ["echo", "/x.yaml"]
    );
    for bad in ["", "has space", "a/b", &"x".repeat(41)] {
        assert!(LabOptions::new(bad, "/tmp/x").check().is_err(), "{bad:?}");
    }
    assert!(LabOptions::new("ok", "relative").check().is_err());
}

#[test]
fn a_record_from_before_the_private_network_is_still_read() {
    // `down` stops the agents a record names; a lab brought up by an older
    // `tandem` must not lose them to a parse error.
    let opts = LabOptions::new("old", "/tmp/old-lab");
    let mut json = serde_json::to_value(Layout::plan(&opts)).expect("json");
    json.as_object_mut().expect("object").remove("networks");
    for node in json["nodes"].as_array_mut().expect("nodes") {
        let node = node.as_object_mut().expect("node");
        node.remove("private_address");
        node.insert("agent_pid".into(), 4242.into());
    }
    let old: Layout = serde_json::from_value(json).expect("an old record parses");
    assert!(old.networks.is_empty());
    assert_eq!(old.nodes[0].agent_pid, Some(4242));
}
