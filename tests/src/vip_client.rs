//! A client in the lab's client namespace that connects to the VIP every few
//! milliseconds and records who answered: the measure of a failover's outage and
//! the check that exactly one node serves.

use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    os::fd::AsFd,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One attempt.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    /// The node that answered, `None` when nobody did in time.
    pub answer: Option<String>,
}

/// The running client; [`Client::stop`] returns what it saw.
pub struct Client {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Option<String>>>,
    thread: JoinHandle<Result<Vec<Sample>, String>>,
}

impl Client {
    /// Starts probing `target` from namespace `netns` every `every`.
    #[must_use]
    pub fn start(netns: &str, target: SocketAddr, every: Duration) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let last = Arc::new(Mutex::new(None));
        let latest = last.clone();
        let path = format!("/run/netns/{netns}");
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // Only this thread moves into the client's namespace.
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let answer = ask(target);
                latest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone_from(&answer);
                samples.push(Sample { at, answer });
                if let Some(rest) = every.checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            Ok(samples)
        });
        Client { stop, last, thread }
    }

    /// The latest attempt's answer.
    #[must_use]
    pub fn last_answer(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops probing and returns the samples.
    pub fn stop(self) -> Result<Vec<Sample>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the client thread panicked".to_string())?
    }
}

fn ask(target: SocketAddr) -> Option<String> {
    let timeout = Duration::from_millis(100);
    let mut s = TcpStream::connect_timeout(&target, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The first sample at or after `t0` answered by `node`, and how long after `t0`.
#[must_use]
pub fn first_answer_from(samples: &[Sample], t0: Instant, node: &str) -> Option<Duration> {
    samples
        .iter()
        .find(|s| s.at >= t0 && s.answer.as_deref() == Some(node))
        .map(|s| s.at.duration_since(t0))
}

/// Nodes that answered at or after `from`, in order of first answer.
#[must_use]
pub fn answered_after(samples: &[Sample], from: Instant) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for s in samples.iter().filter(|s| s.at >= from) {
        if let Some(a) = &s.answer
            && !seen.contains(a)
        {
            seen.push(a.clone());
        }
    }
    seen
}
