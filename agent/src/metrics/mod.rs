//! Prometheus metrics (`metrics.listen` in the configuration; docs/metrics.md).
//!
//! One [`Metrics`] value is shared by the whole agent. What the shared status
//! already holds (the state, the peer, the lag, the resync, heartbeat round-trip
//! times) is copied into gauges when `/metrics` is scraped, so those values can
//! never go stale between the status and the metrics. Counters and the barrier
//! histogram cannot be rebuilt from a snapshot: they are updated where the event
//! happens (the failover actor, the checkers, the gate, the capture thread and the
//! replication tasks).

mod reason;
mod serve;

use std::{
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

pub use self::{
    reason::{FailoverReason, classify_failover},
    serve::{CONTENT_TYPE, router, serve},
};
use crate::{
    capture::engine::Counters,
    status::{State, Status},
};

/// Every metric family the agent exports, as the scraped text names its samples
/// (a counter's samples end in `_total`). The tests check that each one is
/// encoded with help and type, that each is updated somewhere, and that the
/// Grafana dashboard names no other.
pub const NAMES: &[&str] = &[
    "tandem_state",
    "tandem_peer_up",
    "tandem_replication_lag_bytes",
    "tandem_replication_lag_seconds",
    "tandem_replicated_bytes_total",
    "tandem_barrier_wait_seconds",
    "tandem_barrier_released_unprotected_total",
    "tandem_barrier_unheld_sync_opens_total",
    "tandem_resync_remaining_bytes",
    "tandem_heartbeat_rtt_seconds",
    "tandem_failovers_total",
    "tandem_checker_failures_total",
    "tandem_capture_events_total",
    "tandem_capture_lost_events_total",
];

/// Every state, so that each has a series from the first scrape on.
const STATES: [State; 5] = [
    State::Stop,
    State::Wait,
    State::Alone,
    State::Prim,
    State::Second,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckerLabels {
    checker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// Which way replicated bytes went.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Direction {
    /// Sent to the peer by this node as primary (live changes and resync data).
    Sent,
    /// Applied to this node's copy as secondary.
    Applied,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Applied => "applied",
        }
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The agent's metrics; clones share the same values.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    /// Held while gauges are refreshed and the registry encoded, so that two
    /// scrapes at once cannot interleave a refresh with an encoding.
    scrape: Mutex<()>,
    state: Family<StateLabels, Gauge>,
    peer_up: Gauge,
    lag_bytes: Gauge,
    lag_seconds: FloatGauge,
    replicated: Family<DirectionLabels, Counter>,
    barrier_wait: Histogram,
    released_unprotected: Counter,
    unheld_sync_opens: Counter,
    resync_remaining: Gauge,
    rtt: Family<NetworkLabels, FloatGauge>,
    failovers: Family<ReasonLabels, Counter>,
    checker_failures: Family<CheckerLabels, Counter>,
    capture_events: Family<SourceLabels, Counter>,
    capture_lost: Family<SourceLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric. Labelled families whose label values are known in
    /// advance get all their series at 0 now: `rate()` and `increase()` need a
    /// series to exist before its first increment to see that increment.
    #[must_use]
    pub fn new() -> Self {
        let state = Family::<StateLabels, Gauge>::default();
        let peer_up = Gauge::default();
        let lag_bytes = Gauge::default();
        let lag_seconds = FloatGauge::default();
        let replicated = Family::<DirectionLabels, Counter>::default();
        // Durability calls wait for one network round trip and the peer's sync:
        // from 100 µs up to the hold limit (ack timeout, at least 5 s).
        let barrier_wait = Histogram::new(exponential_buckets(0.000_1, 2.0, 17));
        let released_unprotected = Counter::default();
        let unheld_sync_opens = Counter::default();
        let resync_remaining = Gauge::default();
        let rtt = Family::<NetworkLabels, FloatGauge>::default();
        let failovers = Family::<ReasonLabels, Counter>::default();
        let checker_failures = Family::<CheckerLabels, Counter>::default();
        let capture_events = Family::<SourceLabels, Counter>::default();
        let capture_lost = Family::<SourceLabels, Counter>::default();

        let mut r = Registry::default();
        r.register(
            "tandem_state",
            "SafeKit state of this node: 1 for the current state, 0 for the others",
            state.clone(),
        );
        r.register(
            "tandem_peer_up",
            "1 when the peer was heard on some heartbeat network within the timeout",
            peer_up.clone(),
        );
        r.register_with_unit(
            "tandem_replication_lag",
            "Data captured here and not yet applied by the peer (primary), else 0",
            Unit::Bytes,
            lag_bytes.clone(),
        );
        r.register_with_unit(
            "tandem_replication_lag",
            "Age of the oldest record the peer has not applied yet (primary), else 0",
            Unit::Seconds,
            lag_seconds.clone(),
        );
        r.register_with_unit(
            "tandem_replicated",
            "File data sent to the peer as primary, or applied here as secondary",
            Unit::Bytes,
            replicated.clone(),
        );
        r.register_with_unit(
            "tandem_barrier_wait",
            "Time a held durability call waited at the gate until it was released",
            Unit::Seconds,
            barrier_wait.clone(),
        );
        r.register(
            "tandem_barrier_released_unprotected",
            "Durability calls let run without the peer having what they cover",
            released_unprotected.clone(),
        );
        r.register(
            "tandem_barrier_unheld_sync_opens",
            "Files an application opened with O_SYNC/O_DSYNC whose writes will not wait for the peer (its descriptor limit leaves no reserved number free)",
            unheld_sync_opens.clone(),
        );
        r.register_with_unit(
            "tandem_resync_remaining",
            "Data the peer still lacks while it is not in sync (primary), else 0",
            Unit::Bytes,
            resync_remaining.clone(),
        );
        r.register_with_unit(
            "tandem_heartbeat_rtt",
            "Last heartbeat round-trip time measured on each heartbeat network the peer is heard on",
            Unit::Seconds,
            rtt.clone(),
        );
        r.register(
            "tandem_failovers",
            "Times this node started running the application from WAIT or SECOND, by reason class",
            failovers.clone(),
        );
        r.register(
            "tandem_checker_failures",
            "Times a checker reached its failure threshold, by checker",
            checker_failures.clone(),
        );
        r.register(
            "tandem_capture_events",
            "Change events read by capture: kernel (eBPF ring) and fanotify",
            capture_events.clone(),
        );
        r.register(
            "tandem_capture_lost_events",
            "Capture losses: kernel ring events dropped, fanotify queue overflows",
            capture_lost.clone(),
        );

        for s in STATES {
            state.get_or_create_owned(&StateLabels { state: s.as_str() });
        }
        for d in [Direction::Sent, Direction::Applied] {
            replicated.get_or_create_owned(&DirectionLabels {
                direction: d.as_str(),
            });
        }
        for reason in FailoverReason::ALL {
            failovers.get_or_create_owned(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for source in ["kernel", "fanotify"] {
            capture_events.get_or_create_owned(&SourceLabels { source });
            capture_lost.get_or_create_owned(&SourceLabels { source });
        }

        Self(Arc::new(Inner {
            registry: r,
            scrape: Mutex::new(()),
            state,
            peer_up,
            lag_bytes,
            lag_seconds,
            replicated,
            barrier_wait,
            released_unprotected,
            unheld_sync_opens,
            resync_remaining,
            rtt,
            failovers,
            checker_failures,
            capture_events,
            capture_lost,
        }))
    }

    /// Counts bytes of file data replicated in `direction`.
    pub fn replicated(&self, direction: Direction, bytes: u64) {
        self.0
            .replicated
            .get_or_create(&DirectionLabels {
                direction: direction.as_str(),
            })
            .inc_by(bytes);
    }

    /// Starts timing a held durability call that just arrived at the gate.
    #[must_use]
    pub fn barrier_timer(&self) -> BarrierTimer {
        BarrierTimer {
            arrived: Instant::now(),
            histogram: self.0.barrier_wait.clone(),
        }
    }

    /// Counts durability calls let run without the peer having what they cover.
    pub fn released_unprotected(&self, calls: u64) {
        self.0.released_unprotected.inc_by(calls);
    }

    /// Counts synchronous files opened outside the reserved descriptors, whose
    /// writes the barrier cannot hold.
    pub fn unheld_sync_opens(&self, files: u64) {
        self.0.unheld_sync_opens.inc_by(files);
    }

    /// Counts one start of the application from WAIT or SECOND.
    pub fn failover(&self, reason: FailoverReason) {
        self.0
            .failovers
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Makes the series of checker `name` exist (at 0) before its first failure.
    pub fn checker_known(&self, name: &str) {
        self.0.checker_failures.get_or_create_owned(&CheckerLabels {
            checker: name.to_owned(),
        });
    }

    /// Counts checker `name` reaching its failure threshold.
    pub fn checker_failed(&self, name: &str) {
        self.0
            .checker_failures
            .get_or_create(&CheckerLabels {
                checker: name.to_owned(),
            })
            .inc();
    }

    /// A tally for one capture engine, which counts from 0 each time it starts.
    #[must_use]
    pub fn capture_tally(&self) -> CaptureTally {
        CaptureTally {
            metrics: self.clone(),
            seen: Counters::default(),
        }
    }

    /// Copies what the status knows into the gauges.
    pub fn refresh(&self, s: &Status) {
        let m = &self.0;
        for st in STATES {
            m.state
                .get_or_create(&StateLabels { state: st.as_str() })
                .set(i64::from(st == s.state));
        }
        m.peer_up.set(i64::from(s.peer.connected));
        m.lag_bytes.set(saturating_i64(s.replication.lag_bytes));
        m.lag_seconds.set(s.replication.lag_seconds);
        m.resync_remaining
            .set(saturating_i64(s.replication.resync_remaining_bytes));
        // A network with no measurement yet has no series rather than a made-up 0,
        // and a network the peer is not heard on loses its series: its last
        // measurement says nothing about it any more.
        m.rtt.clear();
        for n in s.peer.networks.iter().filter(|n| n.up) {
            if let Some(us) = n.rtt_us {
                m.rtt
                    .get_or_create(&NetworkLabels {
                        network: n.name.clone(),
                    })
                    .set(Duration::from_micros(us).as_secs_f64());
            }
        }
    }

    /// The OpenMetrics text of every metric, the gauges refreshed from `status`.
    #[must_use]
    pub fn encode(&self, status: &Status) -> String {
        let _scrape = self.0.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.refresh(status);
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a
        // label, and a partial page is still better than none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.0.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Times one held durability call from its arrival at the gate to its release.
#[derive(Debug)]
pub struct BarrierTimer {
    arrived: Instant,
    histogram: Histogram,
}

impl BarrierTimer {
    /// Records the wait; called when the call is released.
    pub fn finish(self) {
        self.histogram.observe(self.arrived.elapsed().as_secs_f64());
    }
}

/// Turns one capture engine's running totals into increments of the agent's
/// counters, which must keep counting across capture restarts (each primary role
/// starts a new engine whose totals begin at 0).
pub struct CaptureTally {
    metrics: Metrics,
    seen: Counters,
}

impl CaptureTally {
    /// Adds what `now` counted since the last call.
    pub fn publish(&mut self, now: Counters) {
        let m = &self.metrics.0;
        let add =
            |family: &Family<SourceLabels, Counter>, source: &'static str, was: u64, is: u64| {
                let delta = is.saturating_sub(was);
                if delta > 0 {
                    family.get_or_create(&SourceLabels { source }).inc_by(delta);
                }
            };
        add(
            &m.capture_events,
            "kernel",
            self.seen.kernel_events,
            now.kernel_events,
        );
        add(
            &m.capture_events,
            "fanotify",
            self.seen.fanotify_events,
            now.fanotify_events,
        );
        add(
            &m.capture_lost,
            "kernel",
            self.seen.lost_kernel_events,
            now.lost_kernel_events,
        );
        add(
            &m.capture_lost,
            "fanotify",
            self.seen.overflows,
            now.overflows,
        );
        self.seen = now;
    }
}

#[cfg(test)]
mod tests;
