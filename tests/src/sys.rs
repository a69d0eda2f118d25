//! Thin, symlink-safe wrappers over the `*at` system calls that the shadow consumer
//! and the comparator need.
//!
//! Names in the trees under test are arbitrary bytes (non-UTF-8 included), so every
//! helper takes `&[u8]` paths relative to a directory descriptor. Resolution goes
//! through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a replayed record can
//! never follow a symlink out of the tree it is meant to touch: a stale shadow where a
//! directory has meanwhile become a symlink makes the call fail instead of writing
//! somewhere else.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Chunk size for content copies and comparisons: large enough to amortise the system
/// calls, small enough to keep memory flat.
pub const CHUNK: usize = 1 << 20;

/// Turns raw name bytes into a C string (names never contain NUL; a record that does is
/// rejected with `EINVAL`).
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret.unsigned_abs())
    }
}

/// The kernel's `struct open_how` (libc's is `#[non_exhaustive]`, so it cannot be built
/// with a literal here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens a directory by absolute (or cwd-relative) path as an `O_PATH` descriptor: the
/// anchor for every later `*at` call.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` beneath `root` without following any symlink on the way (a trailing
/// symlink is only acceptable with `O_PATH | O_NOFOLLOW`). `rel` empty means the root.
pub fn open_beneath(root: &OwnedFd, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: all pointers are valid for the duration of the call and `how` has the
    // layout of the kernel's `struct open_how` (three u64), whose size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Splits `rel` into its parent (opened beneath `root`, as an `O_PATH` directory) and
/// its last component. The root itself has no parent: `EINVAL`.
pub fn parent_of(root: &OwnedFd, rel: &[u8]) -> io::Result<(OwnedFd, CString)> {
    if rel.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let dfd = open_beneath(root, dir, libc::O_PATH | libc::O_DIRECTORY)?;
    Ok((dfd, cstr(name)?))
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)`.
pub fn lstat_at(dir: &OwnedFd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name and a writable `stat`.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fstat`.
pub fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a writable `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Stats `rel` beneath `root` without following a trailing symlink.
pub fn lstat_rel(root: &OwnedFd, rel: &[u8]) -> io::Result<libc::stat> {
    if rel.is_empty() {
        let fd = open_beneath(root, rel, libc::O_PATH | libc::O_DIRECTORY)?;
        return fstat(&fd);
    }
    let (dir, name) = parent_of(root, rel)?;
    lstat_at(&dir, &name)
}

/// `readlinkat`.
pub fn readlink_at(dir: &OwnedFd, name: &CString) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the buffer is writable for its whole length.
    let n = cvt_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `mkdirat`.
pub fn mkdir_at(dir: &OwnedFd, name: &CString, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `symlinkat`.
pub fn symlink_at(target: &[u8], dir: &OwnedFd, name: &CString) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid descriptor and NUL-terminated strings.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `mknodat`.
pub fn mknod_at(
    dir: &OwnedFd,
    name: &CString,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

/// `unlinkat` (with `AT_REMOVEDIR` when `dir_entry`).
pub fn unlink_at(dir: &OwnedFd, name: &CString, dir_entry: bool) -> io::Result<()> {
    let flags = if dir_entry { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2`.
pub fn rename_at(
    odir: &OwnedFd,
    oname: &CString,
    ndir: &OwnedFd,
    nname: &CString,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    cvt(unsafe {
        libc::renameat2(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `linkat` without following a trailing symlink (hard links to symlinks are links to
/// the symlink itself, as `link(2)` does on Linux).
pub fn link_at(odir: &OwnedFd, oname: &CString, ndir: &OwnedFd, nname: &CString) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names.
    cvt(unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`.
pub fn lchown_at(dir: &OwnedFd, name: &CString, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fchmodat` (only called on entries known not to be symlinks).
pub fn chmod_at(dir: &OwnedFd, name: &CString, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777, 0) }).map(drop)
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)` with the times of `st`.
pub fn set_times_at(dir: &OwnedFd, name: &CString, st: &libc::stat) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    // SAFETY: valid descriptor, NUL-terminated name, and an array of two timespecs.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Opens an entry (file or directory) beneath `dir` by name, refusing symlinks.
pub fn open_at(dir: &OwnedFd, name: &CString, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    })?;
    // SAFETY: openat returned a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Lists the `user.*` extended attributes of an open file or directory, with values,
/// sorted by name.
pub fn user_xattrs(fd: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is writable for its whole length.
    let n = cvt_size(unsafe {
        libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len())
    })?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cname = cstr(name)?;
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: the buffer is writable for its whole length.
        let r = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        match cvt_size(r) {
            Ok(len) => {
                val.truncate(len);
                out.push((name.to_vec(), val));
            }
            // Removed between list and get: it is simply gone.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute on an open file or directory.
pub fn set_xattr(fd: &OwnedFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor, NUL-terminated name, value pointer valid for its length.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            c.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Removes one extended attribute from an open file or directory.
pub fn remove_xattr(fd: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    cvt(unsafe { libc::fremovexattr(fd.as_raw_fd(), c.as_ptr()) }).map(drop)
}

/// `lseek(SEEK_DATA)`: the next offset `>= from` that holds data, or `None` past the
/// last data (ENXIO).
pub fn next_data(fd: &OwnedFd, from: u64) -> io::Result<Option<u64>> {
    seek(fd, from, libc::SEEK_DATA)
}

/// `lseek(SEEK_HOLE)`: the next hole at or after `from` (EOF counts as a hole).
pub fn next_hole(fd: &OwnedFd, from: u64) -> io::Result<Option<u64>> {
    seek(fd, from, libc::SEEK_HOLE)
}

fn seek(fd: &OwnedFd, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let Ok(off) = i64::try_from(from) else {
        return Ok(None);
    };
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r.unsigned_abs()))
}

/// `pread` that fills as much of `buf` as the file has; returns the bytes read.
pub fn pread_full(fd: &OwnedFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is writable for its whole length.
        let r = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                (off + done as u64) as libc::off_t,
            )
        };
        match cvt_size(r) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `pwrite` of the whole buffer.
pub fn pwrite_all(fd: &OwnedFd, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is readable for its whole length.
        let r = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                off as libc::off_t,
            )
        };
        match cvt_size(r) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `ftruncate`.
pub fn ftruncate(fd: &OwnedFd, size: u64) -> io::Result<()> {
    // SAFETY: ftruncate on a valid descriptor has no memory effects.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

/// Makes `[off, off+len)` of `fd` read as zeros without writing zeros: punches a hole
/// (keeping the size), falling back to writing zeros where punching is unsupported.
pub fn zero_range(fd: &OwnedFd, off: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on a valid descriptor has no memory effects.
    let r = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; CHUNK];
    let mut pos = off;
    while pos < off + len {
        let n = (off + len - pos).min(CHUNK as u64) as usize;
        pwrite_all(fd, &zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Copies `[start, end)` from `src` to `dst`, reading only where `src` has data and
/// zeroing (punching) the rest, so that multi-GiB sparse files stay sparse and cheap.
/// `end` must not exceed the source's size. The destination grows to `end` if shorter.
pub fn copy_range_sparse(src: &OwnedFd, dst: &OwnedFd, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = start;
    while pos < end {
        let data = next_data(src, pos)?.unwrap_or(end).min(end);
        if data > pos {
            zero_range(dst, pos, data - pos)?;
            pos = data;
            continue;
        }
        let hole = next_hole(src, pos)?.unwrap_or(end).min(end);
        let mut p = pos;
        while p < hole {
            let n = (hole - p).min(CHUNK as u64) as usize;
            let got = pread_full(src, &mut buf[..n], p)?;
            if got == 0 {
                // The source shrank under us: a later record will tell.
                return Ok(());
            }
            pwrite_all(dst, &buf[..got], p)?;
            p += got as u64;
        }
        pos = hole;
    }
    if fstat(dst)?.st_size.unsigned_abs() < end {
        ftruncate(dst, end)?;
    }
    Ok(())
}

/// `S_IFMT` part of a mode.
pub fn file_type(mode: libc::mode_t) -> libc::mode_t {
    mode & libc::S_IFMT
}

/// Joins two relative byte paths with `/` (the empty path is the root).
pub fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

/// Lists the names in an open directory (without `.` and `..`), as raw bytes.
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    // `read_dir` on /proc/self/fd/N reads the directory the descriptor refers to,
    // without resolving any path inside the tree again.
    use std::os::unix::ffi::OsStrExt;
    let fd = open_beneath_dirfd_for_read(dir)?;
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut out = Vec::new();
    for e in std::fs::read_dir(p)? {
        out.push(e?.file_name().as_bytes().to_vec());
    }
    out.sort();
    Ok(out)
}

fn open_beneath_dirfd_for_read(dir: &OwnedFd) -> io::Result<OwnedFd> {
    open_beneath(dir, b"", libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Makes the kernel send SIGTERM to the child `cmd` starts when the process that
/// started it dies, so that a test or benchmark killed without running its guards
/// (SIGKILL, a harness timeout) leaves no capture process and no probe behind.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl,
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
