//! What the applier changed since its last sync, so that a barrier costs the
//! secondary as little as what it must make durable.
//!
//! The common durability point of a database is a few writes into files that
//! already exist, then fsync: the files' own `fdatasync` makes those durable without
//! flushing the rest of the filesystem, which `syncfs(2)` does (on a shared disk,
//! everyone else's dirty data too). Anything that changes names or attributes, or too
//! many files, falls back to one `syncfs`, which covers directories as well.

/// How many files are synced one by one before one `syncfs` is cheaper.
const MAX_FILES: usize = 16;

/// Changes applied since the last sync.
#[derive(Debug, Eq, PartialEq)]
pub(super) enum Unsynced {
    /// Only the data (and size) of these existing files: (path, whether their
    /// size or allocation changed otherwise than by a write, which asks for `fsync`
    /// rather than `fdatasync`).
    Files(Vec<(Vec<u8>, bool)>),
    /// Anything else: one `syncfs` of the filesystem.
    All,
}

// === impl Unsynced ===

impl Unsynced {
    /// Nothing changed since the last sync.
    pub(super) fn clean() -> Self {
        Self::Files(Vec::new())
    }

    /// The data of the existing file at `path` changed; `metadata`: by a truncate
    /// or a punched hole.
    pub(super) fn data(&mut self, path: &[u8], metadata: bool) {
        let Self::Files(files) = self else { return };
        if let Some(f) = files.iter_mut().find(|(p, _)| p == path) {
            f.1 |= metadata;
        } else if files.len() < MAX_FILES {
            files.push((path.to_vec(), metadata));
        } else {
            *self = Self::All;
        }
    }

    /// A change only a sync of the whole filesystem is sure to cover.
    pub(super) fn everything(&mut self) {
        *self = Self::All;
    }

    /// What to sync now; afterwards, nothing.
    pub(super) fn take(&mut self) -> Self {
        std::mem::replace(self, Self::clean())
    }
}

/// Until its first sync, an applier knows nothing of what an earlier one (an earlier
/// session, before a crash) left unsynced.
impl Default for Unsynced {
    fn default() -> Self {
        Self::All
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_a_few_files_sync_those_files_else_everything() {
        let mut u = Unsynced::default();
        assert_eq!(
            u.take(),
            Unsynced::All,
            "an earlier session may have left some"
        );
        assert_eq!(u.take(), Unsynced::clean());
        u.data(b"a", false);
        u.data(b"a", false);
        u.data(b"b", true);
        u.data(b"a", true);
        assert_eq!(
            u.take(),
            Unsynced::Files(vec![(b"a".to_vec(), true), (b"b".to_vec(), true)])
        );
        u.data(b"a", false);
        u.everything();
        u.data(b"b", false);
        assert_eq!(u.take(), Unsynced::All);
        for i in 0..=MAX_FILES {
            u.data(format!("f{i}").as_bytes(), false);
        }
        assert_eq!(u.take(), Unsynced::All);
    }
}
