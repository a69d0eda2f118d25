//! The timeline of recent events: a bounded ring buffer fed by the failover
//! actor (each state transition and each note of the engine) and read by the
//! console's `/api/v1/events`. Old entries fall off the front, so a long-running
//! agent's memory stays flat however often it changes state.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// How many events the timeline keeps: hours of a busy pair's transitions, a
/// few tens of kilobytes.
pub(super) const CAPACITY: usize = 200;

/// One entry of the timeline.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct Entry {
    /// Increases by one per entry since the agent started, so that a reader can
    /// ask only for what it has not seen (`?after=`).
    pub seq: u64,
    /// Milliseconds since the Unix epoch (wall clock, for people).
    pub at_ms: u64,
    pub kind: Kind,
    /// The new state of a transition (`null` for a note).
    pub to: Option<&'static str>,
    /// The state left by a transition (`null` for a note).
    pub from: Option<&'static str>,
    /// The transition's reason, or the note.
    pub text: String,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Note,
    Transition,
}

/// The shared ring buffer (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct Timeline(Arc<Mutex<Ring>>);

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Entry>,
    next_seq: u64,
}

// === impl Timeline ===

impl Timeline {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a state transition.
    pub fn transition(&self, from: &'static str, to: &'static str, reason: &str) {
        self.push(Kind::Transition, Some(from), Some(to), reason);
    }

    /// Records a note of the engine (a refused command, a decision explained).
    pub fn note(&self, text: &str) {
        self.push(Kind::Note, None, None, text);
    }

    /// The entries with a sequence number above `after`, oldest first.
    #[must_use]
    pub fn since(&self, after: Option<u64>) -> Vec<Entry> {
        let ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ring.entries
            .iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .cloned()
            .collect()
    }

    fn push(&self, kind: Kind, from: Option<&'static str>, to: Option<&'static str>, text: &str) {
        // A clock before 1970 is a broken clock; the entry keeps its order anyway.
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.entries.len() == CAPACITY {
            ring.entries.pop_front();
        }
        ring.entries.push_back(Entry {
            seq,
            at_ms,
            kind,
            to,
            from,
            text: text.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_in_order() {
        let t = Timeline::new();
        for i in 0..CAPACITY + 5 {
            t.note(&format!("note {i}"));
        }
        let all = t.since(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 5);
        assert_eq!(all[0].text, "note 5");
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }

    #[test]
    fn a_reader_gets_only_what_it_has_not_seen() {
        let t = Timeline::new();
        t.transition("WAIT", "ALONE", "the peer is absent");
        t.note("swap refused: the peer is not in sync");
        t.transition("ALONE", "PRIM", "the peer is SECOND");
        let later = t.since(Some(0));
        assert_eq!(later.len(), 2);
        assert_eq!(later[0].kind, Kind::Note);
        assert_eq!(later[1].to, Some("PRIM"));
        assert!(t.since(Some(2)).is_empty());
        let json = serde_json::to_value(&later[1]).expect("json");
        assert_eq!(json["kind"], "transition");
        assert_eq!(json["from"], "ALONE");
    }
}
