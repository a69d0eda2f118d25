//! One heartbeat network: a task that owns one UDP socket, sends our heartbeat every
//! interval (and at once when the payload changes) and checks every datagram that
//! arrives, delivering the fresh ones.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::{self, Instant, MissedTickBehavior},
};
use tracing::{debug, info, trace, warn};

use super::{
    Received,
    packet::{self, Body, Echo, Key, MAX_DATAGRAM, PacketError, Payload},
    replay::{ReplayGuard, Verdict},
    sent::{SentLog, round_trip},
};

/// What one network's task counted since start.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, Serialize)]
pub struct CounterSnapshot {
    /// Heartbeats handed to the kernel.
    pub sent: u64,
    /// Sends that failed (no route, interface down, …).
    pub send_errors: u64,
    /// Heartbeats accepted and delivered.
    pub received: u64,
    /// Accepted heartbeats lost because the receiver did not keep up.
    pub dropped: u64,
    /// Datagrams whose tag did not verify with our key.
    pub rejected_mac: u64,
    /// Datagrams that are not heartbeats, or authenticated ones naming another node
    /// or network.
    pub rejected_malformed: u64,
    /// Authenticated heartbeats already seen, or from a replaced epoch.
    pub rejected_replay: u64,
    /// Datagrams from an address other than the configured peer.
    pub rejected_source: u64,
    /// New, authenticated heartbeats that echo none of our recent ones (the peer
    /// does not hear us, or has just started): echoed back but not delivered.
    pub unverified: u64,
}

/// The live counters behind a [`CounterSnapshot`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    send_errors: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    rejected_mac: AtomicU64,
    rejected_malformed: AtomicU64,
    rejected_replay: AtomicU64,
    rejected_source: AtomicU64,
    unverified: AtomicU64,
}

/// The identity shared by every network's task.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) key: Key,
    pub(crate) node: String,
    pub(crate) peer_node: String,
    pub(crate) epoch: u64,
}

/// One network's task state; [`Link::run`] drives it.
pub(crate) struct Link {
    pub(crate) name: String,
    pub(crate) peer: SocketAddr,
    pub(crate) socket: UdpSocket,
    pub(crate) identity: Arc<Identity>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) out: mpsc::Sender<Received>,
    pub(crate) payload: watch::Receiver<Payload>,
    pub(crate) interval: Duration,
    pub(crate) seq: u64,
    pub(crate) sent: SentLog,
    pub(crate) guard: ReplayGuard,
    /// The peer's last packet we echo: (epoch, seq, when it arrived).
    pub(crate) last_rx: Option<(u64, u64, Instant)>,
    /// When we last answered an unverified heartbeat at once (see
    /// [`Link::handle_datagram`]).
    pub(crate) answered_at: Option<Instant>,
}

// === impl Link ===

impl Link {
    /// Sends and receives until the task is aborted.
    pub(crate) async fn run(mut self) {
        let mut tick = time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // One byte more than we accept, so that an oversized datagram is seen as such.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut watching = true;
        loop {
            tokio::select! {
                _ = tick.tick() => self.send().await,
                changed = self.payload.changed(), if watching => match changed {
                    // A state change goes out at once; the next periodic one a full
                    // interval later.
                    Ok(()) => {
                        self.send().await;
                        tick.reset();
                    }
                    // The engine is gone; keep sending its last word.
                    Err(_) => watching = false,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        if self.handle_datagram(&buf[..len], from, Instant::now()) {
                            self.send().await;
                        }
                    }
                    Err(e) => trace!(error = %e, "Heartbeat receive failed"),
                },
            }
        }
    }

    async fn send(&mut self) {
        let now = Instant::now();
        self.seq += 1;
        let echo = self.last_rx.map(|(epoch, seq, at)| Echo {
            epoch,
            seq,
            held_us: u32::try_from(now.saturating_duration_since(at).as_micros())
                .unwrap_or(u32::MAX),
        });
        let body = Body {
            node: self.identity.node.clone(),
            network: self.name.clone(),
            epoch: self.identity.epoch,
            seq: self.seq,
            echo,
            payload: self.payload.borrow_and_update().clone(),
        };
        let bytes = match packet::seal(&self.identity.key, &body) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, "Heartbeat not sent");
                bump(&self.counters.send_errors);
                return;
            }
        };
        self.sent.record(self.seq, now);
        match self.socket.send_to(&bytes, self.peer).await {
            Ok(_) => bump(&self.counters.sent),
            Err(e) => {
                trace!(error = %e, "Heartbeat send failed");
                bump(&self.counters.send_errors);
            }
        }
    }

    /// Checks one datagram and delivers it if it is a fresh heartbeat of the peer.
    ///
    /// Returns whether to send our heartbeat at once: a peer that has just started
    /// (or does not hear us) is heard by our engine only once one of its packets
    /// echoes one of ours, so echoing its first packet at once, rather than at our
    /// next tick, lets both sides hear each other up to an interval sooner. At most
    /// once per interval, so that two sides that cannot verify each other do not
    /// answer each other in a loop.
    pub(crate) fn handle_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) -> bool {
        if from != self.peer {
            bump(&self.counters.rejected_source);
            return false;
        }
        let body = match packet::open(&self.identity.key, bytes) {
            Ok(body) => body,
            Err(PacketError::BadMac) => {
                debug!("Heartbeat with a tag that does not verify rejected");
                bump(&self.counters.rejected_mac);
                return false;
            }
            Err(e) => {
                debug!(error = %e, "Malformed heartbeat rejected");
                bump(&self.counters.rejected_malformed);
                return false;
            }
        };
        if body.node != self.identity.peer_node || body.network != self.name {
            debug!(node = %body.node, network = %body.network, "Heartbeat for another node or network rejected");
            bump(&self.counters.rejected_malformed);
            return false;
        }
        let echoed = body
            .echo
            .as_ref()
            .filter(|e| e.epoch == self.identity.epoch)
            .and_then(|e| Some((self.sent.sent_at(e.seq, now)?, e.held_us)));
        match self
            .guard
            .handle_packet(body.epoch, body.seq, echoed.is_some())
        {
            Verdict::OldEpoch | Verdict::Replay => {
                debug!(
                    epoch = body.epoch,
                    seq = body.seq,
                    "Replayed heartbeat rejected"
                );
                bump(&self.counters.rejected_replay);
                false
            }
            Verdict::Unverified => {
                trace!(
                    epoch = body.epoch,
                    seq = body.seq,
                    "Heartbeat not yet verified fresh"
                );
                self.last_rx = Some((body.epoch, body.seq, now));
                bump(&self.counters.unverified);
                let answer = self
                    .answered_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
                if answer {
                    self.answered_at = Some(now);
                }
                answer
            }
            Verdict::Accept { new_epoch } => {
                if new_epoch {
                    info!(peer = %body.node, epoch = body.epoch, "Peer heartbeats from a new epoch accepted");
                }
                self.last_rx = Some((body.epoch, body.seq, now));
                bump(&self.counters.received);
                let rtt = echoed.map(|(sent_at, held_us)| {
                    round_trip(sent_at, now, Duration::from_micros(u64::from(held_us)))
                });
                let received = Received {
                    network: self.name.clone(),
                    payload: body.payload,
                    rtt,
                    at: now,
                    peer_epoch: body.epoch,
                    seq: body.seq,
                    new_epoch,
                };
                // Never wait on the consumer: a blocked heartbeat task would stop
                // sending, and the peer would take that for our death.
                if self.out.try_send(received).is_err() {
                    bump(&self.counters.dropped);
                }
                false
            }
        }
    }
}

// === impl Counters ===

impl Counters {
    /// The current values.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            sent: get(&self.sent),
            send_errors: get(&self.send_errors),
            received: get(&self.received),
            dropped: get(&self.dropped),
            rejected_mac: get(&self.rejected_mac),
            rejected_malformed: get(&self.rejected_malformed),
            rejected_replay: get(&self.rejected_replay),
            rejected_source: get(&self.rejected_source),
            unverified: get(&self.unverified),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
