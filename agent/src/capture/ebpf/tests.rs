//! Privileged tests of the capture probes: each test loads its own probes (so its
//! maps, exclusions and ring are its own), makes real changes under a tempdir in
//! /tmp (ext4 here) and looks for its own files' events, because other tests run
//! in parallel in the same process.

use std::{
    fs::{self, File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{FileExt, MetadataExt, OpenOptionsExt},
    },
    path::Path,
    time::{Duration, Instant},
};

use agent_common::abi::{self, Event, Key, kernel_dev};

use super::{Probes, Record};

const TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait before concluding that an event will not come.
const QUIET: Duration = Duration::from_millis(300);

fn key_of(path: &Path) -> Key {
    let md = fs::metadata(path).unwrap();
    Key {
        dev: kernel_dev(md.dev()),
        ino: md.ino(),
    }
}

fn watched_dir(probes: &mut Probes) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tandem-ebpf-")
        .tempdir_in("/tmp")
        .unwrap();
    probes.watch(key_of(dir.path()), 7).unwrap();
    dir
}

/// Drains until an event for `key` satisfies `want`, or the timeout; returns all
/// events seen for `key`.
fn wait_for(
    probes: &mut Probes,
    key: Key,
    timeout: Duration,
    want: impl Fn(&Event) -> bool,
) -> (Vec<Event>, bool) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut found = false;
    loop {
        probes.drain(|r| {
            if let Record::Event(e) = r
                && e.dev == key.dev
                && e.ino == key.ino
            {
                found |= want(&e);
                seen.push(e);
            }
        });
        if found || Instant::now() >= deadline {
            return (seen, found);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn expect(probes: &mut Probes, key: Key, what: &str, want: impl Fn(&Event) -> bool) -> Vec<Event> {
    let (seen, found) = wait_for(probes, key, TIMEOUT, want);
    assert!(found, "no {what} event; saw {seen:#?}");
    seen
}

fn is_write(off: u64, len: u64) -> impl Fn(&Event) -> bool {
    move |e| e.kind == abi::EV_WRITE && e.offset == off && e.len == len
}

#[test]
fn every_program_loads_and_reports_its_verifier_cost() {
    let t = Instant::now();
    let p = Probes::load().unwrap();
    eprintln!("load + attach took {:?}", t.elapsed());
    let stats = p.program_stats();
    for s in &stats {
        eprintln!(
            "{:<28} verified {:>7} insns, {:>6} bytes",
            s.name, s.verified_insns, s.translated_bytes
        );
    }
    assert!(stats.len() >= 28, "{stats:?}");
    assert!(stats.iter().all(|s| s.verified_insns > 0));
}

#[test]
fn pwrite_reports_the_exact_range() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_at(&[1u8; 100], 5000).unwrap();
    let seen = expect(&mut p, key, "pwrite", is_write(5000, 100));
    let e = seen.iter().find(|e| e.kind == abi::EV_WRITE).unwrap();
    assert_eq!(e.tgid, std::process::id());
    assert_eq!(e.flags, 0);
    let stats = p.stats().unwrap();
    assert!(stats.emitted >= 1, "{stats:?}");
}

#[test]
fn write_and_append_report_where_the_bytes_went() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("log");
    let mut f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_all(&[0u8; 1000]).unwrap();
    expect(&mut p, key, "write", is_write(0, 1000));
    f.seek(SeekFrom::Start(300)).unwrap();
    f.write_all(&[0u8; 20]).unwrap();
    expect(&mut p, key, "write at f_pos", is_write(300, 20));

    // O_APPEND: f_pos of a fresh descriptor is 0, the bytes land at 1000.
    let mut a = OpenOptions::new().append(true).open(&path).unwrap();
    a.write_all(b"0123456789").unwrap();
    expect(&mut p, key, "append", is_write(1000, 10));
    // pwrite on an O_APPEND descriptor appends too (a Linux quirk).
    a.write_at(b"xyz", 0).unwrap();
    expect(&mut p, key, "pwrite on O_APPEND", is_write(1010, 3));
}

#[test]
fn a_file_twenty_levels_deep_is_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let mut deep = dir.path().to_path_buf();
    for i in 0..20 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    let path = deep.join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_at(b"deep", 7).unwrap();
    let seen = expect(&mut p, key, "deep write", is_write(7, 4));
    assert!(seen.iter().all(|e| e.flags & abi::F_DEPTH_EXCEEDED == 0));
}

#[test]
fn unwatched_files_are_not_reported_until_moved_in() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let other = tempfile::Builder::new()
        .prefix("tandem-ebpf-other-")
        .tempdir_in("/tmp")
        .unwrap();
    let path = other.path().join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_at(b"outside", 0).unwrap();
    let (seen, _) = wait_for(&mut p, key, QUIET, |_| false);
    assert!(seen.is_empty(), "unwatched file reported: {seen:#?}");
    assert!(p.stats().unwrap().filtered >= 1);

    // The same open file, renamed into the watched tree: the rename bumps the
    // verdict generation, so the next write walks the new ancestors.
    fs::rename(&path, dir.path().join("moved")).unwrap();
    f.write_at(b"inside", 100).unwrap();
    expect(&mut p, key, "write after move", is_write(100, 6));
}

#[test]
fn truncate_fallocate_and_o_trunc_are_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_at(&[9u8; 65536], 0).unwrap();

    f.set_len(40000).unwrap();
    expect(&mut p, key, "ftruncate", |e| {
        e.kind == abi::EV_TRUNCATE && e.offset == 40000
    });

    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an fd we own, with plain integer arguments.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, 4096, 8192) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    expect(&mut p, key, "fallocate", |e| {
        e.kind == abi::EV_FALLOCATE && e.offset == 4096 && e.len == 8192 && e.aux == mode as u32
    });

    // File::create opens with O_TRUNC.
    drop(File::create(&path).unwrap());
    expect(&mut p, key, "O_TRUNC", |e| {
        e.kind == abi::EV_TRUNCATE && e.offset == 0
    });

    // truncate(2) by path: reported with the path, whatever the file.
    fs::write(&path, b"abcdef").unwrap();
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(cpath.as_ptr(), 3) }, 0);
    let deadline = Instant::now() + TIMEOUT;
    let mut found = false;
    while !found && Instant::now() < deadline {
        p.drain(|r| {
            if let Record::Path(pe) = r {
                found |= pe.path_bytes() == cpath.as_bytes() && pe.hdr.offset == 3;
            }
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(found, "no truncate(path) event");
}

#[test]
fn copy_file_range_reports_the_destination() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let src = dir.path().join("src");
    fs::write(&src, vec![5u8; 10000]).unwrap();
    let dst = dir.path().join("dst");
    let out = File::create(&dst).unwrap();
    let key = key_of(&dst);
    let input = File::open(&src).unwrap();

    // With an explicit destination offset.
    let mut off_in: i64 = 0;
    let mut off_out: i64 = 3000;
    // SAFETY: valid fds and pointers to live i64s.
    let n = unsafe {
        libc::copy_file_range(
            input.as_raw_fd(),
            &mut off_in,
            out.as_raw_fd(),
            &mut off_out,
            500,
            0,
        )
    };
    assert_eq!(n, 500, "{}", std::io::Error::last_os_error());
    expect(&mut p, key, "copy_file_range(off)", is_write(3000, 500));

    // Through the destination's file position (0: a fresh descriptor).
    // SAFETY: valid fds; NULL offsets mean "use the file positions".
    let n = unsafe {
        libc::copy_file_range(
            input.as_raw_fd(),
            std::ptr::null_mut(),
            out.as_raw_fd(),
            std::ptr::null_mut(),
            700,
            0,
        )
    };
    assert_eq!(n, 700);
    expect(&mut p, key, "copy_file_range(f_pos)", is_write(0, 700));
}

#[test]
fn io_uring_write_is_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    let res = uring::write_at(f.as_raw_fd(), b"via io_uring", 20000);
    assert_eq!(res, 12);
    let seen = expect(&mut p, key, "io_uring write", is_write(20000, 12));
    assert!(seen.iter().any(|e| e.flags & abi::F_URING != 0));
}

#[test]
fn io_uring_open_with_o_trunc_is_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("t");
    fs::write(&path, b"a longer old content").unwrap();
    let key = key_of(&path);
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // Without O_TRUNC: nothing to report.
    let fd = uring::open(&cpath, libc::O_WRONLY);
    assert!(fd >= 0, "io_uring openat: {fd}");
    // SAFETY: closing the fd the ring just opened for us.
    unsafe { libc::close(fd) };
    let fd = uring::open(&cpath, libc::O_WRONLY | libc::O_TRUNC);
    assert!(fd >= 0, "io_uring openat: {fd}");
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    let seen = expect(&mut p, key, "io_uring open with O_TRUNC", |e| {
        e.kind == abi::EV_TRUNCATE && e.offset == 0 && e.flags & abi::F_URING != 0
    });
    // (fs::write's own O_TRUNC open is among the events too, without F_URING.)
    let uring_cuts = seen
        .iter()
        .filter(|e| e.kind == abi::EV_TRUNCATE && e.flags & abi::F_URING != 0)
        .count();
    assert_eq!(uring_cuts, 1, "only the O_TRUNC open cuts: {seen:#?}");
    assert!(p.take_lost().unwrap().is_empty());
}

#[test]
fn shared_mmap_stores_are_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("m");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(65536).unwrap();
    let key = key_of(&path);
    // SAFETY: a fresh shared mapping of a 64 KiB file we own; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            65536,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    expect(&mut p, key, "mmap", |e| {
        e.kind == abi::EV_MMAP && e.offset == 0 && e.len == 65536
    });
    // SAFETY: page 3 of the 16-page mapping above.
    unsafe { addr.cast::<u8>().add(3 * 4096 + 10).write_volatile(42) };
    expect(&mut p, key, "page dirty", |e| {
        e.kind == abi::EV_PAGE_DIRTY && e.offset == 3 * 4096 && e.len >= 4096
    });
    // SAFETY: the mapping above, still mapped.
    assert_eq!(unsafe { libc::msync(addr, 65536, libc::MS_SYNC) }, 0);
    // FLUSH names no file: look for ours by tgid and address.
    let deadline = Instant::now() + TIMEOUT;
    let mut found = false;
    while !found && Instant::now() < deadline {
        p.drain(|r| {
            if let Record::Event(e) = r {
                found |= e.kind == abi::EV_FLUSH
                    && e.tgid == std::process::id()
                    && e.offset == addr as u64
                    && e.aux == abi::SYNC_MSYNC;
            }
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(found, "no FLUSH for msync");
    // SAFETY: unmapping the mapping created above; nothing refers to it after.
    assert_eq!(unsafe { libc::munmap(addr, 65536) }, 0);
}

#[test]
fn fsync_and_o_dsync_are_durability_points() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let path = dir.path().join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_at(b"data", 0).unwrap();
    f.sync_all().unwrap();
    expect(&mut p, key, "fsync", |e| {
        e.kind == abi::EV_SYNC && e.aux == abi::SYNC_FSYNC
    });
    let d = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(&path)
        .unwrap();
    d.write_at(b"sync", 8).unwrap();
    let seen = expect(&mut p, key, "O_DSYNC write", |e| {
        e.kind == abi::EV_SYNC && e.aux == abi::SYNC_WRITE
    });
    assert!(
        seen.iter()
            .any(|e| e.kind == abi::EV_WRITE && e.offset == 8 && e.len == 4)
    );
}

#[test]
fn excluded_processes_are_not_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    p.exclude_tgid(std::process::id()).unwrap();
    let path = dir.path().join("f");
    let f = File::create(&path).unwrap();
    let key = key_of(&path);
    f.write_at(b"applied by the agent", 0).unwrap();
    let (seen, _) = wait_for(&mut p, key, QUIET, |_| false);
    assert!(seen.is_empty(), "excluded write reported: {seen:#?}");
    assert!(p.take_lost().unwrap().is_empty());
}

/// The barrier's proxy thread writes for applications: its writes are reported
/// although the rest of its (excluded) process's are not.
#[test]
fn a_captured_thread_of_an_excluded_process_is_reported() {
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    p.exclude_tgid(std::process::id()).unwrap();
    let path = dir.path().join("f");
    let f = std::sync::Arc::new(File::create(&path).unwrap());
    let key = key_of(&path);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let f = f.clone();
        std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            go_rx.recv().unwrap();
            f.write_at(b"for the application", 100).unwrap();
        })
    };
    p.capture_thread(tid_rx.recv().unwrap()).unwrap();
    f.write_at(b"applied by the agent", 0).unwrap();
    go_tx.send(()).unwrap();
    writer.join().unwrap();
    let (seen, found) = wait_for(&mut p, key, Duration::from_secs(5), |e| {
        e.kind == abi::EV_WRITE && e.offset == 100
    });
    assert!(
        found,
        "the captured thread's write was not reported: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.kind == abi::EV_WRITE && e.offset == 0),
        "another thread's write was reported: {seen:#?}"
    );
}

/// Just enough io_uring, by raw syscalls, to submit one write and reap it.
mod uring {
    use std::sync::atomic::{AtomicU32, Ordering};

    #[repr(C)]
    #[derive(Default)]
    struct SqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct CqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOffsets,
        cq_off: CqOffsets,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Sqe {
        opcode: u8,
        flags: u8,
        ioprio: u16,
        fd: i32,
        off: u64,
        addr: u64,
        len: u32,
        rw_flags: u32,
        user_data: u64,
        buf_index: u16,
        personality: u16,
        splice_fd_in: i32,
        addr3: u64,
        pad: u64,
    }

    const IORING_OP_OPENAT: u8 = 18;
    const IORING_OP_WRITE: u8 = 23;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x800_0000;
    const IORING_OFF_SQES: i64 = 0x1000_0000;
    const IORING_ENTER_GETEVENTS: u32 = 1;

    fn map(fd: i32, len: usize, off: i64) -> *mut u8 {
        // SAFETY: mapping an io_uring region of the size the kernel told us.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    /// Writes `buf` at `off` through IORING_OP_WRITE; returns the CQE result.
    pub(super) fn write_at(fd: i32, buf: &[u8], off: u64) -> i32 {
        submit_one(Sqe {
            opcode: IORING_OP_WRITE,
            fd,
            off,
            addr: buf.as_ptr() as u64,
            len: buf.len() as u32,
            ..Sqe::default()
        })
    }

    /// Opens `path` with `flags` through IORING_OP_OPENAT; returns the CQE result
    /// (the new fd, or a negative errno).
    pub(super) fn open(path: &std::ffi::CStr, flags: i32) -> i32 {
        submit_one(Sqe {
            opcode: IORING_OP_OPENAT,
            fd: libc::AT_FDCWD,
            addr: path.as_ptr() as u64,
            rw_flags: flags as u32,
            ..Sqe::default()
        })
    }

    /// Submits one request on a fresh ring and waits for its completion.
    fn submit_one(sqe: Sqe) -> i32 {
        let mut params = Params::default();
        // SAFETY: io_uring_setup with a valid params struct.
        let ring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut params) } as i32;
        assert!(
            ring >= 0,
            "io_uring_setup: {}",
            std::io::Error::last_os_error()
        );
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize + params.cq_entries as usize * 16;
        let sq = map(ring, sq_len, IORING_OFF_SQ_RING);
        let cq = map(ring, cq_len, IORING_OFF_CQ_RING);
        let sqes = map(ring, params.sq_entries as usize * 64, IORING_OFF_SQES);
        // SAFETY: all offsets below come from the kernel's params and lie inside
        // the mappings just created; the ring is private to this function.
        unsafe {
            let tail = AtomicU32::from_ptr(sq.add(params.sq_off.tail as usize).cast());
            let mask = *sq.add(params.sq_off.ring_mask as usize).cast::<u32>();
            let t = tail.load(Ordering::Acquire);
            sqes.cast::<Sqe>().add((t & mask) as usize).write(sqe);
            *sq.add(params.sq_off.array as usize)
                .cast::<u32>()
                .add((t & mask) as usize) = t & mask;
            tail.store(t + 1, Ordering::Release);
            let n = libc::syscall(
                libc::SYS_io_uring_enter,
                ring,
                1u32,
                1u32,
                IORING_ENTER_GETEVENTS,
                std::ptr::null::<u8>(),
                0usize,
            );
            assert_eq!(n, 1, "io_uring_enter: {}", std::io::Error::last_os_error());
            let head = AtomicU32::from_ptr(cq.add(params.cq_off.head as usize).cast());
            let cmask = *cq.add(params.cq_off.ring_mask as usize).cast::<u32>();
            let h = head.load(Ordering::Acquire);
            let cqe = cq.add(params.cq_off.cqes as usize + ((h & cmask) as usize) * 16);
            let res = *cqe.add(8).cast::<i32>();
            head.store(h + 1, Ordering::Release);
            libc::munmap(sqes.cast(), params.sq_entries as usize * 64);
            libc::munmap(cq.cast(), cq_len);
            libc::munmap(sq.cast(), sq_len);
            libc::close(ring);
            res
        }
    }
}

/// Not a pass/fail benchmark (the VM is noisy): prints the added cost per pwrite
/// so that a regression of the hot path is visible in the test output.
#[test]
fn prints_the_cost_per_write() {
    const N: u64 = 200_000;
    fn ns_per_pwrite(f: &File) -> f64 {
        let t = Instant::now();
        for i in 0..N {
            f.write_at(b"abcd", (i % 1024) * 4).unwrap();
        }
        t.elapsed().as_nanos() as f64 / N as f64
    }
    let other = tempfile::Builder::new()
        .prefix("tandem-ebpf-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    let cold = File::create(other.path().join("f")).unwrap();
    let base = ns_per_pwrite(&cold);
    let mut p = Probes::load().unwrap();
    let dir = watched_dir(&mut p);
    let hot = File::create(dir.path().join("f")).unwrap();
    let unwatched = ns_per_pwrite(&cold);
    let watched = ns_per_pwrite(&hot);
    let mut n = 0;
    p.drain(|_| n += 1);
    eprintln!(
        "pwrite: {base:.0} ns without probes, {unwatched:.0} ns unwatched (+{:.0}), \
         {watched:.0} ns watched (+{:.0}); drained {n}; {:?}",
        unwatched - base,
        watched - base,
        p.stats().unwrap()
    );
    assert!(n as u64 >= N, "watched writes were lost: {n}");
}
