//! Each operation applied and checked on disk.

use std::{
    fs,
    io::ErrorKind,
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt},
    },
};

use agent_common::wire::{Attrs, EntryKind, WireOp};

use super::{Fixture, attrs, attrs_of, create, write};
use crate::apply::{ApplyError, cache};

#[test]
fn create_file_sets_every_attribute() {
    let mut fx = Fixture::new();
    let mut wanted = attrs(0o4750);
    wanted.xattrs.push((b"trusted.t".to_vec(), vec![0, 1, 2]));
    wanted.xattrs.sort();
    fx.ok("new", &create(EntryKind::File, wanted.clone()));
    let meta = fs::symlink_metadata(fx.at("new")).expect("stat");
    assert!(meta.is_file());
    assert_eq!(meta.len(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o4750, "setuid survives the chown");
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(attrs_of(&fx.at("new")).expect("attrs"), wanted);
}

#[test]
fn writes_land_and_need_an_existing_file() {
    let mut fx = Fixture::new();
    fx.ok("dir", &create(EntryKind::Dir, attrs(0o755)));
    fx.ok("dir/file", &create(EntryKind::File, attrs(0o644)));
    fx.ok("dir/file", &write(0, b"hello"));
    fx.ok("dir/file", &write(10_000, b"world"));
    let data = fs::read(fx.at("dir/file")).expect("read");
    assert_eq!(data.len(), 10_005);
    assert_eq!(&data[..5], b"hello");
    assert!(data[5..10_000].iter().all(|&b| b == 0));
    assert_eq!(&data[10_000..], b"world");

    // A file the secondary does not have is an ordinary error, not a hostile one.
    let err = fx
        .apply("dir/missing", &write(0, b"x"))
        .expect_err("no file");
    assert!(
        matches!(&err, ApplyError::Io { source, .. } if source.kind() == ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(!fx.at("dir/missing").exists(), "a write creates nothing");
}

#[test]
fn punch_leaves_a_hole_and_keeps_the_size() {
    const BLOCK: usize = 64 * 1024;
    let mut fx = Fixture::new();
    fx.ok("sparse", &create(EntryKind::File, attrs(0o644)));
    fx.ok("sparse", &write(0, &vec![0xaa; 3 * BLOCK]));
    fx.applier.sync().expect("sync");
    let before = fs::metadata(fx.at("sparse")).expect("stat").blocks();
    fx.ok(
        "sparse",
        &WireOp::Punch {
            offset: BLOCK as u64,
            len: BLOCK as u64,
        },
    );
    let data = fs::read(fx.at("sparse")).expect("read");
    assert_eq!(data.len(), 3 * BLOCK);
    assert!(data[..BLOCK].iter().all(|&b| b == 0xaa));
    assert!(data[BLOCK..2 * BLOCK].iter().all(|&b| b == 0));
    assert!(data[2 * BLOCK..].iter().all(|&b| b == 0xaa));
    let file = fs::File::open(fx.at("sparse")).expect("open");
    // SAFETY: lseek on a descriptor we own.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert_eq!(
        hole, BLOCK as i64,
        "the first hole starts at the punched range"
    );
    let after = file.metadata().expect("stat").blocks();
    assert_eq!(
        before - after,
        (BLOCK / 512) as u64,
        "the range holds no blocks"
    );
}

#[test]
fn truncate_grows_and_shrinks() {
    let mut fx = Fixture::new();
    fx.ok("t", &create(EntryKind::File, attrs(0o644)));
    fx.ok("t", &write(0, b"0123456789"));
    fx.ok("t", &WireOp::Truncate { size: 4 });
    assert_eq!(fs::read(fx.at("t")).expect("read"), b"0123");
    fx.ok("t", &WireOp::Truncate { size: 8 });
    assert_eq!(fs::read(fx.at("t")).expect("read"), b"0123\0\0\0\0");
}

#[test]
fn creates_every_kind() {
    let mut fx = Fixture::new();
    fx.ok("d", &create(EntryKind::Dir, attrs(0o1777)));
    let symlink = WireOp::Create {
        kind: EntryKind::Symlink,
        attrs: attrs(0o777),
        target: Some(b"../somewhere/else".to_vec()),
        rdev: 0,
    };
    fx.ok("d/s", &symlink);
    fx.ok("d/fifo", &create(EntryKind::Fifo, attrs(0o640)));
    fx.ok("d/sock", &create(EntryKind::Socket, attrs(0o600)));
    let device = |kind, rdev| WireOp::Create {
        kind,
        attrs: attrs(0o660),
        target: None,
        rdev,
    };
    fx.ok(
        "d/null",
        &device(EntryKind::CharDevice, libc::makedev(1, 3)),
    );
    fx.ok(
        "d/blk",
        &device(EntryKind::BlockDevice, libc::makedev(7, 200)),
    );

    let meta = |p: &str| fs::symlink_metadata(fx.at(p)).expect(p);
    assert!(meta("d").is_dir());
    assert_eq!(meta("d").mode() & 0o7777, 0o1777);
    assert_eq!(
        fs::read_link(fx.at("d/s")).expect("readlink").as_os_str(),
        "../somewhere/else"
    );
    assert_eq!((meta("d/s").uid(), meta("d/s").gid()), (1234, 5678));
    assert_eq!(
        meta("d/s").mtime_nsec(),
        123_456_789,
        "symlink times, not followed"
    );
    assert!(meta("d/fifo").file_type().is_fifo());
    assert!(meta("d/sock").file_type().is_socket());
    assert!(meta("d/null").file_type().is_char_device());
    assert_eq!(meta("d/null").rdev(), libc::makedev(1, 3));
    assert!(meta("d/blk").file_type().is_block_device());
    assert_eq!(meta("d/blk").rdev(), libc::makedev(7, 200));
    assert_eq!(meta("d/fifo").mode() & 0o7777, 0o640);

    // Data operations refuse non-regular files (and never block on the FIFO).
    for path in ["d", "d/s", "d/fifo", "d/sock", "d/null", "d/blk"] {
        let err = fx.apply(path, &write(0, b"x")).expect_err(path);
        assert!(matches!(err, ApplyError::Io { .. }), "{path}: {err:?}");
        let err = fx
            .apply(path, &WireOp::Truncate { size: 0 })
            .expect_err(path);
        assert!(matches!(err, ApplyError::Io { .. }), "{path}: {err:?}");
    }
}

#[test]
fn create_replaces_leftovers() {
    let mut fx = Fixture::new();
    fs::create_dir_all(fx.at("x/sub/deeper")).expect("mkdir");
    fs::write(fx.at("x/sub/deeper/file"), b"old").expect("write");
    std::os::unix::fs::symlink("/", fx.at("x/sub/rootlink")).expect("symlink");
    fx.ok("x", &create(EntryKind::File, attrs(0o600)));
    assert!(fs::symlink_metadata(fx.at("x")).expect("stat").is_file());

    // A file created again is a new inode; a write goes to it, not to a cached fd
    // of the one it replaced.
    fx.ok("x", &write(0, b"first"));
    let first = fs::metadata(fx.at("x")).expect("stat").ino();
    let keep = fs::File::open(fx.at("x")).expect("keep the old inode alive");
    fx.ok("x", &create(EntryKind::File, attrs(0o600)));
    fx.ok("x", &write(0, b"second"));
    assert_ne!(fs::metadata(fx.at("x")).expect("stat").ino(), first);
    assert_eq!(fs::read(fx.at("x")).expect("read"), b"second");
    assert_eq!(
        keep.metadata().expect("stat").len(),
        5,
        "old inode unchanged"
    );

    // A leftover file where a directory is created.
    fx.ok("x", &create(EntryKind::Dir, attrs(0o755)));
    assert!(fs::symlink_metadata(fx.at("x")).expect("stat").is_dir());
}

#[test]
fn remove_is_recursive_and_idempotent() {
    let mut fx = Fixture::new();
    fs::create_dir_all(fx.at("t/a/b/c")).expect("mkdir");
    fs::write(fx.at("t/a/file"), b"1").expect("write");
    fs::write(fx.at("t/a/b/c/file"), b"2").expect("write");
    std::os::unix::fs::symlink("../../../../outside", fx.at("t/a/b/out")).expect("symlink");
    fx.ok("t/a/file", &write(0, b"cached"));
    fx.ok("t", &WireOp::Remove);
    assert!(!fx.at("t").exists());
    fx.ok("t", &WireOp::Remove);
    fx.ok("t/a/b", &WireOp::Remove);
    fx.ok("f/under-a-file", &WireOp::Remove);
    let err = fx.apply("t/a/file", &write(0, b"x")).expect_err("removed");
    assert!(matches!(err, ApplyError::Io { .. }), "{err:?}");
    fx.ok("link_out", &WireOp::Remove);
    assert!(fs::symlink_metadata(fx.at("link_out")).is_err());
    assert_eq!(
        fs::read(fx.outside.join("secret")).expect("read"),
        b"do not touch"
    );
}

#[test]
fn rename_replaces_its_target() {
    let mut fx = Fixture::new();
    fx.ok("a", &create(EntryKind::File, attrs(0o644)));
    fx.ok("a", &write(0, b"from a"));
    fx.ok("b", &create(EntryKind::File, attrs(0o644)));
    fx.ok("b", &write(0, b"from b, longer"));
    fx.ok(
        "a",
        &WireOp::Rename {
            new_path: b"b".to_vec(),
        },
    );
    assert!(!fx.at("a").exists());
    assert_eq!(fs::read(fx.at("b")).expect("read"), b"from a");
    // The cached descriptor of the old `b` is gone: this write lands in the new one.
    fx.ok("b", &write(0, b"FROM"));
    assert_eq!(fs::read(fx.at("b")).expect("read"), b"FROM a");
    assert!(fx.apply("a", &write(0, b"x")).is_err());

    // Over a leftover non-empty directory, and a directory with its children.
    fs::create_dir_all(fx.at("c/junk")).expect("mkdir");
    fx.ok(
        "b",
        &WireOp::Rename {
            new_path: b"c".to_vec(),
        },
    );
    assert_eq!(fs::read(fx.at("c")).expect("read"), b"FROM a");
    fs::create_dir_all(fx.at("d1/inner")).expect("mkdir");
    fs::write(fx.at("d1/inner/file"), b"moved").expect("write");
    fx.ok("d1/inner/file", &write(0, b"MOVED"));
    fx.ok(
        "d1",
        &WireOp::Rename {
            new_path: b"d2".to_vec(),
        },
    );
    assert_eq!(fs::read(fx.at("d2/inner/file")).expect("read"), b"MOVED");
    assert!(
        fx.apply("d1/inner/file", &write(0, b"x")).is_err(),
        "cache dropped"
    );

    // A rename onto its own ancestor fails and removes nothing.
    let err = fx
        .apply(
            "d2/inner",
            &WireOp::Rename {
                new_path: b"d2".to_vec(),
            },
        )
        .expect_err("onto its parent");
    assert!(matches!(err, ApplyError::Io { .. }), "{err:?}");
    assert!(fx.at("d2/inner/file").exists());
}

#[test]
fn exchange_swaps_two_entries() {
    let mut fx = Fixture::new();
    fx.ok("file", &create(EntryKind::File, attrs(0o644)));
    fx.ok("file", &write(0, b"data"));
    fx.ok("dir", &create(EntryKind::Dir, attrs(0o755)));
    fx.ok("dir/child", &create(EntryKind::File, attrs(0o644)));
    fx.ok(
        "file",
        &WireOp::Exchange {
            new_path: b"dir".to_vec(),
        },
    );
    assert!(fx.at("file/child").exists());
    assert_eq!(fs::read(fx.at("dir")).expect("read"), b"data");
    fx.ok("dir", &write(4, b"!"));
    assert_eq!(fs::read(fx.at("dir")).expect("read"), b"data!");
    let err = fx
        .apply(
            "file",
            &WireOp::Exchange {
                new_path: b"absent".to_vec(),
            },
        )
        .expect_err("exchange needs both");
    assert!(matches!(err, ApplyError::Io { .. }), "{err:?}");
}

#[test]
fn link_adds_a_name_even_over_an_existing_one() {
    let mut fx = Fixture::new();
    fx.ok("orig", &create(EntryKind::File, attrs(0o644)));
    fx.ok("orig", &write(0, b"shared"));
    let link = |to: &str| WireOp::Link {
        new_path: to.as_bytes().to_vec(),
    };
    fx.ok("orig", &link("second"));
    fx.ok("other", &create(EntryKind::File, attrs(0o644)));
    fx.ok("other", &write(0, b"other"));
    fx.ok("orig", &link("other"));
    fx.ok("orig", &link("other"));
    fs::create_dir_all(fx.at("leftover/x")).expect("mkdir");
    fx.ok("orig", &link("leftover"));
    let ino = fs::metadata(fx.at("orig")).expect("stat").ino();
    for name in ["second", "other", "leftover"] {
        let meta = fs::symlink_metadata(fx.at(name)).expect(name);
        assert_eq!(meta.ino(), ino, "{name}");
    }
    assert_eq!(fs::metadata(fx.at("orig")).expect("stat").nlink(), 4);
    fx.ok("other", &write(0, b"SH"));
    assert_eq!(fs::read(fx.at("orig")).expect("read"), b"SHared");
    let names: Vec<_> = fs::read_dir(&fx.root)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".tandem-link")),
        "no temporary name left: {names:?}"
    );
}

#[test]
fn set_attrs_is_exact() {
    let mut fx = Fixture::new();
    let mut first = attrs(0o644);
    first.xattrs = vec![
        (b"user.a".to_vec(), b"1".to_vec()),
        (b"user.b".to_vec(), b"2".to_vec()),
    ];
    fx.ok("file", &create(EntryKind::File, first));
    let second = Attrs {
        mode: 0o2711,
        uid: 4321,
        gid: 8765,
        mtime_ns: -1_500_000_000,
        atime_ns: 42,
        xattrs: vec![
            (b"user.b".to_vec(), b"changed".to_vec()),
            (b"user.c".to_vec(), Vec::new()),
        ],
    };
    fx.ok("file", &WireOp::SetAttrs(second.clone()));
    assert_eq!(attrs_of(&fx.at("file")).expect("attrs"), second);
    fx.ok("f", &WireOp::SetAttrs(Attrs::default()));
    assert_eq!(attrs_of(&fx.at("f")).expect("attrs"), Attrs::default());
}

#[test]
fn set_attrs_on_a_symlink_changes_the_link_only() {
    let mut fx = Fixture::new();
    let before = super::snapshot(&fx.outside);
    let wanted = Attrs {
        mode: 0o600,
        uid: 1234,
        gid: 5678,
        mtime_ns: 1_000_000_007,
        atime_ns: 2_000_000_009,
        xattrs: vec![
            (b"trusted.on-link".to_vec(), b"yes".to_vec()),
            (b"user.refused".to_vec(), b"skipped".to_vec()),
        ],
    };
    fx.ok("link_out", &WireOp::SetAttrs(wanted.clone()));
    let got = attrs_of(&fx.at("link_out")).expect("attrs");
    assert_eq!((got.uid, got.gid), (1234, 5678));
    assert_eq!((got.mtime_ns, got.atime_ns), (1_000_000_007, 2_000_000_009));
    assert_eq!(
        got.xattrs,
        vec![(b"trusted.on-link".to_vec(), b"yes".to_vec())]
    );
    assert_eq!(super::snapshot(&fx.outside), before);
}

#[test]
fn attrs_of_round_trips_through_create() {
    let mut fx = Fixture::new();
    let src = fx.outside.join("secret");
    let read = attrs_of(&src).expect("attrs");
    assert_eq!(read.xattrs, vec![(b"user.keep".to_vec(), b"1".to_vec())]);
    fx.ok("copy", &create(EntryKind::File, read.clone()));
    assert_eq!(attrs_of(&fx.at("copy")).expect("attrs"), read);
}

#[test]
fn write_cache_stays_bounded() {
    let mut fx = Fixture::new();
    for i in 0..(cache::CAPACITY + 36) {
        let path = format!("file{i}");
        fx.ok(&path, &create(EntryKind::File, attrs(0o644)));
        fx.ok(&path, &write(0, path.as_bytes()));
    }
    assert!(fx.applier.files.len() <= cache::CAPACITY);
    for i in 0..(cache::CAPACITY + 36) {
        let path = format!("file{i}");
        fx.ok(&path, &write(path.len() as u64, b"+"));
        assert_eq!(
            fs::read(fx.at(&path)).expect("read"),
            format!("{path}+").as_bytes()
        );
    }
}

#[test]
fn barrier_syncs() {
    let mut fx = Fixture::new();
    fx.ok("f", &write(0, b"durable"));
    fx.ok("", &WireOp::Barrier);
    fx.applier.sync().expect("sync");
}

#[test]
fn trees_deeper_than_path_max_are_removed() {
    use nix::{fcntl::OFlag, sys::stat::Mode};
    const DEPTH: usize = 2500;
    let mut fx = Fixture::new();
    fs::create_dir(fx.at("deep")).expect("mkdir");
    let mut dir: std::os::fd::OwnedFd = fs::File::open(fx.at("deep")).expect("open").into();
    for _ in 0..DEPTH {
        nix::sys::stat::mkdirat(&dir, "d", Mode::from_bits_truncate(0o755)).expect("mkdirat");
        // A file at every level, closed at once.
        drop(
            nix::fcntl::openat(
                &dir,
                "side",
                OFlag::O_CREAT | OFlag::O_WRONLY,
                Mode::empty(),
            )
            .expect("file"),
        );
        dir = nix::fcntl::openat(&dir, "d", OFlag::O_DIRECTORY, Mode::empty()).expect("openat");
    }
    drop(dir);
    let mut longest = 0;
    fx.applier
        .manifest(0, 4096, &mut |m| {
            longest = longest.max(m.path.len());
            Ok(())
        })
        .expect("manifest skips what the wire cannot name");
    assert!(longest > 4000 && longest <= agent_common::wire::MAX_PATH_BYTES);
    fx.ok("deep", &WireOp::Remove);
    assert!(!fx.at("deep").exists());
}

/// A barrier after writes only syncs the files written, and a name operation
/// brings syncfs back; files renamed or removed behind the applier's back (nothing
/// the peer sent) make no error.
#[test]
fn sync_after_writes_syncs_the_files_or_the_filesystem() {
    let mut fx = Fixture::new();
    fx.ok("f", &write(0, b"new"));
    fx.applier.sync().expect("files synced");
    assert_eq!(fs::read(fx.at("f")).expect("read"), b"newide f");
    fx.ok("f", &write(0, b"NEW"));
    fx.ok("f", &WireOp::Truncate { size: 3 });
    fs::rename(fx.at("f"), fx.at("g")).expect("rename behind the applier");
    fx.applier.sync().expect("the cached file is still open");
    assert_eq!(fs::read(fx.at("g")).expect("read"), b"NEW");
    fx.ok("g", &write(0, b"x"));
    fs::remove_file(fx.at("g")).expect("remove behind the applier");
    fx.applier.sync().expect("synced through the open file");
    fx.ok("h", &create(EntryKind::File, attrs(0o644)));
    fx.ok("h", &write(0, b"h"));
    fx.applier.sync().expect("syncfs");
    assert_eq!(fs::read(fx.at("h")).expect("read"), b"h");
}
