//! The secondary's applier: replays the primary's [`Record`](agent_common::wire::Record)s,
//! in order, on its own copy of one replicated directory.
//!
//! ```text
//!  WireOp --validate--> path bytes ok? --locate--> openat2(root, parent, BENEATH|NO_SYMLINKS|..)
//!                                                      |
//!                            *at syscalls on (parent fd, final name), never following it
//! ```
//!
//! Whatever the peer sends, nothing outside the root is touched: see `confined.rs` for
//! how paths are resolved. A record that tries is reported as
//! [`ApplyError::Hostile`], after which the caller drops the connection; ordinary
//! failures (a write to a file that is not there) are [`ApplyError::Io`].
//!
//! Operations are idempotent where a crash or a resync can leave the copy ahead of
//! the stream: a `Create` replaces a leftover entry of the same name, a `Remove` of
//! an absent entry succeeds, a `Rename` or `Link` replaces what its target names.

mod attrs;
mod cache;
mod confined;
mod manifest;
mod ops;
mod scoped;
mod tree;
mod unsynced;

use std::{
    ffi::CString,
    fs::DirBuilder,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::DirBuilderExt},
    },
    path::Path,
};

use agent_common::wire::WireOp;

pub use self::attrs::{attrs_of, attrs_of_fd};

/// Opens `rel` beneath `root` with the confinement flags (no symlink followed on the
/// way, none at the end with `O_NOFOLLOW`): the primary reads its own trees this way
/// too, which also lifts the `PATH_MAX` limit on the full path.
pub fn open_beneath(
    root: std::os::fd::BorrowedFd<'_>,
    rel: &[u8],
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let c = if rel.is_empty() {
        c".".to_owned()
    } else {
        CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?
    };
    confined::openat2(root, &c, flags | libc::O_CLOEXEC, 0)
}

/// The mode of a replicated root the applier creates.
const ROOT_MODE: u32 = 0o755;

/// Applies records to one replicated directory.
#[derive(Debug)]
pub struct Applier {
    /// The root, `O_PATH | O_DIRECTORY`: every lookup starts here.
    root: OwnedFd,
    /// The root again, readable: `syncfs(2)` refuses `O_PATH` descriptors.
    readable_root: OwnedFd,
    /// Files open for writing.
    files: cache::FileCache,
    /// Makes the temporary names of [`WireOp::Link`] unique.
    link_seq: u64,
    /// What changed since the last sync.
    unsynced: unsynced::Unsynced,
}

/// Why a record was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The peer sent something that would escape the root or is malformed; the
    /// connection should be closed.
    #[error("hostile record for {}: {reason}", path.escape_ascii())]
    Hostile {
        /// The path as sent (cut to its first 512 bytes).
        path: Vec<u8>,
        reason: &'static str,
    },
    /// An ordinary failure of the operation.
    #[error("cannot {op} {}", path.escape_ascii())]
    Io {
        /// What was being done, e.g. `write`.
        op: &'static str,
        path: Vec<u8>,
        #[source]
        source: io::Error,
    },
}

// === impl Applier ===

impl Applier {
    /// Opens (creating it, mode 0755, if missing) the replicated directory `root`.
    pub fn open(root: &Path) -> Result<Self, ApplyError> {
        let raw = root.as_os_str().as_bytes();
        let fail = |op, source| ApplyError::io(op, raw, source);
        DirBuilder::new()
            .recursive(true)
            .mode(ROOT_MODE)
            .create(root)
            .map_err(|e| fail("create root", e))?;
        let croot = CString::new(raw)
            .map_err(|_| fail("open root", io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: `croot` is NUL-terminated; open returns a new descriptor or -1.
        let fd = unsafe {
            libc::open(
                croot.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(fail("open root", io::Error::last_os_error()));
        }
        // SAFETY: open just returned this descriptor; nothing else owns it.
        let root_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let readable_root = confined::openat2(
            root_fd.as_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
        .map_err(|e| fail("open root", e))?;
        Ok(Self {
            root: root_fd,
            readable_root,
            files: cache::FileCache::default(),
            link_seq: 0,
            unsynced: unsynced::Unsynced::default(),
        })
    }

    /// Applies one operation to `path` (relative to the root).
    pub fn apply(&mut self, path: &[u8], op: &WireOp) -> Result<(), ApplyError> {
        if *op == WireOp::Barrier {
            // A barrier names no entry; its path is not looked at.
            return self.sync();
        }
        // Noted before the operation runs: one that fails half-way may still have
        // changed something.
        match op {
            WireOp::Write { .. } => self.unsynced.data(path, false),
            WireOp::Punch { .. } | WireOp::Truncate { .. } => self.unsynced.data(path, true),
            _ => self.unsynced.everything(),
        }
        if path.is_empty()
            && let WireOp::SetAttrs(a) = op
        {
            // The root's own mode, owner and times replicate too; nothing else may
            // name the root.
            attrs::validate(a).map_err(|reason| ApplyError::Hostile {
                path: Vec::new(),
                reason,
            })?;
            return attrs::set(self.root.as_fd(), a)
                .map_err(|e| ApplyError::io("set attributes of", path, e));
        }
        confined::validate(path)?;
        match op {
            WireOp::Write { offset, data } => self.write(path, *offset, data),
            WireOp::Punch { offset, len } => self.punch(path, *offset, *len),
            WireOp::Truncate { size } => self.truncate(path, *size),
            WireOp::Create {
                kind,
                attrs,
                target,
                rdev,
            } => self.create(path, *kind, attrs, target.as_deref(), *rdev),
            WireOp::Remove => self.remove(path),
            WireOp::Rename { new_path } => self.rename(path, new_path, 0),
            WireOp::Exchange { new_path } => self.rename(path, new_path, libc::RENAME_EXCHANGE),
            WireOp::Link { new_path } => self.link(path, new_path),
            WireOp::SetAttrs(attrs) => self.set_attrs(path, attrs),
            WireOp::Barrier => self.sync(),
        }
    }

    /// Makes everything applied so far durable.
    ///
    /// When only the data of a few existing files changed since the last sync
    /// (writes, truncates, holes), it syncs those files: `fdatasync`, or `fsync`
    /// after a truncate or a hole. Otherwise it is one `syncfs(2)` of the root's
    /// filesystem. Tracking every directory whose entries changed (including the
    /// parents of removed and renamed entries, and the directories removed
    /// themselves) to `fsync` each would cost more bookkeeping than it saves; syncfs
    /// covers data and metadata of all of them in one call, and since Linux 5.8 it
    /// reports writeback errors of the filesystem. Its cost is that it also flushes
    /// other writers of the same filesystem, which is why the files' own syncs are
    /// preferred when they suffice.
    pub fn sync(&mut self) -> Result<(), ApplyError> {
        let done = match self.unsynced.take() {
            unsynced::Unsynced::All => self.sync_all(),
            unsynced::Unsynced::Files(files) => self.sync_files(&files),
        };
        if done.is_err() {
            // Whatever did not reach the disk must be tried again, by every means.
            self.unsynced.everything();
        }
        done
    }

    fn sync_all(&self) -> Result<(), ApplyError> {
        // SAFETY: syncfs takes a descriptor we own and touches no memory of ours.
        confined::check(unsafe { libc::syncfs(self.readable_root.as_raw_fd()) })
            .map_err(|e| ApplyError::io("sync", b"", e))
    }

    fn sync_files(&mut self, files: &[(Vec<u8>, bool)]) -> Result<(), ApplyError> {
        for (path, metadata) in files {
            // No name changed since these were written (that would have asked for a
            // syncfs), so the path still names the file written; one that cannot
            // be opened any more (removed behind the applier's back) leaves it to
            // syncfs.
            let Ok(file) = self.data_file("sync", path) else {
                return self.sync_all();
            };
            let synced = if *metadata {
                file.sync_all()
            } else {
                file.sync_data()
            };
            synced.map_err(|e| ApplyError::io("sync", path, e))?;
        }
        Ok(())
    }
}

// === impl ApplyError ===

impl ApplyError {
    fn io(op: &'static str, path: &[u8], source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_vec(),
            source,
        }
    }

    /// Whether the peer is to blame (the connection should be closed).
    #[must_use]
    pub fn is_hostile(&self) -> bool {
        matches!(self, Self::Hostile { .. })
    }
}

#[cfg(test)]
mod tests;
