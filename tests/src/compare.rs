//! Compares a source tree with its shadow copy, the final judgement of the capture
//! oracle.
//!
//! Two trees are equal when they have the same names (exact bytes), and for every name
//! the same kind, permission bits (setuid, setgid and sticky included), owner and
//! group, `user.*` extended attributes, device number, symlink target, size and bytes;
//! and when the hard-link structure matches: names that share an inode on one side
//! share one on the other. Times are not compared (the replay copies them, but reading
//! a file for comparison can move atime and directories' mtimes move with every
//! replayed entry). Hole layout is not compared either: only the bytes a reader sees.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::sys;

/// An inode's identity: (device, inode number).
type Ino = (u64, u64);

/// What the comparator knows about one name.
#[derive(Debug, Clone)]
struct Entry {
    mode: libc::mode_t,
    uid: u32,
    gid: u32,
    size: u64,
    ino: (u64, u64),
    rdev: u64,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Renders a byte path for humans: UTF-8 as is, anything else escaped.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("b\"{}\"", bytes.escape_ascii()),
    }
}

/// The change stream's name for the kind of entry a `st_mode` describes.
pub fn kind_name(mode: libc::mode_t) -> &'static str {
    match sys::file_type(mode) {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        _ => "unknown",
    }
}

fn walk(root: &OwnedFd, rel: &[u8], out: &mut BTreeMap<Vec<u8>, Entry>) -> io::Result<()> {
    let dir = sys::open_beneath(root, rel, libc::O_PATH | libc::O_DIRECTORY)?;
    for name in sys::list_dir(&dir)? {
        let child = sys::join(rel, &name);
        let cname = sys::cstr(&name)?;
        let st = sys::lstat_at(&dir, &cname)?;
        let ft = sys::file_type(st.st_mode);
        let target = if ft == libc::S_IFLNK {
            Some(sys::readlink_at(&dir, &cname)?)
        } else {
            None
        };
        // Only regular files and directories can carry user.* attributes.
        let xattrs = if ft == libc::S_IFREG || ft == libc::S_IFDIR {
            let fd = sys::open_at(&dir, &cname, libc::O_RDONLY | libc::O_NONBLOCK)?;
            sys::user_xattrs(&fd)?
        } else {
            Vec::new()
        };
        out.insert(
            child.clone(),
            Entry {
                mode: st.st_mode,
                uid: st.st_uid,
                gid: st.st_gid,
                size: st.st_size.unsigned_abs(),
                ino: (st.st_dev, st.st_ino),
                rdev: st.st_rdev,
                target,
                xattrs,
            },
        );
        if ft == libc::S_IFDIR {
            walk(root, &child, out)?;
        }
    }
    Ok(())
}

/// Lists every name under `root` (relative, raw bytes) with what the comparator needs.
fn scan(root: &Path) -> io::Result<BTreeMap<Vec<u8>, Entry>> {
    let fd = sys::open_root(root)?;
    let mut out = BTreeMap::new();
    walk(&fd, b"", &mut out)?;
    Ok(out)
}

/// Compares the bytes of two regular files of equal size; returns the first differing
/// offset. Only ranges where at least one side has data are read, so a 5 GiB sparse file
/// costs a few system calls.
fn first_content_difference(a: &OwnedFd, b: &OwnedFd, size: u64) -> io::Result<Option<u64>> {
    let mut ba = vec![0u8; sys::CHUNK];
    let mut bb = vec![0u8; sys::CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let da = sys::next_data(a, pos)?;
        let db = sys::next_data(b, pos)?;
        let next = match (da, db) {
            (None, None) => break,
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) => x.min(y),
        };
        if next >= size {
            break;
        }
        pos = next;
        let n = (size - pos).min(sys::CHUNK as u64) as usize;
        let na = sys::pread_full(a, &mut ba[..n], pos)?;
        let nb = sys::pread_full(b, &mut bb[..n], pos)?;
        if na != nb {
            return Ok(Some(pos + na.min(nb) as u64));
        }
        // Slice equality is one memcmp even in a debug build; the byte-by-byte search
        // for the offset runs only where they differ.
        if ba[..na] != bb[..nb]
            && let Some(i) = ba[..na].iter().zip(&bb[..nb]).position(|(x, y)| x != y)
        {
            return Ok(Some(pos + i as u64));
        }
        if na == 0 {
            break;
        }
        pos += na as u64;
    }
    Ok(None)
}

/// Compares `source` with `shadow` and returns human-readable differences, at most
/// `max` of them, plus a final "... and N more" line when there were more.
pub fn compare_trees(source: &Path, shadow: &Path, max: usize) -> io::Result<Vec<String>> {
    let src = scan(source)?;
    let shd = scan(shadow)?;
    let src_root = sys::open_root(source)?;
    let shd_root = sys::open_root(shadow)?;
    let mut diffs = Vec::new();

    for (name, s) in &src {
        let Some(d) = shd.get(name) else {
            diffs.push(format!(
                "missing in shadow: {} ({})",
                show(name),
                kind_name(s.mode)
            ));
            continue;
        };
        let n = show(name);
        if sys::file_type(s.mode) != sys::file_type(d.mode) {
            diffs.push(format!(
                "kind differs: {n}: source {} shadow {}",
                kind_name(s.mode),
                kind_name(d.mode)
            ));
            continue;
        }
        let ft = sys::file_type(s.mode);
        if ft != libc::S_IFLNK && s.mode != d.mode {
            diffs.push(format!(
                "mode differs: {n}: source {:o} shadow {:o}",
                s.mode & 0o7777,
                d.mode & 0o7777
            ));
        }
        if (s.uid, s.gid) != (d.uid, d.gid) {
            diffs.push(format!(
                "owner differs: {n}: source {}:{} shadow {}:{}",
                s.uid, s.gid, d.uid, d.gid
            ));
        }
        if s.target != d.target {
            diffs.push(format!(
                "symlink target differs: {n}: source {} shadow {}",
                show(s.target.as_deref().unwrap_or_default()),
                show(d.target.as_deref().unwrap_or_default())
            ));
        }
        if (ft == libc::S_IFCHR || ft == libc::S_IFBLK) && s.rdev != d.rdev {
            diffs.push(format!(
                "device number differs: {n}: source {:#x} shadow {:#x}",
                s.rdev, d.rdev
            ));
        }
        if s.xattrs != d.xattrs {
            let fmt = |x: &[(Vec<u8>, Vec<u8>)]| {
                x.iter()
                    .map(|(k, v)| format!("{}={}", show(k), show(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            diffs.push(format!(
                "xattrs differ: {n}: source [{}] shadow [{}]",
                fmt(&s.xattrs),
                fmt(&d.xattrs)
            ));
        }
        if ft == libc::S_IFREG {
            if s.size != d.size {
                diffs.push(format!(
                    "size differs: {n}: source {} shadow {}",
                    s.size, d.size
                ));
            } else {
                let a = sys::open_beneath(&src_root, name, libc::O_RDONLY)?;
                let b = sys::open_beneath(&shd_root, name, libc::O_RDONLY)?;
                if let Some(off) = first_content_difference(&a, &b, s.size)? {
                    // A few bytes from there on each side tell stale data (the
                    // shadow missed a change) from missing data at a glance.
                    let mut sa = [0u8; 16];
                    let mut sb = [0u8; 16];
                    let na = sys::pread_full(&a, &mut sa, off)?;
                    let nb = sys::pread_full(&b, &mut sb, off)?;
                    diffs.push(format!(
                        "content differs: {n}: first difference at offset {off} (size {}): source {:02x?} shadow {:02x?}",
                        s.size,
                        &sa[..na],
                        &sb[..nb]
                    ));
                }
            }
        }
    }
    for (name, d) in &shd {
        if !src.contains_key(name) {
            diffs.push(format!(
                "extra in shadow: {} ({})",
                show(name),
                kind_name(d.mode)
            ));
        }
    }

    // Hard-link structure: the relation "same inode" restricted to non-directories
    // present on both sides must be the same relation on both sides.
    let mut s2d: HashMap<Ino, (Vec<u8>, Ino)> = HashMap::new();
    let mut d2s: HashMap<Ino, (Vec<u8>, Ino)> = HashMap::new();
    for (name, s) in &src {
        let Some(d) = shd.get(name) else { continue };
        if sys::file_type(s.mode) == libc::S_IFDIR || sys::file_type(d.mode) == libc::S_IFDIR {
            continue;
        }
        match s2d.get(&s.ino) {
            Some((first, dino)) if *dino != d.ino => diffs.push(format!(
                "hard links differ: {} and {} are one inode in the source, not in the shadow",
                show(first),
                show(name)
            )),
            Some(_) => {}
            None => {
                s2d.insert(s.ino, (name.clone(), d.ino));
            }
        }
        match d2s.get(&d.ino) {
            Some((first, sino)) if *sino != s.ino => diffs.push(format!(
                "hard links differ: {} and {} are one inode in the shadow, not in the source",
                show(first),
                show(name)
            )),
            Some(_) => {}
            None => {
                d2s.insert(d.ino, (name.clone(), s.ino));
            }
        }
    }

    if diffs.len() > max {
        let more = diffs.len() - max;
        diffs.truncate(max);
        diffs.push(format!("... and {more} more differences"));
    }
    Ok(diffs)
}

/// Waits until both trees are identical; the remaining differences on timeout
/// (a copy that is still catching up differs for a moment).
pub fn wait_identical(a: &Path, b: &Path, timeout: std::time::Duration) -> Vec<String> {
    let end = std::time::Instant::now() + timeout;
    loop {
        let diffs = compare_trees(a, b, 20).unwrap_or_else(|e| vec![format!("compare: {e}")]);
        if diffs.is_empty() || std::time::Instant::now() > end {
            return diffs;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn pair() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let t = tempfile::Builder::new()
            .prefix("tandem-compare-")
            .tempdir_in("/tmp")
            .unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        for d in [&a, &b] {
            fs::create_dir(d).unwrap();
            fs::create_dir(d.join("sub")).unwrap();
            fs::write(d.join("sub/file"), b"hello").unwrap();
            fs::write(d.join(std::ffi::OsStr::from_bytes(b"bad\xff\xfe")), b"x").unwrap();
            symlink("target", d.join("link")).unwrap();
            fs::write(d.join("h1"), b"same").unwrap();
            fs::hard_link(d.join("h1"), d.join("h2")).unwrap();
            fs::write(d.join("solo"), b"same").unwrap();
            let f = fs::File::create(d.join("sparse")).unwrap();
            f.set_len(5 << 30).unwrap();
            std::os::unix::fs::FileExt::write_at(&f, b"tail", (5 << 30) - 4).unwrap();
        }
        (t, a, b)
    }

    fn diffs(a: &Path, b: &Path) -> Vec<String> {
        compare_trees(a, b, 50).unwrap()
    }

    #[test]
    fn equal_trees_have_no_differences() {
        let (_t, a, b) = pair();
        assert_eq!(diffs(&a, &b), Vec::<String>::new());
    }

    #[test]
    fn finds_content_difference_in_sparse_file() {
        let (_t, a, b) = pair();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(b.join("sparse"))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"X", 4 << 30).unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter()
                .any(|l| l.contains("content differs") && l.contains(&(4u64 << 30).to_string())),
            "{d:?}"
        );
    }

    #[test]
    fn finds_content_and_size_difference() {
        let (_t, a, b) = pair();
        fs::write(b.join("sub/file"), b"hellO").unwrap();
        fs::write(b.join("solo"), b"longer").unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter()
                .any(|l| l.contains("content differs") && l.contains("sub/file"))
        );
        assert!(
            d.iter()
                .any(|l| l.contains("size differs") && l.contains("solo"))
        );
    }

    #[test]
    fn finds_mode_difference_including_setuid() {
        let (_t, a, b) = pair();
        fs::set_permissions(b.join("solo"), fs::Permissions::from_mode(0o4644)).unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter()
                .any(|l| l.contains("mode differs") && l.contains("4644")),
            "{d:?}"
        );
    }

    #[test]
    fn finds_owner_difference() {
        if !is_root() {
            eprintln!("needs root to chown");
            return;
        }
        let (_t, a, b) = pair();
        std::os::unix::fs::lchown(b.join("link"), Some(1234), Some(4321)).unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter()
                .any(|l| l.contains("owner differs") && l.contains("1234:4321"))
        );
    }

    #[test]
    fn finds_xattr_difference() {
        let (_t, a, b) = pair();
        let fd = sys::open_root(&b).unwrap();
        let f = sys::open_beneath(&fd, b"sub/file", libc::O_RDONLY).unwrap();
        sys::set_xattr(&f, b"user.k", b"v").unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter()
                .any(|l| l.contains("xattrs differ") && l.contains("user.k")),
            "{d:?}"
        );
    }

    #[test]
    fn finds_symlink_target_difference() {
        let (_t, a, b) = pair();
        fs::remove_file(b.join("link")).unwrap();
        symlink("other", b.join("link")).unwrap();
        let d = diffs(&a, &b);
        assert!(d.iter().any(|l| l.contains("symlink target differs")));
    }

    #[test]
    fn finds_hard_link_differences_both_ways() {
        let (_t, a, b) = pair();
        // Source: h1=h2, solo alone. Shadow: h1 alone, h2 = solo.
        fs::remove_file(b.join("h2")).unwrap();
        fs::hard_link(b.join("solo"), b.join("h2")).unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter().any(|l| l.contains("one inode in the source")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|l| l.contains("one inode in the shadow")),
            "{d:?}"
        );
    }

    #[test]
    fn finds_missing_extra_and_kind() {
        let (_t, a, b) = pair();
        fs::remove_file(b.join(std::ffi::OsStr::from_bytes(b"bad\xff\xfe"))).unwrap();
        fs::write(b.join(std::ffi::OsStr::from_bytes(b"extra\x80")), b"").unwrap();
        fs::remove_file(b.join("solo")).unwrap();
        fs::create_dir(b.join("solo")).unwrap();
        let d = diffs(&a, &b);
        assert!(
            d.iter()
                .any(|l| l.contains("missing in shadow") && l.contains(r"bad\xff\xfe")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|l| l.contains("extra in shadow") && l.contains(r"extra\x80")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|l| l.contains("kind differs") && l.contains("solo"))
        );
    }

    #[test]
    fn limits_the_number_of_differences() {
        let (_t, a, b) = pair();
        for i in 0..10 {
            fs::write(b.join(format!("x{i}")), b"").unwrap();
        }
        let d = compare_trees(&a, &b, 3).unwrap();
        assert_eq!(d.len(), 4);
        assert!(d[3].contains("7 more"));
    }
}
