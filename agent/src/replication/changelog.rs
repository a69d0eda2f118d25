//! The change log: which paths may differ from the peer's copy, kept on disk so that
//! a resync compares only those, also after a crash or reboot of this node.
//!
//! The log starts empty whenever the peer is in sync (its `base` is then the data
//! generation the peer holds) and collects the paths of every record the peer has
//! not made durable: everything while ALONE or resyncing, and the records in flight
//! when the link dropped. It is a file of JSON lines, appended and `fdatasync`ed at
//! every durability point released without the peer and at least every
//! [`FLUSH_EVERY`]; a torn last line (a crash mid-write) is ignored.
//!
//! A crash can still lose the lines written since the last flush, while the page
//! cache may already have written the data they describe, and files may change
//! while no agent runs at all. So each flush also records its time, and at every
//! start each file whose change time is not older than the last flush (minus a
//! margin) is added by a walk of the trees: the inode change time cannot be set by a
//! program, so a change of data or metadata after the flush cannot hide from it.
//!
//! A log is usable for a resync only when the peer still holds `base`, and when no
//! name moved while it was kept (renames, exchanges and links move whole subtrees or
//! join names, which a per-path comparison cannot see); otherwise the resync
//! compares everything.

use std::{
    collections::BTreeSet,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_common::wire::{Record, ScopedPath, WireOp};
use serde::{Deserialize, Serialize};

/// How long changes may stay unflushed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How far before the last flush the change-time walk looks, for clock granularity
/// and writes racing the flush.
const CTIME_MARGIN: Duration = Duration::from_secs(2);

/// More paths than this and a full compare is cheaper to keep than the list.
const MAX_PATHS: usize = 1_000_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// A new log: the peer holds generation `base`.
    Base {
        base: u64,
    },
    Path {
        dir: u16,
        hex: String,
    },
    /// A name moved: only a full compare is right.
    Moved,
    /// Everything above is durable, as of `ms` since the epoch.
    Flushed {
        ms: u64,
    },
    /// The agent stopped cleanly after the last flush.
    Clean,
}

/// The change log of this node.
#[derive(Debug)]
pub struct ChangeLog {
    path: PathBuf,
    file: File,
    base: Option<u64>,
    paths: BTreeSet<ScopedPath>,
    moved: bool,
    overflow: bool,
    pending: Vec<Line>,
    last_flush: Instant,
}

type Instant = std::time::Instant;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ChangeLog {
    /// Opens `<state_dir>/changes.log`. `roots` are the replicated directories by
    /// index; after an unclean stop they are walked for files changed since the last
    /// flush.
    pub fn open(state_dir: &Path, roots: &[PathBuf]) -> std::io::Result<Self> {
        let path = state_dir.join("changes.log");
        let mut log = Self {
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            path,
            base: None,
            paths: BTreeSet::new(),
            moved: false,
            overflow: false,
            pending: Vec::new(),
            last_flush: Instant::now(),
        };
        let (clean, flushed_ms) = log.load()?;
        // Walked after a clean stop too: files may have been changed while no agent
        // ran (an administrator, a process started without the agent).
        if log.base.is_some() {
            let since = flushed_ms.map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + Duration::from_millis(ms));
            let since = since.checked_sub(CTIME_MARGIN).unwrap_or(UNIX_EPOCH);
            for (i, root) in roots.iter().enumerate() {
                let Ok(dir) = u16::try_from(i) else { break };
                let mut found = Vec::new();
                changed_since(root, Vec::new(), since, &mut found);
                tracing::info!(
                    root = %root.display(),
                    files = found.len(),
                    clean,
                    "files changed since the change log's last flush are compared too"
                );
                for p in found {
                    log.add(ScopedPath { dir, path: p });
                }
            }
            log.flush()?;
        }
        Ok(log)
    }

    fn load(&mut self) -> std::io::Result<(bool, Option<u64>)> {
        let mut clean = false;
        let mut flushed = None;
        for line in BufReader::new(File::open(&self.path)?).lines() {
            let Ok(line) = line else { break };
            // A torn last line from a crash: the lines before it are intact.
            let Ok(l) = serde_json::from_str::<Line>(&line) else {
                break;
            };
            clean = false;
            match l {
                Line::Base { base } => {
                    self.base = Some(base);
                    self.paths.clear();
                    self.moved = false;
                    self.overflow = false;
                }
                Line::Path { dir, hex } => match unhex(&hex) {
                    // The root, written by an agent before `add` refused it.
                    Some(path) if path.is_empty() => self.moved = true,
                    Some(path) => {
                        self.insert(ScopedPath { dir, path });
                    }
                    None => self.overflow = true,
                },
                Line::Moved => self.moved = true,
                Line::Flushed { ms } => flushed = Some(ms),
                Line::Clean => clean = true,
            }
        }
        Ok((clean, flushed))
    }

    fn insert(&mut self, p: ScopedPath) -> bool {
        if self.paths.len() >= MAX_PATHS {
            self.overflow = true;
            return false;
        }
        self.paths.insert(p)
    }

    fn add(&mut self, p: ScopedPath) {
        if p.path.is_empty() {
            // The root itself (its attributes, from a resync or a live change): a
            // manifest request may not name it (the peer refuses an empty path as
            // hostile, and would refuse every scoped resync after), so the next
            // resync compares everything.
            self.note_moved();
            return;
        }
        let line = Line::Path {
            dir: p.dir,
            hex: hex(&p.path),
        };
        if self.insert(p) {
            self.pending.push(line);
        }
    }

    /// Starts a new log: the peer is in sync and holds generation `base`.
    pub fn reset(&mut self, base: u64) -> std::io::Result<()> {
        // Rewritten, not appended: the old paths no longer matter.
        let tmp = self.path.with_extension("log.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(
                f,
                "{}",
                serde_json::to_string(&Line::Base { base }).map_err(std::io::Error::other)?
            )?;
            writeln!(
                f,
                "{}",
                serde_json::to_string(&Line::Flushed { ms: now_ms() })
                    .map_err(std::io::Error::other)?
            )?;
            f.sync_data()?;
        }
        fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.base = Some(base);
        self.paths.clear();
        self.moved = false;
        self.overflow = false;
        self.pending.clear();
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Notes what a record may change at the peer.
    pub fn record(&mut self, r: &Record) {
        if self.base.is_none() {
            return;
        }
        match &r.op {
            WireOp::Barrier => return,
            WireOp::Rename { .. } | WireOp::Exchange { .. } | WireOp::Link { .. } => {
                self.note_moved();
                return;
            }
            _ => {}
        }
        self.add(ScopedPath {
            dir: r.dir,
            path: r.path.clone(),
        });
    }

    /// Notes a path that may differ at the peer (a record it may not have made
    /// durable).
    pub fn note(&mut self, p: ScopedPath) {
        if self.base.is_some() {
            self.add(p);
        }
    }

    /// Notes that a name moved: the next resync compares everything.
    pub fn note_moved(&mut self) {
        if self.base.is_some() && !self.moved {
            self.moved = true;
            self.pending.push(Line::Moved);
        }
    }

    /// Whether anything waits to be flushed.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a periodic flush is due.
    #[must_use]
    pub fn flush_due(&self) -> bool {
        self.is_dirty() && self.last_flush.elapsed() >= FLUSH_EVERY
    }

    /// Writes what was noted and makes it durable.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let mut text = String::new();
        for l in self
            .pending
            .drain(..)
            .chain([Line::Flushed { ms: now_ms() }])
        {
            text.push_str(&serde_json::to_string(&l).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Marks a clean stop (after a flush).
    pub fn close_clean(&mut self) -> std::io::Result<()> {
        self.flush()?;
        let mut text = serde_json::to_string(&Line::Clean).map_err(std::io::Error::other)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }

    /// The paths a resync must compare with a peer holding generation `peer`, or
    /// `None` when only a full compare is right.
    #[must_use]
    pub fn scope_for(&self, peer: u64) -> Option<Vec<ScopedPath>> {
        (self.base == Some(peer) && peer != 0 && !self.moved && !self.overflow)
            .then(|| self.paths.iter().cloned().collect())
    }
}

/// Files and directories under `dir` whose change time is at or after `since`.
fn changed_since(dir: &Path, rel: Vec<u8>, since: SystemTime, out: &mut Vec<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = fs::read_dir(dir) else { return };
    let dev = fs::symlink_metadata(dir).map(|m| m.dev()).unwrap_or(0);
    let since_s = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        let mut p = rel.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(e.file_name().as_bytes());
        if u64::try_from(m.ctime()).unwrap_or(0) >= since_s {
            out.push(p.clone());
        }
        if m.is_dir() && m.dev() == dev {
            changed_since(&e.path(), p, since, out);
        }
    }
}

#[cfg(test)]
mod tests;
