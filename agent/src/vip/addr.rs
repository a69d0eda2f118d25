//! Adding, removing and listing an interface's addresses through rtnetlink, for the
//! virtual IP and for finding one left over from an earlier run.
//!
//! The netlink socket is opened by [`Addresses::open`] in the calling thread and so
//! belongs to that thread's network namespace for its whole life.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{
    Handle,
    packet_route::address::{AddressAttribute, AddressFlags, AddressMessage},
};
use tokio::task::JoinHandle;

use super::VipError;

/// One address on an interface.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct IfAddress {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// A route-netlink connection.
#[derive(Debug)]
pub struct Addresses {
    handle: Handle,
    connection: JoinHandle<()>,
}

// === impl Addresses ===

impl Addresses {
    /// Opens a netlink socket in the calling thread's network namespace and spawns
    /// its connection task on the current tokio runtime.
    pub fn open() -> Result<Self, VipError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(VipError::Netlink)?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The index of the interface called `ifname`.
    pub async fn link_index(&self, ifname: &str) -> Result<u32, VipError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(no_such_interface(ifname)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(no_such_interface(ifname)),
            Err(e) => Err(request(ifname, e)),
        }
    }

    /// Adds `addr/prefix_len` to `ifname`. Returns `false` if it was already there.
    /// IPv6 addresses skip duplicate address detection (`nodad`), so the address
    /// works at once; the ARP/ND probe before takeover is the duplicate check.
    pub async fn add(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<bool, VipError> {
        let index = self.link_index(ifname).await?;
        let mut request = self.handle.address().add(index, addr, prefix_len);
        if addr.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(self::request(ifname, e)),
        }
    }

    /// Removes `addr` (whatever its prefix length) from `ifname`. Returns `false` if
    /// it was not there.
    pub async fn remove(&self, ifname: &str, addr: IpAddr) -> Result<bool, VipError> {
        let index = self.link_index(ifname).await?;
        let mut removed = false;
        for message in self.messages(ifname, index).await? {
            if address_of(&message).map(|a| a.addr) != Some(addr) {
                continue;
            }
            match self.handle.address().del(message).execute().await {
                Ok(()) => removed = true,
                // Removed by someone else in between: the outcome we wanted.
                Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(request(ifname, e)),
            }
        }
        Ok(removed)
    }

    /// Every address on `ifname`.
    pub async fn list(&self, ifname: &str) -> Result<Vec<IfAddress>, VipError> {
        let index = self.link_index(ifname).await?;
        Ok(self
            .messages(ifname, index)
            .await?
            .iter()
            .filter_map(address_of)
            .collect())
    }

    /// Whether `addr` is on `ifname`.
    pub async fn contains(&self, ifname: &str, addr: IpAddr) -> Result<bool, VipError> {
        Ok(self.list(ifname).await?.iter().any(|a| a.addr == addr))
    }

    async fn messages(&self, ifname: &str, index: u32) -> Result<Vec<AddressMessage>, VipError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| request(ifname, e))
    }
}

impl Drop for Addresses {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The local address of an address message: `IFA_LOCAL` for IPv4 (`IFA_ADDRESS`
/// is the peer's on point-to-point links), `IFA_ADDRESS` for IPv6.
fn address_of(message: &AddressMessage) -> Option<IfAddress> {
    let find = |local: bool| {
        message.attributes.iter().find_map(|a| match (a, local) {
            (AddressAttribute::Local(ip), true) | (AddressAttribute::Address(ip), false) => {
                Some(*ip)
            }
            _ => None,
        })
    };
    let addr = find(true).or_else(|| find(false))?;
    Some(IfAddress {
        addr,
        prefix_len: message.header.prefix_len,
    })
}

/// The errno of a netlink error reply, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn no_such_interface(ifname: &str) -> VipError {
    VipError::Interface {
        name: ifname.to_owned(),
        source: std::io::Error::from_raw_os_error(libc::ENODEV),
    }
}

fn request(ifname: &str, source: rtnetlink::Error) -> VipError {
    VipError::Request {
        name: ifname.to_owned(),
        source,
    }
}
