//! `tandem run`: the agent. One tokio runtime holds the failover actor (the engine,
//! heartbeats, the application, the VIP), the replication role it commands (primary
//! or secondary task) and the control socket; capture and the barrier listener are
//! OS threads of their own. Shutdown is one path: SIGINT/SIGTERM flips a watch
//! channel, the actor stops the module (application, VIP, replication) and every
//! task winds down; what is still running after the grace period is abandoned.
//!
//! ```text
//!  application --(seccomp notif)--> barrier::Listener --BarrierRequest--> role::Gate
//!                                                                          | flush_for(id)
//!  kernel --(ring, fanotify)--> capture thread --Captured::{Batch,Barrier}--+
//!                                                                          v
//!                                            primary task (replication::primary core)
//!                                                  | QUIC (transport), frames (wire)
//!                                                  v
//!                                            secondary task (replication::secondary core
//!                                                  + apply::Applier) on the peer
//! ```

pub mod app;
pub mod capture;
pub mod conflict;
pub mod control;
#[cfg(feature = "docker")]
pub mod docker;
pub mod failover;
pub mod hops;
mod lag;
pub mod link;
pub mod node_checks;
pub mod notify;
pub mod presync;
pub mod primary;
pub mod priority;
pub mod role;
pub mod secondary;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agent_common::wire::{Generations, Hello, PROTOCOL_VERSION};
use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::{
    barrier::{Listener, ListenerConfig},
    config::{Config, PeerPinSpec},
    console::Timeline,
    metrics::Metrics,
    replication::generation::{GenerationStore, Relation, relate},
    status::{Shared, State, Status},
    transport::{Endpoint, Identity, PeerPin, Timing, TransportError},
};

/// What every task of the agent shares.
pub struct Ctx {
    pub cfg: Config,
    pub status: Shared,
    pub generations: Mutex<GenerationStore>,
    pub endpoint: Endpoint,
    /// Whether the primary replication role runs (set by [`role::Roles`]).
    pub primary: AtomicBool,
    /// The Prometheus metrics, updated by every actor (served only when
    /// `metrics.listen` is set).
    pub metrics: Metrics,
    /// systemd's notification socket, if the agent runs under systemd.
    pub notifier: notify::Notifier,
    /// The recent transitions and notes the console shows, fed by the failover
    /// actor.
    pub timeline: Timeline,
}

impl Ctx {
    /// Our Hello.
    #[must_use]
    pub fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node: self.cfg.node.clone(),
            dirs: self.cfg.replicated.iter().map(|r| r.name.clone()).collect(),
            generations: self.generations().clone(),
            primary: self.is_primary(),
            unsure: self.unsure_marker().exists(),
        }
    }

    /// How long a primary waits for a connected peer's acknowledgement before giving
    /// it up (and how long a durability call is held at most). A dead peer is found
    /// sooner, by the heartbeat timeout (QUIC's idle timeout is the same); this only
    /// bounds a live but slow one, such as a secondary whose disk takes seconds to
    /// sync, which must not cost the pair its synchronous replication.
    #[must_use]
    pub fn ack_timeout(&self) -> Duration {
        (self.cfg.heartbeat.timeout * 5).max(Duration::from_secs(5))
    }

    /// Whether the primary replication role runs.
    #[must_use]
    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::Relaxed)
    }

    /// Present while this node's copy may hold changes its generations do not
    /// account for (see `Hello::unsure`).
    #[must_use]
    pub fn unsure_marker(&self) -> std::path::PathBuf {
        self.cfg.state_dir.join("copy-unsure")
    }

    #[must_use]
    pub fn generations(&self) -> Generations {
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get()
            .clone()
    }

    /// How our data relates to the peer's.
    #[must_use]
    pub fn relate(&self, peer: &Generations) -> Relation {
        relate(&self.generations(), peer)
    }
}

/// Runs the agent described by the configuration file until SIGINT or SIGTERM.
pub fn run(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("run needs root: it loads eBPF programs and places fanotify marks");
    }
    create_private_dir(&cfg.state_dir)?;
    for r in &cfg.replicated {
        std::fs::create_dir_all(&r.path)
            .with_context(|| format!("cannot create {}", r.path.display()))?;
    }
    let notifier = notify::Notifier::from_env();
    // Before the runtime's threads exist, so that they inherit it.
    if let Err(e) = priority::favour(cfg.heartbeat.nice) {
        tracing::warn!(
            nice = cfg.heartbeat.nice,
            error = %e,
            "cannot set the agent's nice value; heartbeats may be late on a busy machine"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("tandem")
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(agent(cfg, notifier));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The replication link's own liveness, derived from the heartbeat settings but
/// never tighter than [`MIN_LINK_IDLE`]. The failover engine, fed by the
/// heartbeats, decides that the peer is gone and switches the replication role
/// (a PRIM goes ALONE and releases held durability calls); the link's idle timeout
/// is only a backstop for a peer whose agent hangs while its heartbeats go on. A
/// tuned 150 ms heartbeat timeout used as the QUIC idle timeout dropped the link
/// whenever a loaded machine delayed a packet, and every drop cost a resync.
fn link_timing(interval: Duration, heartbeat_timeout: Duration) -> Timing {
    let idle_timeout = heartbeat_timeout.max(MIN_LINK_IDLE);
    Timing {
        keep_alive: interval.min(idle_timeout / 4),
        idle_timeout,
    }
}

/// See [`link_timing`].
const MIN_LINK_IDLE: Duration = Duration::from_secs(1);

/// How much longer than the primary the barrier listener holds a call: time for a
/// busy agent's primary task (it looks every 20 ms) to give its peer up first.
const LISTENER_MARGIN: Duration = Duration::from_secs(1);

fn create_private_dir(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", p.display()))
}

async fn agent(cfg: Config, notifier: notify::Notifier) -> anyhow::Result<()> {
    let identity = Identity::load(&cfg.identity.certificate, &cfg.identity.key)?;
    let pin = match &cfg.peer.pin {
        PeerPinSpec::Certificate(p) => PeerPin::from_cert_file(p)?,
        PeerPinSpec::Fingerprint(hex) => PeerPin::parse_fingerprint(&format!("sha256:{hex}"))?,
    };
    let timing = link_timing(cfg.heartbeat.interval, cfg.heartbeat.timeout);
    let endpoint = bind_when_free(&cfg, &identity, &pin, timing).await?;
    let own = PeerPin::parse_fingerprint(&identity.fingerprint())?.digest();
    let fingerprints = (own, pin.digest());
    let generations = GenerationStore::open(&cfg.state_dir).with_context(|| {
        format!(
            "cannot read the data generations in {}",
            cfg.state_dir.display()
        )
    })?;
    let status = Shared::new(Status {
        node: cfg.node.clone(),
        state: State::Wait,
        reason: "starting".into(),
        peer: crate::status::Peer {
            name: cfg.peer.name.clone(),
            ..Default::default()
        },
        ..Default::default()
    });
    let ctx = Arc::new(Ctx {
        cfg,
        status,
        generations: Mutex::new(generations),
        endpoint,
        primary: AtomicBool::new(false),
        metrics: Metrics::new(),
        notifier: notifier.clone(),
        timeline: Timeline::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let on_stop = notifier.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        on_stop.notify("STOPPING=1");
        let _ = stop_tx.send(true);
    });
    // Bound before the other sockets, so that a taken port stops the agent before
    // it has anything to clean up.
    let metrics = match ctx.cfg.metrics.as_ref() {
        Some(m) => Some(spawn_metrics(&ctx, m.listen, stop_rx.clone()).await?),
        None => None,
    };

    // The barrier: the listener thread routes each held call through the gate,
    // which asks capture for a flush.
    let gate = Arc::new(role::Gate::new(ctx.metrics.clone()));
    let listener = Listener::start_with(
        ListenerConfig {
            // A backstop behind the primary, which gives its peer up (releasing the
            // call, counting it, starting a new data generation) once a call has
            // waited `ack_timeout`: the listener lets a call run on its own only
            // when the agent could not answer it in time.
            release_after: ctx.ack_timeout() + LISTENER_MARGIN,
            shutdown_grace: Duration::from_secs(2),
        },
        role::router(&ctx, gate.clone())?,
    )?;
    gate.watch_listener(listener.registrar());
    let (admin_tx, admin_rx) = mpsc::channel(64);
    let console = match ctx.cfg.console.as_ref() {
        Some(c) => Some(spawn_console(&ctx, c, admin_tx.clone(), stop_rx.clone()).await?),
        None => None,
    };
    let control = control::serve(
        &ctx.cfg.control_socket,
        ctx.status.clone(),
        listener.registrar(),
        admin_tx.clone(),
    )?;
    // Containers started by Docker through `tandem oci-runtime` hand their seccomp
    // listener to this socket (runc's seccomp agent protocol).
    let runc_socket = ctx.cfg.state_dir.join("seccomp.sock");
    let runc = crate::barrier::runc::serve_runc(&runc_socket, listener.registrar())
        .with_context(|| format!("cannot serve {}", runc_socket.display()))?;
    // Every socket is served: `tandem status` and `tandem exec` work from here on,
    // which is what an operator waiting on `systemctl start` expects.
    notifier.notify("READY=1");

    let result = failover::run(
        ctx.clone(),
        gate,
        fingerprints,
        (admin_tx, admin_rx),
        stop_rx,
    )
    .await;
    ctx.status.transition(State::Stop, "the agent stopped");
    // Stopped by the stop watch already unless the actor failed on its own.
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(c) = console {
        c.abort();
    }
    control.stop();
    runc.stop();
    listener.shutdown();
    result
}

/// How long a starting agent waits for its address to be released by a predecessor
/// that is still exiting (a killed agent's sockets close only once the kernel has
/// detached its probes, which takes seconds).
const BIND_PATIENCE: Duration = Duration::from_secs(30);

async fn bind_when_free(
    cfg: &Config,
    identity: &Identity,
    pin: &PeerPin,
    timing: Timing,
) -> anyhow::Result<Endpoint> {
    let deadline = std::time::Instant::now() + BIND_PATIENCE;
    loop {
        match Endpoint::bind(cfg.listen, identity, pin, timing) {
            Ok(e) => return Ok(e),
            Err(TransportError::Bind { error, .. })
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tracing::info!(listen = %cfg.listen, "address in use (a previous agent still exiting?); retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot listen on {}", cfg.listen))
                );
            }
        }
    }
}

/// Binds a TCP endpoint of the agent (`what`, e.g. `metrics.listen`), waiting
/// like the other sockets for a predecessor that is still exiting.
async fn bind_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = std::time::Instant::now() + BIND_PATIENCE;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot listen on {addr} ({what})"))
                );
            }
        }
    }
}

/// Binds the metrics endpoint and serves it until `stop`.
async fn spawn_metrics(
    ctx: &Arc<Ctx>,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = bind_tcp(addr, "metrics.listen").await?;
    tracing::info!(listen = %addr, "serving metrics");
    let (metrics, status) = (ctx.metrics.clone(), ctx.status.clone());
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(listener, metrics, status, stop).await {
            tracing::error!(error = %e, "the metrics endpoint failed");
        }
    }))
}

/// Binds the console and serves it until `stop`; its credentials are read now,
/// so that an unreadable token file stops the agent at start.
async fn spawn_console(
    ctx: &Arc<Ctx>,
    cfg: &crate::config::Console,
    admin: mpsc::Sender<crate::failover::Event>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let credentials = crate::console::Credentials::load(cfg)?;
    let listener = bind_tcp(cfg.listen, "console.listen").await?;
    tracing::info!(listen = %cfg.listen, "serving the console");
    let app = crate::console::App::new(
        ctx.status.clone(),
        ctx.timeline.clone(),
        admin,
        credentials,
        cfg.test_hooks,
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::console::serve(listener, app, stop).await {
            tracing::error!(error = %e, "the console failed");
        }
    }))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_outlives_a_tuned_heartbeat_timeout() {
        let ms = Duration::from_millis;
        let t = link_timing(ms(30), ms(150));
        assert_eq!(t.idle_timeout, MIN_LINK_IDLE);
        assert_eq!(t.keep_alive, ms(30));
        let t = link_timing(ms(500), Duration::from_secs(3));
        assert_eq!(t.idle_timeout, Duration::from_secs(3));
        // Keep-alives stay well inside the idle timeout whatever the interval.
        assert_eq!(t.keep_alive, ms(500));
        let t = link_timing(ms(900), Duration::from_secs(1));
        assert_eq!(t.keep_alive, ms(250));
    }
}
