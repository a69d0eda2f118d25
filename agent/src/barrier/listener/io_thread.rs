//! The proxy thread: performs the calls the listener can't answer by waiting
//! (synchronous opens and writes, see [`crate::barrier::proxy`]), off the listener
//! thread, since they wait for the disk. Opens are answered here; a write goes
//! back to the listener thread, which holds its result like any durability call.

use std::{
    ops::Range,
    os::fd::AsFd,
    sync::{Arc, PoisonError, atomic::Ordering, mpsc},
};

use super::{
    Shared,
    worker::{Slot, Wrote},
};
use crate::barrier::{
    notify::{self, Response},
    proxy::{Call, Outcome, Proxy},
};

/// One trapped call for the proxy thread.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) pid: u32,
    pub(super) call: Call,
    /// The caller's reserved descriptor numbers.
    pub(super) reserved: Range<u32>,
    pub(super) slot: Arc<Slot>,
}

/// The thread's body: sets up the proxy, reports the thread's id on `tid`, then
/// serves jobs until the listener thread drops its sender.
pub(super) fn run(shared: &Shared, jobs: &mpsc::Receiver<Job>, tid: &mpsc::Sender<u32>) {
    let _ = tid.send(nix::unistd::gettid().as_raw() as u32);
    let mut proxy = match Proxy::new() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the barrier's proxy thread; synchronous writes will not wait for the peer");
            None
        }
    };
    for job in jobs {
        let guard = job.slot.fd.read().unwrap_or_else(PoisonError::into_inner);
        let Some(listener) = guard.as_ref() else {
            continue;
        };
        let outcome = match proxy.as_mut() {
            Some(p) => p.perform(listener.as_fd(), job.id, job.pid, job.call, &job.reserved),
            None => Outcome::Respond(Response::Continue),
        };
        let counters = &shared.counters;
        match outcome {
            Outcome::Respond(response) => {
                match notify::send_response(listener.as_fd(), job.id, shared.resp_len, response) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        counters.vanished.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, pid = job.pid, "cannot answer a proxied call")
                    }
                }
            }
            Outcome::Answered { reserved: true } => {
                counters.reserved_opens.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Answered { reserved: false } => {
                tracing::warn!(
                    pid = job.pid,
                    "a synchronous file was opened outside the reserved descriptors (limit too low or range full); its writes will not wait for the peer"
                );
                counters.unreserved_opens.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Vanished => {
                counters.vanished.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Wrote { fd, ret, file } => {
                drop(guard);
                counters.proxied_writes.fetch_add(1, Ordering::Relaxed);
                shared
                    .written
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Wrote {
                        id: job.id,
                        pid: job.pid,
                        fd,
                        ret,
                        file,
                        slot: job.slot,
                    });
                shared.wake();
            }
        }
    }
}
