//! The failover actor: owns the sans-IO [`Engine`], feeds it heartbeats, witness
//! reachability, replication progress, administrator commands, the results of what
//! it commanded, and time; performs its commands.
//!
//! ```text
//!  Heartbeats ──Received──┐
//!  witness probes ────────┤                        ┌─▶ heartbeat payload (watch)
//!  checkers, admin ───────┼─Event─▶ Engine ─Command┼─▶ status, log, persisted memory
//!  executor results ──────┘                        └─▶ executor (one at a time):
//!                                                      application, VIP, replication role
//! ```
//!
//! Fast commands (heartbeats, transitions, persisting, new generations) run in the
//! actor, in order; slow ones (the application's commands, VIP probes, switching the
//! replication role) run one after another in the executor task, so that a stop has
//! finished before the next command starts while heartbeats keep flowing.

use std::{
    collections::VecDeque,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::wire::Generations;
use anyhow::Context;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    Ctx,
    app::{self, Action, Checkers},
    node_checks::NodeCheckers,
    role::{Gate, Kind, Roles},
};
use crate::{
    config::{CheckerScope, Vip},
    failover::{Beacon, Command, Engine, Event, Memory, NodeCheck, Params, Preference},
    heartbeat::{self, HeartbeatConfig, Heartbeats, NetworkSpec},
    metrics::classify_failover,
    status::{self, CheckerState, State},
    vip::{Addresses, AnnounceConfig, Announcer, ProbeConfig, ProbeOutcome},
};

/// How often the actor looks at replication progress when nothing else happens.
const POLL: Duration = Duration::from_millis(50);
/// How often each witness is probed.
const WITNESS_INTERVAL: Duration = Duration::from_millis(500);
/// How long the executor gets to finish after `Stop` at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// Sends administrator commands (`tandem prim`, …) to the actor.
pub type Admin = mpsc::Sender<Event>;

/// The file holding the engine's [`Memory`].
fn memory_path(state_dir: &Path) -> PathBuf {
    state_dir.join("failover.json")
}

/// Reads what a previous run persisted; a node that never ran starts from the
/// default (which assumes the peer may be newer).
fn load_memory(state_dir: &Path) -> anyhow::Result<Memory> {
    let p = memory_path(state_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not a failover memory file", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Memory::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Stores the memory crash-safely: a new file, synced, renamed over the old one,
/// and the directory synced, so that a crash leaves either version whole.
fn store_memory(state_dir: &Path, m: &Memory) -> std::io::Result<()> {
    let p = memory_path(state_dir);
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(m).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(state_dir)?.sync_all()
}

fn params(ctx: &Ctx) -> anyhow::Result<Params> {
    let cfg = &ctx.cfg;
    let preference = match (&cfg.failover.preferred, cfg.role) {
        (Some(n), _) if *n == cfg.node => Preference::ThisNode,
        (Some(_), _) => Preference::PeerNode,
        (None, crate::config::Role::Primary) => Preference::ThisNode,
        (None, crate::config::Role::Secondary) => Preference::PeerNode,
        (None, crate::config::Role::Auto) => Preference::None,
    };
    let (max_restarts, restart_window) = cfg
        .application
        .as_ref()
        .map_or((3, Duration::from_secs(3600)), |a| {
            (a.max_restarts, a.restart_window)
        });
    let node_checkers = cfg
        .application
        .iter()
        .flat_map(|a| &a.checkers)
        .filter(|c| c.scope == CheckerScope::Node)
        .map(|c| c.name.clone())
        .collect();
    Ok(Params {
        heartbeat_interval: cfg.heartbeat.interval,
        heartbeat_timeout: cfg.heartbeat.timeout,
        boot_wait: cfg.failover.boot_wait,
        networks: cfg.heartbeat.networks.len(),
        witnesses: cfg.failover.witnesses.len(),
        preference,
        ties_won: cfg.node < cfg.peer.name,
        max_restarts,
        restart_window,
        incarnation: random_u64()?,
        node_checkers,
        ..Params::default()
    })
}

fn random_u64() -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?,
        &mut b,
    )
    .context("cannot read /dev/urandom")?;
    Ok(u64::from_ne_bytes(b))
}

/// The heartbeat key: from the configured secret, else from both certificates.
fn heartbeat_key(ctx: &Ctx, own: [u8; 32], peer: [u8; 32]) -> anyhow::Result<heartbeat::Key> {
    Ok(match &ctx.cfg.heartbeat.secret_file {
        Some(p) => {
            let s = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            heartbeat::derive_key(s.trim_ascii())
        }
        None => heartbeat::derive_key(&heartbeat::fingerprint_secret(&own, &peer)),
    })
}

/// Runs the actor until `stop`; then stops the module (application, VIP,
/// replication) and returns.
pub async fn run(
    ctx: Arc<Ctx>,
    gate: Arc<Gate>,
    fingerprints: ([u8; 32], [u8; 32]),
    admin: (Admin, mpsc::Receiver<Event>),
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let memory = load_memory(&ctx.cfg.state_dir)?;
    let leftover_application = memory.was_running;
    let mut engine = Engine::new(params(&ctx)?, ctx.generations(), memory, Instant::now());
    let (payload_tx, payload_rx) = watch::channel(Beacon::default());
    let networks: Vec<NetworkSpec> = ctx
        .cfg
        .heartbeat
        .networks
        .iter()
        .map(|n| NetworkSpec {
            name: n.name.clone(),
            local: n.local,
            peer: n.peer,
        })
        .collect();
    let hb_config = HeartbeatConfig {
        networks: networks.clone(),
        interval: ctx.cfg.heartbeat.interval,
        window: (ctx.cfg.heartbeat.timeout * 2).max(HeartbeatConfig::DEFAULT_WINDOW),
        key: heartbeat_key(&ctx, fingerprints.0, fingerprints.1)?,
        node: ctx.cfg.node.clone(),
        peer_node: ctx.cfg.peer.name.clone(),
    };
    // A predecessor that is still exiting may hold the ports for a moment.
    let deadline = Instant::now() + super::BIND_PATIENCE;
    let (heartbeats, mut received) = loop {
        match Heartbeats::start(hb_config.clone(), payload_rx.clone()) {
            Ok(h) => break h,
            Err(heartbeat::HeartbeatError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot start heartbeats")),
        }
    };
    let (events_tx, mut events) = admin;
    let (role_failed_tx, mut role_failed) = mpsc::channel(4);
    let (exec_tx, exec_rx) = mpsc::unbounded_channel();
    let executor = tokio::spawn(
        Executor {
            ctx: ctx.clone(),
            roles: Roles::new(ctx.clone(), gate, role_failed_tx),
            events: events_tx.clone(),
            queue: exec_tx.downgrade(),
            addresses: None,
            announcer: None,
            checkers: None,
            app_running: watch::channel(false).0,
            leftover_application,
        }
        .run(exec_rx),
    );
    ctx.status.update(|s| {
        s.peer.networks = networks
            .iter()
            .map(|n| status::Network {
                name: n.name.clone(),
                ..Default::default()
            })
            .collect();
        s.peer.witnesses = ctx
            .cfg
            .failover
            .witnesses
            .iter()
            .map(|w| status::Witness {
                address: w.to_string(),
                reachable: false,
            })
            .collect();
    });
    let witnesses = spawn_witnesses(&ctx, events_tx.clone());
    // Node checkers run in every state, from now until the agent stops.
    let node_checkers = ctx
        .cfg
        .application
        .as_ref()
        .map(|a| NodeCheckers::start(&a.checkers, &events_tx, &ctx.metrics));
    let mut actor = Actor {
        ctx: ctx.clone(),
        exec: exec_tx,
        payload: payload_tx,
        repl: None,
        phase_base: 0,
        gens: ctx.generations(),
        follow_ups: VecDeque::new(),
        checkers: Vec::new(),
    };
    actor.feed(&mut engine, Event::Start)?;
    loop {
        let deadline = engine.poll_timeout().min(Instant::now() + POLL);
        let ev = tokio::select! {
            // Heartbeats first: after a stall, those that arrived in time are
            // handled before the timer that would declare the peer lost.
            biased;
            r = received.recv() => match r {
                Some(r) => match networks.iter().position(|n| n.name == r.network) {
                    Some(network) => {
                        if let Some(rtt) = r.rtt {
                            let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                            ctx.status.update(|s| {
                                if let Some(n) = s.peer.networks.get_mut(network) {
                                    n.rtt_us = Some(us);
                                }
                            });
                        }
                        Event::Heartbeat { network, beacon: r.payload }
                    }
                    None => continue,
                },
                None => anyhow::bail!("the heartbeat tasks ended"),
            },
            e = events.recv() => e.unwrap_or(Event::Tick),
            e = role_failed.recv() => {
                if let Some(e) = e {
                    tracing::error!(error = %e, "the replication role failed");
                }
                Event::Tick
            }
            () = tokio::time::sleep_until(deadline.into()) => Event::Tick,
            _ = stop.changed() => break,
        };
        // The replication status is read before the event too: a peer's handover
        // heartbeat must meet this node's current copy state, not the one of the
        // last wake-up (a resync that began and ended since would otherwise still
        // count as running, and the node would refuse a handover it can take).
        actor.poll_replication(&mut engine)?;
        actor.feed(&mut engine, ev)?;
        actor.poll_replication(&mut engine)?;
        actor.show_peer(&engine);
    }
    // The module stops with the agent: application, VIP, then replication.
    actor.feed(&mut engine, Event::Stop)?;
    drop(actor);
    drop(node_checkers);
    for w in witnesses {
        w.abort();
    }
    match tokio::time::timeout(STOP_GRACE, executor).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the executor failed"),
        Err(_) => tracing::error!("the module did not stop in time"),
    }
    heartbeats.stop().await;
    Ok(())
}

struct Actor {
    ctx: Arc<Ctx>,
    exec: mpsc::UnboundedSender<Command>,
    payload: watch::Sender<Beacon>,
    /// The replication status last reported to the engine.
    repl: Option<(bool, bool)>,
    /// The replication phase counter when this node last became SECOND: phases
    /// reached before (in an earlier SECOND period) say nothing about this one.
    phase_base: u64,
    gens: Generations,
    follow_ups: VecDeque<Event>,
    /// The checkers' states as the status last showed them.
    checkers: Vec<CheckerState>,
}

impl Actor {
    /// Hands one event to the engine and performs what it commands, including the
    /// events those commands produce at once (new generations).
    fn feed(&mut self, engine: &mut Engine, ev: Event) -> anyhow::Result<()> {
        self.follow_ups.push_back(ev);
        while let Some(ev) = self.follow_ups.pop_front() {
            // Asked before the engine handles the event, since the start that a
            // `tandem prim` causes also clears it.
            let admin = engine.admin_prim_pending() || matches!(ev, Event::AdminPrim { .. });
            let now = Instant::now();
            for c in engine.handle(now, ev) {
                if let Command::Transition { from, to, .. } = &c {
                    let peer = engine.peer_state().filter(|_| engine.peer_connected(now));
                    if let Some(reason) = classify_failover(*from, *to, admin, peer) {
                        self.ctx.metrics.failover(reason);
                    }
                }
                self.perform(c)?;
            }
        }
        Ok(())
    }

    fn perform(&mut self, c: Command) -> anyhow::Result<()> {
        match c {
            Command::SendHeartbeat(b) => {
                self.payload.send_replace(b);
            }
            Command::Transition { from, to, reason } => {
                // The fields for the journal (TANDEM_FROM, ...) and filters; the
                // message repeats them for whoever reads the plain log.
                tracing::info!(
                    from = from.as_str(),
                    to = to.as_str(),
                    %reason,
                    "state change {} -> {}: {reason}",
                    from.as_str(),
                    to.as_str()
                );
                // `systemctl status` shows the state and why.
                self.ctx
                    .notifier
                    .notify(&super::notify::status_line(&format!(
                        "{}: {reason}",
                        to.as_str()
                    )));
                self.ctx
                    .timeline
                    .transition(from.as_str(), to.as_str(), &reason);
                self.ctx.status.update(|s| {
                    s.state = to;
                    s.reason = reason;
                });
            }
            Command::Note(n) => {
                tracing::info!("{n}");
                self.ctx.timeline.note(&n);
            }
            Command::Persist(m) => store_memory(&self.ctx.cfg.state_dir, &m)
                .context("cannot store the failover memory")?,
            Command::NewGeneration => {
                let g = {
                    let mut store = self
                        .ctx
                        .generations
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    store
                        .start_new()
                        .map_err(|e| anyhow::anyhow!("cannot record a new data generation: {e}"))?;
                    store.get().clone()
                };
                self.gens = g.clone();
                self.follow_ups.push_back(Event::Generations(g));
            }
            other => {
                // The executor lives as long as the actor; a send fails only when
                // it ended with an error, which it logged.
                let _ = self.exec.send(other);
            }
        }
        Ok(())
    }

    /// Tells the engine what the replication layer did on its own: generations
    /// adopted or started, and a SECOND's progress.
    fn poll_replication(&mut self, engine: &mut Engine) -> anyhow::Result<()> {
        let g = self.ctx.generations();
        if g != self.gens {
            self.gens = g.clone();
            self.feed(engine, Event::Generations(g))?;
        }
        let (changes, synced) = self.ctx.status.read(|s| s.replication.phase);
        if engine.state() != State::Second {
            self.repl = None;
            self.phase_base = changes;
            return Ok(());
        }
        let (resyncing, in_sync) = self
            .ctx
            .status
            .read(|s| (s.replication.resyncing, s.replication.in_sync));
        // A lost connection is not news: the last value stands until a new
        // session starts a resync. With the link down, the last phase a session of
        // this SECOND period reached counts: a session that reached sync and ended
        // between two polls (a handover's primary stops right after) must count as
        // in sync, or this node would look unable to run and the handover would be
        // abandoned.
        let now = if resyncing {
            Some((false, true))
        } else if in_sync {
            Some((true, false))
        } else {
            (changes > self.phase_base).then_some(if synced {
                (true, false)
            } else {
                (false, true)
            })
        };
        if let Some(v) = now
            && self.repl != Some(v)
        {
            tracing::debug!(in_sync = v.0, resyncing = v.1, "replication status");
            self.repl = Some(v);
            self.feed(
                engine,
                Event::ReplicationStatus {
                    in_sync: v.0,
                    resyncing: v.1,
                },
            )?;
        }
        Ok(())
    }

    fn show_peer(&mut self, engine: &Engine) {
        let now = Instant::now();
        let connected = engine.peer_connected(now);
        let state = engine.peer_state();
        let up = engine.networks_up(now);
        let peer_can_run = engine.peer_can_run(now);
        let can_run = engine.can_run(now);
        let states = self.checker_states(engine);
        // The list is rebuilt into the status only when a state changed.
        let checkers = (states != self.checkers).then(|| {
            let list = self.checker_list(&states);
            self.checkers = states;
            list
        });
        self.ctx.status.update(|s| {
            s.peer.connected = connected;
            s.peer.state = if connected { state } else { None };
            s.peer.can_run = peer_can_run;
            s.can_run = can_run;
            for (n, up) in s.peer.networks.iter_mut().zip(up) {
                n.up = up;
            }
            if let Some(list) = checkers {
                s.checkers = list;
            }
        });
    }

    /// Every checker's state as the engine knows it, in configuration order.
    fn checker_states(&self, engine: &Engine) -> Vec<CheckerState> {
        let Some(app) = &self.ctx.cfg.application else {
            return Vec::new();
        };
        let running = self.ctx.status.read(|s| s.application.running);
        app.checkers
            .iter()
            .map(|c| match c.scope {
                CheckerScope::Node => match engine.node_check(&c.name) {
                    Some(NodeCheck::Passing) => CheckerState::Ok,
                    Some(NodeCheck::Failing) => CheckerState::Failing,
                    Some(NodeCheck::Pending) | None => CheckerState::Pending,
                },
                CheckerScope::Application if engine.checker_failing(&c.name) => {
                    CheckerState::Failing
                }
                CheckerScope::Application if running => CheckerState::Ok,
                CheckerScope::Application => CheckerState::Idle,
            })
            .collect()
    }

    fn checker_list(&self, states: &[CheckerState]) -> Vec<status::Checker> {
        let Some(app) = &self.ctx.cfg.application else {
            return Vec::new();
        };
        app.checkers
            .iter()
            .zip(states)
            .map(|(c, state)| status::Checker {
                name: c.name.clone(),
                scope: match c.scope {
                    CheckerScope::Node => status::CheckerScope::Node,
                    CheckerScope::Application => status::CheckerScope::Application,
                },
                state: *state,
            })
            .collect()
    }
}

/// Performs the slow commands one after another.
struct Executor {
    ctx: Arc<Ctx>,
    roles: Roles,
    events: mpsc::Sender<Event>,
    /// For drains that must be asked again; weak, so that the executor ends once
    /// the actor is gone and the queue is empty.
    queue: mpsc::WeakUnboundedSender<Command>,
    addresses: Option<Addresses>,
    announcer: Option<JoinHandle<()>>,
    checkers: Option<Checkers>,
    app_running: watch::Sender<bool>,
    /// A previous run of the agent ran the application, which may still run.
    leftover_application: bool,
}

impl Executor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(c) = rx.recv().await {
            tracing::debug!(command = ?c, "executing");
            if let Err(e) = self.perform(c).await {
                tracing::error!(error = format!("{e:#}"), "command failed");
            }
        }
        self.roles.stop().await;
    }

    async fn perform(&mut self, c: Command) -> anyhow::Result<()> {
        match c {
            Command::AddVip => self.add_vip().await?,
            Command::RemoveVip => self.remove_vip().await?,
            Command::AnnounceVip => self.announce(),
            Command::ProbeVip => {
                let someone_answers = self.probe_vip().await;
                let _ = self
                    .events
                    .send(Event::VipProbeResult { someone_answers })
                    .await;
            }
            Command::StartApplication => {
                if std::mem::take(&mut self.leftover_application) {
                    // What the previous agent left running lives under that agent's
                    // barrier, whose listener died with it: its durability calls now
                    // fail. It is stopped, then started under this agent's barrier.
                    tracing::info!(
                        "stopping the application left by the previous run of the agent before starting it"
                    );
                    self.app(Action::Stop).await;
                }
                let ok = self.app(Action::Start).await;
                let _ = self.app_running.send_replace(ok);
                self.ctx.status.update(|s| s.application.running = ok);
                if ok
                    && self.checkers.is_none()
                    && let Some(a) = &self.ctx.cfg.application
                {
                    self.checkers = Some(Checkers::start(
                        &a.checkers,
                        &self.events,
                        &self.app_running.subscribe(),
                        &self.ctx.metrics,
                    ));
                }
                let ev = if ok {
                    Event::AppStarted
                } else {
                    Event::AppStartFailed
                };
                let _ = self.events.send(ev).await;
            }
            Command::StopApplication => {
                self.leftover_application = false;
                let _ = self.app_running.send_replace(false);
                self.checkers = None;
                self.app(Action::Stop).await;
                self.ctx.status.update(|s| s.application.running = false);
                let _ = self.events.send(Event::AppStopped).await;
            }
            Command::ReplicatePrimary | Command::ReplicateAlone => {
                self.roles.set(Kind::Primary).await?;
            }
            Command::ReplicateSecondary { diverged } => {
                if diverged {
                    tracing::warn!(
                        "this node's own changes are kept aside as the primary's data replaces them"
                    );
                }
                self.roles.set(Kind::Secondary).await?;
            }
            Command::ReplicateStop => self.roles.stop().await,
            Command::DrainReplication => {
                let rx = self.roles.drain();
                let events = self.events.clone();
                let queue = self.queue.clone();
                tokio::spawn(async move {
                    if rx.await.unwrap_or(false) {
                        let _ = events.send(Event::Drained).await;
                    } else {
                        // Not yet in sync (or the role is switching): ask again.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Some(q) = queue.upgrade() {
                            let _ = q.send(Command::DrainReplication);
                        }
                    }
                });
            }
            // The actor performs these itself.
            Command::SendHeartbeat(_)
            | Command::Transition { .. }
            | Command::Note(_)
            | Command::Persist(_)
            | Command::NewGeneration => {}
        }
        Ok(())
    }

    /// Runs the application's start or stop command; true when it succeeded (or
    /// there is no application to run).
    async fn app(&self, action: Action) -> bool {
        let Some(a) = &self.ctx.cfg.application else {
            return true;
        };
        let env = app::Env {
            node: self.ctx.cfg.node.clone(),
            peer: self.ctx.cfg.peer.name.clone(),
            state: self.ctx.status.get().state,
        };
        match app::run_command(a, action, &env, &self.ctx.cfg.control_socket).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "application command failed");
                false
            }
        }
    }

    fn vip(&self) -> Option<&Vip> {
        self.ctx.cfg.vip.as_ref()
    }

    fn addresses(&mut self) -> anyhow::Result<&Addresses> {
        if self.addresses.is_none() {
            self.addresses = Some(Addresses::open()?);
        }
        self.addresses
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no netlink handle"))
    }

    async fn add_vip(&mut self) -> anyhow::Result<()> {
        let Some(v) = self.vip().cloned() else {
            return Ok(());
        };
        self.addresses()?
            .add(&v.interface, v.address, v.prefix_len)
            .await?;
        tracing::info!(vip = %v.address, interface = %v.interface, "VIP added");
        self.ctx.status.update(|s| s.vip.held = true);
        Ok(())
    }

    async fn remove_vip(&mut self) -> anyhow::Result<()> {
        if let Some(a) = self.announcer.take() {
            a.abort();
        }
        let Some(v) = self.vip().cloned() else {
            return Ok(());
        };
        if self.addresses()?.remove(&v.interface, v.address).await? {
            tracing::info!(vip = %v.address, interface = %v.interface, "VIP removed");
        }
        self.ctx.status.update(|s| s.vip.held = false);
        Ok(())
    }

    fn announce(&mut self) {
        let Some(v) = self.vip().cloned() else {
            return;
        };
        if let Some(a) = self.announcer.take() {
            a.abort();
        }
        self.announcer = Some(tokio::spawn(async move {
            let config = AnnounceConfig {
                count: v.announce_count,
                interval: v.announce_interval,
                refresh: v.refresh,
            };
            let r = match Announcer::open(&v.interface, v.address) {
                Ok(a) => a.run(config).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot announce the VIP");
            }
        }));
    }

    /// Whether another host answers for the VIP. A probe that cannot be made counts
    /// as an answer: no takeover is safer than a second holder.
    async fn probe_vip(&self) -> bool {
        let Some(v) = self.vip() else {
            return false;
        };
        let config = ProbeConfig {
            count: 2,
            interval: Duration::from_millis(50),
            wait: v.probe_wait,
        };
        match crate::vip::probe(&v.interface, v.address, config).await {
            Ok(ProbeOutcome::Free) => false,
            Ok(o) => {
                tracing::info!(outcome = ?o, vip = %v.address, "the VIP answers");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot probe for the VIP");
                true
            }
        }
    }
}

/// Probes each witness by ARP on the VIP's interface and reports changes.
fn spawn_witnesses(ctx: &Ctx, events: mpsc::Sender<Event>) -> Vec<JoinHandle<()>> {
    let Some(v) = ctx.cfg.vip.clone() else {
        return Vec::new();
    };
    ctx.cfg
        .failover
        .witnesses
        .iter()
        .copied()
        .enumerate()
        .map(|(index, ip)| {
            tokio::spawn(witness(
                index,
                ip,
                v.interface.clone(),
                events.clone(),
                ctx.status.clone(),
            ))
        })
        .collect()
}

async fn witness(
    index: usize,
    ip: IpAddr,
    interface: String,
    events: mpsc::Sender<Event>,
    status: status::Shared,
) {
    let config = ProbeConfig {
        count: 2,
        interval: Duration::from_millis(100),
        wait: Duration::from_millis(200),
    };
    let mut last = None;
    let mut tick = tokio::time::interval(WITNESS_INTERVAL);
    loop {
        tick.tick().await;
        let reachable = match crate::vip::probe(&interface, ip, config).await {
            Ok(ProbeOutcome::Held(_) | ProbeOutcome::Contested(_)) => true,
            Ok(ProbeOutcome::Free) => false,
            Err(e) => {
                tracing::debug!(error = %e, witness = %ip, "cannot probe the witness");
                false
            }
        };
        if last != Some(reachable) {
            if last.is_some() {
                tracing::info!(witness = %ip, reachable, "witness reachability changed");
            }
            last = Some(reachable);
            status.update(|s| {
                if let Some(w) = s.peer.witnesses.get_mut(index) {
                    w.reachable = reachable;
                }
            });
            if events
                .send(Event::Witness { index, reachable })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_round_trips_and_defaults_when_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_memory(dir.path()).expect("load"), Memory::default());
        let m = Memory {
            peer_may_be_newer: false,
            was_running: true,
            consistent: false,
        };
        store_memory(dir.path(), &m).expect("store");
        assert_eq!(load_memory(dir.path()).expect("load"), m);
        std::fs::write(memory_path(dir.path()), b"{not json").expect("write");
        let e = load_memory(dir.path()).expect_err("garbage");
        assert!(
            format!("{e:#}").contains("not a failover memory file"),
            "{e:#}"
        );
    }
}
