//! ARP frames for the virtual IP (RFC 5227): announcement, probe, and the test
//! whether a frame seen while probing is a conflict.
//!
//! ```text
//! announcement: request  sender = our MAC, VIP      target = 00:..:00, VIP   (broadcast)
//! probe:        request  sender = our MAC, 0.0.0.0  target = 00:..:00, VIP   (broadcast)
//! holder reply: reply    sender = its MAC, VIP      target = our MAC, 0.0.0.0
//! ```

use std::net::Ipv4Addr;

use super::{MacAddr, ProbeOutcome};

/// One parsed ARP packet over Ethernet/IPv4.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Arp {
    pub(crate) op: u16,
    pub(crate) sender_mac: MacAddr,
    pub(crate) sender_ip: Ipv4Addr,
    pub(crate) target_mac: MacAddr,
    pub(crate) target_ip: Ipv4Addr,
}

// === impl Arp ===

impl Arp {
    /// An RFC 5227 announcement of `ip` from `mac`.
    pub(crate) fn announcement(mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            op: OP_REQUEST,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        }
    }

    /// An RFC 5227 probe for `ip` from `mac`.
    pub(crate) fn probe(mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            op: OP_REQUEST,
            sender_mac: mac,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        }
    }

    /// The Ethernet frame carrying this packet to `dest`, padded to the minimum
    /// Ethernet length.
    pub(crate) fn frame(&self, dest: MacAddr) -> Vec<u8> {
        let mut f = Vec::with_capacity(MIN_FRAME);
        f.extend_from_slice(&dest.0);
        f.extend_from_slice(&self.sender_mac.0);
        f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        f.extend_from_slice(&PTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sender_mac.0);
        f.extend_from_slice(&self.sender_ip.octets());
        f.extend_from_slice(&self.target_mac.0);
        f.extend_from_slice(&self.target_ip.octets());
        f.resize(MIN_FRAME, 0);
        f
    }

    /// Parses an Ethernet frame; `None` unless it is Ethernet/IPv4 ARP.
    pub(crate) fn parse(frame: &[u8]) -> Option<Self> {
        let arp = frame.get(ETH_HEADER..ETH_HEADER + ARP_LEN)?;
        let be16 = |i: usize| u16::from_be_bytes([arp[i], arp[i + 1]]);
        if frame[12..14] != ETHERTYPE_ARP.to_be_bytes()
            || be16(0) != HTYPE_ETHERNET
            || be16(2) != PTYPE_IPV4
            || arp[4] != 6
            || arp[5] != 4
        {
            return None;
        }
        let mac = |i: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&arp[i..i + 6]);
            MacAddr(m)
        };
        let ip = |i: usize| Ipv4Addr::new(arp[i], arp[i + 1], arp[i + 2], arp[i + 3]);
        Some(Self {
            op: be16(6),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// Whether this packet, seen while we probe for `ip` from `me`, is a conflict
    /// (RFC 5227 §2.1.1).
    pub(crate) fn conflict(&self, ip: Ipv4Addr, me: MacAddr) -> Option<ProbeOutcome> {
        if self.sender_mac == me {
            return None;
        }
        if self.sender_ip == ip {
            return Some(ProbeOutcome::Held(self.sender_mac));
        }
        if self.op == OP_REQUEST && self.sender_ip.is_unspecified() && self.target_ip == ip {
            return Some(ProbeOutcome::Contested(self.sender_mac));
        }
        None
    }
}

pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const OP_REQUEST: u16 = 1;
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const ETH_HEADER: usize = 14;
const ARP_LEN: usize = 28;
/// The shortest Ethernet frame without its FCS; some drivers do not pad.
const MIN_FRAME: usize = 60;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OP_REPLY: u16 = 2;
    const ME: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

    #[test]
    fn announcement_round_trips_and_has_the_rfc_5227_shape() {
        let a = Arp::announcement(ME, VIP);
        let f = a.frame(MacAddr::BROADCAST);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(Arp::parse(&f), Some(a));
        assert_eq!(a.sender_ip, a.target_ip);
        assert_eq!(a.target_mac, MacAddr::ZERO);
    }

    #[test]
    fn conflicts_follow_rfc_5227() {
        let reply = Arp {
            op: OP_REPLY,
            sender_mac: OTHER,
            sender_ip: VIP,
            target_mac: ME,
            target_ip: Ipv4Addr::UNSPECIFIED,
        };
        assert_eq!(reply.conflict(VIP, ME), Some(ProbeOutcome::Held(OTHER)));
        let probe = Arp {
            op: OP_REQUEST,
            sender_mac: OTHER,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: VIP,
        };
        assert_eq!(
            probe.conflict(VIP, ME),
            Some(ProbeOutcome::Contested(OTHER))
        );
        let own = Arp {
            sender_mac: ME,
            ..reply
        };
        assert_eq!(own.conflict(VIP, ME), None);
        let unrelated = Arp {
            sender_ip: Ipv4Addr::new(10, 0, 0, 9),
            target_ip: Ipv4Addr::new(10, 0, 0, 1),
            ..reply
        };
        assert_eq!(unrelated.conflict(VIP, ME), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Arp::parse(&bytes);
        }
    }
}
