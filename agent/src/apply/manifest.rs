//! The secondary's manifest for a resync: one [`Manifest`] per entry under the root,
//! with BLAKE3 hashes of each block of regular files, so that the primary sends only
//! the blocks that differ.
//!
//! The walk is depth-first with an explicit stack of directory paths (never
//! recursion), holds one directory open at a time, opens each directory from the
//! root with the confinement flags (no symlink is followed, no mount entered) and
//! lists entries sorted by name. A directory is reported when its parent is listed,
//! so parents always come before their children. Only regular files are opened, and
//! without updating their access time, which is a replicated attribute.

use std::{
    ffi::{CStr, CString},
    fs::File,
    io,
    os::{
        fd::{AsFd, BorrowedFd},
        unix::fs::FileExt,
    },
};

use agent_common::wire::{EntryKind, MAX_PATH_BYTES, Manifest};

use super::{
    Applier, ApplyError,
    confined::{self, hostile, is_type},
    tree,
};

/// Bytes read per call while hashing.
const READ_CHUNK: usize = 64 * 1024;

// === impl Applier ===

impl Applier {
    /// Walks the whole tree under the root, calling `out` with one entry at a time,
    /// parents before children. `dir` and `block_size` are copied into each entry.
    ///
    /// Entries whose path would be longer than [`MAX_PATH_BYTES`] cannot be named on
    /// the wire and are skipped (with a warning), with everything beneath them.
    pub fn manifest(
        &self,
        dir: u16,
        block_size: u32,
        out: &mut dyn FnMut(Manifest) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        if block_size == 0 {
            return Err(hostile(b"", "manifest block size of 0"));
        }
        let mut pending: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = pending.pop() {
            let fail = |e| ApplyError::io("list", &rel, e);
            let cpath = if rel.is_empty() {
                c".".to_owned()
            } else {
                CString::new(rel.as_slice()).map_err(|_| hostile(&rel, "NUL in a name"))?
            };
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let dir_fd = match confined::openat2(self.root.as_fd(), &cpath, flags, 0) {
                Ok(fd) => fd,
                // Gone or replaced since its parent was listed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    continue;
                }
                Err(e) => return Err(fail(e)),
            };
            let mut entries = tree::list(dir_fd.as_fd()).map_err(fail)?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let mut subdirs = Vec::new();
            for entry in entries {
                let mut path = rel.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(entry.name.as_bytes());
                if path.len() > MAX_PATH_BYTES {
                    tracing::warn!(
                        path = %path.get(..64).unwrap_or_default().escape_ascii(),
                        "Skipping an entry whose path is too long for the wire"
                    );
                    continue;
                }
                let fail = |e| ApplyError::io("describe", &path, e);
                let Some(m) = describe(
                    dir_fd.as_fd(),
                    &entry.name,
                    path.clone(),
                    dir,
                    block_size,
                    true,
                )
                .map_err(fail)?
                else {
                    continue;
                };
                // A directory whose children could not be named on the wire is
                // reported but not entered.
                if m.kind == EntryKind::Dir && path.len() + 2 <= MAX_PATH_BYTES {
                    subdirs.push(path);
                }
                out(m)?;
            }
            // Reversed, so that the stack pops them in name order.
            pending.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}

/// One entry of `dir_fd`, named `path` on the wire; `None` when it vanished or is
/// of no kind the wire knows. Regular files are hashed only with `hash` (otherwise
/// they get their size and no blocks).
pub(super) fn describe(
    dir_fd: BorrowedFd<'_>,
    name: &CStr,
    path: Vec<u8>,
    dir: u16,
    block_size: u32,
    hash: bool,
) -> io::Result<Option<Manifest>> {
    let Some(st) = confined::lstat_at(dir_fd, name)? else {
        return Ok(None);
    };
    let Some(kind) = kind_of(st.st_mode) else {
        return Ok(None);
    };
    let file_block = block_size_for(u64::try_from(st.st_size).unwrap_or(0), block_size);
    let (size, blocks) = match kind {
        EntryKind::File if hash => match hash_file(dir_fd, name, &st, file_block)? {
            Some(hashed) => hashed,
            None => return Ok(None),
        },
        EntryKind::File | EntryKind::Symlink => {
            (u64::try_from(st.st_size).unwrap_or(0), Vec::new())
        }
        _ => (0, Vec::new()),
    };
    Ok(Some(Manifest {
        dir,
        path,
        kind,
        size,
        blocks,
        block_size: file_block,
    }))
}

/// Most block hashes one entry carries: 65,536 of 32 bytes keep a manifest frame
/// at 2 MiB, half the frame limit.
const MAX_BLOCKS: u64 = 1 << 16;

/// The block size used for a file of `size` bytes: the requested one, doubled until
/// the file needs at most [`MAX_BLOCKS`] hashes.
fn block_size_for(size: u64, requested: u32) -> u32 {
    let mut bs = u64::from(requested);
    while size.div_ceil(bs.max(1)) > MAX_BLOCKS && bs < (1 << 30) {
        bs *= 2;
    }
    u32::try_from(bs).unwrap_or(1 << 30)
}

/// The size and block hashes of the regular file `name` of `dir`, seen as `seen`;
/// `None` if it was removed or replaced meanwhile.
fn hash_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    seen: &libc::stat,
    block_size: u32,
) -> io::Result<Option<(u64, Vec<[u8; 32]>)>> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let fd = match confined::openat2(dir, name, flags | libc::O_NOATIME, 0) {
        // O_NOATIME is refused on files of other owners without CAP_FOWNER.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => confined::openat2(dir, name, flags, 0),
        other => other,
    };
    let file = match fd {
        Ok(fd) => File::from(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = confined::fstat(file.as_fd())?;
    if !is_type(st.st_mode, libc::S_IFREG) || (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino) {
        return Ok(None);
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let block_size = u64::from(block_size);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut blocks = Vec::new();
    let mut pos = 0u64;
    'blocks: while pos < size {
        let block_start = pos;
        let block_end = size.min(pos.saturating_add(block_size));
        let mut hasher = blake3::Hasher::new();
        while pos < block_end {
            let want = usize::try_from(block_end - pos)
                .unwrap_or(READ_CHUNK)
                .min(READ_CHUNK);
            let n = file.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                // The file shrank while being read: what was read is the last block.
                if pos > block_start {
                    blocks.push(*hasher.finalize().as_bytes());
                }
                break 'blocks;
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        blocks.push(*hasher.finalize().as_bytes());
    }
    Ok(Some((pos, blocks)))
}

fn kind_of(mode: libc::mode_t) -> Option<EntryKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => EntryKind::File,
        libc::S_IFDIR => EntryKind::Dir,
        libc::S_IFLNK => EntryKind::Symlink,
        libc::S_IFIFO => EntryKind::Fifo,
        libc::S_IFSOCK => EntryKind::Socket,
        libc::S_IFCHR => EntryKind::CharDevice,
        libc::S_IFBLK => EntryKind::BlockDevice,
        _ => return None,
    })
}

#[cfg(test)]
mod block_size_tests {
    use super::*;

    #[test]
    fn large_files_get_larger_blocks_so_a_manifest_fits_a_frame() {
        assert_eq!(block_size_for(0, 4096), 4096);
        assert_eq!(block_size_for(256 << 20, 4096), 4096);
        assert_eq!(block_size_for((256 << 20) + 1, 4096), 8192);
        let bs = block_size_for(1 << 40, 4096);
        assert!((1u64 << 40).div_ceil(u64::from(bs)) <= MAX_BLOCKS);
        let frame = agent_common::wire::Frame::Manifest(Manifest {
            dir: 0,
            path: vec![b'x'; MAX_PATH_BYTES],
            kind: EntryKind::File,
            size: 1 << 40,
            blocks: vec![[0xff; 32]; usize::try_from(MAX_BLOCKS).expect("fits")],
            block_size: bs,
        });
        assert!(agent_common::wire::encode(&frame).is_ok());
    }
}
