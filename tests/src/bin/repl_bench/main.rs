//! `repl-bench`: replication's benchmarks (issue 3), each side by side with its
//! baseline in one run, in a two-node lab (`tandem lab`, network namespaces joined by
//! a veth bridge on this machine):
//!
//! 1. sequential write throughput in node1's replicated directory under the
//!    durability barrier against a directory beside it that is not replicated;
//! 2. 4 KiB write+fsync latency, the same two ways, and the lab link's round trip;
//! 3. replication lag while a writer writes without fsync;
//! 4. a returning secondary's resync against rsync (daemon mode, over the lab link)
//!    moving the same change set.
//!
//! It prints a markdown report and the raw numbers. It needs root. Run it with
//! `sudo cargo xtask bench repl`, which builds the release agent and passes it in
//! TANDEM_BIN. Method and results: `BENCHMARKS.md`, "Replication (issue 3)".

mod live;
mod report;
mod resync;
mod util;
mod worker;

use std::{process::ExitCode, time::Duration};

use tandem_tests::lab::Lab;

use crate::{
    live::LiveOptions,
    report::Results,
    resync::ResyncOptions,
    util::{MIB, Res, load_1min, load_average},
};

/// What to run, and how big.
struct Options {
    only: Vec<String>,
    wait_load_secs: u64,
    live: LiveOptions,
    resync: ResyncOptions,
}

fn parse_options(args: &[String]) -> Res<Options> {
    let mut o = Options {
        only: ["seq", "lat", "dsync", "lag", "resync"]
            .map(str::to_owned)
            .to_vec(),
        wait_load_secs: 300,
        live: LiveOptions {
            seq_bytes: 512 * MIB,
            seq_rounds: 3,
            lat_iters: 3000,
            lat_rounds: 2,
            ping_count: 5000,
            lag_secs: 10,
        },
        resync: ResyncOptions {
            big_files: 4,
            big_size: 64 * MIB,
            small_files: 1000,
            changes_mib: vec![0, 16, 64],
        },
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.live.seq_bytes = 128 * MIB;
                o.live.seq_rounds = 1;
                o.live.lat_iters = 500;
                o.live.lat_rounds = 1;
                o.live.ping_count = 1000;
                o.live.lag_secs = 3;
                o.resync.big_size = 16 * MIB;
                o.resync.small_files = 200;
                o.resync.changes_mib = vec![4];
            }
            "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
            "--wait-load" => {
                o.wait_load_secs = value()?.parse().map_err(|e| format!("--wait-load: {e}"))?;
            }
            "--changes" => {
                o.resync.changes_mib = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--changes: {e}")))
                    .collect::<Res<_>>()?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: repl-bench [--quick] [--only seq,lat,dsync,lag,resync] \
                            [--wait-load SECS] [--changes MIB,MIB,...]\n\
                            needs root; TANDEM_BIN names the (release) agent"
                        .into(),
                );
            }
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    Ok(o)
}

/// Waits (up to `max`) for the 1-minute load average to fall below 2.
fn wait_for_low_load(max: Duration) {
    let end = std::time::Instant::now() + max;
    let mut said = false;
    while load_1min() >= 2.0 && std::time::Instant::now() < end {
        if util::check_interrupted().is_err() {
            return;
        }
        if !said {
            eprintln!(
                "repl-bench: load average {}; waiting up to {} s for the 1-min load to fall below 2",
                load_average(),
                max.as_secs()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// A lab with the pair in sync.
fn pair(tag: &str) -> Res<Lab> {
    let lab = Lab::up(tag)?;
    lab.wait_state(0, "PRIM", true, Duration::from_secs(60))?;
    lab.wait_state(1, "SECOND", true, Duration::from_secs(60))?;
    Ok(lab)
}

fn run(o: &Options) -> Results {
    let want = |k: &str| o.only.iter().any(|x| x == k);
    let mut r = Results {
        machine: util::machine_report(),
        ..Results::default()
    };
    wait_for_low_load(Duration::from_secs(o.wait_load_secs));
    r.load_start = load_average();
    if ["seq", "lat", "dsync", "lag"].iter().any(|k| want(k)) {
        match pair("rb") {
            Err(e) => r.errors.push(format!("lab: {e}")),
            Ok(lab) => {
                // Latency first: it is the most sensitive to the agents' state.
                if want("lat") {
                    r.rtt = Some(live::link_rtt(&lab, &o.live));
                    r.lat = Some(live::latency(&lab, &o.live));
                }
                if want("dsync") {
                    r.dsync = Some(live::dsync_latency(&lab, &o.live));
                }
                if want("seq") {
                    r.seq = Some(live::sequential(&lab, &o.live));
                }
                if want("lag") {
                    r.lag = Some(live::lag(&lab, &o.live));
                }
            }
        }
    }
    if want("resync") && util::check_interrupted().is_ok() {
        r.resync = Some(pair("rr").and_then(|lab| resync::run(&lab, &o.resync)));
    }
    r.load_end = load_average();
    r
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return match worker::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("repl-bench worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("repl-bench needs root (labs: namespaces, eBPF)");
        return ExitCode::FAILURE;
    }
    if std::env::var_os("TANDEM_BIN").is_none() {
        eprintln!(
            "repl-bench: set TANDEM_BIN to the release agent (cargo build --release -p tandem), \
             or run `sudo cargo xtask bench repl`, which does both"
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = util::install_signal_handlers() {
        eprintln!("repl-bench: {e}");
        return ExitCode::FAILURE;
    }
    let results = run(&opts);
    let (text, ok) = report::render(&results);
    println!("{text}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
