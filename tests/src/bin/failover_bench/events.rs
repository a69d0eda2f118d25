//! The timeline of one variant: the client's probes, its neighbour entry for the
//! VIP, and every line the HA managers print, each stamped with CLOCK_MONOTONIC.
//!
//! Network namespaces share CLOCK_MONOTONIC with the root namespace, so instants
//! taken by the prober (in the client's namespace), by the stampers here and by
//! the fault injector are directly comparable.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    thread,
};

/// Nanoseconds of CLOCK_MONOTONIC.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live local;
    // CLOCK_MONOTONIC always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Milliseconds from `t0` to `t` (negative when `t` is earlier).
pub(crate) fn ms_since(t0: u64, t: u64) -> f64 {
    (t as f64 - t0 as f64) / 1e6
}

/// One connection attempt of the client prober.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    /// When the attempt started (before `connect`).
    pub(crate) start: u64,
    /// When it ended (answer read, or failure).
    pub(crate) end: u64,
    /// The node name that answered, or `TIMEOUT`, `REFUSED`, `ERR:<errno>`.
    pub(crate) result: String,
}

/// A change of the client's neighbour entry for the VIP.
#[derive(Clone, Debug)]
pub(crate) struct Neigh {
    pub(crate) t: u64,
    /// The link-layer address, if the entry has one.
    pub(crate) mac: Option<String>,
}

/// One line printed by a node's HA manager.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub(crate) t: u64,
    /// 0 for node1, 1 for node2.
    pub(crate) node: usize,
    pub(crate) text: String,
}

/// Everything recorded during one variant, shared between the reader threads and
/// the measuring loop.
#[derive(Default)]
pub(crate) struct Events {
    probes: Mutex<Vec<Probe>>,
    neigh: Mutex<Vec<Neigh>>,
    lines: Mutex<Vec<Line>>,
}

/// Locks `m`, ignoring poisoning: a reader thread that panicked leaves complete
/// entries behind (each push is one operation), so the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Events {
    pub(crate) fn push_probe(&self, p: Probe) {
        lock(&self.probes).push(p);
    }

    pub(crate) fn push_neigh(&self, n: Neigh) {
        lock(&self.neigh).push(n);
    }

    pub(crate) fn push_line(&self, l: Line) {
        lock(&self.lines).push(l);
    }

    /// Probes that ended at or after `since`, in the order they ended.
    pub(crate) fn probes_since(&self, since: u64) -> Vec<Probe> {
        let mut v: Vec<Probe> = lock(&self.probes)
            .iter()
            .filter(|p| p.end >= since)
            .cloned()
            .collect();
        v.sort_by_key(|p| p.end);
        v
    }

    /// Neighbour changes at or after `since`.
    pub(crate) fn neigh_since(&self, since: u64) -> Vec<Neigh> {
        lock(&self.neigh)
            .iter()
            .filter(|n| n.t >= since)
            .cloned()
            .collect()
    }

    /// Lines of `node` at or after `since`.
    pub(crate) fn lines_since(&self, node: usize, since: u64) -> Vec<Line> {
        lock(&self.lines)
            .iter()
            .filter(|l| l.node == node && l.t >= since)
            .cloned()
            .collect()
    }

    /// Drops probes that ended before `before`: a variant makes about a hundred a
    /// second, and only the current run's are ever looked at again.
    pub(crate) fn forget_probes_before(&self, before: u64) {
        lock(&self.probes).retain(|p| p.end >= before);
    }
}

/// Reads `r` line by line on a thread, stamping each line on arrival, giving it to
/// `sink` and appending it (with its stamp) to `log`.
pub(crate) fn stamp_lines(
    r: impl Read + Send + 'static,
    log: &Path,
    sink: impl Fn(u64, String) + Send + 'static,
) -> anyhow::Result<()> {
    let mut file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", log.display()))?;
    let name: PathBuf = log.to_path_buf();
    thread::Builder::new()
        .name(format!("stamp {}", name.display()))
        .spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let t = now_ns();
                let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
                let _ = writeln!(file, "{t} {text}");
                sink(t, text);
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start a reader thread: {e}"))?;
    Ok(())
}

/// Stamps both output pipes of `child` as node `node`'s lines (passed through
/// `clean`) into `events`, and appends them to `log`.
pub(crate) fn stamp_child(
    child: &mut std::process::Child,
    log: &Path,
    events: &std::sync::Arc<Events>,
    node: usize,
    clean: fn(&str) -> String,
) -> anyhow::Result<()> {
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let events = std::sync::Arc::clone(events);
        stamp_lines(pipe, log, move |t, text| {
            events.push_line(Line {
                t,
                node,
                text: clean(&text),
            });
        })?;
    }
    Ok(())
}
