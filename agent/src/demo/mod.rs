//! `tandem demo`: the whole promise on one machine. It builds the two-node lab
//! with a sample service as the application, runs writes through the VIP, cuts
//! the primary's link, shows the takeover and its measured outage, checks that
//! every acknowledged write survived, brings the node back through a range-only
//! resync, swaps the service back, prints a summary and removes the lab, also on
//! an error or Ctrl-C.
//!
//! - `scenario`: the story, step by step.
//! - `setup` / `teardown`: the lab with the service; its removal, whatever happens.
//! - `service`: the sample service (`tandem lab service`), inside this binary.
//! - `client`: the workload, in the lab's client namespace.
//! - `pair`: the nodes' status through their control sockets, and the link cut.
//! - `summary`: the measures and the final table; `progress`: the timed lines.

mod client;
mod pair;
mod progress;
mod scenario;
pub mod service;
mod setup;
mod summary;
mod teardown;

use std::{path::PathBuf, sync::atomic::AtomicBool, time::Duration};

use anyhow::bail;

use self::{progress::Progress, teardown::Teardown};
use crate::lab::Keygen;

/// The demo's namespace prefix unless another is asked for.
pub const DEFAULT_PREFIX: &str = "tandem-demo";
/// The port the sample service listens on.
pub const SERVICE_PORT: u16 = 7000;
/// The parent of the demo lab's directory (`<this>/<prefix>`).
const BASE_PARENT: &str = "/var/tmp";

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The lab's namespace prefix; its directory is `/var/tmp/<prefix>`.
    pub prefix: String,
    /// The sample service's port.
    pub port: u16,
    /// How long the client writes through node1 before the fault.
    pub workload: Duration,
    /// The size of the data set node1 starts with, which the first sync copies
    /// whole and the later resync must not.
    pub dataset_bytes: u64,
}

impl DemoOptions {
    /// The defaults, with the lab named `prefix`.
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            port: SERVICE_PORT,
            workload: Duration::from_secs(5),
            dataset_bytes: 16 << 20,
        }
    }

    /// The lab's directory.
    #[must_use]
    pub fn base_dir(&self) -> PathBuf {
        PathBuf::from(BASE_PARENT).join(&self.prefix)
    }

    /// Where the nodes' logs are kept when the demo fails.
    fn logs_dir(&self) -> PathBuf {
        PathBuf::from(BASE_PARENT).join(format!("{}-logs", self.prefix))
    }
}

/// Runs the demo; `stop` (set by SIGINT/SIGTERM) interrupts it. Fails when a step
/// times out, or when an acknowledged write was lost or the copies differ.
pub fn run(opts: &DemoOptions, keygen: &dyn Keygen, stop: &AtomicBool) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo needs root (eBPF, fanotify, network namespaces): sudo tandem demo");
    }
    let p = Progress::start();
    p.step(format_args!(
        "removing any leftover demo lab `{}`",
        opts.prefix
    ));
    teardown::remove(opts)?;
    let mut guard = Teardown::new(opts.clone(), p);
    let summary = match scenario::run(opts, keygen, p, stop) {
        Ok(s) => s,
        Err(e) => {
            let logs = opts.logs_dir();
            guard.keep_logs(logs.clone());
            drop(guard);
            return Err(e.context(format!(
                "demo failed (agent logs kept in {})",
                logs.display()
            )));
        }
    };
    print!("\n{}\n", summary.render());
    drop(guard);
    if !summary.lost.is_empty() {
        bail!(
            "{} acknowledged writes were lost (ids {:?})",
            summary.lost.len(),
            summary.lost.iter().take(10).collect::<Vec<_>>()
        );
    }
    if !summary.identical {
        bail!("node1's and node2's copies of the writes differ at the end");
    }
    println!(
        "demo passed: {} acknowledged writes, 0 lost",
        summary.acked()
    );
    Ok(())
}
