//! Batches in which a directory moves between two watched trees: such a move is
//! described as a removal and a creation (the copies may live on different
//! filesystems), so the ids below the old directory name nothing afterwards while
//! other moves of the batch may still refer to them.

use super::*;

/// A directory moved to the other tree, then one of its subdirectories exchanged
/// (`RENAME_EXCHANGE`) with a directory of that tree, all in one batch. The move
/// between the trees re-creates the directory, and the scan of the new copy finds
/// the exchanged-in directory under it and moves it there; the exchange's own move
/// of it, planned against the old (now removed) directory, must then leave it where
/// it is. It used to remove it as gone, and the copy lost the whole subtree (the
/// oracle's seed 18 once).
#[test]
fn a_directory_exchanged_into_one_moved_between_trees_is_kept() {
    let mut f = Fixture::with_roots(&["A", "B"], |s| {
        fs::create_dir_all(s.join("A/x/c")).unwrap();
        fs::write(s.join("A/x/c/f"), b"C").unwrap();
        fs::create_dir_all(s.join("B/q")).unwrap();
        fs::write(s.join("B/q/g"), b"Q").unwrap();
    });
    fs::rename(f.src.join("A/x"), f.src.join("B/p")).unwrap();
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &f.src.join("B/p/c"),
        nix::fcntl::AT_FDCWD,
        &f.src.join("B/q"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    // fanotify names the exchange's first directory by its handle: x, which the
    // index still has at A/x.
    let shown = f.reconcile(&["A/x", "B/p", "A/x/c", "B/q"]);
    assert!(f.rescan.is_empty(), "{shown:?}");
    f.assert_same();
}

/// Two directories exchanged between the trees. An exchange record cannot name two
/// trees, so both ends are described as removals and creations. The cycle of the
/// two moves used to fall through to the catch-all, which created the first entry
/// over the other one still in the index: the index dropped the old entry alone,
/// and the copy kept its children under the new directory.
#[test]
fn directories_exchanged_between_trees_are_replaced_whole() {
    let mut f = Fixture::with_roots(&["A", "B"], |s| {
        fs::create_dir_all(s.join("A/x/sub")).unwrap();
        fs::write(s.join("A/x/sub/f"), b"X").unwrap();
        fs::create_dir_all(s.join("B/y")).unwrap();
        fs::write(s.join("B/y/g"), b"Y").unwrap();
    });
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &f.src.join("A/x"),
        nix::fcntl::AT_FDCWD,
        &f.src.join("B/y"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    let shown = f.reconcile(&["A/x", "B/y"]);
    assert!(f.rescan.is_empty(), "no catch-all needed: {shown:?}");
    f.assert_same();
}

/// Whatever the index has at a name is removed, with records, before an entry is
/// created there: the consumer's copy has it too.
#[test]
fn a_creation_over_an_entry_the_index_still_has_removes_that_entry_first() {
    let mut f = Fixture::new(|s| {
        fs::create_dir_all(s.join("d/old")).unwrap();
        fs::write(s.join("d/old/f"), b"F").unwrap();
    });
    fs::remove_dir_all(f.src.join("d")).unwrap();
    fs::create_dir(f.src.join("d")).unwrap();
    fs::write(f.src.join("d/new"), b"N").unwrap();
    let root = f.index.root_node(0).unwrap();
    let mut lookup = ByInode(f.src.clone());
    let st = lookup.stat_in(&f.index, root, b"d").unwrap();
    let mut plan = Plan::default();
    emit_create(&mut f.index, &mut lookup, &mut plan, root, b"d", st);
    let shown: Vec<String> = plan.changes.iter().map(|c| show(&c.path, &c.op)).collect();
    assert_eq!(
        shown[..3],
        ["remove d/old/f file", "remove d/old dir", "remove d dir"]
    );
    for c in &plan.changes {
        replay(&f.src, &f.copy, &c.path, &c.op);
    }
    f.assert_same();
}
