//! The replication role of this node, as the failover engine commands it: none,
//! primary (capture + the primary task, also while ALONE) or secondary (the
//! secondary task). One role runs at a time; switching stops the running one
//! completely (its task, its capture thread, its held calls) before the next starts.
//!
//! Held durability calls reach the role through [`Gate`]: while a primary runs they
//! wait for the peer, otherwise they are let through at once (nothing is
//! replicated, so nothing can be waited for).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::{
    Ctx,
    capture::{self, CaptureHandle},
    primary, secondary,
};
use crate::{
    barrier::{BarrierRequest, Registrar},
    metrics::{BarrierTimer, Metrics},
    replication::primary::WaiterId,
};

/// How long a role gets to stop before it is abandoned.
const ROLE_GRACE: Duration = Duration::from_secs(10);

/// Something waiting for a durability point: a held call, or a drain.
pub enum Waiter {
    /// An application's durability call, answered by releasing it; the timer
    /// started when it arrived at the gate (`tandem_barrier_wait_seconds`).
    Call(crate::barrier::Releaser, BarrierTimer),
    /// [`Roles::drain`]: told whether the peer held everything when it was released.
    Drain(oneshot::Sender<bool>),
}

/// Held durability points, by id.
pub type Waiters = Arc<Mutex<HashMap<WaiterId, Waiter>>>;

/// Where held calls go: the running primary's capture, or nowhere.
pub struct Gate {
    capture: Mutex<Option<Arc<CaptureHandle>>>,
    waiters: Waiters,
    next: AtomicU64,
    metrics: Metrics,
    /// Set once the listener runs (it needs the gate to start).
    listener: OnceLock<Registrar>,
}

/// How many held calls the barrier listener let run on its own limit, without
/// anyone releasing them: the primary task learns from it that the peer lacks what
/// those calls covered.
#[derive(Clone, Debug, Default)]
pub struct ListenerTimeouts(Option<Registrar>);

impl ListenerTimeouts {
    /// Calls released on the listener's limit since it started.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |r| r.stats().released_on_timeout)
    }

    /// Synchronous files opened outside the reserved descriptors since the
    /// listener started (their writes are not held).
    #[must_use]
    pub fn unreserved_opens(&self) -> u64 {
        self.0.as_ref().map_or(0, |r| r.stats().unreserved_opens)
    }
}

impl Gate {
    #[must_use]
    pub fn new(metrics: Metrics) -> Self {
        Self {
            capture: Mutex::default(),
            waiters: Waiters::default(),
            next: AtomicU64::new(0),
            metrics,
            listener: OnceLock::new(),
        }
    }

    /// The listener whose calls this gate routes, for its counts.
    pub fn watch_listener(&self, listener: Registrar) {
        let _ = self.listener.set(listener);
    }

    /// The barrier's proxy thread, whose writes capture must report.
    fn proxy_threads(&self) -> Vec<u32> {
        self.listener
            .get()
            .map(Registrar::proxy_thread)
            .filter(|&tid| tid != 0)
            .into_iter()
            .collect()
    }

    fn timeouts(&self) -> ListenerTimeouts {
        ListenerTimeouts(self.listener.get().cloned())
    }

    /// Routes an application's held call that just arrived; its wait is timed
    /// from here to its release, whichever path releases it.
    fn route_call(&self, releaser: crate::barrier::Releaser) -> Option<WaiterId> {
        self.route(Waiter::Call(releaser, self.metrics.barrier_timer()))
    }

    /// Routes one held call: waits behind a flush while a primary runs; released
    /// at once otherwise.
    fn route(&self, waiter: Waiter) -> Option<WaiterId> {
        let capture = self
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(capture) = capture else {
            release(waiter, false);
            return None;
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, waiter);
        capture.flush_for(id);
        Some(id)
    }

    /// Lets every held call through (the primary role ended).
    fn release_all(&self) {
        let held: Vec<_> = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in held {
            release(w, false);
        }
    }
}

/// Answers a waiter; `protected`: the peer held what it covers.
pub fn release(w: Waiter, protected: bool) {
    match w {
        Waiter::Call(r, timer) => {
            timer.finish();
            r.release();
        }
        Waiter::Drain(tx) => {
            let _ = tx.send(protected);
        }
    }
}

/// What the barrier listener's thread does with each held call: route it through
/// `gate`. Nothing here blocks (a map insert, an eventfd write, a bounded queue),
/// so it runs on the listener's thread rather than behind one more thread hop.
pub fn router(
    ctx: &Arc<Ctx>,
    gate: Arc<Gate>,
) -> anyhow::Result<impl FnMut(BarrierRequest) + Send + 'static> {
    let status = ctx.status.clone();
    let presync = super::presync::Presync::spawn().context("cannot start the presync thread")?;
    Ok(move |r: BarrierRequest| {
        let (call, releaser) = r.into_parts();
        if let Some(id) = gate.route_call(releaser) {
            super::hops::mark("held", id, 0);
            // The call waits for the peer: meanwhile the local disk can already
            // take the file's data.
            presync.start(&call);
            status.update(|s| s.replication.barriers += 1);
        }
    })
}

/// Which role runs.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Kind {
    None,
    Primary,
    Secondary,
}

/// The running role.
pub struct Roles {
    ctx: Arc<Ctx>,
    gate: Arc<Gate>,
    kind: Kind,
    running: Option<Running>,
    /// Tells the failover actor when a role's task ends on its own (an error).
    failed: mpsc::Sender<String>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    capture: Option<Arc<CaptureHandle>>,
}

impl Roles {
    #[must_use]
    pub fn new(ctx: Arc<Ctx>, gate: Arc<Gate>, failed: mpsc::Sender<String>) -> Self {
        Self {
            ctx,
            gate,
            kind: Kind::None,
            running: None,
            failed,
        }
    }

    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Makes `kind` the running role (nothing happens when it already is).
    pub async fn set(&mut self, kind: Kind) -> anyhow::Result<()> {
        if kind == self.kind && self.running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(());
        }
        self.stop().await;
        self.ctx
            .primary
            .store(kind == Kind::Primary, Ordering::Relaxed);
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = match kind {
            Kind::None => None,
            Kind::Primary => {
                let (cap_tx, cap_rx) = mpsc::channel(64);
                let roots = self
                    .ctx
                    .cfg
                    .replicated
                    .iter()
                    .map(|r| r.path.clone())
                    .collect();
                let mut settings = crate::capture::engine::Settings::new(roots);
                settings.tick = Duration::from_millis(5);
                settings.captured_threads = self.gate.proxy_threads();
                let capture = Arc::new(
                    capture::spawn(settings, cap_tx, self.ctx.metrics.capture_tally())
                        .context("cannot start capture")?,
                );
                *self
                    .gate
                    .capture
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(capture.clone());
                let task = self.watch(primary::run(
                    self.ctx.clone(),
                    cap_rx,
                    self.gate.waiters.clone(),
                    self.gate.timeouts(),
                    stop_rx,
                ));
                Some(Running {
                    stop: stop_tx,
                    task,
                    capture: Some(capture),
                })
            }
            Kind::Secondary => {
                let task = self.watch(secondary::run(self.ctx.clone(), stop_rx));
                Some(Running {
                    stop: stop_tx,
                    task,
                    capture: None,
                })
            }
        };
        self.kind = kind;
        self.running = running;
        Ok(())
    }

    /// Spawns a role's task; an error ending it is reported to the failover actor.
    fn watch(
        &self,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> JoinHandle<anyhow::Result<()>> {
        let failed = self.failed.clone();
        tokio::spawn(async move {
            let r = task.await;
            if let Err(e) = &r {
                let _ = failed.send(format!("{e:#}")).await;
            }
            r
        })
    }

    /// Stops the running role and waits (up to the grace period) for it to end.
    pub async fn stop(&mut self) {
        self.stop_role().await;
        // The replication figures describe the running role only: a SECOND must
        // not inherit a former primary's "in sync".
        self.ctx.status.update(|s| {
            s.replication = crate::status::Replication {
                bytes_total: s.replication.bytes_total,
                barriers: s.replication.barriers,
                released_unprotected: s.replication.released_unprotected,
                ..Default::default()
            };
        });
    }

    async fn stop_role(&mut self) {
        let Some(r) = self.running.take() else {
            self.kind = Kind::None;
            return;
        };
        let _ = r.stop.send(true);
        match tokio::time::timeout(ROLE_GRACE, r.task).await {
            Ok(Ok(Err(e))) => tracing::warn!(
                error = format!("{e:#}"),
                "the replication role ended with an error"
            ),
            Ok(_) => {}
            Err(_) => tracing::error!("the replication role did not stop in time; abandoned"),
        }
        *self
            .gate
            .capture
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        // Nothing replicates any more: what is held is let through.
        self.gate.release_all();
        if let Some(c) = r.capture {
            let t = std::thread::spawn(move || c.stop());
            let deadline = std::time::Instant::now() + ROLE_GRACE;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kind = Kind::None;
    }

    /// Returns once the peer holds everything captured until now (`true`), or
    /// `false` when the primary role does not run or the peer is not in sync.
    pub fn drain(&self) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        if self.kind == Kind::Primary {
            self.gate.route(Waiter::Drain(tx));
        } else {
            let _ = tx.send(false);
        }
        rx
    }
}
