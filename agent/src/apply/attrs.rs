//! Entry attributes: reading them on the primary ([`attrs_of`]) and setting them
//! exactly on the secondary ([`set`]).
//!
//! The secondary works on an `O_PATH` descriptor of the entry, never on a name, so a
//! symlink is changed itself and never followed. Owner and times go through
//! `AT_EMPTY_PATH`; the mode through `fchmodat2(2)` (Linux 6.6), skipped on symlinks,
//! whose mode Linux ignores; extended attributes through the descriptor's
//! `/proc/self/fd/N` magic link, which the kernel resolves to the very inode held
//! (no name lookup, so nothing can be raced) and which works for every kind of
//! entry, where `fsetxattr(2)` needs a descriptor that devices and sockets cannot
//! safely give.
//!
//! The order matters: `chown` clears setuid/setgid bits and `security.capability`,
//! so the owner comes first, then extended attributes (an ACL rewrites the group
//! bits of the mode), then the mode, and the times last.

use std::{
    ffi::{CStr, CString},
    io,
    os::{
        fd::{AsRawFd, BorrowedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::Path,
};

use agent_common::wire::Attrs;

use super::confined::{check, fstat, is_type};

/// Permission bits a mode may carry (with setuid, setgid and sticky).
const PERMISSION_BITS: u32 = 0o7777;

/// How often a list or get is retried when the attribute grew between the size query
/// and the read (`ERANGE`).
const ERANGE_RETRIES: usize = 8;

/// The attributes of `path` itself (a final symlink is not followed): what the
/// primary puts in `Create` and `SetAttrs` records. Extended attributes are sorted by
/// name.
pub fn attrs_of(path: &Path) -> io::Result<Attrs> {
    let meta = std::fs::symlink_metadata(path)?;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut xattrs = Vec::new();
    for name in list_xattrs(&cpath, false)? {
        if let Some(value) = get_xattr(&cpath, &name, false)? {
            xattrs.push((name.into_bytes(), value));
        }
    }
    xattrs.sort();
    Ok(Attrs {
        mode: meta.mode() & PERMISSION_BITS,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        atime_ns: nanos(meta.atime(), meta.atime_nsec()),
        xattrs,
    })
}

/// The attributes of the entry an `O_PATH` descriptor holds (a symlink itself when
/// it was opened with `O_NOFOLLOW`): like [`attrs_of`], but with no name to resolve,
/// so paths longer than `PATH_MAX` and entries renamed meanwhile are no obstacle.
pub fn attrs_of_fd(entry: BorrowedFd<'_>) -> io::Result<Attrs> {
    let st = fstat(entry)?;
    let proc = proc_path(entry);
    let mut xattrs = Vec::new();
    // The magic link resolves to the inode held, so following it is reading that
    // inode's attributes, never another's.
    for name in list_xattrs(&proc, true)? {
        if let Some(value) = get_xattr(&proc, &name, true)? {
            xattrs.push((name.into_bytes(), value));
        }
    }
    xattrs.sort();
    Ok(Attrs {
        mode: st.st_mode & PERMISSION_BITS,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: nanos(st.st_mtime, st.st_mtime_nsec),
        atime_ns: nanos(st.st_atime, st.st_atime_nsec),
        xattrs,
    })
}

/// Checks the parts of `attrs` the kernel would misread: xattr names must be
/// non-empty C strings. Called before anything is changed.
pub(super) fn validate(attrs: &Attrs) -> Result<(), &'static str> {
    for (name, _) in &attrs.xattrs {
        if name.is_empty() {
            return Err("empty extended attribute name");
        }
        if name.contains(&0) {
            return Err("extended attribute name contains a NUL byte");
        }
    }
    Ok(())
}

/// Sets `attrs` exactly on the entry `entry` (an `O_PATH` descriptor): extended
/// attributes not listed are removed.
pub(super) fn set(entry: BorrowedFd<'_>, attrs: &Attrs) -> io::Result<()> {
    let mode = fstat(entry)?.st_mode;
    let symlink = is_type(mode, libc::S_IFLNK);
    let user_xattrs = is_type(mode, libc::S_IFREG) || is_type(mode, libc::S_IFDIR);
    let empty = c"";
    // SAFETY: `empty` is NUL-terminated; with AT_EMPTY_PATH the call acts on `entry`.
    check(unsafe {
        libc::fchownat(
            entry.as_raw_fd(),
            empty.as_ptr(),
            attrs.uid,
            attrs.gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    set_xattrs(entry, &attrs.xattrs, user_xattrs)?;
    if !symlink {
        chmod(entry, attrs.mode & PERMISSION_BITS)?;
    }
    let times = [timespec(attrs.atime_ns), timespec(attrs.mtime_ns)];
    // SAFETY: `times` holds the two timespecs utimensat reads; AT_EMPTY_PATH makes it
    // act on `entry` itself.
    check(unsafe {
        libc::utimensat(
            entry.as_raw_fd(),
            empty.as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Makes the entry's extended attributes exactly `wanted`; `user.*` ones are skipped
/// where the kernel refuses them (`user_xattrs` false: entries other than regular
/// files and directories).
fn set_xattrs(
    entry: BorrowedFd<'_>,
    wanted: &[(Vec<u8>, Vec<u8>)],
    user_xattrs: bool,
) -> io::Result<()> {
    let path = proc_path(entry);
    for name in list_xattrs(&path, true)? {
        if wanted.iter().any(|(w, _)| w.as_slice() == name.as_bytes()) {
            continue;
        }
        // SAFETY: both strings are NUL-terminated.
        match check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }) {
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            other => other?,
        }
    }
    for (name, value) in wanted {
        let name = CString::new(name.as_slice())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: both strings are NUL-terminated and `value` is readable for its length.
        let rc = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        match check(rc) {
            // The kernel keeps user.* attributes off symlinks and special files; the
            // primary may still list one (from a filesystem that allows it), which
            // is not the peer's fault and not worth failing the record.
            Err(e)
                if !user_xattrs
                    && name.as_bytes().starts_with(b"user.")
                    && e.raw_os_error() == Some(libc::EPERM) => {}
            other => other?,
        }
    }
    Ok(())
}

/// `fchmodat2(fd, "", mode, AT_EMPTY_PATH)`, falling back to `chmod` of the magic link
/// on kernels before 6.6.
fn chmod(entry: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let empty = c"";
    // SAFETY: `empty` is NUL-terminated; the other arguments are integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            entry.as_raw_fd(),
            empty.as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    let path = proc_path(entry);
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::chmod(path.as_ptr(), mode) })
}

/// The magic link naming the inode `fd` holds.
fn proc_path(fd: BorrowedFd<'_>) -> CString {
    let mut path = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    path.push(0);
    CString::from_vec_with_nul(path).unwrap_or_default()
}

/// The names of the extended attributes of `path` (of a final symlink itself unless
/// `follow`).
fn list_xattrs(path: &CStr, follow: bool) -> io::Result<Vec<CString>> {
    let list = read_sized(|buf, len| {
        // SAFETY: `buf` is writable for `len` bytes (or NULL with len 0, a size query).
        unsafe {
            if follow {
                libc::listxattr(path.as_ptr(), buf, len)
            } else {
                libc::llistxattr(path.as_ptr(), buf, len)
            }
        }
    })?;
    Ok(list
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .filter_map(|name| CString::new(name).ok())
        .collect())
}

/// One extended attribute of `path`; `None` if it is gone.
fn get_xattr(path: &CStr, name: &CStr, follow: bool) -> io::Result<Option<Vec<u8>>> {
    let value = read_sized(|buf, len| {
        // SAFETY: as in list_xattrs; `name` is NUL-terminated.
        unsafe {
            if follow {
                libc::getxattr(path.as_ptr(), name.as_ptr(), buf.cast(), len)
            } else {
                libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.cast(), len)
            }
        }
    });
    match value {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        other => other.map(Some),
    }
}

/// Calls a `*xattr` getter first for the size, then with a buffer of that size,
/// again if the value grew in between.
fn read_sized(call: impl Fn(*mut libc::c_char, usize) -> isize) -> io::Result<Vec<u8>> {
    for _ in 0..ERANGE_RETRIES {
        let size = usize::try_from(call(std::ptr::null_mut(), 0))
            .map_err(|_| io::Error::last_os_error())?;
        let mut buf = vec![0u8; size];
        match usize::try_from(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ERANGE) {
                    return Err(err);
                }
            }
        }
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(NANOS_PER_SEC).saturating_add(nsec)
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(NANOS_PER_SEC),
        tv_nsec: ns.rem_euclid(NANOS_PER_SEC),
    }
}

const NANOS_PER_SEC: i64 = 1_000_000_000;
