//! Neighbour discovery frames for an IPv6 virtual IP: the unsolicited neighbour
//! advertisement (RFC 4861 §7.2.6) that is IPv6's gratuitous ARP, sent to all nodes
//! with the override flag so that neighbours replace the link-layer address they
//! hold; and the duplicate address detection probe (RFC 4862 §5.4), a neighbour
//! solicitation from `::` that a holder answers with an advertisement to all nodes.
//!
//! ```text
//! Ethernet  dst 33:33:00:00:00:01  src our MAC  type 0x86dd
//! IPv6      src VIP  dst ff02::1  next header 58  hop limit 255
//! ICMPv6    type 136 code 0  flags O (not S, not R)  target VIP
//!           option 2 (target link-layer address) = our MAC
//! ```

use std::net::Ipv6Addr;

use super::{MacAddr, ProbeOutcome};

/// The neighbour-discovery part of a frame seen while probing.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Nd {
    /// The Ethernet source.
    pub(crate) mac: MacAddr,
    pub(crate) src: Ipv6Addr,
    pub(crate) icmp_type: u8,
    pub(crate) target: Ipv6Addr,
}

/// The frame of an unsolicited neighbour advertisement of `ip` at `mac`.
pub(crate) fn unsolicited_advertisement(mac: MacAddr, ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(ICMP_LEN);
    icmp.extend_from_slice(&[TYPE_NEIGHBOUR_ADVERTISEMENT, 0, 0, 0]);
    icmp.extend_from_slice(&FLAG_OVERRIDE.to_be_bytes());
    icmp.extend_from_slice(&ip.octets());
    // Target link-layer address option: type 2, length 1 (in units of 8 bytes).
    icmp.extend_from_slice(&[OPTION_TARGET_LINK_LAYER, 1]);
    icmp.extend_from_slice(&mac.0);
    let sum = checksum(ip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    frame(ALL_NODES_MAC, mac, ip, ALL_NODES, &icmp)
}

/// The frame of a duplicate address detection probe for `ip` from `mac`: a
/// neighbour solicitation from `::` to `ip`'s solicited-node group, which by
/// RFC 4862 carries no source link-layer option.
pub(crate) fn dad_solicitation(mac: MacAddr, ip: Ipv6Addr) -> Vec<u8> {
    let o = ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let mut icmp = Vec::with_capacity(24);
    icmp.extend_from_slice(&[TYPE_NEIGHBOUR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(&o);
    let sum = checksum(Ipv6Addr::UNSPECIFIED, group, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    frame(
        MacAddr([0x33, 0x33, 0xff, o[13], o[14], o[15]]),
        mac,
        Ipv6Addr::UNSPECIFIED,
        group,
        &icmp,
    )
}

// === impl Nd ===

impl Nd {
    /// Parses an Ethernet frame; `None` unless it is a neighbour solicitation or
    /// advertisement with hop limit 255 (anything else may have crossed a router).
    pub(crate) fn parse(f: &[u8]) -> Option<Self> {
        let icmp = f.get(14 + 40..14 + 40 + 24)?;
        if f[12..14] != ETHERTYPE_IPV6.to_be_bytes()
            || f[14] >> 4 != 6
            || f[20] != NEXT_HEADER_ICMPV6
            || f[21] != 255
        {
            return None;
        }
        let icmp_type = icmp[0];
        if icmp_type != TYPE_NEIGHBOUR_SOLICITATION && icmp_type != TYPE_NEIGHBOUR_ADVERTISEMENT {
            return None;
        }
        let addr = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&f[6..12]);
        Some(Self {
            mac: MacAddr(mac),
            src: addr(&f[22..38])?,
            icmp_type,
            target: addr(&icmp[8..24])?,
        })
    }

    /// Whether this frame, seen while we probe for `ip` from `me`, is a conflict: an
    /// advertisement of `ip` (someone holds it) or another node's DAD probe for it.
    pub(crate) fn conflict(&self, ip: Ipv6Addr, me: MacAddr) -> Option<ProbeOutcome> {
        if self.mac == me || self.target != ip {
            return None;
        }
        match self.icmp_type {
            TYPE_NEIGHBOUR_ADVERTISEMENT => Some(ProbeOutcome::Held(self.mac)),
            TYPE_NEIGHBOUR_SOLICITATION if self.src.is_unspecified() => {
                Some(ProbeOutcome::Contested(self.mac))
            }
            _ => None,
        }
    }
}

/// An Ethernet + IPv6 frame around an ICMPv6 message.
fn frame(dst_mac: MacAddr, src_mac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    // Version 6, traffic class 0, flow label 0.
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(NEXT_HEADER_ICMPV6);
    // Receivers drop neighbour discovery that may have crossed a router.
    f.push(255);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(icmp);
    f
}

/// The ICMPv6 checksum: the ones' complement sum over the pseudo-header (source,
/// destination, upper-layer length, next header) and the message.
fn checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
const NEXT_HEADER_ICMPV6: u8 = 58;
const TYPE_NEIGHBOUR_SOLICITATION: u8 = 135;
const TYPE_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const FLAG_OVERRIDE: u32 = 0x2000_0000;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
/// Header (4) + flags (4) + target (16) + one 8-byte option.
const ICMP_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_layout_and_checksum() {
        let mac = MacAddr([2, 0, 0, 0, 0, 7]);
        let ip: Ipv6Addr = "fd00::50".parse().expect("address");
        let f = unsolicited_advertisement(mac, ip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255);
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override set, solicited and router clear");
        assert_eq!(&icmp[8..24], &ip.octets());
        assert_eq!(&icmp[26..32], &mac.0);
        // Summing a message with its checksum in place gives zero after complement.
        assert_eq!(checksum(ip, ALL_NODES, icmp), 0);
        let nd = Nd::parse(&f).expect("parses");
        assert_eq!(
            nd.conflict(ip, MacAddr([2, 0, 0, 0, 0, 8])),
            Some(ProbeOutcome::Held(mac))
        );
        assert_eq!(
            nd.conflict(ip, mac),
            None,
            "our own advertisement is no conflict"
        );
    }

    #[test]
    fn dad_probe_goes_to_the_solicited_node_group() {
        let mac = MacAddr([2, 0, 0, 0, 0, 7]);
        let ip: Ipv6Addr = "fd00::12:3456".parse().expect("address");
        let f = dad_solicitation(mac, ip);
        assert_eq!(f.len(), 14 + 40 + 24);
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().expect("group");
        assert_eq!(&f[38..54], &group.octets());
        assert_eq!(checksum(Ipv6Addr::UNSPECIFIED, group, &f[54..]), 0);
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        let nd = Nd::parse(&f).expect("parses");
        assert_eq!(nd.conflict(ip, other), Some(ProbeOutcome::Contested(mac)));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let _ = Nd::parse(&bytes);
        }
    }
}
