//! What a held system call asks for: which call, from which process, and which
//! files it covers ([`Durability`]), decoded from a seccomp notification.

use std::{fs, os::unix::fs::MetadataExt};

use super::{
    filter::{X32_PWRITEV2, X32_SYSCALL_BIT},
    proxy,
};

/// The durability calls the barrier holds.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum SyncCall {
    Fdatasync,
    Fsync,
    /// msync with `MS_SYNC`.
    Msync,
    Sync,
    /// sync_file_range with `SYNC_FILE_RANGE_WAIT_AFTER`.
    SyncFileRange,
    /// A synchronous write (an `O_SYNC`/`O_DSYNC` descriptor, or pwritev2 with
    /// `RWF_SYNC`/`RWF_DSYNC`) that the agent performed for the caller: what it
    /// wrote must be on the peer before the caller learns the result. (From an x32
    /// program, a synchronous pwritev2 held before it runs.)
    SyncWrite,
    Syncfs,
}

/// A file as the capture layer names it: device and inode numbers.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// One held durability call.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Durability {
    /// The calling thread's id, in the agent's pid namespace.
    pub pid: u32,
    pub syscall: SyncCall,
    /// The file descriptor argument, for the calls that take one.
    pub fd: Option<i32>,
    /// The file behind `fd` when it could be resolved cheaply through
    /// `/proc/<pid>/fd/<fd>`; `None` for msync and sync, and when resolution failed.
    pub file: Option<FileId>,
}

/// Which changes must be on the peer before a held call may run.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Scope {
    /// Every change captured so far (sync, msync, or an fd that could not be resolved).
    All,
    /// The changes to one file.
    File(FileId),
    /// The changes to every file on one filesystem (syncfs).
    Filesystem { dev: u64 },
}

// === impl Durability ===

impl Durability {
    /// The changes this call waits for. Unknown files widen the scope rather than
    /// narrow it: waiting too long is slower, waiting too little loses data.
    pub fn scope(&self) -> Scope {
        match (self.syscall, self.file) {
            (SyncCall::Msync | SyncCall::Sync, _) | (_, None) => Scope::All,
            (SyncCall::Syncfs, Some(f)) => Scope::Filesystem { dev: f.dev },
            (
                SyncCall::Fdatasync
                | SyncCall::Fsync
                | SyncCall::SyncFileRange
                | SyncCall::SyncWrite,
                Some(f),
            ) => Scope::File(f),
        }
    }
}

/// What the listener does with a notification.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Trap {
    /// A durability call: hold it until the peer has what it covers, then let it run.
    Durable(SyncCall, Option<i32>),
    /// A call the agent performs for the caller ([`proxy`]).
    Proxy(proxy::Call),
    /// A call the filter sends that needs nothing: let it run at once.
    Pass,
}

/// Decodes a notification's system call; `None` for a number the barrier's filter
/// never sends (the caller releases such a call at once).
pub(crate) fn classify(nr: i32, args: &[u64; 6]) -> Option<Trap> {
    let x32 = (nr as u32) & X32_SYSCALL_BIT != 0;
    let nr = i64::from((nr as u32) & !X32_SYSCALL_BIT);
    // The fd is a C int passed in a 64-bit register: the low 32 bits are the value.
    let fd = Some(args[0] as u32 as i32);
    let durable = |call, fd| Some(Trap::Durable(call, fd));
    match nr {
        libc::SYS_fsync => durable(SyncCall::Fsync, fd),
        libc::SYS_fdatasync => durable(SyncCall::Fdatasync, fd),
        libc::SYS_sync_file_range => durable(SyncCall::SyncFileRange, fd),
        libc::SYS_syncfs => durable(SyncCall::Syncfs, fd),
        // x32 programs are not proxied (their iovecs have another layout): their
        // synchronous pwritev2 is held before it runs, their opens run as asked.
        n if x32 && n == i64::from(X32_PWRITEV2) => durable(SyncCall::SyncWrite, fd),
        libc::SYS_msync => durable(SyncCall::Msync, None),
        libc::SYS_sync => durable(SyncCall::Sync, None),
        n => match proxy::decode(n, args) {
            Some(_) if x32 => Some(Trap::Pass),
            Some(call) => Some(Trap::Proxy(call)),
            None => None,
        },
    }
}

/// Names the file open as `fd` in task `pid`, by stat-ing `/proc/<pid>/fd/<fd>`
/// (which follows the magic link to the open file itself, even if it was renamed or
/// unlinked). The caller must confirm afterwards that the notification is still
/// valid, since `pid` may have exited and been reused meanwhile.
pub(crate) fn resolve(pid: u32, fd: i32) -> Option<FileId> {
    let meta = fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names_calls_and_their_fds() {
        let args = [7, 0, 0, 0, 0, 0];
        let nr = |n: libc::c_long| n as i32;
        let held = |c, fd| Some(Trap::Durable(c, fd));
        assert_eq!(
            classify(nr(libc::SYS_fsync), &args),
            held(SyncCall::Fsync, Some(7))
        );
        // msync's first argument is an address, not an fd.
        assert_eq!(
            classify(nr(libc::SYS_msync), &args),
            held(SyncCall::Msync, None)
        );
        assert_eq!(
            classify(nr(libc::SYS_sync), &args),
            held(SyncCall::Sync, None)
        );
        // A synchronous pwritev2 is written by the agent, which holds its return.
        assert!(matches!(
            classify(nr(libc::SYS_pwritev2), &args),
            Some(Trap::Proxy(proxy::Call::Write(_)))
        ));
        let x32 = |n: u32| (n | X32_SYSCALL_BIT) as i32;
        assert_eq!(
            classify(x32(libc::SYS_fdatasync as u32), &args),
            held(SyncCall::Fdatasync, Some(7))
        );
        assert_eq!(
            classify(x32(X32_PWRITEV2), &args),
            held(SyncCall::SyncWrite, Some(7))
        );
        assert_eq!(
            classify(x32(libc::SYS_write as u32), &args),
            Some(Trap::Pass)
        );
        // 547 without the x32 bit is no x86_64 system call.
        assert_eq!(classify(X32_PWRITEV2 as i32, &args), None);
        assert_eq!(classify(nr(libc::SYS_read), &args), None);
        // An fd is a C int: the register's high half is ignored.
        assert_eq!(
            classify(nr(libc::SYS_fsync), &[0xFFFF_FFFF_0000_0003, 0, 0, 0, 0, 0]),
            held(SyncCall::Fsync, Some(3))
        );
    }

    #[test]
    fn unknown_files_widen_the_scope() {
        let file = FileId { dev: 1, ino: 2 };
        let call = |syscall, file| Durability {
            pid: 1,
            syscall,
            fd: Some(3),
            file,
        };
        assert_eq!(call(SyncCall::Fsync, Some(file)).scope(), Scope::File(file));
        assert_eq!(call(SyncCall::Fsync, None).scope(), Scope::All);
        assert_eq!(
            call(SyncCall::Syncfs, Some(file)).scope(),
            Scope::Filesystem { dev: 1 }
        );
        assert_eq!(call(SyncCall::Syncfs, None).scope(), Scope::All);
        assert_eq!(call(SyncCall::Sync, Some(file)).scope(), Scope::All);
    }

    #[test]
    fn resolve_names_an_open_file_and_misses_an_unused_fd() {
        let f = tempfile::tempfile().expect("tempfile");
        let meta = f.metadata().expect("stat");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let pid = std::process::id();
        assert_eq!(
            resolve(pid, fd),
            Some(FileId {
                dev: meta.dev(),
                ino: meta.ino()
            })
        );
        // (Not the fd just closed: a parallel test may reuse its number at once.)
        assert_eq!(resolve(pid, i32::MAX), None);
    }
}
