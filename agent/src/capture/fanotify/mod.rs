//! A thin fanotify layer in FID mode: names, renames and metadata changes of whole
//! filesystems, reported as directory handle + name.
//!
//! Neither nix (its reader drops the information records) nor fanotify-rs (it ignores
//! `event_len`) can read FID-mode events, so this module calls libc directly and parses
//! the buffer itself (see [`parse_events`]).
//!
//! How the kernel behaves, measured on 6.18 (research/kernel.md §7):
//! - Events that sit unread merge when they concern the same object, so a mask such as
//!   `FAN_MOVED_FROM | FAN_CREATE` says both happened, not in which order. Treat events
//!   as hints to re-stat `(dir, name)`, not as an ordered log.
//! - Handles of objects that have since been deleted fail `open_by_handle_at` with
//!   `ESTALE`; key state on the directory handle and the name.
//! - Self events on a non-directory (`FAN_DELETE_SELF`, `FAN_MOVE_SELF`, `FAN_ATTRIB` of
//!   an inode with no name in the event) carry only a `FID` record; on a directory they
//!   carry a `DFID_NAME` record with the name `"."`.
//! - `FAN_RENAME` carries the old and the new directory + name in one event.
//!
//! The group is created with [`INIT_FLAGS`] and every filesystem is marked with
//! [`WATCH_MASK`]; kernel 6.18 accepts the whole mask on a `FAN_MARK_FILESYSTEM` mark of
//! ext4 and tmpfs, and refuses procfs and sysfs with `EOPNOTSUPP`.

mod parse;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use libc::{
    FAN_ATTRIB, FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE, FAN_DELETE_SELF, FAN_EVENT_INFO_TYPE_DFID,
    FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FAN_MODIFY, FAN_MOVE_SELF, FAN_MOVED_FROM, FAN_MOVED_TO,
    FAN_ONDIR, FAN_Q_OVERFLOW, FAN_RENAME, FANOTIFY_METADATA_VERSION,
};
pub use parse::{FanEvent, Handle, NamedHandle, ParseError, parse_events};

/// Flags of `fanotify_init(2)`: a notification-only group whose events carry the
/// directory handle + name and the handle of the object itself (`TARGET`), read without
/// blocking and with no queue limit, so that overflow stays an exception.
pub const INIT_FLAGS: libc::c_uint = libc::FAN_CLASS_NOTIF
    | libc::FAN_CLOEXEC
    | libc::FAN_NONBLOCK
    | libc::FAN_UNLIMITED_QUEUE
    | libc::FAN_REPORT_DFID_NAME_TARGET;

/// Events requested on every marked filesystem: names and metadata only.
///
/// Data changes come from the eBPF probes. `FAN_MODIFY` and `FAN_CLOSE_WRITE` are left
/// out on purpose: a filesystem mark would queue one for every write or close on the
/// whole filesystem, watched or not, which is the per-write cost capture must avoid.
/// `FAN_ONDIR` makes directory events visible at all.
pub const WATCH_MASK: u64 = FAN_CREATE
    | FAN_DELETE
    | FAN_RENAME
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_ATTRIB
    | FAN_DELETE_SELF
    | FAN_MOVE_SELF
    | FAN_ONDIR;

/// Size of the read buffer. The largest FID-mode event (three records with 128-byte
/// handles and 255-byte names) is under 1.3 KiB, so one read returns many events.
const READ_BUF_LEN: usize = 64 * 1024;

/// How many `read(2)` calls one [`Fanotify::read`] makes at most, so that a busy
/// filesystem cannot keep the caller in the loop forever; the rest stays queued and the
/// descriptor stays readable for the next `poll`.
const MAX_READS_PER_CALL: usize = 16;

/// When a read leaves more than this much of the buffer unused, the queue was empty at
/// that moment (any event fits in this space), so another read would only say `EAGAIN`.
const DRAINED_SLACK: usize = 4096;

/// `MAX_HANDLE_SZ` from `<linux/exportfs.h>`: the kernel refuses larger handles.
const MAX_HANDLE_SZ: usize = 128;

/// Errors of the fanotify layer.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// `fanotify_init` refused with `EPERM`.
    #[error("fanotify needs root (CAP_SYS_ADMIN)")]
    NeedsRoot,
    /// `fanotify_init` refused with `EINVAL`: the kernel predates one of the flags.
    #[error(
        "the kernel does not support fanotify with FAN_REPORT_DFID_NAME_TARGET (linux 5.17 or later is needed)"
    )]
    KernelTooOld,
    /// `fanotify_init` failed for another reason.
    #[error("cannot create a fanotify group: {0}")]
    Init(#[source] io::Error),
    /// The path to mark could not be opened or inspected.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The path given to [`Fanotify::mark_filesystem`].
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The filesystem cannot encode file handles, so FID mode cannot report its events.
    #[error("the filesystem of {} does not support fanotify file handles ({fstype})", path.display())]
    UnsupportedFilesystem {
        /// The path given to [`Fanotify::mark_filesystem`].
        path: PathBuf,
        /// The filesystem type, by name when known.
        fstype: String,
    },
    /// `fanotify_mark` failed for another reason.
    #[error("cannot watch the filesystem of {}: {source}", path.display())]
    Mark {
        /// The path given to [`Fanotify::mark_filesystem`].
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `read(2)` on the group failed.
    #[error("cannot read fanotify events: {0}")]
    Read(#[source] io::Error),
    /// The kernel returned a buffer this module cannot parse.
    #[error("malformed fanotify event buffer: {0}")]
    Parse(#[from] ParseError),
}

/// The read buffer, aligned like `struct fanotify_event_metadata` so that it matches
/// what the kernel documentation asks for (the parser itself does not need alignment).
#[repr(C, align(8))]
struct ReadBuf([u8; READ_BUF_LEN]);

/// A notification group in FID mode reporting directory handle + name (and the target's FID).
pub struct Fanotify {
    fd: OwnedFd,
    /// One descriptor per marked filesystem, keyed by fsid: `open_by_handle_at` needs a
    /// descriptor on the filesystem the handle belongs to.
    mounts: HashMap<[i32; 2], OwnedFd>,
    buf: Box<ReadBuf>,
}

impl fmt::Debug for Fanotify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanotify")
            .field("fd", &self.fd)
            .field("fsids", &self.mounts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Fanotify {
    /// fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE |
    /// FAN_REPORT_DFID_NAME_TARGET, O_RDONLY | O_LARGEFILE).
    pub fn new() -> Result<Self, FanotifyError> {
        // O_RDONLY | O_LARGEFILE only matters for groups that open descriptors; FID
        // groups never do, but the flags are what the man page asks for.
        let event_f_flags = (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint;
        // SAFETY: fanotify_init takes two integers and touches no memory of ours.
        let raw = unsafe { libc::fanotify_init(INIT_FLAGS, event_f_flags) };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EPERM) => FanotifyError::NeedsRoot,
                Some(libc::EINVAL) => FanotifyError::KernelTooOld,
                _ => FanotifyError::Init(err),
            });
        }
        // SAFETY: `raw` is a descriptor fanotify_init just created; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            fd,
            mounts: HashMap::new(),
            buf: Box::new(ReadBuf([0; READ_BUF_LEN])),
        })
    }

    /// FAN_MARK_ADD | FAN_MARK_FILESYSTEM on the filesystem holding `path`, with
    /// [`WATCH_MASK`]. Also keeps a descriptor on that filesystem (keyed by fsid) for
    /// [`Fanotify::open_handle`].
    ///
    /// Marking a filesystem that is already marked is harmless.
    pub fn mark_filesystem(&mut self, path: &Path) -> Result<(), FanotifyError> {
        let open_err = |source| FanotifyError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mount_fd = open_mount_dir(path).map_err(open_err)?;
        let st = nix::sys::statfs::fstatfs(&mount_fd).map_err(|e| open_err(e.into()))?;
        let fsid = fsid_of(&st);
        // The mark names `mount_fd` (with a NULL path) rather than `path`, so that the
        // marked filesystem is the one the kept descriptor is on even if `path` is
        // replaced in between.
        // SAFETY: a NULL path is documented to mean "the object of dirfd"; `mount_fd`
        // and `self.fd` are live descriptors we own.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                WATCH_MASK,
                mount_fd.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                // EOPNOTSUPP: no export operations; ENODEV: zero fsid; EXDEV: a btrfs
                // subvolume or another fsid that differs from the filesystem root's.
                Some(libc::EOPNOTSUPP | libc::ENODEV | libc::EXDEV) => {
                    FanotifyError::UnsupportedFilesystem {
                        path: path.to_path_buf(),
                        fstype: fs_type_name(st.filesystem_type().0 as u64),
                    }
                }
                _ => FanotifyError::Mark {
                    path: path.to_path_buf(),
                    source: err,
                },
            });
        }
        self.mounts.entry(fsid).or_insert(mount_fd);
        Ok(())
    }

    /// The group's descriptor, to wait for readability with `poll(2)` or an async reactor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is queued without blocking (nothing queued gives `Ok(0)`) and appends
    /// the parsed events to `out`. Returns the number of events appended.
    ///
    /// On a [`FanotifyError::Parse`] error the events parsed before the bad one are in
    /// `out` and the rest of that read is lost: handle it like a queue overflow.
    pub fn read(&mut self, out: &mut Vec<FanEvent>) -> Result<usize, FanotifyError> {
        let start = out.len();
        for _ in 0..MAX_READS_PER_CALL {
            let buf = &mut self.buf.0;
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes, borrowed
            // mutably for the duration of the call.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            let n = match usize::try_from(n) {
                Ok(0) => break,
                Ok(n) => n.min(buf.len()),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(FanotifyError::Read(err)),
                    }
                }
            };
            parse::parse_events_with_fds(&buf[..n], out, close_event_fd)?;
            if n + DRAINED_SLACK < buf.len() {
                break;
            }
        }
        Ok(out.len() - start)
    }

    /// open_by_handle_at(descriptor of the filesystem `h.fsid`, `h`, O_PATH | O_CLOEXEC).
    ///
    /// A directory handle opens as a directory usable with `fstatat` / `openat`. Handles
    /// of deleted objects fail with `ESTALE`; handles of filesystems that were never
    /// marked fail with `ENODEV`.
    pub fn open_handle(&self, h: &Handle) -> io::Result<OwnedFd> {
        let Some(mount_fd) = self.mounts.get(&h.fsid) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no marked filesystem has fsid {:08x}:{:08x}",
                    h.fsid[0], h.fsid[1]
                ),
            ));
        };
        if h.bytes.len() > MAX_HANDLE_SZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("file handle of {} bytes is too long", h.bytes.len()),
            ));
        }
        let mut fh = encode_file_handle(h);
        // SAFETY: `fh` holds a `struct file_handle` (handle_bytes, handle_type, then
        // handle_bytes bytes) in 8-byte-aligned memory, which satisfies the struct's
        // 4-byte alignment; the kernel reads at most handle_bytes bytes after the header,
        // which `encode_file_handle` allocated. `mount_fd` is a live descriptor we own.
        let raw = unsafe {
            libc::open_by_handle_at(
                mount_fd.as_raw_fd(),
                fh.as_mut_ptr().cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor open_by_handle_at just created; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }
}

impl AsFd for Fanotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens a directory on the filesystem of `path`: `path` itself, or its parent when it is
/// not a directory.
///
/// Both `open_by_handle_at` and `fanotify_mark` refuse `O_PATH` descriptors with `EBADF`
/// (measured on 6.18), so the descriptor must be a real open; opening a directory
/// read-only has no side effects, unlike opening a FIFO or a device node.
fn open_mount_dir(path: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOTDIR) => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let fd = open(parent, flags, Mode::empty())?;
            // A file bind-mounted over another filesystem lives elsewhere than its parent.
            let own = fsid_of(&nix::sys::statfs::statfs(path)?);
            if fsid_of(&nix::sys::statfs::fstatfs(&fd)?) != own {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a directory, and on another filesystem than its parent",
                ));
            }
            Ok(fd)
        }
        Err(e) => Err(e.into()),
    }
}

/// The filesystem id as fanotify reports it in its records: `f_fsid` of `statfs(2)`.
fn fsid_of(st: &nix::sys::statfs::Statfs) -> [i32; 2] {
    // SAFETY: glibc's fsid_t is `struct { int __val[2]; }` (repr(C), 8 bytes; transmute
    // checks the size), and every bit pattern is a valid [c_int; 2]. libc keeps the field
    // private, which is the only reason for the transmute.
    unsafe { std::mem::transmute::<libc::fsid_t, [libc::c_int; 2]>(st.filesystem_id()) }
}

/// Lays out `struct file_handle` for `h` in 8-byte words, without unsafe code: the
/// bytes are assembled first, then packed into `u64`s in native byte order.
fn encode_file_handle(h: &Handle) -> Vec<u64> {
    // The caller has checked `bytes.len() <= MAX_HANDLE_SZ`, so it fits in a u32.
    let handle_bytes = u32::try_from(h.bytes.len()).unwrap_or(u32::MAX);
    let mut raw = Vec::with_capacity(8 + h.bytes.len() + 8);
    raw.extend_from_slice(&handle_bytes.to_ne_bytes());
    raw.extend_from_slice(&h.handle_type.to_ne_bytes());
    raw.extend_from_slice(&h.bytes);
    raw.resize(raw.len().div_ceil(8) * 8, 0);
    raw.chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_ne_bytes(w)
        })
        .collect()
}

/// Closes a descriptor that came with an event. FID groups report `FAN_NOFD` for every
/// event, so this normally does nothing.
fn close_event_fd(fd: i32) {
    if fd >= 0 {
        // SAFETY: the kernel installed this descriptor in our table for this event only
        // and handed its ownership to us with the read; nothing else refers to it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// A readable name for a `statfs` magic number, for error messages.
fn fs_type_name(magic: u64) -> String {
    let name = match magic {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x794C_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        0x6969 => "nfs",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x0102_1997 => "9p",
        0x00C3_6400 => "ceph",
        0x4D44 => "vfat",
        0x7371_7368 => "squashfs",
        0x8584_58F6 => "ramfs",
        0x9FA0 => "proc",
        0x6265_6572 => "sysfs",
        0x6367_7270 => "cgroup2",
        0x0027_E0EB => "cgroup",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0xCAFE_4A11 => "bpf",
        0x7363_6673 => "securityfs",
        0x0187 => "autofs",
        0x1CD1 => "devpts",
        0x5345_4D41 => "pipefs",
        0x6E73_6673 => "nsfs",
        _ => return format!("filesystem magic {magic:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod live_tests;
