//! The operations of [`WireOp`](agent_common::wire::WireOp), each on a path already
//! checked by [`confined::validate`].
//!
//! Data operations (`Write`, `Punch`, `Truncate`) only ever open an existing regular
//! file: the entry is looked at without following it first, so a symlink, a FIFO or
//! a device node of the same name is refused before anything opens it (opening a
//! device runs its driver), and the opened file is checked to be the inode looked at.

use std::{
    ffi::{CStr, CString},
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd},
        unix::fs::FileExt,
    },
};

use agent_common::wire::{Attrs, EntryKind, MAX_PATH_BYTES};

use super::{
    Applier, ApplyError, attrs,
    cache::is_under,
    confined::{self, Located, check, hostile, is_type},
    tree,
};

/// The largest file offset the kernel accepts (`loff_t` is signed).
const MAX_OFFSET: u64 = i64::MAX as u64;

/// How many temporary names a `Link` over an existing name tries.
const LINK_TEMP_TRIES: usize = 16;

// === impl Applier ===

impl Applier {
    /// `Write`: bytes at an offset of an existing regular file.
    pub(super) fn write(
        &mut self,
        path: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<(), ApplyError> {
        check_range(path, offset, data.len() as u64)?;
        let file = self.data_file("write", path)?;
        file.write_all_at(data, offset)
            .map_err(|e| ApplyError::io("write", path, e))
    }

    /// `Punch`: a hole, keeping the size.
    pub(super) fn punch(&mut self, path: &[u8], offset: u64, len: u64) -> Result<(), ApplyError> {
        check_range(path, offset, len)?;
        let file = self.data_file("punch", path)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: fallocate on a descriptor we own, with integer arguments only; the
        // range was checked to fit loff_t above.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset.cast_signed(),
                len.cast_signed(),
            )
        };
        check(rc).map_err(|e| ApplyError::io("punch", path, e))
    }

    /// `Truncate`: the file's size.
    pub(super) fn truncate(&mut self, path: &[u8], size: u64) -> Result<(), ApplyError> {
        check_range(path, size, 0)?;
        let file = self.data_file("truncate", path)?;
        file.set_len(size)
            .map_err(|e| ApplyError::io("truncate", path, e))
    }

    /// `Create`: a new entry with its attributes, replacing a leftover.
    pub(super) fn create(
        &mut self,
        path: &[u8],
        kind: EntryKind,
        attrs: &Attrs,
        target: Option<&[u8]>,
        rdev: u64,
    ) -> Result<(), ApplyError> {
        attrs::validate(attrs).map_err(|reason| hostile(path, reason))?;
        let target = match kind {
            EntryKind::Symlink => Some(symlink_target(path, target)?),
            _ => None,
        };
        self.files.invalidate(path);
        let at = confined::locate(self.root.as_fd(), path)?;
        tree::remove_entry(at.as_fd(), &at.name)
            .map_err(|e| ApplyError::io("remove leftover", path, e))?;
        let created_file = make_entry(&at, kind, target.as_deref(), rdev)
            .map_err(|e| ApplyError::io("create", path, e))?;
        set_attrs_at(&at, path, attrs)?;
        if let Some(file) = created_file {
            self.files.insert(path, file);
        }
        Ok(())
    }

    /// `Remove`: the entry, recursively; an absent one is not an error.
    pub(super) fn remove(&mut self, path: &[u8]) -> Result<(), ApplyError> {
        self.files.invalidate(path);
        let at = match confined::locate(self.root.as_fd(), path) {
            Ok(at) => at,
            // No parent directory: the entry is absent already.
            Err(ApplyError::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        tree::remove_entry(at.as_fd(), &at.name)
            .map(drop)
            .map_err(|e| ApplyError::io("remove", path, e))
    }

    /// `Rename` (`flags` 0) or `Exchange` (`RENAME_EXCHANGE`).
    pub(super) fn rename(
        &mut self,
        path: &[u8],
        new_path: &[u8],
        flags: libc::c_uint,
    ) -> Result<(), ApplyError> {
        confined::validate(new_path)?;
        self.files.invalidate(path);
        self.files.invalidate(new_path);
        let op = if flags == 0 { "rename" } else { "exchange" };
        let from = confined::locate(self.root.as_fd(), path)?;
        let to = confined::locate(self.root.as_fd(), new_path)?;
        match renameat2(&from, &to, flags) {
            // What the new name holds is incompatible with what moves there (a
            // directory against a file, or a non-empty directory): a leftover, which
            // is removed as `Create` does, unless it contains the source itself.
            Err(e)
                if flags == 0
                    && !is_under(path, new_path)
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EISDIR | libc::ENOTDIR | libc::ENOTEMPTY | libc::EEXIST)
                    ) =>
            {
                tree::remove_entry(to.as_fd(), &to.name)
                    .map_err(|e| ApplyError::io("remove leftover", new_path, e))?;
                renameat2(&from, &to, flags)
            }
            other => other,
        }
        .map_err(|e| ApplyError::io(op, path, e))
    }

    /// `Link`: another name for the entry, replacing what that name held.
    pub(super) fn link(&mut self, path: &[u8], new_path: &[u8]) -> Result<(), ApplyError> {
        confined::validate(new_path)?;
        self.files.invalidate(new_path);
        let fail = |e| ApplyError::io("link", path, e);
        let from = confined::locate(self.root.as_fd(), path)?;
        let to = confined::locate(self.root.as_fd(), new_path)?;
        match linkat(&from, to.as_fd(), &to.name) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => return other.map_err(fail),
        }
        // The new name exists: already this file (a replay), a leftover directory
        // (removed, as `Create` does), or another entry, replaced atomically by
        // linking under a temporary name and renaming that over it.
        let old = confined::lstat_at(from.as_fd(), &from.name).map_err(fail)?;
        let existing = confined::lstat_at(to.as_fd(), &to.name).map_err(fail)?;
        match (old, existing) {
            (Some(old), Some(existing))
                if (old.st_dev, old.st_ino) == (existing.st_dev, existing.st_ino) =>
            {
                return Ok(());
            }
            (_, Some(existing)) if is_type(existing.st_mode, libc::S_IFDIR) => {
                tree::remove_entry(to.as_fd(), &to.name).map_err(fail)?;
                return linkat(&from, to.as_fd(), &to.name).map_err(fail);
            }
            _ => {}
        }
        let temp = self.link_temp(&from, &to).map_err(fail)?;
        let temp_at = Located {
            parent: to.parent.try_clone().map_err(fail)?,
            name: temp,
        };
        renameat2(&temp_at, &to, 0).map_err(|e| {
            // SAFETY: `name` is NUL-terminated; a failed unlink only leaves the
            // temporary name behind, which the error below reports anyway.
            unsafe { libc::unlinkat(temp_at.parent.as_raw_fd(), temp_at.name.as_ptr(), 0) };
            fail(e)
        })
    }

    /// `SetAttrs`: the entry's attributes, exactly.
    pub(super) fn set_attrs(&mut self, path: &[u8], attrs: &Attrs) -> Result<(), ApplyError> {
        attrs::validate(attrs).map_err(|reason| hostile(path, reason))?;
        let at = confined::locate(self.root.as_fd(), path)?;
        set_attrs_at(&at, path, attrs)
    }

    /// Links `from` under a fresh temporary name in `to`'s directory.
    fn link_temp(&mut self, from: &Located, to: &Located) -> io::Result<CString> {
        for _ in 0..LINK_TEMP_TRIES {
            self.link_seq += 1;
            let name = format!(".tandem-link.{}.{}", std::process::id(), self.link_seq);
            let name =
                CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            match linkat(from, to.as_fd(), &name) {
                Ok(()) => return Ok(name),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EEXIST))
    }

    /// The cached file open for writing at `path`, opened on a miss.
    pub(super) fn data_file(&mut self, op: &'static str, path: &[u8]) -> Result<&File, ApplyError> {
        let root = self.root.as_fd();
        self.files
            .get_or_open(path, || open_regular(root, op, path))
    }
}

/// Opens the existing regular file `path` for writing, refusing any other kind.
fn open_regular(root: BorrowedFd<'_>, op: &'static str, path: &[u8]) -> Result<File, ApplyError> {
    let fail = |e| ApplyError::io(op, path, e);
    let at = confined::locate(root, path)?;
    let seen = confined::lstat_at(at.as_fd(), &at.name)
        .map_err(fail)?
        .ok_or_else(|| fail(io::Error::from_raw_os_error(libc::ENOENT)))?;
    if !is_type(seen.st_mode, libc::S_IFREG) {
        return Err(fail(not_regular(seen.st_mode)));
    }
    let flags =
        libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let file = File::from(confined::openat2(at.as_fd(), &at.name, flags, 0).map_err(fail)?);
    let opened = confined::fstat(file.as_fd()).map_err(fail)?;
    if !is_type(opened.st_mode, libc::S_IFREG)
        || (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino)
    {
        return Err(fail(io::Error::other(
            "the entry was replaced while it was opened",
        )));
    }
    Ok(file)
}

/// Creates the entry `at` of `kind` with a private mode (its attributes are set
/// next); for a regular file, returns it open for writing.
fn make_entry(
    at: &Located,
    kind: EntryKind,
    target: Option<&CStr>,
    rdev: u64,
) -> io::Result<Option<File>> {
    let (dir, name) = (at.parent.as_raw_fd(), at.name.as_ptr());
    let node = |mode: libc::mode_t, rdev: libc::dev_t| {
        // SAFETY: `name` is NUL-terminated and outlives the call.
        check(unsafe { libc::mknodat(dir, name, mode | 0o600, rdev) }).map(|()| None)
    };
    match kind {
        EntryKind::File => {
            let flags =
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            confined::openat2(at.as_fd(), &at.name, flags, 0o600).map(|fd| Some(File::from(fd)))
        }
        EntryKind::Dir => {
            // SAFETY: `name` is NUL-terminated and outlives the call.
            check(unsafe { libc::mkdirat(dir, name, 0o700) }).map(|()| None)
        }
        EntryKind::Symlink => {
            let target = target.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: `target` and `name` are NUL-terminated and outlive the call.
            check(unsafe { libc::symlinkat(target.as_ptr(), dir, name) }).map(|()| None)
        }
        EntryKind::Fifo => node(libc::S_IFIFO, 0),
        EntryKind::Socket => node(libc::S_IFSOCK, 0),
        EntryKind::CharDevice => node(libc::S_IFCHR, rdev),
        EntryKind::BlockDevice => node(libc::S_IFBLK, rdev),
    }
}

fn set_attrs_at(at: &Located, path: &[u8], attrs: &Attrs) -> Result<(), ApplyError> {
    let fail = |e| ApplyError::io("set attributes of", path, e);
    let entry = confined::open_entry(at.as_fd(), &at.name).map_err(fail)?;
    attrs::set(entry.as_fd(), attrs).map_err(fail)
}

fn renameat2(from: &Located, to: &Located, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; the descriptors are ours.
    check(unsafe {
        libc::renameat2(
            from.parent.as_raw_fd(),
            from.name.as_ptr(),
            to.parent.as_raw_fd(),
            to.name.as_ptr(),
            flags,
        )
    })
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a symlink is linked itself.
fn linkat(from: &Located, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; the descriptors are ours.
    check(unsafe {
        libc::linkat(
            from.parent.as_raw_fd(),
            from.name.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            0,
        )
    })
}

/// A symlink target as a C string: present, non-empty, no NUL, not over the limit.
/// Its content is otherwise free (absolute, `..`): symlinks are never followed.
fn symlink_target(path: &[u8], target: Option<&[u8]>) -> Result<CString, ApplyError> {
    let target = target.ok_or_else(|| hostile(path, "symlink without a target"))?;
    if target.is_empty() {
        return Err(hostile(path, "empty symlink target"));
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(hostile(path, "symlink target longer than MAX_PATH_BYTES"));
    }
    CString::new(target).map_err(|_| hostile(path, "symlink target contains a NUL byte"))
}

/// Refuses a range whose end does not fit a file offset.
fn check_range(path: &[u8], offset: u64, len: u64) -> Result<(), ApplyError> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_OFFSET => Ok(()),
        _ => Err(hostile(path, "range beyond the largest file offset")),
    }
}

fn not_regular(mode: libc::mode_t) -> io::Error {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        _ => "not a regular file",
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("the entry is {kind}"))
}
