//! `--system tandem`: not implemented yet, on purpose. Tandem's failover engine
//! (agent/src/failover) is not wired into the agent's runtime yet, so there is no
//! takeover to measure, and a stand-in would produce numbers that mean nothing.
//!
//! What the backend will do once the engine runs in `tandem run` (the [`Pair`]
//! contract, see pair.rs):
//!
//! - `start`: the harness's lab already wrote both nodes' configurations
//!   (`NetLab::layout.nodes[i].config`); add the VIP and the application
//!   (`failover-bench respond 10.213.7.50:7000 nodeN`, which Tandem starts on the
//!   node that runs) to them, start `tandem run -c CONFIG` in each node's
//!   namespace with `NsProc::spawn`, and stamp the agents' output into `Events`.
//! - `steady`: node1 PRIM and node2 SECOND in sync (`tandem status --json`).
//! - `crash_node1`: T0, then SIGKILL of node1's agent by its pid. Note that the
//!   engine by design does not take over when only the agent dies (the VIP still
//!   answers the SECOND's probe, see the failover module's "Agent death is not
//!   node death"), so Tandem's comparable figure is the `node-death` fault; a
//!   `kill` run that sees no takeover is reported as such by the harness.
//! - `takeover_reported`: node2's state line entering PRIM/ALONE.
//! - `predicted_window_ms`: from the heartbeat interval and timeout in the profile.

use std::{path::Path, sync::Arc, time::Duration};

use crate::{events::Events, netlab::NetLab, pair::Pair};

/// Tandem as the pair under test. It has no values yet: [`Tandem::new`] always
/// fails, and the type being empty makes sure nothing can pretend otherwise.
pub(crate) enum Tandem {}

impl Tandem {
    pub(crate) fn new(_profile: &str, _scratch: &Path) -> anyhow::Result<Tandem> {
        anyhow::bail!(
            "--system tandem is not implemented yet: Tandem's failover engine is not wired \
             into the agent (issue 4). The backend goes in \
             tests/src/bin/failover_bench/tandem_backend.rs (implement the `Pair` trait of pair.rs); \
             until then only `--system keepalived` can be measured"
        )
    }
}

impl Pair for Tandem {
    fn describe(&self) -> Vec<(String, String)> {
        match *self {}
    }

    fn start(&mut self, _lab: &NetLab, _events: &Arc<Events>) -> anyhow::Result<()> {
        match *self {}
    }

    fn steady(&mut self, _events: &Events, _now: u64) -> Result<(), String> {
        match *self {}
    }

    fn fault_spread(&self) -> Duration {
        match *self {}
    }

    fn failover_limit(&self) -> Duration {
        match *self {}
    }

    fn crash_node1(&mut self) -> anyhow::Result<u64> {
        match *self {}
    }

    fn recover_node1(&mut self, _lab: &NetLab, _events: &Arc<Events>) -> anyhow::Result<()> {
        match *self {}
    }

    fn takeover_reported(&self, _events: &Events, _t0: u64) -> Option<u64> {
        match *self {}
    }

    fn predicted_window_ms(&self) -> Option<(f64, f64)> {
        match *self {}
    }

    fn stop(&mut self) {
        match *self {}
    }
}
