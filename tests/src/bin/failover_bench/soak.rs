//! The soak (`--fault soak`): no fault at all, but every CPU busy on both nodes
//! for a while, watching for what a false failure detection would leave behind:
//! a connection answered by node2, the client's neighbour entry moving to node2's
//! MAC, the VIP on node2, node2 reporting a takeover, and state changes on either
//! node. An HA pair that fails over while nothing failed is worse than a slow one.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use serde::Serialize;

use crate::{
    events::{Events, ms_since, now_ns},
    netlab::NetLab,
    pair::Pair,
    proc::NsProc,
};

/// What the soak saw.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct SoakResult {
    pub(crate) secs: u64,
    /// Busy-looping processes per node.
    pub(crate) burners_per_node: usize,
    /// Connections started during the soak.
    pub(crate) probes: usize,
    pub(crate) answered_by_node1: usize,
    /// Each one is a spurious failover seen by the client.
    pub(crate) answered_by_node2: usize,
    /// Connections that got no answer, by how they failed.
    pub(crate) failures: BTreeMap<String, usize>,
    /// Changes of the client's neighbour entry for the VIP to a MAC other than
    /// node1's.
    pub(crate) neighbour_moves: usize,
    /// Seconds (of the once-a-second checks) in which node2 held the VIP.
    pub(crate) vip_on_node2_secs: usize,
    /// node2 reported taking over, ms after the soak began.
    pub(crate) takeover_ms: Option<f64>,
    /// Lines of each node's HA manager reporting a state change during the soak
    /// (Tandem's `state change`, keepalived's `Entering ... STATE`).
    pub(crate) state_changes: [Vec<String>; 2],
    /// The largest gap between the starts of successive connections: how long
    /// the client itself was not scheduled.
    pub(crate) probe_gap_ms: Option<f64>,
    /// The 1-minute load average at the end of the soak.
    pub(crate) load_end: String,
}

impl SoakResult {
    /// No sign of a failover anywhere.
    pub(crate) fn clean(&self) -> bool {
        self.answered_by_node2 == 0
            && self.neighbour_moves == 0
            && self.vip_on_node2_secs == 0
            && self.takeover_ms.is_none()
    }
}

/// `failover-bench burn`: spins until killed (its parent kills it by pid, and
/// PR_SET_PDEATHSIG kills it if the parent dies first).
pub(crate) fn burn_main() -> anyhow::Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        // A xorshift keeps the core busy without the optimiser removing the loop.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::hint::black_box(x);
    }
}

/// Starts the burners, watches for `secs`, stops them. The pair is steady with
/// node1 active when this is called.
pub(crate) fn watch(
    secs: u64,
    pair: &mut dyn Pair,
    lab: &NetLab,
    events: &Events,
) -> anyhow::Result<SoakResult> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let argv = vec![exe.display().to_string(), "burn".into()];
    // One burner per CPU on each node: twice as many runnable busy processes as
    // CPUs, so the agents always compete for a core.
    let mut burners = Vec::new();
    for node in 0..2 {
        for _ in 0..cpus {
            burners.push(NsProc::spawn(lab.node_ns(node), &argv, false)?);
        }
    }
    let t0 = now_ns();
    let mut r = SoakResult {
        secs,
        burners_per_node: cpus,
        ..SoakResult::default()
    };
    let end = t0 + secs * 1_000_000_000;
    let mut last_report = t0;
    while now_ns() < end {
        crate::run::sleep(Duration::from_secs(1))?;
        if lab.has_vip(1).unwrap_or(false) {
            r.vip_on_node2_secs += 1;
        }
        if now_ns() - last_report >= 60 * 1_000_000_000 {
            last_report = now_ns();
            eprintln!(
                "failover-bench: soak {:.0}/{secs} s, load {}, node2 answers so far {}",
                ms_since(t0, last_report) / 1e3,
                crate::load_average(),
                count(events, t0, lab.node_name(1)),
            );
        }
    }
    r.load_end = crate::load_average();
    drop(burners);
    tally(&mut r, pair, lab, events, t0);
    Ok(r)
}

fn count(events: &Events, since: u64, who: &str) -> usize {
    events
        .probes_since(since)
        .iter()
        .filter(|p| p.start >= since && p.result == who)
        .count()
}

fn tally(r: &mut SoakResult, pair: &dyn Pair, lab: &NetLab, events: &Events, t0: u64) {
    let probes: Vec<_> = events
        .probes_since(t0)
        .into_iter()
        .filter(|p| p.start >= t0)
        .collect();
    r.probes = probes.len();
    for p in &probes {
        if p.result == lab.node_name(0) {
            r.answered_by_node1 += 1;
        } else if p.result == lab.node_name(1) {
            r.answered_by_node2 += 1;
        } else {
            *r.failures.entry(p.result.clone()).or_default() += 1;
        }
    }
    r.probe_gap_ms = probes
        .windows(2)
        .map(|w| ms_since(w[0].start, w[1].start))
        .reduce(f64::max);
    r.neighbour_moves = events
        .neigh_since(t0)
        .iter()
        .filter(|n| n.t >= t0 && n.mac.as_deref().is_some_and(|m| m != lab.macs[0]))
        .count();
    r.takeover_ms = pair.takeover_reported(events, t0).map(|t| ms_since(t0, t));
    for (node, out) in r.state_changes.iter_mut().enumerate() {
        *out = events
            .lines_since(node, t0)
            .iter()
            .filter(|l| l.t >= t0 && is_state_change(&l.text))
            .map(|l| format!("+{:.1} s {}", ms_since(t0, l.t) / 1e3, l.text.trim()))
            .collect();
    }
}

fn is_state_change(line: &str) -> bool {
    line.contains("state change") || (line.contains("Entering") && line.contains("STATE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_of_both_systems_are_recognised() {
        assert!(is_state_change(
            r#"INFO tandem: state change from="PRIM" to="ALONE" reason="peer lost""#
        ));
        assert!(is_state_change(
            "Keepalived_vrrp[12]: (VI_1) Entering MASTER STATE"
        ));
        assert!(!is_state_change(
            "Keepalived_vrrp[12]: (VI_1) sent 5 gratuitous ARPs"
        ));
    }

    #[test]
    fn a_soak_with_a_node2_answer_is_not_clean() {
        let mut r = SoakResult::default();
        assert!(r.clean());
        r.answered_by_node2 = 1;
        assert!(!r.clean());
    }
}
