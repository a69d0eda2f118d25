//! The two small programs the benchmark runs inside lab namespaces, as
//! subcommands of its own binary:
//!
//! - `respond`: the "application", a TCP server on VIP:7000 that answers every
//!   connection with its node's name and closes;
//! - `probe`: the client, which opens a connection to VIP:7000 every period and
//!   watches its own neighbour entry for the VIP through rtnetlink.
//!
//! The prober prints one line per event, stamped with CLOCK_MONOTONIC, which the
//! namespaces share with the benchmark:
//!
//! ```text
//! P <start_ns> <end_ns> <node1|node2|TIMEOUT|REFUSED|ERR:errno|EMPTY>
//! N <t_ns> <new|del> <mac|-> <nud state, hex>
//! ```

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{Context, bail};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrIn,
    bind, listen, recv, setsockopt, socket, sockopt,
};

use crate::events::now_ns;

/// The application's port on the VIP.
pub(crate) const APP_PORT: u16 = 7000;

/// `respond ADDR:PORT NAME`: answers `NAME\n` to every connection and closes it.
///
/// The socket is bound with IP_FREEBIND, so the responder starts before its node
/// holds the VIP; only the node that holds it receives connections for it.
pub(crate) fn respond_main(args: &[String]) -> anyhow::Result<()> {
    let [addr, name] = args else {
        bail!("usage: failover-bench respond ADDR:PORT NAME");
    };
    let addr: SocketAddrV4 = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    setsockopt(&fd, sockopt::IpFreebind, &true).context("IP_FREEBIND")?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr)).with_context(|| format!("bind {addr}"))?;
    listen(&fd, Backlog::new(512).context("backlog")?).context("listen")?;
    let listener = TcpListener::from(fd);
    let msg = format!("{name}\n");
    loop {
        // A client that gave up (its timeout) makes accept or write fail; that
        // is its business, the responder goes on.
        if let Ok((mut c, _)) = listener.accept() {
            let _ = c.write_all(msg.as_bytes());
        }
    }
}

/// The prober's settings.
struct ProbeOptions {
    target: SocketAddrV4,
    period: Duration,
    timeout: Duration,
}

/// `probe ADDR:PORT PERIOD_MS TIMEOUT_MS`: runs until killed.
pub(crate) fn probe_main(args: &[String]) -> anyhow::Result<()> {
    let [target, period, timeout] = args else {
        bail!("usage: failover-bench probe ADDR:PORT PERIOD_MS TIMEOUT_MS");
    };
    let o = ProbeOptions {
        target: target
            .parse()
            .with_context(|| format!("bad address {target}"))?,
        period: Duration::from_millis(period.parse().context("PERIOD_MS")?),
        timeout: Duration::from_millis(timeout.parse().context("TIMEOUT_MS")?),
    };
    if o.period.is_zero() || o.timeout.is_zero() {
        bail!("the period and the timeout must be positive");
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let neigh_fd = neigh_socket()?;
    {
        let out = Arc::clone(&out);
        let vip = *o.target.ip();
        thread::Builder::new()
            .name("neigh".into())
            .spawn(move || watch_neigh(&neigh_fd, vip, &out))
            .context("cannot start the neighbour thread")?;
    }
    // Attempts overlap: a new one starts every period whatever the earlier ones
    // are doing, so an attempt stuck on a dead node's timeout does not hide the
    // moment the survivor starts answering (the resolution stays one period).
    let mut next = now_ns();
    let period_ns = u64::try_from(o.period.as_nanos()).unwrap_or(u64::MAX);
    loop {
        let now = now_ns();
        if next > now {
            thread::sleep(Duration::from_nanos(next - now));
        }
        // After a stall (this process not scheduled for a while on a busy
        // machine) one attempt starts at once and the schedule restarts from
        // there, instead of a burst that makes up for the missed slots: the burst
        // would add load at the worst moment and say nothing new. The benchmark
        // reports the largest gap between attempts of each run.
        next = (next + period_ns).max(now_ns());
        let out = Arc::clone(&out);
        let (target, timeout) = (o.target, o.timeout);
        // Out of threads for a moment: the slot is skipped rather than the
        // prober stopped, and the gap shows in the probe times.
        let _ = thread::Builder::new()
            .name("attempt".into())
            .spawn(move || {
                let start = now_ns();
                let result = attempt(target, timeout);
                let end = now_ns();
                let mut w = out
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // The benchmark closing our stdout means it is done with us.
                if writeln!(w, "P {start} {end} {result}")
                    .and_then(|()| w.flush())
                    .is_err()
                {
                    std::process::exit(0);
                }
            });
    }
}

/// One connection: connect, read the node's name until the server closes, all
/// within `timeout`.
fn attempt(target: SocketAddrV4, timeout: Duration) -> String {
    let begun = std::time::Instant::now();
    let mut s = match TcpStream::connect_timeout(&SocketAddr::V4(target), timeout) {
        Ok(s) => s,
        Err(e) => return describe(&e),
    };
    let mut buf = Vec::with_capacity(16);
    let mut chunk = [0u8; 64];
    loop {
        let Some(left) = timeout
            .checked_sub(begun.elapsed())
            .filter(|d| !d.is_zero())
        else {
            return "TIMEOUT".into();
        };
        if s.set_read_timeout(Some(left)).is_err() {
            return "ERR:setsockopt".into();
        }
        match s.read(&mut chunk) {
            // Reading until the server closes makes the server the side that
            // closes first, so TIME_WAIT sockets pile up there, not in the
            // client's ephemeral ports.
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 {
                    break;
                }
            }
            Err(e) => return describe(&e),
        }
    }
    let text = String::from_utf8_lossy(&buf).trim().to_owned();
    if text.is_empty() || text.contains(char::is_whitespace) {
        "EMPTY".into()
    } else {
        text
    }
}

fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::TimedOut | K::WouldBlock => "TIMEOUT".into(),
        K::ConnectionRefused => "REFUSED".into(),
        _ => match e.raw_os_error() {
            Some(n) => format!("ERR:{n}"),
            None => "ERR:other".into(),
        },
    }
}

/// An rtnetlink socket subscribed to neighbour-table changes of this namespace.
fn neigh_socket() -> anyhow::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .context("netlink socket")?;
    let groups = u32::try_from(libc::RTMGRP_NEIGH).context("RTMGRP_NEIGH")?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).context("netlink bind")?;
    // Room for bursts (GARPs, probes) so the kernel never drops a notification.
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
    Ok(fd)
}

/// Prints every change of the neighbour entry for `vip`, stamped on arrival.
fn watch_neigh(fd: &std::os::fd::OwnedFd, vip: Ipv4Addr, out: &Mutex<std::io::Stdout>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("failover-bench probe: netlink: {e}");
                return;
            }
        };
        let t = now_ns();
        for ev in parse_neigh(buf.get(..n).unwrap_or_default()) {
            if ev.dst != Some(vip) {
                continue;
            }
            let mut w = out
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = writeln!(
                w,
                "N {t} {} {} {:#x}",
                if ev.deleted { "del" } else { "new" },
                ev.mac.as_deref().unwrap_or("-"),
                ev.state
            );
            let _ = w.flush();
        }
    }
}

/// One neighbour message.
#[derive(Debug, PartialEq, Eq)]
struct NeighMsg {
    deleted: bool,
    dst: Option<Ipv4Addr>,
    mac: Option<String>,
    state: u16,
}

const NLMSG_HDRLEN: usize = 16;
const NDMSG_LEN: usize = 12;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The neighbour messages in one datagram from the kernel. Lengths come from the
/// datagram, so every access is bounds-checked and a malformed message ends the
/// parse instead of panicking.
fn parse_neigh(b: &[u8]) -> Vec<NeighMsg> {
    let mut v = Vec::new();
    let mut off = 0;
    while let (Some(len), Some(kind)) = (u32_at(b, off), u16_at(b, off + 4)) {
        let len = usize::try_from(len).unwrap_or(0);
        if len < NLMSG_HDRLEN || off + len > b.len() {
            break;
        }
        if kind == RTM_NEWNEIGH || kind == RTM_DELNEIGH {
            let msg = b.get(off + NLMSG_HDRLEN..off + len).unwrap_or_default();
            if let Some(m) = parse_ndmsg(msg, kind == RTM_DELNEIGH) {
                v.push(m);
            }
        }
        off += align4(len);
    }
    v
}

fn parse_ndmsg(m: &[u8], deleted: bool) -> Option<NeighMsg> {
    let family = *m.first()?;
    let state = u16_at(m, 8)?;
    let mut out = NeighMsg {
        deleted,
        dst: None,
        mac: None,
        state,
    };
    let mut a = NDMSG_LEN;
    while let (Some(rlen), Some(rtype)) = (u16_at(m, a), u16_at(m, a + 2)) {
        let rlen = usize::from(rlen);
        if rlen < 4 {
            break;
        }
        let data = m.get(a + 4..a + rlen)?;
        match rtype {
            NDA_DST if i32::from(family) == libc::AF_INET => {
                let o: [u8; 4] = data.try_into().ok()?;
                out.dst = Some(Ipv4Addr::from(o));
            }
            NDA_LLADDR => {
                let hex: Vec<String> = data.iter().map(|x| format!("{x:02x}")).collect();
                out.mac = Some(hex.join(":"));
            }
            _ => {}
        }
        a += align4(rlen);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTM_NEWNEIGH for 10.213.7.50 at 02:00:00:00:00:02, STALE, as the kernel
    /// lays it out.
    fn sample() -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&NDA_DST.to_ne_bytes());
        attrs.extend_from_slice(&[10, 213, 7, 50]);
        attrs.extend_from_slice(&10u16.to_ne_bytes());
        attrs.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        attrs.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0, 0]);
        let mut nd = vec![u8::try_from(libc::AF_INET).unwrap_or(2), 0, 0, 0];
        nd.extend_from_slice(&2i32.to_ne_bytes());
        nd.extend_from_slice(&4u16.to_ne_bytes());
        nd.extend_from_slice(&[0, 1]);
        let len = NLMSG_HDRLEN + nd.len() + attrs.len();
        let mut b = Vec::new();
        b.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        b.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend(nd);
        b.extend(attrs);
        b
    }

    #[test]
    fn parses_a_neighbour_message() {
        let got = parse_neigh(&sample());
        assert_eq!(
            got,
            vec![NeighMsg {
                deleted: false,
                dst: Some(Ipv4Addr::new(10, 213, 7, 50)),
                mac: Some("02:00:00:00:00:02".into()),
                state: 4,
            }]
        );
    }

    #[test]
    fn truncated_messages_are_dropped_not_panicked_on() {
        let b = sample();
        for cut in 0..b.len() {
            let _ = parse_neigh(&b[..cut]);
        }
    }
}
