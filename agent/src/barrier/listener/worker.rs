//! The listener thread's loop: poll, receive, hand out, expire; and the held call,
//! which whoever comes first answers exactly once.

use std::{
    collections::VecDeque,
    fmt,
    io::{self, Read},
    ops::Range,
    os::{
        fd::{AsFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{BarrierRequest, Releaser, Shared, io_thread::Job};
use crate::barrier::{
    Durability, FileId, SyncCall,
    call::{Trap, classify, resolve},
    notify::{self, Buffers, Response},
};

/// One call the kernel holds for us.
pub(super) struct Held {
    id: u64,
    pid: u32,
    since: Instant,
    deadline: Instant,
    listener: Arc<Slot>,
    /// How the call is answered when it is let go.
    reply: Response,
    /// Set by the first answer; later ones do nothing.
    answered: AtomicBool,
}

/// Who lets a held call run.
#[derive(Clone, Copy, Debug)]
pub(super) enum Answer {
    Released,
    Shutdown,
    TimedOut,
}

/// The thread's state; only the thread touches it.
pub(super) struct Worker {
    shared: Arc<Shared>,
    wake_rx: UnixStream,
    buffers: Buffers,
    consumer: Box<dyn FnMut(BarrierRequest) + Send>,
    release_after: Duration,
    listeners: Vec<Attached>,
    /// Calls in arrival order, which is deadline order since `release_after` is fixed.
    /// Answered calls stay until they reach the front.
    pending: VecDeque<Arc<Held>>,
    /// The proxy thread's queue ([`super::io_thread`]).
    jobs: std::sync::mpsc::Sender<Job>,
}

/// One listener fd, i.e. one process tree started under the barrier.
struct Attached {
    slot: Arc<Slot>,
    pid: u32,
    /// The descriptor numbers its processes reserved for synchronous files.
    reserved: Range<u32>,
}

/// A listener fd shared with the releasers of its calls. The thread takes it out
/// (closing it) when the processes are gone or at shutdown; releasers then have
/// nothing left to answer.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) fd: RwLock<Option<OwnedFd>>,
}

/// A write the proxy thread performed for a held caller, to be held in turn.
#[derive(Debug)]
pub(super) struct Wrote {
    pub(super) id: u64,
    pub(super) pid: u32,
    pub(super) fd: i32,
    pub(super) ret: i64,
    pub(super) file: FileId,
    pub(super) slot: Arc<Slot>,
}

// === impl Held ===

impl Held {
    /// Lets the call run, unless someone already did.
    pub(super) fn answer(&self, shared: &Shared, how: Answer) {
        if self.answered.swap(true, Ordering::AcqRel) {
            return;
        }
        let counters = &shared.counters;
        let waited = self.since.elapsed();
        counters.record_wait(waited);
        match how {
            Answer::Released | Answer::Shutdown => {
                counters.released.fetch_add(1, Ordering::Relaxed)
            }
            Answer::TimedOut => {
                tracing::warn!(
                    pid = self.pid,
                    ?waited,
                    "durability call released on timeout"
                );
                counters.released_on_timeout.fetch_add(1, Ordering::Relaxed)
            }
        };
        let fd = self
            .listener
            .fd
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(fd) = fd.as_ref() else { return };
        match notify::send_response(fd.as_fd(), self.id, shared.resp_len, self.reply) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                counters.vanished.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, pid = self.pid, "cannot release a durability call")
            }
        }
    }

    fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

// === impl Worker ===

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        wake_rx: UnixStream,
        buffers: Buffers,
        consumer: Box<dyn FnMut(BarrierRequest) + Send>,
        release_after: Duration,
        jobs: std::sync::mpsc::Sender<Job>,
    ) -> Self {
        Self {
            shared,
            wake_rx,
            buffers,
            consumer,
            release_after,
            listeners: Vec::new(),
            pending: VecDeque::new(),
            jobs,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let revents = match self.poll_once() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "barrier poll failed; releasing all calls");
                    break;
                }
            };
            // Shutdown is checked first so that a stop is never starved by traffic.
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            // revents[1..] lines up with the listeners as they were when polled;
            // take_added only appends, so do it after.
            let mut gone = Vec::new();
            for (i, r) in revents.iter().skip(1).enumerate() {
                if r.contains(PollFlags::POLLIN) {
                    self.handle_notification(i);
                }
                if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                    gone.push(i);
                }
            }
            for i in gone.into_iter().rev() {
                self.drop_listener(i);
            }
            if revents.first().is_some_and(|r| !r.is_empty()) {
                self.take_added();
                self.take_written();
            }
            self.expire(Instant::now());
        }
        self.take_written();
        for held in std::mem::take(&mut self.pending) {
            held.answer(&self.shared, Answer::Shutdown);
        }
        // Close every listener now, also those added after the last wake-up, rather
        // than when the last Releaser lets go of its slot or the shared state.
        for l in &self.listeners {
            l.slot
                .fd
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        self.shared
            .added
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.counters.listeners.store(0, Ordering::Relaxed);
    }

    /// Polls the waker and all listeners until something happens or the oldest
    /// call's deadline passes; returns the events, waker first.
    fn poll_once(&self) -> io::Result<Vec<PollFlags>> {
        let timeout = match self.pending.front() {
            None => PollTimeout::NONE,
            Some(held) => {
                // Round up so we never wake just before the deadline and spin.
                let left = held.deadline.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().saturating_add(1))
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        // Only this thread ever writes the slots, so these read guards can't block anyone
        // but releasers, who only read too. A listed slot always holds its fd (it is
        // emptied only as it leaves the list), so the poll entries line up with the list.
        let guards: Vec<_> = self
            .listeners
            .iter()
            .map(|l| l.slot.fd.read().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let mut fds = Vec::with_capacity(guards.len() + 1);
        fds.push(PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN));
        fds.extend(
            guards
                .iter()
                .filter_map(|g| g.as_ref())
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        loop {
            match poll(&mut fds, timeout) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect())
    }

    /// Takes listeners registered by other threads.
    fn take_added(&mut self) {
        // Clear the flag before draining, so a wake-up racing with us is not lost.
        self.shared.wake_pending.store(false, Ordering::Release);
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        let added = std::mem::take(
            &mut *self
                .shared
                .added
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (fd, pid, reserved) in added {
            tracing::info!(pid, "process tree attached to the durability barrier");
            self.listeners.push(Attached {
                slot: Arc::new(Slot {
                    fd: RwLock::new(Some(fd)),
                }),
                pid,
                reserved,
            });
        }
        self.shared
            .counters
            .listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
    }

    /// Receives one notification from listener `index` and hands it to the consumer.
    fn handle_notification(&mut self, index: usize) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let slot = Arc::clone(&listener.slot);
        let reserved = listener.reserved.clone();
        let guard = slot.fd.read().unwrap_or_else(PoisonError::into_inner);
        let Some(listener_fd) = guard.as_ref() else {
            return;
        };
        let n = match self.buffers.receive(listener_fd.as_fd()) {
            Ok(n) => n,
            // ENOENT: the caller was killed between poll and receive.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.shared
                    .counters
                    .vanished
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, pid = listener.pid, "cannot receive a barrier notification");
                return;
            }
        };
        self.shared
            .counters
            .notifications
            .fetch_add(1, Ordering::Relaxed);
        let trap = classify(n.nr, &n.args);
        let (syscall, fd) = match trap {
            Some(Trap::Durable(syscall, fd)) => (syscall, fd),
            Some(Trap::Proxy(call)) => {
                drop(guard);
                // The proxy thread checks validity itself; a send fails only after
                // shutdown began, and then the listener is about to close anyway.
                let _ = self.jobs.send(Job {
                    id: n.id,
                    pid: n.pid,
                    call,
                    reserved,
                    slot,
                });
                return;
            }
            Some(Trap::Pass) | None => {
                if trap.is_none() {
                    tracing::warn!(
                        nr = n.nr,
                        pid = n.pid,
                        "unexpected system call held; releasing it"
                    );
                }
                let _ = notify::send_response(
                    listener_fd.as_fd(),
                    n.id,
                    self.shared.resp_len,
                    Response::Continue,
                );
                return;
            }
        };
        let file = fd.and_then(|f| resolve(n.pid, f));
        // The file came from /proc/<pid>: only trust it if <pid> is still our caller.
        if !notify::id_valid(listener_fd.as_fd(), n.id) {
            self.shared
                .counters
                .vanished
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(guard);
        let call = Durability {
            pid: n.pid,
            syscall,
            fd,
            file,
        };
        self.hold(n.id, slot, call, Response::Continue);
    }

    /// Takes the writes the proxy thread performed and holds each until the peer
    /// has it.
    fn take_written(&mut self) {
        let written = std::mem::take(
            &mut *self
                .shared
                .written
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for w in written {
            let call = Durability {
                pid: w.pid,
                syscall: SyncCall::SyncWrite,
                fd: Some(w.fd),
                file: Some(w.file),
            };
            self.hold(w.id, w.slot, call, Response::Value(w.ret));
        }
    }

    /// Queues a held call behind its deadline and hands it to the consumer.
    fn hold(&mut self, id: u64, slot: Arc<Slot>, call: Durability, reply: Response) {
        let now = Instant::now();
        let held = Arc::new(Held {
            id,
            pid: call.pid,
            since: now,
            deadline: now + self.release_after,
            listener: slot,
            reply,
            answered: AtomicBool::new(false),
        });
        self.pending.push_back(Arc::clone(&held));
        let request = BarrierRequest {
            call,
            reply: Releaser {
                held,
                shared: Arc::clone(&self.shared),
            },
        };
        (self.consumer)(request);
    }

    /// Forgets answered calls at the front and answers those whose time is up.
    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.pending.front() {
            if !front.is_answered() && front.deadline > now {
                break;
            }
            if let Some(held) = self.pending.pop_front() {
                held.answer(&self.shared, Answer::TimedOut);
            }
        }
    }

    /// Forgets a listener whose processes all exited, closing its fd.
    fn drop_listener(&mut self, index: usize) {
        let l = self.listeners.remove(index);
        l.slot
            .fd
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        tracing::info!(pid = l.pid, "process tree left the durability barrier");
        self.shared
            .counters
            .listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
    }
}
