//! Which blocks of our files differ from the target's, found by hashing each block
//! and comparing with the target's manifest: files are read in large chunks (one
//! read per MiB rather than per 4 KiB block), and several files are hashed at once
//! on a few threads, since hashing, not the link, bounds a compare of large trees.

use std::{
    fs::File,
    io,
    num::NonZeroUsize,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use agent_common::wire::Manifest;

use super::read_full;

/// Bytes read at once from a file being compared.
const READ_CHUNK: u64 = 1 << 20;

/// Files hashed at once at most (the machine's CPUs, if fewer).
const MAX_THREADS: usize = 4;

/// One file to compare: where it is, its size, and what the target holds of it.
pub(super) type Job<'a> = (PathBuf, u64, &'a Manifest);

/// The differing byte ranges of one file, (offset, length) in order.
pub(super) type Ranges = io::Result<Vec<(u64, u64)>>;

/// The byte ranges (offset, length) of our file, `size` bytes long, whose blocks
/// differ from the target's `theirs`, in order and merged when they touch.
pub(super) fn differing(file: &File, size: u64, theirs: &Manifest) -> io::Result<Vec<(u64, u64)>> {
    let bs = u64::from(theirs.block_size.max(4096));
    let chunk = (READ_CHUNK / bs).max(1) * bs;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; usize::try_from(chunk.min(size)).unwrap_or(0)];
    // Blocks past what the target has hashes for cannot match: no need to read them.
    let hashed_end = (theirs.blocks.len() as u64)
        .saturating_mul(bs)
        .min(theirs.size);
    let mut off = 0;
    while off < size {
        let end = size.min(off + chunk);
        let want = usize::try_from(end - off).unwrap_or(0);
        let got = if off < hashed_end {
            read_full(file, &mut buf[..want], off)?
        } else {
            0
        };
        let mut at = off;
        while at < end {
            let len = bs.min(size - at);
            let same = usize::try_from(at / bs)
                .ok()
                .and_then(|idx| theirs.blocks.get(idx))
                .is_some_and(|h| {
                    let start = usize::try_from(at - off).unwrap_or(usize::MAX);
                    let stop = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                    at + len <= theirs.size
                        && stop <= got
                        && blake3::hash(&buf[start..stop]).as_bytes() == h
                });
            if !same {
                match ranges.last_mut() {
                    Some((o, l)) if *o + *l == at => *l += len,
                    _ => ranges.push((at, len)),
                }
            }
            at += len;
        }
        off = end;
    }
    Ok(ranges)
}

/// [`differing`] for every job, in the jobs' order, on up to [`MAX_THREADS`]
/// threads.
pub(super) fn differing_many(jobs: &[Job<'_>]) -> Vec<Ranges> {
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
        .min(jobs.len());
    if threads <= 1 {
        return jobs.iter().map(one).collect();
    }
    indexed(jobs, threads)
}

/// The parallel pass: workers take the next job in turn and return (index,
/// result) pairs, put back in the jobs' order.
fn indexed(jobs: &[Job<'_>], threads: usize) -> Vec<Ranges> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Ranges>> =
        std::iter::repeat_with(|| None).take(jobs.len()).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        mine.push((i, one(job)));
                    }
                    mine
                })
            })
            .collect();
        for w in workers {
            // A worker that panicked leaves its results `None`: reported below.
            if let Ok(mine) = w.join() {
                for (i, r) in mine {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("a hashing thread failed"))))
        .collect()
}

fn one((path, size, theirs): &Job<'_>) -> Ranges {
    differing(&File::open(path)?, *size, theirs)
}

#[cfg(test)]
mod tests {
    use agent_common::wire::EntryKind;

    use super::*;

    fn manifest(data: &[u8], bs: usize) -> Manifest {
        Manifest {
            dir: 0,
            path: b"f".to_vec(),
            kind: EntryKind::File,
            size: data.len() as u64,
            blocks: data
                .chunks(bs)
                .map(|c| *blake3::hash(c).as_bytes())
                .collect(),
            block_size: u32::try_from(bs).expect("bs"),
        }
    }

    /// Blocks that differ on either side of a read chunk's edge, a shorter copy and
    /// a longer one are all found, merged where they touch, in order; the results
    /// of several files come back in the files' order.
    #[test]
    fn differing_blocks_across_chunks_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours: Vec<u8> = (0..(3 << 20) + 100).map(|i: u32| (i % 251) as u8).collect();
        let mut theirs = ours.clone();
        let edge = usize::try_from(READ_CHUNK).expect("chunk");
        theirs[edge - 1] ^= 1;
        theirs[edge] ^= 1;
        theirs[10] ^= 1;
        let path = dir.path().join("f");
        std::fs::write(&path, &ours).expect("write");
        let size = ours.len() as u64;
        let m = manifest(&theirs, 4096);
        let got = differing(&File::open(&path).expect("open"), size, &m).expect("compare");
        assert_eq!(got, vec![(0, 4096), (READ_CHUNK - 4096, 8192)]);
        let short = manifest(&ours[..5000], 4096);
        let got = differing(&File::open(&path).expect("open"), size, &short).expect("compare");
        assert_eq!(got, vec![(4096, size - 4096)], "the partial block differs");
        let same = manifest(&ours, 4096);
        let jobs: Vec<Job<'_>> = vec![
            (path.clone(), size, &m),
            (path.clone(), size, &same),
            (dir.path().join("missing"), 1, &same),
            (path.clone(), size, &short),
        ];
        let all = differing_many(&jobs);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].as_ref().expect("0").len(), 2);
        assert!(all[1].as_ref().expect("1").is_empty());
        assert!(all[2].is_err());
        assert_eq!(all[3].as_ref().expect("3"), &vec![(4096, size - 4096)]);
    }
}
