//! Real-kernel tests of the barrier (root, seccomp). The test binary re-executes
//! itself as the filtered child (`child_main` with `TANDEM_BARRIER_CHILD` set); that
//! child attaches through `exec_under_barrier` and this process plays the agent.

mod child;
mod harness;

use std::{
    env,
    ffi::OsString,
    io::Write,
    os::{
        fd::AsFd,
        unix::{fs::MetadataExt, net::UnixStream},
    },
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::Duration,
};

use self::harness::{Agent, config};
use super::*;
use crate::barrier::{attach::receive_listener, notify::Buffers};

const CHILD_ENV: &str = "TANDEM_BARRIER_CHILD";
const SOCKET_ENV: &str = "TANDEM_BARRIER_SOCKET";
const DIR_ENV: &str = "TANDEM_BARRIER_DIR";
const STAGE_ENV: &str = "TANDEM_BARRIER_STAGE";
const CHILD_TEST: &str = "barrier::tests::child_main";

/// The child role. Without `TANDEM_BARRIER_CHILD` (a normal test run) it does nothing.
/// Stage 1 (unfiltered) attaches and re-executes itself through `/usr/bin/env`, which
/// also proves the filter survives exec; stage 2 runs the scenario under the barrier.
#[test]
fn child_main() {
    let Ok(scenario) = env::var(CHILD_ENV) else {
        return;
    };
    let socket = PathBuf::from(env::var_os(SOCKET_ENV).expect("socket env"));
    let dir = PathBuf::from(env::var_os(DIR_ENV).expect("dir env"));
    if env::var_os(STAGE_ENV).is_none() {
        if scenario == "bench" {
            child::bench(&dir, "unfiltered");
        }
        let exe = env::current_exe().expect("current_exe");
        let argv: Vec<OsString> = vec![
            "/usr/bin/env".into(),
            format!("{STAGE_ENV}=attached").into(),
            exe.into(),
            "--exact".into(),
            CHILD_TEST.into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ];
        let err = exec_under_barrier(&socket, &argv);
        panic!("exec_under_barrier returned {err:?}");
    }
    match scenario.as_str() {
        "calls" => child::calls(&dir),
        "one-fsync" => child::one_fsync(&dir),
        "fsync-twice" => child::fsync_twice(&dir),
        "sync-writes" => child::sync_writes(&dir),
        "unprivileged" => child::unprivileged(&dir),
        "capless" => child::capless(&dir),
        "bench" => child::bench(&dir, "barrier"),
        other => panic!("unknown scenario {other}"),
    }
}

/// Every durability call is held until released, names its file, and the
/// look-alike calls without a durability flag pass untouched.
#[test]
fn durability_calls_wait_for_release() {
    let agent = Agent::new(Path::new("/tmp"));
    let (tx, rx) = mpsc::channel();
    let listener = Listener::start(config(Duration::from_secs(20)), tx).expect("start");
    let server = agent.serve_one(listener.registrar());
    // The consumer holds the first call (fsync) 200 ms and every other one 30 ms.
    let consumer = thread::spawn(move || {
        let mut seen = Vec::new();
        for request in rx {
            let hold = if seen.is_empty() { 200 } else { 30 };
            seen.push(request.call);
            thread::sleep(Duration::from_millis(hold));
            request.release();
        }
        seen
    });
    let child = agent.spawn("calls");
    let out = child.finish(Duration::from_secs(120));
    let attached_pid = server.join().expect("server");
    let stats = listener.stats();
    assert!(listener.shutdown(), "graceful shutdown");
    let seen = consumer.join().expect("consumer");

    // Held calls: one notification each, in order, the grandchild's sync last.
    let calls: Vec<SyncCall> = seen.iter().map(|d| d.syscall).collect();
    use SyncCall::*;
    assert_eq!(
        calls,
        [
            Fsync,
            Fdatasync,
            SyncFileRange,
            Msync,
            Syncfs,
            Sync,
            SyncWrite,
            Sync
        ]
    );
    let (fsync_ret, _, fsync_took) = out.result("fsync");
    assert_eq!(fsync_ret, 0);
    assert!(
        fsync_took >= Duration::from_millis(200),
        "fsync returned after {fsync_took:?}"
    );
    for name in [
        "fdatasync",
        "sfr_wait",
        "msync_sync",
        "syncfs",
        "sync",
        "grandchild",
    ] {
        let (ret, errno, took) = out.result(name);
        assert_eq!((ret, errno), (0, 0), "{name}");
        assert!(
            took >= Duration::from_millis(30),
            "{name} returned after {took:?}"
        );
    }
    assert_eq!(out.result("pwritev2_dsync").0, 5);
    for name in ["sfr_nowait", "msync_async"] {
        assert_eq!(out.result(name).0, 0, "{name}");
    }
    assert_eq!(out.result("pwritev2_plain").0, 5);
    let (ret, errno, _) = out.result("io_uring_setup");
    assert_eq!(
        (ret, errno),
        (-1, i64::from(libc::ENOSYS)),
        "io_uring_setup"
    );

    // The fsync names the child's thread, its fd and the file's (dev, ino).
    let meta = std::fs::metadata(agent.dir.path().join("data")).expect("stat data");
    let file = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let info: Vec<&str> = out.info[0].split_whitespace().collect();
    let (tid, fd): (u32, i32) = (info[2].parse().expect("tid"), info[4].parse().expect("fd"));
    let fsync = seen[0];
    assert_eq!(
        (fsync.pid, fsync.fd, fsync.file),
        (tid, Some(fd), Some(file))
    );
    assert_eq!(fsync.scope(), Scope::File(file));
    assert_eq!(seen[3].scope(), Scope::All, "msync");
    assert_eq!(
        seen[4].scope(),
        Scope::Filesystem { dev: file.dev },
        "syncfs"
    );
    assert_eq!(seen[6].file, Some(file), "pwritev2");
    assert_ne!(seen[7].pid, tid, "the last sync comes from the grandchild");
    assert!(attached_pid > 0);

    assert_eq!(stats.notifications, 8);
    assert_eq!(stats.released, 8);
    assert_eq!(stats.released_on_timeout, 0);
    assert!(stats.wait_ns_max >= 200_000_000, "{stats:?}");
    assert_eq!(
        stats.listeners, 0,
        "the listener is dropped once its processes exit: {stats:?}"
    );
}

/// Writes through an `O_SYNC`/`O_DSYNC` descriptor (and pwritev2 at the file
/// position) are performed by the agent before they are held, so the consumer
/// sees them on disk while the caller still waits; their results reach the caller
/// only on release. The agent opens such files as the caller would.
#[test]
fn synchronous_writes_are_held_after_they_happen() {
    use std::os::unix::fs::PermissionsExt;
    let agent = Agent::new(Path::new("/tmp"));
    let dir = agent.dir.path().to_owned();
    // The unprivileged writer must reach the directory; `secret` must stay closed to it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(dir.join("secret"), b"root only").expect("secret");
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod secret");
    let (tx, rx) = mpsc::channel();
    let listener = Listener::start(config(Duration::from_secs(20)), tx).expect("start");
    assert_ne!(
        listener.proxy_thread(),
        0,
        "the proxy thread reports its id"
    );
    let server = agent.serve_one(listener.registrar());
    let watched = dir.join("sync");
    // Each held write: what the consumer found in `sync` at that moment.
    let consumer = thread::spawn(move || {
        let mut seen = Vec::new();
        for request in rx {
            let on_disk = std::fs::read(&watched).unwrap_or_default();
            seen.push((request.call, on_disk));
            thread::sleep(Duration::from_millis(100));
            request.release();
        }
        seen
    });
    let out = agent.spawn("sync-writes").finish(Duration::from_secs(120));
    server.join().expect("server");
    let stats = listener.stats();
    assert!(listener.shutdown(), "graceful shutdown");
    let seen = consumer.join().expect("consumer");

    // The file went to the top of the reserved range, close-on-exec and O_DSYNC as asked.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let reserved = filter::reserved_fds(hard);
    assert!(
        !reserved.is_empty(),
        "hard limit {hard} leaves no reserved range"
    );
    let fd = out.result("open").0;
    assert_eq!(fd, i64::from(reserved.end) - 1, "{out:?}");
    assert_eq!(out.result("flags").0, i64::from(libc::FD_CLOEXEC));
    assert_eq!(out.result("flags").1, 1, "O_DSYNC kept");
    assert_eq!(out.result("dup").0, fd - 1, "dup stays in the range");
    assert!(out.result("open_rel").0 >= i64::from(reserved.start));
    assert!(
        out.result("open_plain").0 < 1024,
        "ordinary files get low numbers"
    );

    // Every write returned its own count, after the consumer's 100 ms.
    for (name, count) in [
        ("write", 5),
        ("pwrite", 5),
        ("writev", 4),
        ("pwritev", 3),
        ("pwritev2", 1),
        ("dup_write", 1),
        ("write_rel", 1),
    ] {
        let (ret, errno, took) = out.result(name);
        assert_eq!((ret, errno), (count, 0), "{name}");
        assert!(
            took >= Duration::from_millis(100),
            "{name} returned after {took:?}"
        );
    }
    assert_eq!(out.result("devstdout").0, 7, "the caller's own stdout");
    assert_eq!(out.result("fifo_nonblock").1, i64::from(libc::ENXIO));
    assert_eq!(out.result("write_efault").1, i64::from(libc::EFAULT));
    assert_eq!(out.result("write_ebadf").1, i64::from(libc::EBADF));
    let (ret, _, took) = out.result("write_plain");
    assert_eq!(ret, 1);
    assert!(
        took < Duration::from_millis(100),
        "an ordinary write was held {took:?}"
    );

    // What the consumer found on disk while each write was held: the write itself.
    let mut expected = vec![0u8; 203];
    for (at, bytes) in [
        (0, &b"hello"[..]),
        (5, b"abcd"),
        (9, b"q"),
        (10, b"D"),
        (100, b"world"),
        (200, b"xyz"),
    ] {
        expected[at..at + bytes.len()].copy_from_slice(bytes);
    }
    assert_eq!(seen[0].1, b"hello");
    assert_eq!(seen[1].1.len(), 105, "pwrite at 100 already there");
    assert_eq!(&seen[5].1[..11], &expected[..11], "dup_write already there");
    assert_eq!(std::fs::read(dir.join("sync")).expect("read"), expected);
    let meta = std::fs::metadata(dir.join("sync")).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640 & !0o022);
    for (call, _) in &seen {
        assert_eq!(call.syscall, SyncCall::SyncWrite);
    }
    let file = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    assert_eq!(seen[0].0.scope(), Scope::File(file));
    assert_eq!(std::fs::read(dir.join("rel")).expect("rel"), b"R");

    // The unprivileged process: its file is its own, with its umask, its write was
    // held; root's secret stayed closed to it and untouched.
    assert_eq!(out.result("unprivileged").0, 0);
    assert!(out.result("nobody_open").0 >= i64::from(reserved.start));
    let (ret, _, took) = out.result("nobody_write");
    assert_eq!(ret, 4);
    assert!(took >= Duration::from_millis(100), "held {took:?}");
    let by_nobody = std::fs::metadata(dir.join("by-nobody")).expect("created");
    assert_eq!((by_nobody.uid(), by_nobody.gid()), (65534, 65534));
    assert_eq!(by_nobody.permissions().mode() & 0o7777, 0o640);
    assert_eq!(std::fs::read(dir.join("by-nobody")).expect("read"), b"4321");
    assert_eq!(out.result("nobody_denied").1, i64::from(libc::EACCES));
    assert_eq!(
        std::fs::read(dir.join("secret")).expect("secret"),
        b"root only"
    );
    assert_eq!(out.result("capless").0, 0);
    assert_eq!(out.result("capless_denied").1, i64::from(libc::EACCES));

    // 7 writes of the child and 1 of the unprivileged one; 4 files placed (sync,
    // its dup, rel, by-nobody).
    assert_eq!(seen.len(), 8, "{seen:#?}");
    assert_eq!(stats.proxied_writes, 8, "{stats:?}");
    assert_eq!(
        (stats.reserved_opens, stats.unreserved_opens),
        (4, 0),
        "{stats:?}"
    );
}

/// A call nobody releases runs anyway after `release_after`, and is counted.
#[test]
fn unreleased_call_runs_after_release_after() {
    let agent = Agent::new(Path::new("/tmp"));
    let (tx, rx) = mpsc::channel();
    let listener = Listener::start(config(Duration::from_millis(300)), tx).expect("start");
    // What the primary task reads to count such calls as released without the peer.
    let counts = listener.registrar();
    let server = agent.serve_one(listener.registrar());
    let out = agent.spawn("one-fsync").finish(Duration::from_secs(60));
    server.join().expect("server");
    let (ret, errno, took) = out.result("fsync");
    assert_eq!((ret, errno), (0, 0));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "fsync took {took:?}"
    );
    // The request is still held here; releasing it late is harmless.
    let held: Vec<BarrierRequest> = rx.try_iter().collect();
    assert_eq!(held.len(), 1);
    drop(held);
    let stats = listener.stats();
    assert_eq!(
        (
            stats.notifications,
            stats.released_on_timeout,
            stats.released
        ),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(counts.stats().released_on_timeout, 1);
}

/// Shutting the listener down releases the pending call; afterwards the kernel
/// fails every held call with ENOSYS, since nobody listens any more.
#[test]
fn shutdown_releases_pending_then_calls_fail_with_enosys() {
    let agent = Agent::new(Path::new("/tmp"));
    let (tx, rx) = mpsc::channel();
    let listener = Listener::start(config(Duration::from_secs(30)), tx).expect("start");
    let server = agent.serve_one(listener.registrar());
    let child = agent.spawn("fsync-twice");
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("first fsync held");
    assert!(listener.shutdown(), "graceful shutdown");
    let out = child.finish(Duration::from_secs(30));
    server.join().expect("server");
    drop(first);
    assert_eq!(
        out.result("first").0,
        0,
        "pending call released by shutdown"
    );
    let (ret, errno, _) = out.result("second");
    assert_eq!(
        (ret, errno),
        (-1, i64::from(libc::ENOSYS)),
        "call after shutdown"
    );
}

/// What the kernel does when a listener closes with a call still pending (an agent
/// crash): the pending call fails with ENOSYS, and so do later ones.
#[test]
fn closing_listener_with_pending_call_fails_it_with_enosys() {
    let agent = Agent::new(Path::new("/tmp"));
    let child = agent.spawn("fsync-twice");
    let (stream, _) = agent.server.accept().expect("accept");
    let line = read_request_line(&stream).expect("request");
    assert!(line.contains("barrier-attach"), "{line}");
    let (fd, _pid, _reserved) = receive_listener(&stream).expect("hello");
    (&stream).write_all(b"{\"ok\":true}\n").expect("reply");
    let mut buffers = Buffers::for_running_kernel().expect("buffers");
    // Blocks until the child's first fsync is held.
    let n = buffers.receive(fd.as_fd()).expect("receive");
    assert_eq!(i64::from(n.nr), libc::SYS_fsync);
    drop(fd);
    let out = child.finish(Duration::from_secs(30));
    for name in ["first", "second"] {
        let (ret, errno, _) = out.result(name);
        assert_eq!((ret, errno), (-1, i64::from(libc::ENOSYS)), "{name}");
    }
}

/// Median added latency of an immediately released fsync on tmpfs.
#[test]
fn fsync_latency_through_the_barrier() {
    let agent = Agent::new(Path::new("/dev/shm"));
    let (tx, rx) = mpsc::channel::<BarrierRequest>();
    let listener = Listener::start(config(Duration::from_secs(10)), tx).expect("start");
    let server = agent.serve_one(listener.registrar());
    let consumer = thread::spawn(move || rx.into_iter().map(BarrierRequest::release).count());
    let out = agent.spawn("bench").finish(Duration::from_secs(120));
    server.join().expect("server");
    let stats = listener.stats();
    assert!(listener.shutdown());
    assert_eq!(consumer.join().expect("consumer"), child::BENCH_CALLS);
    let (base_median, base_p99, _) = out.result("unfiltered");
    let (median, p99, _) = out.result("barrier");
    eprintln!(
        "fsync on tmpfs, {} calls: unfiltered median {base_median} ns p99 {base_p99} ns; \
         through the barrier median {median} ns p99 {p99} ns; added {} ns",
        child::BENCH_CALLS,
        median - base_median
    );
    assert_eq!(stats.notifications, child::BENCH_CALLS as u64);
    assert!(
        median > base_median,
        "a held call can't be faster than a free one"
    );
    assert!(median < 1_000_000, "median {median} ns through the barrier");
}

/// The control conversation rejects what it does not understand, before any fd moves.
#[test]
fn attach_rejects_bad_requests() {
    let (tx, _rx) = mpsc::channel();
    let listener = Listener::start(config(Duration::from_secs(1)), tx).expect("start");
    let (agent_end, launcher_end) = UnixStream::pair().expect("pair");
    (&launcher_end)
        .write_all(b"{\"op\":\"nope\"}\n")
        .expect("write");
    let err = handle_connection(&agent_end, &listener.registrar()).expect_err("unknown op");
    assert!(
        matches!(err, BarrierError::Protocol { what: "unknown op" }),
        "{err}"
    );
    assert!(matches!(
        attach::read_reply(&launcher_end),
        Err(BarrierError::Refused { .. })
    ));
    // A hello without an fd.
    (&launcher_end)
        .write_all(b"{\"op\":\"barrier-attach\"}\n{\"pid\":7}\n")
        .expect("write");
    let err = handle_connection(&agent_end, &listener.registrar()).expect_err("no fd");
    assert!(matches!(err, BarrierError::MissingFd), "{err}");
    assert_eq!(listener.stats().listeners, 0);
}

/// exec_under_barrier fails before installing anything when the agent is absent.
#[test]
fn exec_under_barrier_needs_an_agent() {
    let err = exec_under_barrier(Path::new("/nonexistent/ctl.sock"), &["true".into()])
        .expect_err("no agent");
    assert!(matches!(err, BarrierError::Connect { .. }), "{err}");
    let err = exec_under_barrier(Path::new("/nonexistent/ctl.sock"), &[]).expect_err("no command");
    assert!(matches!(err, BarrierError::EmptyCommand), "{err}");
}
