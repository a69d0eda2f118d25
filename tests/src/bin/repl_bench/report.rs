//! The report: every figure of one run as markdown tables with the targets, then the
//! raw numbers (each run, each sample series) so that the summary can be checked.

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    live::{LagResult, Pair, seq_mibs},
    resync::Row,
    util::{MIB, Res, median, mib, num, quantile, yes_no},
};

/// Everything one run measured; a part that failed holds its error.
#[derive(Default)]
pub(crate) struct Results {
    pub(crate) machine: String,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) seq: Option<Res<Pair>>,
    pub(crate) lat: Option<Res<Pair>>,
    pub(crate) dsync: Option<Res<Pair>>,
    pub(crate) rtt: Option<Res<Value>>,
    pub(crate) lag: Option<Res<LagResult>>,
    pub(crate) resync: Option<Res<Vec<Row>>>,
    pub(crate) errors: Vec<String>,
}

/// All samples of a series of latency runs, pooled.
fn samples(runs: &[Value]) -> Vec<f64> {
    runs.iter()
        .filter_map(|v| v.get("samples_us").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

fn med_of(runs: &[Value], f: impl Fn(&Value) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn dash_nan(x: f64) -> String {
    if x.is_nan() {
        "–".to_owned()
    } else {
        format!("{x:.0}")
    }
}

/// The summary rows: (target, measured, met).
type Summary = Vec<(String, String, String)>;

fn seq_section(s: &mut String, sum: &mut Summary, p: &Pair) {
    let _ = writeln!(s, "### 1. Sequential write throughput\n");
    let _ = writeln!(
        s,
        "| directory | runs | MiB/s to fsync return (median) | min–max | write phase, s | final fsync, s | fsyncs released on timeout | MiB/s until the peer had it all (lag 0) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (name, runs) in [
        ("unreplicated", &p.plain),
        ("replicated, under the barrier", &p.repl),
        (
            "(diagnostic) two unreplicated writers at once (the disk work of a one-machine pair)",
            &p.plain_twin,
        ),
    ] {
        let rates: Vec<f64> = runs.iter().map(seq_mibs).collect();
        let _ = writeln!(
            s,
            "| {name} | {} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} | {} | {} |",
            runs.len(),
            median(&rates),
            quantile(&rates, 0.0),
            quantile(&rates, 1.0),
            med_of(runs, |v| num(v, "/write_secs")),
            med_of(runs, |v| num(v, "/fsync_secs")),
            // Only replicated runs count them; a sum of nothing would print "-0".
            dash_nan(
                runs.iter()
                    .map(|v| num(v, "/released_on_timeout"))
                    .filter(|x| !x.is_nan())
                    .fold(f64::NAN, |a, x| if a.is_nan() { x } else { a + x })
            ),
            dash_nan(med_of(runs, |v| num(v, "/bytes")
                / MIB as f64
                / (num(v, "/secs") + num(v, "/settle_secs")))),
        );
    }
    let ratio = med_of(&p.repl, seq_mibs) / med_of(&p.plain, seq_mibs);
    let _ = writeln!(
        s,
        "\nRatio replicated / unreplicated (medians): {ratio:.2}; target ≥ 0.70: {}\n",
        yes_no(ratio >= 0.7)
    );
    if !p.plain_twin.is_empty() {
        let twin = med_of(&p.plain_twin, seq_mibs);
        let _ = writeln!(
            s,
            "Diagnostic: two unreplicated writers at once (each {0} MiB plus its fsync, timed until both are done) reach {twin:.0} MiB/s each, {1:.2}× one writer alone. \
             A pair on this one machine writes every byte twice to the same disk with the same two CPUs, so this is the most a replicated writer could reach here.\n",
            num(&p.plain_twin[0], "/bytes") / MIB as f64,
            twin / med_of(&p.plain, seq_mibs)
        );
    }
    sum.push((
        "sequential write throughput ≥ 0.7 × unreplicated".into(),
        format!(
            "{:.0} vs {:.0} MiB/s: {ratio:.2}×",
            med_of(&p.repl, seq_mibs),
            med_of(&p.plain, seq_mibs)
        ),
        yes_no(ratio >= 0.7).into(),
    ));
}

fn lat_section(s: &mut String, sum: &mut Summary, p: &Pair, rtt: Option<&Res<Value>>) {
    let _ = writeln!(s, "### 2. 4 KiB write + fsync latency\n");
    let _ = writeln!(
        s,
        "| directory | iterations | p50 µs | p90 µs | p99 µs | max µs | mean µs |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let (plain, repl) = (samples(&p.plain), samples(&p.repl));
    let diag = samples(&p.plain_syncfs);
    let twins: Vec<Value> = p
        .plain_twin
        .iter()
        .flat_map(|v| [v.clone(), v.get("twin").cloned().unwrap_or_default()])
        .collect();
    let twin = samples(&twins);
    latency_rows(
        s,
        &[
            ("unreplicated", &plain),
            ("replicated, under the barrier", &repl),
            ("(diagnostic) unreplicated, syncfs instead of fsync", &diag),
            (
                "(diagnostic) two unreplicated writers at once, each call of both",
                &twin,
            ),
        ],
    );
    let rtt_v = match rtt {
        Some(Ok(v)) => samples(std::slice::from_ref(v)),
        _ => Vec::new(),
    };
    let rtt50 = quantile(&rtt_v, 0.5);
    let timeouts: f64 = p.repl.iter().map(|v| num(v, "/released_on_timeout")).sum();
    let _ = writeln!(
        s,
        "\nReplicated fsyncs released on the barrier listener's limit (the agent's ack timeout + 1 s, 6 s in the lab; returned without the peer having the data): {timeouts}."
    );
    let _ = writeln!(
        s,
        "\nLab link UDP round trip (node1 ↔ node2, 64-byte datagrams, {} pings): p50 {rtt50:.0} µs, p99 {:.0} µs, lost {}.",
        rtt_v.len(),
        quantile(&rtt_v, 0.99),
        rtt.and_then(|r| r.as_ref().ok())
            .map_or(f64::NAN, |v| num(v, "/lost"))
    );
    let limit = quantile(&plain, 0.5) + rtt50 + 150.0;
    let r50 = quantile(&repl, 0.5);
    let _ = writeln!(
        s,
        "Target: replicated p50 ≤ unreplicated p50 + link RTT p50 + 150 µs = {limit:.0} µs; measured {r50:.0} µs (added {:+.0} µs): {}\n",
        r50 - quantile(&plain, 0.5),
        yes_no(r50 <= limit)
    );
    if !twin.is_empty() {
        let base = quantile(&twin, 0.5);
        let limit2 = base + rtt50 + 150.0;
        let _ = writeln!(
            s,
            "Diagnostic: with two unreplicated writers at once, each fsync's p50 is {base:.0} µs. A replicated fsync in this lab flushes twice on the same disk at once (the primary's own, the secondary's), so that is its floor here; the target's form on that base: {base:.0} + {rtt50:.0} + 150 = {limit2:.0} µs: {}.\n",
            yes_no(r50 <= limit2)
        );
    }
    sum.push((
        "fsync p50 ≤ unreplicated p50 + link RTT + 150 µs".into(),
        format!(
            "{r50:.0} µs vs limit {limit:.0} µs ({:.0} + {rtt50:.0} + 150); p99 {:.0} vs {:.0} µs",
            quantile(&plain, 0.5),
            quantile(&repl, 0.99),
            quantile(&plain, 0.99)
        ),
        yes_no(r50 <= limit).into(),
    ));
}

/// One table row per series: count, p50, p90, p99, max and mean in µs.
fn latency_rows(s: &mut String, rows: &[(&str, &Vec<f64>)]) {
    for (name, v) in rows {
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let _ = writeln!(
            s,
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {mean:.0} |",
            v.len(),
            quantile(v, 0.5),
            quantile(v, 0.9),
            quantile(v, 0.99),
            quantile(v, 1.0),
        );
    }
}

fn dsync_section(s: &mut String, p: &Pair, fsync: Option<&Res<Pair>>) {
    let _ = writeln!(
        s,
        "### 2b. 4 KiB write through an O_DSYNC descriptor
"
    );
    let _ = writeln!(
        s,
        "| directory | iterations | p50 µs | p90 µs | p99 µs | max µs | mean µs |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let (plain, repl) = (samples(&p.plain), samples(&p.repl));
    latency_rows(
        s,
        &[
            ("unreplicated", &plain),
            (
                "replicated, under the barrier (the agent writes, then holds)",
                &repl,
            ),
        ],
    );
    let timeouts: f64 = p.repl.iter().map(|v| num(v, "/released_on_timeout")).sum();
    let _ = writeln!(
        s,
        "\nReplicated writes released on the barrier listener's limit: {timeouts}."
    );
    if let Some(Ok(f)) = fsync {
        let (f50, d50) = (quantile(&samples(&f.repl), 0.5), quantile(&repl, 0.5));
        let _ = writeln!(
            s,
            "Replicated p50: {d50:.0} µs per O_DSYNC write against {f50:.0} µs per write + fsync (section 2).\n"
        );
    }
}

fn lag_section(s: &mut String, sum: &mut Summary, l: &LagResult) {
    let during: Vec<f64> = l.during.iter().map(|&(_, b)| b as f64).collect();
    let rate = num(&l.writer, "/bytes") / MIB as f64 / num(&l.writer, "/secs");
    let fmt_s = |o: Option<f64>| o.map_or("never (timeout)".to_owned(), |x| format!("{x:.2} s"));
    let _ = writeln!(s, "### 3. Replication lag under a continuous writer\n");
    let _ = writeln!(
        s,
        "| writer | status samples while writing | lag max | lag p50 | lag p90 | lag 0 again after the writer stopped | node2's file identical after |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        s,
        "| {:.1} s, {rate:.0} MiB/s | {} (+{} after; {} failed) | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {} |\n",
        num(&l.writer, "/secs"),
        during.len(),
        l.after.len(),
        l.status_errors,
        quantile(&during, 1.0) / MIB as f64,
        quantile(&during, 0.5) / MIB as f64,
        quantile(&during, 0.9) / MIB as f64,
        fmt_s(l.zero_after),
        fmt_s(l.identical_after),
    );
    sum.push((
        "lag under load (no target)".into(),
        format!(
            "writer {rate:.0} MiB/s; lag max {:.1} MiB, p50 {:.1} MiB; 0 again {} after the writer stopped",
            quantile(&during, 1.0) / MIB as f64,
            quantile(&during, 0.5) / MIB as f64,
            fmt_s(l.zero_after)
        ),
        "–".into(),
    ));
}

fn resync_section(s: &mut String, sum: &mut Summary, rows: &[Row]) {
    let _ = writeln!(s, "### 4. Resync against rsync\n");
    let _ = writeln!(
        s,
        "| changed | Tandem: restart to SECOND in sync | Tandem data bytes (resync_total_bytes) | Tandem link bytes | rsync time | rsync bytes sent | rsync bytes received | rsync link bytes | time Tandem/rsync | data bytes Tandem/rsync sent | copies identical | faster | fewer bytes |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for r in rows {
        let faster = r.tandem_secs < r.rsync_secs;
        let fewer = r.tandem_data_bytes < r.rsync_sent;
        let _ = writeln!(
            s,
            "| {} MiB ({:.2} MiB) | {:.2} s | {:.2} MiB | {:.2} MiB | {:.2} s | {:.2} MiB | {:.2} MiB | {:.2} MiB | {:.2} | {:.2} | {} | {} | {} |",
            r.changed_mib,
            mib(r.changed_bytes),
            r.tandem_secs,
            mib(r.tandem_data_bytes),
            mib(r.tandem_link_bytes),
            r.rsync_secs,
            mib(r.rsync_sent),
            mib(r.rsync_received),
            mib(r.rsync_link_bytes),
            r.tandem_secs / r.rsync_secs,
            r.tandem_data_bytes as f64 / r.rsync_sent.max(1) as f64,
            if r.tandem_identical && r.rsync_identical {
                "yes"
            } else {
                "**NO**"
            },
            yes_no(faster),
            yes_no(fewer),
        );
        sum.push((
            format!(
                "resync of {} MiB faster than rsync, fewer bytes",
                r.changed_mib
            ),
            format!(
                "{:.2} s vs {:.2} s; {:.2} vs {:.2} MiB sent ({:.2} vs {:.2} MiB on the link)",
                r.tandem_secs,
                r.rsync_secs,
                mib(r.tandem_data_bytes),
                mib(r.rsync_sent),
                mib(r.tandem_link_bytes),
                mib(r.rsync_link_bytes)
            ),
            format!("{} / {}", yes_no(faster), yes_no(fewer)),
        ));
    }
    let _ = writeln!(s);
}

/// The report as markdown, and whether every part ran.
pub(crate) fn render(r: &Results) -> (String, bool) {
    let mut s = String::new();
    let mut sum = Summary::new();
    let mut errors = r.errors.clone();
    let _ = writeln!(s, "#### Run\n\n{}", r.machine);
    let _ = writeln!(
        s,
        "- load average (1, 5, 15 min) at start: {}\n",
        r.load_start
    );
    let mut part = |name: &str, e: &String| errors.push(format!("{name}: {e}"));
    match &r.seq {
        Some(Ok(p)) => seq_section(&mut s, &mut sum, p),
        Some(Err(e)) => part("sequential", e),
        None => {}
    }
    match &r.lat {
        Some(Ok(p)) => lat_section(&mut s, &mut sum, p, r.rtt.as_ref()),
        Some(Err(e)) => part("latency", e),
        None => {}
    }
    match &r.dsync {
        Some(Ok(p)) => dsync_section(&mut s, p, r.lat.as_ref()),
        Some(Err(e)) => part("O_DSYNC latency", e),
        None => {}
    }
    if let Some(Err(e)) = &r.rtt {
        part("link round trip", e);
    }
    match &r.lag {
        Some(Ok(l)) => lag_section(&mut s, &mut sum, l),
        Some(Err(e)) => part("lag", e),
        None => {}
    }
    match &r.resync {
        Some(Ok(rows)) => resync_section(&mut s, &mut sum, rows),
        Some(Err(e)) => part("resync", e),
        None => {}
    }
    let _ = writeln!(
        s,
        "#### Summary\n\n| target | measured | met |\n|---|---|---|"
    );
    for (t, m, ok) in &sum {
        let _ = writeln!(s, "| {t} | {m} | {ok} |");
    }
    let _ = writeln!(
        s,
        "\nLoad average (1, 5, 15 min) at the end: {}.",
        r.load_end
    );
    for e in &errors {
        let _ = writeln!(s, "\n**FAILED** {e}");
    }
    raw(&mut s, r);
    (s, errors.is_empty())
}

/// Every run's own numbers.
fn raw(s: &mut String, r: &Results) {
    let _ = writeln!(s, "\n<details><summary>Raw numbers</summary>\n\n```text");
    if let Some(Ok(p)) = &r.seq {
        for (name, runs) in [("unreplicated", &p.plain), ("replicated", &p.repl)] {
            for v in runs {
                let _ = writeln!(s, "seq {name}: {:.1} MiB/s {v}", seq_mibs(v));
            }
        }
    }
    let lat = r.lat.as_ref().and_then(|l| l.as_ref().ok());
    let dsync = r.dsync.as_ref().and_then(|l| l.as_ref().ok());
    let series = lat
        .map(|p| {
            vec![
                ("unreplicated", &p.plain),
                ("replicated", &p.repl),
                ("unreplicated syncfs", &p.plain_syncfs),
                ("unreplicated twin", &p.plain_twin),
            ]
        })
        .unwrap_or_default()
        .into_iter()
        .chain(
            dsync
                .map(|p| {
                    vec![
                        ("O_DSYNC unreplicated", &p.plain),
                        ("O_DSYNC replicated", &p.repl),
                    ]
                })
                .unwrap_or_default(),
        );
    {
        for (name, runs) in series {
            for (i, v) in runs.iter().enumerate() {
                let x = samples(std::slice::from_ref(v));
                let _ = writeln!(
                    s,
                    "lat {name} run {i}: n {} p10 {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} µs",
                    x.len(),
                    quantile(&x, 0.1),
                    quantile(&x, 0.5),
                    quantile(&x, 0.9),
                    quantile(&x, 0.99),
                    quantile(&x, 0.999),
                    quantile(&x, 1.0)
                );
            }
        }
    }
    if let Some(Ok(v)) = &r.rtt {
        let x = samples(std::slice::from_ref(v));
        let _ = writeln!(
            s,
            "udp rtt: n {} p10 {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} µs lost {}",
            x.len(),
            quantile(&x, 0.1),
            quantile(&x, 0.5),
            quantile(&x, 0.9),
            quantile(&x, 0.99),
            quantile(&x, 1.0),
            num(v, "/lost")
        );
    }
    if let Some(Ok(l)) = &r.lag {
        let _ = writeln!(s, "lag writer: {}", l.writer);
        let fmt = |v: &[(f64, u64)]| {
            v.iter()
                .map(|(t, b)| format!("{t:.1}:{:.1}", mib(*b)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(s, "lag MiB while writing (s:MiB): {}", fmt(&l.during));
        let _ = writeln!(s, "lag MiB after (s:MiB): {}", fmt(&l.after));
    }
    if let Some(Ok(rows)) = &r.resync {
        for row in rows {
            let _ = writeln!(s, "resync {row:?}");
        }
    }
    let _ = writeln!(s, "```\n\n</details>");
}
