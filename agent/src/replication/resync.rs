//! The resync source's comparison: given the target's manifest (every entry it holds,
//! with block hashes of its files), walks our trees and produces the records that turn
//! the target's copy into ours. Only differing blocks travel; unchanged files cost
//! their hashes.
//!
//! Order matters to the target, which applies records one by one: entries that must
//! go are removed first (deepest first), then directories are created parents first,
//! then files get their data, and attributes of directories are set last (adding
//! children changes a directory's times).

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use agent_common::wire::{EntryKind, Manifest, Record, WireOp};

use super::ship::{Segment, read_segments};
use crate::apply::attrs_of;

mod blocks;

/// How many entries' differing blocks are found (in parallel) ahead of emitting
/// their records: enough to keep the hashing threads busy, few enough that records
/// start flowing early.
const WINDOW: usize = 64;

/// The target's entries, by (directory index, path).
pub type TargetView = HashMap<(u16, Vec<u8>), Manifest>;

/// What a resync compare found, for progress and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Bytes of file data on the source.
    pub source_bytes: u64,
    /// Bytes of data records produced.
    pub data_bytes: u64,
    pub entries: u64,
}

/// Compares root `dir` (at `root`) with the target's view and hands records to `out`
/// in batches. `out` returning false stops the compare (the link went down).
pub fn compare(
    dir: u16,
    root: &Path,
    target: &TargetView,
    out: &mut dyn FnMut(Vec<Record>) -> bool,
) -> std::io::Result<Totals> {
    let mut ours = Vec::new();
    walk(root, Vec::new(), &mut ours)?;
    let present: HashSet<&[u8]> = ours.iter().map(|(p, _)| p.as_slice()).collect();
    // What the target has and we do not.
    let gone: Vec<Vec<u8>> = target
        .keys()
        .filter(|(d, p)| *d == dir && !p.is_empty() && !present.contains(p.as_slice()))
        .map(|(_, p)| p.clone())
        .collect();
    emit(dir, root, &ours, gone, target, true, out)
}

/// Like [`compare`], limited to `scope` (sorted; the paths the change log says may
/// differ): each scoped path is compared; a scoped directory's children are compared
/// by name only (the target listed them without hashes), those the target lacks
/// being sent whole and those we lack removed.
pub fn compare_paths(
    dir: u16,
    root: &Path,
    scope: &[Vec<u8>],
    target: &TargetView,
    out: &mut dyn FnMut(Vec<Record>) -> bool,
) -> std::io::Result<Totals> {
    let in_scope: HashSet<&[u8]> = scope.iter().map(Vec::as_slice).collect();
    let mut ours = Vec::new();
    let mut gone = Vec::new();
    let mut listed = HashSet::new();
    for p in scope {
        if !listed.insert(p.clone()) {
            continue;
        }
        let full = join(root, p);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if target.contains_key(&(dir, p.clone())) {
                    gone.push(p.clone());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let is_dir = meta.is_dir();
        ours.push((p.clone(), meta));
        if !is_dir {
            continue;
        }
        let mut children = Vec::new();
        walk_one(&full, p, &mut children)?;
        let names: HashSet<&[u8]> = children.iter().map(|(c, _)| c.as_slice()).collect();
        gone.extend(
            target
                .keys()
                .filter(|(d, c)| *d == dir && parent_of(c) == Some(p.as_slice()))
                .filter(|(_, c)| !names.contains(c.as_slice()))
                .map(|(_, c)| c.clone()),
        );
        for (c, m) in children {
            if in_scope.contains(c.as_slice()) || target.contains_key(&(dir, c.clone())) {
                continue;
            }
            // New to the target and not logged on its own: sent whole.
            let sub_dir = m.is_dir();
            listed.insert(c.clone());
            ours.push((c.clone(), m));
            if sub_dir {
                let before = ours.len();
                walk(&join(root, &c), c, &mut ours)?;
                for (q, _) in &ours[before..] {
                    listed.insert(q.clone());
                }
            }
        }
    }
    emit(dir, root, &ours, gone, target, false, out)
}

/// Produces the records for `ours` (parents first) against the target's view,
/// after removing `gone`; with `root_attrs`, also sets the root's attributes.
fn emit(
    dir: u16,
    root: &Path,
    ours: &[(Vec<u8>, fs::Metadata)],
    mut gone: Vec<Vec<u8>>,
    target: &TargetView,
    root_attrs: bool,
    out: &mut dyn FnMut(Vec<Record>) -> bool,
) -> std::io::Result<Totals> {
    let mut totals = Totals::default();
    let mut batch = Vec::new();
    let rec = |path: &[u8], op: WireOp| Record {
        seq: 0,
        dir,
        path: path.to_vec(),
        op,
    };
    // 1. Removals, deepest first; a directory's removal takes its children, so
    // those under a removed directory are skipped.
    gone.sort_by_key(|p| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    gone.dedup();
    let removed: HashSet<&[u8]> = gone.iter().map(Vec::as_slice).collect();
    for p in &gone {
        let under_removed = ancestors(p).any(|a| removed.contains(a));
        if !under_removed {
            batch.push(rec(p, WireOp::Remove));
        }
    }
    // 2. Our entries, parents first (the walk lists them so).
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut dirs = Vec::new();
    let empty = |path: &[u8]| Manifest {
        dir,
        path: path.to_vec(),
        kind: EntryKind::File,
        size: 0,
        blocks: Vec::new(),
        block_size: 4096,
    };
    // The target's view of each regular file of the window: its manifest when it
    // holds a file there, else an empty one (every block differs).
    let their_file = |path: &[u8]| {
        target
            .get(&(dir, path.to_vec()))
            .filter(|t| t.kind == EntryKind::File)
            .cloned()
            .unwrap_or_else(|| empty(path))
    };
    let mut found: Vec<Option<blocks::Ranges>> = Vec::new();
    for (i, (path, meta)) in ours.iter().enumerate() {
        if i % WINDOW == 0 {
            let window = &ours[i..ours.len().min(i + WINDOW)];
            let theirs: Vec<Option<Manifest>> = window
                .iter()
                .map(|(p, m)| (kind_of(m) == EntryKind::File).then(|| their_file(p)))
                .collect();
            let jobs: Vec<blocks::Job<'_>> = window
                .iter()
                .zip(&theirs)
                .filter_map(|((p, m), t)| Some((join(root, p), m.len(), t.as_ref()?)))
                .collect();
            let mut results = blocks::differing_many(&jobs).into_iter();
            found = theirs
                .iter()
                .map(|t| t.as_ref().and_then(|_| results.next()))
                .collect();
        }
        let ranges = found.get_mut(i % WINDOW).and_then(Option::take);
        totals.entries += 1;
        let full = join(root, path);
        let theirs = target.get(&(dir, path.clone()));
        let kind = kind_of(meta);
        let attrs = attrs_of(&full).unwrap_or_default();
        if kind == EntryKind::Dir {
            if theirs.is_none_or(|t| t.kind != EntryKind::Dir) {
                batch.push(rec(path, create(kind, attrs.clone(), None, 0)));
            }
            dirs.push((path.clone(), attrs));
            continue;
        }
        if kind == EntryKind::File && meta.nlink() > 1 {
            // Later names of a hard-linked file become links to the first one.
            match links.entry((meta.dev(), meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    batch.push(rec(
                        first.get(),
                        WireOp::Link {
                            new_path: path.clone(),
                        },
                    ));
                    continue;
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(path.clone());
                }
            }
        }
        let same_kind = theirs.is_some_and(|t| t.kind == kind);
        if kind != EntryKind::File {
            let target_link = if kind == EntryKind::Symlink {
                fs::read_link(&full)
                    .ok()
                    .map(|t| t.as_os_str().as_bytes().to_vec())
            } else {
                None
            };
            // Symlinks and special files are small: recreate them unless identical
            // in kind (their targets and device numbers are not in the manifest).
            if !same_kind || kind == EntryKind::Symlink {
                batch.push(rec(path, create(kind, attrs, target_link, meta.rdev())));
            } else {
                batch.push(rec(path, WireOp::SetAttrs(attrs)));
            }
            continue;
        }
        totals.source_bytes += meta.len();
        if !same_kind {
            batch.push(rec(path, create(kind, attrs.clone(), None, 0)));
        }
        let their_size = theirs.filter(|_| same_kind).map_or(0, |t| t.size);
        let ranges = ranges.unwrap_or_else(|| Ok(vec![(0, meta.len())]))?;
        diff_file(&full, meta.len(), their_size, &ranges, &mut |op| {
            if let WireOp::Write { data, .. } = &op {
                totals.data_bytes += data.len() as u64;
            }
            batch.push(rec(path, op));
        })?;
        batch.push(rec(path, WireOp::SetAttrs(attrs)));
        if batch.len() >= 256 && !out(std::mem::take(&mut batch)) {
            return Ok(totals);
        }
    }
    // 3. Directory attributes, deepest first, and the root's own.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    for (p, a) in dirs {
        batch.push(rec(&p, WireOp::SetAttrs(a)));
    }
    if root_attrs && let Ok(a) = attrs_of(root) {
        batch.push(rec(b"", WireOp::SetAttrs(a)));
    }
    out(batch);
    Ok(totals)
}

/// Emits the writes, punches and truncate that make the target's file (of
/// `their_size` bytes) ours, given the `ranges` whose blocks differ.
fn diff_file(
    full: &Path,
    size: u64,
    their_size: u64,
    ranges: &[(u64, u64)],
    emit: &mut dyn FnMut(WireOp),
) -> std::io::Result<()> {
    let file = fs::File::open(full)?;
    if their_size != size {
        emit(WireOp::Truncate { size });
    }
    for &(off, len) in ranges {
        read_segments(&file, off, off + len, &mut |o, seg| match seg {
            Segment::Data(data) => emit(WireOp::Write { offset: o, data }),
            Segment::Hole(l) => emit(WireOp::Punch { offset: o, len: l }),
        })?;
    }
    Ok(())
}

fn read_full(file: &fs::File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

fn create(
    kind: EntryKind,
    attrs: agent_common::wire::Attrs,
    target: Option<Vec<u8>>,
    rdev: u64,
) -> WireOp {
    WireOp::Create {
        kind,
        attrs,
        target,
        rdev,
    }
}

/// Every entry under `dir`, parents before children, without following symlinks
/// or crossing into other filesystems.
fn walk(dir: &Path, rel: Vec<u8>, out: &mut Vec<(Vec<u8>, fs::Metadata)>) -> std::io::Result<()> {
    let dev = fs::symlink_metadata(dir)?.dev();
    walk_in(dir, &rel, dev, out)
}

fn walk_in(
    dir: &Path,
    rel: &[u8],
    dev: u64,
    out: &mut Vec<(Vec<u8>, fs::Metadata)>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        // A directory removed while we walk: its removal record follows.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let Ok(meta) = e.metadata() else { continue };
        let mut p = rel.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(e.file_name().as_bytes());
        let is_dir = meta.is_dir() && meta.dev() == dev;
        out.push((p.clone(), meta));
        if is_dir {
            walk_in(&e.path(), &p, dev, out)?;
        }
    }
    Ok(())
}

/// The entries directly in `dir` (named `rel`), not descending.
fn walk_one(dir: &Path, rel: &[u8], out: &mut Vec<(Vec<u8>, fs::Metadata)>) -> std::io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let mut p = rel.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(e.file_name().as_bytes());
        out.push((p, meta));
    }
    Ok(())
}

/// The parent of a relative path (`""` for a top-level entry).
fn parent_of(p: &[u8]) -> Option<&[u8]> {
    if p.is_empty() {
        return None;
    }
    Some(
        p.iter()
            .rposition(|&b| b == b'/')
            .map_or(&p[..0], |i| &p[..i]),
    )
}

fn kind_of(m: &fs::Metadata) -> EntryKind {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_fifo() {
        EntryKind::Fifo
    } else if t.is_socket() {
        EntryKind::Socket
    } else if t.is_char_device() {
        EntryKind::CharDevice
    } else if t.is_block_device() {
        EntryKind::BlockDevice
    } else {
        EntryKind::File
    }
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(Path::new(OsStr::from_bytes(rel)))
}

/// The proper ancestors of a relative path, nearest first.
fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = p.len();
    std::iter::from_fn(move || {
        let cut = p[..end].iter().rposition(|&b| b == b'/')?;
        end = cut;
        Some(&p[..cut])
    })
}

#[cfg(test)]
mod tests;
