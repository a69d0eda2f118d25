//! Tests of the applier, on temporary directories (run as root: owners, devices and
//! `trusted.*` attributes need it). Shared fixtures live here; the tests are grouped
//! by topic in the submodules.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use agent_common::wire::{Attrs, EntryKind, WireOp};
use tempfile::TempDir;

use super::{Applier, ApplyError, attrs_of};

mod hostile;
mod manifest;
mod ops;
mod prop;

/// A root to apply to and, next to it, a sentinel tree that must never change.
struct Fixture {
    // Held for its Drop, which removes everything.
    _dir: TempDir,
    root: PathBuf,
    outside: PathBuf,
    applier: Applier,
}

impl Fixture {
    /// An empty root, a populated `outside`, and inside the root: `evil` (absolute
    /// symlink to outside), `evil_rel` (relative one), `link_out` (a symlink to the
    /// file outside/secret) and a regular file `f`.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("sub")).expect("outside");
        fs::write(outside.join("secret"), b"do not touch").expect("secret");
        fs::write(outside.join("f"), b"outside f").expect("outside f");
        fs::write(outside.join("sub/g"), b"outside g").expect("outside g");
        xattr_set(&outside.join("secret"), "user.keep", b"1");
        let applier = Applier::open(&root).expect("open");
        std::os::unix::fs::symlink(&outside, root.join("evil")).expect("evil");
        std::os::unix::fs::symlink("../outside", root.join("evil_rel")).expect("evil_rel");
        std::os::unix::fs::symlink(outside.join("secret"), root.join("link_out")).expect("link");
        fs::write(root.join("f"), b"inside f").expect("f");
        Self {
            _dir: dir,
            root,
            outside,
            applier,
        }
    }

    fn apply(&mut self, path: &str, op: &WireOp) -> Result<(), ApplyError> {
        self.applier.apply(path.as_bytes(), op)
    }

    fn ok(&mut self, path: &str, op: &WireOp) {
        if let Err(e) = self.apply(path, op) {
            panic!("{path}: {op:?}: {e:#?}");
        }
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

/// Everything observable about a tree that a write would change: for each entry its
/// kind, inode, mode, owner, mtime, ctime, link count, xattrs and content or target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).expect("stat");
        let content = if meta.is_file() {
            format!("{:?}", fs::read(&path).expect("read"))
        } else if meta.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&path).expect("readlink"))
        } else {
            String::new()
        };
        if meta.is_dir() {
            for entry in fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
        let attrs = attrs_of(&path).expect("attrs");
        out.insert(
            path,
            format!(
                "ino={} mode={:o} uid={} gid={} mtime={} ctime={}.{} nlink={} xattrs={:?} {content}",
                meta.ino(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                attrs.mtime_ns,
                meta.ctime(),
                meta.ctime_nsec(),
                meta.nlink(),
                attrs.xattrs,
            ),
        );
    }
    out
}

/// Attributes with the given mode and fixed owner, times and one xattr.
fn attrs(mode: u32) -> Attrs {
    Attrs {
        mode,
        uid: 1234,
        gid: 5678,
        mtime_ns: 1_600_000_000_123_456_789,
        atime_ns: 1_500_000_000_987_654_321,
        xattrs: vec![(b"user.tag".to_vec(), b"v1".to_vec())],
    }
}

fn create(kind: EntryKind, attrs: Attrs) -> WireOp {
    WireOp::Create {
        kind,
        attrs,
        target: None,
        rdev: 0,
    }
}

fn write(offset: u64, data: &[u8]) -> WireOp {
    WireOp::Write {
        offset,
        data: data.to_vec(),
    }
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let cname = std::ffi::CString::new(name).expect("name");
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "lsetxattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}
