//! The agent side of the barrier: one thread that polls every attached listener fd,
//! turns each notification into a [`BarrierRequest`] for the replication actor, and
//! lets the held call run once the request is released or its time is up.
//!
//! Waiting happens in the consumer, not here: the thread only keeps a queue of
//! pending calls in deadline order, so any number of processes can be held at once
//! without one thread each. A [`Releaser`] answers the kernel itself, from the
//! consumer's thread, which saves a wake-up of this thread per call.
//! A per-call flag makes sure each call is answered once, by whichever comes first:
//! the consumer, the timeout or shutdown.

mod io_thread;
mod worker;

use std::{
    fmt,
    ops::Range,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use nix::sys::socket::{MsgFlags, send};

use super::{BarrierError, Durability, notify::Buffers};

/// Tuning of the [`Listener`].
#[derive(Clone, Copy, Debug)]
pub struct ListenerConfig {
    /// A held call that nobody releases runs anyway after this long (the heartbeat
    /// timeout: by then the failover logic considers the peer gone).
    pub release_after: Duration,
    /// How long [`Listener::shutdown`] waits for the thread to finish.
    pub shutdown_grace: Duration,
}

/// The listener thread and the handle to stop it.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    /// The proxy thread ([`io_thread`]) and its end signal.
    proxy: Option<(thread::JoinHandle<()>, mpsc::Receiver<()>)>,
    grace: Duration,
}

/// A cloneable handle that registers new listener fds (for the control socket).
#[derive(Clone, Debug)]
pub struct Registrar {
    shared: Arc<Shared>,
}

/// One held call for the replication actor. Release it once the peer has what it
/// covers; dropping it releases it too.
#[derive(Debug)]
pub struct BarrierRequest {
    pub call: Durability,
    reply: Releaser,
}

/// Lets one held call run. Dropping it has the same effect, so a consumer that
/// crashes or forgets never leaves an application stuck.
pub struct Releaser {
    held: Arc<worker::Held>,
    shared: Arc<Shared>,
}

/// Counters of the listener since it started.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct BarrierStats {
    /// Listener fds currently polled (one per attached process tree).
    pub listeners: u64,
    /// Notifications received.
    pub notifications: u64,
    /// Calls released by their consumer (or by dropping the request).
    pub released: u64,
    /// Calls released because `release_after` passed first.
    pub released_on_timeout: u64,
    /// Calls whose process vanished (killed) before it could be answered.
    pub vanished: u64,
    /// Sum of the time calls were held, in nanoseconds.
    pub wait_ns_total: u64,
    /// Longest time a call was held, in nanoseconds.
    pub wait_ns_max: u64,
    /// Synchronous writes the agent performed for a caller (and then held).
    pub proxied_writes: u64,
    /// Synchronous files the agent opened for a caller into the reserved range.
    pub reserved_opens: u64,
    /// Synchronous files opened for a caller outside the range (its descriptor
    /// limit is too low, or the range is full): their writes are not held.
    pub unreserved_opens: u64,
}

/// State shared by the thread, the handles and the releasers.
#[derive(Debug)]
struct Shared {
    added: Mutex<Vec<(OwnedFd, u32, Range<u32>)>>,
    stop: AtomicBool,
    /// The kernel's `seccomp_notif_resp` size.
    resp_len: usize,
    /// Set while a wake-up byte is in flight, so wake-ups don't fill the socket.
    wake_pending: AtomicBool,
    waker: UnixStream,
    counters: Counters,
    /// Writes the proxy thread performed, for the listener thread to hold.
    written: Mutex<Vec<worker::Wrote>>,
    /// The proxy thread's id (0 until it runs).
    proxy_tid: AtomicU32,
}

#[derive(Debug, Default)]
struct Counters {
    listeners: AtomicU64,
    notifications: AtomicU64,
    released: AtomicU64,
    released_on_timeout: AtomicU64,
    vanished: AtomicU64,
    wait_ns_total: AtomicU64,
    wait_ns_max: AtomicU64,
    proxied_writes: AtomicU64,
    reserved_opens: AtomicU64,
    unreserved_opens: AtomicU64,
}

// === impl Listener ===

impl Listener {
    /// Starts the listener thread. Every notification goes to `requests` as a
    /// [`BarrierRequest`]; if that channel is closed, calls are released at once.
    pub fn start(
        config: ListenerConfig,
        requests: mpsc::Sender<BarrierRequest>,
    ) -> Result<Self, BarrierError> {
        Self::start_with(config, move |r| {
            // A closed channel hands the request back; dropping it releases the call.
            let _ = requests.send(r);
        })
    }

    /// Starts the listener thread, which hands every notification to `consumer`
    /// itself, on its own thread: a consumer that only routes the call (and never
    /// blocks) saves a thread wake-up per call over a channel. Dropping the request
    /// releases the call.
    pub fn start_with(
        config: ListenerConfig,
        consumer: impl FnMut(BarrierRequest) + Send + 'static,
    ) -> Result<Self, BarrierError> {
        let buffers = Buffers::for_running_kernel()?;
        let (waker, wake_rx) = UnixStream::pair().map_err(|error| BarrierError::ControlIo {
            step: "creating the waker",
            error,
        })?;
        for s in [&waker, &wake_rx] {
            s.set_nonblocking(true)
                .map_err(|error| BarrierError::ControlIo {
                    step: "creating the waker",
                    error,
                })?;
        }
        let shared = Arc::new(Shared {
            added: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            resp_len: buffers.resp_len(),
            wake_pending: AtomicBool::new(false),
            waker,
            counters: Counters::default(),
            written: Mutex::new(Vec::new()),
            proxy_tid: AtomicU32::new(0),
        });
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (proxy_done_tx, proxy_done) = mpsc::channel();
        let proxy = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("barrier-io".to_owned())
                .spawn(move || {
                    io_thread::run(&shared, &jobs_rx, &tid_tx);
                    let _ = proxy_done_tx.send(());
                })
                .map_err(BarrierError::Spawn)?
        };
        // Known before start returns, so that capture can be told about it in time.
        if let Ok(tid) = tid_rx.recv() {
            shared.proxy_tid.store(tid, Ordering::Relaxed);
        }
        let (done_tx, done) = mpsc::channel();
        let worker = worker::Worker::new(
            Arc::clone(&shared),
            wake_rx,
            buffers,
            Box::new(consumer),
            config.release_after,
            jobs_tx,
        );
        let thread = thread::Builder::new()
            .name("barrier".to_owned())
            .spawn(move || {
                worker.run();
                let _ = done_tx.send(());
            })
            .map_err(BarrierError::Spawn)?;
        Ok(Self {
            shared,
            thread: Some(thread),
            done,
            proxy: Some((proxy, proxy_done)),
            grace: config.shutdown_grace,
        })
    }

    /// Starts polling a listener fd received from a launcher that reserved no
    /// descriptors (see [`Registrar::add_reserving`]).
    pub fn add(&self, listener: OwnedFd, pid: u32) -> Result<(), BarrierError> {
        self.shared.add(listener, pid, 0..0)
    }

    /// A handle for the control socket to register listeners with.
    pub fn registrar(&self) -> Registrar {
        Registrar {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BarrierStats {
        self.shared.counters.snapshot()
    }

    /// The thread id of the proxy thread, whose writes capture must report although
    /// it belongs to the agent ([`crate::barrier::proxy`]).
    pub fn proxy_thread(&self) -> u32 {
        self.shared.proxy_tid.load(Ordering::Relaxed)
    }

    /// Releases every pending call, closes all listener fds (so later durability
    /// calls of the attached processes fail with `ENOSYS`) and joins the thread.
    /// Returns whether that finished within the grace time.
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let deadline = std::time::Instant::now() + self.grace;
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        let worker_done = join_by(thread, &self.done, deadline, "barrier listener");
        // The listener thread's end dropped the proxy's queue, which ends the proxy
        // once its current call (a write to disk, at most) is done.
        let proxy_done = self
            .proxy
            .take()
            .is_none_or(|(proxy, done)| join_by(proxy, &done, deadline, "barrier proxy"));
        worker_done && proxy_done
    }
}

/// Joins `thread` if it reports on `done` before `deadline`; otherwise leaves it
/// behind, logged. Returns whether it ended cleanly in time.
fn join_by(
    thread: thread::JoinHandle<()>,
    done: &mpsc::Receiver<()>,
    deadline: std::time::Instant,
    name: &str,
) -> bool {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match done.recv_timeout(left) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let joined = thread.join().is_ok();
            if !joined {
                tracing::error!("{name} thread panicked");
            }
            joined
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!("{name} thread did not stop in time; leaving it behind");
            false
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

// === impl Registrar ===

impl Registrar {
    /// Starts polling a listener fd received from a launcher (or from runc) whose
    /// processes reserved no descriptors for synchronous files.
    pub fn add(&self, listener: OwnedFd, pid: u32) -> Result<(), BarrierError> {
        self.shared.add(listener, pid, 0..0)
    }

    /// Starts polling a listener fd whose processes reserved the descriptor
    /// numbers `reserved` for synchronous files ([`crate::barrier::filter::reserved_fds`]).
    pub fn add_reserving(
        &self,
        listener: OwnedFd,
        pid: u32,
        reserved: Range<u32>,
    ) -> Result<(), BarrierError> {
        self.shared.add(listener, pid, reserved)
    }

    /// A snapshot of the listener's counters.
    pub fn stats(&self) -> BarrierStats {
        self.shared.counters.snapshot()
    }

    /// The proxy thread's id (see [`Listener::proxy_thread`]).
    pub fn proxy_thread(&self) -> u32 {
        self.shared.proxy_tid.load(Ordering::Relaxed)
    }
}

// === impl BarrierRequest ===

impl BarrierRequest {
    /// Lets the held call run.
    pub fn release(self) {
        self.reply.release();
    }

    /// Splits the request, e.g. to keep the releaser in a wait table.
    pub fn into_parts(self) -> (Durability, Releaser) {
        (self.call, self.reply)
    }
}

// === impl Releaser ===

impl Releaser {
    /// Lets the held call run.
    pub fn release(self) {
        // Drop does the work.
    }
}

impl Drop for Releaser {
    fn drop(&mut self) {
        self.held.answer(&self.shared, worker::Answer::Released);
    }
}

impl fmt::Debug for Releaser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Releaser")
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn add(&self, listener: OwnedFd, pid: u32, reserved: Range<u32>) -> Result<(), BarrierError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(BarrierError::Stopped);
        }
        self.added
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((listener, pid, reserved));
        // The thread may have stopped between the check and the push; then nobody
        // would ever poll (or close) this fd, so take it back.
        if self.stop.load(Ordering::Acquire) {
            self.added
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            return Err(BarrierError::Stopped);
        }
        self.wake();
        Ok(())
    }

    /// Makes the thread's poll return. Only the first caller since the thread last
    /// drained the socket writes a byte.
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A full socket already holds a wake-up, and a closed one means the thread
            // is gone: neither needs handling. MSG_NOSIGNAL: no SIGPIPE in the latter case.
            let _ = send(
                self.waker.as_raw_fd(),
                &[1],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
        }
    }
}

// === impl Counters ===

impl Counters {
    fn snapshot(&self) -> BarrierStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BarrierStats {
            listeners: get(&self.listeners),
            notifications: get(&self.notifications),
            released: get(&self.released),
            released_on_timeout: get(&self.released_on_timeout),
            vanished: get(&self.vanished),
            wait_ns_total: get(&self.wait_ns_total),
            wait_ns_max: get(&self.wait_ns_max),
            proxied_writes: get(&self.proxied_writes),
            reserved_opens: get(&self.reserved_opens),
            unreserved_opens: get(&self.unreserved_opens),
        }
    }

    fn record_wait(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.wait_ns_total.fetch_add(ns, Ordering::Relaxed);
        self.wait_ns_max.fetch_max(ns, Ordering::Relaxed);
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            release_after: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}
