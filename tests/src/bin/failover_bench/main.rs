//! `failover-bench`: failover time of an HA pair (issue 4), measured the same way
//! for every system so that Tandem's figures sit next to keepalived's:
//!
//! - fault -> the first connection to VIP:7000 answered by node2's application;
//! - fault -> the client's neighbour entry for the VIP holding node2's MAC;
//! - fault -> node2 saying it took over (when the system says so).
//!
//! Each variant (system x profile x fault) gets a fresh lab (Tandem's `tandem lab`
//! namespaces without agents, prefix `tfb<pid>v<k>`), a client prober in the
//! client namespace, and the pair. A run waits until the pair is steady with
//! node1 active, crashes node1's HA manager (`kill -9`; with `node-death` node1's
//! interface also goes down) at a random point of the system's timer cycle, takes
//! T0 just before the first signal, watches until node2 answers, and brings
//! node1 back.
//!
//! Systems: `keepalived` (installed with apt when missing; profiles `default`
//! and `tuned`) and `tandem` (not implemented until the agent's failover is
//! wired; it says so). Needs root. Run it as
//! `sudo cargo xtask bench failover -- --system keepalived --runs 20`.
//! Method and results: BENCHMARKS.md, "Failover (issue 4)".

mod events;
mod keepalived;
mod netlab;
mod pair;
mod probe;
mod proc;
mod report;
mod run;
mod soak;
mod tandem_backend;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{pair::Fault, report::Report, run::INTERRUPTED};

/// What to measure, and how.
pub(crate) struct Options {
    systems: Vec<String>,
    profiles: Vec<String>,
    faults: Vec<Fault>,
    pub(crate) runs: usize,
    pub(crate) period_ms: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) out: PathBuf,
    wait_load_secs: u64,
    pub(crate) soak_secs: u64,
}

const USAGE: &str = "usage: failover-bench [--system keepalived|tandem[,..]] \
    [--profile default|tuned[,..]] [--fault kill|node-death|soak[,..]] [--runs N] \
    [--period-ms MS] [--timeout-ms MS] [--out DIR] [--wait-load SECS] [--soak-secs SECS]\n\
    defaults: --system keepalived --profile default,tuned --fault kill --runs 20 \
    --period-ms 10 --timeout-ms 50 --out target/failover-bench --wait-load 120 \
    --soak-secs 600\n\
    needs root";

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        systems: vec!["keepalived".into()],
        profiles: vec!["default".into(), "tuned".into()],
        faults: vec![Fault::Kill],
        runs: 20,
        period_ms: 10,
        timeout_ms: 50,
        out: workspace_root().join("target/failover-bench"),
        wait_load_secs: 120,
        soak_secs: 600,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--system" => o.systems = list(&value()?),
            "--profile" => o.profiles = list(&value()?),
            "--fault" => {
                o.faults = list(&value()?)
                    .iter()
                    .map(|f| Fault::parse(f))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--runs" => o.runs = value()?.parse().context("--runs")?,
            "--period-ms" => o.period_ms = value()?.parse().context("--period-ms")?,
            "--timeout-ms" => o.timeout_ms = value()?.parse().context("--timeout-ms")?,
            "--out" => o.out = PathBuf::from(value()?),
            "--wait-load" => o.wait_load_secs = value()?.parse().context("--wait-load")?,
            "--soak-secs" => o.soak_secs = value()?.parse().context("--soak-secs")?,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if o.systems.is_empty() || o.profiles.is_empty() || o.faults.is_empty() || o.runs == 0 {
        bail!("nothing to measure\n{USAGE}");
    }
    if !(1..=1000).contains(&o.period_ms) || !(1..=10_000).contains(&o.timeout_ms) {
        bail!("--period-ms must be 1..=1000 and --timeout-ms 1..=10000");
    }
    Ok(o)
}

fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM stop the run at the next wait; the guards then stop the
/// processes and remove the lab.
fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(sig, SigHandler::Handler(on_signal)) }
            .with_context(|| format!("cannot handle {sig}"))?;
    }
    Ok(())
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn load_1min() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits (up to `max`) for the 1-minute load average to fall below 1.5: the
/// sub-second timers measured here slip on a busy machine.
fn wait_for_low_load(max: Duration) {
    let end = std::time::Instant::now() + max;
    let mut said = false;
    while load_1min() >= 1.5 && std::time::Instant::now() < end {
        if run::check_interrupted().is_err() {
            return;
        }
        if !said {
            eprintln!(
                "failover-bench: load average {}; waiting up to {} s for it to fall below 1.5",
                load_average(),
                max.as_secs()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn command_line(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn first_line_with(file: &str, prefix: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|v| v.trim_matches([' ', '\t', ':', '"']).to_owned())
        })
        .unwrap_or_default()
}

/// The machine and sources, for the report.
fn machine() -> Vec<(String, String)> {
    let root = workspace_root();
    let root = root.to_string_lossy();
    let commit = command_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty =
        command_line("git", &["-C", &root, "status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    vec![
        (
            "date".into(),
            command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        ),
        (
            "machine".into(),
            format!(
                "{} CPUs online (nproc), {}, {} RAM",
                std::thread::available_parallelism().map_or(0, usize::from),
                first_line_with("/proc/cpuinfo", "model name"),
                first_line_with("/proc/meminfo", "MemTotal"),
            ),
        ),
        (
            "kernel".into(),
            format!(
                "{} ({})",
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                first_line_with("/etc/os-release", "PRETTY_NAME=")
            ),
        ),
        (
            "sources".into(),
            format!(
                "commit {commit}{}",
                if dirty {
                    " plus uncommitted changes"
                } else {
                    ""
                }
            ),
        ),
        (
            "command".into(),
            format!("`{}`", std::env::args().collect::<Vec<_>>().join(" ")),
        ),
    ]
}

fn bench(o: &Options) -> anyhow::Result<Report> {
    for system in &o.systems {
        for profile in &o.profiles {
            pair::check(system, profile)?;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("failover-bench needs root (network namespaces, keepalived)");
    }
    install_signal_handlers()?;
    // A killed keepalived's VRRP child is re-parented to this process rather
    // than to init (which may not reap here), so that it can be reaped.
    nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let mut report = Report {
        machine: machine(),
        probe_period_ms: o.period_ms,
        probe_timeout_ms: o.timeout_ms,
        variants: Vec::new(),
    };
    let mut k = 0;
    for system in &o.systems {
        for profile in &o.profiles {
            for &fault in &o.faults {
                run::check_interrupted()?;
                wait_for_low_load(Duration::from_secs(o.wait_load_secs));
                k += 1;
                let v = run::variant(o, k, system, profile, fault);
                let stop = v.error.as_deref() == Some("interrupted");
                report.variants.push(v);
                // The summary is rewritten after every variant, so an
                // interrupted run still leaves what it measured.
                write_outputs(o, &report)?;
                if stop {
                    return Ok(report);
                }
            }
        }
    }
    Ok(report)
}

fn write_outputs(o: &Options, report: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    let md = report.markdown();
    for (name, text) in [("summary.json", json), ("summary.md", md)] {
        let path = o.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The programs run inside the lab's namespaces are this binary too.
    let sub = match args.first().map(String::as_str) {
        Some("probe") => Some(probe::probe_main(&args[1..])),
        Some("respond") => Some(probe::respond_main(&args[1..])),
        Some("burn") => Some(soak::burn_main()),
        _ => None,
    };
    if let Some(r) = sub {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("failover-bench {}: {e:#}", args[0]);
                ExitCode::FAILURE
            }
        };
    }
    let o = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    match bench(&o) {
        Ok(report) => {
            println!("{}", report.markdown());
            eprintln!(
                "failover-bench: wrote {} and summary.json",
                o.out.join("summary.md").display()
            );
            if report.variants.iter().any(|v| v.error.is_some()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("failover-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
