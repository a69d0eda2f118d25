//! Directory listing and recursive removal, through descriptors only.
//!
//! Removal walks with an explicit stack rather than recursion and holds one directory
//! open at a time, so a tree nested deeper than the thread's stack, the open-file
//! limit or `PATH_MAX` (which a peer can build with renames) is still removed.
//! Subdirectories are opened with the same confinement flags as every other lookup,
//! so the walk never follows a symlink or enters a filesystem mounted inside the tree.

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use super::confined::{self, check, is_type};

/// The buffer `getdents64(2)` fills per call.
const DIRENT_BUFFER: usize = 32 * 1024;

/// Offset of `d_reclen`, `d_type` and `d_name` in a `struct linux_dirent64`.
const RECLEN_AT: usize = 16;
const TYPE_AT: usize = 18;
const NAME_AT: usize = 19;

/// One directory entry: its name and its `d_type` (`DT_UNKNOWN` on filesystems that
/// do not fill it).
pub(super) struct DirEntry {
    pub(super) name: CString,
    pub(super) d_type: u8,
}

/// Every entry of an open (`O_RDONLY`) directory but `.` and `..`, in directory order.
pub(super) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    let mut buf = vec![0u8; DIRENT_BUFFER];
    let mut out = Vec::new();
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes; getdents64
        // writes at most that many.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let n = match usize::try_from(n) {
            Ok(0) => return Ok(out),
            Ok(n) => n.min(buf.len()),
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(err);
            }
        };
        let mut pos = 0;
        while pos < n {
            let record = buf.get(pos..n).unwrap_or_default();
            let reclen = match record.get(RECLEN_AT..TYPE_AT) {
                Some(&[a, b]) => usize::from(u16::from_ne_bytes([a, b])),
                _ => 0,
            };
            let (Some(&d_type), Some(name)) = (record.get(TYPE_AT), record.get(NAME_AT..reclen))
            else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed getdents64 record",
                ));
            };
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            if name != b"." && name != b".." && !name.is_empty() {
                let name = CString::new(name).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "NUL in a directory entry")
                })?;
                out.push(DirEntry { name, d_type });
            }
            pos += reclen;
        }
    }
}

/// Removes the entry `name` of `dir`, recursively for a directory. Returns whether
/// there was one; an absent entry is not an error.
pub(super) fn remove_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    let Some(st) = confined::lstat_at(dir, name)? else {
        return Ok(false);
    };
    if is_type(st.st_mode, libc::S_IFDIR) {
        remove_tree(dir, name)?;
    } else {
        unlink(dir, name, 0)?;
    }
    Ok(true)
}

/// One directory being emptied: its name in its parent (the level below it), its
/// identity and the subdirectories still to remove.
struct Level {
    name: CString,
    id: (libc::dev_t, libc::ino_t),
    subdirs: Vec<CString>,
}

/// Removes the directory `name` of `parent` and everything beneath it.
///
/// Only the directory being emptied is held open: going down opens a child (with the
/// confinement flags), going back up opens `..` and checks that it is the directory
/// this walk came from, so that nothing moved meanwhile redirects the walk. Depth
/// is then bounded by memory, not by open files or `PATH_MAX`.
fn remove_tree(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let Some((mut current, first)) = open_level(parent, name)? else {
        return Ok(());
    };
    let mut levels = vec![first];
    while let Some(top) = levels.last_mut() {
        if let Some(sub) = top.subdirs.pop() {
            if let Some((dir, level)) = open_level(current.as_fd(), &sub)? {
                current = dir;
                levels.push(level);
            }
            continue;
        }
        let Some(done) = levels.pop() else { break };
        match levels.last() {
            None => return unlink(parent, &done.name, libc::AT_REMOVEDIR),
            Some(below) => {
                let up = open_parent(current.as_fd(), below.id)?;
                unlink(up.as_fd(), &done.name, libc::AT_REMOVEDIR)?;
                current = up;
            }
        }
    }
    Ok(())
}

/// Opens a directory to empty, unlinks every non-directory in it and notes its
/// subdirectories. `None` when it vanished meanwhile.
fn open_level(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<(OwnedFd, Level)>> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let dir = match confined::openat2(parent, name, flags, 0) {
        Ok(dir) => dir,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = confined::fstat(dir.as_fd())?;
    let mut subdirs = Vec::new();
    for entry in list(dir.as_fd())? {
        let is_dir = match entry.d_type {
            libc::DT_DIR => true,
            libc::DT_UNKNOWN => confined::lstat_at(dir.as_fd(), &entry.name)?
                .is_some_and(|st| is_type(st.st_mode, libc::S_IFDIR)),
            _ => false,
        };
        if is_dir {
            subdirs.push(entry.name);
        } else {
            unlink(dir.as_fd(), &entry.name, 0)?;
        }
    }
    let level = Level {
        name: name.to_owned(),
        id: (st.st_dev, st.st_ino),
        subdirs,
    };
    Ok(Some((dir, level)))
}

/// Opens `..` of `dir`, which must be the directory `expected`.
fn open_parent(dir: BorrowedFd<'_>, expected: (libc::dev_t, libc::ino_t)) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: the path is NUL-terminated; openat returns a new descriptor or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c"..".as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    let up = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = confined::fstat(up.as_fd())?;
    if (st.st_dev, st.st_ino) != expected {
        return Err(io::Error::other(
            "a directory being removed was moved meanwhile",
        ));
    }
    Ok(up)
}

/// `unlinkat(2)`, where an entry that is already gone counts as removed.
fn unlink(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; unlinkat only reads it.
    match check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
