//! `capture-bench`: the capture engine's benchmarks, measured side by side in one run.
//!
//! 1. **Added cost per write system call.** Median nanoseconds per 4-byte `pwrite` (and
//!    `write`) with no capture running, and with `tandem capture` running, for a file
//!    outside the watched tree and for files inside it at several depths. Rounds are
//!    interleaved (no capture, capture, no capture, capture, ...) so that load drifts
//!    hit every configuration alike.
//! 2. **Events per second without loss.** Writer threads hammer watched files with
//!    1-byte writes (`pwrite` at sequential or scattered offsets, or io_uring batches);
//!    the capture's own summary line gives the kernel events it consumed and the ones it
//!    lost, and a marker write shows when it had caught up. The writers' rate with and
//!    without capture shows whether the producer or the consumer is the limit.
//! 3. **Memory with many files under watch.** A tree of empty files is created on tmpfs
//!    before capture starts; once capture says `ready`, its `VmRSS` and `VmHWM` are read.
//!
//! It prints the machine, a markdown table and the raw numbers. It needs root (capture
//! loads eBPF programs and places fanotify marks). Run it with `sudo cargo xtask bench`
//! or `cargo run --release -p tandem-tests --bin capture-bench -- [--quick]`.
//! Method and results: `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

type Res<T> = Result<T, Box<dyn Error>>;

/// Where the write-cost and rate files live: /tmp is ext4 here, like a real data disk.
const BENCH_TMP: &str = "/tmp/tandem-capture-bench";
/// Where the memory tree lives: tmpfs makes a million creations cheap, and the agent's
/// memory does not depend on the filesystem the names live on.
const BENCH_SHM: &str = "/dev/shm/tandem-capture-bench";
/// Calls per clock read: large enough that the clock's cost (~20 ns) is noise, small
/// enough to give thousands of samples for a median.
const BATCH: usize = 1000;
/// Untimed batches before every timed run: page cache, verdict cache and branch
/// predictors warm up, and the capture has seen the file once.
const WARMUP_BATCHES: usize = 50;
/// Targets from the design (ns added per call, events per second).
const TARGET_UNWATCHED_NS: f64 = 200.0;
const TARGET_WATCHED_NS: f64 = 500.0;
const TARGET_EVENTS_PER_S: f64 = 2_000_000.0;
/// The file whose write, made after the rate writers stop, marks the end of their
/// events in the ring buffer (which is consumed in order).
const MARKER: &str = "capture-bench-marker";

/// Set by SIGINT/SIGTERM so that long loops stop and the guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> Res<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Options and plan
// ---------------------------------------------------------------------------------------

struct Options {
    quick: bool,
    tandem: Option<PathBuf>,
    build: bool,
    cost: bool,
    rate: bool,
    memory: bool,
    wait_quiet: u64,
}

fn parse_args() -> Res<Options> {
    let mut o = Options {
        quick: false,
        tandem: None,
        build: true,
        cost: true,
        rate: true,
        memory: true,
        wait_quiet: 600,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.build = false,
            "--wait-quiet" => {
                o.wait_quiet = args.next().ok_or("--wait-quiet needs seconds")?.parse()?;
            }
            "--tandem" => {
                o.tandem = Some(PathBuf::from(args.next().ok_or("--tandem needs a path")?));
                o.build = false;
            }
            "--only" => {
                let what = args.next().ok_or("--only needs cost,rate,memory")?;
                o.cost = false;
                o.rate = false;
                o.memory = false;
                for w in what.split(',') {
                    match w {
                        "cost" => o.cost = true,
                        "rate" => o.rate = true,
                        "memory" => o.memory = true,
                        _ => return Err(format!("unknown benchmark {w:?}").into()),
                    }
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: capture-bench [--quick] [--only cost,rate,memory] \
                     [--tandem PATH | --no-build] [--wait-quiet SECS]\n\
                     Builds `tandem` (release) unless given, then measures capture's \
                     write cost, event rate and memory. Needs root. Waits (600 s by default) \
                     for other processes holding eBPF programs to finish first."
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?} (try --help)").into()),
        }
    }
    Ok(o)
}

/// How much work each benchmark does.
struct Plan {
    cost_calls: usize,
    cost_rounds: usize,
    rate_secs: f64,
    rate_rounds: usize,
    rate_writers: Vec<usize>,
    mem_dirs: usize,
    mem_files_per_dir: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                cost_calls: 100_000,
                cost_rounds: 3,
                rate_secs: 2.0,
                rate_rounds: 1,
                rate_writers: vec![1, 2, 4],
                mem_dirs: 100,
                mem_files_per_dir: 1000,
            }
        } else {
            Plan {
                cost_calls: 1_000_000,
                cost_rounds: 5,
                rate_secs: 5.0,
                rate_rounds: 3,
                rate_writers: vec![1, 2, 4],
                mem_dirs: 1000,
                mem_files_per_dir: 1000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The capture process
// ---------------------------------------------------------------------------------------

/// The summary line `tandem capture` prints on stderr when stopped.
struct Summary(BTreeMap<String, u64>);

impl Summary {
    fn parse(stderr: &str) -> Res<Summary> {
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.contains("tandem: capture stopped:"))
            .ok_or_else(|| format!("no summary line in capture's stderr:\n{}", tail(stderr)))?;
        let mut m = BTreeMap::new();
        for word in line.split_whitespace() {
            if let Some((k, v)) = word.split_once('=')
                && let Ok(n) = v.parse::<u64>()
            {
                m.insert(k.to_owned(), n);
            }
        }
        Ok(Summary(m))
    }

    fn get(&self, key: &str) -> Res<u64> {
        self.0
            .get(key)
            .copied()
            .ok_or_else(|| format!("summary line has no {key}").into())
    }
}

/// The last lines of a (possibly huge, e.g. a verifier log) stderr, for error messages.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A running `tandem capture --json`. Its stdout goes to a pipe that a thread drains
/// (so the agent pays for formatting and writing its records, as it would in use) and
/// that also tells us when capture is armed. Dropping it always stops the process.
struct Capture {
    child: Option<Child>,
    pid: Pid,
    started: Instant,
    ready_after: Duration,
    stdout_thread: Option<JoinHandle<u64>>,
    stderr_thread: Option<JoinHandle<String>>,
    /// When the stdout thread saw a `write` record of `MARKER`.
    marker_rx: Option<mpsc::Receiver<Instant>>,
}

struct Stopped {
    summary: Summary,
    /// From SIGTERM to the process's exit (the final drain is in it).
    stop_took: Duration,
    stdout_bytes: u64,
}

impl Capture {
    fn start(bin: &Path, roots: &[&Path], ready_timeout: Duration) -> Res<Capture> {
        let mut cmd = Command::new(bin);
        cmd.arg("capture");
        for r in roots {
            cmd.arg("--watch").arg(r);
        }
        cmd.arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If this benchmark dies without running its guards (SIGKILL), the kernel
        // stops the capture too, so no probe is left attached.
        tandem_tests::sys::die_with_parent(&mut cmd);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // From here on the guard owns the process: every early return stops it.
        let mut cap = Capture {
            child: Some(child),
            pid,
            started,
            ready_after: Duration::ZERO,
            stdout_thread: None,
            stderr_thread: None,
            marker_rx: None,
        };
        let (tx, rx) = mpsc::channel::<String>();
        let (marker_tx, marker_rx) = mpsc::channel::<Instant>();
        cap.marker_rx = Some(marker_rx);
        if let Some(out) = stdout {
            let marker_tx = marker_tx.clone();
            cap.stdout_thread = Some(thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 16, out);
                let mut first = String::new();
                let mut bytes = r.read_line(&mut first).unwrap_or(0) as u64;
                let _ = tx.send(first);
                // Drain and discard, except that a `write` record of the marker file is
                // timed: it proves that every kernel event queued before it was consumed.
                let needle = format!("\"path\":\"{MARKER}\"");
                let mut line = Vec::with_capacity(256);
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => bytes += n as u64,
                    }
                    if let Ok(text) = std::str::from_utf8(&line)
                        && text.contains(&needle)
                        && text.contains("\"op\":\"write\"")
                    {
                        let _ = marker_tx.send(Instant::now());
                    }
                }
                bytes
            }));
        }
        if let Some(mut err) = stderr {
            cap.stderr_thread = Some(thread::spawn(move || {
                let mut v = Vec::new();
                let _ = err.read_to_end(&mut v);
                String::from_utf8_lossy(&v).into_owned()
            }));
        }
        let deadline = Instant::now() + ready_timeout;
        let first = loop {
            check_interrupted()?;
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break Some(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        };
        let ready = first.as_deref().is_some_and(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v.get("op").and_then(|o| o.as_str()) == Some("ready"))
        });
        if !ready {
            let stderr = cap.kill_and_collect();
            return Err(format!(
                "capture did not print `ready` (first line: {:?}); its stderr ends with:\n{}",
                first.unwrap_or_default().trim_end(),
                tail(&stderr)
            )
            .into());
        }
        cap.ready_after = cap.started.elapsed();
        Ok(cap)
    }

    /// Waits for the `write` record of `MARKER`; returns when the benchmark saw it.
    fn wait_marker(&self, timeout: Duration) -> Option<Instant> {
        let rx = self.marker_rx.as_ref()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed) {
            if let Ok(t) = rx.recv_timeout(Duration::from_millis(50)) {
                return Some(t);
            }
        }
        None
    }

    /// CPU time (user + system) used by the capture process so far, in seconds.
    fn cpu_secs(&self) -> Res<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime 14 and stime 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or("bad /proc/PID/stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).ok_or("short stat")?.parse::<u64>()?
            + f.get(12).ok_or("short stat")?.parse::<u64>()?;
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        Ok(ticks as f64 / hz as f64)
    }

    /// Reads `VmRSS`, `VmHWM` and `RssAnon` (bytes) from /proc/PID/status.
    fn memory(&self) -> Res<BTreeMap<String, u64>> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let mut m = BTreeMap::new();
        for line in status.lines() {
            for key in ["VmRSS", "VmHWM", "RssAnon"] {
                if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                    let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse()?;
                    m.insert(key.to_owned(), kb * 1024);
                }
            }
        }
        Ok(m)
    }

    /// SIGTERM, wait, and read the summary; a non-zero exit is an error.
    fn stop(mut self) -> Res<Stopped> {
        let Some(mut child) = self.child.take() else {
            return Err("capture already stopped".into());
        };
        let t = Instant::now();
        signal::kill(self.pid, Signal::SIGTERM)?;
        let status = wait_timeout(&mut child, Duration::from_secs(120));
        let stop_took = t.elapsed();
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("capture did not exit within 120 s of SIGTERM (killed)".into());
            }
        };
        let stdout_bytes = self
            .stdout_thread
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or(0);
        let stderr = self
            .stderr_thread
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(format!("capture exited with {status}; stderr:\n{}", tail(&stderr)).into());
        }
        Ok(Stopped {
            summary: Summary::parse(&stderr)?,
            stop_took,
            stdout_bytes,
        })
    }

    /// Stops the process however it can and returns what it printed on stderr.
    fn kill_and_collect(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = signal::kill(self.pid, Signal::SIGTERM);
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.stderr_thread
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Whatever happened (error, panic, interruption), the capture we started stops.
        let _ = self.kill_and_collect();
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Removes a directory tree when dropped, so that the benchmark leaves nothing behind,
/// even when it fails.
struct TreeGuard(PathBuf);

impl TreeGuard {
    fn fresh(path: &str) -> Res<TreeGuard> {
        let p = PathBuf::from(path);
        // A tree left by a run that was killed outright: it is ours by its name.
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
        fs::create_dir_all(&p)?;
        Ok(TreeGuard(p))
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("capture-bench: cannot remove {}: {e}", self.0.display());
        }
        // The common parent (BENCH_TMP) goes too once the last tree in it is gone;
        // remove_dir fails harmlessly while another tree is still there.
        if let Some(parent) = self.0.parent()
            && parent == Path::new(BENCH_TMP)
        {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Pins the calling thread to one CPU and restores its previous mask when dropped.
/// Processes spawned while pinned would inherit the mask, so capture is always started
/// unpinned.
struct Pin(Option<CpuSet>);

impl Pin {
    fn to(cpu: usize) -> Pin {
        let Ok(old) = sched_getaffinity(Pid::from_raw(0)) else {
            return Pin(None);
        };
        let mut set = CpuSet::new();
        if set.set(cpu).is_err() || sched_setaffinity(Pid::from_raw(0), &set).is_err() {
            return Pin(None);
        }
        Pin(Some(old))
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = sched_setaffinity(Pid::from_raw(0), old);
        }
    }
}

/// Other processes holding eBPF programs (another `tandem capture`, a test suite): their
/// probes on the write syscalls would run in the "no capture" baseline too and load the
/// CPUs, so the benchmark waits for them and reports any it saw.
fn foreign_bpf_holders() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog")
        });
        if holds {
            let cmd = fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            found.push(format!("pid {pid}: {}", cmd.trim()));
        }
    }
    found
}

/// What `foreign_bpf_holders` saw at the start of a phase, with the phases it was seen
/// in (reported with the results).
static FOREIGN: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

/// How long to wait for other eBPF users to finish, before the run and before each
/// phase (`--wait-quiet`).
static WAIT_QUIET_SECS: AtomicU64 = AtomicU64::new(600);

/// Before a phase (none of our captures runs then): waits for other eBPF users to go,
/// and records any that are still there.
fn note_foreign_bpf(phase: &str) {
    wait_for_quiet(Duration::from_secs(WAIT_QUIET_SECS.load(Ordering::Relaxed)));
    let found = foreign_bpf_holders();
    if !found.is_empty() {
        eprintln!("capture-bench: WARNING: other eBPF users during {phase}: {found:?}");
        if let Ok(mut f) = FOREIGN.lock() {
            for h in found {
                f.entry(h).or_default().push(phase.to_owned());
            }
        }
    }
}

/// Waits (up to `max`) until no other process holds eBPF programs.
fn wait_for_quiet(max: Duration) {
    let deadline = Instant::now() + max;
    let mut said = false;
    loop {
        let found = foreign_bpf_holders();
        if found.is_empty() || Instant::now() > deadline || INTERRUPTED.load(Ordering::Relaxed) {
            return;
        }
        if !said {
            eprintln!(
                "capture-bench: waiting up to {} s for other eBPF users to finish: {found:?}",
                max.as_secs()
            );
            said = true;
        }
        thread::sleep(Duration::from_secs(1));
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "**yes**" } else { "**no**" }
}

fn command_output(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// Builds the agent in release mode, so the numbers are always those of the current
/// sources, and returns the binary's path.
fn build_tandem() -> Res<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = workspace_root();
    eprintln!("capture-bench: building the agent: {cargo} build --release -p tandem");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "tandem"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        return Err(format!("`cargo build --release -p tandem` failed ({status})").into());
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("tandem"))
}

fn machine_report(bin: &Path) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l.trim_start_matches("MemTotal:").trim().to_owned())
        })
        .unwrap_or_default();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let root = workspace_root();
    let root_s = root.to_string_lossy();
    let commit = command_output("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = command_output("git", &["-C", &root_s, "status", "--porcelain"])
        .is_some_and(|s| !s.is_empty());
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| {
                l.trim_start_matches("PRETTY_NAME=")
                    .trim_matches('"')
                    .to_owned()
            })
        })
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug (NOT representative: run with --release)"
    } else {
        "release"
    };
    let args: Vec<String> = std::env::args().collect();
    // Under `cargo run` (which `cargo xtask bench` uses) argv[0] is only the binary's
    // path; cargo's variables in the environment tell how it was really started.
    let via = if std::env::var_os("CARGO_PKG_NAME").is_some() {
        let extra = args.get(1..).unwrap_or_default().join(" ");
        format!(
            " (started as `cargo run --release -p tandem-tests --bin capture-bench{}`)",
            if extra.is_empty() {
                String::new()
            } else {
                format!(" -- {extra}")
            }
        )
    } else {
        String::new()
    };
    let mut s = String::new();
    let _ = writeln!(s, "- date: {date}");
    let _ = writeln!(
        s,
        "- machine: {} CPUs online, {cpu}, {mem} RAM",
        online_cpus()
    );
    let _ = writeln!(s, "- kernel: {kernel} ({os})");
    let _ = writeln!(
        s,
        "- sources: commit {commit}{}",
        if dirty {
            " plus uncommitted changes"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- benchmark profile: {profile}; agent: {}",
        bin.display()
    );
    let _ = writeln!(s, "- command: `{}`{via}", args.join(" "));
    s
}

// ---------------------------------------------------------------------------------------
// 1. Added cost per write system call
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Pwrite,
    Write,
}

struct Variant {
    label: &'static str,
    path: PathBuf,
    call: Call,
    target_ns: f64,
}

/// Samples of one variant: ns per call, one value per batch, per round.
#[derive(Default)]
struct Samples {
    off: Vec<Vec<f64>>,
    on: Vec<Vec<f64>>,
}

/// One batch of 4-byte `pwrite`s over the first page of the file.
#[inline(never)]
fn pwrite_batch(fd: RawFd, buf: &[u8; 4]) -> bool {
    let mut ok = true;
    for i in 0..BATCH {
        let off = ((i * 4) % 4096) as libc::off_t;
        // SAFETY: `buf` is valid for 4 bytes for the whole call and `fd` is an open
        // descriptor owned by the caller.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) };
        ok &= n == 4;
    }
    ok
}

/// One batch of 4-byte `write`s from the current position (the caller rewinds).
#[inline(never)]
fn write_batch(fd: RawFd, buf: &[u8; 4]) -> bool {
    let mut ok = true;
    for _ in 0..BATCH {
        // SAFETY: as in `pwrite_batch`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        ok &= n == 4;
    }
    ok
}

/// Times `calls` calls in batches; returns the mean ns per call of every batch.
fn time_calls(path: &Path, call: Call, calls: usize) -> Res<Vec<f64>> {
    let file = OpenOptions::new().write(true).open(path)?;
    let fd = file.as_raw_fd();
    let buf = *b"tdm\n";
    let batches = calls.div_ceil(BATCH);
    let mut out = Vec::with_capacity(batches);
    for b in 0..WARMUP_BATCHES + batches {
        if b % 64 == 0 {
            check_interrupted()?;
        }
        let t0 = Instant::now();
        let ok = match call {
            Call::Pwrite => pwrite_batch(fd, &buf),
            Call::Write => write_batch(fd, &buf),
        };
        let dt = t0.elapsed();
        if !ok {
            return Err(format!("write to {} failed", path.display()).into());
        }
        if call == Call::Write {
            // Rewinding outside the timed region keeps the file at one page, as with
            // pwrite, instead of growing it (block allocation is not what is measured).
            // SAFETY: lseek on an open descriptor has no memory-safety preconditions.
            if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        if b >= WARMUP_BATCHES {
            out.push(dt.as_nanos() as f64 / BATCH as f64);
        }
    }
    Ok(out)
}

/// Creates `root/d1/.../dN/f` (N = depth) with one page of content.
fn deep_file(root: &Path, depth: usize) -> Res<PathBuf> {
    let mut dir = root.to_path_buf();
    for i in 1..=depth {
        dir.push(format!("d{i}"));
    }
    fs::create_dir_all(&dir)?;
    let f = dir.join("f");
    fs::write(&f, vec![b'x'; 4096])?;
    Ok(f)
}

struct CostResult {
    variants: Vec<Variant>,
    samples: Vec<Samples>,
    pin_cpu: Option<usize>,
    summaries: Vec<(u64, u64, u64)>,
    calls: usize,
    rounds: usize,
}

fn bench_cost(bin: &Path, plan: &Plan) -> Res<CostResult> {
    let base = TreeGuard::fresh(&format!("{BENCH_TMP}/cost"))?;
    let watched = base.0.join("watched");
    let unwatched = base.0.join("unwatched");
    fs::create_dir_all(&watched)?;
    fs::create_dir_all(&unwatched)?;
    let variants = vec![
        Variant {
            label: "(b) pwrite, unwatched file",
            path: deep_file(&unwatched, 0)?,
            call: Call::Pwrite,
            target_ns: TARGET_UNWATCHED_NS,
        },
        Variant {
            label: "(b) pwrite, unwatched, 20 dirs deep",
            path: deep_file(&unwatched, 20)?,
            call: Call::Pwrite,
            target_ns: TARGET_UNWATCHED_NS,
        },
        Variant {
            label: "(c) pwrite, watched file (in root)",
            path: deep_file(&watched, 0)?,
            call: Call::Pwrite,
            target_ns: TARGET_WATCHED_NS,
        },
        Variant {
            label: "(c) pwrite, watched, 4 dirs deep",
            path: deep_file(&watched.join("l4"), 3)?,
            call: Call::Pwrite,
            target_ns: TARGET_WATCHED_NS,
        },
        Variant {
            label: "(c) pwrite, watched, 20 dirs deep",
            path: deep_file(&watched.join("l20"), 19)?,
            call: Call::Pwrite,
            target_ns: TARGET_WATCHED_NS,
        },
        Variant {
            label: "(b) write, unwatched file",
            path: {
                let p = unwatched.join("w");
                fs::write(&p, vec![b'x'; 4096])?;
                p
            },
            call: Call::Write,
            target_ns: TARGET_UNWATCHED_NS,
        },
        Variant {
            label: "(c) write, watched file",
            path: {
                let p = watched.join("w");
                fs::write(&p, vec![b'x'; 4096])?;
                p
            },
            call: Call::Write,
            target_ns: TARGET_WATCHED_NS,
        },
    ];
    let mut samples: Vec<Samples> = variants.iter().map(|_| Samples::default()).collect();
    // The writer runs on the last CPU; the scheduler gives the agent the other one(s).
    let ncpu = online_cpus();
    let pin_cpu = (ncpu > 1).then_some(ncpu - 1);
    let mut summaries = Vec::new();
    for round in 0..plan.cost_rounds {
        // Rotating the order inside a round spreads position effects over all variants.
        let order: Vec<usize> = (0..variants.len())
            .map(|i| (i + round) % variants.len())
            .collect();
        eprintln!(
            "capture-bench: cost round {}/{}: no capture",
            round + 1,
            plan.cost_rounds
        );
        note_foreign_bpf(&format!("cost round {}", round + 1));
        {
            let _pin = pin_cpu.map(Pin::to);
            for &i in &order {
                let v = &variants[i];
                samples[i]
                    .off
                    .push(time_calls(&v.path, v.call, plan.cost_calls)?);
            }
        }
        eprintln!(
            "capture-bench: cost round {}/{}: capture running",
            round + 1,
            plan.cost_rounds
        );
        let cap = Capture::start(bin, &[&watched], Duration::from_secs(60))?;
        {
            let _pin = pin_cpu.map(Pin::to);
            for &i in &order {
                let v = &variants[i];
                samples[i]
                    .on
                    .push(time_calls(&v.path, v.call, plan.cost_calls)?);
            }
        }
        let s = cap.stop()?.summary;
        summaries.push((
            s.get("kernel_events")?,
            s.get("lost_kernel_events")?,
            s.get("records")?,
        ));
    }
    drop(base);
    Ok(CostResult {
        variants,
        samples,
        pin_cpu,
        summaries,
        calls: plan.cost_calls,
        rounds: plan.cost_rounds,
    })
}

/// Whether every variant met its target; the table and raw numbers go to `out`.
fn report_cost(r: &CostResult, out: &mut String, raw: &mut String) -> bool {
    let _ = writeln!(
        out,
        "\n### 1. Added cost per write system call\n\n\
         {} calls per configuration and round, {} rounds interleaved (no capture, then \
         capture running, each round), batches of {BATCH} calls per clock read; median of \
         the batch means pooled over all rounds. Writer pinned to CPU {}. Capture watches \
         one directory on /tmp (ext4); its stdout is a pipe drained by the benchmark.\n",
        r.calls,
        r.rounds,
        r.pin_cpu
            .map_or_else(|| "none (one CPU)".to_owned(), |c| c.to_string())
    );
    let _ = writeln!(
        out,
        "| configuration | (a) no capture, ns/call | capture running, ns/call | added ns/call | \
         ratio | target (added) | met |\n|---|---:|---:|---:|---:|---:|---|"
    );
    let mut all_met = true;
    for (v, s) in r.variants.iter().zip(&r.samples) {
        let off: Vec<f64> = s.off.iter().flatten().copied().collect();
        let on: Vec<f64> = s.on.iter().flatten().copied().collect();
        let (m_off, m_on) = (median(&off), median(&on));
        let added = m_on - m_off;
        let met = added <= v.target_ns;
        all_met &= met;
        let _ = writeln!(
            out,
            "| {} | {m_off:.0} | {m_on:.0} | {added:+.0} | {:.2}× | ≤ {:.0} | {} |",
            v.label,
            m_on / m_off,
            v.target_ns,
            yes_no(met)
        );
        let _ = writeln!(raw, "cost {}:", v.label);
        for (round, (a, b)) in s.off.iter().zip(&s.on).enumerate() {
            let _ = writeln!(
                raw,
                "  round {}: no capture median {:.1} (p10 {:.1}, p90 {:.1}) | capture median \
                 {:.1} (p10 {:.1}, p90 {:.1}) | added {:+.1}",
                round + 1,
                median(a),
                percentile(a, 0.1),
                percentile(a, 0.9),
                median(b),
                percentile(b, 0.1),
                percentile(b, 0.9),
                median(b) - median(a)
            );
        }
        let paired: Vec<f64> = s
            .off
            .iter()
            .zip(&s.on)
            .map(|(a, b)| median(b) - median(a))
            .collect();
        let _ = writeln!(
            raw,
            "  pooled: no capture {m_off:.1}, capture {m_on:.1}, added {added:+.1}; \
             median of per-round differences {:+.1}",
            median(&paired)
        );
    }
    for (i, (k, l, rec)) in r.summaries.iter().enumerate() {
        let _ = writeln!(
            raw,
            "cost round {} capture summary: kernel_events={k} lost_kernel_events={l} records={rec}",
            i + 1
        );
    }
    all_met
}

// ---------------------------------------------------------------------------------------
// 2. Events per second without loss
// ---------------------------------------------------------------------------------------

struct RateRun {
    writers: usize,
    pattern: Pattern,
    capture: bool,
    writes: u64,
    writer_secs: f64,
    /// From the writers' start until the record of the marker written after them was
    /// seen (so every event of theirs had been consumed by then).
    capture_secs: f64,
    /// From the writers' end until that marker record: the backlog the agent had left.
    backlog: Duration,
    /// CPU time (user + system) the agent process used over `capture_secs`.
    agent_cpu_secs: f64,
    kernel_events: u64,
    lost: u64,
    overflows: u64,
    rescans: u64,
    stop_took: Duration,
    stdout_bytes: u64,
}

/// Where the rate writers put their bytes. Every call is one kernel event either way;
/// the patterns differ in what user space can make of them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// Consecutive offsets, like a log or a stream: user space merges adjacent ranges,
    /// so few records are printed and the kernel-to-agent path is what is measured.
    Sequential,
    /// Offsets two bytes apart: no two ranges touch, so every call stays a separate
    /// range and a separate output record (the worst case for the agent).
    Scattered,
    /// Sequential 1-byte writes through io_uring, `URING_BATCH` per `io_uring_enter`:
    /// one system call makes many kernel events, so the writers can offer more events
    /// than with one syscall each, which is how the agent's own ceiling can show.
    Uring,
}

/// io_uring writes submitted (and waited for) per `io_uring_enter`.
const URING_BATCH: u32 = 256;

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Sequential => "sequential",
            Pattern::Scattered => "scattered",
            Pattern::Uring => "io_uring",
        }
    }

    /// The offset of the i-th call, cycling over 2 MiB so the file stays small.
    fn offset(self, i: u64) -> libc::off_t {
        let stride = match self {
            Pattern::Sequential | Pattern::Uring => 1,
            Pattern::Scattered => 2,
        };
        ((i * stride) & ((2 << 20) - 1)) as libc::off_t
    }
}

/// One writer: 1-byte `pwrite`s at changing offsets until told to stop.
fn writer(
    path: PathBuf,
    pattern: Pattern,
    pin: Option<usize>,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let _pin = pin.map(Pin::to);
    let Ok(file) = OpenOptions::new().write(true).open(&path) else {
        start.wait();
        return 0;
    };
    let fd = file.as_raw_fd();
    if pattern == Pattern::Uring {
        return uring_writer(fd, &start, &stop);
    }
    let buf = [b'r'];
    let mut i: u64 = 0;
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1024 {
            let off = pattern.offset(i);
            // SAFETY: `buf` is valid for 1 byte for the whole call; `fd` is open.
            let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), 1, off) };
            if n != 1 {
                return i;
            }
            i += 1;
        }
    }
    i
}

/// One io_uring writer: batches of `URING_BATCH` sequential 1-byte writes, each batch
/// submitted and completed before the next. Returns the writes completed.
fn uring_writer(fd: RawFd, start: &Barrier, stop: &AtomicBool) -> u64 {
    use io_uring::{IoUring, opcode, types};
    let Ok(mut ring) = IoUring::new(URING_BATCH) else {
        start.wait();
        return 0;
    };
    let buf = [b'u'];
    let mut i: u64 = 0;
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..URING_BATCH {
            let sqe = opcode::Write::new(types::Fd(fd), buf.as_ptr(), 1)
                .offset(Pattern::Uring.offset(i) as u64)
                .build();
            // SAFETY: `buf` and `fd` outlive the operation: the batch is waited for below
            // before either can go away, and the queue has room for the whole batch.
            if unsafe { ring.submission().push(&sqe) }.is_err() {
                return i;
            }
            i += 1;
        }
        if ring.submit_and_wait(URING_BATCH as usize).is_err() {
            return i;
        }
        let mut done = 0;
        for cqe in ring.completion() {
            if cqe.result() != 1 {
                return i;
            }
            done += 1;
        }
        if done != URING_BATCH {
            return i;
        }
    }
    i
}

fn rate_run(
    bin: &Path,
    root: &Path,
    writers: usize,
    pattern: Pattern,
    capture: bool,
    secs: f64,
) -> Res<RateRun> {
    let files: Vec<PathBuf> = (0..writers)
        .map(|i| root.join(format!("rate-{i}")))
        .collect();
    for f in &files {
        File::create(f)?;
    }
    let marker = root.join(MARKER);
    File::create(&marker)?;
    let cap = if capture {
        Some(Capture::start(bin, &[root], Duration::from_secs(60))?)
    } else {
        None
    };
    let start = Arc::new(Barrier::new(writers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    // One writer is pinned to the last CPU so that the agent has a CPU of its own; with
    // more writers than that the scheduler shares the CPUs among everyone.
    let ncpu = online_cpus();
    let pin = (writers == 1 && ncpu > 1).then_some(ncpu - 1);
    let handles: Vec<JoinHandle<u64>> = files
        .iter()
        .map(|f| {
            let (f, b, s) = (f.clone(), start.clone(), stop.clone());
            thread::spawn(move || writer(f, pattern, pin, b, s))
        })
        .collect();
    let cpu0 = cap.as_ref().map_or(Ok(0.0), Capture::cpu_secs)?;
    start.wait();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    while Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let writers_done = Instant::now();
    let writer_secs = (writers_done - t0).as_secs_f64();
    check_interrupted()?;
    let mut run = RateRun {
        writers,
        pattern,
        capture,
        writes,
        writer_secs,
        capture_secs: 0.0,
        kernel_events: 0,
        lost: 0,
        overflows: 0,
        rescans: 0,
        stop_took: Duration::ZERO,
        stdout_bytes: 0,
        backlog: Duration::ZERO,
        agent_cpu_secs: 0.0,
    };
    if let Some(cap) = cap {
        // The marker's event is queued after every writer's; its record proves they
        // were all consumed (stopping the process is no such proof: it takes seconds
        // of its own, detaching the programs).
        fs::write(&marker, b"m")?;
        let caught_up = cap
            .wait_marker(Duration::from_secs(300))
            .ok_or("capture did not report the marker write within 300 s of the writers' end")?;
        run.agent_cpu_secs = cap.cpu_secs()? - cpu0;
        run.capture_secs = (caught_up - t0).as_secs_f64();
        run.backlog = caught_up.saturating_duration_since(writers_done);
        let st = cap.stop()?;
        run.kernel_events = st.summary.get("kernel_events")?;
        run.lost = st.summary.get("lost_kernel_events")?;
        run.overflows = st.summary.get("overflows")?;
        run.rescans = st.summary.get("rescans")?;
        run.stop_took = st.stop_took;
        run.stdout_bytes = st.stdout_bytes;
    }
    for f in files.iter().chain([&marker]) {
        let _ = fs::remove_file(f);
    }
    Ok(run)
}

fn bench_rate(bin: &Path, plan: &Plan) -> Res<Vec<RateRun>> {
    let base = TreeGuard::fresh(&format!("{BENCH_TMP}/rate"))?;
    let root = base.0.join("watched");
    fs::create_dir_all(&root)?;
    let mut runs = Vec::new();
    for round in 0..plan.rate_rounds {
        for pattern in [Pattern::Sequential, Pattern::Scattered, Pattern::Uring] {
            for &w in &plan.rate_writers {
                for capture in [false, true] {
                    let what = if capture {
                        "capture running"
                    } else {
                        "no capture"
                    };
                    eprintln!(
                        "capture-bench: rate round {}/{}: {w} writer(s), {}, {what}",
                        round + 1,
                        plan.rate_rounds,
                        pattern.name(),
                    );
                    note_foreign_bpf(&format!("rate round {}", round + 1));
                    runs.push(rate_run(bin, &root, w, pattern, capture, plan.rate_secs)?);
                }
            }
        }
    }
    drop(base);
    Ok(runs)
}

fn report_rate(runs: &[RateRun], plan: &Plan, out: &mut String, raw: &mut String) -> bool {
    let _ = writeln!(
        out,
        "\n### 2. Events per second without loss\n\n\
         Writers: 1-byte `pwrite`s, one watched file (ext4) per writer, each call one \
         kernel event; *sequential* offsets (adjacent ranges, merged by the agent into few \
         records) and *scattered* offsets (2 bytes apart: every call its own range and \
         output record); *io_uring*: sequential 1-byte writes, 256 per `io_uring_enter`, so \
         one system call makes many events (for io_uring, \"calls\" are writes). \
         {:.0} s per run, {} round(s); medians over rounds. One writer is \
         pinned to the last CPU; more writers are not pinned. After the writers stop, the \
         benchmark writes a marker file and waits for its record: the ring buffer is \
         consumed in order, so by then every writer event was consumed. Consumed events/s \
         = kernel_events (capture's summary) / time from the writers' start to that record; \
         backlog = time from the writers' end to that record. Agent CPU = user + system \
         time of the capture process over the same interval; events per agent CPU-second \
         is what one fully busy core would consume.\n",
        plan.rate_secs, plan.rate_rounds
    );
    let _ = writeln!(
        out,
        "| offsets | writers | writer calls/s, no capture | writer calls/s, capture running | \
         consumed kernel events/s | events per call | backlog after writers stop | agent \
         CPU | events per agent CPU-second | lost kernel events | overflows |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut best_lossless: f64 = 0.0;
    for pattern in [Pattern::Sequential, Pattern::Scattered, Pattern::Uring] {
        for &w in &plan.rate_writers {
            let pick = |capture: bool| -> Vec<&RateRun> {
                runs.iter()
                    .filter(|r| r.writers == w && r.pattern == pattern && r.capture == capture)
                    .collect()
            };
            let (off, on) = (pick(false), pick(true));
            if on.is_empty() {
                continue;
            }
            let med = |rs: &[&RateRun], f: &dyn Fn(&RateRun) -> f64| {
                median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let calls = |r: &RateRun| r.writes as f64 / r.writer_secs;
            let ev = med(&on, &|r| r.kernel_events as f64 / r.capture_secs);
            let per_call = med(&on, &|r| r.kernel_events as f64 / r.writes as f64);
            let backlog = med(&on, &|r| r.backlog.as_secs_f64());
            let cpu = med(&on, &|r| r.agent_cpu_secs / r.capture_secs);
            let per_cpu = med(&on, &|r| r.kernel_events as f64 / r.agent_cpu_secs);
            let lost: u64 = on.iter().map(|r| r.lost).sum();
            let overflows: u64 = on.iter().map(|r| r.overflows).sum();
            if lost == 0 {
                best_lossless = best_lossless.max(ev);
            }
            let _ = writeln!(
                out,
                "| {} | {w} | {:.3} M | {:.3} M | {:.3} M | {per_call:.3} | {backlog:.2} s | \
                 {:.0} % | {:.2} M | {lost} | {overflows} |",
                pattern.name(),
                med(&off, &calls) / 1e6,
                med(&on, &calls) / 1e6,
                ev / 1e6,
                cpu * 100.0,
                per_cpu / 1e6
            );
        }
    }
    let met = best_lossless >= TARGET_EVENTS_PER_S;
    let _ = writeln!(
        out,
        "\nBest lossless consumed rate: {:.3} M events/s; target ≥ {:.1} M events/s without \
         loss: {}.",
        best_lossless / 1e6,
        TARGET_EVENTS_PER_S / 1e6,
        yes_no(met)
    );
    for r in runs {
        let _ = writeln!(
            raw,
            "rate {} writers={} capture={}: writes={} writer_secs={:.3} ({:.0}/s){}",
            r.pattern.name(),
            r.writers,
            r.capture,
            r.writes,
            r.writer_secs,
            r.writes as f64 / r.writer_secs,
            if r.capture {
                format!(
                    " kernel_events={} caught_up_secs={:.3} ({:.0}/s) backlog_ms={} \
                     agent_cpu_secs={:.3} lost_kernel_events={} overflows={} rescans={} \
                     sigterm_to_exit_ms={} stdout_bytes={}",
                    r.kernel_events,
                    r.capture_secs,
                    r.kernel_events as f64 / r.capture_secs,
                    r.backlog.as_millis(),
                    r.agent_cpu_secs,
                    r.lost,
                    r.overflows,
                    r.rescans,
                    r.stop_took.as_millis(),
                    r.stdout_bytes
                )
            } else {
                String::new()
            }
        );
    }
    met
}

// ---------------------------------------------------------------------------------------
// 3. Memory with many files under watch
// ---------------------------------------------------------------------------------------

struct MemoryRun {
    files: usize,
    create_secs: f64,
    ready_secs: f64,
    mem: BTreeMap<String, u64>,
    index_entries: u64,
}

fn memory_run(bin: &Path, root: &Path, files: usize) -> Res<MemoryRun> {
    let cap = Capture::start(bin, &[root], Duration::from_secs(900))?;
    let ready_secs = cap.ready_after.as_secs_f64();
    // A moment after `ready` so that anything the start-up left to settle has settled.
    thread::sleep(Duration::from_millis(500));
    let mem = cap.memory()?;
    let st = cap.stop()?;
    Ok(MemoryRun {
        files,
        create_secs: 0.0,
        ready_secs,
        mem,
        index_entries: st.summary.get("index_entries")?,
    })
}

fn bench_memory(bin: &Path, plan: &Plan) -> Res<Vec<MemoryRun>> {
    let base = TreeGuard::fresh(BENCH_SHM)?;
    let empty = base.0.join("empty");
    let tree = base.0.join("tree");
    fs::create_dir_all(&empty)?;
    fs::create_dir_all(&tree)?;
    let files = plan.mem_dirs * plan.mem_files_per_dir;
    eprintln!(
        "capture-bench: memory: creating {files} files in {}",
        tree.display()
    );
    let t = Instant::now();
    for d in 0..plan.mem_dirs {
        check_interrupted()?;
        let dir = tree.join(format!("d{d:04}"));
        fs::create_dir(&dir)?;
        for f in 0..plan.mem_files_per_dir {
            File::create(dir.join(format!("f{f:04}")))?;
        }
    }
    let create_secs = t.elapsed().as_secs_f64();
    note_foreign_bpf("memory");
    eprintln!("capture-bench: memory: capture of an empty directory");
    let baseline = memory_run(bin, &empty, 0)?;
    eprintln!("capture-bench: memory: capture of {files} files");
    let mut big = memory_run(bin, &tree, files)?;
    big.create_secs = create_secs;
    eprintln!("capture-bench: memory: removing the tree");
    drop(base);
    Ok(vec![baseline, big])
}

fn report_memory(runs: &[MemoryRun], out: &mut String, raw: &mut String) {
    let _ = writeln!(
        out,
        "\n### 3. Agent memory with many files under watch\n\n\
         Empty files in directories of 1000 on /dev/shm (tmpfs), created before capture \
         starts; memory read from /proc/PID/status 0.5 s after `ready`. VmHWM is the peak \
         (the start-up scan included).\n"
    );
    let _ = writeln!(
        out,
        "| files under watch | start to `ready` | index entries | VmRSS | VmHWM | \
         RSS bytes per file | RSS bytes per file above the empty-tree run |\n\
         |---:|---:|---:|---:|---:|---:|---:|"
    );
    let base_rss = runs
        .iter()
        .find(|r| r.files == 0)
        .and_then(|r| r.mem.get("VmRSS").copied());
    for r in runs {
        let rss = r.mem.get("VmRSS").copied().unwrap_or(0);
        let hwm = r.mem.get("VmHWM").copied().unwrap_or(0);
        let (per, marginal) = if r.files == 0 {
            ("–".to_owned(), "–".to_owned())
        } else {
            (
                format!("{:.0}", rss as f64 / r.files as f64),
                base_rss.map_or_else(
                    || "?".to_owned(),
                    |b| format!("{:.0}", rss.saturating_sub(b) as f64 / r.files as f64),
                ),
            )
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} s | {} | {:.1} MiB | {:.1} MiB | {per} | {marginal} |",
            r.files,
            r.ready_secs,
            r.index_entries,
            mib(rss),
            mib(hwm)
        );
        let _ = writeln!(
            raw,
            "memory files={} create_secs={:.2} ready_secs={:.3} index_entries={} {}",
            r.files,
            r.create_secs,
            r.ready_secs,
            r.index_entries,
            r.mem
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

// ---------------------------------------------------------------------------------------

fn run() -> Res<()> {
    let opts = parse_args()?;
    if !nix::unistd::geteuid().is_root() {
        return Err("capture-bench needs root: capture loads eBPF programs \
                    (try `sudo cargo xtask bench`)"
            .into());
    }
    let handler = signal::SigAction::new(
        SigHandler::Handler(on_signal),
        signal::SaFlags::empty(),
        signal::SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::sigaction(sig, &handler) }?;
    }
    // SAFETY: setpriority has no memory-safety preconditions. Highest priority (what
    // `nice -n -20` would give) so that other load on the machine disturbs less; the
    // capture process inherits it, so writer and agent are on an equal footing.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } != 0 {
        eprintln!("capture-bench: cannot raise priority; continuing at the current one");
    }
    let bin = match (&opts.tandem, opts.build) {
        (Some(p), _) => p.clone(),
        (None, true) => build_tandem()?,
        (None, false) => std::env::current_exe()?
            .parent()
            .ok_or("no directory for the current executable")?
            .join("tandem"),
    };
    if !bin.exists() {
        return Err(format!("no agent binary at {}", bin.display()).into());
    }
    let plan = Plan::new(opts.quick);
    WAIT_QUIET_SECS.store(opts.wait_quiet, Ordering::Relaxed);
    wait_for_quiet(Duration::from_secs(opts.wait_quiet));
    if !foreign_bpf_holders().is_empty() {
        // Someone keeps eBPF programs loaded for good: waiting again before every
        // phase would only make the run longer. The report names them.
        WAIT_QUIET_SECS.store(0, Ordering::Relaxed);
    }
    let machine = format!(
        "{}- load average (1, 5, 15 min) at start: {}\n",
        machine_report(&bin),
        load_average()
    );
    eprintln!("{machine}");

    let mut out = String::new();
    let mut raw = String::new();
    let _ = writeln!(
        out,
        "## Capture benchmarks{}\n\n{machine}",
        if opts.quick { " (--quick)" } else { "" }
    );
    let mut verdicts: Vec<(&str, Option<bool>)> = Vec::new();
    // Every part is attempted even if an earlier one fails, so one broken measurement
    // does not hide the others; failures are reported in place.
    if opts.cost {
        match bench_cost(&bin, &plan) {
            Ok(r) => verdicts.push(("write cost", Some(report_cost(&r, &mut out, &mut raw)))),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "\n### 1. Added cost per write system call\n\nFAILED: {e}"
                );
                verdicts.push(("write cost", None));
            }
        }
    }
    if !INTERRUPTED.load(Ordering::Relaxed) && opts.rate {
        match bench_rate(&bin, &plan) {
            Ok(r) => verdicts.push((
                "event rate",
                Some(report_rate(&r, &plan, &mut out, &mut raw)),
            )),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "\n### 2. Events per second without loss\n\nFAILED: {e}"
                );
                verdicts.push(("event rate", None));
            }
        }
    }
    if !INTERRUPTED.load(Ordering::Relaxed) && opts.memory {
        match bench_memory(&bin, &plan) {
            Ok(r) => report_memory(&r, &mut out, &mut raw),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "\n### 3. Agent memory with many files under watch\n\nFAILED: {e}"
                );
                verdicts.push(("memory", None));
            }
        }
    }
    check_interrupted()?;
    let foreign: Vec<String> = FOREIGN
        .lock()
        .map(|f| {
            f.iter()
                .map(|(h, phases)| format!("{h} (during {})", phases.join(", ")))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nLoad average (1, 5, 15 min) at the end: {}. Other processes holding eBPF \
         programs at the start of a phase: {}.",
        load_average(),
        if foreign.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "**{}** (their probes and load are in every figure)",
                foreign.join(" | ")
            )
        }
    );
    println!("{out}");
    println!("### Raw numbers\n\n```\n{raw}```");
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !failed.is_empty() {
        return Err(format!("could not measure: {}", failed.join(", ")).into());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
