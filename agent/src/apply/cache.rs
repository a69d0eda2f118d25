//! A small cache of files open for writing, keyed by peer path, so that a stream of
//! small writes to one file does not resolve and open it for each record.
//!
//! An entry stays valid as long as its path names the same inode. Only the applier
//! changes names in the replicated tree, and it calls [`FileCache::invalidate`] for
//! every path a create, remove, rename, exchange or link touches, which drops the
//! path and everything beneath it.

use std::{
    collections::{HashMap, hash_map::Entry},
    fs::File,
};

/// How many files stay open at most.
pub(super) const CAPACITY: usize = 64;

/// Open files by path, with a use counter to evict the least recently used.
#[derive(Debug, Default)]
pub(super) struct FileCache {
    files: HashMap<Vec<u8>, Slot>,
    tick: u64,
}

#[derive(Debug)]
struct Slot {
    file: File,
    used: u64,
}

// === impl FileCache ===

impl FileCache {
    /// The file open for `path`, opened by `open` on a miss.
    pub(super) fn get_or_open<E>(
        &mut self,
        path: &[u8],
        open: impl FnOnce() -> Result<File, E>,
    ) -> Result<&File, E> {
        self.tick += 1;
        if self.files.len() >= CAPACITY && !self.files.contains_key(path) {
            self.evict_oldest();
        }
        let slot = match self.files.entry(path.to_vec()) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => slot.insert(Slot {
                file: open()?,
                used: 0,
            }),
        };
        slot.used = self.tick;
        Ok(&slot.file)
    }

    /// Keeps `file` as the one open for `path` (a file the applier just created).
    pub(super) fn insert(&mut self, path: &[u8], file: File) {
        self.tick += 1;
        if self.files.len() >= CAPACITY && !self.files.contains_key(path) {
            self.evict_oldest();
        }
        self.files.insert(
            path.to_vec(),
            Slot {
                file,
                used: self.tick,
            },
        );
    }

    /// Forgets `path` and every path beneath it.
    pub(super) fn invalidate(&mut self, path: &[u8]) {
        self.files.retain(|cached, _| !is_under(cached, path));
    }

    /// How many files are open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.files.len()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .files
            .iter()
            .min_by_key(|(_, slot)| slot.used)
            .map(|(path, _)| path.clone());
        if let Some(path) = oldest {
            self.files.remove(&path);
        }
    }
}

/// Whether `path` is `dir` or lies beneath it.
pub(super) fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'/'))
}
