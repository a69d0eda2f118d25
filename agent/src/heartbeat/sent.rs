//! The send log of one network: when each of our recent heartbeats left, so that an
//! echo of one proves the peer's packet fresh and gives the round-trip time.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

/// Sequence numbers we sent within the freshness window, oldest first.
#[derive(Debug)]
pub(crate) struct SentLog {
    window: Duration,
    sent: VecDeque<(u64, Instant)>,
}

// === impl SentLog ===

impl SentLog {
    /// An empty log that forgets sends older than `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            sent: VecDeque::new(),
        }
    }

    /// Records that `seq` left at `now` (sequence numbers increase).
    pub(crate) fn record(&mut self, seq: u64, now: Instant) {
        self.expire(now);
        self.sent.push_back((seq, now));
        // A bound that holds even if the clock stood still (paused time in tests).
        if self.sent.len() > MAX_ENTRIES {
            self.sent.pop_front();
        }
    }

    /// When `seq` was sent, if within the window at `now`.
    pub(crate) fn sent_at(&mut self, seq: u64, now: Instant) -> Option<Instant> {
        self.expire(now);
        let i = self.sent.binary_search_by_key(&seq, |&(s, _)| s).ok()?;
        Some(self.sent[i].1)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(_, at)) = self.sent.front() {
            if now.saturating_duration_since(at) <= self.window {
                break;
            }
            self.sent.pop_front();
        }
    }
}

/// The round-trip time of an echo: from our send to its arrival back, less the time
/// the peer held our packet before answering.
pub(crate) fn round_trip(sent_at: Instant, now: Instant, held: Duration) -> Duration {
    now.saturating_duration_since(sent_at).saturating_sub(held)
}

/// The most sends remembered, whatever the window.
const MAX_ENTRIES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_sends_older_than_window() {
        let mut log = SentLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        log.record(1, t0);
        log.record(2, t0 + Duration::from_millis(600));
        assert_eq!(log.sent_at(1, t0 + Duration::from_millis(900)), Some(t0));
        assert_eq!(log.sent_at(1, t0 + Duration::from_millis(1100)), None);
        assert!(log.sent_at(2, t0 + Duration::from_millis(1100)).is_some());
        assert_eq!(log.sent_at(3, t0), None);
    }

    #[test]
    fn round_trip_subtracts_hold() {
        let t0 = Instant::now();
        let rtt = round_trip(
            t0,
            t0 + Duration::from_millis(50),
            Duration::from_millis(45),
        );
        assert_eq!(rtt, Duration::from_millis(5));
        assert_eq!(round_trip(t0, t0, Duration::from_secs(1)), Duration::ZERO);
    }
}
