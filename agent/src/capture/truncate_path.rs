//! Resolving `truncate(2)` by path to the inodes it may have cut.
//!
//! The kernel reports `truncate(path, size)` with the path only (there is no file to
//! take an inode from), and user space reads it a few milliseconds later. By then the
//! file may have been renamed or unlinked, and another file may hold the name. The
//! engine looks the path up on disk and in the index (the consumer's view); this
//! module covers what both miss: every inode that fanotify saw arrive at or leave the
//! truncated name (in this round's events or the previous round's) gets the truncate
//! too. A truncate recorded for an inode that was not cut only makes its current size
//! be described again, so over-matching costs little.
//!
//! Why this is complete: a file that was at the name when it was cut and is not there
//! when the engine looks left through a rename or an unlink of that very name, after
//! the cut. That event was queued before the engine's lookup, so it is in the
//! fanotify events read right after (or, when the cut landed between the previous
//! round's two drains, in the previous round's events). Only when the name's
//! directory cannot be identified at all (it moved too) is the tree rescanned.

use std::{
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
    /// Empty when neither knows it: the directory is then looked for by following
    /// this round's directory renames along `path`.
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
}

/// The truncates by path of one round and the name events they are matched with.
#[derive(Debug, Default)]
pub struct PathTruncates {
    pending: Vec<PathTruncate>,
    /// Name events of the previous round and of this one.
    previous: Vec<NameEvent>,
    current: Vec<NameEvent>,
}

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
        for mut t in std::mem::take(&mut self.pending) {
            if t.dirs.is_empty()
                && let Some(dir) = self.find_dir(&t.path, open)
            {
                t.dirs.push(dir);
            }
            let mut explained = false;
            // The name is often still there and only its path is stale (a directory
            // above it was renamed right after the cut).
            for &dir in &t.dirs {
                if let Some(k) = stat_in(dir, &t.name) {
                    out.found.push((k, t.size));
                    explained = true;
                }
            }
            for ev in self.previous.iter().chain(self.current.iter()) {
                if ev.is_dir || *ev.name != *t.name || !t.dirs.contains(&ev.dir) {
                    continue;
                }
                if let Some(h) = &ev.object {
                    out.truncates.push((h.clone(), t.size));
                }
                explained |= ev.left;
            }
            if t.unresolved && !explained {
                tracing::info!(
                    path = %t.path.display(),
                    dirs = ?t.dirs.iter().map(|k| k.ino).collect::<Vec<_>>(),
                    same_name = ?self
                        .previous
                        .iter()
                        .chain(self.current.iter())
                        .filter(|ev| *ev.name == *t.name)
                        .map(|ev| (ev.dir.ino, ev.left))
                        .collect::<Vec<_>>(),
                    "truncate(2) that no name event explains"
                );
                out.rescan.push(t.root);
            }
        }
        self.previous = std::mem::take(&mut self.current);
        out
    }

    /// The directory that held `path`'s last component when it was truncated:
    /// the path is walked on disk, and where a directory on it is no longer found
    /// by name, through the directory this round saw leave that name.
    fn find_dir(
        &self,
        path: &Path,
        open: &mut dyn FnMut(&Handle) -> Option<OwnedFd>,
    ) -> Option<Key> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut fd = nix::fcntl::open("/", flags, nix::sys::stat::Mode::empty()).ok()?;
        for c in path.parent()?.components() {
            let name: &OsStr = match c {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(n) => n,
                // `..` after a move means something else than it did: give up.
                _ => return None,
            };
            if let Ok(next) = nix::fcntl::openat(&fd, name, flags, nix::sys::stat::Mode::empty()) {
                fd = next;
                continue;
            }
            let here = statx_fd(fd.as_raw_fd())?.key;
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
            let moved = self
                .previous
                .iter()
                .chain(self.current.iter())
                .filter(|ev| ev.is_dir && ev.left && ev.dir == here && *ev.name == *bytes)
                .find_map(|ev| ev.object.as_ref().and_then(&mut *open))?;
            fd = moved;
        }
        statx_fd(fd.as_raw_fd()).map(|s| s.key)
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

        // Only an arrival at the name: the cut file's departure is unexplained.
        p.resolve(&mut |_| None, &mut |_, _| None);
        p.push(cut(10, "f", true));
        p.saw(ev(10, "f", 50, false));
        let r = p.resolve(&mut |_| None, &mut |_, _| None);
        assert_eq!(r.truncates, vec![(handle(50), 7)]);
        assert_eq!(r.rescan, vec![Some(0)]);
    }

    #[test]
    fn a_resolved_truncate_never_rescans() {
        let mut p = PathTruncates::default();
        p.push(cut(10, "f", false));
        assert!(p.resolve(&mut |_| None, &mut |_, _| None).rescan.is_empty());
    }
}
