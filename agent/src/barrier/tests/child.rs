//! The child side of the barrier tests: what a process under the barrier does, as
//! the re-executed test binary. Results go to stdout as `RESULT name ret errno ns`.

use std::{
    fs::OpenOptions,
    io,
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// How many fsyncs the latency benchmark times.
pub(super) const BENCH_CALLS: usize = 10_000;

/// Runs a raw system call wrapper and reports its result and duration.
fn measure(name: &str, f: impl FnOnce() -> i64) {
    let t = Instant::now();
    let ret = f();
    let elapsed = t.elapsed();
    let errno = if ret < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    println!("RESULT {name} {ret} {errno} {}", elapsed.as_nanos());
}

fn tid() -> i64 {
    // SAFETY: gettid has no preconditions.
    i64::from(unsafe { libc::gettid() })
}

/// Every call the filter must hold, and its look-alikes it must let through.
pub(super) fn calls(dir: &Path) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("data"))
        .expect("open");
    let fd = file.as_raw_fd();
    file.set_len(4096).expect("set_len");
    println!("INFO tid {} fd {fd}", tid());
    // The unsafe blocks below are plain system calls on our own fd and mapping, with
    // pointers to live buffers of the sizes given.
    measure("fsync", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::fsync(fd) })
    });
    measure("fdatasync", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::fdatasync(fd) })
    });
    let write = libc::SYNC_FILE_RANGE_WRITE;
    let wait_after = libc::SYNC_FILE_RANGE_WAIT_AFTER;
    measure("sfr_wait", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::sync_file_range(fd, 0, 4096, write | wait_after) })
    });
    measure("sfr_nowait", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::sync_file_range(fd, 0, 4096, write) })
    });
    // SAFETY: a fresh shared mapping of our 4096-byte file.
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
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    // SAFETY: the mapping is 4096 writable bytes.
    unsafe { map.cast::<u8>().write(b'H') };
    measure("msync_sync", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::msync(map, 4096, libc::MS_SYNC) })
    });
    measure("msync_async", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::msync(map, 4096, libc::MS_ASYNC) })
    });
    measure("syncfs", || {
        // SAFETY: see above.
        i64::from(unsafe { libc::syncfs(fd) })
    });
    measure("sync", || {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        0
    });
    let data = *b"hello";
    let iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    measure("pwritev2_dsync", || {
        // SAFETY: iov points to 5 live bytes.
        unsafe { libc::pwritev2(fd, &iov, 1, 0, libc::RWF_DSYNC) as i64 }
    });
    measure("pwritev2_plain", || {
        // SAFETY: iov points to 5 live bytes.
        unsafe { libc::pwritev2(fd, &iov, 1, 0, 0) as i64 }
    });
    let mut params = [0u8; 120]; // struct io_uring_params
    measure("io_uring_setup", || {
        // SAFETY: io_uring_setup reads and writes one io_uring_params at the pointer.
        unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) }
    });
    measure("grandchild", || {
        let status = Command::new("/bin/sh")
            .args(["-c", "sync"])
            .status()
            .expect("spawn sh");
        if status.success() { 0 } else { -1 }
    });
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(map, 4096) };
}

/// One fsync that the consumer never releases.
pub(super) fn one_fsync(dir: &Path) {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("data"))
        .expect("open");
    let fd = file.as_raw_fd();
    // SAFETY: fsync on our own fd.
    measure("fsync", || i64::from(unsafe { libc::fsync(fd) }));
}

/// Two fsyncs: the first is pending while the agent shuts down, the second comes after.
pub(super) fn fsync_twice(dir: &Path) {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("data"))
        .expect("open");
    let fd = file.as_raw_fd();
    // SAFETY: fsync on our own fd.
    measure("first", || i64::from(unsafe { libc::fsync(fd) }));
    // SAFETY: as above.
    measure("second", || i64::from(unsafe { libc::fsync(fd) }));
}

/// Median and p99 of `BENCH_CALLS` fsyncs on tmpfs, printed as `RESULT label median p99 0`.
pub(super) fn bench(dir: &Path, label: &str) {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(label))
        .expect("open");
    let fd = file.as_raw_fd();
    let mut lat: Vec<Duration> = (0..BENCH_CALLS)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: fsync on our own fd.
            let rc = unsafe { libc::fsync(fd) };
            assert_eq!(rc, 0, "fsync");
            t.elapsed()
        })
        .collect();
    lat.sort();
    let median = lat[BENCH_CALLS / 2].as_nanos();
    let p99 = lat[BENCH_CALLS * 99 / 100].as_nanos();
    println!("RESULT {label} {median} {p99} 0");
}
