//! Resolving `truncate(2)` by path to the inodes it may have cut.
//!
//! The kernel reports `truncate(path, size)` with the path only (there is no file to
//! take an inode from), and user space reads it a few milliseconds later. By then the
//! file may have been renamed or unlinked, and another file may hold the name. The
//! engine looks the path up on disk and in the index (the consumer's view); this
//! module covers what both miss: every inode that fanotify saw arrive at or leave the
//! truncated name (in the events of this round or the last few) gets the truncate
//! too. A truncate recorded for an inode that was not cut only makes its current size
//! be described again, so over-matching costs little.
//!
//! Why this is complete: a file that was at the name when it was cut and is not there
//! when the engine looks left through a rename or an unlink of that very name, after
//! the cut. That event was queued before the engine's lookup, so it is in the
//! fanotify events read right after, or in those of the last few rounds (kept,
//! since a kernel record can reach user space rounds after the fanotify events of
//! what followed it). A directory on the path that moved is followed by handle. A
//! truncate still unexplained waits a few rounds, then its tree is rescanned.

use std::{
    collections::VecDeque,
    ffi::OsStr,
    os::fd::{AsRawFd, OwnedFd},
    path::{Component, Path, PathBuf},
};

use agent_common::abi::Key;
use nix::fcntl::OFlag;

use super::{fanotify::Handle, index::statx_fd};

/// A name event seen recently: an inode arriving at or leaving `(dir, name)`.
#[derive(Clone, Debug)]
pub struct NameEvent {
    pub dir: Key,
    pub name: Box<[u8]>,
    /// The inode concerned (opened only when a truncate matches the name).
    pub object: Option<Handle>,
    /// The inode left the name (rename from it, unlink); otherwise it arrived.
    pub left: bool,
    /// The inode is a directory: followed when a truncated path's directory
    /// moved, never truncated itself.
    pub is_dir: bool,
}

/// A truncate by path waiting for this round's name events.
#[derive(Clone, Debug)]
pub struct PathTruncate {
    /// The directories the path's parent may be: on disk now, and in the index.
    /// Those reached by following this round's directory renames along `path` are
    /// added when the truncate is resolved.
    pub dirs: Vec<Key>,
    /// The absolute path that was truncated.
    pub path: PathBuf,
    pub name: Box<[u8]>,
    pub size: u64,
    /// No inode was found at the path: the truncate is lost unless an event says
    /// which inode left the name.
    pub unresolved: bool,
    /// The tree the path lies in, to rescan when nothing resolves it.
    pub root: Option<u16>,
    /// Rounds this truncate has already waited for an explanation.
    pub tries: u8,
}

/// The truncates by path of one round and the name events they are matched with.
#[derive(Debug, Default)]
pub struct PathTruncates {
    pending: Vec<PathTruncate>,
    /// Name events of the last rounds (oldest first) and of this one.
    previous: VecDeque<Vec<NameEvent>>,
    current: Vec<NameEvent>,
}

/// Rounds of name events kept: a kernel record can reach user space a few rounds
/// after the fanotify events of what followed it (the ring buffer is read only up
/// to a record another CPU has reserved and not yet committed).
const ROUNDS_KEPT: usize = 8;

/// Rounds an unexplained truncate waits for the event that explains it before its
/// tree is rescanned (the name may be left just after this round's events were read).
const TRIES: u8 = 3;

/// What matching decided for this round.
#[derive(Debug, Default)]
pub struct Resolution {
    /// `(inode handle, size)` pairs to record as truncates.
    pub truncates: Vec<(Handle, u64)>,
    /// `(inode, size)` pairs found in the truncated name's directory.
    pub found: Vec<(Key, u64)>,
    /// Truncates nothing explains: their trees must be rescanned (`None`: every tree).
    pub rescan: Vec<Option<u16>>,
}

impl PathTruncates {
    /// Records a truncate by path to be matched at the end of this round's drains.
    pub fn push(&mut self, t: PathTruncate) {
        self.pending.push(t);
    }

    /// Records a name event of this round.
    pub fn saw(&mut self, ev: NameEvent) {
        self.current.push(ev);
    }

    /// Whether any truncate waits, so that callers only collect name events then.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Matches this round's truncates with the name events of this round and the
    /// previous one, and starts a new round. `open` opens a handle of an event;
    /// `stat_in` looks a name up in a directory (by inode) wherever it is now.
    pub fn resolve(
        &mut self,
        open: &mut dyn FnMut(&Handle) -> Option<OwnedFd>,
        stat_in: &mut dyn FnMut(Key, &[u8]) -> Option<Key>,
    ) -> Resolution {
        let mut out = Resolution::default();
        let mut retry = Vec::new();
        for mut t in std::mem::take(&mut self.pending) {
            let mut explained = false;
            for (dir, file) in self.find_dirs(&t.path, &t.name, open) {
                if let Some(k) = file {
                    out.found.push((k, t.size));
                    explained = true;
                }
                if !t.dirs.contains(&dir) {
                    t.dirs.push(dir);
                }
            }
            // The name is often still there and only its path is stale (a directory
            // above it was renamed right after the cut).
            for &dir in &t.dirs {
                if let Some(k) = stat_in(dir, &t.name) {
                    out.found.push((k, t.size));
                    explained = true;
                }
            }
            for ev in self.events() {
                if ev.is_dir || *ev.name != *t.name || !t.dirs.contains(&ev.dir) {
                    continue;
                }
                if let Some(h) = &ev.object {
                    out.truncates.push((h.clone(), t.size));
                }
                explained |= ev.left;
            }
            if t.unresolved && !explained && t.tries + 1 < TRIES {
                t.tries += 1;
                retry.push(t);
                continue;
            }
            if t.unresolved && !explained {
                tracing::info!(
                    path = %t.path.display(),
                    dirs = ?t.dirs.iter().map(|k| k.ino).collect::<Vec<_>>(),
                    same_name = ?self.events()
                        .filter(|ev| *ev.name == *t.name)
                        .map(|ev| (ev.dir.ino, ev.left))
                        .collect::<Vec<_>>(),
                    "truncate(2) that no name event explains"
                );
                out.rescan.push(t.root);
            }
        }
        self.pending = retry;
        self.previous.push_back(std::mem::take(&mut self.current));
        while self.previous.len() > ROUNDS_KEPT {
            self.previous.pop_front();
        }
        out
    }

    /// The name events kept, oldest first.
    fn events(&self) -> impl Iterator<Item = &NameEvent> {
        self.previous.iter().flatten().chain(self.current.iter())
    }

    /// The directories that may have held `path`'s last component when it was
    /// truncated. The path is walked from `/`; at each step the walk goes on into
    /// the directory found by that name now and into every directory this round or
    /// the previous one saw leave that name (followed by handle, wherever it went).
    /// Every rename after the cut is among those events, so the directory that held
    /// the file is among the results; the others only get a harmless extra truncate.
    /// Each comes with the file its directory holds at that name now, if any.
    fn find_dirs(
        &self,
        path: &Path,
        leaf: &[u8],
        open: &mut dyn FnMut(&Handle) -> Option<OwnedFd>,
    ) -> Vec<(Key, Option<Key>)> {
        /// Directories followed at once; paths whose every level was exchanged
        /// could otherwise multiply them.
        const MAX_BRANCHES: usize = 16;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let Ok(root) = nix::fcntl::open("/", flags, nix::sys::stat::Mode::empty()) else {
            return Vec::new();
        };
        let Some(parent) = path.parent() else {
            return Vec::new();
        };
        let mut level = vec![root];
        for c in parent.components() {
            let name: &OsStr = match c {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(n) => n,
                // `..` after a move means something else than it did: give up.
                _ => return Vec::new(),
            };
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
            let mut next = Vec::new();
            let mut seen = Vec::new();
            for fd in &level {
                let Some(here) = statx_fd(fd.as_raw_fd()).map(|s| s.key) else {
                    continue;
                };
                let mut push = |d: OwnedFd, seen: &mut Vec<Key>| {
                    if let Some(k) = statx_fd(d.as_raw_fd()).map(|s| s.key)
                        && !seen.contains(&k)
                    {
                        seen.push(k);
                        next.push(d);
                    }
                };
                if let Ok(d) = nix::fcntl::openat(fd, name, flags, nix::sys::stat::Mode::empty()) {
                    push(d, &mut seen);
                }
                for ev in self.events() {
                    if ev.is_dir
                        && ev.left
                        && ev.dir == here
                        && *ev.name == *bytes
                        && let Some(d) = ev.object.as_ref().and_then(&mut *open)
                    {
                        push(d, &mut seen);
                    }
                }
            }
            next.truncate(MAX_BRANCHES);
            if next.is_empty() {
                tracing::debug!(
                    at = %String::from_utf8_lossy(bytes),
                    "a truncated path's directory is not found"
                );
                return Vec::new();
            }
            level = next;
        }
        level
            .iter()
            .filter_map(|fd| {
                let dir = statx_fd(fd.as_raw_fd())?.key;
                let file = super::index::statx_at(fd.as_raw_fd(), leaf)
                    .filter(|st| st.kind == super::index::Kind::File)
                    .map(|st| st.key);
                Some((dir, file))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ino: u64) -> Key {
        Key { dev: 1, ino }
    }

    fn handle(n: u8) -> Handle {
        Handle {
            fsid: [1, 2],
            handle_type: 1,
            bytes: vec![n],
        }
    }

    fn ev(dir: u64, name: &str, object: u8, left: bool) -> NameEvent {
        NameEvent {
            dir: key(dir),
            name: name.as_bytes().into(),
            object: Some(handle(object)),
            left,
            is_dir: false,
        }
    }

    fn cut(dir: u64, name: &str, unresolved: bool) -> PathTruncate {
        PathTruncate {
            dirs: vec![key(dir)],
            path: PathBuf::from("/nonexistent-tandem/x").join(name),
            name: name.as_bytes().into(),
            size: 7,
            unresolved,
            root: Some(0),
            tries: 0,
        }
    }

    #[test]
    fn a_file_renamed_away_after_the_cut_gets_the_truncate() {
        let mut p = PathTruncates::default();
        p.push(cut(10, "f", true));
        p.saw(ev(10, "g", 99, true));
        p.saw(ev(10, "f", 42, true));
        p.saw(ev(11, "f", 43, true));
        let r = p.resolve(&mut |_| None, &mut |_, _| None);
        assert_eq!(r.truncates, vec![(handle(42), 7)]);
        assert!(r.rescan.is_empty());
    }

    #[test]
    fn events_of_the_previous_round_count_and_arrivals_alone_do_not_explain() {
        let mut p = PathTruncates::default();
        p.saw(ev(10, "f", 42, true));
        assert!(
            p.resolve(&mut |_| None, &mut |_, _| None)
                .truncates
                .is_empty(),
            "no truncate waited"
        );
        p.push(cut(10, "f", true));
        let r = p.resolve(&mut |_| None, &mut |_, _| None);
        assert_eq!(r.truncates, vec![(handle(42), 7)]);
        assert!(r.rescan.is_empty());

        // Only an arrival at the name: the cut file's departure is unexplained. It
        // waits a few rounds for the event, then its tree is rescanned.
        for _ in 0..=ROUNDS_KEPT {
            p.resolve(&mut |_| None, &mut |_, _| None);
        }
        p.push(cut(10, "f", true));
        p.saw(ev(10, "f", 50, false));
        let r = p.resolve(&mut |_| None, &mut |_, _| None);
        assert_eq!(r.truncates, vec![(handle(50), 7)]);
        assert!(r.rescan.is_empty(), "it waits first");
        let mut rescans = Vec::new();
        for _ in 1..TRIES {
            rescans.extend(p.resolve(&mut |_| None, &mut |_, _| None).rescan);
        }
        assert_eq!(rescans, vec![Some(0)]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_departure_seen_a_round_later_explains_the_truncate() {
        let mut p = PathTruncates::default();
        p.push(cut(10, "f", true));
        assert!(p.resolve(&mut |_| None, &mut |_, _| None).rescan.is_empty());
        p.saw(ev(10, "f", 42, true));
        let r = p.resolve(&mut |_| None, &mut |_, _| None);
        assert_eq!(r.truncates, vec![(handle(42), 7)]);
        assert!(r.rescan.is_empty());
        assert!(p.is_empty());
    }

    #[test]
    fn a_directory_renamed_after_the_cut_is_followed_by_its_handle() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let (a, x) = (tmp.path().join("a"), tmp.path().join("x"));
        std::fs::create_dir_all(a.join("b")).unwrap();
        std::fs::create_dir(&x).unwrap();
        std::fs::write(a.join("b/f"), b"data").unwrap();
        let cut = a.join("b/f");
        // After the cut, b moves to x: the path no longer leads to f.
        std::fs::rename(a.join("b"), x.join("b")).unwrap();
        let real = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            Key {
                dev: agent_common::abi::kernel_dev(m.dev()),
                ino: m.ino(),
            }
        };
        let mut p = PathTruncates::default();
        p.saw(NameEvent {
            dir: real(&a),
            name: b"b".as_slice().into(),
            object: Some(handle(1)),
            left: true,
            is_dir: true,
        });
        p.push(PathTruncate {
            dirs: Vec::new(),
            path: cut,
            name: b"f".as_slice().into(),
            size: 2,
            unresolved: true,
            root: Some(0),
            tries: 0,
        });
        let moved = x.join("b");
        let r = p.resolve(
            &mut |h| {
                (h.bytes == [1]).then(|| {
                    nix::fcntl::open(&moved, OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap()
                })
            },
            &mut |_, _| None,
        );
        assert_eq!(r.found, vec![(real(&x.join("b/f")), 2)]);
        assert!(r.rescan.is_empty(), "{r:?}");
    }

    #[test]
    fn a_resolved_truncate_never_rescans() {
        let mut p = PathTruncates::default();
        p.push(cut(10, "f", false));
        assert!(p.resolve(&mut |_| None, &mut |_, _| None).rescan.is_empty());
    }
}
