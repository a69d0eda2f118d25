//! What a lab is made of: namespace names, addresses and each node's files. The
//! layout is a pure function of the options (prefix and base directory) plus the
//! agents' pids, and is what `tandem lab up --json` prints and `lab.json` records.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{LabOptions, netns};

/// The lab subnet's prefix length.
pub const PREFIX_LEN: u8 = 24;
/// Node 1's address.
pub const NODE1_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 11);
/// Node 2's address.
pub const NODE2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 12);
/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 100);
/// The witness's address; it is also the other namespaces' default gateway.
pub const WITNESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);
/// The service address the failover engine moves between the nodes (the lab
/// does not assign it).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 50);
/// The replication port both nodes listen on.
pub const REPLICATION_PORT: u16 = 7400;
/// The bridge's name inside the bridge namespace.
pub const BRIDGE: &str = "br0";

/// Everything `up` makes, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The namespace name prefix.
    pub prefix: String,
    /// The directory holding the nodes' files and `lab.json`.
    pub base_dir: PathBuf,
    /// The namespaces.
    pub namespaces: Namespaces,
    /// Each namespace's address on the lab subnet.
    pub addresses: Addresses,
    /// The service address (assigned by the failover engine, not by the lab).
    pub vip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The two nodes.
    pub nodes: Vec<NodeLayout>,
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
    /// Its address.
    pub address: Ipv4Addr,
    /// Its replication endpoint.
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
        let nodes = [("node1", NODE1_ADDR), ("node2", NODE2_ADDR)]
            .into_iter()
            .map(|(name, address)| NodeLayout::plan(&opts.base_dir, name, ns(name), address))
            .collect();
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
            nodes,
        }
    }

    /// Every namespace with its address (none for the bridge) and the name of its
    /// port on the bridge.
    #[must_use]
    pub fn members(&self) -> [(&str, Ipv4Addr, &'static str); 4] {
        let n = &self.namespaces;
        let a = &self.addresses;
        [
            (n.node1.as_str(), a.node1, "node1"),
            (n.node2.as_str(), a.node2, "node2"),
            (n.client.as_str(), a.client, "client"),
            (n.witness.as_str(), a.witness, "witness"),
        ]
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
    fn plan(base: &Path, name: &str, namespace: String, address: Ipv4Addr) -> Self {
        let dir = base.join(name);
        let state_dir = dir.join("state");
        Self {
            name: name.to_owned(),
            namespace,
            address,
            listen: SocketAddr::V4(SocketAddrV4::new(address, REPLICATION_PORT)),
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
    /// certificate, with the lab's VIP on the node's lab interface and the witness
    /// namespace as failover witness; heartbeats use the default network (the
    /// replication addresses, port + 1). Values are written as JSON strings, which
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
             heartbeat:\n  interval: 100ms\n  timeout: 1s\n\
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
            vip = q(&format!("{VIP}/{PREFIX_LEN}")),
            interface = q(&netns::INNER),
            witness = q(&WITNESS_ADDR),
        ))
    }
}
