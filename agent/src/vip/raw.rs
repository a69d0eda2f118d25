//! A raw link-layer socket (`AF_PACKET`, `SOCK_RAW`) on one interface, for the
//! hand-built ARP and neighbour-advertisement frames. Needs CAP_NET_RAW.
//!
//! The interface is looked up and the socket created in the calling thread, so both
//! belong to that thread's network namespace; the socket stays there whichever
//! thread later polls it (through tokio's `AsyncFd`, non-blocking).

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use super::{MacAddr, VipError};

/// A packet socket bound to one interface.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    mac: MacAddr,
}

// === impl PacketSocket ===

impl PacketSocket {
    /// Opens a socket on `ifname`. With `listen`, frames of that EtherType arriving
    /// on the interface are queued for [`recv`](Self::recv); without, the socket
    /// only sends (and queues nothing).
    pub(crate) fn open(ifname: &str, listen: Option<u16>) -> Result<Self, VipError> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|e| VipError::Interface {
            name: ifname.to_owned(),
            source: io::Error::from(e),
        })?;
        let protocol = listen.unwrap_or(0).to_be();
        let io_err = |source| VipError::RawSocket {
            name: ifname.to_owned(),
            source,
        };
        // SAFETY: socket(2) takes no pointers; on success we take sole ownership of
        // the returned descriptor just below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: protocol,
            sll_ifindex: i32::try_from(ifindex).map_err(|_| {
                io_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "interface index too large",
                ))
            })?,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        let mac = local_mac(&fd).map_err(io_err)?;
        // SAFETY: an OwnedFd holds a valid open descriptor, closes it only when
        // dropped (with the AsyncFd) and always reports the same one.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io_err(io::Error::from(e)))?;
        Ok(Self { fd, mac })
    }

    /// The interface's hardware address.
    pub(crate) fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Sends one complete Ethernet frame.
    pub(crate) async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                // SAFETY: the pointer and length describe `frame`, which outlives
                // the call.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            if let Ok(result) = sent {
                return result;
            }
        }
    }

    /// Drops every frame queued so far, without waiting.
    pub(crate) fn discard_queued(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` is valid for writes of its length and outlives the call.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            // Empty queue (EAGAIN) or any error: nothing more to drop.
            if n < 0 {
                return;
            }
        }
    }

    /// Receives one frame into `buf`: its length and whether we sent it ourselves
    /// (a packet socket also sees the interface's outgoing frames).
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let received = guard.try_io(|fd| {
                // SAFETY: sockaddr_ll is plain old data, for which all zeroes is valid.
                let mut from: libc::sockaddr_ll = unsafe { zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `from` are valid for writes of the lengths given
                // and outlive the call.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast::<libc::sockaddr>(),
                        &raw mut len,
                    )
                };
                let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
                Ok((n, from.sll_pkttype == libc::PACKET_OUTGOING))
            });
            if let Ok(result) = received {
                return result;
            }
        }
    }
}

/// The hardware address the kernel reports for a bound packet socket.
fn local_mac(fd: &OwnedFd) -> io::Result<MacAddr> {
    // SAFETY: sockaddr_ll is plain old data, for which all zeroes is valid.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` is valid for writes of `len` bytes and outlives the call.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&raw mut addr).cast::<libc::sockaddr>(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if addr.sll_halen != 6 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "interface has no Ethernet (6-byte) hardware address",
        ));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&addr.sll_addr[..6]);
    Ok(MacAddr(mac))
}
