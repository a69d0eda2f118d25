//! Coalescing, in user space, of the byte ranges that capture reports as changed.
//!
//! The kernel side reports every write as `(file, offset, len)`. Shipping each report
//! as it comes would send the same bytes many times (an application that rewrites a
//! page a thousand times between two durability points only needs the last version
//! shipped), so capture keeps, per file, the set of dirty ranges since the file was last
//! taken by the replicator:
//!
//! - [`RangeSet`]: sorted, disjoint, non-adjacent half-open ranges over `u64` offsets,
//!   merged on insert, capped in size by *coarsening* (two neighbouring ranges are
//!   merged across the smallest gap), which can only make the set cover more, never
//!   less.
//! - [`DirtyFiles`]: the dirty files, each with a [`FileDelta`] (ranges, last truncate,
//!   whole-file verification flag, first and last sequence number), a global sequence
//!   number that orders the changes, and a global budget of ranges across all files.
//!
//! The replay rule for a consumer, and why it converges, is documented on
//! [`FileDelta`].
//!
//! # Complexity
//! A [`RangeSet`] holding `n` ranges is a `BTreeMap` from start to end plus a
//! `BTreeSet` of the gaps between neighbours keyed by length, so that the smallest gap
//! is found in `O(log n)`. Inserting a range that absorbs `k` existing ranges costs
//! `O((k + 1) log n)`, and each absorbed range was inserted once, so a stream of inserts
//! costs `O(log n)` amortised each, coarsening included. [`RangeSet::clip`] costs
//! `O((k + 1) log n)` for `k` ranges dropped; `bytes`, `len` and `is_empty` are `O(1)`.
//! [`DirtyFiles`] adds a hash lookup and an `O(log f)` update of its index of files by
//! range count (`f` files) per change; enforcing the global budget costs one smallest-gap
//! merge (`O(log n + log f)`) per range over the budget.

mod dirty;

/// A range as (start, end), end exclusive.
type Span = (u64, u64);

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use dirty::{DirtyFiles, FileDelta};

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)` over `u64` offsets.
///
/// An insert of `[o, o + len)` saturates at `u64::MAX`, so the byte at offset
/// `u64::MAX` itself is never covered: no file can hold it (file sizes are below
/// `i64::MAX` on Linux), and saturating keeps every computation free of overflow.
///
/// When an insert would leave more than `max_ranges` ranges, the two neighbours
/// separated by the smallest gap are merged (the gap becomes dirty too). The set then
/// covers more bytes than were written, which costs extra bytes shipped but never
/// loses a change: copying a clean byte from the source is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// Start → end (exclusive) of every range.
    ranges: BTreeMap<u64, u64>,
    /// `(gap length, start of the range left of the gap)` for every pair of
    /// neighbours, so that coarsening finds the smallest gap without a scan. Gaps are
    /// never empty because ranges never touch.
    gaps: BTreeSet<(u64, u64)>,
    /// Cap on `ranges.len()`, at least 1.
    max_ranges: usize,
    /// Sum of the lengths of the ranges. It cannot overflow: the ranges are disjoint
    /// inside `[0, u64::MAX)`.
    bytes: u64,
}

impl RangeSet {
    /// An empty set that keeps at most `max_ranges` ranges (a cap of 0 is taken as 1,
    /// because one range can always cover everything).
    pub fn new(max_ranges: usize) -> Self {
        Self {
            ranges: BTreeMap::new(),
            gaps: BTreeSet::new(),
            max_ranges: max_ranges.max(1),
            bytes: 0,
        }
    }

    /// The cap given to [`RangeSet::new`] (at least 1).
    pub fn max_ranges(&self) -> usize {
        self.max_ranges
    }

    /// Marks `[offset, offset + len)` dirty, saturating at `u64::MAX`. A `len` of 0 is a
    /// no-op. Ranges that overlap or touch the new one are merged into it.
    pub fn insert(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        if end <= offset {
            return;
        }
        let mut new_start = offset;
        let mut new_end = end;
        // The range starting at or before `offset` is the only one that can start
        // before the new range and still touch it, because ranges are disjoint.
        if let Some((&s, &e)) = self.ranges.range(..=offset).next_back()
            && e >= offset
        {
            if e >= end {
                // Already covered: nothing changes.
                return;
            }
            new_start = s;
            new_end = new_end.max(e);
            self.remove(s);
        }
        // Every other range that starts inside or right at the end of the new range
        // overlaps or touches it.
        while let Some((&s, &e)) = self.ranges.range(new_start..=new_end).next() {
            new_end = new_end.max(e);
            self.remove(s);
        }
        self.add(new_start, new_end);
        while self.ranges.len() > self.max_ranges {
            if !self.merge_smallest_gap() {
                break;
            }
        }
    }

    /// Marks `[offset, u64::MAX)` dirty: an operation (fallocate insert or collapse
    /// range) shifted every byte from `offset` on.
    pub fn insert_to_end(&mut self, offset: u64) {
        self.insert(offset, u64::MAX - offset);
    }

    /// Drops every byte at or after `size`: after a truncate to `size`, the content
    /// beyond it is gone and must not be shipped.
    pub fn clip(&mut self, size: u64) {
        while let Some((&s, &e)) = self.ranges.iter().next_back() {
            if s >= size {
                self.remove(s);
            } else {
                if e > size {
                    self.remove(s);
                    self.add(s, size);
                }
                break;
            }
        }
    }

    /// Merges the two neighbouring ranges separated by the smallest gap (the lowest
    /// such pair on a tie). Returns false, changing nothing, when there are fewer than
    /// two ranges.
    pub fn merge_smallest_gap(&mut self) -> bool {
        let Some(&(gap, left)) = self.gaps.iter().next() else {
            return false;
        };
        let Some(&left_end) = self.ranges.get(&left) else {
            return false;
        };
        let right = left_end.saturating_add(gap);
        let Some(right_end) = self.remove(right) else {
            return false;
        };
        self.remove(left);
        self.add(left, right_end);
        true
    }

    /// Replaces the ranges with their single bounding range.
    pub fn collapse(&mut self) {
        if let Some((start, end)) = self.bounds()
            && self.ranges.len() > 1
        {
            self.clear();
            self.add(start, end);
        }
    }

    /// `(start, end)` of the bounding range (end exclusive), or `None` when empty.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        let (&start, _) = self.ranges.iter().next()?;
        let (_, &end) = self.ranges.iter().next_back()?;
        Some((start, end))
    }

    /// Removes every range, keeping the cap.
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.gaps.clear();
        self.bytes = 0;
    }

    /// The ranges as `(offset, len)`, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e - s))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when no byte is dirty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total number of bytes covered.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when the byte at `offset` is covered.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| e > offset)
    }

    /// The ranges just before and from `start` on, as (start, end) pairs.
    fn neighbours(&self, start: u64) -> (Option<Span>, Option<Span>) {
        let prev = self
            .ranges
            .range(..start)
            .next_back()
            .map(|(&s, &e)| (s, e));
        let next = self.ranges.range(start..).next().map(|(&s, &e)| (s, e));
        (prev, next)
    }

    /// Adds `[start, end)`, which the caller guarantees neither overlaps nor touches an
    /// existing range, and keeps the gap index and byte count in step.
    fn add(&mut self, start: u64, end: u64) {
        let (prev, next) = self.neighbours(start);
        if let (Some((ps, pe)), Some((ns, _))) = (prev, next) {
            self.gaps.remove(&(ns - pe, ps));
        }
        if let Some((ps, pe)) = prev {
            self.gaps.insert((start - pe, ps));
        }
        if let Some((ns, _)) = next {
            self.gaps.insert((ns - end, start));
        }
        self.ranges.insert(start, end);
        self.bytes += end - start;
    }

    /// Removes the range starting at `start`, returning its end, and keeps the gap
    /// index and byte count in step.
    fn remove(&mut self, start: u64) -> Option<u64> {
        let end = self.ranges.remove(&start)?;
        let (prev, next) = self.neighbours(start);
        if let Some((ps, pe)) = prev {
            self.gaps.remove(&(start - pe, ps));
        }
        if let Some((ns, _)) = next {
            self.gaps.remove(&(ns - end, start));
        }
        if let (Some((ps, pe)), Some((ns, _))) = (prev, next) {
            self.gaps.insert((ns - pe, ps));
        }
        self.bytes -= end - start;
        Some(end)
    }
}
