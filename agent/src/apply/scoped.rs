//! The manifest of chosen paths only, for a resync that the primary's change log
//! limits to what may differ: each path that exists is described with its block
//! hashes, and a directory also with the names (kinds and sizes, no hashes) of its
//! children, so that the primary can remove what it no longer has.

use std::{ffi::CString, os::fd::AsFd};

use agent_common::wire::{EntryKind, MAX_PATH_BYTES, Manifest};

use super::{
    Applier, ApplyError,
    confined::{self, hostile},
    manifest::describe,
    tree,
};

impl Applier {
    /// Describes each of `paths` (relative to the root; absent ones are skipped),
    /// parents before children when `paths` is sorted.
    pub fn manifest_paths(
        &self,
        dir: u16,
        block_size: u32,
        paths: &[Vec<u8>],
        out: &mut dyn FnMut(Manifest) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        if block_size == 0 {
            return Err(hostile(b"", "manifest block size of 0"));
        }
        for path in paths {
            confined::validate(path)?;
            let at = match confined::locate(self.root.as_fd(), path) {
                Ok(at) => at,
                // Its parent is gone: so is the entry.
                Err(ApplyError::Io { .. }) => continue,
                Err(e) => return Err(e),
            };
            let fail = |e| ApplyError::io("describe", path, e);
            let Some(m) = describe(
                at.parent.as_fd(),
                &at.name,
                path.clone(),
                dir,
                block_size,
                true,
            )
            .map_err(fail)?
            else {
                continue;
            };
            let is_dir = m.kind == EntryKind::Dir;
            out(m)?;
            if is_dir {
                self.children(dir, block_size, path, out)?;
            }
        }
        Ok(())
    }

    fn children(
        &self,
        dir: u16,
        block_size: u32,
        path: &[u8],
        out: &mut dyn FnMut(Manifest) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let fail = |e| ApplyError::io("list", path, e);
        let c = CString::new(path).map_err(|_| hostile(path, "NUL in a name"))?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let Ok(dir_fd) = confined::openat2(self.root.as_fd(), &c, flags, 0) else {
            return Ok(());
        };
        let mut entries = tree::list(dir_fd.as_fd()).map_err(fail)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(e.name.as_bytes());
            if p.len() > MAX_PATH_BYTES {
                continue;
            }
            if let Some(m) =
                describe(dir_fd.as_fd(), &e.name, p, dir, block_size, false).map_err(fail)?
            {
                out(m)?;
            }
        }
        Ok(())
    }
}
