//! A client in the lab's client namespace that connects to the VIP every few
//! milliseconds and records who answered: the measure of a failover's outage and
//! the check that exactly one node serves; and a writer whose acknowledged writes
//! must all survive.

use std::{
    io::{Read, Write},
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

/// The longest time from a sample that got no answer to the next answered one
/// (zero when every sample was answered): the outage the client saw.
#[must_use]
pub fn longest_outage(samples: &[Sample]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since: Option<Instant> = None;
    let mut last_answered: Option<Instant> = None;
    for s in samples {
        match (&s.answer, since) {
            (None, None) => since = Some(last_answered.unwrap_or(s.at)),
            (Some(_), Some(t)) => {
                longest = longest.max(s.at.duration_since(t));
                since = None;
            }
            _ => {}
        }
        if s.answer.is_some() {
            last_answered = Some(s.at);
        }
    }
    longest
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

/// One write the service acknowledged as durable.
#[derive(Clone, Debug)]
pub struct Ack {
    /// When the request was sent.
    pub at: Instant,
    pub n: u64,
    /// The node that acknowledged it.
    pub node: String,
}

/// A client in the lab's client namespace that makes acknowledged writes through
/// the VIP one after another (the lab service's write port): the RPO workload of
/// the failover scenarios. A write that gets no acknowledgement is simply not
/// counted; the next one gets the next number.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    thread: JoinHandle<Result<(), String>>,
}

impl Writer {
    /// Starts writing to `target` from namespace `netns`, one write at a time with
    /// at least `every` between two.
    #[must_use]
    pub fn start(netns: &str, target: SocketAddr, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let record = acks.clone();
        let path = format!("/run/netns/{netns}");
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let at = Instant::now();
                if let Some(node) = write(target, n) {
                    record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Ack { at, n, node });
                }
                if let Some(rest) = every.checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            Ok(())
        });
        Writer { stop, acks, thread }
    }

    /// How many writes were acknowledged so far.
    #[must_use]
    pub fn acknowledged(&self) -> usize {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How many writes `node` acknowledged so far.
    #[must_use]
    pub fn acknowledged_by(&self, node: &str) -> usize {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|a| a.node == node)
            .count()
    }

    /// Stops writing and returns the acknowledged writes.
    pub fn stop(self) -> Result<Vec<Ack>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the writer thread panicked".to_string())??;
        Ok(std::mem::take(
            &mut *self.acks.lock().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Sends write `n`; the acknowledging node, if it was made durable. A durable write
/// may wait for the peer's acknowledgement, or for a failover to release it, so the
/// answer gets far longer than a probe.
fn write(target: SocketAddr, n: u64) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("{n}\n").as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    let node = words.next()?;
    (words.next()? == n.to_string()).then(|| node.to_string())
}

/// The acknowledged writes missing from `ledger` (the lab service's ledger file in
/// some node's replicated directory).
pub fn missing_acks(acks: &[Ack], ledger: &std::path::Path) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(ledger).map_err(|e| format!("{}: {e}", ledger.display()))?;
    let present: std::collections::HashSet<u64> =
        text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    Ok(acks
        .iter()
        .map(|a| a.n)
        .filter(|n| !present.contains(n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outage_runs_from_the_last_answer_to_the_next() {
        let t0 = Instant::now();
        let at = |ms: u64, a: Option<&str>| Sample {
            at: t0 + Duration::from_millis(ms),
            answer: a.map(str::to_string),
        };
        let samples = [
            at(0, Some("node1")),
            at(20, None),
            at(40, None),
            at(60, Some("node2")),
            at(80, None),
            at(100, Some("node2")),
        ];
        assert_eq!(longest_outage(&samples), Duration::from_millis(60));
        assert_eq!(longest_outage(&samples[..1]), Duration::ZERO);
        // Unanswered to the end: no answer closes it, so it is not counted.
        assert_eq!(longest_outage(&samples[..3]), Duration::ZERO);
    }
}
