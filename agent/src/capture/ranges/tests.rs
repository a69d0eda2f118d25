//! Unit tests and properties of [`RangeSet`] and [`DirtyFiles`].

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{DirtyFiles, FileDelta, RangeSet};

const GIB4: u64 = 1 << 32;

fn ranges(set: &RangeSet) -> Vec<(u64, u64)> {
    set.iter().collect()
}

/// Checks the structural invariants: sorted, disjoint, non-adjacent, non-empty, within
/// the cap, and the cached byte count.
fn check_invariants(set: &RangeSet) {
    let v = ranges(set);
    let mut total: u64 = 0;
    for (i, &(o, len)) in v.iter().enumerate() {
        assert!(len > 0, "empty range in {v:?}");
        assert!(o.checked_add(len).is_some(), "range past u64::MAX in {v:?}");
        if i > 0 {
            let (po, pl) = v[i - 1];
            assert!(po + pl < o, "ranges overlap or touch in {v:?}");
        }
        total += len;
    }
    assert_eq!(set.bytes(), total);
    assert_eq!(set.len(), v.len());
    assert_eq!(set.is_empty(), v.is_empty());
    assert!(set.len() <= set.max_ranges());
}

/// Union of half-open intervals, normalised (sorted, merged when overlapping or
/// touching): the model that a `RangeSet` without coarsening must equal.
fn normalise(mut intervals: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    intervals.retain(|&(s, e)| s < e);
    intervals.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in intervals {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn as_intervals(set: &RangeSet) -> Vec<(u64, u64)> {
    set.iter().map(|(o, l)| (o, o + l)).collect()
}

/// True when `[s, e)` lies inside one range of the set (ranges never touch, so an
/// interval covered by the set is inside a single range).
fn covers(set: &RangeSet, s: u64, e: u64) -> bool {
    s >= e || set.iter().any(|(o, l)| o <= s && e <= o + l)
}

#[test]
fn merges_overlapping_ranges() {
    let mut set = RangeSet::new(100);
    set.insert(10, 10);
    set.insert(15, 10);
    assert_eq!(ranges(&set), vec![(10, 15)]);
    set.insert(0, 12);
    assert_eq!(ranges(&set), vec![(0, 25)]);
    set.insert(5, 3);
    assert_eq!(ranges(&set), vec![(0, 25)]);
    set.insert(40, 5);
    set.insert(50, 5);
    set.insert(30, 30);
    assert_eq!(ranges(&set), vec![(0, 25), (30, 30)]);
    check_invariants(&set);
}

#[test]
fn merges_adjacent_ranges() {
    let mut set = RangeSet::new(100);
    set.insert(10, 10);
    set.insert(20, 5);
    assert_eq!(ranges(&set), vec![(10, 15)]);
    set.insert(5, 5);
    assert_eq!(ranges(&set), vec![(5, 20)]);
    set.insert(30, 5);
    set.insert(25, 5);
    assert_eq!(ranges(&set), vec![(5, 30)]);
    assert_eq!(set.bytes(), 30);
    check_invariants(&set);
}

#[test]
fn zero_length_is_a_no_op() {
    let mut set = RangeSet::new(4);
    set.insert(10, 0);
    set.insert(u64::MAX, 10);
    assert!(set.is_empty());
    assert_eq!(set.bytes(), 0);
}

#[test]
fn saturates_at_u64_max() {
    let mut set = RangeSet::new(4);
    set.insert(u64::MAX - 10, 100);
    assert_eq!(ranges(&set), vec![(u64::MAX - 10, 10)]);
    assert!(set.contains(u64::MAX - 1));
    assert!(!set.contains(u64::MAX));
    set.insert(u64::MAX - 20, u64::MAX);
    assert_eq!(ranges(&set), vec![(u64::MAX - 20, 20)]);
    set.insert_to_end(0);
    assert_eq!(ranges(&set), vec![(0, u64::MAX)]);
    assert_eq!(set.bytes(), u64::MAX);
    set.insert(5, u64::MAX);
    assert_eq!(ranges(&set), vec![(0, u64::MAX)]);
    check_invariants(&set);
}

#[test]
fn offsets_beyond_4_gib() {
    let mut set = RangeSet::new(100);
    set.insert(GIB4 - 1, 2);
    set.insert(5 * GIB4, GIB4);
    set.insert(6 * GIB4, 1);
    assert_eq!(ranges(&set), vec![(GIB4 - 1, 2), (5 * GIB4, GIB4 + 1)]);
    assert!(set.contains(GIB4));
    assert!(!set.contains(GIB4 + 1));
    assert!(set.contains(6 * GIB4));
    assert_eq!(set.bytes(), GIB4 + 3);
    set.clip(5 * GIB4 + 10);
    assert_eq!(ranges(&set), vec![(GIB4 - 1, 2), (5 * GIB4, 10)]);
    check_invariants(&set);
}

#[test]
fn clip_drops_bytes_at_and_beyond_size() {
    let mut set = RangeSet::new(100);
    set.insert(0, 10);
    set.insert(20, 10);
    set.insert(40, 10);
    set.clip(25);
    assert_eq!(ranges(&set), vec![(0, 10), (20, 5)]);
    set.clip(20);
    assert_eq!(ranges(&set), vec![(0, 10)]);
    set.clip(100);
    assert_eq!(ranges(&set), vec![(0, 10)]);
    set.clip(0);
    assert!(set.is_empty());
    set.insert_to_end(7);
    set.clip(9);
    assert_eq!(ranges(&set), vec![(7, 2)]);
    check_invariants(&set);
}

#[test]
fn coarsening_merges_across_the_smallest_gap() {
    let mut set = RangeSet::new(3);
    set.insert(0, 10); // gap 90 to the next
    set.insert(100, 10); // gap 5 to the next
    set.insert(115, 10); // gap 75 to the next
    set.insert(200, 10);
    assert_eq!(ranges(&set), vec![(0, 10), (100, 25), (200, 10)]);
    // Gaps now 90 and 75: the next coarsening merges across 75.
    set.insert(1000, 1);
    assert_eq!(ranges(&set), vec![(0, 10), (100, 110), (1000, 1)]);
    assert!(covers(&set, 115, 125));
    check_invariants(&set);

    let mut one = RangeSet::new(0);
    one.insert(10, 1);
    one.insert(30, 1);
    assert_eq!(ranges(&one), vec![(10, 21)]);
}

#[test]
fn collapse_and_bounds() {
    let mut set = RangeSet::new(10);
    assert_eq!(set.bounds(), None);
    set.insert(5, 5);
    set.insert(50, 5);
    assert_eq!(set.bounds(), Some((5, 55)));
    set.collapse();
    assert_eq!(ranges(&set), vec![(5, 50)]);
    check_invariants(&set);
}

#[test]
fn sequence_numbers_increase_from_one() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    assert_eq!(d.write(1, 0, 10), 1);
    assert_eq!(d.truncate(2, 5), 2);
    assert_eq!(d.write_to_end(1, 4), 3);
    assert_eq!(d.verify(3), 4);
    assert_eq!(d.next_seq(), 5);
    d.take_all();
    assert_eq!(d.write(1, 0, 1), 5);
}

#[test]
fn take_all_orders_by_first_seq() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.write(30, 0, 1);
    d.write(10, 0, 1);
    d.write(20, 0, 1);
    d.write(30, 5, 1);
    d.write(10, 9, 1);
    let all = d.take_all();
    let keys: Vec<u32> = all.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec![30, 10, 20]);
    let (_, first) = &all[0];
    assert_eq!((first.first_seq, first.last_seq), (1, 4));
    assert_eq!(ranges(&first.ranges), vec![(0, 1), (5, 1)]);
    assert!(d.is_empty());
    assert_eq!(d.len(), 0);
    assert_eq!(d.total_ranges(), 0);
}

#[test]
fn truncate_clips_and_a_later_write_re_extends() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.write(1, 0, 100);
    d.truncate(1, 40);
    d.write(1, 60, 10);
    let delta = d.take(&1).expect("dirty");
    assert_eq!(delta.truncated_to, Some(40));
    assert_eq!(ranges(&delta.ranges), vec![(0, 40), (60, 10)]);
    assert!(d.take(&1).is_none());
}

#[test]
fn regrowing_truncate_marks_the_cut_bytes_dirty() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.truncate(1, 10);
    d.truncate(1, 50);
    let delta = d.take(&1).expect("dirty");
    assert_eq!(delta.truncated_to, Some(50));
    // The source holds zeros in [10, 50); the shadow may hold old content there.
    assert_eq!(ranges(&delta.ranges), vec![(10, 40)]);
}

#[test]
fn verify_drops_ranges() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.write(1, 0, 10);
    d.write(1, 20, 10);
    assert_eq!(d.total_ranges(), 2);
    d.verify(1);
    assert_eq!(d.total_ranges(), 0);
    d.write(1, 40, 10);
    let delta = d.take(&1).expect("dirty");
    assert!(delta.verify);
    assert!(delta.ranges.is_empty());
    assert_eq!((delta.first_seq, delta.last_seq), (1, 4));
}

#[test]
fn forget_removes_the_file() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.write(1, 0, 10);
    d.write(2, 0, 10);
    d.forget(&1);
    d.forget(&7);
    assert_eq!(d.len(), 1);
    assert_eq!(d.total_ranges(), 1);
    assert!(d.take(&1).is_none());
}

#[test]
fn rekey_moves_and_merges() {
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.write(1, 0, 10); // seq 1
    d.rekey(&1, 2);
    assert!(d.take(&1).is_none());
    d.write(3, 100, 10); // seq 2
    d.truncate(2, 5); // seq 3
    d.write(3, 10, 5); // seq 4
    d.rekey(&3, 2);
    d.rekey(&9, 2); // absent: no-op
    d.rekey(&2, 2); // same key: no-op
    assert_eq!(d.len(), 1);
    assert_eq!(d.total_ranges(), 3);
    let delta = d.take(&2).expect("dirty");
    assert_eq!((delta.first_seq, delta.last_seq), (1, 4));
    assert_eq!(delta.truncated_to, Some(5));
    assert!(!delta.verify);
    assert_eq!(ranges(&delta.ranges), vec![(0, 5), (10, 5), (100, 10)]);

    // The later truncate wins, the smallest size re-marks [M, T), verify is sticky.
    let mut d = DirtyFiles::<u32>::new(8, 64);
    d.truncate(1, 30); // seq 1
    d.truncate(2, 10); // seq 2
    d.truncate(1, 40); // seq 3
    d.rekey(&2, 1);
    let delta = d.take(&1).expect("dirty");
    assert_eq!(delta.truncated_to, Some(40));
    assert_eq!(ranges(&delta.ranges), vec![(10, 30)]);
    d.verify(4);
    d.write(5, 0, 1);
    d.rekey(&5, 4);
    let delta = d.take(&4).expect("dirty");
    assert!(delta.verify);
    assert!(delta.ranges.is_empty());
    assert_eq!(d.total_ranges(), 0);
}

#[test]
fn per_file_cap_is_enforced() {
    let mut d = DirtyFiles::<u32>::new(2, 64);
    for i in 0..10 {
        d.write(1, i * 10, 1);
    }
    assert_eq!(d.total_ranges(), 2);
    let delta = d.take(&1).expect("dirty");
    assert_eq!(delta.ranges.len(), 2);
    for i in 0..10 {
        assert!(delta.ranges.contains(i * 10));
    }
}

#[test]
fn budget_coarsens_the_file_with_most_ranges() {
    let mut d = DirtyFiles::<u32>::new(100, 6);
    for i in 0..3 {
        d.write(1, i * 10, 1);
    }
    for i in 0..4 {
        d.write(2, i * 100, 1);
    }
    // 7 ranges over a budget of 6: file 2 (4 ranges) loses one.
    assert_eq!(d.total_ranges(), 6);
    let all = d.take_all();
    assert_eq!(all[0].1.ranges.len(), 3);
    assert_eq!(all[1].1.ranges.len(), 3);
    for i in 0..4 {
        assert!(all[1].1.ranges.contains(i * 100));
    }

    // When every file is down to one range, files are marked verify instead.
    let mut d = DirtyFiles::<u32>::new(100, 2);
    d.write(1, 0, 1);
    d.write(2, 0, 1);
    d.write(3, 0, 1);
    assert_eq!(d.total_ranges(), 2);
    let verified = d.take_all().into_iter().filter(|(_, x)| x.verify).count();
    assert_eq!(verified, 1);

    let mut d = DirtyFiles::<u32>::new(100, 0);
    d.write(1, 0, 1);
    assert_eq!(d.total_ranges(), 0);
    assert!(d.take(&1).expect("dirty").verify);
}

/// A key like the kernel's `(dev, ino)`: hashable, not ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DevIno {
    dev: u64,
    ino: u64,
}

#[test]
fn keys_need_not_be_ordered() {
    let mut d = DirtyFiles::<DevIno>::new(4, 3);
    let a = DevIno { dev: 1, ino: 2 };
    let b = DevIno { dev: 1, ino: 3 };
    d.write(b, 0, 1);
    d.write(a, 0, 1);
    d.write(a, 10, 1);
    d.write(a, 20, 1);
    assert_eq!(d.total_ranges(), 3);
    d.rekey(&a, b);
    let all = d.take_all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, b);
    assert_eq!(all[0].1.first_seq, 1);
    for offset in [0, 10, 20] {
        assert!(all[0].1.ranges.contains(offset));
    }
}

#[derive(Debug, Clone)]
enum SetOp {
    Insert(u64, u64),
    ToEnd(u64),
    Clip(u64),
}

/// Offsets in small windows at 0, just below 4 GiB and just below `u64::MAX`, so that
/// overlaps happen often and saturation is exercised.
fn offset() -> impl Strategy<Value = u64> {
    (
        prop_oneof![Just(0u64), Just(GIB4 - 64), Just(u64::MAX - 256)],
        0u64..256,
    )
        .prop_map(|(base, off)| base.saturating_add(off))
}

fn length() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..64, 1 => Just(u64::MAX), 1 => 0u64..(1 << 40)]
}

fn set_op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        8 => (offset(), length()).prop_map(|(o, l)| SetOp::Insert(o, l)),
        1 => offset().prop_map(SetOp::ToEnd),
        1 => offset().prop_map(SetOp::Clip),
    ]
}

/// Applies the ops to a set and to the interval model, returning the model.
fn run_ops(set: &mut RangeSet, ops: &[SetOp]) -> Vec<(u64, u64)> {
    let mut model: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        match *op {
            SetOp::Insert(o, l) => {
                set.insert(o, l);
                model.push((o, o.saturating_add(l)));
            }
            SetOp::ToEnd(o) => {
                set.insert_to_end(o);
                model.push((o, u64::MAX));
            }
            SetOp::Clip(size) => {
                set.clip(size);
                for iv in &mut model {
                    iv.1 = iv.1.min(size);
                }
            }
        }
        check_invariants(set);
    }
    normalise(model)
}

proptest! {
    /// (1) and (2): without coarsening the set is exactly the union of what was
    /// inserted (minus what was clipped), and stays sorted, disjoint, non-adjacent.
    #[test]
    fn set_equals_union_without_coarsening(ops in prop::collection::vec(set_op(), 0..60)) {
        let mut set = RangeSet::new(usize::MAX);
        let model = run_ops(&mut set, &ops);
        prop_assert_eq!(as_intervals(&set), model);
        let probes = [0, 1, GIB4 - 1, GIB4, u64::MAX - 1, u64::MAX];
        for p in probes.into_iter().chain(set.iter().flat_map(|(o, l)| [o, o + l, o + l - 1])) {
            let in_model = as_intervals(&set).iter().any(|&(s, e)| s <= p && p < e);
            prop_assert_eq!(set.contains(p), in_model);
        }
    }

    /// (3): with a small cap the set still covers everything inserted and respects the
    /// cap.
    #[test]
    fn coarsened_set_covers_inserted(
        max in 1usize..5,
        ops in prop::collection::vec(set_op(), 0..60),
    ) {
        let mut set = RangeSet::new(max);
        let model = run_ops(&mut set, &ops);
        prop_assert!(set.len() <= max);
        for (s, e) in model {
            prop_assert!(covers(&set, s, e), "[{}, {}) not covered by {:?}", s, e, ranges(&set));
        }
    }
}

#[derive(Debug, Clone)]
enum FileOp {
    Write {
        key: u8,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Truncate {
        key: u8,
        size: u64,
    },
    InsertRange {
        key: u8,
        offset: u64,
        len: usize,
    },
    CollapseRange {
        key: u8,
        offset: u64,
        len: usize,
    },
    Verify {
        key: u8,
    },
    /// Take what is pending and queue it, without replaying it yet: the ops that
    /// follow race with the replay.
    Take,
    /// Replay the oldest queued delta against the source as it is now.
    Replay,
    /// Replay every queued delta, take and replay what is pending, and check that the
    /// shadow equals the source.
    Sync,
}

fn file_op() -> impl Strategy<Value = FileOp> {
    prop_oneof![
        10 => (0u8..2, 0u64..96, 0usize..24, any::<u8>())
            .prop_map(|(key, offset, len, byte)| FileOp::Write { key, offset, len, byte }),
        4 => (0u8..2, 0u64..96).prop_map(|(key, size)| FileOp::Truncate { key, size }),
        1 => (0u8..2, 0u64..96, 1usize..16)
            .prop_map(|(key, offset, len)| FileOp::InsertRange { key, offset, len }),
        1 => (0u8..2, 0u64..96, 1usize..16)
            .prop_map(|(key, offset, len)| FileOp::CollapseRange { key, offset, len }),
        1 => (0u8..2).prop_map(|key| FileOp::Verify { key }),
        1 => Just(FileOp::Take),
        1 => Just(FileOp::Replay),
        2 => Just(FileOp::Sync),
    ]
}

/// Replays a delta the way the documented consumer does: truncate, then copy ranges
/// from the current source clipped to its size (or the whole file when verifying).
fn replay(shadow: &mut Vec<u8>, source: &[u8], delta: &FileDelta) {
    if let Some(size) = delta.truncated_to {
        shadow.resize(usize::try_from(size).expect("small"), 0);
    }
    if delta.verify {
        shadow.clear();
        shadow.extend_from_slice(source);
        return;
    }
    let size = source.len() as u64;
    for (offset, len) in delta.ranges.iter() {
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            continue;
        }
        let (o, e) = (offset as usize, end as usize);
        if shadow.len() < e {
            shadow.resize(e, 0);
        }
        shadow[o..e].copy_from_slice(&source[o..e]);
    }
}

/// Takes what is pending for the file, known under key 0 or 1 (one content reported
/// under two names, as a file seen first by inode and later by path).
fn take(d: &mut DirtyFiles<u8>) -> Option<FileDelta> {
    d.rekey(&0, 1);
    let delta = d.take(&1);
    assert!(d.is_empty());
    delta
}

/// Replays the queued deltas in order, then takes and replays what is pending.
fn sync(
    d: &mut DirtyFiles<u8>,
    queue: &mut VecDeque<FileDelta>,
    shadow: &mut Vec<u8>,
    source: &[u8],
) {
    for delta in queue.drain(..) {
        replay(shadow, source, &delta);
    }
    if let Some(delta) = take(d) {
        replay(shadow, source, &delta);
    }
}

proptest! {
    /// (4): writes, truncates, fallocate insert/collapse and verifies on a source, with
    /// deltas taken at random points and replayed later (so that changes race with the
    /// replay's reads), leave the shadow equal to the source, whatever the caps.
    #[test]
    fn replay_converges(
        initial in prop::collection::vec(any::<u8>(), 0..64),
        per_file in 1usize..6,
        total in 0usize..8,
        ops in prop::collection::vec(file_op(), 0..48),
    ) {
        let mut source = initial.clone();
        let mut shadow = initial;
        let mut d = DirtyFiles::<u8>::new(per_file, total);
        let mut queue = VecDeque::new();
        let mut last_seq = 0;
        for op in ops {
            let seq = match op {
                FileOp::Write { key, offset, len, byte } => {
                    let o = offset as usize;
                    // A zero-length pwrite does not extend the file.
                    if len > 0 {
                        if source.len() < o + len {
                            source.resize(o + len, 0);
                        }
                        source[o..o + len].fill(byte);
                    }
                    d.write(key, offset, len as u64)
                }
                FileOp::Truncate { key, size } => {
                    source.resize(size as usize, 0);
                    d.truncate(key, size)
                }
                FileOp::InsertRange { key, offset, len } => {
                    let o = (offset as usize).min(source.len());
                    source.splice(o..o, std::iter::repeat_n(0u8, len));
                    d.write_to_end(key, o as u64)
                }
                FileOp::CollapseRange { key, offset, len } => {
                    let o = (offset as usize).min(source.len());
                    let e = (o + len).min(source.len());
                    source.drain(o..e);
                    d.write_to_end(key, o as u64);
                    d.truncate(key, source.len() as u64)
                }
                FileOp::Verify { key } => d.verify(key),
                FileOp::Take => {
                    queue.extend(take(&mut d));
                    continue;
                }
                FileOp::Replay => {
                    if let Some(delta) = queue.pop_front() {
                        replay(&mut shadow, &source, &delta);
                    }
                    continue;
                }
                FileOp::Sync => {
                    sync(&mut d, &mut queue, &mut shadow, &source);
                    prop_assert_eq!(&shadow, &source);
                    continue;
                }
            };
            prop_assert!(seq > last_seq);
            last_seq = seq;
            prop_assert!(d.total_ranges() <= total);
        }
        sync(&mut d, &mut queue, &mut shadow, &source);
        prop_assert_eq!(&shadow, &source);
    }
}
