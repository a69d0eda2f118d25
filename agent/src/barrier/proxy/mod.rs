//! Synchronous writes, performed by the agent on a held thread's behalf.
//!
//! A write through an `O_SYNC`/`O_DSYNC` descriptor, or a pwritev2 with
//! `RWF_SYNC`/`RWF_DSYNC`, is durable when it returns, so the barrier must hold its
//! *return* until the peer has it. Seccomp stops a call before it runs, and
//! `CONTINUE` gives up control for good, so the agent runs such a write itself, on
//! the caller's own open file description (pidfd_getfd: same position, same
//! flags), from a thread the capture probes watch although the agent's other
//! writes are not (`CAPTURED_TIDS`); then it holds the result until the peer has
//! what was written, and returns it ([`Outcome::Wrote`]).
//!
//! Seccomp cannot see a descriptor's flags, only its number. So the filter traps
//! opens that ask for `O_DSYNC` (part of `O_SYNC`); the agent opens the file as
//! the caller would ([`open`]) and places it in the caller at a number in
//! the caller's reserved range ([`super::filter::reserved_fds`]), where the filter traps writes; `dup` and `fcntl(F_DUPFD)` of
//! such a descriptor are placed there too. A descriptor that lands in the range
//! without `O_DSYNC` (a process with 65,000 files open) has its writes trapped and
//! let through untouched.
//!
//! Not covered: a copy made with dup2/dup3, received over a unix socket or
//! inherited by a process outside the barrier, and sendfile, splice or
//! copy_file_range into the file: those write unheld (they are still replicated).

mod open;
mod remote;

use std::{
    ffi::CString,
    fs::File,
    io,
    ops::Range,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::fs::MetadataExt,
    },
};

use self::{
    open::{Base, Impersonator, OpenHow, Request},
    remote::read_into,
};
use super::{
    FileId,
    notify::{self, Response},
};

/// The most a proxied write copies from the caller at once: a longer write
/// returns short, as writes may, and the caller writes the rest.
const MAX_WRITE: usize = 16 << 20;
/// `IOV_MAX`: more vectors make the kernel fail the call, so we let it.
const IOV_MAX: u64 = 1024;

/// A trapped call the proxy handles.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Call {
    /// open (`dirfd` = `AT_FDCWD`) or openat with `O_DSYNC` in `flags`.
    Open {
        dirfd: i32,
        path: u64,
        flags: i32,
        mode: u32,
    },
    /// openat2: `how` points to a `struct open_how` of `size` bytes.
    Openat2 {
        dirfd: i32,
        path: u64,
        how: u64,
        size: u64,
    },
    Write(Write),
    /// dup, or fcntl with `F_DUPFD`/`F_DUPFD_CLOEXEC` (lowest number `min`).
    Dup {
        fd: i32,
        min: u32,
        cloexec: bool,
    },
    /// Any other fcntl of a reserved descriptor: none of our business.
    OtherFcntl,
}

/// A write-family call.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Write {
    pub(crate) fd: i32,
    pub(crate) how: WriteHow,
    /// The buffer, or the iovec array for the vector calls.
    pub(crate) addr: u64,
    /// Bytes, or iovec count for the vector calls.
    pub(crate) count: u64,
    /// The offset of the positioned calls; -1 for pwritev2 means the file position.
    pub(crate) pos: i64,
    /// pwritev2's `RWF_*` flags.
    pub(crate) rwf: i32,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum WriteHow {
    Write,
    Pwrite,
    Writev,
    Pwritev,
    Pwritev2,
}

/// What became of a call.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Outcome {
    /// The caller must be answered so (let it run, a value, an error).
    Respond(Response),
    /// The proxy wrote `ret` bytes to `file`, the caller's descriptor `fd`, for
    /// the caller: hold the answer (`ret`) until the peer has them.
    Wrote { fd: i32, ret: i64, file: FileId },
    /// Answered already (a descriptor was placed in the caller).
    Answered { reserved: bool },
    /// The caller is gone.
    Vanished,
}

/// The proxy's state: the impersonation context and a reusable buffer. Lives on
/// one thread ([`Proxy::new`] unshares that thread's file-system context).
pub(crate) struct Proxy {
    impersonator: Impersonator,
    buf: Vec<u8>,
    iov: Vec<u8>,
}

/// The calls the filter sends for the proxy (x86_64 numbers); `None` otherwise.
pub(crate) fn decode(nr: i64, args: &[u64; 6]) -> Option<Call> {
    // Descriptors and flags are C ints in 64-bit registers: the low 32 bits count.
    let int = |i: usize| args[i] as u32 as i32;
    let write = |how, pos, rwf| {
        Call::Write(Write {
            fd: int(0),
            how,
            addr: args[1],
            count: args[2],
            pos,
            rwf,
        })
    };
    let call = match nr {
        libc::SYS_open => Call::Open {
            dirfd: libc::AT_FDCWD,
            path: args[0],
            flags: int(1),
            mode: args[2] as u32,
        },
        libc::SYS_openat => Call::Open {
            dirfd: int(0),
            path: args[1],
            flags: int(2),
            mode: args[3] as u32,
        },
        libc::SYS_openat2 => Call::Openat2 {
            dirfd: int(0),
            path: args[1],
            how: args[2],
            size: args[3],
        },
        libc::SYS_write => write(WriteHow::Write, 0, 0),
        libc::SYS_pwrite64 => write(WriteHow::Pwrite, args[3] as i64, 0),
        libc::SYS_writev => write(WriteHow::Writev, 0, 0),
        // On x86_64 pos_l holds the whole offset (the kernel shifts pos_h out).
        libc::SYS_pwritev => write(WriteHow::Pwritev, args[3] as i64, 0),
        libc::SYS_pwritev2 => write(WriteHow::Pwritev2, args[3] as i64, int(5)),
        libc::SYS_dup => Call::Dup {
            fd: int(0),
            min: 0,
            cloexec: false,
        },
        libc::SYS_fcntl => match int(1) {
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => Call::Dup {
                fd: int(0),
                min: args[2] as u32,
                cloexec: int(1) == libc::F_DUPFD_CLOEXEC,
            },
            _ => Call::OtherFcntl,
        },
        _ => return None,
    };
    Some(call)
}

impl Proxy {
    /// Sets up the current thread as the proxy thread.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            impersonator: Impersonator::new()?,
            buf: Vec::new(),
            iov: Vec::new(),
        })
    }

    /// Performs `call` of thread `tid`, held as notification `id` on `listener`.
    /// Failures of our own (the caller's memory unreadable, a vanished directory)
    /// let the call run as it is: the kernel then gives the caller the real error,
    /// or the call succeeds unheld, which `Outcome::Respond(Continue)` reports.
    pub(crate) fn perform(
        &mut self,
        listener: BorrowedFd<'_>,
        id: u64,
        tid: u32,
        call: Call,
        reserved: &Range<u32>,
    ) -> Outcome {
        // A pidfd first, then the validity check: after it, the pidfd is known to
        // name our caller and not a process that reused its id.
        let Ok(pidfd) = remote::pidfd(tid) else {
            return Outcome::Vanished;
        };
        if !notify::id_valid(listener, id) {
            return Outcome::Vanished;
        }
        let result = match call {
            Call::Write(w) => self.write(tid, &pidfd, w),
            Call::Open { .. } | Call::Openat2 { .. } => {
                self.open(listener, id, tid, &pidfd, call, reserved)
            }
            Call::Dup { fd, min, cloexec } => {
                let to = Placement {
                    reserved,
                    min,
                    cloexec,
                };
                dup(listener, id, tid, &pidfd, fd, &to)
            }
            Call::OtherFcntl => Ok(Outcome::Respond(Response::Continue)),
        };
        result.unwrap_or_else(|e| {
            tracing::debug!(error = %e, tid, ?call, "cannot proxy a call; letting it run unheld");
            Outcome::Respond(Response::Continue)
        })
    }

    fn write(&mut self, tid: u32, pidfd: &OwnedFd, w: Write) -> io::Result<Outcome> {
        let Ok(file) = remote::getfd(pidfd, w.fd) else {
            // Not a descriptor of the caller: the kernel will say so.
            return Ok(Outcome::Respond(Response::Continue));
        };
        let file = File::from(file);
        let status = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
        let sync_flags = libc::RWF_SYNC | libc::RWF_DSYNC;
        let synchronous =
            status & libc::O_DSYNC != 0 || (w.how == WriteHow::Pwritev2 && w.rwf & sync_flags != 0);
        let meta = file.metadata()?;
        if !synchronous || !meta.file_type().is_file() {
            // An ordinary descriptor in the range, or a synchronous one that is not a
            // regular file (capture replicates regular files only).
            return Ok(Outcome::Respond(Response::Continue));
        }
        let positioned = matches!(w.how, WriteHow::Pwrite | WriteHow::Pwritev);
        if positioned && w.pos < 0 {
            return Ok(Outcome::Respond(Response::Error(libc::EINVAL)));
        }
        if !self.gather(tid, w)? {
            return Ok(Outcome::Respond(Response::Error(libc::EFAULT)));
        }
        let ret = match w.how {
            // The vector calls are written as one buffer: one call, one position
            // update, like the original.
            WriteHow::Write | WriteHow::Writev => nix::unistd::write(&file, &self.buf),
            WriteHow::Pwrite | WriteHow::Pwritev => nix::sys::uio::pwrite(&file, &self.buf, w.pos),
            WriteHow::Pwritev2 => pwritev2(&file, &self.buf, w.pos, w.rwf),
        };
        Ok(match ret {
            Ok(0) => Outcome::Respond(Response::Value(0)),
            Ok(n) => Outcome::Wrote {
                fd: w.fd,
                ret: i64::try_from(n).unwrap_or(i64::MAX),
                file: FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                },
            },
            Err(errno) => Outcome::Respond(Response::Error(errno as i32)),
        })
    }

    /// Copies the caller's data into `self.buf`, up to `MAX_WRITE`: the buffer of
    /// a plain write, the buffers of a vector one. Returns false if none could be
    /// read although some were named.
    fn gather(&mut self, tid: u32, w: Write) -> io::Result<bool> {
        self.buf.clear();
        let segments: Vec<(u64, u64)> = match w.how {
            WriteHow::Write | WriteHow::Pwrite => vec![(w.addr, w.count)],
            WriteHow::Writev | WriteHow::Pwritev | WriteHow::Pwritev2 => {
                if w.count > IOV_MAX {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                let n = usize::try_from(w.count).unwrap_or(0);
                if read_into(tid, w.addr, n * 16, &mut self.iov)? < n * 16 {
                    return Ok(false);
                }
                self.iov
                    .chunks_exact(16)
                    .map(|v| {
                        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
                        (word(&v[..8]), word(&v[8..]))
                    })
                    .collect()
            }
        };
        let mut piece = Vec::new();
        let mut wanted = 0usize;
        for (base, len) in segments {
            let room = MAX_WRITE - self.buf.len();
            let len = usize::try_from(len).unwrap_or(room).min(room);
            if len == 0 {
                continue;
            }
            wanted += len;
            read_into(tid, base, len, &mut piece)?;
            self.buf.extend_from_slice(&piece);
            // A short read ends the write there, as a fault in the kernel's copy would.
            if piece.len() < len || self.buf.len() >= MAX_WRITE {
                break;
            }
        }
        Ok(wanted == 0 || !self.buf.is_empty())
    }

    fn open(
        &mut self,
        listener: BorrowedFd<'_>,
        id: u64,
        tid: u32,
        pidfd: &OwnedFd,
        call: Call,
        reserved: &Range<u32>,
    ) -> io::Result<Outcome> {
        let (dirfd, path, flags, mode, resolve) = match call {
            Call::Open {
                dirfd,
                path,
                flags,
                mode,
            } => (dirfd, path, flags, mode, None),
            Call::Openat2 {
                dirfd,
                path,
                how,
                size,
            } => {
                // Another size is a newer or malformed open_how: the kernel judges it.
                if size != size_of::<OpenHow>() as u64 {
                    return Ok(Outcome::Respond(Response::Continue));
                }
                let mut raw = Vec::new();
                if read_into(tid, how, size_of::<OpenHow>(), &mut raw)? < size_of::<OpenHow>() {
                    return Ok(Outcome::Respond(Response::Continue));
                }
                let word = |i: usize| {
                    u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or_default())
                };
                let (flags, mode, resolve) = (word(0), word(1), word(2));
                // Bits above the 32 an int holds make the kernel fail the call.
                let (Ok(flags), Ok(mode)) = (i32::try_from(flags), u32::try_from(mode)) else {
                    return Ok(Outcome::Respond(Response::Continue));
                };
                (dirfd, path, flags, mode, Some(resolve))
            }
            _ => return Ok(Outcome::Respond(Response::Continue)),
        };
        if flags & libc::O_DSYNC == 0 || reserved.is_empty() {
            return Ok(Outcome::Respond(Response::Continue));
        }
        let Some(path) = remote::read_path(tid, path)? else {
            return Ok(Outcome::Respond(Response::Continue));
        };
        let Ok(path) = CString::new(path) else {
            return Ok(Outcome::Respond(Response::Continue));
        };
        let absolute = path.as_bytes().first() == Some(&b'/');
        let base = match (absolute, dirfd) {
            (true, _) => None,
            (false, libc::AT_FDCWD) => Some(Base::Cwd(proc_dir(tid, "cwd")?)),
            (false, fd) => Some(Base::Dir(remote::getfd(pidfd, fd)?)),
        };
        let root = proc_dir(tid, "root")?;
        let creds = remote::creds(tid)?;
        let request = Request {
            path,
            flags,
            mode,
            resolve,
        };
        let nonblocking = flags & libc::O_NONBLOCK != 0;
        let opened = match self
            .impersonator
            .open(&root, base.as_ref(), &creds, &request)?
        {
            Ok(fd) => fd,
            // A magic link (which would have named the agent's own file), or flags
            // openat2 is stricter about than open: the caller's own open decides.
            Err(libc::ELOOP | libc::EINVAL) => return Ok(Outcome::Respond(Response::Continue)),
            // A FIFO without a reader: the caller's own open waits for one.
            Err(libc::ENXIO | libc::EAGAIN) if !nonblocking => {
                return Ok(Outcome::Respond(Response::Continue));
            }
            Err(errno) => return Ok(Outcome::Respond(Response::Error(errno))),
        };
        // Only regular files outside procfs are ours to place (capture replicates
        // nothing else); anything else is opened again by the caller itself.
        let regular = nix::sys::stat::fstat(&opened)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        let procfs = nix::sys::statfs::fstatfs(&opened)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        if !regular || procfs {
            return Ok(Outcome::Respond(Response::Continue));
        }
        if !nonblocking {
            let status = nix::fcntl::fcntl(&opened, nix::fcntl::FcntlArg::F_GETFL)?;
            let status = nix::fcntl::OFlag::from_bits_retain(status & !libc::O_NONBLOCK);
            nix::fcntl::fcntl(&opened, nix::fcntl::FcntlArg::F_SETFL(status))?;
        }
        let to = Placement {
            reserved,
            min: 0,
            cloexec: flags & libc::O_CLOEXEC != 0,
        };
        place(listener, id, tid, opened.as_fd(), &to)
    }
}

/// dup or fcntl(F_DUPFD) of a reserved descriptor: the copy goes to the range too
/// when the original is synchronous.
fn dup(
    listener: BorrowedFd<'_>,
    id: u64,
    tid: u32,
    pidfd: &OwnedFd,
    fd: i32,
    to: &Placement<'_>,
) -> io::Result<Outcome> {
    let Ok(file) = remote::getfd(pidfd, fd) else {
        return Ok(Outcome::Respond(Response::Continue));
    };
    let status = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    if status & libc::O_DSYNC == 0 || to.min >= to.reserved.end {
        return Ok(Outcome::Respond(Response::Continue));
    }
    place(listener, id, tid, file.as_fd(), to)
}

/// Where a descriptor placed in the caller goes.
struct Placement<'a> {
    reserved: &'a Range<u32>,
    /// The lowest number allowed (fcntl's `F_DUPFD` argument).
    min: u32,
    cloexec: bool,
}

/// Installs `file` in the caller at the highest free number of the reserved range
/// (not below `min`) and answers the call with it. With the range full, or above
/// the caller's descriptor limit, the file goes to the lowest free number instead:
/// the caller gets what it asked for, and its writes are not held.
fn place(
    listener: BorrowedFd<'_>,
    id: u64,
    tid: u32,
    file: BorrowedFd<'_>,
    to: &Placement<'_>,
) -> io::Result<Outcome> {
    let cloexec = to.cloexec;
    let used = remote::open_fds(tid)?;
    let free = to
        .reserved
        .clone()
        .rev()
        .take_while(|&n| n >= to.min)
        .find(|n| !used.contains(n));
    if let Some(at) = free {
        match notify::add_fd_and_answer(listener, id, file, Some(at), cloexec) {
            Ok(_) => return Ok(Outcome::Answered { reserved: true }),
            // EBADF/EMFILE: the number is beyond the caller's RLIMIT_NOFILE.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::EMFILE)) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Outcome::Vanished),
            Err(e) => return Err(e),
        }
    }
    match notify::add_fd_and_answer(listener, id, file, None, cloexec) {
        Ok(_) => Ok(Outcome::Answered { reserved: false }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Outcome::Vanished),
        // EMFILE: the caller has no descriptor left, which its own open would have met.
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
            Ok(Outcome::Respond(Response::Error(libc::EMFILE)))
        }
        Err(e) => Err(e),
    }
}

/// `/proc/<tid>/<name>` (root or cwd) as an `O_PATH` directory.
fn proc_dir(tid: u32, name: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(format!("/proc/{tid}/{name}"))
}

fn pwritev2(file: &File, buf: &[u8], pos: i64, flags: i32) -> nix::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec points to `buf`, which outlives the call and which the
    // kernel only reads; pwritev2 returns the bytes written or -1.
    let n = unsafe { libc::pwritev2(file.as_raw_fd(), &raw const iov, 1, pos, flags) };
    if n < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_each_call_from_its_own_arguments() {
        let args = [7, 0x1000, 3, 4096, 0, libc::RWF_DSYNC as u64];
        assert_eq!(
            decode(libc::SYS_pwritev2, &args),
            Some(Call::Write(Write {
                fd: 7,
                how: WriteHow::Pwritev2,
                addr: 0x1000,
                count: 3,
                pos: 4096,
                rwf: libc::RWF_DSYNC,
            }))
        );
        let open = [
            0x2000,
            (libc::O_WRONLY | libc::O_DSYNC) as u64,
            0o640,
            0,
            0,
            0,
        ];
        assert_eq!(
            decode(libc::SYS_open, &open),
            Some(Call::Open {
                dirfd: libc::AT_FDCWD,
                path: 0x2000,
                flags: libc::O_WRONLY | libc::O_DSYNC,
                mode: 0o640,
            })
        );
        // AT_FDCWD arrives as a 64-bit register holding the int -100.
        let at = [(-100i64) as u64, 0x2000, libc::O_SYNC as u64, 0, 0, 0];
        assert!(matches!(
            decode(libc::SYS_openat, &at),
            Some(Call::Open {
                dirfd: libc::AT_FDCWD,
                ..
            })
        ));
        let fcntl =
            |cmd: i32, arg: u64| decode(libc::SYS_fcntl, &[65500, cmd as u64, arg, 0, 0, 0]);
        assert_eq!(
            fcntl(libc::F_DUPFD_CLOEXEC, 10),
            Some(Call::Dup {
                fd: 65500,
                min: 10,
                cloexec: true
            })
        );
        assert_eq!(fcntl(libc::F_SETFL, 0), Some(Call::OtherFcntl));
        assert_eq!(decode(libc::SYS_fsync, &args), None);
    }
}
