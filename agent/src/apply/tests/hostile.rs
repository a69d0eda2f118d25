//! Hostile records: each is refused, and the sentinel tree outside the root is
//! byte-for-byte (and inode-, mode-, owner-, time- and xattr-) unchanged.

use std::fs;

use agent_common::wire::{Attrs, EntryKind, MAX_PATH_BYTES, WireOp};

use super::{Fixture, attrs, create, snapshot, write};
use crate::apply::ApplyError;

/// Every kind of operation, for paths that must be refused whatever the operation.
fn every_op() -> Vec<WireOp> {
    vec![
        write(0, b"pwned"),
        WireOp::Punch { offset: 0, len: 4 },
        WireOp::Truncate { size: 0 },
        create(EntryKind::File, attrs(0o777)),
        create(EntryKind::Dir, attrs(0o777)),
        WireOp::Create {
            kind: EntryKind::Symlink,
            attrs: attrs(0o777),
            target: Some(b"/".to_vec()),
            rdev: 0,
        },
        WireOp::Remove,
        WireOp::Rename {
            new_path: b"stolen".to_vec(),
        },
        WireOp::Exchange {
            new_path: b"f".to_vec(),
        },
        WireOp::Link {
            new_path: b"stolen".to_vec(),
        },
        WireOp::SetAttrs(attrs(0o777)),
    ]
}

#[track_caller]
fn assert_hostile(result: Result<(), ApplyError>, what: &str) {
    match result {
        Err(ApplyError::Hostile { .. }) => {}
        other => panic!("{what}: expected a hostile error, got {other:?}"),
    }
}

#[test]
fn malformed_and_escaping_paths_are_refused() {
    let mut fx = Fixture::new();
    let before = snapshot(&fx.outside);
    let long = "a/".repeat(MAX_PATH_BYTES / 2) + "b";
    let paths: Vec<Vec<u8>> = vec![
        b"../x".to_vec(),
        b"../outside/secret".to_vec(),
        b"/etc/passwd".to_vec(),
        fx.outside
            .join("secret")
            .into_os_string()
            .into_encoded_bytes(),
        b"a/../../x".to_vec(),
        b"..".to_vec(),
        b".".to_vec(),
        b"./f".to_vec(),
        b"".to_vec(),
        b"a//b".to_vec(),
        b"f/".to_vec(),
        b"f\0../../x".to_vec(),
        long.into_bytes(),
        b"evil/secret".to_vec(),
        b"evil/sub/g".to_vec(),
        b"evil/new".to_vec(),
        b"evil_rel/secret".to_vec(),
        b"evil_rel/sub/new".to_vec(),
    ];
    for path in &paths {
        for op in every_op() {
            // The root's own attributes are the one thing the empty path may name.
            if path.is_empty() && matches!(op, WireOp::SetAttrs(_)) {
                continue;
            }
            let what = format!("{} {op:?}", path.escape_ascii());
            assert_hostile(fx.applier.apply(path, &op), &what);
        }
    }
    assert_eq!(snapshot(&fx.outside), before);
}

#[test]
fn second_paths_are_confined_too() {
    let mut fx = Fixture::new();
    let before = snapshot(&fx.outside);
    for new_path in [
        &b"evil/f"[..],
        b"evil/g",
        b"evil_rel/sub/h",
        b"../outside/f",
        b"/tmp/x",
        b"",
        b"a\0b",
    ] {
        for op in [
            WireOp::Rename {
                new_path: new_path.to_vec(),
            },
            WireOp::Exchange {
                new_path: new_path.to_vec(),
            },
            WireOp::Link {
                new_path: new_path.to_vec(),
            },
        ] {
            let what = format!("f -> {} {op:?}", new_path.escape_ascii());
            assert_hostile(fx.apply("f", &op), &what);
        }
    }
    assert_eq!(fs::read(fx.at("f")).expect("f"), b"inside f");
    assert_eq!(snapshot(&fx.outside), before);
}

#[test]
fn malformed_payloads_are_refused() {
    let mut fx = Fixture::new();
    let symlink = |target: Option<&[u8]>| WireOp::Create {
        kind: EntryKind::Symlink,
        attrs: attrs(0o777),
        target: target.map(<[u8]>::to_vec),
        rdev: 0,
    };
    assert_hostile(fx.apply("s", &symlink(None)), "no target");
    assert_hostile(fx.apply("s", &symlink(Some(b""))), "empty target");
    assert_hostile(fx.apply("s", &symlink(Some(b"a\0b"))), "NUL target");
    let long = vec![b'x'; MAX_PATH_BYTES + 1];
    assert_hostile(fx.apply("s", &symlink(Some(&long))), "long target");
    let bad_xattr = Attrs {
        xattrs: vec![(b"user.a\0b".to_vec(), Vec::new())],
        ..Attrs::default()
    };
    assert_hostile(
        fx.apply("f", &WireOp::SetAttrs(bad_xattr.clone())),
        "NUL xattr",
    );
    assert_hostile(
        fx.apply("g", &create(EntryKind::File, bad_xattr)),
        "NUL xattr",
    );
    assert!(!fx.at("g").exists(), "refused before anything changed");
    assert_hostile(
        fx.apply("f", &write(u64::MAX - 2, b"1234")),
        "offset overflow",
    );
    assert_hostile(
        fx.apply(
            "f",
            &WireOp::Punch {
                offset: 1,
                len: u64::MAX,
            },
        ),
        "punch overflow",
    );
    assert_hostile(fx.apply("f", &WireOp::Truncate { size: u64::MAX }), "size");
    assert_eq!(fs::read(fx.at("f")).expect("f"), b"inside f");
}

#[test]
fn a_final_symlink_is_never_followed() {
    let mut fx = Fixture::new();
    let before = snapshot(&fx.outside);
    for op in [
        write(0, b"pwned"),
        WireOp::Punch { offset: 0, len: 4 },
        WireOp::Truncate { size: 0 },
    ] {
        let result = fx.apply("link_out", &op);
        assert!(
            result.is_err(),
            "{op:?} through a final symlink: {result:?}"
        );
    }
    // These act on the link itself, which is inside the root.
    fx.ok("link_out", &WireOp::SetAttrs(attrs(0o777)));
    fx.ok(
        "link_out",
        &WireOp::Link {
            new_path: b"link_copy".to_vec(),
        },
    );
    fx.ok("evil", &create(EntryKind::Dir, attrs(0o700)));
    fx.ok("evil", &create(EntryKind::File, attrs(0o700)));
    fx.ok("evil", &write(0, b"inside now"));
    fx.ok(
        "evil_rel",
        &WireOp::Rename {
            new_path: b"moved".to_vec(),
        },
    );
    fx.ok("link_copy", &WireOp::Remove);
    fx.ok("link_out", &WireOp::Remove);
    fx.ok("moved", &WireOp::Remove);
    assert_eq!(snapshot(&fx.outside), before);
}

#[test]
fn symlinks_the_peer_creates_do_not_open_a_way_out() {
    let mut fx = Fixture::new();
    let before = snapshot(&fx.outside);
    let outside = fx.outside.clone().into_os_string().into_encoded_bytes();
    for (name, target) in [("abs", outside), ("rel", b"../outside".to_vec())] {
        fx.ok(
            name,
            &WireOp::Create {
                kind: EntryKind::Symlink,
                attrs: attrs(0o777),
                target: Some(target),
                rdev: 0,
            },
        );
        for op in every_op() {
            let what = format!("{name}/secret {op:?}");
            assert_hostile(fx.apply(&format!("{name}/secret"), &op), &what);
        }
        assert_hostile(
            fx.apply(
                "f",
                &WireOp::Rename {
                    new_path: format!("{name}/f").into_bytes(),
                },
            ),
            "rename into",
        );
        assert_hostile(
            fx.apply(
                "f",
                &WireOp::Link {
                    new_path: format!("{name}/g").into_bytes(),
                },
            ),
            "link into",
        );
    }
    assert_eq!(snapshot(&fx.outside), before);
}
