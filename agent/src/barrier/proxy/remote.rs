//! Reaching into a held thread: a pidfd for it, a copy of one of its descriptors,
//! its memory and its file-system credentials.
//!
//! Everything here reads state the application controls, so every answer is
//! checked and nothing trusts a length or a pointer it was given.

use std::{
    fs,
    io::{self, IoSliceMut},
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

use nix::{
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread rather than a process leader.
/// The held caller is a thread id, which is a leader's only in single-threaded
/// processes; older kernels refuse the flag, and then only leaders can be reached.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// Longest path an open may name, with its terminating NUL (`PATH_MAX`).
const PATH_MAX: usize = 4096;

/// A pidfd for thread `tid`.
pub(super) fn pidfd(tid: u32) -> io::Result<OwnedFd> {
    let open = |flags: libc::c_uint| {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this new fd, which nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    match open(PIDFD_THREAD) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0),
        other => other,
    }
}

/// A copy of descriptor `fd` of the thread behind `pidfd`: the same open file
/// description, so it shares the file position and the status flags.
pub(super) fn getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags (0) and returns a new
    // fd or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = RawFd::try_from(got).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(got) })
}

/// Copies `len` bytes at `addr` of `tid`'s memory into `out` (cleared first).
/// Stops early where the memory ends being readable, as the kernel's own copy
/// would; returns how many bytes were copied.
pub(super) fn read_into(tid: u32, addr: u64, len: usize, out: &mut Vec<u8>) -> io::Result<usize> {
    out.clear();
    out.resize(len, 0);
    let mut done = 0;
    while done < len {
        let base = usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(done))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        let remote = [RemoteIoVec {
            base,
            len: len - done,
        }];
        let mut local = [IoSliceMut::new(&mut out[done..])];
        match process_vm_readv(Pid::from_raw(tid as libc::pid_t), &mut local, &remote) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(nix::errno::Errno::EFAULT) => break,
            Err(e) => return Err(e.into()),
        }
    }
    out.truncate(done);
    Ok(done)
}

/// Reads a NUL-terminated path at `addr` of `tid`'s memory, page by page so that a
/// path ending just before an unmapped page is still read. `None` when it is
/// unreadable or longer than `PATH_MAX`.
pub(super) fn read_path(tid: u32, addr: u64) -> io::Result<Option<Vec<u8>>> {
    const PAGE: u64 = 4096;
    let mut path = Vec::new();
    let mut chunk = Vec::new();
    let mut at = addr;
    while path.len() < PATH_MAX {
        let to_page_end = PAGE - (at % PAGE);
        let want = usize::try_from(to_page_end)
            .unwrap_or(PATH_MAX)
            .min(PATH_MAX - path.len());
        let got = read_into(tid, at, want, &mut chunk)?;
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            path.extend_from_slice(&chunk[..nul]);
            return Ok(Some(path));
        }
        if got < want {
            return Ok(None);
        }
        path.extend_from_slice(&chunk);
        at = at.saturating_add(got as u64);
    }
    Ok(None)
}

/// The credentials an open by the thread is checked with, and its umask.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(super) struct Creds {
    pub(super) fsuid: u32,
    pub(super) fsgid: u32,
    pub(super) groups: Vec<u32>,
    pub(super) umask: u32,
    /// Effective capabilities (a container's root may lack `CAP_DAC_OVERRIDE`).
    pub(super) caps: u64,
}

/// Reads [`Creds`] from `/proc/<tid>/status`.
pub(super) fn creds(tid: u32) -> io::Result<Creds> {
    let status = fs::read_to_string(format!("/proc/{tid}/status"))?;
    parse_creds(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/<pid>/status format",
        )
    })
}

/// Parses the `Uid:`, `Gid:`, `Groups:`, `Umask:` and `CapEff:` lines of a status
/// file. The id lines list real, effective, saved and file-system ids; the last
/// one counts.
fn parse_creds(status: &str) -> Option<Creds> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    };
    let fs_id =
        |name: &str| -> Option<u32> { field(name)?.split_whitespace().nth(3)?.parse().ok() };
    let groups = field("Groups")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .ok()?;
    let umask = u32::from_str_radix(field("Umask")?.trim(), 8).ok()?;
    let caps = u64::from_str_radix(field("CapEff")?.trim(), 16).ok()?;
    Some(Creds {
        fsuid: fs_id("Uid")?,
        fsgid: fs_id("Gid")?,
        groups,
        umask,
        caps,
    })
}

/// The numbers of `tid`'s open descriptors.
pub(super) fn open_fds(tid: u32) -> io::Result<Vec<u32>> {
    let mut fds = Vec::new();
    for entry in fs::read_dir(format!("/proc/{tid}/fd"))? {
        if let Some(n) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            fds.push(n);
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_come_from_the_file_system_ids() {
        let status = "Name:\tdb\nUmask:\t0027\nUid:\t1000\t1001\t1002\t1003\n\
                      Gid:\t50\t51\t52\t53\nGroups:\t4 24 27 \nCapEff:\t00000000a80425fb\n";
        assert_eq!(
            parse_creds(status),
            Some(Creds {
                fsuid: 1003,
                fsgid: 53,
                groups: vec![4, 24, 27],
                umask: 0o027,
                caps: 0xa804_25fb,
            })
        );
        let no_groups = "Umask:\t0022\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t0\n";
        assert_eq!(parse_creds(no_groups).map(|c| c.groups), Some(vec![]));
        // A line missing or mangled: no guess.
        assert_eq!(parse_creds("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"), None);
        assert_eq!(
            parse_creds("Umask:\t0022\nUid:\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n"),
            None
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        let c = creds(me).expect("own status");
        assert_eq!(c.fsuid, nix::unistd::geteuid().as_raw());
        let text = b"a/path\0rest";
        let got = read_path(me, text.as_ptr() as u64).expect("read");
        assert_eq!(got.as_deref(), Some(&b"a/path"[..]));
        let mut buf = Vec::new();
        let n = read_into(me, text.as_ptr() as u64, text.len(), &mut buf).expect("read");
        assert_eq!((n, buf.as_slice()), (text.len(), &text[..]));
        // An address nothing is mapped at reads as nothing, not as an error.
        assert_eq!(read_into(me, 8, 16, &mut buf).expect("read"), 0);
        assert_eq!(read_path(me, 8).expect("read"), None);
        let pidfd = pidfd(me).expect("pidfd");
        let f = tempfile::tempfile().expect("tempfile");
        let copy = getfd(&pidfd, std::os::fd::AsRawFd::as_raw_fd(&f)).expect("getfd");
        let (a, b) = (
            nix::sys::stat::fstat(&f).expect("stat"),
            nix::sys::stat::fstat(&copy).expect("stat"),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        assert!(
            open_fds(me)
                .expect("fds")
                .contains(&(std::os::fd::AsRawFd::as_raw_fd(&f) as u32))
        );
    }
}
