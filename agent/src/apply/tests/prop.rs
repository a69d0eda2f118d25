//! Random sequences of records, hostile paths included, never panic and never touch
//! anything outside the root.

use agent_common::wire::{Attrs, EntryKind, MAX_PATH_BYTES, WireOp};
use proptest::prelude::*;

use super::{Fixture, snapshot};

/// Path components: ordinary names, the fixture's symlinks to outside, and the
/// malformed ones.
const COMPONENTS: &[&[u8]] = &[
    b"a",
    b"b",
    b"f",
    b"evil",
    b"evil_rel",
    b"link_out",
    b"s",
    b".",
    b"..",
    b"",
    b"x\0y",
];

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(COMPONENTS), 1..4)
            .prop_map(|parts| parts.join(&b'/')),
        1 => Just(b"/etc/passwd".to_vec()),
        1 => Just(vec![b'a'; MAX_PATH_BYTES + 1]),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn attrs() -> impl Strategy<Value = Attrs> {
    (
        0u32..0o10000,
        prop::sample::select(vec![0u32, 1234]),
        any::<i64>(),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    b"user.a".to_vec(),
                    b"trusted.b".to_vec(),
                    b"user.\0".to_vec(),
                    Vec::new(),
                ]),
                prop::collection::vec(any::<u8>(), 0..8),
            ),
            0..3,
        ),
    )
        .prop_map(|(mode, id, time, xattrs)| Attrs {
            mode,
            uid: id,
            gid: id,
            mtime_ns: time,
            atime_ns: time / 3,
            xattrs,
        })
}

fn kind() -> impl Strategy<Value = EntryKind> {
    prop::sample::select(vec![
        EntryKind::File,
        EntryKind::Dir,
        EntryKind::Symlink,
        EntryKind::Fifo,
        EntryKind::Socket,
        EntryKind::CharDevice,
        EntryKind::BlockDevice,
    ])
}

fn op() -> impl Strategy<Value = WireOp> {
    let offset = prop_oneof![0u64..70_000, Just(u64::MAX - 1), Just(i64::MAX as u64)];
    let target = prop::option::of(prop::sample::select(vec![
        b"../outside".to_vec(),
        b"/".to_vec(),
        b"f".to_vec(),
        b"a\0b".to_vec(),
        Vec::new(),
    ]));
    prop_oneof![
        4 => (offset.clone(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(offset, data)| WireOp::Write { offset, data }),
        1 => (offset.clone(), 0u64..70_000).prop_map(|(offset, len)| WireOp::Punch { offset, len }),
        1 => offset.prop_map(|size| WireOp::Truncate { size }),
        4 => (kind(), attrs(), target).prop_map(|(kind, attrs, target)| WireOp::Create {
            kind,
            attrs,
            target,
            // /dev/null's number: even a bug writing through a device node would
            // harm nothing.
            rdev: libc::makedev(1, 3),
        }),
        1 => Just(WireOp::Remove),
        2 => path().prop_map(|new_path| WireOp::Rename { new_path }),
        1 => path().prop_map(|new_path| WireOp::Exchange { new_path }),
        1 => path().prop_map(|new_path| WireOp::Link { new_path }),
        1 => attrs().prop_map(WireOp::SetAttrs),
        1 => Just(WireOp::Barrier),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_records_stay_inside(records in prop::collection::vec((path(), op()), 1..40)) {
        let mut fx = Fixture::new();
        let before = snapshot(&fx.outside);
        for (path, op) in &records {
            // Errors are expected; panics and escapes are not.
            let _ = fx.applier.apply(path, op);
        }
        let _ = fx.applier.manifest(0, 4096, &mut |_| Ok(()));
        prop_assert_eq!(snapshot(&fx.outside), before);
    }
}
