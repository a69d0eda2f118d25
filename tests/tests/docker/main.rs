//! The durability barrier for processes in Docker containers (needs root and a
//! running Docker daemon; `TANDEM_SKIP_DOCKER=1` skips them where there is none).
//!
//! runc hands each container's seccomp notification fd to the barrier's runc socket
//! (`tandem::barrier::runc`). Docker 20.10 can't name that socket in a profile (it
//! drops `listenerPath`), so the tests register the OCI runtime wrapper
//! (`tandem oci-runtime`, `tandem::barrier::oci`) as a temporary
//! Docker runtime. Every image, container, runtime entry and socket a test creates
//! is removed when it ends, also on failure; the exceptions are the PostgreSQL
//! image (`postgres`) and the Debian 12 base image (`package`), which are kept, by
//! recipe hash, because building them takes minutes. `dockercheck` tests the
//! `docker` checker against the daemon. `package` installs the .deb in a fresh
//! Debian 12 container and the .rpm into a copy of its root; `systemd` runs the
//! packaged unit under systemd in such a container.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test binary: a failed set-up step must panic with its error"
)]

mod debian;
mod dockercheck;
mod fixture;
mod package;
mod pg_failover;
mod postgres;
mod probe;
mod systemd;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fixture::{ContainerName, Image, Runtime, docker, docker_ok, server_major, wrapper_binary};
use tandem::barrier::{
    BarrierRequest, Listener, ListenerConfig, SyncCall,
    profile::docker_profile,
    runc::{RuncServer, serve_runc},
};

/// How long the test holds the container's fsync.
const HOLD: Duration = Duration::from_millis(300);
const RUNC: &str = "/usr/sbin/runc";

static SERIAL: Mutex<()> = Mutex::new(());

/// One Docker test at a time (they share daemon.json); `None` means skip.
fn serial() -> Option<MutexGuard<'static, ()>> {
    let g = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    if std::env::var_os("TANDEM_SKIP_DOCKER").is_some() {
        eprintln!("TANDEM_SKIP_DOCKER is set: skipped");
        return None;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the Docker tests need root"
    );
    assert!(
        docker(&["info"]).status.success(),
        "the Docker tests need a running Docker daemon (TANDEM_SKIP_DOCKER=1 skips them)"
    );
    Some(g)
}

/// A barrier listener, the runc socket feeding it, and a scratch directory for the
/// socket, the profile and the container's bind-mounted `/data`.
struct Barrier {
    listener: Option<Listener>,
    requests: mpsc::Receiver<BarrierRequest>,
    server: Option<RuncServer>,
    sock: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl Barrier {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("seccomp.sock");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("data dir");
        let (tx, requests) = mpsc::channel();
        let config = ListenerConfig {
            release_after: Duration::from_secs(30),
            ..ListenerConfig::default()
        };
        let listener = Listener::start(config, tx).expect("listener");
        let server = serve_runc(&sock, listener.registrar()).expect("runc socket");
        Self {
            listener: Some(listener),
            requests,
            server: Some(server),
            sock,
            data,
            dir,
        }
    }

    fn sock(&self) -> &str {
        self.sock.to_str().expect("utf-8 path")
    }

    fn write_profile(&self) -> PathBuf {
        let path = self.dir.path().join("profile.json");
        // Containers inherit the daemon's descriptor limit, which is ours on a test
        // machine; a mismatch only makes synchronous opens fall back, and the probe
        // test notices.
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let reserved = tandem::barrier::filter::reserved_fds(hard);
        fs::write(&path, docker_profile(&self.sock, &reserved).to_string()).expect("profile");
        path
    }

    fn next(&self) -> BarrierRequest {
        self.requests
            .recv_timeout(Duration::from_secs(60))
            .expect("no durability call from the container within 60 s")
    }
}

/// Starts `docker run` in the background.
fn run(name: &str, image: &Image, data: &Path, extra: &[&str], script: &str) -> Child {
    let volume = format!("{}:/data", data.display());
    Command::new("docker")
        .args(["run", "--name", name, "-v", &volume])
        .args(extra)
        .args([&image.tag, "/bin/sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker run")
}

/// Waits for `docker run` and returns (success, stdout, stderr).
fn finish(child: Child) -> (bool, String, String) {
    let out = child.wait_with_output().expect("docker run");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// The value after `key=` on its own output line.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn docker_runtime_wrapper_holds_container_fsync_until_release() {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    let mut barrier = Barrier::start();
    let runtime = Runtime::register(
        &wrapper_binary(),
        &[
            "oci-runtime",
            "--listener",
            barrier.sock(),
            "--runc",
            RUNC,
            "--",
        ],
    );
    let profile = barrier.write_profile();
    let name = ContainerName::new();
    let security = format!("seccomp={}", profile.display());
    // The first fsync is held; after it the test stops the barrier, and the second
    // fsync shows what an application sees when the agent is gone.
    let script = "echo t0=$(date +%s%N); dd if=/dev/zero of=/data/f bs=4096 count=1 conv=fsync 2>/dev/null; \
                  echo dd1=$?; echo t1=$(date +%s%N); sleep 2; \
                  dd if=/dev/zero of=/data/g bs=4096 count=1 conv=fsync; echo dd2=$?";
    let child = run(
        &name.0,
        &image,
        &barrier.data,
        &["--runtime", &runtime.name, "--security-opt", &security],
        script,
    );

    let request = barrier.next();
    let held_at = Instant::now();
    let call = request.call;
    assert_eq!(call.syscall, SyncCall::Fsync);
    // The call is reported with the pid of the container's dd, in the agent's
    // namespace: that process is in the container's cgroup and blocked right now.
    let id = docker_ok(&["inspect", "--format", "{{.Id}}", &name.0]);
    let init: u32 = docker_ok(&["inspect", "--format", "{{.State.Pid}}", &name.0])
        .parse()
        .expect("init pid");
    let comm = fs::read_to_string(format!("/proc/{}/comm", call.pid)).expect("comm");
    let cgroup = fs::read_to_string(format!("/proc/{}/cgroup", call.pid)).expect("cgroup");
    assert_eq!(comm.trim(), "dd");
    assert!(
        cgroup.contains(&id),
        "pid {} is not in container {id}: {cgroup}",
        call.pid
    );
    assert!(call.file.is_some(), "the fsync's file was not resolved");
    // runc told the socket which container and init process the fd belongs to.
    let server = barrier.server.as_ref().expect("server");
    let attach = server.recent();
    assert_eq!(attach.len(), 1, "{attach:?}");
    assert_eq!(attach[0].container_id, id);
    assert_eq!(attach[0].pid, init);
    // Docker 20.10 drops the profile's listenerMetadata; the wrapper names the
    // reserved range again, read from the profile's own rules.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let reserved = tandem::barrier::filter::reserved_fds(hard);
    assert_eq!(
        attach[0].metadata,
        tandem::barrier::profile::listener_metadata(&reserved)
    );

    std::thread::sleep(HOLD.saturating_sub(held_at.elapsed()));
    let released_ns = now_ns();
    request.release();
    let listener = barrier.listener.take().expect("listener");
    let stats = listener.stats();
    assert_eq!((stats.listeners, stats.notifications), (1, 1));
    assert!(listener.shutdown());

    let (ok, out, err) = finish(child);
    assert!(ok, "container failed: {out} {err}");
    let t0: u128 = field(&out, "t0").and_then(|v| v.parse().ok()).expect("t0");
    let t1: u128 = field(&out, "t1").and_then(|v| v.parse().ok()).expect("t1");
    let took = Duration::from_nanos(u64::try_from(t1 - t0).expect("duration"));
    eprintln!("container fsync took {took:?} with a {HOLD:?} hold; {out}{err}");
    assert_eq!(field(&out, "dd1"), Some("0"));
    assert!(
        took >= HOLD,
        "the fsync returned after {took:?}, before the release"
    );
    assert!(
        t1 >= released_ns,
        "dd finished before the test released its fsync"
    );
    assert_eq!(fs::metadata(barrier.data.join("f")).expect("f").len(), 4096);
    // With the listener fd closed, the kernel fails the trapped call with ENOSYS.
    assert_eq!(field(&out, "dd2"), Some("1"), "{out}");
    assert!(out.contains("Function not implemented") || err.contains("Function not implemented"));
}

#[test]
fn docker_runtime_wrapper_keeps_dockers_default_profile() {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    let barrier = Barrier::start();
    let runtime = Runtime::register(
        &wrapper_binary(),
        &[
            "oci-runtime",
            "--listener",
            barrier.sock(),
            "--runc",
            RUNC,
            "--",
        ],
    );
    let name = ContainerName::new();
    // Docker's default profile refuses unshare(2) to unprivileged containers; the
    // barrier's rules are merged into that profile instead of replacing it.
    let script = "unshare -U /bin/sh -c true 2>/dev/null; echo unshare=$?; \
                  dd if=/dev/zero of=/data/f bs=4096 count=1 conv=fsync 2>/dev/null; echo dd=$?";
    let child = run(
        &name.0,
        &image,
        &barrier.data,
        &["--runtime", &runtime.name],
        script,
    );
    let request = barrier.next();
    assert_eq!(request.call.syscall, SyncCall::Fsync);
    request.release();
    let (ok, out, err) = finish(child);
    assert!(ok, "container failed: {out} {err}");
    assert_eq!(field(&out, "dd"), Some("0"), "{out}");
    assert_ne!(
        field(&out, "unshare"),
        Some("0"),
        "Docker's default profile was lost: {out}"
    );

    // The control: without a profile unshare works, and the wrapper still adds the
    // barrier's rules (to an allow-everything filter).
    let name = ContainerName::new();
    let extra = [
        "--runtime",
        &runtime.name,
        "--security-opt",
        "seccomp=unconfined",
    ];
    let child = run(&name.0, &image, &barrier.data, &extra, script);
    let request = barrier.next();
    assert_eq!(request.call.syscall, SyncCall::Fsync);
    request.release();
    let (ok, out, err) = finish(child);
    assert!(ok, "container failed: {out} {err}");
    assert_eq!(field(&out, "unshare"), Some("0"), "{out}");
    assert_eq!(field(&out, "dd"), Some("0"), "{out}");
}

#[test]
fn docker_exec_processes_are_held_too() {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    let barrier = Barrier::start();
    let runtime = Runtime::register(
        &wrapper_binary(),
        &[
            "oci-runtime",
            "--listener",
            barrier.sock(),
            "--runc",
            RUNC,
            "--",
        ],
    );
    let name = ContainerName::new();
    let child = run(
        &name.0,
        &image,
        &barrier.data,
        &["--runtime", &runtime.name, "-d"],
        "sleep 60",
    );
    let (ok, _, err) = finish(child);
    assert!(ok, "{err}");
    // runc exec installs the container's filter in the new process and hands its own
    // notification fd to the socket.
    let exec = Command::new("docker")
        .args([
            "exec",
            &name.0,
            "/bin/dd",
            "if=/dev/zero",
            "of=/data/e",
            "bs=4096",
            "count=1",
            "conv=fsync",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker exec");
    let request = barrier.next();
    assert_eq!(request.call.syscall, SyncCall::Fsync);
    let comm = fs::read_to_string(format!("/proc/{}/comm", request.call.pid)).expect("comm");
    assert_eq!(comm.trim(), "dd");
    let attach = barrier.server.as_ref().expect("server").recent();
    assert_eq!(attach.len(), 2, "{attach:?}");
    assert_eq!(attach[0].container_id, attach[1].container_id);
    assert_eq!(
        attach[1].pid, request.call.pid,
        "the exec'd process is dd itself"
    );
    request.release();
    assert!(finish(exec).0, "docker exec failed");
}

#[test]
fn docker_container_start_fails_without_seccomp_agent() {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nobody-listens.sock");
    let runtime = Runtime::register(
        &wrapper_binary(),
        &[
            "oci-runtime",
            "--listener",
            missing.to_str().expect("utf-8"),
            "--runc",
            RUNC,
            "--",
        ],
    );
    let name = ContainerName::new();
    let child = run(
        &name.0,
        &image,
        dir.path(),
        &["--runtime", &runtime.name],
        "echo started",
    );
    let (ok, out, err) = finish(child);
    eprintln!("docker run without a listener: {err}");
    assert!(!ok, "the container started without a seccomp agent: {out}");
    assert!(!out.contains("started"));
    assert!(err.contains("seccomp agent"), "{err}");
}

#[test]
fn docker_seccomp_profile_listener_path_needs_docker_23() {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    let barrier = Barrier::start();
    let profile = barrier.write_profile();
    let name = ContainerName::new();
    let security = format!("seccomp={}", profile.display());
    let script = "dd if=/dev/zero of=/data/f bs=4096 count=1 conv=fsync 2>/dev/null; echo dd=$?";
    let child = run(
        &name.0,
        &image,
        &barrier.data,
        &["--security-opt", &security],
        script,
    );
    if server_major() < 23 {
        // Docker 20.10 passes SCMP_ACT_NOTIFY on but drops listenerPath: runc refuses.
        let (ok, _out, err) = finish(child);
        eprintln!("Docker {} with the profile alone: {err}", server_major());
        assert!(!ok);
        assert!(err.contains("listenerPath is not set"), "{err}");
        assert!(barrier.server.as_ref().expect("server").recent().is_empty());
    } else {
        let request = barrier.next();
        assert_eq!(request.call.syscall, SyncCall::Fsync);
        request.release();
        let (ok, out, err) = finish(child);
        assert!(ok && field(&out, "dd") == Some("0"), "{out} {err}");
    }
}
