//! The benchmark's network: Tandem's own lab (`tandem::lab`, the code behind
//! `tandem lab up --no-agents`), under a prefix of its own, so every system is
//! measured on the same namespaces, bridge and addresses as Tandem's tests use.
//!
//! The lab builds nothing in the root network namespace (the bridge lives in a
//! namespace of its own). It is removed when the value is dropped, which also
//! happens when a run fails or is interrupted.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};
use serde_json::Value;
use tandem::lab::{Keygen, LabOptions, Layout};

/// The interface of every lab member on the public lab network (the VIP's).
pub(crate) const IFACE: &str = "eth0";

/// Node keys from Tandem's own key generator: the lab writes each node's agent
/// configuration, which names them, even when no agent is started.
struct TransportKeys;

impl Keygen for TransportKeys {
    fn make(&self, dir: &Path, node: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let k = tandem::transport::keygen(dir, node, true)?;
        Ok((k.cert, k.key))
    }
}

/// A lab without agents, removed on drop.
pub(crate) struct NetLab {
    opts: LabOptions,
    pub(crate) layout: Layout,
    /// node1's and node2's MAC addresses on the lab bridge.
    pub(crate) macs: [String; 2],
}

impl NetLab {
    /// Builds the lab named `prefix` with its files under the system's temporary
    /// directory.
    pub(crate) fn up(prefix: &str) -> anyhow::Result<NetLab> {
        let base = std::env::temp_dir().join(format!("failover-bench-{prefix}"));
        let mut opts = LabOptions::new(prefix, base);
        opts.start_agents = false;
        let layout = match tandem::lab::up(&opts, &TransportKeys) {
            Ok(l) => l,
            Err(e) => {
                // A half-built lab is removed before the error goes up.
                let _ = tandem::lab::down(&opts);
                return Err(e.context(format!("cannot build lab {prefix}")));
            }
        };
        let mut lab = NetLab {
            opts,
            layout,
            macs: [String::new(), String::new()],
        };
        for i in 0..2 {
            lab.macs[i] = mac_of(lab.node_ns(i), IFACE)?;
        }
        Ok(lab)
    }

    /// Node `i`'s namespace (0: node1, 1: node2).
    pub(crate) fn node_ns(&self, i: usize) -> &str {
        self.layout
            .nodes
            .get(i)
            .map_or("", |n| n.namespace.as_str())
    }

    /// Node `i`'s address on the lab subnet.
    pub(crate) fn node_addr(&self, i: usize) -> Ipv4Addr {
        if i == 0 {
            self.layout.addresses.node1
        } else {
            self.layout.addresses.node2
        }
    }

    /// Node `i`'s name (`node1`, `node2`).
    pub(crate) fn node_name(&self, i: usize) -> &str {
        self.layout.nodes.get(i).map_or("", |n| n.name.as_str())
    }

    pub(crate) fn client_ns(&self) -> &str {
        &self.layout.namespaces.client
    }

    pub(crate) fn vip(&self) -> Ipv4Addr {
        self.layout.vip
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.opts.prefix
    }

    /// Brings node `i`'s lab interfaces (public and private) up or down: the
    /// "node death" fault cuts them all, since a dead node is silent on every
    /// network, heartbeats on the private one included.
    pub(crate) fn set_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let ns = self.node_ns(i);
        for dev in self.layout.node_interfaces(ns) {
            ip(&["-n", ns, "link", "set", dev, if up { "up" } else { "down" }])?;
        }
        Ok(())
    }

    /// Whether node `i` has the VIP on its lab interface.
    pub(crate) fn has_vip(&self, i: usize) -> anyhow::Result<bool> {
        let out = ip(&[
            "-n",
            self.node_ns(i),
            "-j",
            "-4",
            "addr",
            "show",
            "dev",
            IFACE,
        ])?;
        let v: Value = serde_json::from_str(&out).context("`ip -j addr` printed no JSON")?;
        let vip = self.vip().to_string();
        Ok(v.as_array().into_iter().flatten().any(|link| {
            link.get("addr_info")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|a| a.get("local").and_then(Value::as_str) == Some(vip.as_str()))
        }))
    }

    /// The MAC address the client's neighbour entry for the VIP holds, if any.
    pub(crate) fn client_vip_mac(&self) -> anyhow::Result<Option<String>> {
        let vip = self.vip().to_string();
        let out = ip(&["-n", self.client_ns(), "-j", "neigh", "show", &vip])?;
        let v: Value = serde_json::from_str(&out).context("`ip -j neigh` printed no JSON")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e.get("lladdr").and_then(Value::as_str).map(str::to_owned)))
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Err(e) = tandem::lab::down(&self.opts) {
            eprintln!("failover-bench: removing lab {}: {e:#}", self.opts.prefix);
        }
    }
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> anyhow::Result<String> {
    let out = ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out).context("`ip -j link` printed no JSON")?;
    v.pointer("/0/address")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{dev} in {ns} has no MAC address: {out}"))
}

/// Runs `ip ARGS` and returns what it printed.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
