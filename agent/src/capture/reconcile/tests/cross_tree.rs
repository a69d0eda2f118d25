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
