//! Checks of what failover uses: the heartbeat secret and networks (explicit or
//! derived from the replication endpoints), the VIP and the failover policy.

use std::net::Ipv4Addr;

use super::*;

/// What is known of the VIP's address when checking witnesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VipAddress {
    /// No `vip` section.
    Absent,
    /// `vip.address` is missing or invalid (it has its error).
    Invalid,
    /// A valid `vip.address`.
    Known(IpAddr),
}

/// What a list item's address is compared with, to name the clash.
struct Seen {
    index: usize,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

impl Validator<'_> {
    /// A readable, non-empty file (relative paths from the configuration's
    /// directory, as identity files).
    pub(super) fn secret_file(&mut self, t: &Text) -> Option<PathBuf> {
        let key = "heartbeat.secret_file";
        let path = self.readable_file(t, key)?;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!(
                        "`{}` is empty; put the shared secret in it (the same file on both nodes)",
                        path.display()
                    ),
                );
                None
            }
            Ok(_) => Some(path),
            Err(e) => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!("cannot read `{}`: {e}", path.display()),
                );
                None
            }
        }
    }

    /// The networks as listed, or the default one derived from `ends`.
    pub(super) fn heartbeat_networks(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawHeartbeatNetwork>>>>,
        ends: Ends<'_>,
    ) -> Option<Vec<HeartbeatNetwork>> {
        let Some(raw) = raw else {
            return self.default_network(ends).map(|n| vec![n]);
        };
        if raw.value.is_empty() {
            self.error(
                "heartbeat.networks",
                Some(raw.referenced),
                "list at least one network, or leave `heartbeat.networks` out for the default one",
            );
            return None;
        }
        let mut names: Vec<(usize, String)> = Vec::new();
        let mut seen: Vec<Seen> = Vec::new();
        let mut out = Vec::new();
        for (i, item) in raw.value.iter().enumerate() {
            let at = Some(item.referenced);
            let key = |field: &str| format!("heartbeat.networks[{i}].{field}");
            let name = self
                .required(item.value.name.as_ref(), &key("name"), at)
                .and_then(|t| {
                    let name = self.short_name(t, &key("name"), "network name")?;
                    self.unique_name(t, &key("name"), "heartbeat.networks", &names)?;
                    Some(name)
                });
            let local = self
                .required(item.value.local.as_ref(), &key("local"), at)
                .and_then(|t| {
                    let addr = self.socket_addr(t, &key("local"), false)?;
                    self.network_local(t, &key("local"), addr, ends, &seen)?;
                    Some(addr)
                });
            let peer = self
                .required(item.value.peer.as_ref(), &key("peer"), at)
                .and_then(|t| {
                    let addr = self.socket_addr(t, &key("peer"), false)?;
                    self.network_peer(t, &key("peer"), addr, local, ends, &seen)?;
                    Some(addr)
                });
            if let Some(name) = &name {
                names.push((i, name.clone()));
            }
            seen.push(Seen {
                index: i,
                local,
                peer,
            });
            out.push(match (name, local, peer) {
                (Some(name), Some(local), Some(peer)) => {
                    Some(HeartbeatNetwork { name, local, peer })
                }
                _ => None,
            });
        }
        out.into_iter().collect()
    }

    /// Our end of a listed network: a socket of its own (not the replication
    /// endpoint, not another network's).
    fn network_local(
        &mut self,
        t: &Text,
        key: &str,
        addr: SocketAddr,
        ends: Ends<'_>,
        earlier: &[Seen],
    ) -> Option<()> {
        let clash = if let Some((_, listen)) = ends.listen.filter(|(_, l)| {
            l.port() == addr.port() && (l.ip().is_unspecified() || l.ip() == addr.ip())
        }) {
            Some(format!(
                "{addr} is taken by the replication endpoint (`listen: {listen}`); use another port"
            ))
        } else {
            earlier.iter().find(|s| s.local == Some(addr)).map(|s| {
                format!(
                    "{addr} is already the local address of heartbeat.networks[{}]",
                    s.index
                )
            })
        };
        self.no_clash(t, key, clash)
    }

    /// Records `clash` as the error of `key`, if there is one.
    fn no_clash(&mut self, t: &Text, key: &str, clash: Option<String>) -> Option<()> {
        match clash {
            Some(message) => {
                self.error(key, Some(t.referenced), message);
                None
            }
            None => Some(()),
        }
    }

    /// The peer's end of a listed network: same family as ours, and a socket of
    /// its own on the peer.
    fn network_peer(
        &mut self,
        t: &Text,
        key: &str,
        addr: SocketAddr,
        local: Option<SocketAddr>,
        ends: Ends<'_>,
        earlier: &[Seen],
    ) -> Option<()> {
        let clash = if let Some(local) = local.filter(|l| l.is_ipv4() != addr.is_ipv4()) {
            Some(format!(
                "{addr} and `local` ({local}) are not of the same address family"
            ))
        } else if local == Some(addr) {
            Some("must differ from `local`".to_owned())
        } else if ends.peer.is_some_and(|(_, p)| p == addr) {
            Some(format!(
                "{addr} is the peer's replication endpoint (`peer.address`); use another port"
            ))
        } else {
            earlier.iter().find(|s| s.peer == Some(addr)).map(|s| {
                format!(
                    "{addr} is already the peer address of heartbeat.networks[{}]",
                    s.index
                )
            })
        };
        self.no_clash(t, key, clash)
    }

    /// The network used when none is listed: `listen`'s address to
    /// `peer.address`'s, each on its replication port + 1. Problems are reported
    /// on the endpoint they come from; nothing is reported when an endpoint is
    /// invalid (it has its own error).
    fn default_network(&mut self, ends: Ends<'_>) -> Option<HeartbeatNetwork> {
        let (listen_text, listen) = ends.listen?;
        let hint = "list `heartbeat.networks`";
        let mut ok = true;
        if listen.ip().is_unspecified() {
            self.error(
                "listen",
                Some(listen_text.referenced),
                format!(
                    "{} listens on every address, so the default heartbeat network has no address of its own: {hint}",
                    listen.ip()
                ),
            );
            ok = false;
        }
        let local_port = listen.port().checked_add(1);
        if local_port.is_none() {
            self.error(
                "listen",
                Some(listen_text.referenced),
                format!(
                    "port {} leaves no port for the default heartbeat network (the replication port + 1): use a lower port or {hint}",
                    listen.port()
                ),
            );
            ok = false;
        }
        let (peer_text, peer) = ends.peer?;
        let peer_port = peer.port().checked_add(1);
        if peer_port.is_none() {
            self.error(
                "peer.address",
                Some(peer_text.referenced),
                format!(
                    "port {} leaves no port for the default heartbeat network (the replication port + 1): use a lower port or {hint}",
                    peer.port()
                ),
            );
            ok = false;
        }
        if ok && listen.is_ipv4() != peer.is_ipv4() {
            self.error(
                "listen",
                Some(listen_text.referenced),
                format!(
                    "{} and `peer.address` ({}) are not of the same address family, so the default heartbeat network cannot join them: {hint}",
                    listen.ip(),
                    peer.ip()
                ),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        Some(HeartbeatNetwork {
            name: DEFAULT_HEARTBEAT_NETWORK.to_owned(),
            local: SocketAddr::new(listen.ip(), local_port?),
            peer: SocketAddr::new(peer.ip(), peer_port?),
        })
    }

    /// `vip:`; `nodes` are the addresses it must not be. Also returns its address
    /// when that is valid (even if another key is not), for checking witnesses.
    pub(super) fn vip(
        &mut self,
        raw: &RawVip,
        at: Location,
        nodes: &[(IpAddr, String)],
    ) -> (VipAddress, Option<Vip>) {
        let address = self
            .required(raw.address.as_ref(), "vip.address", Some(at))
            .and_then(|t| self.vip_address(t, nodes));
        let interface = self
            .required(raw.interface.as_ref(), "vip.interface", Some(at))
            .and_then(|t| self.interface(t, "vip.interface"));
        let announce_count = raw
            .announce_count
            .as_ref()
            .map_or(Some(DEFAULT_ANNOUNCE_COUNT), |t| {
                self.count(t, "vip.announce_count", 1..=100)
            });
        let announce_interval = self.duration_or(
            raw.announce_interval.as_ref(),
            "vip.announce_interval",
            DEFAULT_ANNOUNCE_INTERVAL,
        );
        let refresh = match &raw.refresh {
            Some(t) => self.duration(t, "vip.refresh").map(Some),
            None => Some(None),
        };
        let probe_wait = self.duration_or(
            raw.probe_wait.as_ref(),
            "vip.probe_wait",
            DEFAULT_PROBE_WAIT,
        );
        let known = address.map_or(VipAddress::Invalid, |(ip, _)| VipAddress::Known(ip));
        let vip = (|| {
            let (address, prefix_len) = address?;
            Some(Vip {
                address,
                prefix_len,
                interface: interface?,
                announce_count: announce_count?,
                announce_interval: announce_interval?,
                refresh: refresh?,
                probe_wait: probe_wait?,
            })
        })();
        (known, vip)
    }

    /// `IP/PREFIX`: a prefix length that fits the family, an address clients can
    /// use that is none of the nodes' own.
    fn vip_address(&mut self, t: &Text, nodes: &[(IpAddr, String)]) -> Option<(IpAddr, u8)> {
        let key = "vip.address";
        let parsed = t.value.trim().split_once('/').and_then(|(ip, prefix)| {
            let ip = ip.parse::<IpAddr>().ok()?;
            let prefix = prefix.parse::<u8>().ok()?;
            Some((ip, prefix))
        });
        let Some((ip, prefix)) = parsed else {
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is not an address with its prefix length, such as 10.0.0.50/24 or fd00::50/64",
                    t.value.escape_debug()
                ),
            );
            return None;
        };
        let (family, max) = if ip.is_ipv4() {
            ("IPv4", 32)
        } else {
            ("IPv6", 128)
        };
        let problem = if prefix > max {
            Some(format!(
                "prefix length {prefix} is more than {max}, the most for an {family} address"
            ))
        } else if prefix == 0 {
            Some("the prefix length must be at least 1: give the length of the network the VIP is on, such as /24".to_owned())
        } else if let Some(kind) = unusable(ip) {
            Some(format!("{ip} is {kind} address, not one clients can use"))
        } else if let Some(edge) = subnet_edge(ip, prefix) {
            Some(format!(
                "{ip} is the {edge} address of its network (/{prefix}), not one a host can have"
            ))
        } else {
            nodes
                .iter()
                .find(|(a, _)| *a == ip)
                .map(|(_, what)| format!("{ip} is {what}; the VIP must be an address of its own"))
        };
        if let Some(message) = problem {
            self.error(key, Some(t.referenced), message);
            return None;
        }
        Some((ip, prefix))
    }

    /// A Linux interface name as the kernel accepts it: 1 to 15 bytes, not `.` or
    /// `..`, without `/`, `:` or white space.
    fn interface(&mut self, t: &Text, key: &str) -> Option<String> {
        let name = t.value.as_str();
        let ok = (1..=15).contains(&name.len())
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if ok {
            Some(name.to_owned())
        } else {
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is not an interface name: use 1 to 15 characters without `/`, `:` or spaces, such as eth0",
                    name.escape_debug()
                ),
            );
            None
        }
    }

    /// `failover:` (its defaults when absent). `names` are this node's and the
    /// peer's names when valid.
    pub(super) fn failover(
        &mut self,
        raw: Option<&Spanned<RawFailover>>,
        names: [Option<&str>; 2],
        vip: VipAddress,
        nodes: &[(IpAddr, String)],
    ) -> Option<Failover> {
        let raw = raw.map(|f| &f.value);
        let preferred = match raw.and_then(|f| f.preferred.as_ref()) {
            Some(t) => self.preferred(t, names).map(Some),
            None => Some(None),
        };
        let boot_wait = self.duration_or(
            raw.and_then(|f| f.boot_wait.as_ref()),
            "failover.boot_wait",
            DEFAULT_BOOT_WAIT,
        );
        let witnesses = match raw.and_then(|f| f.witnesses.as_ref()) {
            Some(list) => self.witnesses(list, vip, nodes),
            None => Some(Vec::new()),
        };
        Some(Failover {
            preferred: preferred?,
            boot_wait: boot_wait?,
            witnesses: witnesses?,
        })
    }

    fn preferred(&mut self, t: &Text, names: [Option<&str>; 2]) -> Option<String> {
        let key = "failover.preferred";
        let name = self.node_name(t, key)?;
        // Compared only when both names are valid; otherwise they have their errors.
        if let [Some(node), Some(peer)] = names
            && name != node
            && name != peer
        {
            self.error(
                key,
                Some(t.referenced),
                format!("`{name}` is neither this node (`{node}`) nor the peer (`{peer}`)"),
            );
            return None;
        }
        Some(name)
    }

    fn witnesses(
        &mut self,
        list: &Spanned<Vec<Text>>,
        vip: VipAddress,
        nodes: &[(IpAddr, String)],
    ) -> Option<Vec<IpAddr>> {
        let mut ok = true;
        if vip == VipAddress::Absent && !list.value.is_empty() {
            self.error(
                "failover.witnesses",
                Some(list.referenced),
                "needs `vip`: witnesses are probed on the VIP's network",
            );
            ok = false;
        }
        let vip = match vip {
            VipAddress::Known(ip) => Some(ip),
            VipAddress::Absent | VipAddress::Invalid => None,
        };
        // Valid witnesses so far, with their index.
        let mut out: Vec<(usize, IpAddr)> = Vec::new();
        for (i, t) in list.value.iter().enumerate() {
            let key = format!("failover.witnesses[{i}]");
            let Ok(ip) = t.value.trim().parse::<IpAddr>() else {
                self.error(
                    &key,
                    Some(t.referenced),
                    format!(
                        "`{}` is not an IP address such as 10.0.0.1",
                        t.value.escape_debug()
                    ),
                );
                ok = false;
                continue;
            };
            let problem = if let Some(kind) = unusable(ip) {
                Some(format!("{ip} is {kind} address, not a machine's"))
            } else if vip == Some(ip) {
                Some(format!(
                    "{ip} is the VIP; a witness is another machine on its network"
                ))
            } else if let Some((_, what)) = nodes.iter().find(|(a, _)| *a == ip) {
                Some(format!("{ip} is {what}; a witness is a third machine"))
            } else if let Some(v) = vip.filter(|v| v.is_ipv4() != ip.is_ipv4()) {
                Some(format!(
                    "{ip} is not of the VIP's address family ({v}); witnesses are probed on the VIP's network"
                ))
            } else {
                out.iter()
                    .find(|(_, w)| *w == ip)
                    .map(|(j, _)| format!("{ip} is already failover.witnesses[{j}]"))
            };
            if let Some(message) = problem {
                self.error(&key, Some(t.referenced), message);
                ok = false;
                continue;
            }
            out.push((i, ip));
        }
        ok.then(|| out.into_iter().map(|(_, ip)| ip).collect())
    }
}

/// Why `ip` cannot be a host's address (as "an unspecified" and so on), if so.
fn unusable(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast")
    } else {
        None
    }
}

/// For an IPv4 address in a network of at least 4 addresses: whether it is the
/// network's first (network) or last (broadcast) address.
fn subnet_edge(ip: IpAddr, prefix: u8) -> Option<&'static str> {
    let IpAddr::V4(v4) = ip else { return None };
    if prefix > 30 {
        return None;
    }
    let host_bits = u32::MAX >> prefix;
    let bits = u32::from(v4) & host_bits;
    if bits == 0 {
        Some("network")
    } else if bits == host_bits {
        Some("broadcast")
    } else {
        None
    }
}
