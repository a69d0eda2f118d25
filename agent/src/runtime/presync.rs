//! Early local flushes of held fsyncs: while a held call waits for the peer, one
//! thread of the agent already writes the file's dirty data to the local disk, so
//! that the application's own fsync, once released, finds little left to do. The
//! call then costs about the longer of the local and the remote flush instead of
//! their sum.
//!
//! The file is opened anew through `/proc/<pid>/fd/<fd>` (a file description of the
//! agent's own), never the application's description: a writeback error consumed
//! here is still reported to the application's fsync, since the kernel reports each
//! error once to every open file description that predates it. Only regular files
//! are opened (through an `O_PATH` descriptor first, which opens nothing), so that a
//! device or a FIFO behind the descriptor is never opened by the agent. Everything
//! here is an optimisation: a failure only means the application's fsync does the
//! work itself.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    sync::mpsc,
};

use crate::barrier::{Durability, SyncCall};

/// How many flushes may wait for the thread; more are skipped (the application's
/// own fsync does the work).
const QUEUE: usize = 64;

/// Hands held calls to the flushing thread.
#[derive(Debug)]
pub struct Presync {
    tx: mpsc::SyncSender<(u32, i32)>,
}

impl Presync {
    /// Starts the flushing thread.
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<(u32, i32)>(QUEUE);
        std::thread::Builder::new()
            .name("presync".into())
            .spawn(move || {
                for (pid, fd) in rx {
                    if let Err(e) = flush(pid, fd) {
                        tracing::trace!(pid, fd, error = %e, "no early flush");
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Starts flushing the file of `call` if it is an fsync or fdatasync.
    pub fn start(&self, call: &Durability) {
        if let (SyncCall::Fsync | SyncCall::Fdatasync, Some(fd)) = (call.syscall, call.fd) {
            // A full queue or a stopped thread: the application's fsync does it all.
            let _ = self.tx.try_send((call.pid, fd));
        }
    }
}

/// Writes the dirty data of the regular file behind `fd` of `pid` to disk.
fn flush(pid: u32, fd: i32) -> std::io::Result<()> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&path)?;
    if !handle.metadata()?.file_type().is_file() {
        return Ok(());
    }
    // Reopened through the O_PATH descriptor, so that what was checked is what is
    // opened even if the application's descriptor changes meanwhile.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The file behind another process's descriptor is flushed, and a descriptor
    /// that is not a regular file is left alone.
    #[test]
    fn flushes_regular_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = File::create(dir.path().join("f")).expect("create");
        f.write_all(b"data").expect("write");
        let pid = std::process::id();
        flush(pid, f.as_raw_fd()).expect("flushed");
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        flush(pid, r.as_raw_fd()).expect("a pipe is skipped");
        assert!(flush(pid, 9999).is_err(), "no such descriptor");
    }
}
