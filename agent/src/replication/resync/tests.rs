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

/// A resync from `source` to `target` as the runtime runs one: the target's
/// manifest (all of it, or of `scope` only), the compare, every record applied.
fn run_resync(source: &Path, target: &Path, scope: Option<&[&str]>) -> Totals {
    let mut applier = Applier::open(target).expect("open target");
    let scope: Option<Vec<Vec<u8>>> = scope.map(|s| {
        let mut v: Vec<Vec<u8>> = s.iter().map(|p| p.as_bytes().to_vec()).collect();
        v.sort();
        v
    });
    let mut view = TargetView::new();
    let mut keep = |m: Manifest| {
        view.insert((m.dir, m.path.clone()), m);
        Ok(())
    };
    match &scope {
        Some(paths) => applier.manifest_paths(0, 4096, paths, &mut keep),
        None => applier.manifest(0, 4096, &mut keep),
    }
    .expect("manifest");
    let mut records = Vec::new();
    let mut collect = |r: Vec<Record>| {
        records.extend(r);
        true
    };
    let totals = match &scope {
        Some(paths) => compare_paths(0, source, paths, &view, &mut collect),
        None => compare(0, source, &view, &mut collect),
    }
    .expect("compare");
    for r in &records {
        applier
            .apply(&r.path, &r.op)
            .unwrap_or_else(|e| panic!("{:?}: {e}", r.op));
    }
    totals
}

fn resync(source: &Path, target: &Path) -> Totals {
    run_resync(source, target, None)
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

/// The scoped resync: the target lists only `scope` (and scoped directories'
/// children by name), and only what is in scope is compared.
fn resync_paths(source: &Path, target: &Path, scope: &[&str]) -> Totals {
    run_resync(source, target, Some(scope))
}

#[test]
fn scoped_resync_compares_only_the_logged_paths() {
    let d = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    for r in [&src, &dst] {
        fs::create_dir_all(r.join("d")).expect("mkdir");
        fs::write(r.join("f"), vec![1u8; 100_000]).expect("write");
        fs::write(r.join("g"), b"to be removed").expect("write");
        fs::write(r.join("h"), b"same").expect("write");
        fs::write(r.join("d/old"), b"old").expect("write");
    }
    // Logged changes at the source.
    let mut f = fs::read(src.join("f")).expect("read");
    f[50_000] = 9;
    fs::write(src.join("f"), &f).expect("write");
    fs::remove_file(src.join("g")).expect("rm");
    fs::create_dir_all(src.join("n/m")).expect("mkdir");
    fs::write(src.join("n/m/x"), b"new").expect("write");
    // A directory found by the change-time walk: a child removed, one added.
    fs::remove_file(src.join("d/old")).expect("rm");
    fs::create_dir_all(src.join("d/new/deep")).expect("mkdir");
    fs::write(src.join("d/new/deep/y"), b"whole").expect("write");
    // Not logged: must not be compared (this is what the log saves).
    fs::write(src.join("h"), b"diff").expect("write");

    let totals = resync_paths(&src, &dst, &["f", "g", "n", "d"]);
    assert_eq!(
        totals.data_bytes,
        4096 + 3 + 5,
        "one block of f, n/m/x and d/new/deep/y"
    );
    let (a, b) = (snapshot(&src), snapshot(&dst));
    let differing: Vec<_> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        differing,
        vec!["h".to_string()],
        "everything but the unlogged file converges"
    );
}
