//! The probe before a takeover: does anyone already answer for the virtual IP?
//! IPv4 uses RFC 5227 ARP probes, IPv6 duplicate address detection solicitations
//! (RFC 4862); both are sent from a raw socket that also listens for the answer.
//!
//! Frames from our own interface never count, so a VIP left over on this node is
//! not mistaken for another holder (the start-up check finds that one).

use std::{net::IpAddr, time::Duration};

use tokio::time::{self, Instant};
use tracing::debug;

use super::{
    MacAddr, VipError,
    arp::{Arp, ETHERTYPE_ARP},
    ndp::{self, ETHERTYPE_IPV6, Nd},
    raw::PacketSocket,
};

/// How to probe for an address.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ProbeConfig {
    /// Probes sent (at least one is always sent).
    pub count: u32,
    /// Time between two probes.
    pub interval: Duration,
    /// How long to listen after the last probe.
    pub wait: Duration,
}

/// What a probe found.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum ProbeOutcome {
    /// Another host probed for the same address while we did (RFC 5227 and 4862
    /// count this as a conflict too): two would-be holders at once.
    Contested(MacAddr),
    /// Nobody answered within the wait.
    Free,
    /// A host answered for the address, or announced it: it holds it now.
    Held(MacAddr),
}

/// A raw socket ready to probe for one address on one interface.
#[derive(Debug)]
pub struct Prober {
    socket: PacketSocket,
    frame: Vec<u8>,
    ifname: String,
    ip: IpAddr,
}

/// Opens a [`Prober`] in the calling thread's network namespace and probes once.
pub async fn probe(
    ifname: &str,
    ip: IpAddr,
    config: ProbeConfig,
) -> Result<ProbeOutcome, VipError> {
    Prober::open(ifname, ip)?.probe(config).await
}

// === impl Prober ===

impl Prober {
    /// Opens a raw socket on `ifname` in the calling thread's network namespace
    /// (needs CAP_NET_RAW), listening for the frames that answer a probe for `ip`.
    pub fn open(ifname: &str, ip: IpAddr) -> Result<Self, VipError> {
        let ethertype = if ip.is_ipv4() {
            ETHERTYPE_ARP
        } else {
            ETHERTYPE_IPV6
        };
        let socket = PacketSocket::open(ifname, Some(ethertype))?;
        let frame = match ip {
            IpAddr::V4(v4) => Arp::probe(socket.mac(), v4).frame(MacAddr::BROADCAST),
            IpAddr::V6(v6) => ndp::dad_solicitation(socket.mac(), v6),
        };
        Ok(Self {
            socket,
            frame,
            ifname: ifname.to_owned(),
            ip,
        })
    }

    /// Probes and reports whether another host answers for the address. Returns at
    /// the first answer, or after `interval × (count − 1) + wait` when there is none.
    /// Frames queued before the call are discarded, so a prober can be reused.
    pub async fn probe(&self, config: ProbeConfig) -> Result<ProbeOutcome, VipError> {
        let me = self.socket.mac();
        let ip = self.ip;
        let judge = |bytes: &[u8]| match ip {
            IpAddr::V4(v4) => Arp::parse(bytes)?.conflict(v4, me),
            IpAddr::V6(v6) => Nd::parse(bytes)?.conflict(v6, me),
        };
        self.socket.discard_queued();
        let count = config.count.max(1);
        let start = Instant::now();
        let deadline = start + config.interval * (count - 1) + config.wait;
        let mut next_send = start;
        let mut sent = 0;
        let mut buf = [0u8; 2048];
        loop {
            tokio::select! {
                () = time::sleep_until(next_send), if sent < count => {
                    self.socket.send(&self.frame).await.map_err(|source| VipError::Send {
                        name: self.ifname.clone(),
                        source,
                    })?;
                    sent += 1;
                    next_send += config.interval;
                }
                received = self.socket.recv(&mut buf) => {
                    let (len, outgoing) = received.map_err(|source| VipError::Receive {
                        name: self.ifname.clone(),
                        source,
                    })?;
                    if outgoing {
                        continue;
                    }
                    if let Some(outcome) = judge(&buf[..len.min(buf.len())]) {
                        debug!(%ip, ?outcome, "VIP probe answered");
                        return Ok(outcome);
                    }
                }
                () = time::sleep_until(deadline) => return Ok(ProbeOutcome::Free),
            }
        }
    }
}

// === impl ProbeConfig ===

impl Default for ProbeConfig {
    /// Two probes 50 ms apart, then 200 ms of listening: RFC 5227's 1–2 s spacing
    /// is too slow for a failover, and a holder on the same LAN answers in well
    /// under a millisecond.
    fn default() -> Self {
        Self {
            count: 2,
            interval: Duration::from_millis(50),
            wait: Duration::from_millis(200),
        }
    }
}
