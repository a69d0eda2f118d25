//! The capture engine: one thread that owns the probes, the fanotify group, the index
//! and the dirty set, and turns their inputs into the ordered change stream.
//!
//! Each step drains the kernel ring buffer first and fanotify second, so that a
//! name created before a write is known when the write's data is described; then
//! it reconciles the dirty names (emitting name operations), compares mapped files,
//! and every `tick` (or at once on a durability point) describes the pending data
//! of each dirty file, oldest first, under the name the consumer knows it by.
//!
//! Loss is never silent: dropped kernel events make their files (or, when the
//! kernel could not say which, every tree) be verified by content, and a fanotify
//! queue overflow makes every tree be rescanned.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::MetadataExt,
        },
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use agent_common::abi::{self, Key, kernel_dev};

use super::{
    change::{Change, Op, Sink},
    ebpf::{EbpfError, Probes, Record},
    fanotify::{FanEvent, Fanotify, FanotifyError, Handle, NamedHandle},
    index::{Index, IndexError, Kind, NodeId, RootId, Stat, list_fd, statx_at, statx_fd},
    mapped::Mapped,
    ranges::{DirtyFiles, FileDelta},
    reconcile::{DirtyName, DirtySet, Lookup, reconcile},
    truncate_path::{NameEvent, PathTruncate, PathTruncates},
};

/// fallocate(2) modes that shift the file's content after the offset.
const FALLOC_FL_COLLAPSE_RANGE: u32 = 0x08;
const FALLOC_FL_INSERT_RANGE: u32 = 0x20;

/// Rounds a file's data description waits for the index to name the file again
/// before it is described as `verify` under whatever name it has.
const STALE_PATIENCE: u32 = 400;

/// Settings of the capture engine.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The watched directories, as the operator gave them.
    pub roots: Vec<PathBuf>,
    /// How long data changes are coalesced before they are described.
    pub tick: Duration,
    /// Ranges kept per file before neighbouring ranges are merged.
    pub max_ranges_per_file: usize,
    /// Ranges kept in all before whole files are coarsened.
    pub max_total_ranges: usize,
    /// Threads of this process whose writes are reported all the same (the
    /// barrier's proxy thread); the rest of the process is not.
    pub captured_threads: Vec<u32>,
}

impl Settings {
    /// Defaults for the given roots.
    #[must_use]
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            tick: Duration::from_millis(5),
            max_ranges_per_file: 1024,
            max_total_ranges: 1 << 20,
            captured_threads: Vec::new(),
        }
    }
}

/// Why capture could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error(transparent)]
    Fanotify(#[from] FanotifyError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("no directory to watch")]
    NoRoots,
    #[error("cannot write the change stream: {0}")]
    Output(#[source] std::io::Error),
    #[error("waiting for kernel events failed: {0}")]
    Poll(#[source] nix::Error),
}

/// Counters of what the engine has seen, for status and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub kernel_events: u64,
    pub fanotify_events: u64,
    pub emitted: u64,
    pub lost_kernel_events: u64,
    pub overflows: u64,
    pub rescans: u64,
}

/// The capture engine.
pub struct Engine {
    settings: Settings,
    probes: Probes,
    fan: Fanotify,
    index: Index,
    dirty: DirtyFiles<Key>,
    mapped: Mapped,
    lookup: HandleLookup,
    seq: u64,
    last_flush: Instant,
    dropped_seen: u64,
    /// Files with a durability point waiting for their data to be described.
    syncs: Vec<Key>,
    sync_all: bool,
    /// Files whose mappings must be compared now (a flush point).
    compare_now: HashSet<Key>,
    pending: DirtySet,
    /// The objects (file handles) of this batch's attribute changes made in
    /// indexed directories (and, with `hard_links`, anywhere): the change belongs to
    /// the inode, whichever name it was made through and wherever that name is by
    /// the time the batch is reconciled.
    attr_objects: HashSet<Handle>,
    /// Whether some file of the trees had several names (perhaps some outside the
    /// trees) when it was last looked at: attribute changes made through a name
    /// outside the trees are then looked at by inode too.
    hard_links: bool,
    /// Files the kernel programs watch by inode (they have several names, perhaps
    /// some outside the trees, where no watched ancestor reports their writes).
    watched_inodes: HashSet<Key>,
    /// Inodes moved out of the watched trees since the last reconciliation.
    left: HashSet<Key>,
    /// New directories whose entries are still to be looked at, with the number of
    /// rounds they have waited for their place to be known.
    unlisted: Vec<(Key, u32)>,
    counters: Counters,
    fan_buf: Vec<FanEvent>,
    /// Files whose description waits for the index to catch up with the disk, with
    /// the number of rounds they have waited.
    stale: HashMap<Key, u32>,
    /// Truncates by path waiting for this round's name events.
    path_truncates: PathTruncates,
    /// Rounds a description may wait for the index ([`STALE_PATIENCE`]; 0 at exit).
    patience: u32,
}

impl Engine {
    /// Arms the kernel probes and fanotify marks, then indexes the trees. Changes made
    /// after this returns are all reported.
    pub fn start(settings: Settings) -> Result<Self, CaptureError> {
        if settings.roots.is_empty() {
            return Err(CaptureError::NoRoots);
        }
        let mut index = Index::default();
        for r in &settings.roots {
            index.add_root(r)?;
        }
        // Arm first, scan second: a change made during the scan is then both seen by
        // the scan or after it and reported by an event; reconciliation is idempotent.
        let mut probes = Probes::load()?;
        probes.exclude_tgid(std::process::id())?;
        for &tid in &settings.captured_threads {
            probes.capture_thread(tid)?;
        }
        let mut fan = Fanotify::new()?;
        for (i, root) in index.roots().iter().enumerate() {
            let tag = u32::try_from(i).unwrap_or(u32::MAX);
            probes.watch(root.key, tag)?;
            fan.mark_filesystem(&root.canonical)?;
        }
        let roots: Vec<RootId> = (0..index.roots().len())
            .filter_map(|i| RootId::try_from(i).ok())
            .collect();
        let mut hard_linked = Vec::new();
        for r in roots {
            if let Some(node) = index.root_node(r) {
                index.scan(node, &mut |_, _, st, _| {
                    if st.kind != Kind::Dir && st.nlink > 1 {
                        hard_linked.push(st.key);
                    }
                })?;
            }
        }
        let hard_links = !hard_linked.is_empty();
        for &key in &hard_linked {
            probes.watch(key, u32::MAX)?;
        }
        let watched_inodes = hard_linked.into_iter().collect();
        let dirty = DirtyFiles::new(settings.max_ranges_per_file, settings.max_total_ranges);
        Ok(Self {
            settings,
            probes,
            fan,
            index,
            dirty,
            mapped: Mapped::default(),
            lookup: HandleLookup::default(),
            seq: 0,
            last_flush: Instant::now(),
            dropped_seen: 0,
            syncs: Vec::new(),
            sync_all: false,
            compare_now: HashSet::new(),
            pending: DirtySet::default(),
            attr_objects: HashSet::new(),
            hard_links,
            watched_inodes,
            left: HashSet::new(),
            unlisted: Vec::new(),
            counters: Counters::default(),
            fan_buf: Vec::new(),
            stale: HashMap::new(),
            path_truncates: PathTruncates::default(),
            patience: STALE_PATIENCE,
        })
    }

    /// The index, for inspection.
    #[must_use]
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// What the engine has counted so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Runs until `stop` is set, then describes what is still pending and returns.
    pub fn run(&mut self, sink: &mut dyn Sink, stop: &AtomicBool) -> Result<(), CaptureError> {
        while !stop.load(Ordering::Relaxed) {
            self.wait(self.settings.tick)?;
            self.step(sink, Instant::now())?;
        }
        self.step(sink, Instant::now())?;
        // Descriptions waiting for the index to catch up get a few more rounds,
        // then are described as they are: nothing pending is dropped at exit.
        for _ in 0..50 {
            if self.stale.is_empty() {
                break;
            }
            self.wait(self.settings.tick)?;
            self.flush_now(sink, Instant::now())?;
        }
        self.patience = 0;
        self.flush_data(sink)?;
        sink.flush().map_err(CaptureError::Output)
    }

    /// Waits until the kernel has something for us, or `timeout`.
    fn wait(&self, timeout: Duration) -> Result<(), CaptureError> {
        self.wait_events_with(None, timeout)
    }

    /// One round: drain, reconcile, compare, and describe data when due.
    pub fn step(&mut self, sink: &mut dyn Sink, now: Instant) -> Result<(), CaptureError> {
        self.step_inner(sink, now, false)
    }

    /// One round that describes every pending change now, whatever the tick: a
    /// durability point of the application waits for exactly this.
    pub fn flush_now(&mut self, sink: &mut dyn Sink, now: Instant) -> Result<(), CaptureError> {
        self.step_inner(sink, now, true)
    }

    /// Waits until the kernel has something for us, `extra` is readable, or
    /// `timeout`: a consumer wakes the engine through `extra` when it needs a flush.
    pub fn wait_events_with(
        &self,
        extra: Option<std::os::fd::BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<(), CaptureError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = vec![
            PollFd::new(self.probes.ring_fd(), PollFlags::POLLIN),
            PollFd::new(self.fan.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(fd) = extra {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(CaptureError::Poll(e)),
        }
    }

    /// Has the file with inode `ino` in tree `root` described again by content: a
    /// consumer calls this when it could not read data a record named (the file had
    /// already moved on), so that the data reaches it under the file's next name.
    pub fn verify_later(&mut self, root: RootId, ino: u64) {
        if let Some(r) = self.index.roots().get(usize::from(root)) {
            let key = Key {
                dev: r.key.dev,
                ino,
            };
            self.dirty.verify(key);
        }
    }

    /// Where the file or directory with inode `ino` of tree `root`'s filesystem is
    /// now, as the stream has described it: its tree and path.
    #[must_use]
    pub fn path_of_ino(&self, root: RootId, ino: u64) -> Option<(RootId, Vec<u8>)> {
        let dev = self.index.roots().get(usize::from(root))?.key.dev;
        let node = *self.index.names(&Key { dev, ino }).first()?;
        Some((self.index.root_of(node)?, self.index.rel_path(node)?))
    }

    fn step_inner(
        &mut self,
        sink: &mut dyn Sink,
        now: Instant,
        force: bool,
    ) -> Result<(), CaptureError> {
        self.drain_kernel();
        self.account_losses();
        self.drain_fanotify()?;
        self.reconcile_names(sink)?;
        if force {
            // Stores through a shared mapping have no event of their own.
            self.compare_now.extend(self.mapped.all());
        }
        self.compare_mappings(now);
        let due = now.duration_since(self.last_flush) >= self.settings.tick;
        if force || due || !self.syncs.is_empty() || self.sync_all {
            self.flush_data(sink)?;
            self.last_flush = now;
        }
        sink.flush().map_err(CaptureError::Output)
    }

    fn drain_kernel(&mut self) {
        let mut records = Vec::new();
        self.counters.kernel_events += self.probes.drain(|r| records.push(r)) as u64;
        for r in records {
            match r {
                Record::Event(ev) => self.on_kernel_event(&ev),
                Record::Path(pe) => {
                    self.on_truncate_path(pe.hdr.tgid, pe.path_bytes(), pe.hdr.offset, pe.hdr.flags)
                }
            }
        }
    }

    fn on_kernel_event(&mut self, ev: &abi::Event) {
        tracing::trace!(
            kind = ev.kind,
            dev = ev.dev,
            ino = ev.ino,
            offset = ev.offset,
            len = ev.len,
            tgid = ev.tgid,
            "kernel event"
        );
        let key = Key {
            dev: ev.dev,
            ino: ev.ino,
        };
        match ev.kind {
            abi::EV_WRITE | abi::EV_PAGE_DIRTY => {
                self.dirty.write(key, ev.offset, ev.len);
            }
            abi::EV_TRUNCATE => {
                self.dirty.truncate(key, ev.offset);
            }
            abi::EV_FALLOCATE => {
                if ev.aux & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE) != 0 {
                    // Everything after the offset moved. A collapse also shrinks the
                    // file, which only a truncate record tells a consumer: describe
                    // the size as it is now (later writes describe any growth).
                    let size = self
                        .index
                        .names(&key)
                        .iter()
                        .find_map(|&n| self.live_size(n));
                    match size {
                        Some(size) => {
                            self.dirty.truncate(key, size);
                            self.dirty.write_to_end(key, ev.offset);
                        }
                        None => {
                            self.dirty.verify(key);
                        }
                    }
                } else {
                    self.dirty.write(key, ev.offset, ev.len);
                }
            }
            abi::EV_MMAP => {
                // Stores may already have happened: describe the mapped range once,
                // then compare by content from here on.
                self.dirty.write(key, ev.offset, ev.len);
                if let Some(path) = self.path_of(&key) {
                    self.mapped.add(key, ev.tgid, &path, Instant::now());
                }
            }
            abi::EV_FLUSH => {
                self.compare_now.extend(self.mapped.of_tgid(ev.tgid));
            }
            abi::EV_SYNC => {
                self.compare_now.extend(self.mapped.of_tgid(ev.tgid));
                self.syncs.push(key);
            }
            abi::EV_SYNC_ALL => {
                self.compare_now.extend(self.mapped.of_tgid(ev.tgid));
                self.sync_all = true;
            }
            abi::EV_VERIFY => {
                self.dirty.verify(key);
            }
            _ => {
                // An event kind this agent does not know: be safe, verify the file.
                self.dirty.verify(key);
            }
        }
    }

    /// truncate(2) names a path relative to the caller's working directory.
    fn on_truncate_path(&mut self, tgid: u32, path: &[u8], size: u64, flags: u32) {
        let p = Path::new(OsStr::from_bytes(path));
        let full = if p.is_absolute() {
            Some(p.to_path_buf())
        } else {
            fs::read_link(format!("/proc/{tgid}/cwd"))
                .ok()
                .map(|cwd| cwd.join(p))
        };
        let Some(full) = full.filter(|_| flags & abi::F_PATH_TRUNCATED == 0) else {
            tracing::info!(
                tgid,
                "truncate(2) of a path that cannot be named; rescanning"
            );
            self.rescan_all();
            return;
        };
        // Two candidates, both recorded: the file at the path now, and the file the
        // index (the consumer's view, a few milliseconds behind) has at the path. A
        // truncate recorded for a file that was not cut only makes its current size
        // be described again, so a wrong candidate costs nothing.
        let mut found = false;
        let on_disk = fs::metadata(&full);
        if let Err(e) = &on_disk {
            tracing::debug!(path = %full.display(), err = %e, parent = ?full.parent().map(fs::metadata).map(|r| r.map(|m| m.ino()).map_err(|e| e.to_string())), "truncate(2) path not on disk");
        }
        if let Ok(m) = on_disk {
            let key = Key {
                dev: kernel_dev(m.dev()),
                ino: m.ino(),
            };
            // Recorded even when the index does not know the inode yet (a file
            // created a moment ago): data of inodes without a name is dropped when
            // described, so an unwatched file costs nothing.
            self.dirty.truncate(key, size);
            found = true;
        }
        if let Some(node) = self.index.lookup(&full)
            && self.index.kind(node) == Some(Kind::File)
            && let Some(key) = self.index.key(node)
        {
            self.dirty.truncate(key, size);
            found = true;
        }
        let root = match self.root_containing(&full) {
            Some(Some(r)) => Some(r),
            // Outside every tree: not ours.
            Some(None) => return,
            None => None,
        };
        // Either may be another file than the one cut (it was renamed away and the
        // name reused): the inodes fanotify saw arrive at or leave the name this
        // round get the truncate too, and explain a file found nowhere.
        let mut dirs = Vec::new();
        if let Some(parent) = full.parent() {
            if let Ok(m) = fs::metadata(parent) {
                dirs.push(Key {
                    dev: kernel_dev(m.dev()),
                    ino: m.ino(),
                });
            }
            if let Some(key) = self.index.lookup(parent).and_then(|n| self.index.key(n))
                && !dirs.contains(&key)
            {
                dirs.push(key);
            }
        }
        match full.file_name() {
            Some(name) => self.path_truncates.push(PathTruncate {
                dirs,
                name: name.as_bytes().into(),
                path: full.clone(),
                size,
                unresolved: !found,
                root,
                tries: 0,
            }),
            None if found => {}
            None => {
                tracing::info!(tgid, path = %full.display(), "truncate(2) of a path without a file name; rescanning");
                self.rescan_root(root);
            }
        }
    }

    /// Rescans one tree, or every tree when it is not known which.
    fn rescan_root(&mut self, root: Option<RootId>) {
        match root {
            Some(r) => {
                self.pending.rescan.insert(r);
            }
            None => self.rescan_all(),
        }
    }

    /// Gives the truncates by path of this round the inodes fanotify saw at their
    /// names; the ones nothing explains rescan their tree.
    fn resolve_path_truncates(&mut self) {
        let fan = &self.fan;
        let handles = &self.lookup.handles;
        let res =
            self.path_truncates
                .resolve(&mut |h| fan.open_handle(h).ok(), &mut |dir, name| {
                    let (h, _) = handles.get(&dir)?;
                    let fd = fan.open_handle(h).ok()?;
                    statx_at(fd.as_raw_fd(), name)
                        .filter(|st| st.kind == Kind::File)
                        .map(|st| st.key)
                });
        for (key, size) in res.found {
            self.dirty.truncate(key, size);
        }
        for (h, size) in res.truncates {
            let Ok(fd) = self.fan.open_handle(&h) else {
                // Deleted since: nothing of it is left to describe.
                continue;
            };
            if let Ok(st) = nix::sys::stat::fstat(&fd) {
                let key = Key {
                    dev: kernel_dev(st.st_dev),
                    ino: st.st_ino,
                };
                self.dirty.truncate(key, size);
            }
        }
        for root in res.rescan {
            tracing::info!(
                ?root,
                "truncate(2) of a file that cannot be found; rescanning its tree"
            );
            self.rescan_root(root);
        }
    }

    /// The root a path lies in: `Some(None)` when it is provably outside every
    /// tree, `None` when that cannot be told (its directory is gone).
    fn root_containing(&self, p: &Path) -> Option<Option<RootId>> {
        let roots: Vec<&Path> = self
            .index
            .roots()
            .iter()
            .map(|r| r.canonical.as_path())
            .collect();
        tree_of(p, &roots).map(|i| i.and_then(|i| RootId::try_from(i).ok()))
    }

    fn account_losses(&mut self) {
        let Ok(stats) = self.probes.stats() else {
            return;
        };
        if stats.dropped <= self.dropped_seen {
            return;
        }
        let dropped = stats.dropped - self.dropped_seen;
        self.dropped_seen = stats.dropped;
        self.counters.lost_kernel_events += dropped;
        tracing::warn!(
            dropped,
            "kernel ring buffer full; verifying the affected files"
        );
        match self.probes.take_lost() {
            Ok(keys) if !keys.is_empty() => {
                for k in keys {
                    self.dirty.verify(k);
                }
            }
            // The kernel could not record which files: compare everything.
            _ => self.rescan_all(),
        }
    }

    fn rescan_all(&mut self) {
        for i in 0..self.index.roots().len() {
            if let Ok(r) = RootId::try_from(i) {
                self.pending.rescan.insert(r);
            }
        }
    }

    fn drain_fanotify(&mut self) -> Result<(), CaptureError> {
        let mut events = std::mem::take(&mut self.fan_buf);
        events.clear();
        loop {
            let n = self.fan.read(&mut events)?;
            if n == 0 {
                break;
            }
            self.counters.fanotify_events += n as u64;
            if events.len() > 100_000 {
                break;
            }
        }
        let mut renamed = false;
        for ev in &events {
            if ev.is_overflow() {
                self.counters.overflows += 1;
                tracing::warn!("fanotify queue overflow; rescanning every tree");
                self.rescan_all();
                continue;
            }
            let attr = ev.mask & libc::FAN_ATTRIB != 0;
            renamed |=
                ev.mask & (libc::FAN_RENAME | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0;
            let mut indexed = false;
            for named in [&ev.dir_name, &ev.old, &ev.new].into_iter().flatten() {
                indexed |= self.note_name(named, attr);
            }
            // The name an attribute change was made through may hold nothing by the
            // time the batch is reconciled (renamed on, or never known to the index:
            // a name exchanged in from a new directory), or lie outside the trees (a
            // hard link out of them), while the inode has names the consumer knows:
            // the change is also described by inode. Outside the trees only when
            // some file has several names, since every attribute change and unlink
            // on the filesystem comes here.
            if attr
                && (indexed || self.hard_links)
                && let Some(object) = &ev.object
            {
                self.attr_objects.insert(object.clone());
            }
            self.note_for_truncates(ev);
            if let (Some(old), Some(new)) = (&ev.old, &ev.new) {
                self.note_boundary_crossing(ev, old, new);
            }
        }
        if renamed {
            // io_uring renames bypass the syscall hooks that invalidate the kernel's
            // verdict cache; a rename seen here invalidates it too.
            let _ = self.probes.invalidate_verdicts();
        }
        self.fan_buf = events;
        self.resolve_path_truncates();
        Ok(())
    }

    /// Keeps the names an inode arrived at or left, for truncates by path.
    fn note_for_truncates(&mut self, ev: &FanEvent) {
        const ARRIVE: u64 = libc::FAN_CREATE | libc::FAN_MOVED_TO;
        const LEAVE: u64 = libc::FAN_DELETE | libc::FAN_MOVED_FROM;
        let mut named: Vec<(&NamedHandle, bool)> = Vec::new();
        if let Some(old) = &ev.old {
            named.push((old, true));
        }
        if let Some(new) = &ev.new {
            named.push((new, false));
        }
        if let Some(d) = &ev.dir_name
            && ev.mask & (ARRIVE | LEAVE) != 0
        {
            named.push((d, ev.mask & LEAVE != 0));
        }
        for (n, left) in named {
            if n.name.is_empty() {
                continue;
            }
            if let Some(st) = self.lookup.resolve(&self.fan, &n.dir) {
                self.path_truncates.saw(NameEvent {
                    dir: st.key,
                    name: n.name.clone().into_boxed_slice(),
                    object: ev.object.clone(),
                    left,
                    is_dir: ev.is_dir(),
                });
            }
        }
    }

    /// A rename between a watched and an unwatched directory: what happens to the
    /// inode outside is not captured, so it must never come back as a mere rename.
    fn note_boundary_crossing(&mut self, ev: &FanEvent, old: &NamedHandle, new: &NamedHandle) {
        // A directory the index does not have yet (created a moment ago) is still
        // inside a tree when its path says so: only then is this a real crossing.
        let watched = |this: &mut Self, h: &Handle| {
            if this
                .lookup
                .resolve(&this.fan, h)
                .is_some_and(|st| this.index.dir_of(&st).is_some())
            {
                return true;
            }
            let Ok(fd) = this.fan.open_handle(h) else {
                return false;
            };
            fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).is_ok_and(|p| {
                this.index
                    .roots()
                    .iter()
                    .any(|r| p.starts_with(&r.canonical))
            })
        };
        let moved_out = watched(self, &old.dir);
        if moved_out == watched(self, &new.dir) {
            return;
        }
        let object = ev.object.as_ref().and_then(|h| {
            let fd = self.fan.open_handle(h).ok()?;
            let st = nix::sys::stat::fstat(&fd).ok()?;
            let key = Key {
                dev: kernel_dev(st.st_dev),
                ino: st.st_ino,
            };
            let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
            Some((key, is_file && st.st_nlink > 1))
        });
        // An object whose handle no longer opens is gone: it cannot come back.
        let Some((k, linked)) = object else {
            return;
        };
        tracing::debug!(ino = k.ino, "renamed across the edge of the watched trees");
        self.left.insert(k);
        if moved_out && linked {
            // A file that keeps another name, perhaps inside the trees, left through
            // this one: its writes out there change what the trees hold. Unless it was
            // watched by inode already (a link seen in an earlier batch), writes made
            // through the new name before this event was read went unreported (no
            // watched ancestor): it is watched from now on and compared by content.
            self.hard_links = true;
            let _ = self.probes.watch(k, u32::MAX);
            if self.watched_inodes.insert(k) {
                self.dirty.verify(k);
            }
        }
    }

    /// Marks the name of an event dirty; false when its directory is not indexed
    /// (gone, outside the trees, or new and to be scanned whole).
    fn note_name(&mut self, named: &NamedHandle, attr: bool) -> bool {
        let Some(dir_st) = self.lookup.resolve(&self.fan, &named.dir) else {
            tracing::debug!(name = %String::from_utf8_lossy(&named.name), "name event in a directory that is gone");
            return false;
        };
        let Some(dir) = self.index.dir_of(&dir_st) else {
            tracing::debug!(name = %String::from_utf8_lossy(&named.name), dir = dir_st.key.ino, "name event in a directory the index does not have");
            return false;
        };
        let d = if named.name.is_empty() || named.name == b"." {
            // An event on the directory itself (chmod of a directory comes only this
            // way): it concerns the directory's own name in its parent.
            match (self.index.parent(dir), self.index.name(dir)) {
                (Some(parent), Some(name)) => DirtyName {
                    dir: parent,
                    name: name.into(),
                },
                _ => {
                    if attr && let Some(r) = self.index.root_of(dir) {
                        self.pending.root_attr.insert(r);
                    }
                    return true;
                }
            }
        } else {
            DirtyName {
                dir,
                name: named.name.clone().into_boxed_slice(),
            }
        };
        if attr {
            self.pending.attr.insert(d.clone());
        }
        self.pending.names.insert(d);
        true
    }

    fn reconcile_names(&mut self, sink: &mut dyn Sink) -> Result<(), CaptureError> {
        self.list_new_dirs();
        if self.pending.is_empty() && self.attr_objects.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        tracing::debug!(
            seq = self.seq,
            names = pending.names.len(),
            rescan = pending.rescan.len(),
            "reconciling"
        );
        let mut verify = Vec::new();
        for r in std::mem::take(&mut pending.rescan) {
            self.counters.rescans += 1;
            self.emit(sink, r, Vec::new(), Op::Rescan)?;
            self.collect_tree(r, &mut pending, &mut verify);
        }
        let mut live = LiveLookup {
            fan: &self.fan,
            handles: &self.lookup.handles,
        };
        let left = std::mem::take(&mut self.left);
        // Dirty names hold node ids taken while draining: none may be reused until
        // the reconciliation is over.
        self.index.hold();
        let plan = reconcile(
            &mut self.index,
            &mut live,
            &pending.names,
            &pending.attr,
            &left,
        );
        self.index.release();
        for r in plan.rescan {
            tracing::info!(
                root = r,
                "names moved in a way the events did not describe; rescanning the tree"
            );
            self.pending.rescan.insert(r);
        }
        for key in plan.watch {
            self.hard_links = true;
            let _ = self.probes.watch(key, u32::MAX);
            if self.watched_inodes.insert(key) {
                // Until now only the file's names inside the trees had its writes
                // reported. Another name may already lie outside them (linked there,
                // or moved out and written at once, before this batch saw the
                // link): what was written through it is found by content.
                self.dirty.verify(key);
            }
        }
        self.unlisted
            .extend(plan.unlisted.into_iter().map(|k| (k, 0)));
        let mut attr_done: HashSet<(RootId, u64)> = HashSet::new();
        for c in plan.changes {
            if c.op == Op::Attr
                && let Some(ino) = c.ino
            {
                attr_done.insert((c.root, ino));
            }
            // The plan names the inode of each new file and attribute change as it
            // planned the record: looking the path up now, after the whole plan, can
            // fail when a later record of the plan moved a directory above it.
            self.emit_for(sink, c.root, c.path, c.op, c.ino)?;
        }
        self.describe_attr_objects(sink, &mut attr_done)?;
        for r in pending.root_attr {
            self.emit(sink, r, Vec::new(), Op::Attr)?;
        }
        for key in verify {
            if !self.index.names(&key).is_empty() {
                self.dirty.verify(key);
            }
        }
        Ok(())
    }

    /// Describes the attribute changes of this batch by inode, under one name per
    /// tree that the index (the consumer's view, now reconciled) gives the inode,
    /// unless the plan already described them there. An object that no longer
    /// opens is gone, and one the index does not have is described whole when it
    /// is found.
    fn describe_attr_objects(
        &mut self,
        sink: &mut dyn Sink,
        done: &mut HashSet<(RootId, u64)>,
    ) -> Result<(), CaptureError> {
        for h in std::mem::take(&mut self.attr_objects) {
            let Some(st) = self
                .fan
                .open_handle(&h)
                .ok()
                .and_then(|fd| statx_fd(fd.as_raw_fd()))
            else {
                continue;
            };
            let names: Vec<NodeId> = self
                .index
                .names(&st.key)
                .iter()
                .copied()
                .filter(|&n| self.index.is_same_file(n, &st))
                .collect();
            for n in names {
                let (Some(root), Some(path)) = (self.index.root_of(n), self.index.rel_path(n))
                else {
                    continue;
                };
                if done.insert((root, st.key.ino)) {
                    self.emit_for(sink, root, path, Op::Attr, Some(st.key.ino))?;
                }
            }
        }
        Ok(())
    }

    /// Marks every entry of the new directories that could not be read before as
    /// dirty, once the index's path for them leads to them again. A directory whose
    /// place stays unknown for long makes its tree be rescanned: never silent.
    fn list_new_dirs(&mut self) {
        const PATIENCE: u32 = 200;
        for (key, waited) in std::mem::take(&mut self.unlisted) {
            let Some(node) = self.index.dir_by_key(&key) else {
                // Gone from the index (removed or moved out): nothing to list.
                continue;
            };
            match self.open_dir_node(node).and_then(|fd| list_fd(&fd)) {
                Some(names) => {
                    for name in names {
                        self.pending.names.insert(DirtyName {
                            dir: node,
                            name: name.into_boxed_slice(),
                        });
                    }
                }
                None if waited < PATIENCE => self.unlisted.push((key, waited + 1)),
                None => {
                    if let Some(r) = self.index.root_of(node) {
                        tracing::warn!("a new directory could not be read; rescanning its tree");
                        self.pending.rescan.insert(r);
                    }
                }
            }
        }
    }

    /// History of a tree was lost: every name the index has in it and every name on
    /// disk becomes dirty (with its attributes), and every file is verified. The
    /// ordinary reconciliation then describes the difference as name operations, so
    /// the stream stays a log a consumer replays in order, even after a loss.
    fn collect_tree(&self, root: RootId, pending: &mut DirtySet, verify: &mut Vec<Key>) {
        let Some(node) = self.index.root_node(root) else {
            return;
        };
        pending.root_attr.insert(root);
        let mut stack = vec![node];
        while let Some(d) = stack.pop() {
            for c in self.index.children(d) {
                if let Some(name) = self.index.name(c) {
                    let dn = DirtyName {
                        dir: d,
                        name: name.into(),
                    };
                    pending.attr.insert(dn.clone());
                    pending.names.insert(dn);
                }
                match self.index.kind(c) {
                    Some(Kind::Dir) => stack.push(c),
                    Some(Kind::File) => verify.extend(self.index.key(c)),
                    _ => {}
                }
            }
            // Read where the directory is now (through its handle, or its index path
            // once checked to hold it): a stale path would list another directory.
            // One that cannot be read is listed by the scan of wherever it is found.
            for name in self
                .open_dir_node(d)
                .and_then(|fd| list_fd(&fd))
                .into_iter()
                .flatten()
            {
                let dn = DirtyName {
                    dir: d,
                    name: name.into_boxed_slice(),
                };
                pending.attr.insert(dn.clone());
                pending.names.insert(dn);
            }
        }
    }

    /// Opens directory node `d` where it is now: through its handle when one is
    /// known, else through its index path once checked to hold this very directory.
    fn open_dir_node(&self, d: NodeId) -> Option<OwnedFd> {
        let live = LiveLookup {
            fan: &self.fan,
            handles: &self.lookup.handles,
        };
        if let Some(fd) = live.open_dir(&self.index, d) {
            return Some(fd);
        }
        let path = self.index.abs_path(d)?;
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        let st = statx_fd(fd.as_raw_fd())?;
        self.index.is_same_file(d, &st).then_some(fd)
    }

    fn compare_mappings(&mut self, now: Instant) {
        if self.mapped.is_empty() {
            return;
        }
        let mut keys: HashSet<Key> = std::mem::take(&mut self.compare_now);
        keys.extend(self.mapped.due(now));
        for key in keys {
            let path = self.path_of(&key);
            for (off, len) in self.mapped.compare(key, path.as_deref(), now) {
                self.dirty.write(key, off, len);
            }
        }
    }

    /// Describes the pending data of every dirty file, oldest first, then the
    /// durability points that waited for it.
    fn flush_data(&mut self, sink: &mut dyn Sink) -> Result<(), CaptureError> {
        for (key, delta) in self.dirty.take_all() {
            // One name per tree: hard links may join names in two trees, and each
            // copy needs the data (within one tree, a link shares it).
            let mut per_root: Vec<(RootId, NodeId)> = Vec::new();
            for &n in self.index.names(&key) {
                if self.index.kind(n) == Some(Kind::File)
                    && let Some(r) = self.index.root_of(n)
                    && !per_root.iter().any(|(pr, _)| *pr == r)
                {
                    per_root.push((r, n));
                }
            }
            // The size a truncate is described with, and the end writes are clipped
            // to, must be this inode's. The index (the consumer's view) can lag the
            // disk: when a name it gives no longer holds the file (an exchange or a
            // rename not reconciled yet), the description waits for the next round,
            // when the name operations have caught up. A file that stays unfindable
            // is verified by content under its name (the record carries its inode).
            let stale = per_root
                .iter()
                .any(|&(_, node)| self.live_size(node).is_none());
            if stale {
                let waited = self.stale.get(&key).copied().unwrap_or(0);
                if waited < self.patience {
                    self.stale.insert(key, waited + 1);
                    self.put_back(key, &delta);
                    continue;
                }
            }
            self.stale.remove(&key);
            for (root, node) in per_root {
                let delta = if stale {
                    &FileDelta {
                        verify: true,
                        ..delta.clone()
                    }
                } else {
                    &delta
                };
                self.describe_delta(sink, root, node, delta)?;
            }
        }
        // A durability point waits for the data it covers: a file whose description
        // was put off keeps its sync (and a sync of everything) for a later round.
        let mut waiting = Vec::new();
        for key in std::mem::take(&mut self.syncs) {
            if self.stale.contains_key(&key) {
                waiting.push(key);
                continue;
            }
            if let Some(&node) = self.index.names(&key).first()
                && let (Some(root), Some(path)) =
                    (self.index.root_of(node), self.index.rel_path(node))
            {
                self.emit(sink, root, path, Op::Sync { all: false })?;
            }
        }
        self.syncs = waiting;
        if self.stale.is_empty() && std::mem::take(&mut self.sync_all) {
            for i in 0..self.index.roots().len() {
                if let Ok(r) = RootId::try_from(i) {
                    self.emit(sink, r, Vec::new(), Op::Sync { all: true })?;
                }
            }
        }
        Ok(())
    }

    /// Describes one file's pending data under one of its names.
    fn describe_delta(
        &mut self,
        sink: &mut dyn Sink,
        root: RootId,
        node: NodeId,
        delta: &FileDelta,
    ) -> Result<(), CaptureError> {
        let ino = self.index.key(node).map(|k| k.ino);
        let Some(path) = self.index.rel_path(node) else {
            return Ok(());
        };
        if delta.verify {
            return self.emit_for(sink, root, path, Op::Verify, ino);
        }
        let size = self.live_size(node);
        let mut ranges = delta.ranges.clone();
        if let Some(t) = delta.truncated_to {
            // Truncates and writes of different threads can reach us in another
            // order than they happened, so the size recorded last may not be the
            // size the file has: describe the size it has now, and everything
            // from the smallest size it was cut to up to there.
            let now = size.unwrap_or(t);
            self.emit_for(sink, root, path.clone(), Op::Truncate { size: now }, ino)?;
            let min = delta.min_size.unwrap_or(t).min(t);
            if now > min {
                ranges.insert(min, now - min);
            }
        }
        for (offset, len) in ranges.iter() {
            // Describe what exists now; bytes past the end were cut by a later
            // truncate, whose own record follows if it is not already described.
            let len = match size {
                Some(s) if offset >= s => continue,
                Some(s) => len.min(s - offset),
                None => len,
            };
            if len > 0 {
                self.emit_for(sink, root, path.clone(), Op::Write { offset, len }, ino)?;
            }
        }
        Ok(())
    }

    /// The size of the file node `node` stands for, if its name in the index still
    /// holds that very file (same inode, same birth).
    fn live_size(&self, node: NodeId) -> Option<u64> {
        let p = self.index.abs_path(node)?;
        let st = statx_at(libc::AT_FDCWD, p.as_os_str().as_bytes())?;
        self.index.is_same_file(node, &st).then_some(st.size)
    }

    /// Records a taken delta again, to be described in a later round.
    fn put_back(&mut self, key: Key, delta: &FileDelta) {
        if delta.verify {
            self.dirty.verify(key);
            return;
        }
        if let Some(t) = delta.truncated_to {
            let min = delta.min_size.unwrap_or(t).min(t);
            if min < t {
                self.dirty.truncate(key, min);
            }
            self.dirty.truncate(key, t);
        }
        for (offset, len) in delta.ranges.iter() {
            self.dirty.write(key, offset, len);
        }
    }

    fn path_of(&self, key: &Key) -> Option<PathBuf> {
        let node = *self.index.names(key).first()?;
        self.index.abs_path(node)
    }

    fn emit(
        &mut self,
        sink: &mut dyn Sink,
        root: RootId,
        path: Vec<u8>,
        op: Op,
    ) -> Result<(), CaptureError> {
        self.emit_for(sink, root, path, op, None)
    }

    /// Emits a record about the data of inode `ino`.
    fn emit_for(
        &mut self,
        sink: &mut dyn Sink,
        root: RootId,
        path: Vec<u8>,
        op: Op,
        ino: Option<u64>,
    ) -> Result<(), CaptureError> {
        self.seq += 1;
        self.counters.emitted += 1;
        sink.emit(Change {
            seq: self.seq,
            root,
            path,
            op,
            ino,
        })
        .map_err(CaptureError::Output)
    }
}

/// Remembers directory handles, so that a directory that moved since the index last
/// described it is still found where it is now, and one deleted since is still known.
#[derive(Default)]
struct HandleLookup {
    /// Handle of each directory seen in an event, by inode.
    handles: HashMap<Key, (Handle, u64)>,
    /// Inode of each handle seen.
    keys: HashMap<Handle, Stat>,
}

impl HandleLookup {
    fn resolve(&mut self, fan: &Fanotify, h: &Handle) -> Option<Stat> {
        if let Some(st) = self.keys.get(h) {
            return Some(*st);
        }
        let fd = fan.open_handle(h).ok()?;
        let st = statx_fd(fd.as_raw_fd())?;
        let key = st.key;
        // Bounded: a long-running agent on a busy filesystem would otherwise grow
        // these maps with every directory ever touched.
        if self.keys.len() > 200_000 {
            self.keys.clear();
            self.handles.clear();
        }
        self.keys.insert(h.clone(), st);
        self.handles.insert(key, (h.clone(), st.birth));
        Some(st)
    }
}

/// The [`Lookup`] used during a reconciliation: through a directory's handle when
/// one is known, through the index's path otherwise.
struct LiveLookup<'a> {
    fan: &'a Fanotify,
    handles: &'a HashMap<Key, (Handle, u64)>,
}

impl LiveLookup<'_> {
    /// Opens directory node `dir` through its handle, wherever it is now. Only the
    /// handle of this very directory: a reused inode number has another birth time.
    fn open_dir(&self, index: &Index, dir: NodeId) -> Option<OwnedFd> {
        let known = index.stat(dir)?;
        self.handles
            .get(&known.key)
            .filter(|(_, birth)| *birth == 0 || known.birth == 0 || *birth == known.birth)
            .and_then(|(h, _)| self.fan.open_handle(h).ok())
    }
}

impl Lookup for LiveLookup<'_> {
    fn stat_in(&mut self, index: &Index, dir: NodeId, name: &[u8]) -> Option<Stat> {
        if let Some(fd) = self.open_dir(index, dir) {
            return statx_at(fd.as_raw_fd(), name);
        }
        let p = index.abs_path(dir)?.join(OsStr::from_bytes(name));
        statx_at(libc::AT_FDCWD, p.as_os_str().as_bytes())
    }

    fn read_link_in(&mut self, index: &Index, dir: NodeId, name: &[u8]) -> Option<Vec<u8>> {
        if let Some(fd) = self.open_dir(index, dir) {
            return nix::fcntl::readlinkat(&fd, OsStr::from_bytes(name))
                .ok()
                .map(|t| t.into_vec());
        }
        let p = index.abs_path(dir)?.join(OsStr::from_bytes(name));
        fs::read_link(p).ok().map(|t| t.into_os_string().into_vec())
    }
}

/// Which of `roots` (canonical paths) holds the path `p` a process named: `Some(i)`,
/// `Some(None)` when none does, `None` when it cannot be told.
///
/// A path not lexically under a root may still lead into one through a symlink or
/// a `..`, so its nearest existing ancestor is resolved. That ancestor, not the
/// parent: the directory may be gone by the time the event is read (a temporary
/// directory of some other program, removed right after its truncate), and "cannot
/// tell" rescans every tree, which sends every file of them again. A path whose
/// existing ancestor resolves outside every root was outside them too, unless a
/// symlink on it was removed meanwhile (the data of a file that arrives in a tree
/// later is described whole when it arrives).
fn tree_of(p: &Path, roots: &[&Path]) -> Option<Option<usize>> {
    let under = |q: &Path| roots.iter().position(|r| q.starts_with(r));
    if let Some(i) = under(p) {
        return Some(Some(i));
    }
    let canon = p
        .ancestors()
        .skip(1)
        .find_map(|d| fs::canonicalize(d).ok())?;
    Some(under(&canon))
}

#[cfg(test)]
mod tree_of_tests {
    use super::*;

    /// A truncate(2) in a directory another program has already removed is not in
    /// our trees: it used to rescan (and send again) every tree, over and over while
    /// a test suite elsewhere on the machine truncated files in temporary
    /// directories (BENCHMARKS.md, replication run C).
    #[test]
    fn paths_in_vanished_directories_outside_the_trees_are_not_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        let root = fs::canonicalize(&root).expect("canonical");
        let other = fs::canonicalize(dir.path())
            .expect("canonical")
            .join("other");
        std::os::unix::fs::symlink(&root, &other).expect("symlink");
        let roots = [root.as_path()];
        assert_eq!(tree_of(&root.join("sub/f"), &roots), Some(Some(0)));
        assert_eq!(tree_of(&root.join("gone/deeper/f"), &roots), Some(Some(0)));
        assert_eq!(tree_of(&other.join("sub/f"), &roots), Some(Some(0)));
        assert_eq!(tree_of(&other.join("gone/deeper/f"), &roots), Some(Some(0)));
        let vanished = dir.path().join("tmp-of-someone/x/f");
        assert_eq!(tree_of(&vanished, &roots), Some(None));
        assert_eq!(tree_of(Path::new("/nonexistent-dir/f"), &roots), Some(None));
    }
}
