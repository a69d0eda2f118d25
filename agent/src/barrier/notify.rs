//! The seccomp user-notification ioctls on a listener fd: receive a notification,
//! check that it is still valid, let the held call continue.
//!
//! The structures come from libc. The kernel may some day report larger ones
//! (`SECCOMP_GET_NOTIF_SIZES`); the buffers are sized from its answer, as
//! seccomp_unotify(2) asks, and we read only the prefix we know.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use super::BarrierError;

/// A received notification, reduced to what the barrier uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Notification {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) nr: i32,
    pub(crate) args: [u64; 6],
}

/// The receive buffer and response size of the running kernel.
#[derive(Debug)]
pub(crate) struct Buffers {
    // u64 elements keep the buffers 8-byte aligned, as the structures require.
    notif: Vec<u64>,
    resp_len: usize,
}

// === impl Buffers ===

impl Buffers {
    /// Asks the kernel for its structure sizes and allocates buffers of that size.
    pub(crate) fn for_running_kernel() -> Result<Self, BarrierError> {
        let mut sizes = libc::seccomp_notif_sizes {
            seccomp_notif: 0,
            seccomp_notif_resp: 0,
            seccomp_data: 0,
        };
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes to the pointer,
        // which points to a live, writable value of that type.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_NOTIF_SIZES,
                0,
                &raw mut sizes,
            )
        };
        if rc != 0 {
            return Err(BarrierError::NotifSizes(io::Error::last_os_error()));
        }
        let notif = usize::from(sizes.seccomp_notif);
        let resp = usize::from(sizes.seccomp_notif_resp);
        for (kernel, ours) in [
            (notif, size_of::<libc::seccomp_notif>()),
            (resp, size_of::<libc::seccomp_notif_resp>()),
        ] {
            if kernel < ours {
                return Err(BarrierError::KernelNotifSize { kernel, ours });
            }
        }
        Ok(Self {
            notif: vec![0; notif.div_ceil(8)],
            resp_len: resp,
        })
    }

    /// `SECCOMP_IOCTL_NOTIF_RECV`. Call only when poll reported the fd readable:
    /// otherwise it blocks until a notification arrives.
    pub(crate) fn receive(&mut self, listener: BorrowedFd<'_>) -> io::Result<Notification> {
        // The kernel requires the buffer to be zeroed on entry.
        self.notif.fill(0);
        // SAFETY: the buffer is at least the kernel's seccomp_notif size (checked in
        // for_running_kernel), writable and 8-byte aligned; the ioctl writes at most that.
        let rc = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                self.notif.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the buffer holds at least size_of::<seccomp_notif>() initialised bytes,
        // is suitably aligned, and seccomp_notif is plain data valid for any bit pattern.
        let n = unsafe { self.notif.as_ptr().cast::<libc::seccomp_notif>().read() };
        Ok(Notification {
            id: n.id,
            pid: n.pid,
            nr: n.data.nr,
            args: n.data.args,
        })
    }

    /// The kernel's size of `seccomp_notif_resp`, for [`send_response`].
    pub(crate) fn resp_len(&self) -> usize {
        self.resp_len
    }
}

/// How a held call is answered.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Response {
    /// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the call runs for real now.
    Continue,
    /// The call returns this value without running (the agent ran it already).
    Value(i64),
    /// The call fails with this errno without running.
    Error(i32),
}

/// Answers notification `id`. `resp_len` is the kernel's response size
/// ([`Buffers::resp_len`]). `ENOENT` means the caller is gone (killed while held)
/// or was answered already.
pub(crate) fn send_response(
    listener: BorrowedFd<'_>,
    id: u64,
    resp_len: usize,
    response: Response,
) -> io::Result<()> {
    // u64 elements keep the buffer aligned; zeroed, so kernel fields we don't know
    // about are 0. It lives on the heap only if a future kernel grows the struct.
    let mut stack = [0u64; 8];
    let mut heap = Vec::new();
    let words = resp_len
        .div_ceil(8)
        .max(size_of::<libc::seccomp_notif_resp>().div_ceil(8));
    let buf: &mut [u64] = if words <= stack.len() {
        &mut stack[..words]
    } else {
        heap.resize(words, 0);
        &mut heap
    };
    let (val, error, flags) = match response {
        Response::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Response::Value(v) => (v, 0, 0),
        // The kernel wants the error negated, as a system call returns it.
        Response::Error(errno) => (0, -errno.abs(), 0),
    };
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: the buffer is at least size_of::<seccomp_notif_resp>() bytes, aligned,
    // and writable; the struct is plain data.
    unsafe {
        buf.as_mut_ptr()
            .cast::<libc::seccomp_notif_resp>()
            .write(resp)
    };
    // SAFETY: the ioctl reads one kernel-sized seccomp_notif_resp from the buffer,
    // which is at least that large.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            buf.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND`: installs `src` in the
/// caller as its descriptor `at` (or as the lowest free one with `None`) and
/// answers notification `id` with that number, in one step. `cloexec` sets
/// `FD_CLOEXEC` on the caller's copy.
pub(crate) fn add_fd_and_answer(
    listener: BorrowedFd<'_>,
    id: u64,
    src: BorrowedFd<'_>,
    at: Option<u32>,
    cloexec: bool,
) -> io::Result<i32> {
    let mut flags = libc::SECCOMP_ADDFD_FLAG_SEND as u32;
    if at.is_some() {
        flags |= libc::SECCOMP_ADDFD_FLAG_SETFD as u32;
    }
    let addfd = libc::seccomp_notif_addfd {
        id,
        flags,
        srcfd: src.as_raw_fd() as u32,
        newfd: at.unwrap_or(0),
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the ioctl reads one seccomp_notif_addfd from the pointer, which points
    // to a live value of that type; it returns the caller's new fd number or -1.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ADDFD,
            &raw const addfd,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: whether the task that raised `id` is still
/// waiting. Checked after reading `/proc/<pid>/...` so that a pid reused by another
/// process can't lend us its files.
pub(crate) fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64 from the pointer, which points to a live u64.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &raw const id,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libc's ioctl numbers must match the kernel's `_IOWR('!', 0, struct seccomp_notif)`
    /// etc.; a wrong direction or size would make every ioctl fail with EINVAL.
    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(size_of::<libc::seccomp_notif>(), 80);
        assert_eq!(size_of::<libc::seccomp_notif_resp>(), 24);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_RECV, 0xC050_2100);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_SEND, 0xC018_2101);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_ID_VALID, 0x4008_2102);
        assert_eq!(size_of::<libc::seccomp_notif_addfd>(), 24);
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_ADDFD, 0x4018_2103);
    }

    #[test]
    fn buffers_fit_the_running_kernel() {
        let b = Buffers::for_running_kernel().expect("sizes");
        assert!(b.notif.len() * 8 >= size_of::<libc::seccomp_notif>());
        assert!(b.resp_len() >= size_of::<libc::seccomp_notif_resp>());
    }
}
