//! Telling the LAN that the virtual IP moved to us: gratuitous ARP (RFC 5227
//! announcements) for IPv4, unsolicited neighbour advertisements for IPv6, in a
//! burst on takeover and optionally refreshed periodically.
//!
//! Neighbours with an entry for the address replace its MAC; those without one
//! create none (Linux's default `arp_accept=0`) and will resolve it afresh anyway.

use std::{net::IpAddr, time::Duration};

use tokio::time::{self, MissedTickBehavior};
use tracing::{debug, warn};

use super::{MacAddr, VipError, arp::Arp, ndp, raw::PacketSocket};

/// How to announce: as Pacemaker's IPaddr2 by default (5 at 200 ms, no refresh).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct AnnounceConfig {
    /// Announcements in the takeover burst.
    pub count: u32,
    /// Time between two announcements of the burst.
    pub interval: Duration,
    /// After the burst, one more announcement every this long (none if `None`).
    pub refresh: Option<Duration>,
}

/// A socket ready to announce one address on one interface.
#[derive(Debug)]
pub struct Announcer {
    socket: PacketSocket,
    frame: Vec<u8>,
    ifname: String,
    ip: IpAddr,
}

// === impl AnnounceConfig ===

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            count: 5,
            interval: Duration::from_millis(200),
            refresh: None,
        }
    }
}

// === impl Announcer ===

impl Announcer {
    /// Opens a raw socket on `ifname` in the calling thread's network namespace and
    /// builds the announcement of `ip` from the interface's MAC.
    pub fn open(ifname: &str, ip: IpAddr) -> Result<Self, VipError> {
        let socket = PacketSocket::open(ifname, None)?;
        let frame = match ip {
            IpAddr::V4(v4) => Arp::announcement(socket.mac(), v4).frame(MacAddr::BROADCAST),
            IpAddr::V6(v6) => ndp::unsolicited_advertisement(socket.mac(), v6),
        };
        Ok(Self {
            socket,
            frame,
            ifname: ifname.to_owned(),
            ip,
        })
    }

    /// The MAC the announcements carry.
    pub fn mac(&self) -> MacAddr {
        self.socket.mac()
    }

    /// Sends one announcement.
    pub async fn announce_once(&self) -> Result<(), VipError> {
        self.socket
            .send(&self.frame)
            .await
            .map_err(|source| VipError::Send {
                name: self.ifname.clone(),
                source,
            })
    }

    /// Sends `count` announcements `interval` apart (the first at once); stops at
    /// the first error.
    pub async fn burst(&self, count: u32, interval: Duration) -> Result<(), VipError> {
        for i in 0..count {
            if i > 0 {
                time::sleep(interval).await;
            }
            self.announce_once().await?;
        }
        debug!(ip = %self.ip, count, "VIP announced");
        Ok(())
    }

    /// The burst, then (with `refresh`) one announcement per period until the
    /// future is dropped. Refresh failures are logged and retried next period,
    /// since a link that is briefly down must not end the refresh for good.
    pub async fn run(&self, config: AnnounceConfig) -> Result<(), VipError> {
        self.burst(config.count, config.interval).await?;
        let Some(period) = config.refresh.filter(|p| !p.is_zero()) else {
            return Ok(());
        };
        let mut tick = time::interval_at(time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.announce_once().await {
                warn!(ip = %self.ip, error = %e, "VIP refresh announcement failed");
            }
        }
    }
}
