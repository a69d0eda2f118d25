//! Benchmarks 1–3, on a pair in sync: sequential write throughput and 4 KiB
//! write+fsync latency, replicated (node1's data directory under the barrier) against
//! unreplicated (a directory beside it on the same filesystem, no barrier), the lab
//! link's round trip, and replication lag under a continuous writer.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tandem_tests::lab::Lab;

use super::util::{
    Guard, MIB, Mode, Res, check_interrupted, num, run_worker, sleep, sync_all, worker_cmd,
};

/// Sizes of the live benchmarks.
pub(crate) struct LiveOptions {
    pub(crate) seq_bytes: u64,
    pub(crate) seq_rounds: usize,
    pub(crate) lat_iters: u64,
    pub(crate) lat_rounds: usize,
    pub(crate) ping_count: u64,
    pub(crate) lag_secs: u64,
}

/// Raw results of one mode (replicated or not).
#[derive(Default)]
pub(crate) struct Pair {
    pub(crate) plain: Vec<Value>,
    pub(crate) repl: Vec<Value>,
    /// Diagnostic runs: unreplicated, with `syncfs` instead of fsync.
    pub(crate) plain_syncfs: Vec<Value>,
    /// Diagnostic runs: two unreplicated workers at once, each on its own file
    /// (the second's result under `twin`). A pair in this lab shares one disk and
    /// two CPUs, so each replicated byte is written, and each durability call
    /// flushed, twice on the same machine: this is the cost of that alone, the
    /// best a one-machine pair could do.
    pub(crate) plain_twin: Vec<Value>,
}

/// The diagnostic configurations run beside the two modes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Diag {
    /// Unreplicated, with `syncfs` instead of `fsync`.
    Syncfs,
    /// Unreplicated, two workers at once.
    Twin,
}

/// The lag benchmark's samples and timings.
pub(crate) struct LagResult {
    /// (seconds since the writer started, lag bytes) while it wrote.
    pub(crate) during: Vec<(f64, u64)>,
    /// The same after it stopped, until lag was 0.
    pub(crate) after: Vec<(f64, u64)>,
    pub(crate) writer: Value,
    /// From the writer's last write to the first status with lag 0.
    pub(crate) zero_after: Option<f64>,
    /// From the writer's last write until node2's file equals node1's.
    pub(crate) identical_after: Option<f64>,
    pub(crate) status_errors: u64,
}

/// Waits for the pair to be back in sync with nothing in flight.
fn settle(lab: &Lab) -> Res<()> {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let st = lab.status(0)?;
        let idle = st.pointer("/replication/lag_bytes").and_then(Value::as_u64) == Some(0)
            && st.pointer("/replication/in_sync").and_then(Value::as_bool) == Some(true);
        if idle {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("pair not settled after 120 s: {st}"));
        }
        sleep(Duration::from_millis(100))?;
    }
}

/// Runs `args` (with `{path}` standing for the file) in both modes, `rounds` times,
/// alternating which mode goes first, and each of `diags` (unreplicated) beside them.
fn both_modes(lab: &Lab, name: &str, rounds: usize, args: &[String], diags: &[Diag]) -> Res<Pair> {
    let plain_dir = lab.dir.join("unreplicated");
    std::fs::create_dir_all(&plain_dir).map_err(|e| format!("{}: {e}", plain_dir.display()))?;
    let mut pair = Pair::default();
    for round in 0..rounds {
        let mut order = vec![(Mode::Plain, None), (Mode::Barrier, None)];
        order.extend(diags.iter().map(|d| (Mode::Plain, Some(*d))));
        let n = order.len();
        order.rotate_left(round % n);
        for (mode, diag) in order {
            check_interrupted()?;
            let dir = match mode {
                Mode::Plain => plain_dir.clone(),
                Mode::Barrier => lab.nodes[0].data_dir.clone(),
            };
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            settle(lab)?;
            sync_all();
            let mut a: Vec<String> = args
                .iter()
                .map(|s| s.replace("{path}", &path.to_string_lossy()))
                .collect();
            if diag == Some(Diag::Syncfs) {
                a.push("syncfs".to_owned());
            }
            let timeouts = released_on_timeout(lab);
            let mut v = if diag == Some(Diag::Twin) {
                twin(lab, &path, &a)?
            } else {
                run_worker(lab, 0, mode, &a)?
            };
            if mode == Mode::Barrier {
                // When the pair has everything: the final fsync may have been released
                // on the barrier's timeout before that.
                let t = Instant::now();
                settle(lab)?;
                v["settle_secs"] = t.elapsed().as_secs_f64().into();
                v["released_on_timeout"] = (released_on_timeout(lab) - timeouts).into();
            }
            let _ = std::fs::remove_file(&path);
            match (mode, diag) {
                (Mode::Plain, Some(Diag::Syncfs)) => pair.plain_syncfs.push(v),
                (Mode::Plain, Some(Diag::Twin)) => pair.plain_twin.push(v),
                (Mode::Plain, None) => pair.plain.push(v),
                (Mode::Barrier, _) => pair.repl.push(v),
            }
            eprintln!(
                "repl-bench: {name} round {round} {}{} done",
                label(mode),
                diag.map_or(String::new(), |d| format!(" ({d:?})"))
            );
        }
    }
    settle(lab)?;
    sync_all();
    Ok(pair)
}

/// Two unreplicated workers at once, on `path` and on `path.twin`; the first's
/// result with the second's under `twin`, and `secs` the longer of the two.
fn twin(lab: &Lab, path: &Path, args: &[String]) -> Res<Value> {
    let other = path.with_extension("twin");
    let p = path.to_string_lossy();
    let o = other.to_string_lossy();
    let args2: Vec<String> = args.iter().map(|a| a.replace(&*p, &o)).collect();
    let _ = std::fs::remove_file(&other);
    let (a, b) = std::thread::scope(|s| {
        let second = s.spawn(|| run_worker(lab, 0, Mode::Plain, &args2));
        let first = run_worker(lab, 0, Mode::Plain, args);
        (
            first,
            second
                .join()
                .unwrap_or_else(|_| Err("twin worker panicked".into())),
        )
    });
    let _ = std::fs::remove_file(&other);
    let (mut a, b) = (a?, b?);
    let secs = num(&a, "/secs").max(num(&b, "/secs"));
    a["secs"] = secs.into();
    a["twin"] = b;
    Ok(a)
}

/// Durability calls node1's agent released on its timeout so far (from its log): they
/// returned without the peer having the data.
pub(crate) fn released_on_timeout(lab: &Lab) -> i64 {
    std::fs::read_to_string(&lab.nodes[0].log)
        .map(|t| t.matches("released on timeout").count() as i64)
        .unwrap_or(0)
}

fn label(m: Mode) -> &'static str {
    match m {
        Mode::Plain => "unreplicated",
        Mode::Barrier => "replicated",
    }
}

/// 1. Sequential writes, one fsync at the end.
pub(crate) fn sequential(lab: &Lab, o: &LiveOptions) -> Res<Pair> {
    let args = [
        "seq".to_owned(),
        "{path}".to_owned(),
        o.seq_bytes.to_string(),
        MIB.to_string(),
    ];
    both_modes(lab, "seq.bin", o.seq_rounds, &args, &[Diag::Twin])
}

/// 2. 4 KiB appends, each followed by fsync.
pub(crate) fn latency(lab: &Lab, o: &LiveOptions) -> Res<Pair> {
    both_modes(
        lab,
        "lat.bin",
        o.lat_rounds,
        &lat_args(o, None),
        &[Diag::Syncfs, Diag::Twin],
    )
}

/// 2b. 4 KiB appends through an `O_DSYNC` descriptor: each write is its own
/// durability point (the agent performs it for the application and holds it).
pub(crate) fn dsync_latency(lab: &Lab, o: &LiveOptions) -> Res<Pair> {
    both_modes(
        lab,
        "dsync.bin",
        o.lat_rounds,
        &lat_args(o, Some("dsync")),
        &[],
    )
}

/// The latency worker's arguments: `lat_iters` in all over the rounds, 100 untimed
/// first, made durable by fsync or `how`.
fn lat_args(o: &LiveOptions, how: Option<&str>) -> Vec<String> {
    let per_round = o.lat_iters.div_ceil(o.lat_rounds as u64);
    let mut args = vec![
        "lat".to_owned(),
        "{path}".to_owned(),
        per_round.to_string(),
        "100".to_owned(),
    ];
    args.extend(how.map(str::to_owned));
    args
}

/// The lab link's UDP round trip, node1 to node2 and back, in microseconds.
pub(crate) fn link_rtt(lab: &Lab, o: &LiveOptions) -> Res<Value> {
    let addr = format!("{}:7499", lab.nodes[1].address);
    let mut c = worker_cmd(lab, 1, Mode::Plain, &["udp-echo".to_owned(), addr.clone()])?;
    c.stdout(Stdio::piped());
    let mut echo = Guard::spawn(c)?;
    let out = echo.0.stdout.take().ok_or("echo has no stdout")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        return Err(format!("udp echo did not start: {line:?}"));
    }
    run_worker(
        lab,
        0,
        Mode::Plain,
        &["udp-ping".to_owned(), addr, o.ping_count.to_string()],
    )
}

fn files_equal(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let same_len = match (fa.metadata(), fb.metadata()) {
        (Ok(x), Ok(y)) => x.len() == y.len(),
        _ => false,
    };
    if !same_len {
        return false;
    }
    let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let (Ok(na), Ok(nb)) = (ra.read(&mut ba), rb.read(&mut bb)) else {
            return false;
        };
        // BufReader over a regular file returns full reads except at the end; a short
        // read on one side only means a difference in length, already excluded.
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// 3. Lag while a writer writes (no fsync) for `lag_secs`, sampled every 100 ms.
pub(crate) fn lag(lab: &Lab, o: &LiveOptions) -> Res<LagResult> {
    settle(lab)?;
    sync_all();
    let file = lab.nodes[0].data_dir.join("stream.bin");
    let args = [
        "stream".to_owned(),
        file.to_string_lossy().into_owned(),
        (256 * MIB).to_string(),
        (256 * 1024u64).to_string(),
        o.lag_secs.to_string(),
    ];
    let mut c = worker_cmd(lab, 0, Mode::Barrier, &args)?;
    c.stdout(Stdio::piped());
    let mut writer = Guard::spawn(c)?;
    let out = writer.0.stdout.take().ok_or("writer has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    let (first, t0) = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the writer did not start")?;
    if first != "start" {
        return Err(format!("writer said {first:?}"));
    }
    let mut r = LagResult {
        during: Vec::new(),
        after: Vec::new(),
        writer: Value::Null,
        zero_after: None,
        identical_after: None,
        status_errors: 0,
    };
    let mut stopped: Option<Instant> = None;
    let mut next = t0;
    let give_up = t0 + Duration::from_secs(o.lag_secs + 180);
    loop {
        check_interrupted()?;
        if stopped.is_none()
            && let Ok((line, t)) = rx.try_recv()
        {
            r.writer = serde_json::from_str(&line).map_err(|e| format!("{line:?}: {e}"))?;
            stopped = Some(t);
        }
        let now = Instant::now();
        match super::util::repl_u64(lab, 0, "lag_bytes") {
            Ok(lag) => {
                let s = now.duration_since(t0).as_secs_f64();
                match stopped {
                    None => r.during.push((s, lag)),
                    Some(stop) => {
                        r.after.push((s, lag));
                        if lag == 0 {
                            r.zero_after = Some(now.duration_since(stop).as_secs_f64());
                            break;
                        }
                    }
                }
            }
            Err(_) => r.status_errors += 1,
        }
        if now > give_up {
            break;
        }
        next += Duration::from_millis(100);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let _ = writer.0.wait();
    if let Some(stop) = stopped {
        let other = lab.nodes[1].data_dir.join("stream.bin");
        while Instant::now() < give_up {
            if files_equal(&file, &other) {
                r.identical_after = Some(stop.elapsed().as_secs_f64());
                break;
            }
            sleep(Duration::from_millis(100))?;
        }
    }
    let _ = std::fs::remove_file(&file);
    settle(lab)?;
    Ok(r)
}

/// Write throughput of one run in MiB/s.
pub(crate) fn seq_mibs(v: &Value) -> f64 {
    num(v, "/bytes") / MIB as f64 / num(v, "/secs")
}
