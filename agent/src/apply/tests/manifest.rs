//! The manifest: every entry once, parents first, block hashes equal to BLAKE3 of the
//! blocks on disk, nothing from beyond a symlink.

use std::{
    collections::HashSet,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::Path,
};

use agent_common::wire::{EntryKind, Manifest};

use super::{Fixture, os};
use crate::apply::ApplyError;

const BLOCK: u32 = 4096;

fn collect(fx: &Fixture, dir: u16, block_size: u32) -> Result<Vec<Manifest>, ApplyError> {
    let mut out = Vec::new();
    fx.applier.manifest(dir, block_size, &mut |m| {
        out.push(m);
        Ok(())
    })?;
    Ok(out)
}

fn expected_blocks(path: &Path, block_size: usize) -> Vec<[u8; 32]> {
    fs::read(path)
        .expect("read")
        .chunks(block_size)
        .map(|block| *blake3::hash(block).as_bytes())
        .collect()
}

#[test]
fn manifest_lists_the_tree_with_block_hashes() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.at("d/e/f")).expect("mkdir");
    fs::write(fx.at("empty"), b"").expect("write");
    fs::write(fx.at("d/one"), b"x").expect("write");
    fs::write(fx.at("d/e/exact"), vec![7u8; BLOCK as usize]).expect("write");
    let pattern: Vec<u8> = (0..(2 * BLOCK + BLOCK / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    fs::write(fx.at("d/e/f/two-and-a-half"), &pattern).expect("write");
    let sparse = fs::File::create(fx.at("sparse")).expect("create");
    sparse.set_len(3 * u64::from(BLOCK) + 10).expect("set_len");
    let odd = fx.root.join(os(b"non-utf8-\xff\xfe"));
    fs::write(&odd, b"odd").expect("write");
    nix::unistd::mkfifo(
        &fx.at("d/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");

    let entries = collect(&fx, 3, BLOCK).expect("manifest");
    let mut seen = HashSet::new();
    for m in &entries {
        assert_eq!((m.dir, m.block_size), (3, BLOCK));
        if let Some(slash) = m.path.iter().rposition(|&b| b == b'/') {
            assert!(
                seen.contains(&m.path[..slash]),
                "{} before its parent",
                m.path.escape_ascii()
            );
        }
        assert!(
            seen.insert(m.path.clone()),
            "{} twice",
            m.path.escape_ascii()
        );
        let on_disk = fx.root.join(os(&m.path));
        let meta = fs::symlink_metadata(&on_disk).expect("stat");
        match m.kind {
            EntryKind::File => {
                assert_eq!(m.size, meta.len());
                assert_eq!(m.blocks, expected_blocks(&on_disk, BLOCK as usize));
                assert_eq!(m.blocks.len() as u64, meta.len().div_ceil(u64::from(BLOCK)));
            }
            EntryKind::Symlink => {
                assert!(meta.file_type().is_symlink());
                assert_eq!(m.size, meta.len());
                assert!(m.blocks.is_empty());
            }
            _ => assert!(m.blocks.is_empty()),
        }
    }
    let mut paths: Vec<&[u8]> = entries.iter().map(|m| m.path.as_slice()).collect();
    paths.sort_unstable();
    let mut wanted: Vec<&[u8]> = vec![
        b"d",
        b"d/e",
        b"d/e/exact",
        b"d/e/f",
        b"d/e/f/two-and-a-half",
        b"d/fifo",
        b"d/one",
        b"empty",
        b"evil",
        b"evil_rel",
        b"f",
        b"link_out",
        b"non-utf8-\xff\xfe",
        b"sparse",
    ];
    wanted.sort_unstable();
    assert_eq!(paths, wanted, "nothing from beyond the symlinks to outside");
    let kind = |p: &[u8]| entries.iter().find(|m| m.path == p).map(|m| m.kind);
    assert_eq!(kind(b"d/fifo"), Some(EntryKind::Fifo));
    assert_eq!(kind(b"evil"), Some(EntryKind::Symlink));
    assert_eq!(kind(b"d/e"), Some(EntryKind::Dir));
    let sparse = entries
        .iter()
        .find(|m| m.path == b"sparse")
        .expect("sparse");
    assert_eq!(sparse.blocks.len(), 4);
    assert_eq!(
        sparse.blocks[0],
        *blake3::hash(&[0u8; BLOCK as usize]).as_bytes()
    );
}

#[test]
fn manifest_does_not_touch_access_times_and_stops_on_error() {
    let fx = Fixture::new();
    fs::write(fx.at("big"), vec![1u8; 3 * BLOCK as usize]).expect("write");
    let atime = |fx: &Fixture| fs::metadata(fx.at("big")).expect("stat").atime_nsec();
    let before = atime(&fx);
    // An odd block size larger than the read chunk.
    let entries = collect(&fx, 0, 100_003).expect("manifest");
    assert_eq!(atime(&fx), before);
    let big = entries.iter().find(|m| m.path == b"big").expect("big");
    assert_eq!(big.blocks, expected_blocks(&fx.at("big"), 100_003));

    let mut calls = 0;
    let result = fx.applier.manifest(0, BLOCK, &mut |_| {
        calls += 1;
        Err(ApplyError::Hostile {
            path: Vec::new(),
            reason: "stop",
        })
    });
    assert!(result.is_err());
    assert_eq!(calls, 1);
    assert!(collect(&fx, 0, 0).is_err(), "block size 0 is refused");
    assert!(fx.root.as_os_str().as_bytes().starts_with(b"/"));
}
