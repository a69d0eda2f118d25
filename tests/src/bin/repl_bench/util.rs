//! Small shared pieces of `repl-bench`: commands run inside a lab namespace (with or
//! without the durability barrier), a guard that stops a child process, statistics,
//! status queries and the machine description printed with the report.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde_json::Value;
use tandem_tests::lab::{Lab, tandem_bin};

pub(crate) type Res<T> = Result<T, String>;

pub(crate) const MIB: u64 = 1 << 20;

/// Set by SIGINT/SIGTERM: long loops stop, and the guards take the labs down.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Catches SIGINT and SIGTERM so that an interrupted run still removes its labs.
pub(crate) fn install_signal_handlers() -> Res<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(sig, SigHandler::Handler(on_signal)) }.map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub(crate) fn check_interrupted() -> Res<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

/// Sleeps `d`, waking early when interrupted.
pub(crate) fn sleep(d: Duration) -> Res<()> {
    std::thread::sleep(d);
    check_interrupted()
}

/// How a workload process is started inside a node's namespace.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Directly: `ip netns exec NS repl-bench worker ...`.
    Plain,
    /// Under the durability barrier: `ip netns exec NS tandem exec -c CFG -- ...`.
    Barrier,
}

/// `repl-bench worker ARGS` in node `i`'s namespace; `ip netns exec` and `tandem exec`
/// both exec in place, so the child's pid is the worker's.
pub(crate) fn worker_cmd(lab: &Lab, i: usize, mode: Mode, args: &[String]) -> Res<Command> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let node = &lab.nodes[i];
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &node.namespace]);
    if mode == Mode::Barrier {
        c.arg(tandem_bin())
            .arg("exec")
            .arg("-c")
            .arg(&node.config)
            .arg("--");
    }
    c.arg(me).arg("worker").args(args);
    Ok(c)
}

/// Runs a worker to completion and parses the JSON line it prints.
pub(crate) fn run_worker(lab: &Lab, i: usize, mode: Mode, args: &[String]) -> Res<Value> {
    let out = worker_cmd(lab, i, mode, args)?
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("worker {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("worker {args:?} failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("worker {args:?} printed {text:?}: {e}"))
}

/// A child process stopped (SIGKILL, by its pid) and reaped when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Guard {
    pub(crate) fn spawn(mut c: Command) -> Res<Guard> {
        c.spawn()
            .map(Guard)
            .map_err(|e| format!("spawn {c:?}: {e}"))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pth quantile (0..=1) of `v`, nearest rank.
pub(crate) fn quantile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i.min(s.len() - 1)]
}

pub(crate) fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

pub(crate) fn yes_no(ok: bool) -> &'static str {
    if ok { "**yes**" } else { "**no**" }
}

/// A number from a JSON value by pointer, or 0.
pub(crate) fn num(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Node `i`'s replication counters, or an error naming what is missing.
pub(crate) fn repl_u64(lab: &Lab, i: usize, key: &str) -> Res<u64> {
    let st = lab.status(i)?;
    st.pointer(&format!("/replication/{key}"))
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("status of node {i} has no replication.{key}: {st}"))
}

/// Runs `sync` so that earlier writes are not flushed during the next measurement.
pub(crate) fn sync_all() {
    let _ = Command::new("sync").status();
}

/// Bytes through node `i`'s lab link (its non-loopback interfaces), both directions.
pub(crate) fn link_bytes(lab: &Lab, i: usize) -> Res<u64> {
    let out = Command::new("ip")
        .args(["-n", &lab.nodes[i].namespace, "-s", "-j", "link", "show"])
        .output()
        .map_err(|e| format!("ip link: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j: {e}"))?;
    let mut total = 0;
    for l in v.as_array().ok_or("ip -j: not an array")? {
        if l.get("ifname").and_then(Value::as_str) == Some("lo") {
            continue;
        }
        for dir in ["rx", "tx"] {
            total += l
                .pointer(&format!("/stats64/{dir}/bytes"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
    }
    Ok(total)
}

pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn load_1min() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

fn command_output(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

fn first_line_with(file: &str, prefix: &str) -> String {
    fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(prefix)).map(|l| {
                l[prefix.len()..]
                    .trim_matches([' ', '\t', ':', '"'])
                    .to_owned()
            })
        })
        .unwrap_or_default()
}

/// The machine, kernel, sources and command, as markdown list items.
pub(crate) fn machine_report() -> String {
    let root = workspace_root();
    let root_s = root.to_string_lossy();
    let commit = command_output("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = command_output("git", &["-C", &root_s, "status", "--porcelain"])
        .is_some_and(|s| !s.is_empty());
    let profile = if cfg!(debug_assertions) {
        "debug (NOT representative: build with --release)"
    } else {
        "release"
    };
    let fs_of_tmp =
        command_output("findmnt", &["-n", "-o", "FSTYPE,SOURCE", "-T", "/tmp"]).unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- date: {}",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "- machine: {} CPUs online, {}, {} RAM; /tmp (labs, data dirs) is {fs_of_tmp}",
        std::thread::available_parallelism().map_or(0, usize::from),
        first_line_with("/proc/cpuinfo", "model name"),
        first_line_with("/proc/meminfo", "MemTotal"),
    );
    let _ = writeln!(
        s,
        "- kernel: {} ({})",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        first_line_with("/etc/os-release", "PRETTY_NAME=")
    );
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
        tandem_bin().display()
    );
    let _ = writeln!(
        s,
        "- rsync: {}",
        command_output("rsync", &["--version"])
            .and_then(|v| v.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "not installed".to_owned())
    );
    let args: Vec<String> = std::env::args().collect();
    let _ = writeln!(s, "- command: `{}`", args.join(" "));
    s
}
