//! Turns fanotify's name hints into an exact sequence of name operations.
//!
//! fanotify merges unread events for the same (directory, name) and loses their
//! order, so its events are treated as "this name may have changed". For each dirty
//! name the reconciler compares what the index says (the consumer's view) with what
//! the filesystem holds now, matches disappearing and appearing inodes into renames
//! and hard links, and emits, in an order a consumer can replay one by one:
//!
//! 1. moves, ordered so that no move overwrites the source of a pending one (a
//!    two-cycle is an `exchange`, a longer cycle goes through a temporary name);
//! 2. removals, children before their directory;
//! 3. creations, parents before children, each new file followed by a `write` of
//!    its whole content;
//! 4. attribute changes.
//!
//! The index is updated as each record is emitted, so it always equals the replayed
//! namespace.

use std::{collections::HashSet, os::unix::ffi::OsStringExt};

use agent_common::abi::Key;

use super::{
    change::Op,
    index::{Index, Kind, NodeId, RootId, Stat},
};

/// How the reconciler looks at the live filesystem.
pub trait Lookup {
    /// `lstat` of `name` inside directory node `dir` of the index, wherever that
    /// directory is on disk now. `None` when the name does not exist (or the
    /// directory is gone).
    fn stat_in(&mut self, index: &Index, dir: NodeId, name: &[u8]) -> Option<Stat>;

    /// The target of symlink `name` in directory node `dir`, wherever it is now.
    fn read_link_in(&mut self, index: &Index, dir: NodeId, name: &[u8]) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let p = index.abs_path(dir)?.join(std::ffi::OsStr::from_bytes(name));
        std::fs::read_link(p)
            .ok()
            .map(|t| t.into_os_string().into_vec())
    }
}

/// One name to look at again.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct DirtyName {
    pub dir: NodeId,
    pub name: Box<[u8]>,
}

/// One record of a [`Plan`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Planned {
    pub root: RootId,
    /// The entry's path relative to its root, as the index had it when this record
    /// was planned.
    pub path: Vec<u8>,
    pub op: Op,
    /// The inode a `create`, `write` or `attr` is about, taken when the record was
    /// planned. A later record of the same plan may move the entry (a directory a
    /// scan found elsewhere moves after the entries created below it), so the path
    /// alone may lead nowhere once the plan is over; a consumer that cannot read the
    /// entry under `path` finds it again by this inode.
    pub ino: Option<u64>,
}

impl Planned {
    fn new(root: RootId, path: Vec<u8>, op: Op) -> Self {
        Self {
            root,
            path,
            op,
            ino: None,
        }
    }

    fn of(root: RootId, path: Vec<u8>, op: Op, ino: Option<u64>) -> Self {
        Self {
            root,
            path,
            op,
            ino,
        }
    }
}

/// What a reconciliation produced.
#[derive(Debug, Default)]
pub struct Plan {
    /// The records to emit, in order.
    pub changes: Vec<Planned>,
    /// Inodes with names outside the watched trees too: the kernel filter must
    /// watch them by inode, since a write through the other name has no watched
    /// ancestor.
    pub watch: Vec<Key>,
    /// New directories that could not be read yet (they moved again in a way not
    /// reconciled yet): their entries must be looked at once their place is known.
    pub unlisted: Vec<Key>,
    /// Trees where the dirty names did not say enough to describe what happened (a
    /// directory moved below one whose own move was not reported): they must be
    /// compared whole again, which finds every directory where it is now.
    pub rescan: Vec<RootId>,
}

/// A pending rename of `src` to `name` in `dir`.
#[derive(Clone, Debug)]
struct Move {
    src: NodeId,
    dir: NodeId,
    name: Box<[u8]>,
}

/// Reconciles the dirty names against the filesystem. `attr` lists the names
/// whose attributes changed; `left` the inodes that were moved out of the watched
/// trees since the last reconciliation: changes made to them outside were not
/// captured, so if they are back they are described as new, never as a rename.
pub fn reconcile(
    index: &mut Index,
    lookup: &mut dyn Lookup,
    dirty: &HashSet<DirtyName>,
    attr: &HashSet<DirtyName>,
    left: &HashSet<Key>,
) -> Plan {
    let mut plan = Plan::default();
    let mut gone: Vec<NodeId> = Vec::new();
    let mut appeared: Vec<(NodeId, Box<[u8]>, Stat)> = Vec::new();
    let mut unchanged_attr = Vec::new();

    for d in dirty
        .iter()
        .chain(attr.iter().filter(|a| !dirty.contains(a)))
    {
        if index.kind(d.dir) != Some(Kind::Dir) {
            continue;
        }
        let cur = index.child(d.dir, &d.name);
        let live = lookup.stat_in(index, d.dir, &d.name);
        tracing::trace!(
            dir = d.dir,
            name = %String::from_utf8_lossy(&d.name),
            cur = ?cur.and_then(|c| index.key(c)).map(|k| k.ino),
            live = ?live.map(|s| s.key.ino),
            "dirty name"
        );
        match (cur, live) {
            (None, None) => {}
            // Back under the name it left (an inode in `left` went out and came back
            // within the batch): unchanged as far as names go, but what was done to it
            // outside was not captured, so it is described anew below.
            (Some(c), Some(s)) if index.is_same_file(c, &s) && !left.contains(&s.key) => {
                if attr.contains(d) {
                    unchanged_attr.push(c);
                }
                // A new hard link elsewhere (perhaps outside every tree) shows here
                // as an attribute change: writes through it must be seen too.
                if s.kind == Kind::File && s.nlink > 1 {
                    plan.watch.push(s.key);
                }
            }
            (cur, live) => {
                // An attribute change of an entry that also moved: the change
                // belongs to the inode, wherever the moves below take it.
                if let Some(c) = cur
                    && attr.contains(d)
                {
                    unchanged_attr.push(c);
                }
                if let Some(c) = cur
                    && !gone.contains(&c)
                {
                    gone.push(c);
                }
                if let Some(s) = live {
                    appeared.push((d.dir, d.name.clone(), s));
                }
            }
        }
    }

    // Match appearances to known inodes: a rename when the old name is gone, a hard
    // link when it is still there, a creation otherwise.
    let mut moves: Vec<Move> = Vec::new();
    let mut links: Vec<(NodeId, NodeId, Box<[u8]>)> = Vec::new();
    let mut creates: Vec<(NodeId, Box<[u8]>, Stat)> = Vec::new();
    let mut moved: HashSet<NodeId> = HashSet::new();
    for (dir, name, st) in appeared {
        let candidates: Vec<NodeId> = if left.contains(&st.key) {
            Vec::new()
        } else {
            index.names(&st.key).to_vec()
        };
        let candidates: Vec<NodeId> = candidates
            .iter()
            .copied()
            .filter(|c| index.is_same_file(*c, &st) && !moved.contains(c))
            .collect();
        let from_gone = candidates.iter().copied().find(|c| gone.contains(c));
        let src = from_gone.or_else(|| {
            candidates.iter().copied().find(|&c| {
                // An old name that was not reported dirty: look at it now.
                !still_there(index, lookup, c)
            })
        });
        tracing::trace!(
            dir,
            name = %String::from_utf8_lossy(&name),
            ino = st.key.ino,
            left = left.contains(&st.key),
            candidates = candidates.len(),
            src = ?src,
            "appeared"
        );
        if let Some(src) = src {
            gone.retain(|&g| g != src);
            moved.insert(src);
            moves.push(Move { src, dir, name });
        } else if let Some(&existing) = candidates.first()
            && st.kind != Kind::Dir
        {
            links.push((existing, dir, name));
        } else {
            creates.push((dir, name, st));
        }
    }

    emit_moves(index, &mut plan, moves, &mut gone, lookup);
    for (existing, dir, name) in links {
        // A new name of a known inode: replace whatever the index had there.
        if let Some(old) = index.child(dir, &name) {
            emit_remove_tree(index, &mut plan, old);
            gone.retain(|&g| g != old);
        }
        let (Some(root), Some(from)) = (index.root_of(existing), index.rel_path(existing)) else {
            // The other name left the index earlier in this batch (it went with a
            // directory moved between the trees): this name is new on its own.
            if index.kind(dir) == Some(Kind::Dir)
                && let Some(st) = lookup.stat_in(index, dir, &name)
            {
                creates.push((dir, name, st));
            }
            continue;
        };
        let Some(to) = path_in(index, dir, &name) else {
            continue;
        };
        if index.root_of(dir) == Some(root) {
            // The index must name what the record makes, whatever the disk holds
            // by now (later events describe any change since).
            if let Some(st) = index.stat(existing)
                && index.insert(dir, &name, &st).is_ok()
            {
                plan.changes
                    .push(Planned::new(root, from, Op::Link { new_path: to }));
            }
        } else if let Some(st) = lookup.stat_in(index, dir, &name) {
            // Hard links cannot span roots (the copies may live on different
            // filesystems): the new name is described as a file of its own.
            emit_create(index, lookup, &mut plan, dir, &name, st);
        }
    }
    for g in gone {
        // A directory scanned earlier in this batch may have found this entry at a
        // new place and moved it there (`Index::take_displaced`): it is not gone
        // any more, and removing it would remove it from where it now is.
        if index.kind(g).is_none() || still_there(index, lookup, g) {
            continue;
        }
        emit_remove_tree(index, &mut plan, g);
    }
    for (dir, name, st) in creates {
        if let Some(old) = index.child(dir, &name) {
            emit_remove_tree(index, &mut plan, old);
        }
        // Two new names of one inode in the same batch: the second is a hard link
        // to the first (described just before), not a file of its own.
        let root = index.root_of(dir);
        let first = (st.kind != Kind::Dir)
            .then(|| {
                index
                    .names(&st.key)
                    .iter()
                    .copied()
                    .find(|&n| index.is_same_file(n, &st) && index.root_of(n) == root)
            })
            .flatten();
        if let (Some(first), Some(root)) = (first, root)
            && let (Some(from), Some(to)) = (index.rel_path(first), path_in(index, dir, &name))
            && index.insert(dir, &name, &st).is_ok()
        {
            plan.changes
                .push(Planned::new(root, from, Op::Link { new_path: to }));
            continue;
        }
        emit_create(index, lookup, &mut plan, dir, &name, st);
    }
    // And whatever holds an attribute-changed name now (moved or linked there; a
    // new entry already had its attributes copied, once more is harmless).
    for d in attr {
        if let Some(c) = index.child(d.dir, &d.name) {
            unchanged_attr.push(c);
        }
    }
    let mut described = HashSet::new();
    for c in unchanged_attr {
        if !described.insert(c) {
            continue;
        }
        // Removed during this reconciliation: nothing to describe (ids are held, so
        // a removed id names nothing).
        if index.kind(c).is_none() {
            continue;
        }
        // Attributes belong to the inode: a file with names in two trees (a hard link
        // across them) has a copy in each, and each copy needs the change, whichever
        // name the change was made through.
        let mut roots = Vec::new();
        let names = match index.key(c) {
            Some(key) if index.kind(c) != Some(Kind::Dir) => index.names(&key).to_vec(),
            _ => Vec::new(),
        };
        for n in std::iter::once(c).chain(names) {
            if let (Some(root), Some(path)) = (index.root_of(n), index.rel_path(n))
                && !roots.contains(&root)
                && index.kind(n) == index.kind(c)
            {
                roots.push(root);
                let ino = index.key(n).map(|k| k.ino);
                plan.changes.push(Planned::of(root, path, Op::Attr, ino));
            }
        }
    }
    plan
}

/// Whether the index's name for `node` still holds the same inode on disk.
fn still_there(index: &Index, lookup: &mut dyn Lookup, node: NodeId) -> bool {
    let (Some(parent), Some(name)) = (index.parent(node), index.name(node)) else {
        // A root is always there.
        return true;
    };
    let name = name.to_vec();
    lookup
        .stat_in(index, parent, &name)
        .is_some_and(|s| index.is_same_file(node, &s))
}

/// The path `name` would have in directory `dir`.
fn path_in(index: &Index, dir: NodeId, name: &[u8]) -> Option<Vec<u8>> {
    let mut p = index.rel_path(dir)?;
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    Some(p)
}

/// Emits the moves so that none overwrites the source of another pending move and
/// no directory is moved below itself.
fn emit_moves(
    index: &mut Index,
    plan: &mut Plan,
    mut moves: Vec<Move>,
    gone: &mut Vec<NodeId>,
    lookup: &mut dyn Lookup,
) {
    let mut temp = 0u64;
    // Every round emits one move or breaks one cycle, so this bound is only reached
    // if the index disagrees with itself; the fallback below is still correct.
    let mut budget = moves.len() * 4 + 16;
    while !moves.is_empty() && budget > 0 {
        budget -= 1;
        if let Some(i) = (0..moves.len()).find(|&i| blocker(index, &moves, i).is_none()) {
            let m = moves.remove(i);
            emit_move(index, plan, &m, gone, lookup);
            continue;
        }
        // Every pending move waits for another: follow the waits to a cycle.
        let mut seen = vec![0usize];
        let mut cur = 0usize;
        let cycle_start = loop {
            let Some(next) = blocker(index, &moves, cur) else {
                break None;
            };
            if let Some(pos) = seen.iter().position(|&x| x == next) {
                break Some(pos);
            }
            seen.push(next);
            cur = next;
        };
        let Some(pos) = cycle_start else {
            break;
        };
        let cycle: Vec<usize> = seen[pos..].to_vec();
        let a = cycle[0];
        if cycle.len() == 1 {
            // A directory that must go below itself with nothing to move out of the
            // way: only removal and creation can describe it.
            // The index still has the destination below the directory, so the
            // directory in between moved too, unreported: what is removed here may
            // not come back from this batch alone, so the tree is compared again.
            let m = moves.remove(a);
            plan.rescan.extend(index.root_of(m.src));
            emit_remove_tree(index, plan, m.src);
            if let Some(st) = lookup.stat_in(index, m.dir, &m.name) {
                emit_create(index, lookup, plan, m.dir, &m.name, st);
            }
            continue;
        }
        let swap = if let [x, y] = cycle[..] {
            let (mx, my) = (&moves[x], &moves[y]);
            let same_slots = index.child(mx.dir, &mx.name) == Some(my.src)
                && index.child(my.dir, &my.name) == Some(mx.src);
            // rename(2) cannot exchange a directory with one below it; the index,
            // which lags the disk, can ask for it after several directory moves.
            // Such a cycle goes through a temporary name instead.
            let nested = index.is_within(mx.src, my.src) || index.is_within(my.src, mx.src);
            (same_slots && !nested).then_some((x, y))
        } else {
            None
        };
        if let Some((x, y)) = swap {
            // a -> b and b -> a: one atomic exchange.
            let (src_a, src_b) = (moves[x].src, moves[y].src);
            let (Some(root), Some(pa), Some(pb)) = (
                index.root_of(src_a),
                index.rel_path(src_a),
                index.rel_path(src_b),
            ) else {
                break;
            };
            if index.root_of(src_b) != Some(root) {
                // Exchanged between the trees: an exchange cannot name two trees, and
                // a move across them is a removal and a creation anyway. The first
                // move removes the other's source from its destination, so the other
                // finds no source left and describes its entry as new where it is.
                let m = moves.remove(x);
                emit_move(index, plan, &m, gone, lookup);
                continue;
            }
            plan.changes
                .push(Planned::new(root, pa, Op::Exchange { new_path: pb }));
            let (ma, mb) = (moves[x].clone(), moves[y].clone());
            let tmp = format!(".tandem-exchange-{temp}").into_bytes();
            temp += 1;
            if let Some(dir_b) = index.parent(src_b) {
                index.rename(src_b, dir_b, &tmp);
            }
            index.rename(src_a, ma.dir, &ma.name);
            index.rename(src_b, mb.dir, &mb.name);
            let (hi, lo) = (x.max(y), x.min(y));
            moves.remove(hi);
            moves.remove(lo);
        } else {
            // A longer cycle, or a directory waiting to move below itself: park the
            // source of one move under a temporary name next to where it is.
            let src = moves[a].src;
            let Some(dir) = index.parent(src) else {
                break;
            };
            let tmp = format!(".tandem-move-{temp}").into_bytes();
            temp += 1;
            let m = Move {
                src,
                dir,
                name: tmp.into_boxed_slice(),
            };
            emit_move(index, plan, &m, gone, lookup);
        }
    }
    // Whatever could not be ordered is described as removal plus creation, and
    // the tree compared again (see above).
    for m in moves {
        plan.rescan.extend(index.root_of(m.src));
        emit_remove_tree(index, plan, m.src);
        if let Some(st) = lookup.stat_in(index, m.dir, &m.name) {
            emit_create(index, lookup, plan, m.dir, &m.name, st);
        }
    }
}

/// The pending move that move `i` has to wait for, if any: the one whose source
/// occupies its destination, or (for a directory moving below itself) the one that
/// moves an ancestor of the destination out of the way.
fn blocker(index: &Index, moves: &[Move], i: usize) -> Option<usize> {
    let m = &moves[i];
    if let Some(occupant) = index.child(m.dir, &m.name)
        && occupant != m.src
        && let Some(j) = moves.iter().position(|o| o.src == occupant)
    {
        return Some(j);
    }
    if index.is_within(m.dir, m.src) {
        // Moving m.src below itself: wait for the move of the directory in between.
        return moves
            .iter()
            .position(|o| {
                o.src != m.src && index.is_within(m.dir, o.src) && index.is_within(o.src, m.src)
            })
            .or(Some(i));
    }
    None
}

/// Emits one rename and applies it to the index.
fn emit_move(
    index: &mut Index,
    plan: &mut Plan,
    m: &Move,
    gone: &mut Vec<NodeId>,
    lookup: &mut dyn Lookup,
) {
    let (Some(src_root), Some(dst_root)) = (index.root_of(m.src), index.root_of(m.dir)) else {
        // An earlier operation of this batch took one end out of the index: a
        // directory moved between the trees is removed and created again (its new
        // copy scanned whole), and ids below it name nothing any more. What the
        // move still has to say is said with the ends that are left.
        if index.kind(m.src).is_some() {
            // The old name is gone (that is how the move was matched); the new
            // place, inside the rescanned directory, was described by its scan.
            // That scan may also have found the source itself there and moved it
            // (a directory exchanged into the re-created one): then the index's
            // name for it holds it on disk, and it stays.
            if !still_there(index, lookup, m.src) {
                emit_remove_tree(index, plan, m.src);
            }
        } else if index.kind(m.dir) == Some(Kind::Dir)
            && let Some(st) = lookup.stat_in(index, m.dir, &m.name)
            && !index
                .child(m.dir, &m.name)
                .is_some_and(|c| index.is_same_file(c, &st))
        {
            // The source went with its directory; its new name still needs one.
            if let Some(old) = index.child(m.dir, &m.name) {
                emit_remove_tree(index, plan, old);
            }
            emit_create(index, lookup, plan, m.dir, &m.name, st);
        }
        return;
    };
    if let Some(occupant) = index.child(m.dir, &m.name)
        && occupant != m.src
    {
        // rename(2) replaces a file by a file silently; anything else (a directory
        // that still has entries in the consumer's copy, a change of kind) is removed
        // explicitly first.
        let implicit =
            index.kind(occupant) != Some(Kind::Dir) && index.kind(m.src) != Some(Kind::Dir);
        if !implicit || src_root != dst_root {
            emit_remove_tree(index, plan, occupant);
        } else {
            index.remove(occupant);
        }
        gone.retain(|&g| g != occupant);
    }
    if src_root != dst_root {
        // Across roots: the copies may be on different filesystems.
        let kind = index.kind(m.src);
        emit_remove_tree(index, plan, m.src);
        if kind.is_some()
            && let Some(st) = lookup.stat_in(index, m.dir, &m.name)
        {
            emit_create(index, lookup, plan, m.dir, &m.name, st);
        }
        return;
    }
    let (Some(from), Some(to)) = (index.rel_path(m.src), path_in(index, m.dir, &m.name)) else {
        return;
    };
    plan.changes
        .push(Planned::new(src_root, from, Op::Rename { new_path: to }));
    index.rename(m.src, m.dir, &m.name);
}

/// Emits removals for a node and everything below it, children first.
fn emit_remove_tree(index: &mut Index, plan: &mut Plan, node: NodeId) {
    let mut order = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        order.push(n);
        stack.extend(index.children(n));
    }
    for n in order.into_iter().rev() {
        if let (Some(root), Some(path), Some(kind)) =
            (index.root_of(n), index.rel_path(n), index.kind(n))
        {
            plan.changes
                .push(Planned::new(root, path, Op::Remove { kind }));
        }
    }
    index.remove(node);
}

/// Emits the creation of `name` in `dir` and, for a directory, of everything found
/// below it; files with content get a `write` of all of it.
fn emit_create(
    index: &mut Index,
    lookup: &mut dyn Lookup,
    plan: &mut Plan,
    dir: NodeId,
    name: &[u8],
    st: Stat,
) {
    // The consumer still has whatever the index has at this name: it goes first,
    // explicitly (inserting over it would drop it from the index alone, and the
    // copy would keep it, children and all, under the new entry). When it is this
    // very entry already, there is nothing to create.
    if let Some(old) = index.child(dir, name) {
        if index.is_same_file(old, &st) {
            return;
        }
        emit_remove_tree(index, plan, old);
    }
    // Another name of this very inode in the same tree: the consumer makes a hard
    // link, not a second file (callers reach here from moves and re-creations too).
    let root = index.root_of(dir);
    let other = (st.kind != Kind::Dir)
        .then(|| {
            index
                .names(&st.key)
                .iter()
                .copied()
                .find(|&n| index.is_same_file(n, &st) && index.root_of(n) == root)
        })
        .flatten();
    if let (Some(other), Some(root)) = (other, root)
        && let (Some(from), Some(to)) = (index.rel_path(other), path_in(index, dir, name))
        && index.insert(dir, name, &st).is_ok()
    {
        plan.changes
            .push(Planned::new(root, from, Op::Link { new_path: to }));
        if st.nlink > 1 {
            plan.watch.push(st.key);
        }
        return;
    }
    let target = (st.kind == Kind::Symlink)
        .then(|| lookup.read_link_in(index, dir, name))
        .flatten();
    if st.kind == Kind::Symlink && target.is_none() {
        // A symlink is made with its target, and a consumer cannot read it later
        // under a name that no longer holds it. It left this name after it was
        // looked at, so after the events read for this batch: the event of that
        // rename or unlink comes in a later batch and describes it where it went.
        // Until then it is not in the index, as it is not in the consumer's copy.
        tracing::debug!(
            dir,
            name = %String::from_utf8_lossy(name),
            "symlink gone before its target was read; its next event describes it"
        );
        return;
    }
    let Ok(id) = index.insert(dir, name, &st) else {
        tracing::debug!(
            dir,
            name = %String::from_utf8_lossy(name),
            "create dropped: its directory left the index"
        );
        return;
    };
    describe_new(index, plan, id, &st, target);
    if st.kind == Kind::Dir {
        let mut found = Vec::new();
        // Errors here mean the tree is too large for the index; the directory
        // itself is already described and its entries will be reported by events.
        if let Ok(unlisted) = index.scan(id, &mut |_, child, cst, target| {
            found.push((child, *cst, target));
        }) {
            plan.unlisted
                .extend(unlisted.into_iter().filter_map(|n| index.key(n)));
        }
        let displaced = index.take_displaced();
        let new: HashSet<NodeId> = found.iter().map(|(c, _, _)| *c).collect();
        let mut described: HashSet<NodeId> = HashSet::new();
        for (child, cst, target) in found {
            // A hard link between two new names: the second is a link to another
            // name of the inode in the same tree that the consumer already has
            // (there before the scan, or described earlier in it).
            let first = index.names(&cst.key).iter().copied().find(|&n| {
                n != child
                    && index.is_same_file(n, &cst)
                    && index.root_of(n) == index.root_of(child)
                    && (!new.contains(&n) || described.contains(&n))
            });
            described.insert(child);
            if cst.kind != Kind::Dir
                && let Some(first) = first
            {
                if let (Some(root), Some(from), Some(to)) = (
                    index.root_of(first),
                    index.rel_path(first),
                    index.rel_path(child),
                ) {
                    plan.changes.push(Planned::new(
                        root,
                        from,
                        Op::Link {
                            new_path: to.clone(),
                        },
                    ));
                    // Events in a directory the index did not have yet were not
                    // looked at (its scan describes it), so an attribute change
                    // made through this name went unseen: a link carries none.
                    plan.changes
                        .push(Planned::of(root, to, Op::Attr, Some(cst.key.ino)));
                }
                continue;
            }
            describe_new(index, plan, child, &cst, target);
        }
        // Directories found here that the index still has elsewhere moved here:
        // describe the move (their contents go along), not a second copy.
        for (old, parent, name) in displaced {
            let m = Move {
                src: old,
                dir: parent,
                name,
            };
            emit_move(index, plan, &m, &mut Vec::new(), lookup);
        }
    }
    let _ = lookup;
}

/// Describes a new entry; `target` is a symlink's target when it could be read.
fn describe_new(index: &Index, plan: &mut Plan, id: NodeId, st: &Stat, target: Option<Vec<u8>>) {
    let (Some(root), Some(path)) = (index.root_of(id), index.rel_path(id)) else {
        return;
    };
    let ino = Some(st.key.ino);
    plan.changes.push(Planned::of(
        root,
        path.clone(),
        Op::Create {
            kind: st.kind,
            // Read by the caller through the directory it was found in: the index's
            // path may already lead to another entry. Without it a consumer reads the
            // target itself (and a later record describes whatever replaced it).
            target: target.filter(|_| st.kind == Kind::Symlink),
            rdev: st.rdev,
        },
        ino,
    ));
    if st.kind == Kind::File {
        if st.size > 0 {
            plan.changes.push(Planned::of(
                root,
                path,
                Op::Write {
                    offset: 0,
                    len: st.size,
                },
                ino,
            ));
        }
        if st.nlink > 1 {
            plan.watch.push(st.key);
        }
    }
}

/// A [`Lookup`] through the index's own paths; right whenever the directories have
/// not moved since they were last reported (the engine prefers directory handles).
pub struct PathLookup;

impl Lookup for PathLookup {
    fn stat_in(&mut self, index: &Index, dir: NodeId, name: &[u8]) -> Option<Stat> {
        use std::os::unix::ffi::OsStrExt;
        let p = index.abs_path(dir)?.join(std::ffi::OsStr::from_bytes(name));
        std::fs::symlink_metadata(p)
            .ok()
            .map(|m| super::index::stat_of(&m))
    }
}

/// Helper for callers that collect dirty names with attribute flags.
#[derive(Debug, Default)]
pub struct DirtySet {
    pub names: HashSet<DirtyName>,
    pub attr: HashSet<DirtyName>,
    /// Roots whose whole tree must be compared again (lost history).
    pub rescan: HashSet<RootId>,
    /// Attribute changes of roots themselves.
    pub root_attr: HashSet<RootId>,
}

impl DirtySet {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.attr.is_empty()
            && self.rescan.is_empty()
            && self.root_attr.is_empty()
    }
}

#[cfg(test)]
mod tests;
