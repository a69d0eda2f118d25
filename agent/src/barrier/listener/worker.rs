//! The listener thread's loop: poll, receive, hand out, release, expire.

use std::{
    collections::HashMap,
    io::{self, Read},
    os::{
        fd::{AsFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::{Arc, PoisonError, atomic::Ordering, mpsc},
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{BarrierRequest, Key, Releaser, Shared};
use crate::barrier::{
    Durability,
    call::{classify, resolve},
    notify::{self, Buffers},
};

/// The thread's state; only the thread touches it.
pub(super) struct Worker {
    shared: Arc<Shared>,
    wake_rx: UnixStream,
    buffers: Buffers,
    requests: mpsc::Sender<BarrierRequest>,
    release_after: Duration,
    listeners: Vec<Attached>,
    pending: HashMap<Key, Pending>,
    next_serial: u64,
}

/// One listener fd, i.e. one process tree started under the barrier.
struct Attached {
    serial: u64,
    fd: OwnedFd,
    pid: u32,
}

/// A call the kernel holds for us.
struct Pending {
    since: Instant,
    deadline: Instant,
    pid: u32,
}

// === impl Worker ===

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        wake_rx: UnixStream,
        buffers: Buffers,
        requests: mpsc::Sender<BarrierRequest>,
        release_after: Duration,
    ) -> Self {
        Self {
            shared,
            wake_rx,
            buffers,
            requests,
            release_after,
            listeners: Vec::new(),
            pending: HashMap::new(),
            next_serial: 0,
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
            if revents.first().is_some_and(|r| !r.is_empty()) {
                self.handle_wake();
            }
            // revents[1..] lines up with the listeners as they were when polled;
            // handle_wake only appends, so the indices still hold.
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
            self.expire(Instant::now());
        }
        self.release_all();
        // Listeners registered after the last wake-up: close them now rather than when
        // the last Releaser lets go of the shared state.
        self.shared
            .added
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.counters.listeners.store(0, Ordering::Relaxed);
        // Dropping self closes every listener fd.
    }

    /// Polls the waker and all listeners until something happens or the next
    /// deadline passes; returns the events, waker first.
    fn poll_once(&self) -> io::Result<Vec<PollFlags>> {
        let timeout = match self.pending.values().map(|p| p.deadline).min() {
            None => PollTimeout::NONE,
            Some(deadline) => {
                // Round up so we never wake just before the deadline and spin.
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = left.as_millis().saturating_add(1);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = Vec::with_capacity(self.listeners.len() + 1);
        fds.push(PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN));
        fds.extend(
            self.listeners
                .iter()
                .map(|l| PollFd::new(l.fd.as_fd(), PollFlags::POLLIN)),
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

    /// Takes new listeners and releases queued by other threads.
    fn handle_wake(&mut self) {
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
        for (fd, pid) in added {
            self.next_serial += 1;
            tracing::info!(pid, "process tree attached to the durability barrier");
            self.listeners.push(Attached {
                serial: self.next_serial,
                fd,
                pid,
            });
        }
        self.shared
            .counters
            .listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
        let releases = std::mem::take(
            &mut *self
                .shared
                .releases
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for key in releases {
            self.release(key, false);
        }
    }

    /// Receives one notification from listener `index` and hands it to the consumer.
    fn handle_notification(&mut self, index: usize) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let serial = listener.serial;
        let n = match self.buffers.receive(listener.fd.as_fd()) {
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
        let key = Key {
            listener: serial,
            id: n.id,
        };
        let now = Instant::now();
        self.pending.insert(
            key,
            Pending {
                since: now,
                deadline: now + self.release_after,
                pid: n.pid,
            },
        );
        let Some((syscall, fd)) = classify(n.nr, &n.args) else {
            tracing::warn!(
                nr = n.nr,
                pid = n.pid,
                "unexpected system call held; releasing it"
            );
            self.release(key, false);
            return;
        };
        let file = fd.and_then(|fd| resolve(n.pid, fd));
        // The file came from /proc/<pid>: only trust it if <pid> is still our caller.
        if !notify::id_valid(listener.fd.as_fd(), n.id) {
            self.pending.remove(&key);
            self.shared
                .counters
                .vanished
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let call = Durability {
            pid: n.pid,
            syscall,
            fd,
            file,
        };
        let request = BarrierRequest {
            call,
            reply: Releaser {
                key,
                shared: Arc::clone(&self.shared),
            },
        };
        // A closed channel hands the request back; dropping it queues its release.
        let _ = self.requests.send(request);
    }

    /// Lets the call behind `key` run, if it is still pending.
    fn release(&mut self, key: Key, timed_out: bool) {
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let counters = &self.shared.counters;
        counters.record_wait(p.since.elapsed());
        if timed_out {
            counters.released_on_timeout.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pid = p.pid, waited = ?p.since.elapsed(), "durability call released on timeout");
        } else {
            counters.released.fetch_add(1, Ordering::Relaxed);
        }
        let Some(listener) = self.listeners.iter().find(|l| l.serial == key.listener) else {
            return;
        };
        match self.buffers.send_continue(listener.fd.as_fd(), key.id) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                counters.vanished.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, pid = p.pid, "cannot release a durability call"),
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.release(key, true);
        }
    }

    fn release_all(&mut self) {
        let keys: Vec<Key> = self.pending.keys().copied().collect();
        for key in keys {
            self.release(key, false);
        }
    }

    /// Forgets a listener whose processes all exited.
    fn drop_listener(&mut self, index: usize) {
        let l = self.listeners.remove(index);
        tracing::info!(pid = l.pid, "process tree left the durability barrier");
        self.pending.retain(|k, _| k.listener != l.serial);
        self.shared
            .counters
            .listeners
            .store(self.listeners.len() as u64, Ordering::Relaxed);
    }
}
