//! The simulated world of two nodes: time steps, fault injection, heartbeats in
//! flight, and the invariant checks after every step.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    time::{Duration, Instant},
};

use super::{node::Node, rng::Rng};
use crate::failover::{Beacon, CheckerAction, Engine, Event, Params, Preference, State};

/// Simulated time per step.
pub(super) const STEP: Duration = Duration::from_millis(25);
/// Faults are injected before this step, healed at it.
pub(super) const HEAL_STEP: u32 = 1100;
/// Once every fault healed, the pair must converge within this.
pub(super) const BOUND: Duration = Duration::from_secs(18);
/// How long after the VIP network was cut two runners or two VIP holders are
/// excused (the residual case, until heartbeats resolve it), and, for those that
/// arose then, how long after both agents are back and can hear each other.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// The one node checker of each node.
pub(super) const NODE_CHECKER: &str = "uplink";

/// What the runs exercised, to prove the checks were not vacuous.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) takeovers: u64,
    pub(super) fences: u64,
    pub(super) swaps: u64,
    pub(super) vip_refusals: u64,
    pub(super) resyncs: u64,
    pub(super) forced: u64,
    pub(super) kept_aside: u64,
    pub(super) writes: u64,
    pub(super) dual_excused_steps: u64,
    pub(super) stale_excused: u64,
    /// Of `dual_excused_steps`, those past the VIP network's grace while an agent
    /// frozen or dead kept two runners from hearing each other.
    pub(super) dual_lingering_steps: u64,
    /// Runners that handed over because their node checker failed.
    pub(super) node_handovers: u64,
    /// Takeovers made once a node checker passed again, the peer still silent.
    pub(super) deferred_takeovers: u64,
}

impl Stats {
    pub(super) fn add(&mut self, o: &Stats) {
        self.takeovers += o.takeovers;
        self.fences += o.fences;
        self.swaps += o.swaps;
        self.vip_refusals += o.vip_refusals;
        self.resyncs += o.resyncs;
        self.forced += o.forced;
        self.kept_aside += o.kept_aside;
        self.writes += o.writes;
        self.dual_excused_steps += o.dual_excused_steps;
        self.stale_excused += o.stale_excused;
        self.dual_lingering_steps += o.dual_lingering_steps;
        self.node_handovers += o.node_handovers;
        self.deferred_takeovers += o.deferred_takeovers;
    }
}

/// A heartbeat on its way.
pub(super) struct Flight {
    pub(super) at: Instant,
    pub(super) to: usize,
    pub(super) network: usize,
    pub(super) beacon: Beacon,
    /// Logical time of sending.
    pub(super) stamp: u64,
}

pub(super) struct World {
    pub(super) rng: Rng,
    t0: Instant,
    pub(super) now: Instant,
    pub(super) step: u32,
    pub(super) nodes: [Node; 2],
    /// Network 0 carries the VIP (and ARP probes); both carry heartbeats.
    pub(super) links: [bool; 2],
    pub(super) loss: f64,
    pub(super) flights: Vec<Flight>,
    /// Last time the VIP network was cut (every dual runner needs it).
    pub(super) vip_net_cut: Option<Instant>,
    /// Two runners (or VIP holders) excused so far, without a break.
    pub(super) dual_excused: bool,
    /// Since when both agents are live on running machines with a heartbeat
    /// network between them: what resolving two runners takes.
    pub(super) resolvable_since: Option<Instant>,
    /// Logical clock ordering writes and heartbeats.
    pub(super) clock: u64,
    pub(super) params: [Params; 2],
    incarnations: u64,
    pub(super) healed_at: Option<Instant>,
    /// The logical clock when the faults healed: a heartbeat stamped later was
    /// sent on healed networks.
    pub(super) heal_clock: u64,
    pub(super) converged_at: Option<Instant>,
    trace: VecDeque<String>,
    /// Record engine events and commands in the trace (slower; for a replay).
    pub(super) tracing: bool,
    pub(super) failure: Option<String>,
    pub(super) stats: Stats,
}

impl World {
    pub(super) fn new(seed: u64, tracing: bool) -> Self {
        let mut rng = Rng::new(seed);
        let prefer = seed.is_multiple_of(3);
        let base = Params {
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(1),
            boot_wait: Duration::from_secs(2),
            probe_retry: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            networks: 2,
            witnesses: 1,
            max_restarts: 2,
            restart_window: Duration::from_secs(4),
            swap_timeout: Duration::from_secs(3),
            node_checkers: vec![NODE_CHECKER.into()],
            ..Params::default()
        };
        let params = [
            Params {
                ties_won: true,
                preference: if prefer {
                    Preference::ThisNode
                } else {
                    Preference::None
                },
                ..base.clone()
            },
            Params {
                ties_won: false,
                preference: if prefer {
                    Preference::PeerNode
                } else {
                    Preference::None
                },
                ..base
            },
        ];
        let loss = (rng.next() % 100) as f64 / 1000.0;
        let t0 = Instant::now();
        let mut w = Self {
            rng,
            t0,
            now: t0,
            step: 0,
            nodes: [Node::new(), Node::new()],
            links: [true, true],
            loss,
            flights: Vec::new(),
            vip_net_cut: None,
            dual_excused: false,
            resolvable_since: None,
            clock: 0,
            params,
            incarnations: 0,
            healed_at: None,
            heal_clock: 0,
            converged_at: None,
            trace: VecDeque::new(),
            tracing,
            failure: None,
            stats: Stats::default(),
        };
        // Both machines boot for the first time, a little apart.
        for i in 0..2 {
            w.nodes[i].restart_at = Some(t0 + w.rng.ms(0, 1500));
        }
        w
    }

    pub(super) fn run(mut self, steps: u32) -> Result<Stats, String> {
        for _ in 0..steps {
            self.one_step();
            if let Some(f) = self.failure.take() {
                let mut msg = format!("at {} ms: {f}\nrecent events:\n", self.ms());
                for line in &self.trace {
                    let _ = writeln!(msg, "  {line}");
                }
                return Err(msg);
            }
        }
        match (self.healed_at, self.converged_at) {
            (Some(_), Some(_)) => Ok(self.stats),
            (h, _) => Err(format!(
                "never converged (faults healed at {h:?}); {}",
                self.describe()
            )),
        }
    }

    fn one_step(&mut self) {
        self.now += STEP;
        self.step += 1;
        if self.step < HEAL_STEP {
            self.faults();
        } else if self.step == HEAL_STEP {
            self.heal();
        }
        for i in 0..2 {
            self.lifecycle(i);
        }
        self.deliver();
        self.checkers();
        self.replicate();
        self.writes();
        self.administrator();
        for i in 0..2 {
            self.feed(i, Event::Tick);
        }
        self.check();
    }

    fn faults(&mut self) {
        for l in 0..2 {
            let flip = if self.links[l] { 0.003 } else { 0.02 };
            if self.rng.chance(flip) {
                self.links[l] = !self.links[l];
                self.log(format!(
                    "network {l} {}",
                    if self.links[l] { "up" } else { "cut" }
                ));
            }
        }
        for i in 0..2 {
            let flip = if self.nodes[i].witness { 0.002 } else { 0.02 };
            if self.rng.chance(flip) {
                let reachable = !self.nodes[i].witness;
                self.nodes[i].witness = reachable;
                self.send(
                    i,
                    Event::Witness {
                        index: 0,
                        reachable,
                    },
                );
            }
            let flip = if self.nodes[i].checker_failing {
                0.01
            } else {
                0.0015
            };
            if self.rng.chance(flip) {
                self.set_checker(i, !self.nodes[i].checker_failing);
            }
            let flip = if self.nodes[i].node_check_failing {
                0.005
            } else {
                0.0015
            };
            if self.rng.chance(flip) {
                self.set_node_check(i, !self.nodes[i].node_check_failing);
            }
            if !self.nodes[i].live() || self.nodes[i].admin_start_at.is_some() {
                continue;
            }
            let r = self.rng.next() % 10_000;
            match r {
                0..15 => {
                    self.log(format!("n{i} machine crash"));
                    let n = &mut self.nodes[i];
                    n.lose_agent();
                    (n.machine_up, n.app, n.vip) = (false, false, false);
                    n.restart_at = Some(self.now + self.rng.ms(300, 4000));
                }
                15..30 => {
                    // The supervisor freezes the orphaned application; the VIP stays.
                    self.log(format!("n{i} agent killed"));
                    let n = &mut self.nodes[i];
                    n.lose_agent();
                    n.app = false;
                    n.restart_at = Some(self.now + self.rng.ms(200, 3000));
                }
                30..45 => {
                    self.log(format!("n{i} agent frozen"));
                    self.nodes[i].frozen_until = Some(self.now + self.rng.ms(200, 3000));
                }
                45..55 => {
                    self.feed(i, Event::Stop);
                    self.nodes[i].admin_start_at = Some(self.now + self.rng.ms(500, 3000));
                }
                55..75 => self.feed(i, Event::AdminSwap),
                75..80 => self.feed(i, Event::AdminSecond),
                80..85 => self.feed(i, Event::AdminPrim { force: false }),
                _ => {}
            }
        }
    }

    fn heal(&mut self) {
        self.log("all faults heal".into());
        self.heal_clock = self.clock;
        self.links = [true, true];
        for i in 0..2 {
            if !self.nodes[i].witness {
                self.nodes[i].witness = true;
                self.send(
                    i,
                    Event::Witness {
                        index: 0,
                        reachable: true,
                    },
                );
            }
            if self.nodes[i].checker_failing {
                self.set_checker(i, false);
            }
            if self.nodes[i].node_check_failing {
                self.set_node_check(i, false);
            }
        }
    }

    /// The node checker's result changes; the agent hears it at once (later if
    /// frozen).
    fn set_node_check(&mut self, i: usize, failing: bool) {
        self.nodes[i].node_check_failing = failing;
        let ev = node_check_event(failing);
        self.send(i, ev);
    }

    fn set_checker(&mut self, i: usize, failing: bool) {
        self.nodes[i].checker_failing = failing;
        self.nodes[i].checker_reported = None;
        if !failing {
            self.send(
                i,
                Event::CheckerOk {
                    checker: "app".into(),
                },
            );
        }
    }

    /// Restarts, thaws and administrator starts that are due.
    fn lifecycle(&mut self, i: usize) {
        let now = self.now;
        if self.nodes[i].restart_at.is_some_and(|t| now >= t) {
            self.incarnations += 1;
            let n = &mut self.nodes[i];
            n.restart_at = None;
            n.machine_up = true;
            let p = Params {
                incarnation: self.incarnations,
                ..self.params[i].clone()
            };
            n.engine = Some(Engine::new(p, n.gens.clone(), n.memory, now));
            n.last_state = State::Stop;
            self.log(format!("n{i} agent starts"));
            self.feed(i, Event::Start);
            let reachable = self.nodes[i].witness;
            self.feed(
                i,
                Event::Witness {
                    index: 0,
                    reachable,
                },
            );
            // The node checker's first result.
            let ev = node_check_event(self.nodes[i].node_check_failing);
            self.feed(i, ev);
        }
        if self.nodes[i].frozen_until.is_some_and(|t| now >= t) {
            self.nodes[i].frozen_until = None;
            self.log(format!("n{i} agent thawed"));
        }
        if self.nodes[i].admin_start_at.is_some_and(|t| now >= t) && self.nodes[i].live() {
            self.nodes[i].admin_start_at = None;
            self.feed(i, Event::Start);
        }
    }

    /// Checkers report a failure every second while failing.
    fn checkers(&mut self) {
        for i in 0..2 {
            let n = &self.nodes[i];
            if n.checker_failing
                && n.live()
                && n.checker_reported
                    .is_none_or(|t| self.now >= t + Duration::from_secs(1))
            {
                self.nodes[i].checker_reported = Some(self.now);
                let ev = Event::CheckerFailed {
                    checker: "app".into(),
                    action: CheckerAction::Restart,
                };
                self.feed(i, ev);
            }
        }
    }

    /// Once both nodes healed, a divergence left to the administrator is resolved
    /// by `prim --force` on a random node; before that, now and then.
    fn administrator(&mut self) {
        let diverged = self
            .nodes
            .iter()
            .all(|n| n.live() && n.engine.as_ref().is_some_and(|e| e.diverged()));
        let p = if self.step >= HEAL_STEP { 0.05 } else { 0.01 };
        if diverged && self.rng.chance(p) {
            let i = self.rng.index(2);
            self.nodes[i].forced = true;
            self.stats.forced += 1;
            self.feed(i, Event::AdminPrim { force: true });
        }
    }

    /// An event for node `i`'s engine: now if it is live, later if it is frozen,
    /// never if its agent is down (a new agent measures afresh).
    pub(super) fn send(&mut self, i: usize, ev: Event) {
        if self.nodes[i].live() {
            self.feed(i, ev);
        } else if self.nodes[i].engine.is_some() {
            self.nodes[i].inbox.push((self.now, ev));
        }
    }

    pub(super) fn fail(&mut self, msg: String) {
        self.failure.get_or_insert(msg);
    }

    pub(super) fn ms(&self) -> u128 {
        (self.now - self.t0).as_millis()
    }

    pub(super) fn log(&mut self, line: String) {
        if self.trace.len() == 120 {
            self.trace.pop_front();
        }
        let ms = self.ms();
        self.trace.push_back(format!("{ms:>6} {line}"));
    }
}

fn node_check_event(failing: bool) -> Event {
    let checker = NODE_CHECKER.to_string();
    if failing {
        Event::NodeCheckerFailed { checker }
    } else {
        Event::NodeCheckerOk { checker }
    }
}
