//! One variant (system x profile x fault): a fresh lab, the client prober, the
//! pair, then `runs` times: wait until steady, fault at a random instant, watch
//! the client until node2 answers, bring node1 back.

use std::{
    io::Read,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{
    Options,
    events::{Events, Neigh, Probe, ms_since, now_ns, stamp_lines},
    netlab::NetLab,
    pair::{self, Fault, Pair},
    probe::APP_PORT,
    proc::NsProc,
    report::{RunResult, Variant},
};

/// Set by SIGINT/SIGTERM; every wait checks it, and the guards clean up.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn sleep(d: Duration) -> anyhow::Result<()> {
    // Short slices, so an interrupt is noticed within 50 ms.
    let end = now_ns() + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    loop {
        check_interrupted()?;
        let now = now_ns();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(Duration::from_nanos((end - now).min(50_000_000)));
    }
}

const SEC: u64 = 1_000_000_000;
/// How long the pair gets to become steady (start, or node1's return).
const STEADY_LIMIT: Duration = Duration::from_secs(90);
/// How long the client keeps being watched after node2 answered, so that the
/// run's log shows the aftermath too.
const TAIL: Duration = Duration::from_millis(200);

/// Measures one variant; a failure stops the variant and is kept in it.
pub(crate) fn variant(o: &Options, k: usize, system: &str, profile: &str, fault: Fault) -> Variant {
    let mut v = Variant {
        system: system.to_owned(),
        profile: profile.to_owned(),
        fault: fault.name().to_owned(),
        fault_description: fault.describe().to_owned(),
        load_start: crate::load_average(),
        ..Variant::default()
    };
    let dir = o.out.join(v.name());
    v.log_dir = dir.display().to_string();
    if let Err(e) = measure(o, k, &dir, fault, &mut v) {
        eprintln!("failover-bench: {}: {e:#}", v.name());
        v.error = Some(format!("{e:#}"));
    }
    v.load_end = crate::load_average();
    v.finish();
    v
}

fn measure(o: &Options, k: usize, dir: &Path, fault: Fault, v: &mut Variant) -> anyhow::Result<()> {
    // A fresh log directory per variant, so old runs' logs never mix in.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The pair is made first: it fails early (unknown profile, unimplemented
    // system, keepalived not installable) before any namespace exists.
    let made = pair::make(&v.system, &v.profile, dir)?;
    v.settings = made.describe();
    v.predicted_window_ms = made.predicted_window_ms();
    let prefix = format!("tfb{}v{k}", std::process::id() % 10000);
    // Locals are dropped in the reverse order of their declaration: the pair
    // stops first (while its interfaces still exist), then the prober, then the
    // lab goes.
    let lab = NetLab::up(&prefix)?;
    let events = Arc::new(Events::default());
    let _prober = start_prober(o, &lab, &events, dir)?;
    let mut pair = PairGuard(made);
    eprintln!(
        "failover-bench: {}: lab {prefix} up, starting the pair",
        v.name()
    );
    pair.0.start(&lab, &events)?;
    if fault == Fault::Soak {
        wait_steady(pair.0.as_mut(), &lab, &events, o)?;
        eprintln!(
            "failover-bench: {}: steady; soaking for {} s",
            v.name(),
            o.soak_secs
        );
        let r = crate::soak::watch(o.soak_secs, pair.0.as_mut(), &lab, &events)?;
        eprintln!(
            "failover-bench: {}: soak {}: {} connections, {} answered by node2, {} failed",
            v.name(),
            if r.clean() { "clean" } else { "NOT clean" },
            r.probes,
            r.answered_by_node2,
            r.failures.values().sum::<usize>()
        );
        v.soak = Some(r);
        return Ok(());
    }
    for run in 1..=o.runs {
        let r = one_run(o, run, pair.0.as_mut(), &lab, &events, fault)?;
        eprintln!(
            "failover-bench: {} run {run}/{}: application {} ms, neighbour {} ms, takeover {} ms, {} failed connections{}",
            v.name(),
            o.runs,
            fmt_ms(r.app_ms),
            fmt_ms(r.neigh_ms),
            fmt_ms(r.takeover_ms),
            r.failed_probes,
            r.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
        );
        v.runs.push(r);
    }
    Ok(())
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.1}"))
}

/// Stops the pair when the variant ends, however it ends.
struct PairGuard(Box<dyn Pair>);

impl Drop for PairGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// `failover-bench probe` in the client's namespace, its lines parsed into
/// `events` and kept in `probe.log`.
fn start_prober(
    o: &Options,
    lab: &NetLab,
    events: &Arc<Events>,
    dir: &Path,
) -> anyhow::Result<NsProc> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let argv = vec![
        exe.display().to_string(),
        "probe".into(),
        format!("{}:{APP_PORT}", lab.vip()),
        o.period_ms.to_string(),
        o.timeout_ms.to_string(),
    ];
    let mut p = NsProc::spawn(lab.client_ns(), &argv, true)?;
    let child = p.child_mut().context("the prober was reaped at once")?;
    let out = child.stdout.take().context("the prober has no stdout")?;
    let err = child.stderr.take().context("the prober has no stderr")?;
    let ev = Arc::clone(events);
    stamp_lines(out, &dir.join("probe.log"), move |_, line| {
        parse_probe_line(&ev, &line)
    })?;
    stamp_lines(err, &dir.join("probe-stderr.log"), |_, line| {
        eprintln!("failover-bench probe: {line}");
    })?;
    Ok(p)
}

/// One prober line (see probe.rs); lines that do not parse are ignored (they are
/// in `probe.log` all the same).
fn parse_probe_line(events: &Events, line: &str) {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["P", start, end, result] => {
            if let (Ok(start), Ok(end)) = (start.parse(), end.parse()) {
                events.push_probe(Probe {
                    start,
                    end,
                    result: (*result).to_owned(),
                });
            }
        }
        ["N", t, kind, mac, _state] => {
            if let Ok(t) = t.parse() {
                let mac = (*kind == "new" && *mac != "-").then(|| (*mac).to_owned());
                events.push_neigh(Neigh { t, mac });
            }
        }
        _ => {}
    }
}

/// Waits until the pair says it is steady and the client agrees: every
/// connection of the last second answered by node1, the client's neighbour
/// entry holding node1's MAC, and the VIP on node1 only.
fn wait_steady(
    pair: &mut dyn Pair,
    lab: &NetLab,
    events: &Events,
    o: &Options,
) -> anyhow::Result<()> {
    let end = now_ns() + u64::try_from(STEADY_LIMIT.as_nanos()).unwrap_or(u64::MAX);
    loop {
        check_interrupted()?;
        let now = now_ns();
        let why = match steady_now(pair, lab, events, o, now) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if now > end {
            bail!("the pair is not steady after {STEADY_LIMIT:?}: {why}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn steady_now(
    pair: &mut dyn Pair,
    lab: &NetLab,
    events: &Events,
    o: &Options,
    now: u64,
) -> Result<(), String> {
    pair.steady(events, now)?;
    let recent: Vec<Probe> = events
        .probes_since(now.saturating_sub(SEC))
        .into_iter()
        .filter(|p| p.start >= now.saturating_sub(SEC))
        .collect();
    let want = usize::try_from(1000 / o.period_ms.max(1) / 2).unwrap_or(1);
    if recent.len() < want {
        return Err(format!("only {} answers in the last second", recent.len()));
    }
    if let Some(p) = recent.iter().find(|p| p.result != lab.node_name(0)) {
        return Err(format!("a connection in the last second got {}", p.result));
    }
    let mac = lab.client_vip_mac().map_err(|e| e.to_string())?;
    if mac.as_deref() != Some(lab.macs[0].as_str()) {
        return Err(format!(
            "the client's neighbour entry for the VIP is {mac:?}, not node1's {}",
            lab.macs[0]
        ));
    }
    match (lab.has_vip(0), lab.has_vip(1)) {
        (Ok(true), Ok(false)) => Ok(()),
        (a, b) => Err(format!("VIP on node1: {a:?}, on node2: {b:?}")),
    }
}

/// A uniform random fraction in [0, 1), from the kernel's generator.
fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        // Without a random source, spread by the clock's low bits instead.
        b = now_ns().to_ne_bytes();
    }
    (u64::from_ne_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn one_run(
    o: &Options,
    run: usize,
    pair: &mut dyn Pair,
    lab: &NetLab,
    events: &Arc<Events>,
    fault: Fault,
) -> anyhow::Result<RunResult> {
    wait_steady(pair, lab, events, o)?;
    sleep(pair.fault_spread().mul_f64(random_fraction()))?;
    let t0 = pair.crash_node1()?;
    let mut r = RunResult {
        run,
        t0_ns: t0,
        ..RunResult::default()
    };
    if fault == Fault::NodeDeath {
        lab.set_link(0, false)?;
        r.link_down_ms = Some(ms_since(t0, now_ns()));
    }
    let survivor = lab.node_name(1).to_owned();
    let limit = pair.failover_limit();
    let deadline = t0 + u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    let first_app = |events: &Events| {
        events
            .probes_since(t0)
            .into_iter()
            .find(|p| p.start >= t0 && p.result == survivor)
    };
    let first_neigh = |events: &Events| {
        events
            .neigh_since(t0)
            .into_iter()
            .find(|n| n.mac.as_deref() == Some(lab.macs[1].as_str()))
    };
    loop {
        check_interrupted()?;
        if (first_app(events).is_some() && first_neigh(events).is_some()) || now_ns() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sleep(TAIL)?;
    let app = first_app(events);
    r.app_ms = app.as_ref().map(|p| ms_since(t0, p.end));
    r.neigh_ms = first_neigh(events).map(|n| ms_since(t0, n.t));
    r.takeover_ms = pair.takeover_reported(events, t0).map(|t| ms_since(t0, t));
    let probes = events.probes_since(t0);
    let node1 = lab.node_name(0);
    r.last_node1_ms = probes
        .iter()
        .filter(|p| p.start >= t0 && p.result == node1)
        .map(|p| ms_since(t0, p.end))
        .reduce(f64::max);
    let window_end = app.as_ref().map_or(u64::MAX, |p| p.end);
    let in_window: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.start >= t0 && p.start < window_end)
        .collect();
    r.probes = in_window.len();
    for p in &in_window {
        if p.result != node1 && p.result != survivor {
            r.failed_probes += 1;
            *r.failures.entry(p.result.clone()).or_default() += 1;
        }
    }
    // The last start before T0 counts too: the gap that spans T0 is part of
    // the run's resolution.
    let mut starts: Vec<u64> = probes
        .iter()
        .filter(|p| p.start < window_end)
        .map(|p| p.start)
        .chain(
            events
                .probes_since(t0.saturating_sub(SEC))
                .iter()
                .filter(|p| p.start < t0)
                .map(|p| p.start)
                .max(),
        )
        .collect();
    starts.sort_unstable();
    starts.dedup();
    r.probe_gap_ms = starts
        .windows(2)
        .map(|w| ms_since(w[0], w[1]))
        .reduce(f64::max);
    r.vip_left_on_node1 = lab.has_vip(0).unwrap_or(false);
    if app.is_none() {
        r.note = Some(format!("node2 did not answer within {limit:?}"));
    }
    events.forget_probes_before(t0);
    if fault == Fault::NodeDeath {
        lab.set_link(0, true)?;
    }
    pair.recover_node1(lab, events)?;
    Ok(r)
}
