//! Removing the demo's lab, whatever happened: a guard that runs `lab down` when
//! the demo ends (success, error, Ctrl-C or panic), and afterwards stops any
//! sample service the agents left behind (its pidfile lives in the lab directory
//! that `down` removes, so the pids are read first).

use std::{path::PathBuf, time::Duration};

use super::{
    DemoOptions,
    progress::Progress,
    setup::{self, lab_options},
};
use crate::lab::{self, Layout, process};

/// How long a leftover service gets after SIGTERM.
const SERVICE_GRACE: Duration = Duration::from_secs(2);

/// Removes the lab when dropped.
pub(crate) struct Teardown {
    opts: DemoOptions,
    progress: Progress,
    /// Where the agents' logs are copied when the demo failed.
    keep_logs: Option<PathBuf>,
}

impl Teardown {
    /// A guard for the demo's lab.
    pub(crate) fn new(opts: DemoOptions, progress: Progress) -> Self {
        Self {
            opts,
            progress,
            keep_logs: None,
        }
    }

    /// Asks that the nodes' logs be copied to `dir` before the lab goes, so that a
    /// failure can be looked into.
    pub(crate) fn keep_logs(&mut self, dir: PathBuf) {
        self.keep_logs = Some(dir);
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let layout = Layout::plan(&lab_options(&self.opts));
        if let Some(dir) = &self.keep_logs {
            copy_logs(&layout, dir);
        }
        self.progress.step("removing the lab");
        match remove(&self.opts) {
            Ok(()) => self.progress.say("    lab removed"),
            Err(e) => eprintln!("tandem: demo: the lab was not removed completely: {e:#}"),
        }
    }
}

/// Removes the demo's lab and the services its agents started, if any exist.
pub(crate) fn remove(opts: &DemoOptions) -> anyhow::Result<()> {
    let layout = Layout::plan(&lab_options(opts));
    let services: Vec<(u32, Vec<String>)> = layout
        .nodes
        .iter()
        .filter_map(|n| {
            let text = std::fs::read_to_string(setup::service_pidfile(n)).ok()?;
            Some((text.trim().parse().ok()?, setup::service_args(n, opts.port)))
        })
        .collect();
    let down = lab::down(&lab_options(opts)).map(drop);
    for (pid, args) in services {
        // Only a process still running our service's command line is ours: the
        // executable may differ (another build), the arguments may not.
        let Some(cmdline) = process::cmdline(pid) else {
            continue;
        };
        if process::is_alive(pid) && cmdline.get(1..) == Some(&args[..]) {
            process::stop(pid, &cmdline, SERVICE_GRACE)?;
        }
    }
    down
}

/// Copies the agents' and services' logs to `dir`, best effort.
fn copy_logs(layout: &Layout, dir: &PathBuf) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    for n in &layout.nodes {
        let service = n.state_dir.join("service.log");
        for (from, to) in [
            (&n.log, format!("{}-agent.log", n.name)),
            (&service, format!("{}-service.log", n.name)),
        ] {
            let _ = std::fs::copy(from, dir.join(to));
        }
    }
}
