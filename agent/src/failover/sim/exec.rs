//! The simulated runtime: feeds events to an engine and carries out its commands
//! (application, VIP, probes, generations, heartbeats, replication roles), plus the
//! simulated replication layer and the application's writes.

use std::time::Duration;

use super::{
    node::Role,
    world::{Flight, NODE_CHECKER, World},
};
use crate::failover::{Command, Event, NodeCheck, State};

/// How long a VIP probe takes.
const PROBE: Duration = Duration::from_millis(100);

impl World {
    /// Handles `ev` on node `i` and carries out the commands, feeding back at once
    /// what the runtime would report synchronously (new generations).
    pub(super) fn feed(&mut self, i: usize, ev: Event) {
        let mut queue = vec![ev];
        while let Some(ev) = queue.pop() {
            if !self.nodes[i].live() {
                return;
            }
            if self.tracing && !matches!(ev, Event::Tick | Event::Heartbeat { .. }) {
                self.log(format!("n{i} <- {ev:?}"));
            }
            let Some(engine) = self.nodes[i].engine.as_mut() else {
                return;
            };
            let cmds = engine.handle(self.now, ev);
            let state = engine.state();
            for c in cmds {
                if let Some(back) = self.exec(i, c) {
                    queue.push(back);
                }
            }
            if self.nodes[i].last_state != state {
                self.fail(format!(
                    "n{i} is {state:?} but its transitions say otherwise"
                ));
            }
        }
    }

    fn exec(&mut self, i: usize, c: Command) -> Option<Event> {
        if self.tracing && !matches!(c, Command::SendHeartbeat(_)) {
            self.log(format!("n{i} -> {c:?}"));
        }
        let now = self.now;
        match c {
            Command::AddVip => self.nodes[i].vip = true,
            Command::RemoveVip => self.nodes[i].vip = false,
            Command::AnnounceVip | Command::Note(_) => {}
            Command::StartApplication => {
                self.nodes[i].app = true;
                let at = now + self.rng.ms(20, 200);
                self.nodes[i].inbox.push((at, Event::AppStarted));
            }
            Command::StopApplication => {
                self.nodes[i].app = false;
                let at = now + self.rng.ms(20, 200);
                self.nodes[i].inbox.push((at, Event::AppStopped));
            }
            Command::ProbeVip => self.nodes[i].probe_at = Some(now + PROBE),
            Command::NewGeneration => {
                let g = &mut self.nodes[i].gens;
                if g.current != 0 {
                    g.history.insert(0, g.current);
                    g.history.truncate(16);
                }
                g.current = self.rng.next() | 1;
                return Some(Event::Generations(g.clone()));
            }
            Command::Persist(m) => self.nodes[i].memory = m,
            Command::ReplicateAlone | Command::ReplicatePrimary => {
                // A resync that did not finish left the writes kept aside in place:
                // running again (`prim --force`) serves them.
                self.nodes[i].aside.clear();
                self.nodes[i].role = Role::Primary;
                self.nodes[i].resync_done = None;
            }
            Command::ReplicateSecondary { diverged } => {
                if diverged {
                    let own = self.nodes[i].log.missing_from(&self.nodes[1 - i].log);
                    self.nodes[i].aside.extend(own);
                }
                let n = &mut self.nodes[i];
                n.role = Role::Secondary {
                    keep_aside: diverged,
                };
                n.in_sync = false;
                n.resync_done = None;
                n.drain = false;
            }
            Command::ReplicateStop => {
                let n = &mut self.nodes[i];
                (n.role, n.in_sync, n.resync_done, n.drain) = (Role::None, false, None, false);
            }
            Command::DrainReplication => self.nodes[i].drain = true,
            Command::SendHeartbeat(beacon) => {
                self.clock += 1;
                for network in 0..2 {
                    if self.links[network] && !self.rng.chance(self.loss) {
                        self.flights.push(Flight {
                            at: now + self.rng.ms(1, 120),
                            to: 1 - i,
                            network,
                            beacon: beacon.clone(),
                            stamp: self.clock,
                        });
                    }
                }
            }
            Command::Transition { from, to, reason } => self.on_transition(i, from, to, &reason),
        }
        None
    }

    fn on_transition(&mut self, i: usize, from: State, to: State, reason: &str) {
        if from != self.nodes[i].last_state || from == to {
            self.fail(format!(
                "n{i}: transition {from:?} -> {to:?} from {:?}",
                self.nodes[i].last_state
            ));
        }
        self.nodes[i].last_state = to;
        let running = |s: State| matches!(s, State::Alone | State::Prim);
        if reason.contains("fenced") {
            self.stats.fences += 1;
        }
        if from == State::Prim && to == State::Second && reason.starts_with("swap") {
            self.stats.swaps += 1;
            if reason.contains("node checker") {
                self.stats.node_handovers += 1;
            }
        }
        if !running(to) || running(from) {
            return;
        }
        // A promotion: it must not lack a write the peer made before a heartbeat
        // this node received, unless the administrator forced it.
        let forced = std::mem::take(&mut self.nodes[i].forced) && reason.contains("--force");
        if forced {
            return;
        }
        if from == State::Second {
            self.stats.takeovers += 1;
        }
        if reason.starts_with("node checkers pass again") {
            self.stats.deferred_takeovers += 1;
        }
        // No takeover by a node that cannot run the application: neither while its
        // engine knows the node checker fails, nor while it fails and the agent
        // could have heard so (a frozen agent's news waits in its inbox).
        let told = self.nodes[i]
            .engine
            .as_ref()
            .is_some_and(|e| e.node_check(NODE_CHECKER) == Some(NodeCheck::Failing));
        let news_waiting = self.nodes[i].inbox.iter().any(|(_, ev)| {
            matches!(
                ev,
                Event::NodeCheckerFailed { .. } | Event::NodeCheckerOk { .. }
            )
        });
        if told || (self.nodes[i].node_check_failing && !news_waiting) {
            self.fail(format!(
                "n{i} started the application ({reason}) while its node checker fails; {}",
                self.describe()
            ));
        }
        // The peer's writes kept aside by its resync are not lacked: they were
        // reported, to be merged by hand, and will not be served.
        let mut missing = self.nodes[1 - i].log.missing_from(&self.nodes[i].log);
        missing.retain(|id| !self.nodes[1 - i].aside.contains(id));
        let aware = self.nodes[i].aware;
        if let Some(id) = missing.iter().find(|id| **id < aware) {
            self.fail(format!(
                "stale promotion: n{i} ({reason}) lacks write {id} of its peer, made before a \
                 heartbeat it received; {}",
                self.describe()
            ));
        } else if !missing.is_empty() {
            self.stats.stale_excused += 1;
        }
    }

    /// Heartbeats, probe answers and other events that are due.
    pub(super) fn deliver(&mut self) {
        let now = self.now;
        let (due, later): (Vec<Flight>, Vec<Flight>) = std::mem::take(&mut self.flights)
            .into_iter()
            .partition(|f| f.at <= now);
        self.flights = later;
        for f in due {
            if self.links[f.network] && self.nodes[f.to].live() {
                let n = &mut self.nodes[f.to];
                n.aware = n.aware.max(f.stamp);
                self.feed(
                    f.to,
                    Event::Heartbeat {
                        network: f.network,
                        beacon: f.beacon,
                    },
                );
            }
        }
        for i in 0..2 {
            if !self.nodes[i].live() {
                continue;
            }
            if self.nodes[i].probe_at.is_some_and(|t| now >= t) {
                self.nodes[i].probe_at = None;
                let other = &self.nodes[1 - i];
                let someone_answers = other.vip && other.machine_up && self.links[0];
                if someone_answers {
                    self.stats.vip_refusals += 1;
                }
                self.feed(i, Event::VipProbeResult { someone_answers });
            }
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.nodes[i].inbox)
                .into_iter()
                .partition(|(t, _)| *t <= now);
            self.nodes[i].inbox = later;
            for (_, ev) in due {
                self.feed(i, ev);
            }
        }
    }

    /// Both agents live and some network between them.
    pub(super) fn connected(&self) -> bool {
        self.nodes.iter().all(|n| n.live() && n.machine_up) && (self.links[0] || self.links[1])
    }

    /// The replication layer: a SECOND connected to a primary catches up (a resync
    /// that takes time), then adopts the primary's generations and is in sync.
    pub(super) fn replicate(&mut self) {
        for s in 0..2 {
            let p = 1 - s;
            let Role::Secondary { keep_aside } = self.nodes[s].role else {
                continue;
            };
            if self.nodes[p].role != Role::Primary || !self.connected() {
                self.nodes[s].resync_done = None;
                continue;
            }
            if self.nodes[s].log.same(&self.nodes[p].log) {
                if self.nodes[s].gens != self.nodes[p].gens {
                    self.nodes[s].gens = self.nodes[p].gens.clone();
                    let g = self.nodes[s].gens.clone();
                    self.feed(s, Event::Generations(g));
                }
                if !self.nodes[s].in_sync {
                    self.nodes[s].in_sync = true;
                    self.nodes[s].resync_done = None;
                    self.feed(
                        s,
                        Event::ReplicationStatus {
                            in_sync: true,
                            resyncing: false,
                        },
                    );
                    self.feed(
                        p,
                        Event::ReplicationStatus {
                            in_sync: true,
                            resyncing: false,
                        },
                    );
                }
                if self.nodes[p].drain {
                    self.nodes[p].drain = false;
                    self.feed(p, Event::Drained);
                }
                continue;
            }
            match self.nodes[s].resync_done {
                None => {
                    self.stats.resyncs += 1;
                    self.nodes[s].resync_done = Some(self.now + self.rng.ms(100, 1500));
                    self.nodes[s].in_sync = false;
                    self.feed(
                        s,
                        Event::ReplicationStatus {
                            in_sync: false,
                            resyncing: true,
                        },
                    );
                }
                Some(t) if self.now >= t => {
                    let extra = self.nodes[s].log.missing_from(&self.nodes[p].log);
                    if !extra.is_empty() {
                        if keep_aside {
                            self.stats.kept_aside += 1;
                        } else {
                            self.fail(format!(
                                "silent loss: n{s}'s writes {extra:?} overwritten by a resync \
                                 that did not keep them aside; {}",
                                self.describe()
                            ));
                        }
                    }
                    self.nodes[s].log = self.nodes[p].log.clone();
                    self.nodes[s].aside.clear();
                    self.nodes[s].resync_done = None;
                }
                Some(_) => {}
            }
        }
    }

    /// The running application writes; a primary's write waits for an in-sync
    /// SECOND (RPO = 0) and is blocked while that SECOND is unreachable.
    pub(super) fn writes(&mut self) {
        for i in 0..2 {
            let j = 1 - i;
            if !self.nodes[i].app || !self.nodes[i].live() || !self.rng.chance(0.3) {
                continue;
            }
            let peer = &self.nodes[j];
            let follower = matches!(peer.role, Role::Secondary { .. }) && self.connected();
            let to_both = match self.nodes[i].state() {
                Some(State::Alone) => false,
                Some(State::Prim) if follower && peer.in_sync => true,
                Some(State::Prim) if follower => false,
                _ => continue,
            };
            self.clock += 1;
            let id = self.clock;
            self.nodes[i].log.push(id);
            if to_both {
                self.nodes[j].log.push(id);
            }
            self.stats.writes += 1;
        }
    }
}
