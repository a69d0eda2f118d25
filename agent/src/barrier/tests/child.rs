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

/// Synchronous files: opened by the agent into the reserved range, written through
/// every write call (each held), duplicated, and opened by an unprivileged process.
pub(super) fn sync_writes(dir: &Path) {
    use std::ffi::CString;
    let cpath = |name: &str| {
        CString::new(dir.join(name).into_os_string().into_encoded_bytes()).expect("path")
    };
    let path = cpath("sync");
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_DSYNC | libc::O_CLOEXEC;
    // The unsafe blocks below are plain system calls with pointers to live buffers
    // of the sizes given and NUL-terminated paths.
    // SAFETY: see above.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o640) };
    println!("RESULT open {fd} 0 0");
    assert!(fd >= 0, "open: {}", io::Error::last_os_error());
    // SAFETY: see above.
    let (fd_flags, status) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFD),
            libc::fcntl(fd, libc::F_GETFL),
        )
    };
    println!(
        "RESULT flags {} {} 0",
        fd_flags & libc::FD_CLOEXEC,
        i32::from(status & libc::O_DSYNC != 0)
    );
    let iov = |parts: &[&[u8]]| -> Vec<libc::iovec> {
        parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            })
            .collect()
    };
    // SAFETY: see above.
    measure("write", || unsafe {
        libc::write(fd, b"hello".as_ptr().cast(), 5) as i64
    });
    // SAFETY: see above.
    measure("pwrite", || unsafe {
        libc::pwrite(fd, b"world".as_ptr().cast(), 5, 100) as i64
    });
    let v = iov(&[b"ab", b"cd"]);
    // SAFETY: see above.
    measure("writev", || unsafe {
        libc::writev(fd, v.as_ptr(), 2) as i64
    });
    let v = iov(&[b"xy", b"z"]);
    // SAFETY: see above.
    measure("pwritev", || unsafe {
        libc::pwritev(fd, v.as_ptr(), 2, 200) as i64
    });
    let v = iov(&[b"q"]);
    // SAFETY: see above (-1: at the file position).
    measure("pwritev2", || unsafe {
        libc::pwritev2(fd, v.as_ptr(), 1, -1, 0) as i64
    });
    // SAFETY: see above.
    let dup = unsafe { libc::dup(fd) };
    println!("RESULT dup {dup} 0 0");
    // SAFETY: see above.
    measure("dup_write", || unsafe {
        libc::write(dup, b"D".as_ptr().cast(), 1) as i64
    });
    // SAFETY: see above: a write from an unmapped address fails as it would unheld.
    measure("write_efault", || unsafe {
        libc::write(fd, 8usize as *const libc::c_void, 5) as i64
    });
    // Relative to the working directory, O_SYNC (which includes O_DSYNC).
    std::env::set_current_dir(dir).expect("chdir");
    let rel = CString::new("rel").expect("path");
    // SAFETY: see above.
    let rel_fd = unsafe {
        libc::open(
            rel.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_SYNC,
            0o600,
        )
    };
    println!("RESULT open_rel {rel_fd} 0 0");
    // SAFETY: see above.
    measure("write_rel", || unsafe {
        libc::write(rel_fd, b"R".as_ptr().cast(), 1) as i64
    });
    // An ordinary file: low number, writes not held.
    let plain = cpath("plain");
    // SAFETY: see above.
    let plain_fd = unsafe { libc::open(plain.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644) };
    println!("RESULT open_plain {plain_fd} 0 0");
    // SAFETY: see above.
    measure("write_plain", || unsafe {
        libc::write(plain_fd, b"P".as_ptr().cast(), 1) as i64
    });
    // A number in the range that is not open: the kernel's own EBADF.
    // SAFETY: see above.
    measure("write_ebadf", || unsafe {
        libc::write(fd - 40, b"x".as_ptr().cast(), 1) as i64
    });
    // /dev/stdout is a link to /proc/self/fd/1: it must be the caller's stdout,
    // never the agent's (the agent refuses magic links and lets the caller open it).
    let stdout = CString::new("/dev/stdout").expect("path");
    // SAFETY: see above.
    let out_fd = unsafe { libc::open(stdout.as_ptr(), libc::O_WRONLY | libc::O_DSYNC) };
    let line = b"RESULT devstdout 7 0 0\n";
    // SAFETY: see above.
    let wrote = unsafe { libc::write(out_fd, line.as_ptr().cast(), line.len()) };
    assert_eq!(wrote, line.len() as isize, "write to /dev/stdout");
    // A FIFO without a reader, opened without blocking: the kernel's own ENXIO.
    let fifo = cpath("fifo");
    // SAFETY: see above.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    measure("fifo_nonblock", || {
        // SAFETY: see above.
        i64::from(unsafe {
            libc::open(
                fifo.as_ptr(),
                libc::O_WRONLY | libc::O_DSYNC | libc::O_NONBLOCK,
            )
        })
    });
    // An unprivileged process (uid/gid 65534) under the same barrier: this test
    // binary again, copied where that user can run it.
    let exe = dir.join("child-exe");
    std::fs::copy(std::env::current_exe().expect("current_exe"), &exe).expect("copy exe");
    let as_other = |setpriv: &[&str], scenario: &str| {
        let status = Command::new("/usr/bin/setpriv")
            .args(setpriv)
            .arg(&exe)
            .args([
                "--exact",
                super::CHILD_TEST,
                "--nocapture",
                "--test-threads=1",
            ])
            .env(super::CHILD_ENV, scenario)
            .env(super::STAGE_ENV, "attached")
            .status()
            .expect("spawn setpriv");
        println!("RESULT {scenario} {} 0 0", status.code().unwrap_or(-1));
    };
    as_other(
        &["--reuid=65534", "--regid=65534", "--clear-groups"],
        "unprivileged",
    );
    // Root without the capabilities that override file permissions (a container's
    // root may lack them): the agent's open for it must not have them either.
    as_other(
        &[
            "--bounding-set=-dac_override,-dac_read_search,-fowner",
            "--inh-caps=-all",
        ],
        "capless",
    );
}

/// As root without `CAP_DAC_OVERRIDE`: the file uid 65534 made (mode 0640) can't be
/// opened for writing.
pub(super) fn capless(dir: &Path) {
    let path = std::ffi::CString::new(dir.join("by-nobody").into_os_string().into_encoded_bytes())
        .expect("path");
    // SAFETY: a NUL-terminated path.
    measure("capless_denied", || unsafe {
        i64::from(libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_DSYNC))
    });
}

/// As uid 65534 with umask 027: a synchronous file it creates is its own, one it
/// may not open stays closed, and its writes are held too.
pub(super) fn unprivileged(dir: &Path) {
    use std::ffi::CString;
    let cpath = |name: &str| {
        CString::new(dir.join(name).into_os_string().into_encoded_bytes()).expect("path")
    };
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o027) };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_DSYNC;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(cpath("by-nobody").as_ptr(), flags, 0o666) };
    println!("RESULT nobody_open {fd} 0 0");
    // SAFETY: a write of 4 live bytes.
    measure("nobody_write", || unsafe {
        libc::write(fd, b"4321".as_ptr().cast(), 4) as i64
    });
    // SAFETY: a NUL-terminated path.
    measure("nobody_denied", || unsafe {
        i64::from(libc::open(
            cpath("secret").as_ptr(),
            libc::O_WRONLY | libc::O_DSYNC,
        ))
    });
}
