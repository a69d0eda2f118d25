//! Network namespaces, links and addresses, set up by running `ip` (iproute2).
//!
//! Every command names its namespace with `ip -n`, so nothing is ever created in
//! the caller's namespace and no thread of this process changes namespace (they
//! are per thread). Each step checks what exists first, so running it again
//! repairs a lab instead of failing on what is already there.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

/// Where `ip netns add` keeps its namespace handles.
pub(crate) const NETNS_DIR: &str = "/run/netns";
/// The `ip` binary; found through PATH.
const IP: &str = "ip";

/// The handle file of namespace `name`.
pub(crate) fn handle(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether namespace `name` exists.
pub(crate) fn exists(name: &str) -> bool {
    handle(name).exists()
}

/// The namespace's inode, which `/proc/<pid>/ns/net` of a process inside has too.
#[cfg(test)]
pub(crate) fn inode(name: &str) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(handle(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    Ok(meta.ino())
}

/// Creates namespace `name` unless it exists, and brings its loopback up.
pub(crate) fn ensure(name: &str) -> anyhow::Result<()> {
    if !exists(name) {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Deletes namespace `name` if it exists; returns whether it did.
pub(crate) fn remove(name: &str) -> anyhow::Result<bool> {
    if !exists(name) {
        return Ok(false);
    }
    ip(&["netns", "del", name])?;
    Ok(true)
}

/// Whether interface `dev` exists in namespace `ns`.
pub(crate) fn link_exists(ns: &str, dev: &str) -> bool {
    Command::new(IP)
        .args(["-n", ns, "link", "show", "dev", dev])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes `bridge` in `ns`: a bridge without spanning tree and with no forwarding
/// delay, so ports forward as soon as they are up.
pub(crate) fn ensure_bridge(ns: &str, bridge: &str) -> anyhow::Result<()> {
    if !link_exists(ns, bridge) {
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
    }
    ip(&["-n", ns, "link", "set", bridge, "up"])
}

/// Connects namespace `member` to `bridge` in `bridge_ns`: a veth pair whose end
/// `port` is a bridge port and whose other end is `inner` in `member`.
pub(crate) fn ensure_port(
    bridge_ns: &str,
    bridge: &str,
    port: &str,
    member: &str,
    inner: &str,
) -> anyhow::Result<()> {
    if !link_exists(bridge_ns, port) {
        // A pair is destroyed as a whole, so a lone `inner` is not ours; it would
        // make the new pair's creation fail, so name the problem instead.
        if link_exists(member, inner) {
            bail!(
                "{member} has an {inner} that is not connected to the lab bridge {bridge}; run `tandem lab down` first"
            );
        }
        ip(&[
            "-n", bridge_ns, "link", "add", port, "type", "veth", "peer", "name", inner, "netns",
            member,
        ])?;
    }
    ip(&["-n", bridge_ns, "link", "set", port, "master", bridge, "up"])?;
    ip(&["-n", member, "link", "set", inner, "up"])
}

/// The interface name on the public network inside each member namespace.
pub(crate) const INNER: &str = "eth0";
/// The interface name on the private network inside each node's namespace.
pub(crate) const PRIVATE_INNER: &str = "eth1";

/// Gives `dev` in `ns` the address `cidr` (replacing nothing else).
pub(crate) fn ensure_address(ns: &str, dev: &str, cidr: &str) -> anyhow::Result<()> {
    ip(&["-n", ns, "addr", "replace", cidr, "dev", dev])
}

/// Routes everything not on the lab subnets through `gateway` on `dev`.
pub(crate) fn ensure_default_route(ns: &str, dev: &str, gateway: &str) -> anyhow::Result<()> {
    ip(&[
        "-n", ns, "route", "replace", "default", "via", gateway, "dev", dev,
    ])
}

/// The IPv4 addresses (with prefix length) on `dev` in `ns`.
#[cfg(test)]
pub(crate) fn addresses(ns: &str, dev: &str) -> anyhow::Result<Vec<String>> {
    let out = output(&["-n", ns, "-o", "-4", "addr", "show", "dev", dev])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_owned)
        })
        .collect())
}

/// The names of the interfaces enslaved to `bridge` in `ns`.
#[cfg(test)]
pub(crate) fn bridge_ports(ns: &str, bridge: &str) -> anyhow::Result<Vec<String>> {
    let out = output(&["-n", ns, "-o", "link", "show", "master", bridge])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect())
}

/// Runs `ip ARGS`, failing with its error output.
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    output(args).map(drop)
}

/// Runs `ip ARGS` and returns its standard output.
fn output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(IP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{IP}` (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{IP} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
