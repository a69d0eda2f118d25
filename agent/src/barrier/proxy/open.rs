//! Opening a file as a held thread would have: from its root directory and its
//! working directory (or the directory descriptor it passed), with its
//! file-system uid, gid, groups, effective capabilities and umask.
//!
//! Root, working directory and umask belong to a thread's `fs_struct`, and the
//! credentials to the thread itself, so the proxy thread unshares its `fs_struct`
//! once ([`Impersonator::new`]) and changes them around each open without touching
//! the rest of the agent. The caller's root is `/proc/<tid>/root`: a path in the
//! caller's own mount namespace, so the walk sees the container's mounts too.
//! Not reproduced: the caller's LSM profile (AppArmor, SELinux).

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
};

use super::remote::Creds;

/// The proxy thread's own root, working directory, umask and groups, to return to
/// after each open.
pub(super) struct Impersonator {
    root: File,
    cwd: File,
    umask: libc::mode_t,
    groups: Vec<libc::gid_t>,
    fsuid: libc::uid_t,
    fsgid: libc::gid_t,
    /// Our effective capabilities, to return to.
    caps: u64,
}

/// Where the caller's path starts.
pub(super) enum Base {
    /// The caller's working directory (`AT_FDCWD`), as `/proc/<tid>/cwd`.
    Cwd(File),
    /// A directory descriptor the caller passed, copied with pidfd_getfd.
    Dir(OwnedFd),
}

/// What the caller asked for.
pub(super) struct Request {
    pub(super) path: CString,
    pub(super) flags: i32,
    pub(super) mode: u32,
    /// openat2's `resolve` flags; `None` for open and openat.
    pub(super) resolve: Option<u64>,
}

/// openat2's `RESOLVE_NO_MAGICLINKS` (not in libc).
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// openat2's argument, `struct open_how` (`OPEN_HOW_SIZE_VER0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct OpenHow {
    pub(super) flags: u64,
    pub(super) mode: u64,
    pub(super) resolve: u64,
}

const _: () = assert!(size_of::<OpenHow>() == 24);

impl Impersonator {
    /// Unshares the current thread's root, working directory and umask from the
    /// rest of the process. Call on the thread that will open files, once.
    pub(super) fn new() -> io::Result<Self> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        let path = |p: &str| {
            File::options()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(p)
        };
        let root = path("/")?;
        let cwd = path(".")?;
        // SAFETY: umask only swaps this thread's (now unshared) file-creation mask.
        let umask = unsafe { libc::umask(0o022) };
        // SAFETY: as above, putting the old value back.
        unsafe { libc::umask(umask) };
        let groups = nix::unistd::getgroups()?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Self {
            root,
            cwd,
            umask,
            groups,
            // The file-system ids follow the effective ones unless changed.
            fsuid: nix::unistd::geteuid().as_raw(),
            fsgid: nix::unistd::getegid().as_raw(),
            caps: effective_caps()?,
        })
    }

    /// Opens `request` from `root` and `base` as `creds`; returns the new fd or
    /// the errno the open failed with. The thread is back to its own state
    /// afterwards, also on failure.
    pub(super) fn open(
        &self,
        root: &File,
        base: Option<&Base>,
        creds: &Creds,
        request: &Request,
    ) -> io::Result<Result<OwnedFd, i32>> {
        enter_root(root)?;
        let result = self.as_caller(creds, || {
            let dirfd = match base {
                None => libc::AT_FDCWD,
                Some(Base::Cwd(f)) => f.as_raw_fd(),
                Some(Base::Dir(f)) => f.as_raw_fd(),
            };
            // Our copy is close-on-exec whatever the caller wants; the copy placed in
            // the caller gets its own flags. O_NONBLOCK keeps a FIFO's open from
            // blocking this thread; `open` takes it off again for a regular file.
            // RESOLVE_NO_MAGICLINKS: `/proc/self/...` and `/dev/stdout` would name
            // the agent's own files here, not the caller's.
            let flags = request.flags | libc::O_CLOEXEC | libc::O_NONBLOCK;
            // openat2 refuses a mode without a file to create; openat ignores it.
            let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
            let how = OpenHow {
                flags: flags as u32 as u64,
                mode: if creates { u64::from(request.mode) } else { 0 },
                resolve: request.resolve.unwrap_or(0) | RESOLVE_NO_MAGICLINKS,
            };
            // SAFETY: path is NUL-terminated and `how` a live open_how whose size we
            // pass; openat2 returns a new fd or -1.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dirfd,
                    request.path.as_ptr(),
                    &raw const how,
                    size_of::<OpenHow>(),
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO));
            }
            let fd = RawFd::try_from(fd).map_err(|_| libc::EBADF)?;
            // SAFETY: the kernel just returned this new fd, which nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        });
        // Our own root comes back whatever happened: a later open must not start from
        // a previous caller's.
        self.leave_root()?;
        result
    }

    /// Runs `f` with the caller's file-system ids, groups, capabilities and umask.
    /// Fails, without running `f`, if the caller's groups or capabilities can't be
    /// taken on: opening with ours (root's) could grant what the caller lacks.
    fn as_caller<T>(&self, creds: &Creds, f: impl FnOnce() -> T) -> io::Result<T> {
        // The raw system call changes this thread only; glibc's setgroups would
        // change every thread of the agent.
        set_groups(&creds.groups)?;
        // SAFETY: setfsgid/setfsuid/umask change only this thread's credentials and
        // (unshared) file-creation mask. The gid goes first: a non-root fsuid could
        // lose the right to change it.
        unsafe {
            libc::setfsgid(creds.fsgid);
            libc::setfsuid(creds.fsuid);
            libc::umask(creds.umask as libc::mode_t);
        }
        // The caller's capabilities, not ours: a container's root without
        // CAP_DAC_OVERRIDE must not open what its permissions refuse. Our own
        // (root's) are a superset, so this only lowers them. If it fails, nothing
        // is opened.
        let out = set_effective_caps(creds.caps & self.caps).map(|()| f());
        // Capabilities first: capset accepts any subset of the permitted ones
        // whatever the fsuid, and setfsuid(0) below restores the file-system ones.
        let restored = set_effective_caps(self.caps);
        // SAFETY: as above, back to ours.
        unsafe {
            libc::setfsuid(self.fsuid);
            libc::setfsgid(self.fsgid);
            libc::umask(self.umask);
        }
        set_groups(&self.groups)?;
        restored?;
        out
    }

    fn leave_root(&self) -> io::Result<()> {
        nix::unistd::fchdir(&self.root)?;
        nix::unistd::chroot(".")?;
        nix::unistd::fchdir(&self.cwd)?;
        Ok(())
    }
}

/// Makes `root` this thread's root and working directory.
fn enter_root(root: &File) -> io::Result<()> {
    nix::unistd::fchdir(root)?;
    nix::unistd::chroot(".")?;
    Ok(())
}

/// `struct __user_cap_header_struct` with `_LINUX_CAPABILITY_VERSION_3`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 takes two, low and high 32 bits.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn cap_get() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two cap data structs for this thread (pid 0) to the
    // pointer, which points to two.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// This thread's effective capabilities as one mask.
fn effective_caps() -> io::Result<u64> {
    let d = cap_get()?;
    Ok(u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))
}

/// Sets this thread's effective capabilities (a subset of its permitted ones).
fn set_effective_caps(mask: u64) -> io::Result<()> {
    let mut d = cap_get()?;
    d[0].effective = mask as u32;
    d[1].effective = (mask >> 32) as u32;
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads two cap data structs from the pointer, which points to
    // two; with pid 0 it changes only the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, d.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the raw setgroups reads `len` gids from the pointer, which points to
    // that many; it changes only the calling thread's credentials.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
