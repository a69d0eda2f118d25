//! The capture actor: one OS thread that owns the capture engine and turns its
//! change stream into wire records for the replication task.
//!
//! Durability points arrive as flush requests; the thread answers each by describing
//! everything captured so far (a forced flush) and then passing the request on, after
//! those records, on the same channel: the replication task therefore sees a barrier
//! exactly behind the changes it must cover.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    thread::JoinHandle,
    time::Instant,
};

use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::mpsc;

use crate::{
    capture::{
        engine::{Engine, Settings},
        index::RootId,
    },
    metrics::CaptureTally,
    replication::{
        primary::WaiterId,
        ship::{Batch, Shipper},
    },
};

/// What the capture thread hands to the replication task, in stream order.
#[derive(Debug)]
pub enum Captured {
    /// Capture is armed: every change from now on is reported. A resync compare
    /// must not start before this, or changes made in between would be missed.
    Armed,
    Batch(Batch),
    /// Everything captured before this durability call is in earlier batches.
    Barrier(WaiterId),
    /// Capture could not start or stopped: the node cannot protect data.
    Failed(String),
}

/// The handle the rest of the agent keeps.
pub struct CaptureHandle {
    flush_tx: std_mpsc::Sender<WaiterId>,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl CaptureHandle {
    /// Asks for everything captured so far to be described, then `id` to be passed on.
    pub fn flush_for(&self, id: WaiterId) {
        if self.flush_tx.send(id).is_ok() {
            let _ = self.wake.write(1);
        }
    }

    /// Stops the thread and waits for it (detaching the probes takes a few seconds).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        let t = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// How many capture rounds an entry's attributes are looked for under its next name.
const ATTR_ROUNDS: u32 = 200;

/// How many rounds a durability point may take to catch files that moved on while
/// their data was read.
const SETTLE_ROUNDS: usize = 4;

/// Starts capture of `roots`; records go to `tx`, the engine's event counts to
/// `tally`.
pub fn spawn(
    settings: Settings,
    tx: mpsc::Sender<Captured>,
    tally: CaptureTally,
) -> std::io::Result<CaptureHandle> {
    let (flush_tx, flush_rx) = std_mpsc::channel::<WaiterId>();
    let wake = Arc::new(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let wake = wake.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || run(settings, &tx, &flush_rx, &wake, &stop, tally))?
    };
    Ok(CaptureHandle {
        flush_tx,
        wake,
        stop,
        thread: std::sync::Mutex::new(Some(thread)),
    })
}

fn run(
    settings: Settings,
    tx: &mpsc::Sender<Captured>,
    flush_rx: &std_mpsc::Receiver<WaiterId>,
    wake: &EventFd,
    stop: &AtomicBool,
    mut tally: CaptureTally,
) {
    let tick = settings.tick;
    let mut engine = match Engine::start(settings) {
        Ok(e) => e,
        Err(e) => {
            let _ = tx.blocking_send(Captured::Failed(format!("{e}")));
            return;
        }
    };
    let canonical: Vec<PathBuf> = engine
        .index()
        .roots()
        .iter()
        .map(|r| r.canonical.clone())
        .collect();
    let mut shipper = Shipper::new(canonical);
    let mut attrs_later: Vec<(RootId, u64, u32)> = Vec::new();
    tracing::info!("capture armed");
    if tx.blocking_send(Captured::Armed).is_err() {
        return;
    }
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if let Err(e) = engine.wait_events_with(Some(wake.as_fd()), tick) {
            let _ = tx.blocking_send(Captured::Failed(format!("{e}")));
            return;
        }
        // Drain the wake-up counter; its value does not matter.
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from a non-blocking eventfd.
        let _ = unsafe { libc::read(wake.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        let barriers: Vec<WaiterId> = flush_rx.try_iter().collect();
        for id in &barriers {
            super::hops::mark("capture_woke", *id, 0);
        }
        let force = !barriers.is_empty() || stopping;
        let mut rounds = if force { SETTLE_ROUNDS } else { 1 };
        while rounds > 0 {
            rounds -= 1;
            let now = Instant::now();
            let step = if force {
                engine.flush_now(&mut shipper, now)
            } else {
                engine.step(&mut shipper, now)
            };
            tally.publish(engine.counters());
            if let Err(e) = step {
                let _ = tx.blocking_send(Captured::Failed(format!("{e}")));
                return;
            }
            // Entries whose attributes could not be read under their recorded name:
            // described under the name the stream gives them now.
            // The stream may give them their next name only in a later round, so
            // they are retried for a while.
            attrs_later.extend(
                shipper
                    .take_attrs_later()
                    .into_iter()
                    .map(|(r, i)| (r, i, 0)),
            );
            attrs_later.retain_mut(|(root, ino, tries)| {
                let done = engine
                    .path_of_ino(*root, *ino)
                    .is_none_or(|(r, rel)| shipper.push_attrs(r, &rel, Some(*ino)));
                *tries += 1;
                if !done && *tries >= ATTR_ROUNDS {
                    // Not silent: the peer's copy of this entry may keep other
                    // attributes until its next change or a resync.
                    tracing::warn!(
                        root = *root,
                        ino = *ino,
                        "attributes of an entry could not be read under any later name"
                    );
                }
                !done && *tries < ATTR_ROUNDS
            });
            let moved_on = shipper.take_moved_on();
            let again = !moved_on.is_empty();
            for (root, ino) in moved_on {
                engine.verify_later(root, ino);
            }
            let batch = shipper.take();
            if !batch.records.is_empty() && tx.blocking_send(Captured::Batch(batch)).is_err() {
                return;
            }
            if !again {
                break;
            }
        }
        if !barriers.is_empty() {
            shipper.barrier_follows();
        }
        for id in barriers {
            super::hops::mark("capture_done", id, 0);
            if tx.blocking_send(Captured::Barrier(id)).is_err() {
                return;
            }
        }
        if stopping {
            return;
        }
    }
}
