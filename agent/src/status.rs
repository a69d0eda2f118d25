//! The agent's status: one shared snapshot that the runtime updates and the control
//! socket (`tandem status`), the metrics endpoint and later the console read.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// SafeKit's states: what the node does with the application and the data.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Not running.
    #[default]
    Stop,
    /// Running but not allowed to run the application.
    Wait,
    /// Runs the application; the peer is absent; changes are recorded.
    Alone,
    /// Runs the application; the peer is SECOND.
    Prim,
    /// Receives replication (in sync or resyncing).
    Second,
}

impl State {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "STOP",
            Self::Wait => "WAIT",
            Self::Alone => "ALONE",
            Self::Prim => "PRIM",
            Self::Second => "SECOND",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// The peer's state as it last told us (`null` when never heard from).
    pub state: Option<State>,
    /// Heard on some heartbeat network within the timeout.
    pub connected: bool,
    /// Each heartbeat network, in configuration order.
    #[serde(default)]
    pub networks: Vec<Network>,
    /// Each witness, in configuration order: whether it answered its last probe.
    #[serde(default)]
    pub witnesses: Vec<Witness>,
    /// Whether the peer says it could run the application if chosen (no failing
    /// checker, in sync if SECOND); `null` when it is not heard.
    #[serde(default)]
    pub can_run: Option<bool>,
}

/// One heartbeat network as this node sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// The peer was heard on it within the heartbeat timeout.
    pub up: bool,
    /// The last round-trip time measured on it, in microseconds.
    pub rtt_us: Option<u64>,
}

/// One witness as this node sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Witness {
    pub address: String,
    pub reachable: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Replication {
    pub in_sync: bool,
    /// The replication connection to the peer is up.
    pub linked: bool,
    /// A SECOND receiving a resync: its copy mixes old and new data until it ends.
    pub resyncing: bool,
    /// Data captured here and not yet applied by the peer (primary), or 0.
    pub lag_bytes: u64,
    /// Age in seconds of the oldest record the peer has not applied (primary), or
    /// 0; absent from the JSON of agents older than this field.
    #[serde(default)]
    pub lag_seconds: f64,
    pub resync_remaining_bytes: u64,
    pub resync_total_bytes: u64,
    /// Records the peer reported durable (primary) or applied here (secondary).
    pub seq: u64,
    /// Bytes of data sent (primary) or applied (secondary) since start.
    pub bytes_total: u64,
    /// Durability calls released without the peer having the data.
    pub released_unprotected: u64,
    /// Durability calls that waited for the peer.
    pub barriers: u64,
    /// A SECOND's last replication phase, numbered: (changes so far, whether the
    /// last one reached "in sync"). Unlike `in_sync` and `resyncing`, which a
    /// closed link clears, it keeps what the last session reached, so that the
    /// failover actor, which polls the status, cannot miss a session that synced
    /// and ended between two polls. Not part of the JSON.
    #[serde(skip)]
    pub phase: (u64, bool),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Vip {
    pub held: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Application {
    pub running: bool,
}

/// One checker as this node sees it.
#[derive(Clone, Debug, Eq, PartialEq, Serialize, Deserialize)]
pub struct Checker {
    pub name: String,
    pub scope: CheckerScope,
    pub state: CheckerState,
}

/// What a checker watches (`application.checkers[].scope`).
#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckerScope {
    Application,
    Node,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckerState {
    /// Passing (for the application's checkers: not past their failure threshold).
    Ok,
    /// Past its failure threshold: keeps this node from running the application.
    Failing,
    /// A node checker without a first result yet.
    Pending,
    /// An application checker while the application does not run here.
    Idle,
}

impl CheckerState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failing => "failing",
            Self::Pending => "pending",
            Self::Idle => "idle",
        }
    }
}

/// The whole status, as `tandem status --json` prints it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub state: State,
    /// Why the node is in its state, logged once when it changed.
    pub reason: String,
    pub peer: Peer,
    pub replication: Replication,
    pub vip: Vip,
    pub application: Application,
    /// Whether this node could run the application if chosen, as its heartbeats
    /// tell the peer: no failing checker, no administrator hold, in sync if
    /// SECOND.
    #[serde(default)]
    pub can_run: bool,
    /// Every checker, in configuration order.
    #[serde(default)]
    pub checkers: Vec<Checker>,
}

/// The shared, updatable status.
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<Mutex<Status>>);

impl Shared {
    #[must_use]
    pub fn new(status: Status) -> Self {
        Self(Arc::new(Mutex::new(status)))
    }

    /// A copy of the current status.
    #[must_use]
    pub fn get(&self) -> Status {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads part of the status without copying the rest.
    pub fn read<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Moves to `state` for `reason`, logging the transition once.
    pub fn transition(&self, state: State, reason: &str) {
        self.update(|s| {
            if s.state != state || s.reason != reason {
                tracing::info!(
                    from = s.state.as_str(),
                    to = state.as_str(),
                    reason,
                    "state change {} -> {}: {reason}",
                    s.state.as_str(),
                    state.as_str()
                );
                s.state = state;
                s.reason = reason.to_string();
            }
        });
    }
}

/// How a state is shown, after SafeKit's console: green when ready, orange while
/// transient or resyncing, red when the node cannot run the application.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Shade {
    Ready,
    Transient,
    Down,
}

impl Shade {
    fn of(state: Option<State>, ready: bool) -> Shade {
        match state {
            Some(State::Prim | State::Alone | State::Second) if ready => Shade::Ready,
            Some(State::Prim | State::Alone | State::Second) => Shade::Transient,
            _ => Shade::Down,
        }
    }

    /// `text` in the shade's colour (ANSI), or as it is.
    fn paint(self, text: &str, color: bool) -> String {
        if !color {
            return text.to_string();
        }
        let code = match self {
            Shade::Ready => "32",
            Shade::Transient => "38;5;208",
            Shade::Down => "31",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// The human form of `tandem status`, coloured with ANSI codes when `color`.
#[must_use]
pub fn render(s: &Status, color: bool) -> String {
    let peer_state = s.peer.state.map_or("?", State::as_str);
    let mine_ready = match s.state {
        State::Prim | State::Alone => s.application.running,
        State::Second => s.replication.in_sync,
        State::Stop | State::Wait => false,
    };
    // The peer's readiness as this node sees it: a SECOND is ready when this
    // primary says it is in sync.
    let peer_ready = match s.peer.state {
        Some(State::Second) => s.replication.in_sync,
        Some(_) => s.peer.connected,
        None => false,
    };
    let mine =
        Shade::of(Some(s.state), mine_ready).paint(&format!("{:<6}", s.state.as_str()), color);
    let theirs = Shade::of(s.peer.state.filter(|_| s.peer.connected), peer_ready)
        .paint(&format!("{peer_state:<6}"), color);
    let sync = if s.replication.in_sync {
        "in sync".to_string()
    } else if s.state == State::Second || s.state == State::Prim {
        format!(
            "resyncing ({} of {} bytes left)",
            s.replication.resync_remaining_bytes, s.replication.resync_total_bytes
        )
    } else {
        "not in sync".to_string()
    };
    let vip = if s.vip.held { "held here" } else { "not here" };
    let mut links = String::new();
    for n in &s.peer.networks {
        let rtt = n.rtt_us.map_or_else(
            || "-".to_string(),
            |us| format!("{:.2} ms", us as f64 / 1000.0),
        );
        links.push_str(&format!(
            "heartbeat {}: {} (rtt {rtt})\n",
            n.name,
            if n.up { "up" } else { "down" }
        ));
    }
    for w in &s.peer.witnesses {
        links.push_str(&format!(
            "witness {}: {}\n",
            w.address,
            if w.reachable {
                "reachable"
            } else {
                "unreachable"
            }
        ));
    }
    for c in &s.checkers {
        let scope = match c.scope {
            CheckerScope::Application => "application",
            CheckerScope::Node => "node",
        };
        links.push_str(&format!(
            "checker {} ({scope}): {}\n",
            c.name,
            c.state.as_str()
        ));
    }
    let app = if s.application.running {
        "running here"
    } else {
        "not running here"
    };
    // Only worth saying when it matters: a peer that could not take over.
    let peer_can_run = if s.peer.can_run == Some(false) {
        ", cannot run the application"
    } else {
        ""
    };
    format!(
        "{:<8} {mine} {}\n{:<8} {theirs} {}{peer_can_run}\nreplication: {sync}, lag {} bytes, {} bytes replicated\nvip: {vip}; application: {app}\n{links}",
        s.node,
        s.reason,
        s.peer.name,
        if s.peer.connected {
            "connected"
        } else {
            "not connected"
        },
        s.replication.lag_bytes,
        s.replication.bytes_total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State, in_sync: bool, running: bool) -> Status {
        let mut s = Status {
            node: "node1".into(),
            state,
            reason: "why".into(),
            ..Default::default()
        };
        s.peer.name = "node2".into();
        s.peer.state = Some(State::Second);
        s.peer.connected = true;
        s.replication.in_sync = in_sync;
        s.application.running = running;
        s
    }

    #[test]
    fn states_are_coloured_as_safekit_does() {
        let ready = render(&status(State::Prim, true, true), true);
        assert!(ready.contains("\x1b[32mPRIM  \x1b[0m"), "{ready:?}");
        assert!(ready.contains("\x1b[32mSECOND\x1b[0m"), "{ready:?}");
        let syncing = render(&status(State::Prim, false, true), true);
        assert!(
            syncing.contains("\x1b[38;5;208mSECOND\x1b[0m"),
            "{syncing:?}"
        );
        let waiting = render(&status(State::Wait, false, false), true);
        assert!(waiting.contains("\x1b[31mWAIT  \x1b[0m"), "{waiting:?}");
    }

    #[test]
    fn checkers_and_what_each_node_can_run_are_shown() {
        let mut s = status(State::Second, true, false);
        s.peer.state = Some(State::Prim);
        s.peer.can_run = Some(false);
        s.checkers = vec![
            Checker {
                name: "web".into(),
                scope: CheckerScope::Application,
                state: CheckerState::Idle,
            },
            Checker {
                name: "data-disk".into(),
                scope: CheckerScope::Node,
                state: CheckerState::Failing,
            },
        ];
        let text = render(&s, false);
        assert!(
            text.contains("node2    PRIM   connected, cannot run the application\n"),
            "{text}"
        );
        assert!(text.contains("checker web (application): idle\n"), "{text}");
        assert!(
            text.contains("checker data-disk (node): failing\n"),
            "{text}"
        );
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["can_run"], false);
        assert_eq!(json["peer"]["can_run"], false);
        assert_eq!(json["checkers"][1]["scope"], "node");
        assert_eq!(json["checkers"][1]["state"], "failing");
        // An older agent's status, without these fields, still reads.
        let old = serde_json::json!({
            "node": "node1", "state": "PRIM", "reason": "", "peer": {"name": "node2",
            "state": null, "connected": false}, "replication": {"in_sync": false,
            "linked": false, "resyncing": false, "lag_bytes": 0,
            "resync_remaining_bytes": 0, "resync_total_bytes": 0, "seq": 0,
            "bytes_total": 0, "released_unprotected": 0, "barriers": 0},
            "vip": {"held": false}, "application": {"running": true}
        });
        let old: Status = serde_json::from_value(old).expect("an older status");
        assert!(old.checkers.is_empty() && old.peer.can_run.is_none());
    }

    #[test]
    fn without_colour_there_are_no_escapes() {
        let text = render(&status(State::Prim, true, true), false);
        assert!(!text.contains('\x1b'));
        assert!(
            text.starts_with("node1    PRIM   why\nnode2    SECOND connected\n"),
            "{text:?}"
        );
    }
}
