//! What the harness needs from an HA pair under test, so that keepalived and
//! Tandem are measured by the same code: start the pair with node1 active, say
//! whether it is steady, crash node1's HA manager, bring it back, and (if the
//! system reports it) when node2 took over.
//!
//! The harness owns everything that does not depend on the system: the lab, the
//! client prober, the node-death link cut, the client-side steadiness checks, the
//! timings and the report.

use std::{path::Path, time::Duration};

use crate::{events::Events, netlab::NetLab};

/// The fault injected at T0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `kill -9` of every process of node1's HA manager: a daemon crash, the host
    /// and the application keep running.
    Kill,
    /// The same, then node1's lab interface is brought down: the whole node is
    /// gone from the network.
    NodeDeath,
    /// No fault: every CPU of both nodes kept busy for `--soak-secs`, watching
    /// for spurious failovers (see soak.rs).
    Soak,
}

impl Fault {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Fault> {
        match s {
            "kill" => Ok(Fault::Kill),
            "node-death" => Ok(Fault::NodeDeath),
            "soak" => Ok(Fault::Soak),
            other => anyhow::bail!("unknown fault `{other}` (kill, node-death, soak)"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::NodeDeath => "node-death",
            Fault::Soak => "soak",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 of node1's HA manager",
            Fault::NodeDeath => {
                "kill -9 of node1's HA manager, then node1's links (eth0, eth1) down"
            }
            Fault::Soak => "none: every CPU busy on both nodes, watching for spurious failovers",
        }
    }
}

/// An HA pair in the lab. Implementations start and signal only processes they
/// started themselves, by pid.
pub(crate) trait Pair {
    /// Settings and versions worth printing with the figures, as (name, value).
    fn describe(&self) -> Vec<(String, String)>;

    /// Starts the pair and, if the system does not start it itself, the
    /// application (a `failover-bench respond` on VIP:7000 answering its node's
    /// name) on both nodes. Node1 is meant to become the active node.
    fn start(&mut self, lab: &NetLab, events: &std::sync::Arc<Events>) -> anyhow::Result<()>;

    /// Whether the system itself says node1 is active and settled and node2 is
    /// standing by, at `now`; `Err` carries why not, for the timeout message.
    /// The harness checks the client's view (answers, neighbour entry, VIP
    /// placement) on its own.
    fn steady(&mut self, events: &Events, now: u64) -> Result<(), String>;

    /// The fault instant is spread uniformly over this long after the pair is
    /// steady, so it falls at a random point of the system's timer cycle.
    fn fault_spread(&self) -> Duration;

    /// How long a takeover may take before the run counts as failed.
    fn failover_limit(&self) -> Duration;

    /// Kills every process of node1's HA manager with SIGKILL and returns the
    /// CLOCK_MONOTONIC instant (ns) taken just before the first signal.
    fn crash_node1(&mut self) -> anyhow::Result<u64>;

    /// Brings node1's HA manager back after `crash_node1` (the harness has
    /// brought node1's link back up already), so that node1 becomes active again.
    fn recover_node1(
        &mut self,
        lab: &NetLab,
        events: &std::sync::Arc<Events>,
    ) -> anyhow::Result<()>;

    /// When node2 reported taking over, at or after `t0`, if the system reports
    /// it (keepalived: node2's "Entering MASTER STATE").
    fn takeover_reported(&self, events: &Events, t0: u64) -> Option<u64>;

    /// The takeover window the system's timers predict for a fault at a uniform
    /// random point, in ms after the fault (min, max), if known.
    fn predicted_window_ms(&self) -> Option<(f64, f64)>;

    /// Stops everything it started (also called on failure).
    fn stop(&mut self);
}

/// Checks `system` and `profile` without side effects, so that a mistake (or an
/// unimplemented system) is reported before any lab is built.
pub(crate) fn check(system: &str, profile: &str) -> anyhow::Result<()> {
    match system {
        "keepalived" => crate::keepalived::check_profile(profile),
        "tandem" => crate::tandem_backend::Tandem::new(profile, Path::new("")).map(drop),
        other => anyhow::bail!("unknown system `{other}` (keepalived, tandem)"),
    }
}

/// The pair for `system` with `profile`; `scratch` holds its files.
pub(crate) fn make(system: &str, profile: &str, scratch: &Path) -> anyhow::Result<Box<dyn Pair>> {
    match system {
        "keepalived" => Ok(Box::new(crate::keepalived::Keepalived::new(
            profile, scratch,
        )?)),
        "tandem" => crate::tandem_backend::Tandem::new(profile, scratch)
            .map(|t| Box::new(t) as Box<dyn Pair>),
        other => anyhow::bail!("unknown system `{other}` (keepalived, tandem)"),
    }
}
