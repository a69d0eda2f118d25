//! Confinement: peer paths are checked, then resolved beneath the replicated root with
//! `openat2(2)`, so that nothing the peer sends can reach outside it.
//!
//! A path is first checked as bytes (relative, no `.`/`..`/empty component, no NUL,
//! not over [`MAX_PATH_BYTES`]). Its parent directory is then opened with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`
//! relative to the root descriptor: the kernel refuses any symlink on the way
//! (`ELOOP`), any mount crossing (`EXDEV`) and any escape. The final component is
//! then only ever used as a name for `*at` calls on that directory descriptor, never
//! followed.

use std::{
    ffi::{CStr, CString},
    io,
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use agent_common::wire::MAX_PATH_BYTES;

use super::ApplyError;

/// The resolve flags of every lookup under the root.
pub(super) const RESOLVE: u64 = libc::RESOLVE_BENEATH
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;

/// How often a lookup that the kernel answered with `EAGAIN` is retried: openat2 does
/// so with `RESOLVE_BENEATH` when a rename elsewhere on the filesystem raced it.
const EAGAIN_RETRIES: usize = 16;

/// A checked path split into an open parent directory and a final name.
pub(super) struct Located {
    /// The parent directory, an `O_PATH` descriptor.
    pub(super) parent: OwnedFd,
    /// The final component, never empty, never `.` or `..`, without `/` or NUL.
    pub(super) name: CString,
}

/// Checks a peer path as bytes; the error says why it is refused.
pub(super) fn validate(path: &[u8]) -> Result<(), ApplyError> {
    let reason = if path.is_empty() {
        "empty path (the root itself)"
    } else if path.len() > MAX_PATH_BYTES {
        "path longer than MAX_PATH_BYTES"
    } else if path.contains(&0) {
        "path contains a NUL byte"
    } else if path.first() == Some(&b'/') {
        "absolute path"
    } else if let Some(bad) = path.split(|&b| b == b'/').find_map(|c| match c {
        b"" => Some("empty path component"),
        b"." => Some("`.` path component"),
        b".." => Some("`..` path component"),
        _ => None,
    }) {
        bad
    } else {
        return Ok(());
    };
    Err(hostile(path, reason))
}

/// Resolves the parent directory of an already [`validate`]d path beneath `root`.
///
/// A symlink in an intermediate component is hostile: the primary sends the names it
/// sees, which never pass through a symlink.
pub(super) fn locate(root: BorrowedFd<'_>, path: &[u8]) -> Result<Located, ApplyError> {
    let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b"."[..], path),
    };
    let dir = CString::new(dir).map_err(|_| hostile(path, "path contains a NUL byte"))?;
    let name = CString::new(name).map_err(|_| hostile(path, "path contains a NUL byte"))?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let parent = openat2(root, &dir, flags, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => hostile(path, "a symlink in an intermediate component"),
        _ => ApplyError::io("resolve parent of", path, e),
    })?;
    Ok(Located { parent, name })
}

/// `openat2(2)` of `path` beneath `dir` with the confinement flags.
pub(super) fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is three integers (non-exhaustive only for future fields),
    // for which all-zero bytes are a valid value.
    let mut how: libc::open_how = unsafe { MaybeUninit::zeroed().assume_init() };
    how.flags = u64::try_from(flags).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    how.mode = u64::from(mode);
    how.resolve = RESOLVE;
    let mut tries = 0;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` is a live open_how whose size we
        // pass; the kernel reads both and returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
            // SAFETY: openat2 just returned this descriptor; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            _ => return Err(err),
        }
    }
}

/// Opens the entry `name` of `dir` itself as an `O_PATH` descriptor; a symlink is not
/// followed but opened as itself.
pub(super) fn open_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat2(
        dir,
        name,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )
}

/// `fstatat(2)` of `name` in `dir` without following it; `None` when it is absent.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `name` is NUL-terminated and `st` is writable memory of the right size.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: fstatat returned 0, so it filled the (zeroed) structure.
    Ok(Some(unsafe { st.assume_init() }))
}

/// `fstat(2)` of a descriptor (an `O_PATH` one included).
pub(super) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is writable memory of the size fstat fills.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled the (zeroed) structure.
    Ok(unsafe { st.assume_init() })
}

/// Whether a `st_mode` is of the given `S_IF*` type.
pub(super) fn is_type(mode: libc::mode_t, kind: libc::mode_t) -> bool {
    mode & libc::S_IFMT == kind
}

/// Turns a `-1` return into the `errno` error.
pub(super) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The parent descriptor of a [`Located`] as a borrowed fd.
impl AsFd for Located {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.parent.as_fd()
    }
}

/// A hostile-input error; the path is cut to [`HOSTILE_PATH_KEPT`] bytes, as it only
/// goes to a log and a peer may send megabytes of it.
pub(super) fn hostile(path: &[u8], reason: &'static str) -> ApplyError {
    ApplyError::Hostile {
        path: path[..path.len().min(HOSTILE_PATH_KEPT)].to_vec(),
        reason,
    }
}

/// How much of a hostile path an error keeps.
const HOSTILE_PATH_KEPT: usize = 512;
