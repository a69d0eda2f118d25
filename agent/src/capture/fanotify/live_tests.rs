//! Live tests against the running kernel: a real fanotify group watches the filesystem
//! of a temporary directory under /tmp while the test changes names, data and metadata.
//!
//! They need root (CAP_SYS_ADMIN for the filesystem mark, CAP_DAC_READ_SEARCH for
//! `open_by_handle_at`); tests run as root here and in CI, and skip with a message
//! otherwise. A filesystem mark sees every process on the filesystem, including other
//! tests running in parallel, so every assertion is filtered to the directories and
//! files this test created, recognised by their file handles.

use super::*;
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The handle `name_to_handle_at(2)` gives for `path` (without following a final
/// symlink), with the fsid fanotify would report. libc does not wrap the syscall.
fn handle_of(path: &Path) -> Handle {
    let mut words = [0u64; (8 + MAX_HANDLE_SZ) / 8];
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    words[0] = u64::from_ne_bytes(head);
    let mut mount_id: libc::c_int = 0;
    let c = cstr(path);
    // SAFETY: `words` is an 8-byte-aligned struct file_handle with room for
    // MAX_HANDLE_SZ bytes, as its handle_bytes says; `c` and `mount_id` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            words.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    let raw: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let len = u32::from_ne_bytes(raw[0..4].try_into().unwrap()) as usize;
    let handle_type = i32::from_ne_bytes(raw[4..8].try_into().unwrap());
    let st = nix::sys::statfs::statfs(path).unwrap();
    Handle {
        fsid: fsid_of(&st),
        handle_type,
        bytes: raw[8..8 + len].to_vec(),
    }
}

/// Reads events for up to `timeout`, until `done` says the collected ones suffice.
fn collect_until(
    fan: &mut Fanotify,
    timeout: Duration,
    mut done: impl FnMut(&[FanEvent]) -> bool,
) -> Vec<FanEvent> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    loop {
        let mut batch = Vec::new();
        fan.read(&mut batch).unwrap();
        all.extend(batch);
        if done(&all) || Instant::now() >= deadline {
            return all;
        }
        let mut pfd = libc::pollfd {
            fd: fan.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that outlives the call.
        let _ = unsafe { libc::poll(&mut pfd, 1, 100) };
    }
}

const BITS: &[(u64, &str)] = &[
    (FAN_MODIFY, "MODIFY"),
    (FAN_ATTRIB, "ATTRIB"),
    (FAN_CLOSE_WRITE, "CLOSE_WRITE"),
    (FAN_MOVED_FROM, "MOVED_FROM"),
    (FAN_MOVED_TO, "MOVED_TO"),
    (FAN_CREATE, "CREATE"),
    (FAN_DELETE, "DELETE"),
    (FAN_DELETE_SELF, "DELETE_SELF"),
    (FAN_MOVE_SELF, "MOVE_SELF"),
    (FAN_RENAME, "RENAME"),
    (FAN_ONDIR, "ONDIR"),
    (FAN_Q_OVERFLOW, "Q_OVERFLOW"),
];

/// Flattens the events into (bit, where) facts, keeping only those about objects in
/// `known` (labelled handles). `where` is `label/name` for directory entries,
/// `label/name -> label/name` for renames and `@label` for FID-only events.
fn facts(events: &[FanEvent], known: &HashMap<Handle, &'static str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let entry = |n: &NamedHandle| {
        known
            .get(&n.dir)
            .map(|l| format!("{l}/{}", String::from_utf8_lossy(&n.name)))
    };
    for e in events {
        let place = if let (Some(o), Some(n)) = (&e.old, &e.new) {
            match (entry(o), entry(n)) {
                (Some(a), Some(b)) => Some(format!("{a} -> {b}")),
                _ => None,
            }
        } else if let Some(d) = &e.dir_name {
            entry(d)
        } else {
            e.object
                .as_ref()
                .and_then(|h| known.get(h))
                .map(|l| format!("@{l}"))
        };
        let Some(place) = place else { continue };
        assert_eq!(
            e.pid,
            std::process::id() as i32,
            "event {e:?} from another process"
        );
        for (bit, name) in BITS {
            if e.mask & bit != 0 {
                out.insert(format!("{name} {place}"));
            }
        }
    }
    out
}

#[test]
fn create_and_mark_need_root_and_give_clear_errors() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut fan = Fanotify::new().unwrap();
    // Nothing is queued in a group without marks, and reading does not block.
    let mut out = Vec::new();
    assert_eq!(fan.read(&mut out).unwrap(), 0);
    assert!(out.is_empty());
    let err = fan.mark_filesystem(Path::new("/proc")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the filesystem of /proc does not support fanotify file handles (proc)"
    );
    let err = fan
        .mark_filesystem(Path::new("/nonexistent/tandem-fanotify"))
        .unwrap_err();
    assert!(matches!(err, FanotifyError::Open { .. }), "{err}");
    // A regular file names its filesystem too (the kept descriptor is its parent).
    let file = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    fan.mark_filesystem(file.path()).unwrap();
    let fd = fan.open_handle(&handle_of(file.path())).unwrap();
    assert_eq!(
        nix::sys::stat::fstat(&fd).unwrap().st_ino,
        fs::metadata(file.path()).unwrap().ino()
    );
    // A handle of a filesystem that was never marked cannot be opened.
    let h = Handle {
        fsid: [1, 2],
        handle_type: 1,
        bytes: vec![0; 8],
    };
    assert_eq!(
        fan.open_handle(&h).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn tmpfs_is_supported() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let shm = Path::new("/dev/shm");
    let is_tmpfs = nix::sys::statfs::statfs(shm)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false);
    if !is_tmpfs {
        eprintln!("skipped: /dev/shm is not a tmpfs");
        return;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let mut fan = Fanotify::new().unwrap();
    fan.mark_filesystem(dir.path()).unwrap();
    let known = HashMap::from([(handle_of(dir.path()), "T")]);
    fs::write(dir.path().join("a"), b"1").unwrap();
    fs::set_permissions(dir.path().join("a"), fs::Permissions::from_mode(0o600)).unwrap();
    let want = ["CREATE T/a", "ATTRIB T/a"];
    let evs = collect_until(&mut fan, Duration::from_secs(5), |evs| {
        let f = facts(evs, &known);
        want.iter().all(|w| f.contains(*w))
    });
    let f = facts(&evs, &known);
    for w in want {
        assert!(f.contains(w), "missing {w}; saw {f:#?}");
    }
}

#[test]
fn names_renames_and_metadata_are_reported() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let t = tmp.path();
    let mut fan = Fanotify::new().unwrap();
    fan.mark_filesystem(t).unwrap();

    let mut known: HashMap<Handle, &'static str> = HashMap::new();
    known.insert(handle_of(t), "T");

    // Directories.
    let (a, b) = (t.join("A"), t.join("B"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    known.insert(handle_of(&a), "A");
    known.insert(handle_of(&b), "B");

    // Create, write, close; chmod.
    let mut f = fs::File::create(a.join("f")).unwrap();
    f.write_all(b"hello").unwrap();
    drop(f);
    known.insert(handle_of(&a.join("f")), "f");
    fs::set_permissions(a.join("f"), fs::Permissions::from_mode(0o600)).unwrap();

    // setxattr on another file, so that its ATTRIB is not merged with chmod's.
    fs::write(a.join("x"), b"").unwrap();
    let (xp, key) = (cstr(&a.join("x")), c"user.x");
    // SAFETY: both strings are NUL-terminated and the value pointer is valid for 1 byte.
    let rc = unsafe { libc::setxattr(xp.as_ptr(), key.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, 0, "setxattr: {}", io::Error::last_os_error());

    // Rename across directories.
    fs::rename(a.join("f"), b.join("g")).unwrap();

    // Rename over an existing file.
    fs::write(b.join("h"), b"old").unwrap();
    known.insert(handle_of(&b.join("h")), "h_old");
    fs::rename(b.join("g"), b.join("h")).unwrap();

    // RENAME_EXCHANGE.
    fs::write(a.join("p"), b"p").unwrap();
    fs::write(b.join("q"), b"q").unwrap();
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &a.join("p"),
        nix::fcntl::AT_FDCWD,
        &b.join("q"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();

    // Hard link, symlink, FIFO.
    fs::hard_link(a.join("x"), b.join("hl")).unwrap();
    std::os::unix::fs::symlink("x", b.join("sl")).unwrap();
    nix::unistd::mkfifo(
        &b.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    // mkdir + rmdir.
    fs::create_dir(t.join("D")).unwrap();
    known.insert(handle_of(&t.join("D")), "D");
    fs::remove_dir(t.join("D")).unwrap();

    // unlink.
    fs::remove_file(b.join("sl")).unwrap();

    // Directory rename.
    fs::create_dir(t.join("E")).unwrap();
    known.insert(handle_of(&t.join("E")), "E");
    fs::rename(t.join("E"), t.join("F")).unwrap();

    let want = [
        "CREATE T/A",
        "ONDIR T/A",
        "CREATE T/B",
        "CREATE A/f",
        "ATTRIB A/f",
        "CREATE A/x",
        "ATTRIB A/x",
        "RENAME A/f -> B/g",
        "MOVED_FROM A/f",
        "MOVED_TO B/g",
        "MOVE_SELF @f",
        "CREATE B/h",
        "RENAME B/g -> B/h",
        "MOVED_FROM B/g",
        "MOVED_TO B/h",
        "ATTRIB @h_old",
        "DELETE_SELF @h_old",
        "RENAME A/p -> B/q",
        "RENAME B/q -> A/p",
        "MOVED_FROM A/p",
        "MOVED_TO B/q",
        "MOVED_FROM B/q",
        "MOVED_TO A/p",
        "CREATE B/hl",
        "CREATE B/sl",
        "DELETE B/sl",
        "CREATE B/fifo",
        "CREATE T/D",
        "DELETE T/D",
        "DELETE_SELF D/.",
        "ONDIR D/.",
        "RENAME T/E -> T/F",
        "ONDIR T/E -> T/F",
        "MOVED_FROM T/E",
        "MOVED_TO T/F",
        "MOVE_SELF E/.",
    ];
    let evs = collect_until(&mut fan, Duration::from_secs(10), |evs| {
        let f = facts(evs, &known);
        want.iter().all(|w| f.contains(*w))
    });
    let seen = facts(&evs, &known);
    if std::env::var_os("TANDEM_FANOTIFY_DUMP").is_some() {
        eprintln!("{seen:#?}");
    }
    let missing: Vec<_> = want.iter().filter(|w| !seen.contains(**w)).collect();
    assert!(missing.is_empty(), "missing {missing:#?}\nsaw {seen:#?}");
    // Nothing should be reported that did not happen: chmod'ed "f" was never deleted.
    assert!(!seen.contains("DELETE A/f"), "{seen:#?}");
    assert!(!evs.iter().any(FanEvent::is_overflow));

    // Directory handles open as directories that fstatat can look into.
    let a_ev = evs
        .iter()
        .filter_map(|e| e.dir_name.as_ref())
        .find(|n| known.get(&n.dir) == Some(&"A") && n.name == b"x")
        .unwrap();
    let dir_fd = fan.open_handle(&a_ev.dir).unwrap();
    let st = nix::sys::stat::fstat(&dir_fd).unwrap();
    assert_eq!(st.st_ino, fs::metadata(&a).unwrap().ino());
    let x =
        nix::sys::stat::fstatat(&dir_fd, "x", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(x.st_ino, fs::metadata(a.join("x")).unwrap().ino());
    // The object handle of a CREATE opens the created file itself.
    let obj = evs
        .iter()
        .find(|e| {
            e.mask & FAN_CREATE != 0
                && e.dir_name
                    .as_ref()
                    .is_some_and(|n| known.get(&n.dir) == Some(&"B") && n.name == b"hl")
        })
        .and_then(|e| e.object.clone())
        .unwrap();
    let obj_fd = fan.open_handle(&obj).unwrap();
    assert_eq!(
        nix::sys::stat::fstat(&obj_fd).unwrap().st_ino,
        fs::metadata(a.join("x")).unwrap().ino()
    );
    // Handles of removed objects are stale.
    let d_handle = known.iter().find(|(_, l)| **l == "D").unwrap().0;
    let err = fan.open_handle(d_handle).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
}
