//! The capture oracle's consumer: replays the `tandem capture --json` stream into shadow
//! copies of the watched trees, reading every byte and name from the source, exactly as
//! docs/capture-stream.md prescribes.
//!
//! The replay is deliberately strict: it only does what a record says (a `write` to a
//! file the stream never created fails instead of creating it), so that a record the
//! engine forgot shows up as a difference at the end rather than being papered over.
//! Failures caused by the source having moved on (the file was renamed or removed since
//! the record was emitted) are normal and counted as "tolerated": the records that
//! describe those later changes follow, and the stream converges.
//!
//! All shadow paths are resolved with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so a
//! replay can never write outside a shadow root through a symlink.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use serde_json::Value;

use crate::sys;

/// One parsed record of the capture stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Global sequence number.
    pub seq: u64,
    /// The operation (`create`, `write`, ...).
    pub op: String,
    /// The watched root as given on the command line (absent on `ready`).
    pub root: Option<String>,
    /// Exact bytes of `path` (from `path_hex` when present).
    pub path: Vec<u8>,
    /// Exact bytes of `new_path` for rename, exchange and link.
    pub new_path: Option<Vec<u8>>,
    /// `kind` of create and remove.
    pub kind: Option<String>,
    /// `offset` of write.
    pub offset: Option<u64>,
    /// `len` of write.
    pub len: Option<u64>,
    /// `size` of truncate.
    pub size: Option<u64>,
    /// `roots` of ready.
    pub roots: Vec<String>,
    /// `target` of a symlink create (exact bytes).
    pub target: Option<Vec<u8>>,
    /// `rdev` of a char or block create.
    pub rdev: Option<u64>,
    /// `ino` of the file whose data a write, truncate or verify describes.
    pub ino: Option<u64>,
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad hex {s:?}"))
        })
        .collect()
}

fn name_field(v: &Value, plain: &str, hex: &str) -> Result<Option<Vec<u8>>, String> {
    if let Some(h) = v.get(hex).and_then(Value::as_str) {
        return unhex(h).map(Some);
    }
    match v.get(plain) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
        Some(other) => Err(format!("{plain} is not a string: {other}")),
    }
}

impl Record {
    /// Parses one JSON line of the stream.
    pub fn parse(line: &str) -> Result<Record, String> {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:?}"))?;
        let seq = v
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no seq: {line}"))?;
        let op = v
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no op: {line}"))?
            .to_string();
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let roots = v
            .get("roots")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let path = name_field(&v, "path", "path_hex")?;
        if op != "ready" && path.is_none() {
            return Err(format!("no path: {line}"));
        }
        Ok(Record {
            seq,
            op,
            root: s("root"),
            path: path.unwrap_or_default(),
            new_path: name_field(&v, "new_path", "new_path_hex")?,
            kind: s("kind"),
            offset: u("offset"),
            len: u("len"),
            size: u("size"),
            roots,
            target: name_field(&v, "target", "target_hex")?,
            rdev: u("rdev"),
            ino: u("ino"),
        })
    }
}

/// What the replay did, per op.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    /// Records replayed successfully, per op.
    pub applied: BTreeMap<String, u64>,
    /// Records whose replay failed because the source had moved on, per op.
    pub tolerated: BTreeMap<String, u64>,
    /// A few examples of tolerated failures (for diagnosis).
    pub tolerated_examples: Vec<String>,
    /// Violations of the stream format itself: never acceptable.
    pub protocol_errors: Vec<String>,
    /// Last sequence number seen.
    pub last_seq: u64,
    /// Failed work carried to a later name and applied there, per op.
    pub recovered: u64,
    /// Roots announced by `ready`, if it came.
    pub ready_roots: Option<Vec<String>>,
}

struct Pair {
    source: OwnedFd,
    shadow: OwnedFd,
    /// Work that failed because the source name had already moved on, keyed by the
    /// shadow name it applies to. The stream names paths, not inodes: when a consumer
    /// lags, `create a; write a; rename a b` finds no `a` in the source, and the bytes
    /// written to it are only readable as `b`. The consumer therefore carries the failed
    /// work along with the renames that follow and retries it under the new name.
    pending: BTreeMap<Vec<u8>, Pending>,
    /// Where each inode of the source is, when the source no longer changes
    /// ([`Shadow::index_sources`]): data records that name their inode are read
    /// there, whatever name the file had when the record was made.
    by_ino: Option<HashMap<u64, Vec<u8>>>,
}

/// Replay work waiting for a rename to make its source readable again.
#[derive(Debug, Default, Clone)]
struct Pending {
    ranges: Vec<(u64, u64)>,
    whole: bool,
    attr: bool,
}

impl Pending {
    fn merge(&mut self, o: Pending) {
        self.ranges.extend(o.ranges);
        self.whole |= o.whole;
        self.attr |= o.attr;
    }
}

/// Whether `key` is `prefix` or lies beneath it; returns the rest (with its `/`).
fn under<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = key.strip_prefix(prefix)?;
    (rest.is_empty() || rest.first() == Some(&b'/')).then_some(rest)
}

fn rekey(pending: &mut BTreeMap<Vec<u8>, Pending>, moves: &[(&[u8], &[u8])]) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = pending.keys().cloned().collect();
    let mut taken = Vec::new();
    for k in keys {
        for (from, to) in moves {
            if let Some(rest) = under(&k, from) {
                let mut nk = to.to_vec();
                nk.extend_from_slice(rest);
                if let Some(v) = pending.remove(&k) {
                    taken.push((nk, v));
                }
                break;
            }
        }
    }
    let mut moved = Vec::new();
    for (k, v) in taken {
        pending.entry(k.clone()).or_default().merge(v);
        moved.push(k);
    }
    moved
}

fn drop_under(pending: &mut BTreeMap<Vec<u8>, Pending>, prefix: &[u8]) {
    pending.retain(|k, _| under(k, prefix).is_none());
}

/// Whether the source no longer has a regular file (or, for `attr`, anything of the
/// shadow's kind) at `rel`: then a failure is the source having moved on.
fn source_moved(p: &Pair, rel: &[u8], need_reg: bool) -> bool {
    match sys::lstat_rel(&p.source, rel) {
        Err(_) => true,
        Ok(st) => {
            if need_reg {
                !is_reg(&st)
            } else {
                sys::lstat_rel(&p.shadow, rel)
                    .is_ok_and(|d| sys::file_type(d.st_mode) != sys::file_type(st.st_mode))
            }
        }
    }
}

/// Retries pending work for `key`; what still fails stays pending.
fn retry(p: &mut Pair, key: &[u8]) {
    let Some(mut w) = p.pending.remove(key) else {
        return;
    };
    if w.whole {
        w.whole = copy_whole(p, key).is_err();
        if !w.whole {
            w.ranges.clear();
        }
    }
    w.ranges
        .retain(|&(off, len)| write(p, key, off, len).is_err());
    if w.attr {
        w.attr = copy_attr(p, key).is_err();
    }
    if w.whole || w.attr || !w.ranges.is_empty() {
        p.pending.insert(key.to_vec(), w);
    }
}

/// Replays records into one shadow directory per watched root.
pub struct Shadow {
    pairs: HashMap<String, Pair>,
    /// What happened so far.
    pub stats: ReplayStats,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn is_dir(st: &libc::stat) -> bool {
    sys::file_type(st.st_mode) == libc::S_IFDIR
}

fn is_reg(st: &libc::stat) -> bool {
    sys::file_type(st.st_mode) == libc::S_IFREG
}

/// Opens a regular file beneath `root` (never through a symlink); `EINVAL` for anything
/// that is not a regular file, so a FIFO is never opened for writing.
fn open_reg(root: &OwnedFd, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = sys::open_beneath(root, rel, flags | libc::O_NONBLOCK)?;
    if !is_reg(&sys::fstat(&fd)?) {
        return Err(errno(libc::EINVAL));
    }
    Ok(fd)
}

/// Removes `rel` beneath `root` whatever it is, directories recursively.
fn remove_all(root: &OwnedFd, rel: &[u8]) -> io::Result<()> {
    let (dir, name) = sys::parent_of(root, rel)?;
    let st = sys::lstat_at(&dir, &name)?;
    if is_dir(&st) {
        let d = sys::open_beneath(root, rel, libc::O_PATH | libc::O_DIRECTORY)?;
        for child in sys::list_dir(&d)? {
            remove_all(root, &sys::join(rel, &child))?;
        }
    }
    sys::unlink_at(&dir, &name, is_dir(&st))
}

fn sync_xattrs(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let want = sys::user_xattrs(src)?;
    let have = sys::user_xattrs(dst)?;
    for (k, v) in &want {
        if !have.iter().any(|(hk, hv)| hk == k && hv == v) {
            sys::set_xattr(dst, k, v)?;
        }
    }
    for (k, _) in &have {
        if !want.iter().any(|(wk, _)| wk == k) {
            sys::remove_xattr(dst, k)?;
        }
    }
    Ok(())
}

/// Copies mode, owner, group, `user.*` xattrs and times of `rel` from source to shadow.
fn copy_attr(p: &Pair, rel: &[u8]) -> io::Result<()> {
    copy_attr_from(p, rel, rel)
}

/// Copies mode, owner, group, `user.*` xattrs and times of source `src_rel` to shadow
/// `rel`.
fn copy_attr_from(p: &Pair, src_rel: &[u8], rel: &[u8]) -> io::Result<()> {
    let sst = sys::lstat_rel(&p.source, src_rel)?;
    let dst = sys::lstat_rel(&p.shadow, rel)?;
    if sys::file_type(sst.st_mode) != sys::file_type(dst.st_mode) {
        // The name now holds something else in the source; later records say what.
        return Err(errno(libc::ESTALE));
    }
    let ft = sys::file_type(sst.st_mode);
    if rel.is_empty() || src_rel.is_empty() {
        // The root itself: go through a descriptor (it has no parent in the tree).
        let s = sys::open_beneath(&p.source, src_rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let d = sys::open_beneath(&p.shadow, rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // SAFETY: fchown/fchmod on valid descriptors have no memory effects.
        unsafe {
            if libc::fchown(d.as_raw_fd(), sst.st_uid, sst.st_gid) != 0
                || libc::fchmod(d.as_raw_fd(), sst.st_mode & 0o7777) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        return sync_xattrs(&s, &d);
    }
    let (sdir, sname) = sys::parent_of(&p.source, src_rel)?;
    let (ddir, dname) = sys::parent_of(&p.shadow, rel)?;
    // Owner first: chown clears setuid/setgid, so the mode must be set after it.
    sys::lchown_at(&ddir, &dname, sst.st_uid, sst.st_gid)?;
    if ft != libc::S_IFLNK {
        sys::chmod_at(&ddir, &dname, sst.st_mode)?;
    }
    if ft == libc::S_IFREG || ft == libc::S_IFDIR {
        let s = sys::open_at(&sdir, &sname, libc::O_RDONLY | libc::O_NONBLOCK)?;
        let d = sys::open_at(&ddir, &dname, libc::O_RDONLY | libc::O_NONBLOCK)?;
        sync_xattrs(&s, &d)?;
    }
    sys::set_times_at(&ddir, &dname, &sst)
}

/// Copies the whole content of a regular file and sets the shadow's size to the
/// source's.
fn copy_whole(p: &Pair, rel: &[u8]) -> io::Result<()> {
    copy_whole_from(p, rel, rel)
}

/// Copies the whole of source `src_rel` into shadow `rel`.
fn copy_whole_from(p: &Pair, src_rel: &[u8], rel: &[u8]) -> io::Result<()> {
    let src = open_reg(&p.source, src_rel, libc::O_RDONLY)?;
    let dst = open_reg(&p.shadow, rel, libc::O_WRONLY)?;
    let size = sys::fstat(&src)?.st_size.unsigned_abs();
    sys::copy_range_sparse(&src, &dst, 0, size)?;
    sys::ftruncate(&dst, size)
}

/// Makes `rel` in the shadow an entry of `kind`, taking symlink targets and device
/// numbers from the source. An existing entry of the same kind is kept (a directory may
/// already have children); anything else there is removed first. A `file` is always a
/// fresh, empty inode: a create is a new inode, and its content follows as writes.
/// Makes a new entry. The record's `target` and `rdev` are used when present, so that
/// a name that has moved on in the source can still be created; otherwise they are
/// read from the source.
fn create(
    p: &Pair,
    rel: &[u8],
    kind: &str,
    target: Option<&[u8]>,
    rdev: Option<u64>,
) -> io::Result<()> {
    let (ddir, dname) = sys::parent_of(&p.shadow, rel)?;
    let existing = match sys::lstat_at(&ddir, &dname) {
        Ok(st) => Some(st),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(e),
    };
    let keep = |st: &libc::stat| crate::compare::kind_name(st.st_mode) == kind;
    match kind {
        "file" => {
            if existing.is_some() {
                remove_all(&p.shadow, rel)?;
            }
            drop(sys::open_at(
                &ddir,
                &dname,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            )?);
        }
        "dir" => {
            if let Some(st) = existing {
                if !keep(&st) {
                    remove_all(&p.shadow, rel)?;
                    sys::mkdir_at(&ddir, &dname, 0o700)?;
                }
            } else {
                sys::mkdir_at(&ddir, &dname, 0o700)?;
            }
        }
        "symlink" => {
            let target = match target {
                Some(t) => t.to_vec(),
                None => {
                    let (sdir, sname) = sys::parent_of(&p.source, rel)?;
                    sys::readlink_at(&sdir, &sname)?
                }
            };
            if existing.is_some() {
                let same = existing.as_ref().is_some_and(keep)
                    && sys::readlink_at(&ddir, &dname)? == target;
                if same {
                    return Ok(());
                }
                remove_all(&p.shadow, rel)?;
            }
            sys::symlink_at(&target, &ddir, &dname)?;
        }
        "fifo" | "socket" | "char" | "block" => {
            let ft = match kind {
                "fifo" => libc::S_IFIFO,
                "socket" => libc::S_IFSOCK,
                "char" => libc::S_IFCHR,
                _ => libc::S_IFBLK,
            };
            let rdev = if let (Some(d), true) = (rdev, ft == libc::S_IFCHR || ft == libc::S_IFBLK) {
                d
            } else if ft == libc::S_IFCHR || ft == libc::S_IFBLK {
                let sst = sys::lstat_rel(&p.source, rel)?;
                if sys::file_type(sst.st_mode) != ft {
                    return Err(errno(libc::ESTALE));
                }
                sst.st_rdev
            } else {
                0
            };
            if let Some(st) = existing {
                if keep(&st) && st.st_rdev == rdev {
                    return Ok(());
                }
                remove_all(&p.shadow, rel)?;
            }
            sys::mknod_at(&ddir, &dname, ft | 0o600, rdev)?;
        }
        other => return Err(io::Error::other(format!("unknown create kind {other:?}"))),
    }
    Ok(())
}

/// The source name to read a record's data from: where its inode is now when the
/// source has been indexed by inode, the record's own name otherwise. `None` when
/// the inode no longer exists (its data is gone and nothing needs it).
fn source_name<'a>(p: &'a Pair, rel: &'a [u8], ino: Option<u64>) -> Option<&'a [u8]> {
    match (&p.by_ino, ino) {
        (Some(map), Some(i)) => map.get(&i).map(Vec::as_slice),
        _ => Some(rel),
    }
}

fn write(p: &Pair, rel: &[u8], offset: u64, len: u64) -> io::Result<()> {
    write_from(p, rel, rel, offset, len)
}

/// Copies `[offset, offset+len)` of source `src_rel` into shadow `rel`.
fn write_from(p: &Pair, src_rel: &[u8], rel: &[u8], offset: u64, len: u64) -> io::Result<()> {
    let src = open_reg(&p.source, src_rel, libc::O_RDONLY)?;
    let dst = open_reg(&p.shadow, rel, libc::O_WRONLY)?;
    let size = sys::fstat(&src)?.st_size.unsigned_abs();
    let end = offset.saturating_add(len).min(size);
    if offset >= end {
        return Ok(());
    }
    sys::copy_range_sparse(&src, &dst, offset, end)
}

fn link(p: &Pair, rel: &[u8], new_rel: &[u8], seq: u64) -> io::Result<()> {
    let (odir, oname) = sys::parent_of(&p.shadow, rel)?;
    let (ndir, nname) = sys::parent_of(&p.shadow, new_rel)?;
    match sys::link_at(&odir, &oname, &ndir, &nname) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // "Make new_path a hard link to path", replacing what it named: link under a
            // temporary name and rename it over, as `ln -f` would.
            let tmp = sys::cstr(format!(".tandem-link-{seq}").as_bytes())?;
            sys::link_at(&odir, &oname, &ndir, &tmp)?;
            sys::rename_at(&ndir, &tmp, &ndir, &nname, 0)
        }
        other => other,
    }
}

impl Shadow {
    /// `pairs`: (root exactly as passed to `--watch`, source directory, shadow directory).
    pub fn new(pairs: &[(String, &Path, &Path)]) -> io::Result<Shadow> {
        let mut map = HashMap::new();
        for (root, src, shd) in pairs {
            map.insert(
                root.clone(),
                Pair {
                    source: sys::open_root(src)?,
                    shadow: sys::open_root(shd)?,
                    pending: BTreeMap::new(),
                    by_ino: None,
                },
            );
        }
        Ok(Shadow {
            pairs: map,
            stats: ReplayStats::default(),
        })
    }

    /// Parses and replays one line of the stream.
    /// Indexes every source by inode. Call it once the source no longer changes
    /// (after capture has stopped): records that name an inode are then read from
    /// wherever that inode is, which makes a replay after the fact exact.
    pub fn index_sources(&mut self) -> io::Result<()> {
        for pair in self.pairs.values_mut() {
            let mut map = HashMap::new();
            let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
            while let Some(dir) = stack.pop() {
                let fd = sys::open_beneath(&pair.source, &dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
                for name in sys::list_dir(&fd)? {
                    let rel = sys::join(&dir, &name);
                    let st = sys::lstat_rel(&pair.source, &rel)?;
                    if is_dir(&st) {
                        stack.push(rel.clone());
                    }
                    map.entry(st.st_ino).or_insert(rel);
                }
            }
            pair.by_ino = Some(map);
        }
        Ok(())
    }

    pub fn replay_line(&mut self, line: &str) -> Option<Record> {
        match Record::parse(line) {
            Ok(r) => {
                self.replay(&r);
                Some(r)
            }
            Err(e) => {
                self.stats.protocol_errors.push(e);
                None
            }
        }
    }

    /// Replays one record, counting the outcome.
    pub fn replay(&mut self, r: &Record) {
        // `ready` is numbered 0; every change after it counts from 1.
        let ready = r.op == "ready" && r.seq == 0 && self.stats.last_seq == 0;
        if r.seq <= self.stats.last_seq && !ready {
            self.stats.protocol_errors.push(format!(
                "seq {} after {}: not strictly increasing",
                r.seq, self.stats.last_seq
            ));
        }
        self.stats.last_seq = self.stats.last_seq.max(r.seq);
        match self.apply(r) {
            Ok(()) => *self.stats.applied.entry(r.op.clone()).or_default() += 1,
            Err(Fault::Protocol(e)) => self.stats.protocol_errors.push(e),
            Err(Fault::Io(e)) => {
                *self.stats.tolerated.entry(r.op.clone()).or_default() += 1;
                // TANDEM_ORACLE_TRACE=FILE lists every tolerated failure, for debugging.
                if let Some(path) = std::env::var_os("TANDEM_ORACLE_TRACE")
                    && let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                {
                    use std::io::Write;
                    let _ = writeln!(
                        f,
                        "seq {} {} {}: {e}",
                        r.seq,
                        r.op,
                        crate::compare::show(&r.path)
                    );
                }
                if self.stats.tolerated_examples.len() < 50 {
                    self.stats.tolerated_examples.push(format!(
                        "seq {} {} {}{}: {e}",
                        r.seq,
                        r.op,
                        crate::compare::show(&r.path),
                        r.new_path
                            .as_ref()
                            .map(|n| format!(" -> {}", crate::compare::show(n)))
                            .unwrap_or_default()
                    ));
                }
            }
        }
    }

    fn apply(&mut self, r: &Record) -> Result<(), Fault> {
        if r.op == "ready" {
            if self.stats.ready_roots.is_some() {
                return Err(Fault::Protocol(format!("second ready at seq {}", r.seq)));
            }
            self.stats.ready_roots = Some(r.roots.clone());
            return Ok(());
        }
        let root = r
            .root
            .as_ref()
            .ok_or_else(|| Fault::Protocol(format!("seq {}: no root", r.seq)))?;
        let p = self
            .pairs
            .get_mut(root)
            .ok_or_else(|| Fault::Protocol(format!("seq {}: unknown root {root:?}", r.seq)))?;
        let need = |v: Option<u64>, f: &str| {
            v.ok_or_else(|| Fault::Protocol(format!("seq {} {}: no {f}", r.seq, r.op)))
        };
        let new_path = || {
            r.new_path
                .clone()
                .ok_or_else(|| Fault::Protocol(format!("seq {} {}: no new_path", r.seq, r.op)))
        };
        let rel = &r.path[..];
        let res = apply_op(p, r, rel, need, new_path);
        if let Err(Fault::Io(_)) = &res {
            // Carry source-side failures along with later renames.
            let moved_on = |need_reg| source_moved(p, rel, need_reg);
            let w = match r.op.as_str() {
                "write" if moved_on(true) => Some(Pending {
                    ranges: vec![(r.offset.unwrap_or(0), r.len.unwrap_or(0))],
                    ..Pending::default()
                }),
                "verify" if moved_on(true) => Some(Pending {
                    whole: true,
                    ..Pending::default()
                }),
                "attr" if moved_on(false) => Some(Pending {
                    attr: true,
                    ..Pending::default()
                }),
                _ => None,
            };
            if let Some(w) = w
                && sys::lstat_rel(&p.shadow, rel).is_ok()
            {
                p.pending.entry(rel.to_vec()).or_default().merge(w);
            }
        }
        if res.is_ok() {
            match r.op.as_str() {
                "create" => {
                    drop_under(&mut p.pending, rel);
                    // The metadata of a new entry may only be readable under a later
                    // name (see `Pair::pending`).
                    let copied = match source_name(p, rel, r.ino) {
                        Some(src) => copy_attr_from(p, src, rel),
                        None => Ok(()),
                    };
                    if copied.is_err() && sys::lstat_rel(&p.shadow, rel).is_ok() {
                        p.pending.entry(rel.to_vec()).or_default().attr = true;
                    }
                }
                "remove" => drop_under(&mut p.pending, rel),
                "rename" | "exchange" => {
                    let np = r.new_path.clone().unwrap_or_default();
                    if r.op == "rename" {
                        drop_under(&mut p.pending, &np);
                    }
                    let moves: Vec<(&[u8], &[u8])> = if r.op == "rename" {
                        vec![(rel, &np)]
                    } else {
                        vec![(rel, &np), (&np, rel)]
                    };
                    let moved = rekey(&mut p.pending, &moves);
                    let n = moved.len();
                    for k in moved {
                        retry(p, &k);
                    }
                    let left = moves
                        .iter()
                        .map(|(_, to)| p.pending.keys().filter(|k| under(k, to).is_some()).count())
                        .sum::<usize>();
                    self.stats.recovered += n.saturating_sub(left) as u64;
                }
                _ => {}
            }
        }
        res
    }
}

fn apply_op(
    p: &mut Pair,
    r: &Record,
    rel: &[u8],
    need: impl Fn(Option<u64>, &str) -> Result<u64, Fault>,
    new_path: impl Fn() -> Result<Vec<u8>, Fault>,
) -> Result<(), Fault> {
    {
        let res = match r.op.as_str() {
            "create" => {
                let kind = r
                    .kind
                    .clone()
                    .ok_or_else(|| Fault::Protocol(format!("seq {} create: no kind", r.seq)))?;
                if !matches!(
                    kind.as_str(),
                    "file" | "dir" | "symlink" | "fifo" | "socket" | "char" | "block"
                ) {
                    return Err(Fault::Protocol(format!("seq {}: bad kind {kind}", r.seq)));
                }
                create(p, rel, &kind, r.target.as_deref(), r.rdev)
            }
            "write" => {
                let (off, len) = (need(r.offset, "offset")?, need(r.len, "len")?);
                match source_name(p, rel, r.ino) {
                    Some(src) => write_from(p, src, rel, off, len),
                    None => Ok(()),
                }
            }
            "truncate" => {
                let size = need(r.size, "size")?;
                open_reg(&p.shadow, rel, libc::O_WRONLY).and_then(|fd| sys::ftruncate(&fd, size))
            }
            "remove" => sys::parent_of(&p.shadow, rel).and_then(|(dir, name)| {
                let st = sys::lstat_at(&dir, &name)?;
                sys::unlink_at(&dir, &name, is_dir(&st))
            }),
            "rename" | "exchange" => {
                let np = new_path()?;
                let flags = if r.op == "exchange" {
                    libc::RENAME_EXCHANGE
                } else {
                    0
                };
                sys::parent_of(&p.shadow, rel).and_then(|(odir, oname)| {
                    let (ndir, nname) = sys::parent_of(&p.shadow, &np)?;
                    sys::rename_at(&odir, &oname, &ndir, &nname, flags)
                })
            }
            "link" => link(p, rel, &new_path()?, r.seq),
            "attr" => match source_name(p, rel, r.ino) {
                Some(src) => copy_attr_from(p, src, rel),
                None => Ok(()),
            },
            "verify" => match source_name(p, rel, r.ino) {
                Some(src) => copy_whole_from(p, src, rel),
                None => Ok(()),
            },
            // The records after a rescan describe the tree again; nothing to do here.
            "rescan" => Ok(()),
            "sync" => Ok(()),
            other => {
                return Err(Fault::Protocol(format!(
                    "seq {}: unknown op {other:?}",
                    r.seq
                )));
            }
        };
        res.map_err(Fault::Io)
    }
}

enum Fault {
    Protocol(String),
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::compare_trees;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
    use std::path::PathBuf;

    struct Fx {
        _t: tempfile::TempDir,
        src: PathBuf,
        shd: PathBuf,
        sh: Shadow,
        seq: u64,
    }

    impl Fx {
        fn new() -> Fx {
            let t = tempfile::Builder::new()
                .prefix("tandem-shadow-")
                .tempdir_in("/tmp")
                .unwrap();
            let src = t.path().join("src");
            let shd = t.path().join("shd");
            fs::create_dir(&src).unwrap();
            fs::create_dir(&shd).unwrap();
            let sh = Shadow::new(&[("ROOT".to_string(), &src, &shd)]).unwrap();
            Fx {
                _t: t,
                src,
                shd,
                sh,
                seq: 0,
            }
        }

        /// Feeds one record given as JSON without seq/root.
        fn feed(&mut self, json: &str) {
            self.seq += 1;
            let mut v: Value = serde_json::from_str(json).unwrap();
            v["seq"] = self.seq.into();
            v["root"] = "ROOT".into();
            self.sh.replay_line(&v.to_string()).unwrap();
            assert!(
                self.sh.stats.protocol_errors.is_empty(),
                "{:?}",
                self.sh.stats.protocol_errors
            );
        }

        fn assert_equal(&self) {
            let d = compare_trees(&self.src, &self.shd, 20).unwrap();
            assert!(d.is_empty(), "{d:#?}");
        }

        fn tolerated(&self) -> u64 {
            self.sh.stats.tolerated.values().sum()
        }
    }

    #[test]
    fn parses_hex_names() {
        let r = Record::parse(
            r#"{"seq":3,"op":"rename","root":"/r","path":"bad\ufffd","path_hex":"626164ff","new_path":"x","kind":null}"#,
        )
        .unwrap();
        assert_eq!(r.path, b"bad\xff");
        assert_eq!(r.new_path.as_deref(), Some(&b"x"[..]));
        assert!(Record::parse(r#"{"seq":1,"op":"ready","roots":["/a"]}"#).is_ok());
        assert!(Record::parse(r#"{"op":"write"}"#).is_err());
    }

    #[test]
    fn create_write_clipped_truncate() {
        let mut fx = Fx::new();
        fs::write(fx.src.join("f"), b"0123456789").unwrap();
        fx.feed(r#"{"op":"create","path":"f","kind":"file"}"#);
        // Range larger than the file: clipped to its size.
        fx.feed(r#"{"op":"write","path":"f","offset":2,"len":100}"#);
        assert_eq!(fs::read(fx.shd.join("f")).unwrap(), b"\0\x0023456789");
        fx.feed(r#"{"op":"write","path":"f","offset":0,"len":2}"#);
        fx.assert_equal();
        // Shrink, then grow with a hole and a tail far away (sparse, beyond 4 GiB).
        let f = fs::OpenOptions::new()
            .write(true)
            .open(fx.src.join("f"))
            .unwrap();
        f.set_len(4).unwrap();
        fx.feed(r#"{"op":"truncate","path":"f","size":4}"#);
        fx.assert_equal();
        f.write_at(b"far", 5 << 30).unwrap();
        fx.feed(r#"{"op":"write","path":"f","offset":5368709120,"len":3}"#);
        fx.assert_equal();
        assert!(fs::metadata(fx.shd.join("f")).unwrap().blocks() < 1024);
    }

    #[test]
    fn create_kinds_and_attr() {
        let mut fx = Fx::new();
        let name = std::ffi::OsStr::from_bytes(b"bad\xff\xfe");
        fs::create_dir(fx.src.join(name)).unwrap();
        symlink("../t\u{e9}", fx.src.join(name).join("l")).unwrap();
        nix::unistd::mkfifo(
            &fx.src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        fx.feed(r#"{"op":"create","path":"bad\ufffd\ufffd","path_hex":"626164fffe","kind":"dir"}"#);
        fx.feed(r#"{"op":"create","path":"bad??/l","path_hex":"626164fffe2f6c","kind":"symlink"}"#);
        fx.feed(r#"{"op":"create","path":"fifo","kind":"fifo"}"#);
        fx.assert_equal();
        fs::set_permissions(fx.src.join("fifo"), fs::Permissions::from_mode(0o4751)).unwrap();
        let fd = sys::open_root(&fx.src).unwrap();
        let d = sys::open_beneath(&fd, b"bad\xff\xfe", libc::O_RDONLY).unwrap();
        sys::set_xattr(&d, b"user.a", b"1").unwrap();
        fx.feed(r#"{"op":"attr","path":"fifo"}"#);
        fx.feed(r#"{"op":"attr","path":"x","path_hex":"626164fffe"}"#);
        fx.assert_equal();
    }

    #[test]
    fn rename_exchange_link_remove() {
        let mut fx = Fx::new();
        for (n, c) in [("a", "AAA"), ("b", "BB")] {
            fs::write(fx.src.join(n), c).unwrap();
            fx.feed(&format!(r#"{{"op":"create","path":"{n}","kind":"file"}}"#));
            fx.feed(&format!(
                r#"{{"op":"write","path":"{n}","offset":0,"len":3}}"#
            ));
        }
        fs::create_dir(fx.src.join("d")).unwrap();
        fx.feed(r#"{"op":"create","path":"d","kind":"dir"}"#);
        fx.assert_equal();

        fs::rename(fx.src.join("a"), fx.src.join("d/a2")).unwrap();
        fx.feed(r#"{"op":"rename","path":"a","new_path":"d/a2"}"#);
        fx.assert_equal();

        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &fx.src.join("b"),
            nix::fcntl::AT_FDCWD,
            &fx.src.join("d/a2"),
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .unwrap();
        fx.feed(r#"{"op":"exchange","path":"b","new_path":"d/a2"}"#);
        fx.assert_equal();

        fs::hard_link(fx.src.join("b"), fx.src.join("d/hl")).unwrap();
        fx.feed(r#"{"op":"link","path":"b","new_path":"d/hl"}"#);
        fx.assert_equal();

        // Rename over an existing file.
        fs::rename(fx.src.join("d/a2"), fx.src.join("b")).unwrap();
        fx.feed(r#"{"op":"rename","path":"d/a2","new_path":"b"}"#);
        fx.assert_equal();

        fs::remove_file(fx.src.join("d/hl")).unwrap();
        fx.feed(r#"{"op":"remove","path":"d/hl","kind":"file"}"#);
        fs::remove_dir(fx.src.join("d")).unwrap();
        fx.feed(r#"{"op":"remove","path":"d","kind":"dir"}"#);
        fx.assert_equal();
        assert_eq!(fx.tolerated(), 0, "{:?}", fx.sh.stats.tolerated_examples);
    }

    #[test]
    fn stale_records_are_tolerated_and_converge() {
        let mut fx = Fx::new();
        // The file was created and written, then renamed before we read it.
        fs::write(fx.src.join("new"), b"data").unwrap();
        fx.feed(r#"{"op":"create","path":"old","kind":"file"}"#);
        fx.feed(r#"{"op":"write","path":"old","offset":0,"len":4}"#);
        assert!(fx.tolerated() >= 1);
        // The rename carries the failed write (and metadata copy) to the new name.
        fx.feed(r#"{"op":"rename","path":"old","new_path":"new"}"#);
        assert_eq!(fx.sh.stats.recovered, 1);
        fx.assert_equal();
        // The same through a directory rename and an exchange.
        fs::create_dir(fx.src.join("d2")).unwrap();
        fs::write(fx.src.join("d2/g"), b"gg").unwrap();
        fx.feed(r#"{"op":"create","path":"d","kind":"dir"}"#);
        fx.feed(r#"{"op":"create","path":"d/g","kind":"file"}"#);
        fx.feed(r#"{"op":"write","path":"d/g","offset":0,"len":2}"#);
        fx.feed(r#"{"op":"rename","path":"d","new_path":"d2"}"#);
        fx.assert_equal();
        // A write to a file the stream never created is not papered over.
        fs::write(fx.src.join("ghost"), b"boo").unwrap();
        fx.feed(r#"{"op":"write","path":"ghost","offset":0,"len":3}"#);
        assert!(!fx.shd.join("ghost").exists());
    }

    #[test]
    fn verify_and_rescan_announcement() {
        let mut fx = Fx::new();
        fs::write(fx.src.join("f"), b"old content").unwrap();
        fx.feed(r#"{"op":"create","path":"f","kind":"file"}"#);
        fs::write(fx.src.join("f"), b"new").unwrap();
        fx.feed(r#"{"op":"verify","path":"f"}"#);
        fx.assert_equal();

        // A rescan record only announces that descriptions follow: it changes nothing.
        fs::create_dir(fx.shd.join("stale")).unwrap();
        fx.feed(r#"{"op":"rescan","path":""}"#);
        assert!(fx.shd.join("stale").exists());
    }

    #[test]
    fn never_follows_symlinks_out_of_the_shadow() {
        let mut fx = Fx::new();
        let outside = fx.shd.parent().unwrap().join("outside");
        fs::create_dir(&outside).unwrap();
        symlink(&outside, fx.shd.join("d")).unwrap();
        fs::create_dir(fx.src.join("d")).unwrap();
        fs::write(fx.src.join("d/f"), b"x").unwrap();
        fx.feed(r#"{"op":"create","path":"d/f","kind":"file"}"#);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(fx.tolerated(), 1);
    }
}
