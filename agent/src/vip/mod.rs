//! The virtual IP's I/O: adding and removing it through netlink ([`Addresses`]),
//! announcing it after a takeover ([`Announcer`]: gratuitous ARP for IPv4,
//! unsolicited neighbour advertisement for IPv6), and asking before a takeover
//! whether someone already holds it ([`Prober`], [`probe`]: RFC 5227 ARP probes, IPv6
//! duplicate address detection).
//!
//! ```text
//! takeover:  Prober::probe == Free ──▶ Addresses::add(VIP) ──▶ Announcer::run(5 × 200 ms [+ refresh])
//! release:   Addresses::remove(VIP)
//! start-up:  Addresses::contains(VIP) && not primary ──▶ Addresses::remove(VIP)
//! ```
//!
//! Every socket here (netlink and `AF_PACKET`) is created in the calling thread and
//! so lives in that thread's network namespace. Raw sockets need CAP_NET_RAW and
//! address changes CAP_NET_ADMIN.

mod addr;
mod announce;
mod arp;
mod ndp;
mod probe;
mod raw;
#[cfg(test)]
pub(crate) mod testnet;
#[cfg(test)]
mod tests;

use std::fmt;

pub use self::{
    addr::{Addresses, IfAddress},
    announce::{AnnounceConfig, Announcer},
    probe::{ProbeConfig, ProbeOutcome, Prober, probe},
};

/// An Ethernet hardware address.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct MacAddr(pub [u8; 6]);

/// Why a VIP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The interface does not exist in this namespace.
    #[error("interface {name}: {source}")]
    Interface {
        name: String,
        source: std::io::Error,
    },
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Netlink(std::io::Error),
    /// The raw socket could not be opened or bound (CAP_NET_RAW is needed).
    #[error("cannot open a raw socket on {name}: {source}")]
    RawSocket {
        name: String,
        source: std::io::Error,
    },
    /// A raw receive failed.
    #[error("cannot receive on {name}: {source}")]
    Receive {
        name: String,
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("netlink request on {name} failed: {source}")]
    Request {
        name: String,
        source: rtnetlink::Error,
    },
    /// A raw send failed (interface down, …).
    #[error("cannot send on {name}: {source}")]
    Send {
        name: String,
        source: std::io::Error,
    },
}

// === impl MacAddr ===

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Self = Self([0; 6]);
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}
