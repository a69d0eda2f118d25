//! The compare against a real target: its manifest, the records, the applier; the
//! target must end identical to the source and receive only the differing blocks.

use std::{collections::BTreeMap, fs, os::unix::fs::PermissionsExt, path::Path};

use super::*;
use crate::apply::Applier;

/// Everything that must be equal: kind, content or target, mode.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, (String, Vec<u8>, u32)> {
    let mut list = Vec::new();
    walk(root, Vec::new(), &mut list).expect("walk");
    list.into_iter()
        .map(|(p, m)| {
            let full = join(root, &p);
            let content = if m.is_file() {
                fs::read(&full).expect("read")
            } else if m.file_type().is_symlink() {
                fs::read_link(&full)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                Vec::new()
            };
            let kind = format!("{:?}", kind_of(&m));
            (p, (kind, content, m.permissions().mode() & 0o7777))
        })
        .collect()
}

fn resync(source: &Path, target: &Path) -> Totals {
    let applier = Applier::open(target).expect("open target");
    let mut view = TargetView::new();
    applier
        .manifest(0, 4096, &mut |m| {
            view.insert((m.dir, m.path.clone()), m);
            Ok(())
        })
        .expect("manifest");
    let mut records = Vec::new();
    let totals = compare(0, source, &view, &mut |r| {
        records.extend(r);
        true
    })
    .expect("compare");
    let mut applier = applier;
    for r in &records {
        applier
            .apply(&r.path, &r.op)
            .unwrap_or_else(|e| panic!("{:?}: {e}", r.op));
    }
    totals
}

#[test]
fn resync_makes_the_target_identical_sending_only_differing_blocks() {
    let d = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    for r in [&src, &dst] {
        fs::create_dir_all(r.join("dir/sub")).expect("mkdir");
    }
    // The same 1 MiB file on both sides, then 3 blocks changed at the source.
    let mut big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(dst.join("dir/big"), &big).expect("write");
    for b in [0usize, 100, 255] {
        big[b * 4096..b * 4096 + 10].copy_from_slice(b"0123456789");
    }
    fs::write(src.join("dir/big"), &big).expect("write");
    // Only at the source: a file, a symlink, a directory; only at the target: a tree.
    fs::write(src.join("new"), b"fresh").expect("write");
    std::os::unix::fs::symlink("dir/big", src.join("link")).expect("symlink");
    fs::create_dir(src.join("only-src")).expect("mkdir");
    fs::create_dir_all(dst.join("only-dst/deep")).expect("mkdir");
    fs::write(dst.join("only-dst/deep/f"), b"old").expect("write");
    // Same name, other kind.
    fs::write(src.join("dir/sub/x"), b"file now").expect("write");
    fs::create_dir(dst.join("dir/sub/x")).expect("mkdir");
    // A shrunk file and a changed mode.
    fs::write(src.join("short"), b"ab").expect("write");
    fs::write(dst.join("short"), b"abcdef").expect("write");
    fs::set_permissions(src.join("short"), fs::Permissions::from_mode(0o600)).expect("chmod");
    // Hard links at the source.
    fs::hard_link(src.join("new"), src.join("dir/new-link")).expect("link");

    let totals = resync(&src, &dst);
    assert_eq!(snapshot(&src), snapshot(&dst));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(dst.join("new")).expect("stat").ino(),
        fs::metadata(dst.join("dir/new-link")).expect("stat").ino(),
        "hard links stay links"
    );
    // 3 changed blocks + "fresh" + "file now" + "ab".
    assert_eq!(totals.data_bytes, 3 * 4096 + 5 + 8 + 2);
    // A second pass finds nothing to send.
    assert_eq!(resync(&src, &dst).data_bytes, 0);
}
