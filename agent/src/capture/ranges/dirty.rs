//! The dirty files: one [`FileDelta`] per file, a global sequence number, and a global
//! budget of ranges.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::RangeSet;

/// Everything pending for one file since it was last taken.
///
/// # Replay
/// A consumer replays a delta against its copy (the *shadow*) by reading the *current*
/// source file, in this order:
/// 1. if `truncated_to` is set, truncate (or extend with zeros) the shadow to it;
/// 2. if `verify` is set, compare the whole file with the source and copy what differs
///    (the ranges may have been dropped: verification covers them);
/// 3. otherwise copy every range from the source to the shadow, clipped to the source's
///    current size, writing past the shadow's end as `pwrite` does (the skipped bytes
///    read as zeros).
///
/// # Why this converges
/// Suppose the shadow equalled the source when the previous delta was taken. Let `L` be
/// the source's size when it is read, `T` the last size set by a truncate and `M` the
/// smallest size set by any truncate since the last take (with no truncate, take both
/// as the size at the last take, which the shadow already has). [`DirtyFiles`] keeps
/// these facts true, which together make the shadow equal to the source:
/// - A write is recorded as a range, and a truncate to a size `s` only drops the parts
///   of ranges at or beyond `s`. Copying a range reads the source's *final* content
///   there, so it does not matter how often or in what order those bytes changed, and
///   a range wider than what was written (after coarsening) only re-copies bytes that
///   are already equal.
/// - Bytes below `M` were never cut: each is either covered by a range (written) or
///   still what the shadow holds (untouched, or a zero hole on both sides).
/// - Bytes in `[M, T)` were cut and then brought back by a later, larger truncate, so
///   they are zeros in the source unless re-written; [`DirtyFiles::truncate`] records
///   `[M, T)` as a range whenever `M < T`, so they are copied rather than left as the
///   shadow's stale content.
/// - Bytes at or beyond `T` exist in the source only because writes after the last
///   truncate put them there (or left zero holes between them); those writes are
///   ranges, so the shadow grows to exactly `L` (nothing beyond `L` is copied, and the
///   write that ended at `L` is a range), and holes read as zeros on both sides.
///
/// A change that lands between the take and the read is read already (harmless: it is
/// its final content) and is in the next delta too, so the shadow catches up at the
/// next take. A change that *shrinks* a file without a truncate (fallocate
/// `FALLOC_FL_COLLAPSE_RANGE`) must be reported as [`DirtyFiles::write_to_end`] at the
/// offset plus [`DirtyFiles::truncate`] to the new size, since replay only shrinks the
/// shadow through `truncated_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDelta {
    /// Dirty byte ranges (empty when `verify` is set: verification covers them).
    pub ranges: RangeSet,
    /// The last size set by a truncate since the last take, applied before the ranges.
    pub truncated_to: Option<u64>,
    /// The smallest size set by a truncate since the last take. Kernel events of
    /// different threads can reach user space in another order than their effects,
    /// so a consumer that wants to be exact sets the size it finds now and copies
    /// everything from here to it.
    pub min_size: Option<u64>,
    /// The whole file must be compared with the source.
    pub verify: bool,
    /// Sequence number of the first change recorded for this file since the last take.
    pub first_seq: u64,
    /// Sequence number of the last change recorded for this file.
    pub last_seq: u64,
}

/// One dirty file: its delta plus what merging and re-extension need.
#[derive(Debug, Clone)]
struct Entry {
    delta: FileDelta,
    /// The smallest size set by any truncate since the last take (`M` in the
    /// convergence argument on [`FileDelta`]).
    min_size: Option<u64>,
    /// Sequence number of the truncate that set `delta.truncated_to` (0: none), so
    /// that merging two deltas keeps the later one.
    truncate_seq: u64,
}

impl Entry {
    fn new(max_ranges: usize, seq: u64) -> Self {
        Self {
            delta: FileDelta {
                ranges: RangeSet::new(max_ranges),
                truncated_to: None,
                min_size: None,
                verify: false,
                first_seq: seq,
                last_seq: seq,
            },
            min_size: None,
            truncate_seq: 0,
        }
    }

    fn count(&self) -> usize {
        self.delta.ranges.len()
    }

    /// Re-marks `[M, T)` dirty when a truncate brought back bytes that an earlier,
    /// smaller truncate had cut (see the convergence argument on [`FileDelta`]).
    fn mark_regrown(&mut self) {
        if self.delta.verify {
            return;
        }
        if let (Some(min), Some(last)) = (self.min_size, self.delta.truncated_to)
            && min < last
        {
            self.delta.ranges.insert(min, last - min);
        }
    }
}

/// The dirty files, with a global sequence number and a memory budget.
///
/// Every recorded change gets the next sequence number (strictly increasing from 1),
/// which orders the files in [`DirtyFiles::take_all`]. Memory is bounded twice: each
/// file's [`RangeSet`] holds at most `max_ranges_per_file` ranges, and when the ranges
/// of all files together exceed `max_total_ranges`, the file with the most ranges is
/// coarsened (its two closest ranges merged; a file left with a single range is marked
/// `verify` instead) until the total is within budget. Both only widen what is shipped
/// or compared, never skip a change.
#[derive(Debug, Clone)]
pub struct DirtyFiles<K> {
    files: HashMap<K, Entry>,
    /// `(range count, first_seq)` → key for every file, so that the file with the most
    /// ranges is found in `O(log f)` when the budget is exceeded. `first_seq` is unique
    /// per file (every change has its own sequence number and a merge keeps one of
    /// the two), which makes the index key unique without asking `K` to be `Ord`.
    by_count: BTreeMap<(usize, u64), K>,
    total_ranges: usize,
    next_seq: u64,
    max_ranges_per_file: usize,
    max_total_ranges: usize,
}

impl<K: Copy + Eq + Hash> DirtyFiles<K> {
    /// No dirty file yet; the first change gets sequence number 1.
    pub fn new(max_ranges_per_file: usize, max_total_ranges: usize) -> Self {
        Self {
            files: HashMap::new(),
            by_count: BTreeMap::new(),
            total_ranges: 0,
            next_seq: 1,
            max_ranges_per_file,
            max_total_ranges,
        }
    }

    /// Records a write of `[offset, offset + len)` (saturating) and returns its
    /// sequence number. A zero-length write still marks the file dirty (it is an event
    /// in the stream) but adds no range.
    pub fn write(&mut self, key: K, offset: u64, len: u64) -> u64 {
        self.record(key, |e, _| {
            if !e.delta.verify {
                e.delta.ranges.insert(offset, len);
            }
        })
    }

    /// Records a truncate (or extension) to `size`: the pending ranges are clipped to
    /// it, the last size set is kept for replay, and bytes an earlier smaller truncate
    /// cut are marked dirty again. A later write past `size` re-extends the ranges.
    pub fn truncate(&mut self, key: K, size: u64) -> u64 {
        self.record(key, |e, seq| {
            e.delta.ranges.clip(size);
            e.delta.truncated_to = Some(size);
            e.truncate_seq = seq;
            e.min_size = Some(e.min_size.map_or(size, |m| m.min(size)));
            e.delta.min_size = e.min_size;
            e.mark_regrown();
        })
    }

    /// Records that every byte from `offset` on may have changed (fallocate insert or
    /// collapse range shift the rest of the file).
    pub fn write_to_end(&mut self, key: K, offset: u64) -> u64 {
        self.record(key, |e, _| {
            if !e.delta.verify {
                e.delta.ranges.insert_to_end(offset);
            }
        })
    }

    /// Records that the whole file must be compared (lost events, unknown history).
    /// The ranges are dropped: verification covers them, and later writes add none.
    pub fn verify(&mut self, key: K) -> u64 {
        self.record(key, |e, _| {
            e.delta.verify = true;
            e.delta.ranges.clear();
        })
    }

    /// Forgets the file: it is gone, nothing of it is left to ship.
    pub fn forget(&mut self, key: &K) {
        self.take(key);
    }

    /// The content known under `from` is now known under `to`. When `to` already has a
    /// delta the two are merged: ranges united, `verify` if either, the earliest first
    /// and latest last sequence number, the later truncate (by sequence number) and
    /// the smallest size ever set. Uniting ranges from both histories can only widen
    /// what is copied, and re-marking `[M, T)` keeps the convergence argument of
    /// [`FileDelta`] true for the merged history.
    pub fn rekey(&mut self, from: &K, to: K) {
        if *from == to {
            return;
        }
        let Some(moved) = self.detach(from) else {
            return;
        };
        let merged = match self.detach(&to) {
            None => moved,
            Some(mut into) => {
                let d = &mut into.delta;
                d.first_seq = d.first_seq.min(moved.delta.first_seq);
                d.last_seq = d.last_seq.max(moved.delta.last_seq);
                d.verify |= moved.delta.verify;
                if moved.truncate_seq > into.truncate_seq {
                    d.truncated_to = moved.delta.truncated_to;
                    into.truncate_seq = moved.truncate_seq;
                }
                into.min_size = match (into.min_size, moved.min_size) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                into.delta.min_size = into.min_size;
                if into.delta.verify {
                    into.delta.ranges.clear();
                } else {
                    for (offset, len) in moved.delta.ranges.iter() {
                        into.delta.ranges.insert(offset, len);
                    }
                    into.mark_regrown();
                }
                into
            }
        };
        self.attach(to, merged);
        self.enforce_budget();
    }

    /// Takes every pending file, ordered by `first_seq`, leaving the set empty.
    pub fn take_all(&mut self) -> Vec<(K, FileDelta)> {
        let mut all: Vec<(K, FileDelta)> = self.files.drain().map(|(k, e)| (k, e.delta)).collect();
        self.by_count.clear();
        self.total_ranges = 0;
        // Sequence numbers are unique per change and a merge keeps one of them, so
        // `first_seq` is unique per file and the order is total.
        all.sort_unstable_by_key(|(_, d)| d.first_seq);
        all
    }

    /// Takes the pending delta of one file, if any.
    pub fn take(&mut self, key: &K) -> Option<FileDelta> {
        self.detach(key).map(|e| e.delta)
    }

    /// Number of dirty files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file is dirty.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Number of ranges across all files (at most `max_total_ranges` between calls).
    pub fn total_ranges(&self) -> usize {
        self.total_ranges
    }

    /// The sequence number the next change will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Assigns the next sequence number, applies `f` to the file's entry (created if
    /// needed), keeps the index and total in step, then enforces the budget.
    fn record(&mut self, key: K, f: impl FnOnce(&mut Entry, u64)) -> u64 {
        let seq = self.next_seq;
        // 2^64 changes cannot happen in practice; saturating keeps this free of panics.
        self.next_seq = self.next_seq.saturating_add(1);
        let mut entry = self
            .detach(&key)
            .unwrap_or_else(|| Entry::new(self.max_ranges_per_file, seq));
        entry.delta.last_seq = seq;
        f(&mut entry, seq);
        self.attach(key, entry);
        self.enforce_budget();
        seq
    }

    /// Removes a file's entry together with its index and total contributions.
    fn detach(&mut self, key: &K) -> Option<Entry> {
        let entry = self.files.remove(key)?;
        self.by_count
            .remove(&(entry.count(), entry.delta.first_seq));
        self.total_ranges -= entry.count();
        Some(entry)
    }

    /// Inserts a file's entry (the key must be absent) with its index and total
    /// contributions.
    fn attach(&mut self, key: K, entry: Entry) {
        self.by_count
            .insert((entry.count(), entry.delta.first_seq), key);
        self.total_ranges += entry.count();
        self.files.insert(key, entry);
    }

    /// Coarsens the file with the most ranges until the total is within budget. Each
    /// step removes exactly one range, so this ends after `total - max` steps.
    fn enforce_budget(&mut self) {
        while self.total_ranges > self.max_total_ranges {
            let Some((&(count, _), &key)) = self.by_count.iter().next_back() else {
                break;
            };
            if count == 0 {
                break;
            }
            let Some(mut entry) = self.detach(&key) else {
                break;
            };
            if count > 1 {
                entry.delta.ranges.merge_smallest_gap();
            } else {
                // One range left and still over budget: comparing the whole file
                // costs no memory and covers that range.
                entry.delta.verify = true;
                entry.delta.ranges.clear();
            }
            self.attach(key, entry);
        }
    }
}
