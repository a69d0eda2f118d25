//! The primary's side of the capture stream: turns each [`Change`] into the wire
//! records that reproduce it, reading the named bytes and attributes from the files
//! at once (in the capture thread, while the index is current), so that a record
//! carries the data as it was when the change was described.
//!
//! A change whose file has already moved on (renamed, replaced or removed since it
//! was described) cannot be read under the recorded name. Such files are handed back
//! to the capture engine for verification by content: their data then arrives under
//! the file's next name, after the rename record that gives the consumer that name.

use std::{
    fs::File,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::{FileExt, MetadataExt},
    },
    path::PathBuf,
};

use agent_common::wire::{Attrs, EntryKind, MAX_CHUNK_BYTES, Record, WireOp};

use crate::{
    apply::{attrs_of_fd, open_beneath},
    capture::{
        change::{Change, Op, Sink},
        index::{Kind, RootId},
    },
};

/// A [`Sink`] that builds wire records (without sequence numbers yet).
#[derive(Debug)]
pub struct Shipper {
    /// Each watched root by root id, opened `O_PATH`: entries are opened beneath it
    /// (no symlink followed, no `PATH_MAX` limit on the full path). `None` when the
    /// root could not be opened.
    roots: Vec<Option<OwnedFd>>,
    /// Records built since the last [`Shipper::take`].
    out: Vec<Record>,
    /// Bytes of data in `out`.
    bytes: u64,
    /// Files to verify by content: (root, inode).
    moved_on: Vec<(RootId, u64)>,
    /// Entries whose attributes could not be read under the recorded name.
    attrs_later: Vec<(RootId, u64)>,
    /// Whether the last record built (in this batch or an earlier one) is a
    /// `Barrier`: a durability point with nothing captured since the previous one
    /// needs no record of its own.
    after_barrier: bool,
}

/// The file a record is about: where to read it and what it must be.
#[derive(Clone, Copy)]
struct At<'a> {
    root: RootId,
    rel: &'a [u8],
    /// The inode the record named; another file at the name has moved on.
    ino: Option<u64>,
}

/// What one round of capture produced.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub bytes: u64,
}

impl Shipper {
    #[must_use]
    pub fn new(roots: Vec<PathBuf>) -> Self {
        let roots = roots
            .iter()
            .map(|r| {
                let fd = File::open(r).ok().map(OwnedFd::from);
                fd.and_then(|fd| {
                    open_beneath(fd.as_fd(), b"", libc::O_PATH | libc::O_DIRECTORY).ok()
                })
            })
            .collect();
        Self {
            roots,
            out: Vec::new(),
            bytes: 0,
            moved_on: Vec::new(),
            attrs_later: Vec::new(),
            after_barrier: false,
        }
    }

    /// Takes the entries whose attributes must be described again under their
    /// current name.
    pub fn take_attrs_later(&mut self) -> Vec<(RootId, u64)> {
        std::mem::take(&mut self.attrs_later)
    }

    /// Describes the attributes of `rel` as they are now (an entry found again
    /// under its current name); false if it cannot be read, or holds another inode
    /// than `ino`.
    pub fn push_attrs(&mut self, root: RootId, rel: &[u8], ino: Option<u64>) -> bool {
        match self.attrs(root, rel, ino) {
            Some(a) => {
                self.push(root, rel, WireOp::SetAttrs(a));
                true
            }
            None => false,
        }
    }

    fn root_fd(&self, root: RootId) -> Option<BorrowedFd<'_>> {
        self.roots.get(usize::from(root))?.as_ref().map(AsFd::as_fd)
    }

    /// The attributes of the entry at `rel`, if it is inode `ino` (when known): the
    /// name may already hold another entry (an exchange or a rename over it that
    /// the stream describes next), whose attributes are not this entry's.
    fn attrs(&self, root: RootId, rel: &[u8], ino: Option<u64>) -> Option<Attrs> {
        let fd = open_beneath(self.root_fd(root)?, rel, libc::O_PATH | libc::O_NOFOLLOW).ok()?;
        if let Some(ino) = ino
            && nix::sys::stat::fstat(&fd).ok()?.st_ino != ino
        {
            return None;
        }
        attrs_of_fd(fd.as_fd()).ok()
    }

    /// Takes the records built so far.
    pub fn take(&mut self) -> Batch {
        Batch {
            records: std::mem::take(&mut self.out),
            bytes: std::mem::take(&mut self.bytes),
        }
    }

    /// A barrier follows every record built so far (a held call's, which the
    /// replication core adds): a durability point with nothing new after it, such
    /// as the probes seeing that very call return, needs no barrier of its own.
    pub fn barrier_follows(&mut self) {
        self.after_barrier = true;
    }

    /// Takes the files that could not be read under their recorded name.
    pub fn take_moved_on(&mut self) -> Vec<(RootId, u64)> {
        std::mem::take(&mut self.moved_on)
    }

    fn push(&mut self, dir: RootId, path: &[u8], op: WireOp) {
        let barrier = op == WireOp::Barrier;
        if barrier && self.after_barrier {
            // Everything before the previous barrier is already covered by it, and
            // nothing came since: another one would only make the peer sync again.
            // This also ends a feedback loop when both agents share a kernel (the
            // lab): the peer's syncfs(2) at each barrier is itself a sync-all the
            // probes report, which would otherwise become a new barrier, forever.
            return;
        }
        self.after_barrier = barrier;
        tracing::trace!(
            dir,
            path = %path.escape_ascii(),
            op = crate::replication::secondary::op_name(&op),
            detail = %detail(&op),
            "record"
        );
        if let WireOp::Write { data, .. } = &op {
            self.bytes += data.len() as u64;
        }
        self.out.push(Record {
            seq: 0,
            dir,
            path: path.to_vec(),
            op,
        });
    }

    fn describe(&mut self, c: Change) {
        tracing::trace!(
            seq = c.seq,
            root = c.root,
            path = %c.path.escape_ascii(),
            op = c.op.name(),
            to = %match &c.op {
                Op::Rename { new_path } | Op::Exchange { new_path } | Op::Link { new_path } => {
                    new_path.escape_ascii().to_string()
                }
                _ => String::new(),
            },
            ino = ?c.ino,
            "shipping a change"
        );
        if self.root_fd(c.root).is_none() {
            return;
        }
        let at = At {
            root: c.root,
            rel: &c.path,
            ino: c.ino,
        };
        match c.op {
            Op::Write { offset, len } => {
                if !self.ship_range(&at, offset, len, false) {
                    self.moved_on_if(c.root, c.ino);
                }
            }
            Op::Verify => {
                if self.ship_range(&at, 0, u64::MAX, true) {
                    self.attrs_or_later(c.root, &c.path, c.ino);
                } else {
                    self.moved_on_if(c.root, c.ino);
                }
            }
            Op::Truncate { size } => self.push(c.root, &c.path, WireOp::Truncate { size }),
            Op::Create { kind, target, rdev } => {
                let attrs = match self.attrs(c.root, &c.path, c.ino) {
                    Some(a) => a,
                    None => {
                        // Gone from this name already (or the name holds another
                        // entry by now): created private, and given its attributes
                        // once found under its next name.
                        if let Some(ino) = c.ino {
                            self.attrs_later.push((c.root, ino));
                        }
                        Attrs {
                            mode: if kind == Kind::Dir { 0o700 } else { 0o600 },
                            ..Attrs::default()
                        }
                    }
                };
                let op = WireOp::Create {
                    kind: entry_kind(kind),
                    attrs,
                    target,
                    rdev,
                };
                self.push(c.root, &c.path, op);
            }
            Op::Remove { .. } => self.push(c.root, &c.path, WireOp::Remove),
            Op::Rename { new_path } => self.push(c.root, &c.path, WireOp::Rename { new_path }),
            Op::Exchange { new_path } => {
                self.push(c.root, &c.path, WireOp::Exchange { new_path });
            }
            Op::Link { new_path } => self.push(c.root, &c.path, WireOp::Link { new_path }),
            Op::Attr => self.attrs_or_later(c.root, &c.path, c.ino),
            Op::Sync { .. } => self.push(c.root, &c.path, WireOp::Barrier),
            // A rescan is announced by this record; the records that follow it
            // describe every difference it found.
            Op::Rescan => {}
        }
    }

    fn attrs_or_later(&mut self, root: RootId, rel: &[u8], ino: Option<u64>) {
        if !self.push_attrs(root, rel, ino)
            && let Some(ino) = ino
        {
            self.attrs_later.push((root, ino));
        }
    }

    fn moved_on_if(&mut self, root: RootId, ino: Option<u64>) {
        tracing::trace!(root, ?ino, "moved on before it could be read");
        if let Some(ino) = ino {
            self.moved_on.push((root, ino));
        }
    }

    /// Ships `[offset, offset+len)` of the file (clipped to its size), holes as
    /// punches; with `whole`, first sets the size. Returns false when the file at
    /// `full` is not the inode the record was about.
    fn ship_range(&mut self, at: &At<'_>, offset: u64, len: u64, whole: bool) -> bool {
        let At { root, rel, ino } = *at;
        let Some(root_fd) = self.root_fd(root) else {
            return false;
        };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let Ok(file) = open_beneath(root_fd, rel, flags).map(File::from) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        if !meta.is_file() || ino.is_some_and(|i| i != meta.ino()) {
            return false;
        }
        let size = meta.len();
        if whole {
            self.push(root, rel, WireOp::Truncate { size });
        }
        let end = offset.saturating_add(len).min(size);
        // Whether the range read ends with a hole at the end of the file.
        let mut hole_at_end = false;
        let read = read_segments(&file, offset, end, &mut |off, seg| match seg {
            Segment::Data(data) => {
                hole_at_end = false;
                self.push(root, rel, WireOp::Write { offset: off, data });
            }
            Segment::Hole(len) => {
                hole_at_end = off.saturating_add(len) == size;
                self.push(root, rel, WireOp::Punch { offset: off, len });
            }
        });
        match read {
            Ok(()) => {
                if !whole && hole_at_end {
                    // A punch keeps the copy's size and a write only extends it to
                    // the end of its data, so a range that ends in a hole at the end
                    // of the file (fallocate, a hole punched at the end, unwritten
                    // extents) would leave the copy shorter: the size, read with the
                    // data, is said too.
                    self.push(root, rel, WireOp::Truncate { size });
                }
                true
            }
            Err(e) => {
                tracing::debug!(path = %String::from_utf8_lossy(rel), error = %e, "cannot read changed range");
                false
            }
        }
    }
}

impl Sink for Shipper {
    fn emit(&mut self, change: Change) -> std::io::Result<()> {
        self.describe(change);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a record says besides its path, for traces (never data).
fn detail(op: &WireOp) -> String {
    match op {
        WireOp::Write { offset, data } => format!("{offset}+{}", data.len()),
        WireOp::Punch { offset, len } => format!("{offset}+{len}"),
        WireOp::Truncate { size } => size.to_string(),
        WireOp::Create { attrs, .. } | WireOp::SetAttrs(attrs) => {
            format!("mode {:o} owner {}:{}", attrs.mode, attrs.uid, attrs.gid)
        }
        WireOp::Rename { new_path } | WireOp::Exchange { new_path } | WireOp::Link { new_path } => {
            new_path.escape_ascii().to_string()
        }
        WireOp::Remove | WireOp::Barrier => String::new(),
    }
}

/// Part of a file's range.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment {
    Data(Vec<u8>),
    Hole(u64),
}

/// Reads `[start, end)` of `file` as data chunks of at most [`MAX_CHUNK_BYTES`] and
/// holes, so that sparse files stay sparse on the peer and holes cost no bytes.
pub fn read_segments(
    file: &File,
    start: u64,
    end: u64,
    out: &mut dyn FnMut(u64, Segment),
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut pos = start;
    while pos < end {
        let data_at = seek(file.as_raw_fd(), pos, libc::SEEK_DATA)?
            .unwrap_or(end)
            .min(end);
        if data_at > pos {
            out(pos, Segment::Hole(data_at - pos));
            pos = data_at;
            continue;
        }
        let hole_at = seek(file.as_raw_fd(), pos, libc::SEEK_HOLE)?
            .unwrap_or(end)
            .min(end);
        let hole_at = hole_at.max(pos + 1).min(end);
        while pos < hole_at {
            let n = (hole_at - pos).min(MAX_CHUNK_BYTES as u64);
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(MAX_CHUNK_BYTES)];
            let got = file.read_at(&mut buf, pos)?;
            if got == 0 {
                // The file shrank under us: a truncate record follows.
                return Ok(());
            }
            buf.truncate(got);
            out(pos, Segment::Data(buf));
            pos += got as u64;
        }
    }
    Ok(())
}

/// lseek(2) for SEEK_DATA / SEEK_HOLE: `None` when there is no data after `pos`.
fn seek(fd: i32, pos: u64, whence: i32) -> std::io::Result<Option<u64>> {
    let Ok(off) = libc::off_t::try_from(pos) else {
        return Ok(None);
    };
    // SAFETY: lseek only reads its integer arguments.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r.unsigned_abs()))
}

/// The wire kind of an index kind.
#[must_use]
pub fn entry_kind(k: Kind) -> EntryKind {
    match k {
        Kind::Block => EntryKind::BlockDevice,
        Kind::Char => EntryKind::CharDevice,
        Kind::Dir => EntryKind::Dir,
        Kind::Fifo => EntryKind::Fifo,
        Kind::File => EntryKind::File,
        Kind::Socket => EntryKind::Socket,
        Kind::Symlink => EntryKind::Symlink,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn sparse_ranges_become_data_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let mut f = File::create(&p).expect("create");
        f.write_all(&[1u8; 4096]).expect("write");
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        f.write_all(&[2u8; 4096]).expect("write");
        drop(f);
        let f = File::open(&p).expect("open");
        let mut segs = Vec::new();
        read_segments(&f, 0, (1 << 20) + 4096, &mut |o, s| segs.push((o, s))).expect("read");
        assert_eq!(
            segs.len(),
            3,
            "{:?}",
            segs.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        assert_eq!(segs[0], (0, Segment::Data(vec![1u8; 4096])));
        assert_eq!(segs[1], (4096, Segment::Hole((1 << 20) - 4096)));
        assert_eq!(segs[2], (1 << 20, Segment::Data(vec![2u8; 4096])));
    }

    #[test]
    fn large_ranges_are_chunked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; MAX_CHUNK_BYTES * 2 + 10]).expect("write");
        let f = File::open(&p).expect("open");
        let mut lens = Vec::new();
        read_segments(&f, 5, u64::MAX, &mut |o, s| {
            if let Segment::Data(d) = s {
                lens.push((o, d.len()));
            }
        })
        .expect("read");
        let total: usize = lens.iter().map(|l| l.1).sum();
        assert_eq!(total, MAX_CHUNK_BYTES * 2 + 5);
        assert!(lens.iter().all(|l| l.1 <= MAX_CHUNK_BYTES));
        assert_eq!(lens[0].0, 5);
    }

    #[test]
    fn a_file_that_moved_on_is_handed_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b"), b"x").expect("write");
        let mut s = Shipper::new(vec![dir.path().to_path_buf()]);
        s.emit(Change {
            seq: 1,
            root: 0,
            path: b"a".to_vec(),
            op: Op::Write { offset: 0, len: 1 },
            ino: Some(42),
        })
        .expect("emit");
        assert!(s.take().records.is_empty());
        assert_eq!(s.take_moved_on(), vec![(0, 42)]);
    }

    fn change(path: &[u8], op: Op, ino: Option<u64>) -> Change {
        Change {
            seq: 0,
            root: 0,
            path: path.to_vec(),
            op,
            ino,
        }
    }

    fn ino(p: &std::path::Path) -> Option<u64> {
        Some(std::fs::metadata(p).expect("stat").ino())
    }

    /// Writes shipped as holes never extended the copy: a file whose data was
    /// punched out, or that fallocate(2) made longer, stayed shorter on the peer.
    #[test]
    fn a_range_that_ends_in_a_hole_gives_the_copy_the_file_size() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        // `f`: written, then its whole block punched out (the size stays; a punch
        // of part of a block would only zero it).
        let f = src.path().join("f");
        std::fs::write(&f, vec![7u8; 1799]).expect("write");
        let fd = File::options().write(true).open(&f).expect("open");
        // SAFETY: fallocate on a descriptor we own, with integer arguments only.
        let rc = unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                4096,
            )
        };
        assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
        // `g`: data, then made longer by fallocate (unwritten space reads as a hole).
        let g = src.path().join("g");
        std::fs::write(&g, vec![9u8; 4096]).expect("write");
        let fd = File::options().write(true).open(&g).expect("open");
        // SAFETY: as above.
        let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&fd), 0, 4096, 65536) };
        assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());

        let mut s = Shipper::new(vec![src.path().to_path_buf()]);
        for (name, p, size) in [(b"f", &f, 1799), (b"g", &g, 4096 + 65536)] {
            let create = Op::Create {
                kind: Kind::File,
                target: None,
                rdev: 0,
            };
            s.emit(change(name, create, ino(p))).expect("emit");
            let write = Op::Write {
                offset: 0,
                len: size,
            };
            s.emit(change(name, write, ino(p))).expect("emit");
        }
        let batch = s.take();
        assert!(
            batch
                .records
                .iter()
                .any(|r| r.path == b"f" && r.op == WireOp::Truncate { size: 1799 }),
            "the size of a file that ends in a hole is said"
        );
        let mut a = crate::apply::Applier::open(dst.path()).expect("applier");
        for r in &batch.records {
            a.apply(&r.path, &r.op).expect("apply");
        }
        for name in ["f", "g"] {
            let want = std::fs::read(src.path().join(name)).expect("read");
            let got = std::fs::read(dst.path().join(name)).expect("read");
            assert_eq!(got.len(), want.len(), "size of {name}");
            assert!(got == want, "content of {name}");
        }
    }

    /// A held call's barrier (added by the replication core) covers what came
    /// before it: the probes seeing that fsync return right after make no other.
    #[test]
    fn a_durability_point_right_after_a_held_calls_barrier_makes_no_barrier() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        let f_ino = ino(&dir.path().join("f"));
        let mut s = Shipper::new(vec![dir.path().to_path_buf()]);
        s.emit(change(b"f", Op::Write { offset: 0, len: 1 }, f_ino))
            .expect("emit");
        assert_eq!(s.take().records.len(), 1);
        s.barrier_follows();
        s.emit(change(b"f", Op::Sync { all: false }, f_ino))
            .expect("emit");
        assert!(s.take().records.is_empty());
    }

    /// The peer's syncfs(2) at each barrier is a sync-all the probes of an agent on
    /// the same kernel report (the lab): a barrier for each made a self-sustaining
    /// flood of empty barriers.
    #[test]
    fn a_durability_point_with_nothing_new_since_the_last_makes_no_barrier() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"x").expect("write");
        let f_ino = ino(&dir.path().join("f"));
        let mut s = Shipper::new(vec![dir.path().to_path_buf()]);
        let sync = || change(b"", Op::Sync { all: true }, None);
        s.emit(sync()).expect("emit");
        s.emit(sync()).expect("emit");
        assert_eq!(s.take().records.len(), 1, "one barrier");
        s.emit(sync()).expect("emit");
        assert!(s.take().records.is_empty(), "none across batches either");
        s.emit(change(b"f", Op::Write { offset: 0, len: 1 }, f_ino))
            .expect("emit");
        s.emit(sync()).expect("emit");
        s.emit(sync()).expect("emit");
        let ops: Vec<WireOp> = s.take().records.into_iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            vec![
                WireOp::Write {
                    offset: 0,
                    data: b"x".to_vec()
                },
                WireOp::Barrier
            ]
        );
    }

    /// A name can hold another entry by the time its record is shipped (the entry
    /// was exchanged or renamed over right after it was described): that entry's
    /// attributes are not the ones the record is about.
    #[test]
    fn attributes_are_read_only_from_the_inode_the_record_names() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"").expect("write");
        std::fs::write(&b, b"").expect("write");
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let mut s = Shipper::new(vec![dir.path().to_path_buf()]);
        // `b`'s creation, described under the name `a` that now holds another file.
        let create = Op::Create {
            kind: Kind::File,
            target: None,
            rdev: 0,
        };
        s.emit(change(b"a", create, ino(&b))).expect("emit");
        let records = s.take().records;
        assert!(
            matches!(&records[..], [Record { op: WireOp::Create { attrs, .. }, .. }] if attrs.mode == 0o600),
            "created private, not with a's attributes: {records:?}"
        );
        let later = s.take_attrs_later();
        assert_eq!(later, vec![(0, ino(&b).expect("ino"))]);
        assert!(!s.push_attrs(0, b"a", ino(&b)), "a is not b");
        assert!(s.push_attrs(0, b"b", ino(&b)), "found under its next name");
        let records = s.take().records;
        assert!(
            matches!(&records[..], [Record { op: WireOp::SetAttrs(attrs), .. }] if attrs.mode == 0o604),
            "{records:?}"
        );
    }
}
