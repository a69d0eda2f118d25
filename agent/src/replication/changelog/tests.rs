//! The change log on disk: what survives a clean stop, a crash and a torn line.

use std::io::Write;

use super::*;

fn rec(dir: u16, path: &str, op: WireOp) -> Record {
    Record {
        seq: 0,
        dir,
        path: path.as_bytes().to_vec(),
        op,
    }
}

/// The scope a log kept in `dir` gives for base `base` once opened again, as a
/// restarted agent would read it.
fn reopened_scope(dir: &Path, base: u64) -> Option<Vec<ScopedPath>> {
    ChangeLog::open(dir, &[]).expect("reopen").scope_for(base)
}

fn sp(dir: u16, path: &str) -> ScopedPath {
    ScopedPath {
        dir,
        path: path.as_bytes().to_vec(),
    }
}

#[test]
fn paths_survive_a_clean_stop_and_scope_needs_the_base() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut log = ChangeLog::open(state.path(), &[]).expect("open");
    assert_eq!(log.scope_for(7), None, "no base yet: unknown history");
    log.reset(7).expect("reset");
    log.record(&rec(0, "a/b", WireOp::Truncate { size: 0 }));
    log.record(&rec(1, "c", WireOp::Remove));
    log.record(&rec(0, "a/b", WireOp::Truncate { size: 1 }));
    log.record(&rec(0, "", WireOp::Barrier));
    assert!(log.is_dirty());
    log.close_clean().expect("close");
    let again = ChangeLog::open(state.path(), &[]).expect("reopen");
    assert_eq!(again.scope_for(7), Some(vec![sp(0, "a/b"), sp(1, "c")]));
    assert_eq!(
        again.scope_for(8),
        None,
        "the peer holds another generation"
    );
}

/// A change of the root's own attributes (a resync's last record, spilled when
/// the link dropped before it was durable) named the empty path, which the peer
/// refuses in a manifest request: every scoped resync after was refused, and the
/// pair never got back in sync (lab test `resync_after_kill_9_of_the_primary_while_alone`).
#[test]
fn the_root_itself_means_a_full_compare() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut log = ChangeLog::open(state.path(), &[]).expect("open");
    log.reset(3).expect("reset");
    log.record(&rec(0, "a", WireOp::Truncate { size: 0 }));
    log.note(sp(0, ""));
    assert_eq!(log.scope_for(3), None);
    log.flush().expect("flush");
    assert_eq!(reopened_scope(state.path(), 3), None);
    // A log an older agent wrote with the root in it.
    let old = tempfile::tempdir().expect("tempdir");
    let mut log = ChangeLog::open(old.path(), &[]).expect("open");
    log.reset(3).expect("reset");
    log.record(&rec(0, "a", WireOp::Truncate { size: 0 }));
    log.close_clean().expect("close");
    let file = old.path().join("changes.log");
    let text = fs::read_to_string(&file).expect("read");
    let with_root = text.replacen("\"hex\":\"61\"", "\"hex\":\"\"", 1);
    assert_ne!(text, with_root, "{text}");
    fs::write(&file, with_root).expect("write");
    assert_eq!(reopened_scope(old.path(), 3), None);
}

#[test]
fn a_moved_name_means_a_full_compare() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut log = ChangeLog::open(state.path(), &[]).expect("open");
    log.reset(3).expect("reset");
    log.record(&rec(
        0,
        "x",
        WireOp::Rename {
            new_path: b"y".to_vec(),
        },
    ));
    log.flush().expect("flush");
    assert_eq!(reopened_scope(state.path(), 3), None);
    log.reset(3).expect("reset");
    assert_eq!(log.scope_for(3), Some(vec![]), "a reset forgets the move");
}

#[test]
fn a_torn_line_keeps_what_came_before() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut log = ChangeLog::open(state.path(), &[]).expect("open");
    log.reset(5).expect("reset");
    log.record(&rec(0, "kept", WireOp::Remove));
    log.close_clean().expect("close");
    let mut f = OpenOptions::new()
        .append(true)
        .open(state.path().join("changes.log"))
        .expect("open");
    f.write_all(b"{\"path\":{\"dir\":0,\"hex\":\"61")
        .expect("write");
    drop(f);
    let again = ChangeLog::open(state.path(), &[]).expect("reopen");
    assert_eq!(again.scope_for(5), Some(vec![sp(0, "kept")]));
}

#[test]
fn after_a_crash_recently_changed_files_are_added() {
    let state = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    fs::create_dir(data.path().join("sub")).expect("mkdir");
    fs::write(data.path().join("sub/f"), b"x").expect("write");
    let roots = vec![data.path().to_path_buf()];
    let mut log = ChangeLog::open(state.path(), &roots).expect("open");
    log.reset(9).expect("reset");
    log.record(&rec(0, "logged", WireOp::Remove));
    log.flush().expect("flush");
    // No clean stop: the agent died. Files changed around the last flush are added.
    drop(log);
    let again = ChangeLog::open(state.path(), &roots).expect("reopen");
    let scope = again.scope_for(9).expect("usable");
    assert!(scope.contains(&sp(0, "logged")));
    assert!(scope.contains(&sp(0, "sub/f")), "{scope:?}");
    assert!(scope.contains(&sp(0, "sub")), "{scope:?}");
}
