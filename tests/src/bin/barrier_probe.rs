//! The Docker barrier tests' application: makes each durability call the barrier
//! knows, with and without the flag that makes it one, and prints one line per call:
//! `NAME=RESULT` (0, or the errno name), in a fixed order. The calls with the flag
//! must be held by the barrier, the others must not reach it.
//!
//! Usage: `barrier-probe FILE` (FILE is created; it must be on a real filesystem).

use std::{ffi::CString, io, os::unix::ffi::OsStrExt};

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: barrier-probe FILE");
        std::process::exit(2);
    };
    let Ok(cpath) = CString::new(path.as_bytes()) else {
        std::process::exit(2);
    };
    // SAFETY: cpath is a valid C string; the flags and mode are plain values.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o644) };
    if fd < 0 {
        eprintln!("barrier-probe: open: {}", io::Error::last_os_error());
        std::process::exit(1);
    }
    let buf = [7u8; 4096];
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    for (name, flags) in [
        ("pwritev2_plain", 0),
        ("pwritev2_dsync", libc::RWF_DSYNC),
        ("pwritev2_sync", libc::RWF_SYNC),
    ] {
        // SAFETY: iov points at buf, which outlives the call.
        report(name, unsafe { libc::pwritev2(fd, &iov, 1, 0, flags) });
    }
    // SAFETY: a fresh shared mapping of the first page of the file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        eprintln!("barrier-probe: mmap: {}", io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: map is a live 4096-byte mapping.
    report(
        "msync_async",
        unsafe { libc::msync(map, 4096, libc::MS_ASYNC) } as isize,
    );
    // SAFETY: as above.
    report(
        "msync_sync",
        unsafe { libc::msync(map, 4096, libc::MS_SYNC) } as isize,
    );
    // SAFETY: as above; not used afterwards.
    unsafe { libc::munmap(map, 4096) };
    // SAFETY: plain fd and range arguments.
    report(
        "sfr_write",
        unsafe { libc::sync_file_range(fd, 0, 4096, libc::SYNC_FILE_RANGE_WRITE) } as isize,
    );
    let all = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: as above.
    report(
        "sfr_wait",
        unsafe { libc::sync_file_range(fd, 0, 4096, all) } as isize,
    );
    // SAFETY: fd is open.
    report("fdatasync", unsafe { libc::fdatasync(fd) } as isize);
    // SAFETY: fd is open.
    report("syncfs", unsafe { libc::syncfs(fd) } as isize);
    // SAFETY: sync takes no arguments and can't fail.
    unsafe { libc::sync() };
    println!("sync=0");
    let mut params = [0u8; 120];
    // SAFETY: params is a zeroed io_uring_params-sized buffer the kernel may write.
    let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    report("io_uring_setup", ring as isize);
    // A synchronous file: the agent opens it into the reserved descriptors (far
    // above the few this program has open), and holds each pwrite's return (a
    // container's write(2) can't be held: runc refuses to trap write).
    let Ok(spath) = CString::new([path.as_bytes(), b".dsync"].concat()) else {
        std::process::exit(2);
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_DSYNC;
    // SAFETY: spath is a valid C string; the flags and mode are plain values.
    let sfd = unsafe { libc::open(spath.as_ptr(), flags, 0o644) };
    report("open_dsync", sfd.min(0) as isize);
    println!("reserved_fd={}", i32::from(sfd > 1024));
    // SAFETY: buf outlives the call.
    let n = unsafe { libc::pwrite(sfd, buf.as_ptr().cast(), buf.len(), 0) };
    report("pwrite_dsync", n.min(0));
    // SAFETY: an ordinary write on the first fd: not held.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    report("write_plain", n.min(0));
}

fn report(name: &str, rc: isize) {
    if rc < 0 {
        let e = io::Error::last_os_error();
        let code = e.raw_os_error().unwrap_or(0);
        let text = match code {
            libc::ENOSYS => "ENOSYS".to_owned(),
            libc::EPERM => "EPERM".to_owned(),
            other => format!("errno{other}"),
        };
        println!("{name}={text}");
    } else {
        println!("{name}=0");
    }
}
