//! Shared writable mappings of watched files.
//!
//! A store through a mapping is no syscall: ext4 reports only the first store to a
//! clean page (writeback_dirty_folio) and tmpfs reports nothing at all. So every file
//! with a shared writable mapping is verified by content: its blocks are hashed when
//! the mapping appears, and compared again at the flush points the kernel reports
//! (msync, munmap) and periodically while the mapping lives, emitting the blocks
//! that changed. Once every process that mapped it has gone, a last comparison is
//! made and the file is forgotten.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use agent_common::abi::Key;

/// Granularity of content verification.
pub const BLOCK: u64 = 64 * 1024;

/// How often a live mapping is compared even without a flush point.
pub const PERIOD: Duration = Duration::from_millis(100);

/// A block digest; 16 bytes of BLAKE3 are ample to detect change.
type Digest = [u8; 16];

#[derive(Debug)]
struct MappedFile {
    tgids: HashSet<u32>,
    blocks: Vec<Digest>,
    checked: Instant,
}

/// The mapped files and their last known block digests.
#[derive(Debug, Default)]
pub struct Mapped {
    files: HashMap<Key, MappedFile>,
}

impl Mapped {
    /// Records a new mapping of `key` by `tgid`; `path` is where it can be read.
    pub fn add(&mut self, key: Key, tgid: u32, path: &Path, now: Instant) {
        let entry = self.files.entry(key).or_insert_with(|| MappedFile {
            tgids: HashSet::new(),
            blocks: digest_blocks(path, key).unwrap_or_default(),
            checked: now,
        });
        entry.tgids.insert(tgid);
    }

    /// Whether any file is mapped.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files `tgid` has mapped.
    #[must_use]
    pub fn of_tgid(&self, tgid: u32) -> Vec<Key> {
        self.files
            .iter()
            .filter(|(_, f)| f.tgids.contains(&tgid))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Every mapped file: a durability point compares them all.
    #[must_use]
    pub fn all(&self) -> Vec<Key> {
        self.files.keys().copied().collect()
    }

    /// The files due for a periodic comparison.
    #[must_use]
    pub fn due(&self, now: Instant) -> Vec<Key> {
        self.files
            .iter()
            .filter(|(_, f)| now.duration_since(f.checked) >= PERIOD)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Compares `key`'s content at `path` with its digests and returns the changed
    /// ranges `(offset, len)`. A file that cannot be read any more returns nothing
    /// and is forgotten (it was removed; its removal is reported by name).
    pub fn compare(&mut self, key: Key, path: Option<&Path>, now: Instant) -> Vec<(u64, u64)> {
        let Some(file) = self.files.get_mut(&key) else {
            return Vec::new();
        };
        file.checked = now;
        let Some(fresh) = path.and_then(|p| digest_blocks(p, key).ok()) else {
            self.files.remove(&key);
            return Vec::new();
        };
        let mut changed: Vec<(u64, u64)> = Vec::new();
        let n = fresh.len().max(file.blocks.len());
        for i in 0..n {
            if fresh.get(i) != file.blocks.get(i) {
                let off = i as u64 * BLOCK;
                match changed.last_mut() {
                    Some((o, l)) if *o + *l == off => *l += BLOCK,
                    _ => changed.push((off, BLOCK)),
                }
            }
        }
        file.blocks = fresh;
        // Forget the file once nobody maps it: the comparison just made was the last.
        file.tgids
            .retain(|&t| Path::new(&format!("/proc/{t}")).exists());
        if file.tgids.is_empty() {
            self.files.remove(&key);
        }
        changed
    }
}

/// The digest of a block that lies wholly in a hole: sparse files are hashed by
/// their data only, so a mapped 5 GiB sparse file costs what its data costs.
const HOLE: Digest = [0; 16];

/// Digests of every block of a file; blocks in holes get [`HOLE`] without a read.
///
/// The path comes from the index and may name something else by now: the file is
/// opened without blocking and without following a symlink, and refused unless it
/// is the regular file `key` names (opening a FIFO would block the engine).
fn digest_blocks(path: &Path, key: Key) -> std::io::Result<Vec<Digest>> {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.ino() != key.ino {
        return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
    }
    let size = meta.len();
    let blocks = size.div_ceil(BLOCK);
    let mut out = Vec::with_capacity(usize::try_from(blocks).unwrap_or(0));
    let mut buf = vec![0u8; BLOCK as usize];
    let mut i = 0u64;
    while i < blocks {
        let start = i * BLOCK;
        // SEEK_DATA finds the next byte of data; every block before it is a hole.
        let data = match nix::unistd::lseek(
            &f,
            i64::try_from(start).unwrap_or(i64::MAX),
            nix::unistd::Whence::SeekData,
        ) {
            Ok(off) => u64::try_from(off).unwrap_or(size),
            Err(nix::Error::ENXIO) => size,
            // A filesystem without SEEK_DATA: read everything.
            Err(_) => start,
        };
        let first_data_block = (data / BLOCK).min(blocks);
        while i < first_data_block {
            out.push(HOLE);
            i += 1;
        }
        if i >= blocks {
            break;
        }
        let start = i * BLOCK;
        let want = usize::try_from(BLOCK.min(size - start)).unwrap_or(0);
        let mut filled = 0;
        while filled < want {
            let n = f.read_at(&mut buf[filled..want], start + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let h = blake3::hash(&buf[..filled]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&h.as_bytes()[..16]);
        out.push(d);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::FileExt};

    use super::*;

    #[test]
    fn changed_blocks_are_found_and_dead_mappers_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        fs::write(&p, vec![0u8; 4 * BLOCK as usize]).unwrap();
        let key = Key {
            dev: 1,
            ino: std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()),
        };
        let mut m = Mapped::default();
        let now = Instant::now();
        m.add(key, std::process::id(), &p, now);
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"x", BLOCK + 10).unwrap();
        f.write_all_at(b"y", 2 * BLOCK).unwrap();
        f.write_all_at(b"z", 5 * BLOCK).unwrap();
        let changed = m.compare(key, Some(&p), now);
        // Growing the file makes its new blocks changed too, holes included.
        assert_eq!(changed, vec![(BLOCK, 2 * BLOCK), (4 * BLOCK, 2 * BLOCK)]);
        assert_eq!(m.of_tgid(std::process::id()), vec![key]);
        assert!(m.compare(key, Some(&p), now).is_empty());
        // A sparse file is compared by its data only, and a new hole is a change.
        let sparse = tmp.path().join("sparse");
        let sf = fs::File::create(&sparse).unwrap();
        sf.write_all_at(b"d", 5 << 30).unwrap();
        let skey = Key {
            dev: 1,
            ino: std::os::unix::fs::MetadataExt::ino(&fs::metadata(&sparse).unwrap()),
        };
        m.add(skey, std::process::id(), &sparse, now);
        sf.write_all_at(b"e", 1 << 30).unwrap();
        assert_eq!(m.compare(skey, Some(&sparse), now), vec![(1 << 30, BLOCK)]);
        // A path that names something else now (here a FIFO, which would block an
        // open) is refused, not read: the file is forgotten.
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(m.compare(skey, Some(&fifo), now).is_empty());
        // A mapper that no longer exists: the next comparison is the last.
        let mut m2 = Mapped::default();
        m2.add(key, u32::MAX - 1, &p, now);
        assert!(m2.compare(key, Some(&p), now).is_empty());
        assert!(m2.is_empty());
    }
}
