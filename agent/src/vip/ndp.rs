//! The IPv6 counterpart of a gratuitous ARP: an unsolicited neighbour advertisement
//! (RFC 4861 §7.2.6) for the virtual IP, sent to all nodes, with the override flag
//! set so that neighbours replace the link-layer address they hold for it.
//!
//! ```text
//! Ethernet  dst 33:33:00:00:00:01  src our MAC  type 0x86dd
//! IPv6      src VIP  dst ff02::1  next header 58  hop limit 255
//! ICMPv6    type 136 code 0  flags O (not S, not R)  target VIP
//!           option 2 (target link-layer address) = our MAC
//! ```

use std::net::Ipv6Addr;

use super::MacAddr;

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

    let mut f = Vec::with_capacity(14 + 40 + ICMP_LEN);
    f.extend_from_slice(&ALL_NODES_MAC.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    // Version 6, traffic class 0, flow label 0.
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    f.push(NEXT_HEADER_ICMPV6);
    // Receivers drop neighbour discovery that may have crossed a router.
    f.push(255);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
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
    }
}
