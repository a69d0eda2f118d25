//! The demo's workload: a thread inside the lab's client namespace that sends
//! `WRITE <id>` to the VIP every few milliseconds, one connection per write, and
//! records which writes were acknowledged and by which node. Acknowledged ids are
//! what must survive; the times of the answers measure the outages.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsFd,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;

/// How long a connection attempt may take; short, so that attempts keep coming
/// while nobody holds the VIP and the outage is measured finely.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the answer may take: longer than the heartbeat timeout, the longest a
/// durability call can be held while the peer disappears.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// One write attempt.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    /// The write's id.
    pub(crate) id: u64,
    /// When the answer (or the failure) came.
    pub(crate) done: Instant,
    /// The node that acknowledged it; `None` when it was not acknowledged.
    pub(crate) acked_by: Option<String>,
}

/// The running workload.
pub(crate) struct Client {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Starts writing to `target` from namespace `netns`, one write every `every`.
    pub(crate) fn start(netns: &str, target: SocketAddr, every: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let path = crate::lab::netns::handle(netns);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (flag, attempts) = (stop.clone(), log.clone());
        let thread = std::thread::Builder::new()
            .name("demo-client".into())
            .spawn(move || {
                // Namespaces are per thread: only this one moves into the client's.
                let entered = std::fs::File::open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|ns| {
                        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("cannot enter {}: {e}", path.display()))
                    });
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    run(target, every, &flag, &attempts);
                }
            })
            .context("cannot start the client thread")?;
        let entered = ready_rx
            .recv()
            .context("the client thread ended before it started")?;
        let mut client = Self {
            stop,
            log,
            thread: Some(thread),
        };
        if let Err(e) = entered {
            client.halt();
            anyhow::bail!("the client cannot enter its namespace: {e}");
        }
        Ok(client)
    }

    /// A copy of every attempt so far.
    pub(crate) fn attempts(&self) -> Vec<Attempt> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The node that acknowledged the latest acknowledged write, if any.
    pub(crate) fn last_acked_by(&self) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().rev().find_map(|a| a.acked_by.clone())
    }

    /// Stops writing and returns every attempt.
    pub(crate) fn stop(mut self) -> Vec<Attempt> {
        self.halt();
        self.attempts()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread only loops over plain I/O; a panic there leaves the log
            // as it was, which is all the demo reads.
            let _ = t.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The client loop: one write every `every` until `stop`.
fn run(target: SocketAddr, every: Duration, stop: &AtomicBool, log: &Mutex<Vec<Attempt>>) {
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        let sent = Instant::now();
        let acked_by = write(target, id);
        let attempt = Attempt {
            id,
            done: Instant::now(),
            acked_by,
        };
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(attempt);
        if let Some(rest) = every.checked_sub(sent.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// Sends `WRITE id`; the node that acknowledged it, if one did.
fn write(target: SocketAddr, id: u64) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).ok()?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    s.write_all(format!("WRITE {id}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    acknowledged_by(&answer, id)
}

/// The node named by an `OK <node> <id>` answer for `id`.
fn acknowledged_by(answer: &str, id: u64) -> Option<String> {
    let mut words = answer.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("OK"), Some(node), Some(n), None) if n.parse() == Ok(id) => Some(node.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_matching_ok_is_an_acknowledgement() {
        assert_eq!(acknowledged_by("OK node2 7\n", 7).as_deref(), Some("node2"));
        assert_eq!(acknowledged_by("OK node2 8\n", 7), None);
        assert_eq!(acknowledged_by("ERR no space\n", 7), None);
        assert_eq!(acknowledged_by("", 7), None);
        assert_eq!(acknowledged_by("OK node2", 7), None);
    }
}
