//! The two nodes as the demo sees them: their status through each agent's control
//! socket (what `tandem status --json` prints), waits that print every state change
//! as it happens, and the link cut that plays the lost node.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::progress::{Progress, human};
use crate::{
    lab::{Layout, netns},
    runtime::control::query_status,
    status::{State, Status},
};

/// How often statuses are read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// One node of the lab.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) control_socket: PathBuf,
    /// Its interfaces, one per lab network.
    pub(crate) interfaces: Vec<String>,
}

/// Both nodes, and what was last printed about them.
pub(crate) struct Pair {
    pub(crate) nodes: [Node; 2],
    /// The last state line printed per node, so only changes are printed.
    shown: [String; 2],
}

impl Pair {
    /// The pair of a lab's layout.
    pub(crate) fn new(layout: &Layout) -> anyhow::Result<Self> {
        let node = |i: usize| -> anyhow::Result<Node> {
            let Some(n) = layout.nodes.get(i) else {
                bail!("the lab has no node {}", i + 1);
            };
            Ok(Node {
                name: n.name.clone(),
                namespace: n.namespace.clone(),
                data_dir: n.data_dir.clone(),
                control_socket: n.control_socket.clone(),
                interfaces: layout
                    .node_interfaces(&n.namespace)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
        };
        Ok(Self {
            nodes: [node(0)?, node(1)?],
            shown: [String::new(), String::new()],
        })
    }

    /// Node `i`'s status; `None` while its agent does not answer.
    pub(crate) fn status(&self, i: usize) -> Option<Status> {
        query_status(&self.nodes[i].control_socket).ok()
    }

    /// Polls both nodes until `done` holds, printing each node's state when it
    /// changes; fails after `timeout` or on `stop` (Ctrl-C).
    pub(crate) fn wait(
        &mut self,
        p: &Progress,
        stop: &AtomicBool,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Option<Status>; 2]) -> bool,
    ) -> anyhow::Result<[Option<Status>; 2]> {
        let started = Instant::now();
        loop {
            let now = [self.status(0), self.status(1)];
            self.show(p, &now);
            if done(&now) {
                return Ok(now);
            }
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted while waiting until {what}");
            }
            if started.elapsed() >= timeout {
                bail!(
                    "timed out after {} waiting until {what} ({})",
                    human(timeout),
                    self.shown.join("; ")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Prints the state of each node whose state line changed.
    fn show(&mut self, p: &Progress, now: &[Option<Status>; 2]) {
        for (i, s) in now.iter().enumerate() {
            let line = match s {
                None => format!("{} agent not answering", self.nodes[i].name),
                Some(s) => state_line(s),
            };
            if line != self.shown[i] {
                p.say(format_args!("    {line}"));
                self.shown[i] = line;
            }
        }
    }

    /// Sets node `i`'s links (its ends of both lab networks) down or up: cut, the
    /// node is lost to its peer, the witness and the client alike.
    pub(crate) fn set_links(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let ns = self.nodes[i].namespace.as_str();
        let how = if up { "up" } else { "down" };
        for dev in &self.nodes[i].interfaces {
            netns::ip(&["-n", ns, "link", "set", dev, how])?;
        }
        Ok(())
    }
}

/// `node2  ALONE     not in sync   (the peer is gone...)`.
fn state_line(s: &Status) -> String {
    let sync = match (s.state, s.replication.in_sync) {
        (State::Prim | State::Second, true) => "in sync",
        (State::Second, false) => "resyncing",
        _ => "",
    };
    format!(
        "{:<6} {:<6} {:<9} {}",
        s.node,
        s.state.as_str(),
        sync,
        s.reason
    )
}

/// Whether `s` is in `state` and, for PRIM and SECOND, in sync.
pub(crate) fn is(s: Option<&Status>, state: State) -> bool {
    s.is_some_and(|s| {
        s.state == state && (s.replication.in_sync || !matches!(state, State::Prim | State::Second))
    })
}
