//! The primary's replication lag in time: the age of the oldest record the peer
//! has not applied yet (`tandem_replication_lag_seconds`).
//!
//! The protocol core counts the lag in bytes only. Remembering the send time of
//! every record would cost memory per record, so the clock keeps one mark per
//! [`RESOLUTION`] of sending: the first sequence number sent in that interval
//! and when. The oldest unapplied record belongs to the latest mark at or below
//! it, so its age is known to within one resolution step (never under-reported).
//! Live records held behind a running resync have no sequence number yet; while
//! there are any, the lag is at least the time since the first of them was held.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// How finely send times are remembered.
const RESOLUTION: Duration = Duration::from_millis(10);

/// Marks of when records were sent, and since when live records are held.
#[derive(Debug, Default)]
pub(super) struct LagClock {
    /// (first sequence number sent at or after the instant, the instant), in order.
    marks: VecDeque<(u64, Instant)>,
    held_since: Option<Instant>,
}

impl LagClock {
    /// Record `seq` was sent at `now`.
    pub(super) fn sent(&mut self, seq: u64, now: Instant) {
        let fresh = self
            .marks
            .back()
            .is_none_or(|(_, t)| now.saturating_duration_since(*t) >= RESOLUTION);
        if fresh {
            self.marks.push_back((seq, now));
        }
    }

    /// Live records are (`true`) or are no longer (`false`) held behind a resync.
    pub(super) fn holding(&mut self, held: bool, now: Instant) {
        match (held, self.held_since) {
            (true, None) => self.held_since = Some(now),
            (false, Some(_)) => self.held_since = None,
            _ => {}
        }
    }

    /// The link went down or a new session starts: sequence numbers start again
    /// and nothing is owed to the peer any more.
    pub(super) fn reset(&mut self) {
        self.marks.clear();
        self.held_since = None;
    }

    /// The lag at `now`, given that the peer applied every record up to `applied`
    /// and `last_sent` is the last record sent.
    pub(super) fn lag(&mut self, applied: u64, last_sent: u64, now: Instant) -> Duration {
        let oldest = applied + 1;
        // Marks wholly applied are dropped: a mark is needed while the next one
        // starts above the oldest unapplied record.
        while self.marks.get(1).is_some_and(|(seq, _)| *seq <= oldest) {
            self.marks.pop_front();
        }
        let sent = if last_sent >= oldest {
            self.marks
                .front()
                .filter(|(seq, _)| *seq <= oldest)
                .map_or(Duration::ZERO, |(_, t)| now.saturating_duration_since(*t))
        } else {
            self.marks.clear();
            Duration::ZERO
        };
        let held = self
            .held_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        sent.max(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_owed_is_no_lag() {
        let t = Instant::now();
        let mut c = LagClock::default();
        assert_eq!(c.lag(0, 0, t), Duration::ZERO);
        c.sent(1, t);
        assert_eq!(c.lag(1, 1, t + Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn age_of_the_oldest_unapplied_record() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut c = LagClock::default();
        c.sent(1, t);
        // Within the resolution: same mark.
        c.sent(2, t + ms(5));
        c.sent(3, t + ms(100));
        c.sent(4, t + ms(200));
        // Records 1..=2 unapplied: aged from the first mark.
        assert_eq!(c.lag(0, 4, t + ms(300)), ms(300));
        // Record 2 is the oldest unapplied; its mark is record 1's (never under).
        assert_eq!(c.lag(1, 4, t + ms(300)), ms(300));
        // Record 3 is the oldest: its own mark.
        assert_eq!(c.lag(2, 4, t + ms(300)), ms(200));
        assert_eq!(c.lag(3, 4, t + ms(300)), ms(100));
        assert_eq!(c.lag(4, 4, t + ms(300)), Duration::ZERO);
        // Older marks were dropped; a new record starts a fresh mark.
        c.sent(5, t + ms(400));
        assert_eq!(c.lag(4, 5, t + ms(450)), ms(50));
    }

    #[test]
    fn held_records_and_reset() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut c = LagClock::default();
        c.holding(true, t);
        c.holding(true, t + ms(50));
        assert_eq!(c.lag(0, 0, t + ms(100)), ms(100));
        c.sent(1, t + ms(80));
        assert_eq!(c.lag(0, 1, t + ms(100)), ms(100));
        c.holding(false, t + ms(120));
        assert_eq!(c.lag(0, 1, t + ms(130)), ms(50));
        c.reset();
        assert_eq!(c.lag(0, 1, t + ms(130)), Duration::ZERO);
    }
}
