//! `tandem run`: the agent. One tokio runtime holds the replication task (primary or
//! secondary) and the control socket; capture and the barrier listener are OS
//! threads of their own. Shutdown is one path: SIGINT/SIGTERM flips a watch channel,
//! every task winds down, and what is still running after the grace period is
//! abandoned.
//!
//! ```text
//!  application --(seccomp notif)--> barrier::Listener --BarrierRequest--> bridge
//!                                                                          | flush_for(id)
//!  kernel --(ring, fanotify)--> capture thread --Captured::{Batch,Barrier}--+
//!                                                                          v
//!                                            primary task (replication::primary core)
//!                                                  | QUIC (transport), frames (wire)
//!                                                  v
//!                                            secondary task (replication::secondary core
//!                                                  + apply::Applier) on the peer
//! ```

pub mod capture;
pub mod conflict;
pub mod control;
pub mod link;
pub mod primary;
pub mod secondary;

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc},
    time::Duration,
};

use agent_common::wire::{Generations, Hello, PROTOCOL_VERSION};
use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::{
    barrier::{BarrierRequest, Listener, ListenerConfig},
    config::{Config, PeerPinSpec, Role},
    replication::generation::{GenerationStore, Relation, relate},
    status::{Shared, State, Status},
    transport::{Endpoint, Identity, PeerPin, Timing, TransportError},
};

/// How long the agent waits for its tasks after being asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every task of the agent shares.
pub struct Ctx {
    pub cfg: Config,
    pub status: Shared,
    pub generations: Mutex<GenerationStore>,
    pub endpoint: Endpoint,
    /// Whether this node runs the application (until the failover engine decides).
    pub primary: bool,
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
            primary: self.primary,
            unsure: self.unsure_marker().exists(),
        }
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("tandem")
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(agent(cfg));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

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

/// Whether this node starts as primary.
fn decide_role(cfg: &Config) -> bool {
    match cfg.role {
        Role::Primary => true,
        Role::Secondary => false,
        Role::Auto => match std::fs::read_to_string(cfg.state_dir.join("role")) {
            Ok(s) => s.trim() == "primary",
            // A pair that never ran: the node whose name sorts first starts.
            Err(_) => cfg.node < cfg.peer.name,
        },
    }
}

async fn agent(cfg: Config) -> anyhow::Result<()> {
    let identity = Identity::load(&cfg.identity.certificate, &cfg.identity.key)?;
    let pin = match &cfg.peer.pin {
        PeerPinSpec::Certificate(p) => PeerPin::from_cert_file(p)?,
        PeerPinSpec::Fingerprint(hex) => PeerPin::parse_fingerprint(&format!("sha256:{hex}"))?,
    };
    let timing = Timing {
        keep_alive: cfg.heartbeat.interval,
        idle_timeout: cfg.heartbeat.timeout,
    };
    let endpoint = bind_when_free(&cfg, &identity, &pin, timing).await?;
    let generations = GenerationStore::open(&cfg.state_dir).with_context(|| {
        format!(
            "cannot read the data generations in {}",
            cfg.state_dir.display()
        )
    })?;
    let primary = decide_role(&cfg);
    let _ = std::fs::write(
        cfg.state_dir.join("role"),
        if primary { "primary\n" } else { "secondary\n" },
    );
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
        primary,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });

    // The barrier: held calls go to the bridge, which asks capture for a flush.
    let (breq_tx, breq_rx) = std_mpsc::channel::<BarrierRequest>();
    let listener = Listener::start(
        ListenerConfig {
            release_after: ctx.cfg.heartbeat.timeout,
            shutdown_grace: Duration::from_secs(2),
        },
        breq_tx,
    )?;
    let control = control::serve(
        &ctx.cfg.control_socket,
        ctx.status.clone(),
        listener.registrar(),
    )?;
    // Containers started by Docker through `tandem oci-runtime` hand their seccomp
    // listener to this socket (runc's seccomp agent protocol).
    let runc_socket = ctx.cfg.state_dir.join("seccomp.sock");
    let runc = crate::barrier::runc::serve_runc(&runc_socket, listener.registrar())
        .with_context(|| format!("cannot serve {}", runc_socket.display()))?;

    let result = if primary {
        run_primary(&ctx, breq_rx, stop_rx).await
    } else {
        // A secondary runs no application; a process attached anyway is let through.
        std::thread::spawn(move || {
            for r in breq_rx {
                r.release();
            }
        });
        secondary::run(ctx.clone(), stop_rx).await
    };
    ctx.status.transition(State::Stop, "the agent stopped");
    control.stop();
    runc.stop();
    listener.shutdown();
    result
}

async fn run_primary(
    ctx: &Arc<Ctx>,
    breq_rx: std_mpsc::Receiver<BarrierRequest>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (cap_tx, cap_rx) = mpsc::channel(64);
    let roots = ctx.cfg.replicated.iter().map(|r| r.path.clone()).collect();
    let capture =
        capture::spawn(roots, Duration::from_millis(5), cap_tx).context("cannot start capture")?;
    let capture = Arc::new(capture);
    let waiters: primary::Waiters = Arc::default();
    {
        let waiters = waiters.clone();
        let capture = capture.clone();
        let status = ctx.status.clone();
        std::thread::Builder::new()
            .name("barrier-bridge".into())
            .spawn(move || {
                let mut next = 0u64;
                for r in breq_rx {
                    next += 1;
                    let (_call, releaser) = r.into_parts();
                    waiters
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(next, releaser);
                    status.update(|s| s.replication.barriers += 1);
                    capture.flush_for(next);
                }
            })
            .context("cannot start the barrier bridge")?;
    }
    let task = primary::run(ctx.clone(), cap_rx, waiters.clone(), stop);
    let result = task.await;
    // Nothing waits on a stopped agent: release what is held.
    for (_, r) in waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
    {
        r.release();
    }
    let t = std::thread::spawn(move || capture.stop());
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    while !t.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
