//! Data generations, after DRBD's generation identifiers: which node holds the newer
//! data, and whether both changed it on their own (divergence).
//!
//! A node draws a new `current` identifier whenever it starts changing data without
//! its peer (ALONE), pushing the one before onto `history`. A node that holds data
//! identical to its peer's (SECOND in sync) adopts the peer's identifiers. Comparing
//! two nodes' identifiers then tells which one has moved on from the other.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use agent_common::wire::Generations;

/// How many past identifiers are kept: enough to recognise a peer that missed a few
/// failovers, small enough for every Hello.
const HISTORY: usize = 16;

/// What two nodes' generations say about their data.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Relation {
    /// Same lineage and no change on either side since they parted.
    Same,
    /// This node's data is newer: it is the resync source.
    Newer,
    /// The peer's data is newer: this node is the resync target.
    Older,
    /// This node never held replicated data: it takes the peer's.
    Empty,
    /// The peer never held replicated data: it takes ours.
    PeerEmpty,
    /// Both changed data on their own since they last agreed.
    Diverged,
}

/// Compares this node's generations with the peer's.
#[must_use]
pub fn relate(mine: &Generations, peer: &Generations) -> Relation {
    if mine.current == 0 {
        return Relation::Empty;
    }
    if peer.current == 0 {
        return Relation::PeerEmpty;
    }
    if mine.current == peer.current {
        return Relation::Same;
    }
    if mine.history.contains(&peer.current) {
        return Relation::Newer;
    }
    if peer.history.contains(&mine.current) {
        return Relation::Older;
    }
    Relation::Diverged
}

/// The generations of this node, persisted crash-safely in the state directory.
#[derive(Debug)]
pub struct GenerationStore {
    path: PathBuf,
    value: Generations,
}

impl GenerationStore {
    /// Reads `<state_dir>/generations.json`; a missing file means a node that never
    /// held replicated data.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let path = state_dir.join("generations.json");
        let value = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Stored>(&bytes)
                .map(|s| Generations {
                    current: s.current,
                    history: s.history,
                })
                .map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Generations::default(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, value })
    }

    /// The current value.
    #[must_use]
    pub fn get(&self) -> &Generations {
        &self.value
    }

    /// Starts a new generation: this node changes data its peer does not have.
    pub fn start_new(&mut self) -> std::io::Result<()> {
        let mut next = self.value.clone();
        if next.current != 0 {
            next.history.insert(0, next.current);
            next.history.truncate(HISTORY);
        }
        next.current = fresh_id();
        self.store(next)
    }

    /// Adopts the peer's generations: the data is now identical to the peer's.
    pub fn adopt(&mut self, peer: &Generations) -> std::io::Result<()> {
        let mut next = peer.clone();
        next.history.truncate(HISTORY);
        self.store(next)
    }

    /// Writes the value to a temporary file, syncs it and renames it over the old
    /// one, so that a crash leaves either the old or the new value, never a mix.
    fn store(&mut self, next: Generations) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec(&Stored {
            current: next.current,
            history: next.history.clone(),
        })
        .map_err(std::io::Error::other)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        self.value = next;
        Ok(())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    current: u64,
    history: Vec<u64>,
}

/// A random non-zero identifier (zero means "never held data").
fn fresh_id() -> u64 {
    let mut buf = [0u8; 8];
    loop {
        // getrandom(2) from the kernel's pool; it does not block once the pool is
        // initialised, which it is long before an agent starts.
        // SAFETY: the buffer is valid for 8 bytes of writes.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == 8 {
            let v = u64::from_ne_bytes(buf);
            if v != 0 {
                return v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(current: u64, history: &[u64]) -> Generations {
        Generations {
            current,
            history: history.to_vec(),
        }
    }

    #[test]
    fn relations() {
        assert_eq!(relate(&g(0, &[]), &g(5, &[])), Relation::Empty);
        assert_eq!(relate(&g(5, &[]), &g(0, &[])), Relation::PeerEmpty);
        assert_eq!(relate(&g(5, &[3]), &g(5, &[3])), Relation::Same);
        assert_eq!(relate(&g(7, &[5, 3]), &g(5, &[3])), Relation::Newer);
        assert_eq!(relate(&g(5, &[3]), &g(7, &[5, 3])), Relation::Older);
        // Both went ALONE from 5: neither current is in the other's history.
        assert_eq!(relate(&g(7, &[5]), &g(9, &[5])), Relation::Diverged);
    }

    #[test]
    fn store_survives_reopen_and_keeps_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = GenerationStore::open(dir.path()).expect("open");
        assert_eq!(s.get().current, 0);
        s.start_new().expect("new");
        let first = s.get().current;
        s.start_new().expect("new");
        let second = s.get().current;
        assert_ne!(first, second);
        let again = GenerationStore::open(dir.path()).expect("reopen");
        assert_eq!(again.get(), &g(second, &[first]));
        let other_dir = tempfile::tempdir().expect("tempdir");
        let mut other = GenerationStore::open(other_dir.path()).expect("open");
        other.adopt(again.get()).expect("adopt");
        assert_eq!(relate(other.get(), again.get()), Relation::Same);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_fresh_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("generations.json"), b"{nope").expect("write");
        assert!(GenerationStore::open(dir.path()).is_err());
    }
}
