//! What the demo measured, worked out from the client's attempts, and the table it
//! ends with.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::{Duration, Instant},
};

use super::{
    client::Attempt,
    progress::{bytes, human},
};

/// The demo's results.
#[derive(Clone, Debug, Default)]
pub(crate) struct Summary {
    /// Writes acknowledged, by node.
    pub(crate) acked_by: BTreeMap<String, usize>,
    /// Write attempts not acknowledged (nobody answered, mostly during outages).
    pub(crate) unacked: usize,
    /// From the link cut to the first write acknowledged by the survivor.
    pub(crate) outage: Duration,
    /// Acknowledged writes missing from a copy that should hold them.
    pub(crate) lost: BTreeSet<u64>,
    /// Data bytes the returning node's resync carried.
    pub(crate) resync_bytes: u64,
    /// The data in the replicated directory when the node returned.
    pub(crate) data_bytes: u64,
    /// From `swap` to the first write acknowledged by node1 again.
    pub(crate) swap: Duration,
    /// The longest time without an acknowledged write during the swap.
    pub(crate) swap_pause: Duration,
    /// Whether both copies of the writes ended identical.
    pub(crate) identical: bool,
}

impl Summary {
    /// Counts the attempts.
    pub(crate) fn count(&mut self, attempts: &[Attempt]) {
        self.acked_by.clear();
        self.unacked = 0;
        for a in attempts {
            match &a.acked_by {
                Some(node) => *self.acked_by.entry(node.clone()).or_default() += 1,
                None => self.unacked += 1,
            }
        }
    }

    /// Writes acknowledged in all.
    pub(crate) fn acked(&self) -> usize {
        self.acked_by.values().sum()
    }

    /// The table.
    pub(crate) fn render(&self) -> String {
        let by: Vec<String> = self
            .acked_by
            .iter()
            .map(|(node, n)| format!("{n} by {node}"))
            .collect();
        let share = if self.data_bytes == 0 {
            String::new()
        } else {
            // Two decimals of a percentage; the float only feeds the display.
            let pct = self.resync_bytes as f64 * 100.0 / self.data_bytes as f64;
            format!(" ({pct:.2} %)")
        };
        let rows = [
            (
                "acknowledged writes",
                format!("{} ({})", self.acked(), by.join(", ")),
            ),
            (
                "unanswered attempts",
                format!("{} (while nobody served the VIP)", self.unacked),
            ),
            (
                "failover outage",
                format!(
                    "{} (link cut -> first write acknowledged by node2)",
                    human(self.outage)
                ),
            ),
            ("lost writes", self.lost.len().to_string()),
            (
                "resync on return",
                format!(
                    "{} of {} data{share}: only the ranges written meanwhile",
                    bytes(self.resync_bytes),
                    bytes(self.data_bytes)
                ),
            ),
            (
                "swap back to node1",
                format!(
                    "{} (writes paused at most {})",
                    human(self.swap),
                    human(self.swap_pause)
                ),
            ),
            (
                "copies identical",
                if self.identical { "yes" } else { "NO" }.to_owned(),
            ),
        ];
        let mut out = String::from("Summary\n");
        for (k, v) in rows {
            out.push_str(&format!("  {k:<21} {v}\n"));
        }
        out
    }
}

/// When `node` first acknowledged a write at or after `from`.
pub(crate) fn first_ack(attempts: &[Attempt], from: Instant, node: &str) -> Option<Instant> {
    attempts
        .iter()
        .find(|a| a.done >= from && a.acked_by.as_deref() == Some(node))
        .map(|a| a.done)
}

/// When the last write before `until` was acknowledged, by anyone.
pub(crate) fn last_ack_before(attempts: &[Attempt], until: Instant) -> Option<Instant> {
    attempts
        .iter()
        .rev()
        .find(|a| a.done < until && a.acked_by.is_some())
        .map(|a| a.done)
}

/// The longest time between two consecutive acknowledgements within `[from, to]`,
/// counting from `from`.
pub(crate) fn longest_gap(attempts: &[Attempt], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for a in attempts
        .iter()
        .filter(|a| a.acked_by.is_some() && a.done >= from && a.done <= to)
    {
        longest = longest.max(a.done.duration_since(last));
        last = a.done;
    }
    longest
}

/// The acknowledged ids missing from `recorded`.
pub(crate) fn missing(attempts: &[Attempt], recorded: &HashSet<u64>) -> BTreeSet<u64> {
    attempts
        .iter()
        .filter(|a| a.acked_by.is_some() && !recorded.contains(&a.id))
        .map(|a| a.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64, id: u64, by: Option<&str>) -> Attempt {
        Attempt {
            id,
            done: t0 + Duration::from_millis(ms),
            acked_by: by.map(str::to_owned),
        }
    }

    #[test]
    fn outage_gaps_and_losses_come_from_the_attempts() {
        let t0 = Instant::now();
        let a = vec![
            at(t0, 0, 1, Some("node1")),
            at(t0, 20, 2, Some("node1")),
            at(t0, 120, 3, None),
            at(t0, 900, 4, Some("node2")),
            at(t0, 920, 5, Some("node2")),
        ];
        let cut = t0 + Duration::from_millis(30);
        assert_eq!(
            first_ack(&a, cut, "node2"),
            Some(t0 + Duration::from_millis(900))
        );
        assert_eq!(first_ack(&a, cut, "node1"), None);
        assert_eq!(
            last_ack_before(&a, cut),
            Some(t0 + Duration::from_millis(20))
        );
        assert_eq!(
            longest_gap(&a, t0, t0 + Duration::from_secs(1)),
            Duration::from_millis(880)
        );
        let recorded: HashSet<u64> = [1, 2, 4].into_iter().collect();
        assert_eq!(missing(&a, &recorded), [5].into_iter().collect());
        let mut s = Summary::default();
        s.count(&a);
        assert_eq!(s.acked(), 4);
        assert_eq!(s.unacked, 1);
        assert!(s.render().contains("4 (2 by node1, 2 by node2)"));
    }
}
