//! Results of a benchmark run, their statistics, and the markdown and JSON the
//! run writes (the markdown is what goes into BENCHMARKS.md).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::soak::SoakResult;

/// One fault and what followed it, in ms after T0 (the instant taken just before
/// the fault).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct RunResult {
    pub(crate) run: usize,
    /// T0 itself, CLOCK_MONOTONIC ns: the stamps in the variant's logs
    /// (`probe.log`, `node*-keepalived.log`) are on the same clock.
    pub(crate) t0_ns: u64,
    /// The first connection answered by node2's application: "fault ->
    /// application answering" (the end of the client's outage).
    pub(crate) app_ms: Option<f64>,
    /// The client's neighbour entry for the VIP changing to node2's MAC: "fault
    /// -> VIP answered by the survivor".
    pub(crate) neigh_ms: Option<f64>,
    /// node2 saying it took over (keepalived: "Entering MASTER STATE").
    pub(crate) takeover_ms: Option<f64>,
    /// The last connection answered by node1 after T0.
    pub(crate) last_node1_ms: Option<f64>,
    /// Connections started after T0 and before the first node2 answer that got
    /// no answer at all.
    pub(crate) failed_probes: usize,
    /// Connections started in that window.
    pub(crate) probes: usize,
    /// How the failed ones failed (`TIMEOUT`, `REFUSED`, `ERR:<errno>`), counted.
    pub(crate) failures: BTreeMap<String, usize>,
    /// The largest gap between the starts of successive connections from T0 to
    /// the first node2 answer: the run's actual resolution (the prober's period
    /// unless the machine did not schedule it for a while).
    pub(crate) probe_gap_ms: Option<f64>,
    /// When the link cut of a node death was done.
    pub(crate) link_down_ms: Option<f64>,
    /// Whether node1 still had the VIP after the takeover (a killed manager does
    /// not remove it).
    pub(crate) vip_left_on_node1: bool,
    /// Why the run has no figure, if it has none.
    pub(crate) note: Option<String>,
}

/// Order statistics of one column.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Stats {
    /// p50 is the median (the mean of the two middle values for an even count).
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let p50 = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            n,
            p50,
            min: v[0],
            max: v[n - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        })
    }
}

/// One system x profile x fault.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Variant {
    pub(crate) system: String,
    pub(crate) profile: String,
    pub(crate) fault: String,
    pub(crate) fault_description: String,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) predicted_window_ms: Option<(f64, f64)>,
    pub(crate) runs: Vec<RunResult>,
    pub(crate) app: Option<Stats>,
    pub(crate) neigh: Option<Stats>,
    pub(crate) takeover: Option<Stats>,
    pub(crate) failed_probes: Option<Stats>,
    pub(crate) probe_gap: Option<Stats>,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) log_dir: String,
    pub(crate) error: Option<String>,
    /// The soak's result, for `--fault soak` (which has no runs).
    pub(crate) soak: Option<SoakResult>,
}

impl Variant {
    pub(crate) fn name(&self) -> String {
        format!("{}-{}-{}", self.system, self.profile, self.fault)
    }

    pub(crate) fn finish(&mut self) {
        let col = |f: fn(&RunResult) -> Option<f64>| Stats::of(self.runs.iter().filter_map(f));
        self.app = col(|r| r.app_ms);
        self.neigh = col(|r| r.neigh_ms);
        self.takeover = col(|r| r.takeover_ms);
        self.probe_gap = col(|r| r.probe_gap_ms);
        self.failed_probes = Stats::of(
            self.runs
                .iter()
                .filter(|r| r.app_ms.is_some())
                .map(|r| r.failed_probes as f64),
        );
    }
}

/// Everything one invocation measured.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Vec<(String, String)>,
    pub(crate) probe_period_ms: u64,
    pub(crate) probe_timeout_ms: u64,
    pub(crate) variants: Vec<Variant>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.1}"))
}

fn stat_cells(s: Option<&Stats>) -> String {
    s.map_or_else(
        || "– | – | –".into(),
        |s| format!("**{:.1}** | {:.1} | {:.1}", s.p50, s.min, s.max),
    )
}

impl Report {
    pub(crate) fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "#### Run\n");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(
            s,
            "- client prober: a new TCP connection to VIP:7000 every {} ms, {} ms budget each \
             (connect + read of the node name), attempts overlapping",
            self.probe_period_ms, self.probe_timeout_ms
        );
        let _ = writeln!(s, "\n#### Summary (ms after the fault)\n");
        let _ = writeln!(
            s,
            "| system | profile | fault | runs | application answers from node2: p50 | min | max \
             | VIP → node2 (client neighbour entry): p50 | min | max \
             | node2 reports takeover: p50 | min | max | predicted takeover window \
             | failed connections p50 / max | largest gap between connection starts, max |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
        );
        for v in self.variants.iter().filter(|v| v.soak.is_none()) {
            let ok = v.runs.iter().filter(|r| r.app_ms.is_some()).count();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {} |",
                v.system,
                v.profile,
                v.fault,
                ok,
                v.runs.len(),
                stat_cells(v.app.as_ref()),
                stat_cells(v.neigh.as_ref()),
                stat_cells(v.takeover.as_ref()),
                v.predicted_window_ms
                    .map_or_else(|| "–".into(), |(a, b)| format!("({a:.0}, {b:.0}]")),
                v.failed_probes
                    .as_ref()
                    .map_or_else(|| "–".into(), |f| format!("{:.0} / {:.0}", f.p50, f.max)),
                ms(v.probe_gap.as_ref().map(|g| g.max)),
            );
        }
        for v in &self.variants {
            s.push_str(&variant_markdown(v));
        }
        s
    }
}

fn variant_markdown(v: &Variant) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n#### {} — profile {} — fault: {}\n",
        v.system, v.profile, v.fault_description
    );
    for (k, val) in &v.settings {
        let _ = writeln!(s, "- {k}: {val}");
    }
    let _ = writeln!(
        s,
        "- load average (1, 5, 15 min): {} at the start, {} at the end",
        v.load_start, v.load_end
    );
    let _ = writeln!(s, "- logs: `{}`", v.log_dir);
    if let Some(e) = &v.error {
        let _ = writeln!(s, "- **stopped early**: {e}");
    }
    if let Some(r) = &v.soak {
        s.push_str(&soak_markdown(r));
        return s;
    }
    let _ = writeln!(
        s,
        "\n| run | application answers from node2 | VIP → node2 (neighbour entry) \
         | node2 reports takeover | last node1 answer | failed / started connections \
         | largest gap between connection starts | VIP left on node1 | note |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in &v.runs {
        let failures: Vec<String> = r
            .failures
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        let mut note = r.note.clone().unwrap_or_default();
        if !failures.is_empty() {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&failures.join(", "));
        }
        let _ = writeln!(
            s,
            "| {} | **{}** | {} | {} | {} | {} / {} | {} | {} | {} |",
            r.run,
            ms(r.app_ms),
            ms(r.neigh_ms),
            ms(r.takeover_ms),
            ms(r.last_node1_ms),
            r.failed_probes,
            r.probes,
            ms(r.probe_gap_ms),
            if r.vip_left_on_node1 { "yes" } else { "no" },
            note,
        );
    }
    for (label, f) in [
        ("p50", (|st: &Stats| st.p50) as fn(&Stats) -> f64),
        ("min", |st: &Stats| st.min),
        ("max", |st: &Stats| st.max),
        ("mean", |st: &Stats| st.mean),
    ] {
        let cell = |x: Option<&Stats>| x.map_or_else(|| "–".into(), |st| format!("{:.1}", f(st)));
        let _ = writeln!(
            s,
            "| **{label}** | **{}** | {} | {} | | {} | | | |",
            cell(v.app.as_ref()),
            cell(v.neigh.as_ref()),
            cell(v.takeover.as_ref()),
            cell(v.failed_probes.as_ref()),
        );
    }
    s
}

fn soak_markdown(r: &SoakResult) -> String {
    let mut s = String::new();
    let failures: Vec<String> = r
        .failures
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    let _ = writeln!(
        s,
        "- soak: {} s with {} busy-looping processes on each node; load average at the end {}",
        r.secs, r.burners_per_node, r.load_end
    );
    let _ = writeln!(
        s,
        "- **{}**: {} connections, {} answered by node1, **{} by node2**, {} unanswered{}",
        if r.clean() {
            "no spurious failover"
        } else {
            "SPURIOUS FAILOVER"
        },
        r.probes,
        r.answered_by_node1,
        r.answered_by_node2,
        r.failures.values().sum::<usize>(),
        if failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", failures.join(", "))
        }
    );
    let _ = writeln!(
        s,
        "- client neighbour entry moved away from node1: {} times; VIP seen on node2 in {} of {} once-a-second checks; node2 reported a takeover: {}",
        r.neighbour_moves,
        r.vip_on_node2_secs,
        r.secs,
        ms(r.takeover_ms)
    );
    let _ = writeln!(
        s,
        "- largest gap between connection starts: {} ms",
        ms(r.probe_gap_ms)
    );
    for (node, lines) in r.state_changes.iter().enumerate() {
        let _ = writeln!(s, "- node{} state changes: {}", node + 1, lines.len());
        for l in lines.iter().take(10) {
            let _ = writeln!(s, "  - `{l}`");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Stats::of([4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.as_ref().map(|s| s.p50), Some(2.5));
        assert_eq!(s.as_ref().map(|s| (s.min, s.max)), Some((1.0, 4.0)));
        assert_eq!(Stats::of([5.0, 1.0, 3.0]).map(|s| s.p50), Some(3.0));
        assert!(Stats::of([]).is_none());
    }
}
