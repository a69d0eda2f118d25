//! What a lab is made of: namespace names, networks, addresses and each node's
//! files. The layout is a pure function of the options (prefix and base directory)
//! plus the agents' pids, and is what `tandem lab up --json` prints and `lab.json`
//! records.
//!
//! Two networks, as a real pair is usually cabled:
//!
//! ```text
//!   public  br0  10.213.7.0/24  eth0: node1 .11, node2 .12, client .100, witness .1
//!           the VIP (.50), the client, the witness (the gateway), heartbeats
//!   private br1  10.213.8.0/24  eth1: node1 .11, node2 .12
//!           replication (QUIC) and heartbeats: the nodes' back-to-back link
//! ```
//!
//! Heartbeats travel on both, so losing either network alone is not mistaken for
//! losing the peer; replication stays off the network the clients use.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{LabOptions, netns};

/// The prefix length of both lab subnets.
pub const PREFIX_LEN: u8 = 24;
/// Node 1's address on the public network.
pub const NODE1_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 11);
/// Node 2's address on the public network.
pub const NODE2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 12);
/// Node 1's address on the private network.
pub const NODE1_PRIVATE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 8, 11);
/// Node 2's address on the private network.
pub const NODE2_PRIVATE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 8, 12);
/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 100);
/// The witness's address; it is also the other namespaces' default gateway.
pub const WITNESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);
/// The service address the failover engine moves between the nodes (the lab
/// does not assign it).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 50);
/// The replication port both nodes listen on (on the private network).
pub const REPLICATION_PORT: u16 = 7400;
/// The heartbeat port, on both networks.
pub const HEARTBEAT_PORT: u16 = 7401;
/// The public network's bridge inside the bridge namespace.
pub const BRIDGE: &str = "br0";
/// The private network's bridge inside the bridge namespace.
pub const PRIVATE_BRIDGE: &str = "br1";
/// The public network's name (also its heartbeat network's name).
pub const PUBLIC_NETWORK: &str = "public";
/// The private network's name (also its heartbeat network's name).
pub const PRIVATE_NETWORK: &str = "private";

/// Everything `up` makes, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The namespace name prefix.
    pub prefix: String,
    /// The directory holding the nodes' files and `lab.json`.
    pub base_dir: PathBuf,
    /// The namespaces.
    pub namespaces: Namespaces,
    /// Each namespace's address on the public network.
    pub addresses: Addresses,
    /// The service address (assigned by the failover engine, not by the lab).
    pub vip: Ipv4Addr,
    /// The public subnet's prefix length.
    pub prefix_len: u8,
    /// The networks, public first. (A record written before the private network
    /// existed has none; it is read for its agents only.)
    #[serde(default)]
    pub networks: Vec<Network>,
    /// The two nodes.
    pub nodes: Vec<NodeLayout>,
}

/// One lab network: a bridge in the bridge namespace and, in each member
/// namespace, one interface on it (a veth pair).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its name; the nodes' heartbeat network on it has the same name.
    pub name: String,
    /// What travels on it.
    pub carries: String,
    /// Its bridge, in the bridge namespace.
    pub bridge: String,
    /// The name of each member's interface on it.
    pub interface: String,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The default gateway of the members that are not it, if this network has one.
    pub gateway: Option<Ipv4Addr>,
    /// Who is on it.
    pub members: Vec<Member>,
}

/// A namespace on a lab network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The namespace.
    pub namespace: String,
    /// Its address on the network.
    pub address: Ipv4Addr,
    /// The name of its veth end on the bridge (in the bridge namespace).
    pub port: String,
}

/// The lab's namespace names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// Node 1.
    pub node1: String,
    /// Node 2.
    pub node2: String,
    /// A client of the service.
    pub client: String,
    /// The witness (and gateway).
    pub witness: String,
    /// The bridge joining the others.
    pub bridge: String,
}

/// The lab's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// Node 1.
    pub node1: Ipv4Addr,
    /// Node 2.
    pub node2: Ipv4Addr,
    /// The client.
    pub client: Ipv4Addr,
    /// The witness.
    pub witness: Ipv4Addr,
}

/// One node's namespace, address and files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLayout {
    /// Its node name (`node1`, `node2`).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its address on the public network (the VIP's, the client's).
    pub address: Ipv4Addr,
    /// Its address on the private network (replication, heartbeats).
    #[serde(default = "unspecified")]
    pub private_address: Ipv4Addr,
    /// Its replication endpoint, on the private network.
    pub listen: SocketAddr,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its replicated directory.
    pub data_dir: PathBuf,
    /// Its agent state directory.
    pub state_dir: PathBuf,
    /// Its control socket.
    pub control_socket: PathBuf,
    /// Its certificate, once made.
    pub certificate: Option<PathBuf>,
    /// Its private key, once made.
    pub key: Option<PathBuf>,
    /// The running agent's pid, if started.
    pub agent_pid: Option<u32>,
    /// The command line the agent was started with (checked before stopping it).
    pub agent_command: Option<Vec<String>>,
    /// The agent's output.
    pub log: PathBuf,
}

/// The name of the record `up` writes in the base directory.
pub(crate) const RECORD: &str = "lab.json";
/// A file `up` writes first in the base directory; `down` deletes the directory
/// only when it is there, so a mistyped TANDEM_LAB_DIR is never wiped.
pub(crate) const MARKER: &str = ".tandem-lab";
/// Each node's configuration file name.
pub(crate) const CONFIG_FILE: &str = "tandem.yaml";

// === impl Layout ===

impl Layout {
    /// The layout for `opts`, with no keys and no agents yet.
    #[must_use]
    pub fn plan(opts: &LabOptions) -> Self {
        let ns = |member: &str| format!("{}-{member}", opts.prefix);
        let namespaces = Namespaces {
            node1: ns("node1"),
            node2: ns("node2"),
            client: ns("client"),
            witness: ns("witness"),
            bridge: ns("br"),
        };
        let nodes = [
            ("node1", NODE1_ADDR, NODE1_PRIVATE_ADDR),
            ("node2", NODE2_ADDR, NODE2_PRIVATE_ADDR),
        ]
        .into_iter()
        .map(|(name, public, private)| {
            NodeLayout::plan(&opts.base_dir, name, ns(name), public, private)
        })
        .collect();
        let member = |namespace: &str, address, port: &str| Member {
            namespace: namespace.to_owned(),
            address,
            port: port.to_owned(),
        };
        let n = &namespaces;
        let networks = vec![
            Network {
                name: PUBLIC_NETWORK.to_owned(),
                carries: "the VIP, the client, the witness (the gateway), heartbeats".to_owned(),
                bridge: BRIDGE.to_owned(),
                interface: netns::INNER.to_owned(),
                prefix_len: PREFIX_LEN,
                gateway: Some(WITNESS_ADDR),
                members: vec![
                    member(&n.node1, NODE1_ADDR, "node1"),
                    member(&n.node2, NODE2_ADDR, "node2"),
                    member(&n.client, CLIENT_ADDR, "client"),
                    member(&n.witness, WITNESS_ADDR, "witness"),
                ],
            },
            Network {
                name: PRIVATE_NETWORK.to_owned(),
                carries: "replication and heartbeats (the nodes' direct link)".to_owned(),
                bridge: PRIVATE_BRIDGE.to_owned(),
                interface: netns::PRIVATE_INNER.to_owned(),
                prefix_len: PREFIX_LEN,
                // Only the two nodes are on it: nothing beyond it to route to.
                gateway: None,
                members: vec![
                    member(&n.node1, NODE1_PRIVATE_ADDR, "node1-priv"),
                    member(&n.node2, NODE2_PRIVATE_ADDR, "node2-priv"),
                ],
            },
        ];
        Self {
            prefix: opts.prefix.clone(),
            base_dir: opts.base_dir.clone(),
            namespaces,
            addresses: Addresses {
                node1: NODE1_ADDR,
                node2: NODE2_ADDR,
                client: CLIENT_ADDR,
                witness: WITNESS_ADDR,
            },
            vip: VIP,
            prefix_len: PREFIX_LEN,
            networks,
            nodes,
        }
    }

    /// The network named `name`.
    #[must_use]
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The interfaces a node has, one per network it is on: cutting them all
    /// isolates it.
    #[must_use]
    pub fn node_interfaces(&self, namespace: &str) -> Vec<&str> {
        self.networks
            .iter()
            .filter(|net| net.members.iter().any(|m| m.namespace == namespace))
            .map(|net| net.interface.as_str())
            .collect()
    }

    /// All five namespace names, the bridge's last.
    #[must_use]
    pub fn all_namespaces(&self) -> [&str; 5] {
        let n = &self.namespaces;
        [&n.node1, &n.node2, &n.client, &n.witness, &n.bridge]
    }

    /// The record's path.
    #[must_use]
    pub fn record_path(&self) -> PathBuf {
        self.base_dir.join(RECORD)
    }
}

// === impl NodeLayout ===

impl NodeLayout {
    fn plan(
        base: &Path,
        name: &str,
        namespace: String,
        address: Ipv4Addr,
        private_address: Ipv4Addr,
    ) -> Self {
        let dir = base.join(name);
        let state_dir = dir.join("state");
        Self {
            name: name.to_owned(),
            namespace,
            address,
            private_address,
            listen: SocketAddr::V4(SocketAddrV4::new(private_address, REPLICATION_PORT)),
            config: dir.join(CONFIG_FILE),
            data_dir: dir.join("data"),
            control_socket: state_dir.join("control.sock"),
            state_dir,
            certificate: None,
            key: None,
            agent_pid: None,
            agent_command: None,
            log: dir.join("agent.log"),
        }
    }

    /// The node's own directory.
    #[must_use]
    pub fn dir(&self) -> PathBuf {
        self.config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The directory its keys are made in.
    #[must_use]
    pub fn keys_dir(&self) -> PathBuf {
        self.dir().join("keys")
    }

    /// The node's configuration file (docs/configuration.md), pinning `peer`'s
    /// certificate, replicating over the private network, with heartbeats on both
    /// networks, the lab's VIP on the node's public interface and the witness
    /// namespace as failover witness. Values are written as JSON strings, which
    /// YAML reads as double-quoted scalars, so no path can break the syntax.
    pub fn config_yaml(&self, peer: &NodeLayout) -> anyhow::Result<String> {
        let q = |v: &dyn std::fmt::Display| {
            serde_json::to_string(&v.to_string()).unwrap_or_else(|_| String::from("\"\""))
        };
        let path = |p: Option<&PathBuf>, what: &str| -> anyhow::Result<String> {
            let p = p.ok_or_else(|| anyhow::anyhow!("{what} has not been made yet"))?;
            Ok(q(&p.display()))
        };
        Ok(format!(
            "# Written by `tandem lab up`; rewritten on every `up`.\n\
             node: {node}\n\
             listen: {listen}\n\
             identity:\n  certificate: {crt}\n  key: {key}\n\
             peer:\n  name: {peer_name}\n  address: {peer_addr}\n  certificate: {peer_crt}\n\
             state_dir: {state}\n\
             control_socket: {socket}\n\
             replicated:\n  - name: data\n    path: {data}\n\
             heartbeat:\n  interval: 100ms\n  timeout: 1s\n  networks:\n\
             \x20   - name: {public}\n      local: {public_local}\n      peer: {public_peer}\n\
             \x20   - name: {private}\n      local: {private_local}\n      peer: {private_peer}\n\
             vip:\n  address: {vip}\n  interface: {interface}\n\
             failover:\n  witnesses: [{witness}]\n",
            node = q(&self.name),
            listen = q(&self.listen),
            crt = path(self.certificate.as_ref(), "this node's certificate")?,
            key = path(self.key.as_ref(), "this node's key")?,
            peer_name = q(&peer.name),
            peer_addr = q(&peer.listen),
            peer_crt = path(peer.certificate.as_ref(), "the peer's certificate")?,
            state = q(&self.state_dir.display()),
            socket = q(&self.control_socket.display()),
            data = q(&self.data_dir.display()),
            public = q(&PUBLIC_NETWORK),
            public_local = q(&SocketAddrV4::new(self.address, HEARTBEAT_PORT)),
            public_peer = q(&SocketAddrV4::new(peer.address, HEARTBEAT_PORT)),
            private = q(&PRIVATE_NETWORK),
            private_local = q(&SocketAddrV4::new(self.private_address, HEARTBEAT_PORT)),
            private_peer = q(&SocketAddrV4::new(peer.private_address, HEARTBEAT_PORT)),
            vip = q(&format!("{VIP}/{PREFIX_LEN}")),
            interface = q(&netns::INNER),
            witness = q(&WITNESS_ADDR),
        ))
    }
}

/// A private address read from a record that predates the private network.
fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}
