//! The RPO workload: `rpo-writer` (numbered 64-byte records, each made durable with
//! fdatasync before its number is printed) run under a node's durability barrier,
//! and the check that every record it was told is durable is in a copy.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::lab::{Node, tandem_bin};

/// Records numbered in `acked` must all be in `file` (lines `record <n> ...`, in
/// order, as `rpo-writer` writes them).
pub fn check_records(file: &Path, acked: &[u64]) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let present: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .collect();
    for a in acked {
        if present.binary_search(a).is_err() {
            return Err(format!(
                "acknowledged record {a} is missing from {} ({} records there, {} acknowledged)",
                file.display(),
                present.len(),
                acked.len()
            ));
        }
    }
    Ok(())
}

/// One acknowledged record: its number and when the writer reported it durable.
pub type Ack = (u64, Instant);

/// `rpo-writer FILE` running in a node's namespace under its agent's barrier (as
/// the application would, through `tandem exec`), with its acknowledgements
/// collected as they come. Killed (by its pid, a child of this process) on
/// [`Writer::stop`] or when dropped.
pub struct Writer {
    child: Child,
    acks: Arc<Mutex<Vec<Ack>>>,
    reader: Option<JoinHandle<()>>,
    /// The file it appends to, on the node it runs on.
    pub file: PathBuf,
}

impl Writer {
    /// Starts `writer_bin` (the `rpo-writer` binary) on `node`, appending to
    /// `name` in its replicated directory.
    pub fn start(node: &Node, writer_bin: &Path, name: &str) -> Result<Writer, String> {
        let file = node.data_dir.join(name);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.namespace])
            .arg(tandem_bin())
            .arg("exec")
            .arg("-c")
            .arg(&node.config)
            .arg("--")
            .arg(writer_bin)
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", writer_bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the writer has no stdout".into());
        };
        let acks = Arc::new(Mutex::new(Vec::new()));
        let sink = acks.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(n) = line.trim().parse::<u64>() {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((n, Instant::now()));
                }
            }
        });
        Ok(Writer {
            child,
            acks,
            reader: Some(reader),
            file,
        })
    }

    /// The acknowledgements so far.
    #[must_use]
    pub fn acks(&self) -> Vec<Ack> {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many records were acknowledged at or after `t`.
    #[must_use]
    pub fn acked_since(&self, t: Instant) -> usize {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, at)| *at >= t)
            .count()
    }

    /// Whether the writer still runs (it exits when a durability call fails).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the writer and returns every acknowledgement it made.
    pub fn stop(mut self) -> Vec<Ack> {
        self.kill();
        self.acks()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The longest time between consecutive acknowledgements within `[from, to]`,
/// counting from `from` to the first one and from the last one to `to`: how long
/// the writer's durability calls were held at most in that window.
#[must_use]
pub fn longest_stall(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for (_, at) in acks.iter().filter(|(_, at)| *at >= from && *at <= to) {
        longest = longest.max(at.duration_since(last));
        last = *at;
    }
    longest.max(to.saturating_duration_since(last))
}
