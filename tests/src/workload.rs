//! A seeded random file-system workload for the capture oracle: every kind of change the
//! capture engine must report, from several processes and threads at once.
//!
//! Each worker (a thread in one of several forked processes) works mostly in its own
//! subtree `ROOT/w<id>` of one watched root, keeping a small model of the names it made
//! so that most operations hit existing entries. Some operations cross subtrees and
//! roots (through `ROOT/shared`), and some move entries between the watched trees and
//! the unwatched tree `U`, whose own names all contain [`UNWATCHED_MARK`] so a leak of
//! an unwatched name into the stream or the shadow is easy to spot.
//!
//! The PRNG is seeded from the run's seed and the worker id, so each worker's sequence
//! of decisions is reproducible; the interleaving of workers is up to the scheduler.
//! Operations that fail (a name raced away, a directory not empty, an unsupported
//! fallocate mode) are counted and ignored: the oracle only needs the source and the
//! shadow to agree at the end, whatever the source ended up being.
//!
//! The workload never follows a symlink: symlink targets never resolve outside the
//! trees, and path-based calls use the no-follow variants, so a run cannot touch the
//! host's files.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod sigbus;

/// Every name created in the unwatched tree contains this; no record and no shadow
/// may ever contain it.
pub const UNWATCHED_MARK: &str = "uwonly";

/// Name of the directory in each watched root that workers use to trade entries.
pub const SHARED_DIR: &str = "shared";

/// Every kind of operation the workload performs; each appears in every run of at
/// least `KINDS.len()` operations per worker.
pub const KINDS: &[&str] = &[
    "create",
    "write",
    "pwrite",
    "writev",
    "pwritev",
    "pwritev2",
    "pwritev2_append",
    "append_write",
    "sparse_high",
    "ftruncate_shrink",
    "ftruncate_grow",
    "truncate_path",
    "fallocate_default",
    "fallocate_keep_size",
    "fallocate_punch_hole",
    "fallocate_zero_range",
    "fallocate_collapse_range",
    "fallocate_insert_range",
    "copy_file_range",
    "sendfile",
    "splice",
    "open_trunc",
    "creat",
    "uring_write",
    "uring_writev",
    "mmap_write",
    "rename",
    "rename_over",
    "rename_exchange",
    "rename_noreplace",
    "rename_dir",
    "rename_cross_subtree",
    "rename_cross_root",
    "rename_from_unwatched",
    "rename_to_unwatched",
    "unwatched_ops",
    "hard_link",
    "symlink",
    "mkfifo",
    "mknod_char",
    "mknod_block",
    "mknod_socket",
    "unlink",
    "mkdir",
    "mkdir_deep",
    "rmdir",
    "chmod",
    "chown",
    "setxattr",
    "removexattr",
    "utimensat",
    "fsync",
    "fdatasync",
    "uring_open_trunc",
];

/// Relative weights (same order as [`KINDS`]): content changes dominate, as in real
/// applications, but every kind keeps a fair share.
const WEIGHTS: &[u32] = &[
    6, 8, 8, 4, 4, 4, 3, 4, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 3, 3, 3, 2, 2, 3, 3, 3, 3, 3, 2, 2, 1, 2,
    1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 3, 3, 1, 2, 2, 2, 2, 1, 2, 1, 1, 1,
];

/// Per-kind counts of attempted and failed operations.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counts {
    /// Operations attempted, per kind.
    pub attempted: BTreeMap<String, u64>,
    /// Operations that returned an error (counted and ignored), per kind.
    pub failed: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, kind: &str, ok: bool) {
        *self.attempted.entry(kind.to_string()).or_default() += 1;
        if !ok {
            *self.failed.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Adds another set of counts into this one.
    pub fn merge(&mut self, o: &Counts) {
        for (k, v) in &o.attempted {
            *self.attempted.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
    }

    /// Total operations attempted.
    pub fn total(&self) -> u64 {
        self.attempted.values().sum()
    }

    /// Kinds that were never attempted.
    pub fn missing_kinds(&self) -> Vec<&'static str> {
        KINDS
            .iter()
            .copied()
            .filter(|k| self.attempted.get(*k).copied().unwrap_or(0) == 0)
            .collect()
    }

    /// One line per kind: `kind attempted (failed)`.
    pub fn report(&self) -> String {
        let mut s = format!("{} operations\n", self.total());
        for (k, v) in &self.attempted {
            let f = self.failed.get(k).copied().unwrap_or(0);
            s.push_str(&format!("  {k:<26} {v:>6} ({f} failed)\n"));
        }
        s
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed of every decision.
    pub seed: u64,
    /// Minimum number of operations in total.
    pub ops: usize,
    /// Worker processes (forked).
    pub processes: usize,
    /// Worker threads per process.
    pub threads: usize,
    /// The watched roots (workers are spread over them).
    pub watched: Vec<PathBuf>,
    /// The unwatched tree.
    pub unwatched: PathBuf,
}

/// A small, fast, seedable PRNG (splitmix64 seeding a xorshift64*): deterministic across
/// platforms and crate versions, which a seed printed on failure relies on.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator; any seed (zero included) gives a good state.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// Random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| err(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret.unsigned_abs())
    }
}

/// Runs the workload: forks `processes` workers with `threads` threads each and waits
/// for all of them. Returns the merged counts.
pub fn run(cfg: &Config) -> io::Result<Counts> {
    if cfg.watched.is_empty() {
        return Err(io::Error::other("no watched root"));
    }
    for r in &cfg.watched {
        match fs::create_dir(r.join(SHARED_DIR)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let workers = cfg.processes.max(1) * cfg.threads.max(1);
    let per_worker = cfg.ops.div_ceil(workers).max(KINDS.len());
    let mut children = Vec::new();
    for p in 0..cfg.processes.max(1) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only runs the workload (plain system calls, allocation and
        // new threads, all safe after fork with glibc) and leaves with `_exit`, never
        // returning into the parent's stack or running its atexit handlers.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(rd);
            let code = child_main(cfg, p, per_worker, wr);
            // SAFETY: _exit never returns and is async-signal-safe.
            unsafe { libc::_exit(code) };
        }
        drop(wr);
        children.push((pid, rd));
    }
    let mut total = Counts::default();
    let mut failure = None;
    for (pid, rd) in children {
        let mut s = String::new();
        let read = File::from(rd).read_to_string(&mut s);
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is writable.
        let w = unsafe { libc::waitpid(pid, &mut status, 0) };
        if w < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            failure.get_or_insert(format!("worker process {pid} failed: status {status:#x}"));
            continue;
        }
        match read
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_str::<Counts>(&s).map_err(|e| format!("{e}: {s:?}")))
        {
            Ok(c) => total.merge(&c),
            Err(e) => {
                failure.get_or_insert(format!("worker process {pid}: bad counts: {e}"));
            }
        }
    }
    match failure {
        Some(f) => Err(io::Error::other(f)),
        None => Ok(total),
    }
}

fn child_main(cfg: &Config, p: usize, per_worker: usize, out: OwnedFd) -> i32 {
    let threads = cfg.threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let cfg = cfg.clone();
            let id = p * threads + t;
            std::thread::spawn(move || -> io::Result<Counts> {
                let mut w = Worker::new(&cfg, id)?;
                w.run(per_worker);
                Ok(w.counts)
            })
        })
        .collect();
    let mut total = Counts::default();
    for h in handles {
        match h.join() {
            Ok(Ok(c)) => total.merge(&c),
            _ => return 1,
        }
    }
    let Ok(json) = serde_json::to_string(&total) else {
        return 1;
    };
    match File::from(out).write_all(json.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// One worker: its RNG, its subtree and a model of the names it made.
struct Worker {
    id: usize,
    rng: Rng,
    roots: Vec<PathBuf>,
    root: usize,
    home: PathBuf,
    uhome: PathBuf,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    others: Vec<PathBuf>,
    n: u64,
    counts: Counts,
    ring: Option<io_uring::IoUring>,
    /// `TANDEM_ORACLE_OPLOG=FILE`: every operation with the names it used, for
    /// diagnosing a failure (appended by all workers, one line per operation).
    oplog: Option<File>,
    /// The names the current operation used, for the op log.
    used: Vec<PathBuf>,
}

impl Worker {
    fn new(cfg: &Config, id: usize) -> io::Result<Worker> {
        let root = id % cfg.watched.len();
        let home = cfg.watched[root].join(format!("w{id}"));
        let uhome = cfg.unwatched.join(format!("{UNWATCHED_MARK}-w{id}"));
        fs::create_dir_all(&home)?;
        fs::create_dir_all(&uhome)?;
        Ok(Worker {
            id,
            rng: Rng::new(cfg.seed ^ (id as u64).wrapping_mul(0xA076_1D64_78BD_642F)),
            roots: cfg.watched.clone(),
            root,
            dirs: vec![home.clone()],
            home,
            uhome,
            files: Vec::new(),
            others: Vec::new(),
            n: 0,
            counts: Counts::default(),
            ring: None,
            oplog: std::env::var_os("TANDEM_ORACLE_OPLOG")
                .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok()),
            used: Vec::new(),
        })
    }

    fn run(&mut self, ops: usize) {
        // Every kind once, in a seeded order, then weighted random choices.
        let mut order: Vec<usize> = (0..KINDS.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let total: u64 = WEIGHTS.iter().map(|&w| u64::from(w)).sum();
        // TANDEM_ORACLE_SKIP=kind,kind leaves kinds out, to narrow a failure down.
        let skip: Vec<String> = std::env::var("TANDEM_ORACLE_SKIP")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        for i in 0..ops {
            let k = if i < order.len() {
                order[i]
            } else {
                let mut x = self.rng.below(total);
                let mut k = 0;
                for (j, &w) in WEIGHTS.iter().enumerate() {
                    if x < u64::from(w) {
                        k = j;
                        break;
                    }
                    x -= u64::from(w);
                }
                k
            };
            let kind = KINDS[k];
            if skip.iter().any(|s| s == kind) {
                continue;
            }
            self.used.clear();
            let started = monotonic_ns();
            let res = self.exec(kind);
            if let Some(f) = self.oplog.as_mut() {
                let mut line = format!("{started} w{} {kind} {:?}", self.id, res.as_ref().err());
                for p in &self.used {
                    line.push_str(&format!(" {:?}", p));
                }
                line.push('\n');
                let _ = f.write_all(line.as_bytes());
            }
            self.counts.add(kind, res.is_ok());
        }
    }

    // ---- names and choices ----

    fn name(&mut self) -> OsString {
        self.n += 1;
        let tag = format!("w{}-{}", self.id, self.n);
        let bytes: Vec<u8> = match self.rng.below(9) {
            0 | 1 => format!("f{tag}").into_bytes(),
            2 => format!("with space {tag}").into_bytes(),
            3 => format!("\u{fc}n\u{ef}c\u{f8}d\u{e9}-\u{6587}\u{4ef6}-{tag}").into_bytes(),
            4 => format!("-dash{tag}").into_bytes(),
            5 => format!(".dot{tag}").into_bytes(),
            6 => {
                let mut v = b"bad\xff\xfe".to_vec();
                v.extend_from_slice(tag.as_bytes());
                v
            }
            7 => format!("q'u\"o#te%{tag}~").into_bytes(),
            _ => format!("\u{1F600}emoji {tag}").into_bytes(),
        };
        OsString::from_vec(bytes)
    }

    fn pick<'a>(&mut self, v: &'a [PathBuf]) -> Option<&'a PathBuf> {
        if v.is_empty() {
            None
        } else {
            v.get(self.rng.below(v.len() as u64) as usize)
        }
    }

    fn dir(&mut self) -> PathBuf {
        let dirs = std::mem::take(&mut self.dirs);
        let d = self
            .pick(&dirs)
            .cloned()
            .unwrap_or_else(|| self.home.clone());
        self.dirs = dirs;
        d
    }

    fn new_path(&mut self) -> PathBuf {
        let d = self.dir();
        let p = d.join(self.name());
        self.used.push(p.clone());
        p
    }

    fn file(&mut self) -> io::Result<PathBuf> {
        if self.files.is_empty() || self.rng.chance(3) {
            let p = self.new_path();
            let data = self.data();
            fs::write(&p, data)?;
            self.files.push(p.clone());
            return Ok(p);
        }
        let files = std::mem::take(&mut self.files);
        let f = self.pick(&files).cloned();
        self.files = files;
        self.used.extend(f.clone());
        f.ok_or_else(|| err(libc::ENOENT))
    }

    fn non_home_dir(&mut self) -> Option<PathBuf> {
        let dirs = std::mem::take(&mut self.dirs);
        let d = self.pick(&dirs).cloned();
        self.dirs = dirs;
        self.used.extend(d.clone());
        d.filter(|d| *d != self.home)
    }

    fn any_entry(&mut self) -> Option<PathBuf> {
        match self.rng.below(3) {
            0 => {
                let v = std::mem::take(&mut self.dirs);
                let r = self.pick(&v).cloned();
                self.dirs = v;
                r
            }
            1 => {
                let v = std::mem::take(&mut self.others);
                let r = self.pick(&v).cloned();
                self.others = v;
                r
            }
            _ => self.file().ok(),
        }
    }

    fn offset(&mut self) -> u64 {
        if self.rng.chance(80) {
            self.rng.below(256 * 1024)
        } else {
            self.rng.below(2 * 1024 * 1024)
        }
    }

    fn len(&mut self) -> usize {
        if self.rng.chance(85) {
            1 + self.rng.below(4096) as usize
        } else {
            1 + self.rng.below(128 * 1024) as usize
        }
    }

    fn data(&mut self) -> Vec<u8> {
        let n = if self.rng.chance(30) { 0 } else { self.len() };
        self.rng.bytes(n)
    }

    /// Opens a regular file without following symlinks or blocking on FIFOs; anything
    /// that is not a regular file (a race put something else there) is refused.
    fn open(&self, p: &Path, opts: &mut OpenOptions) -> io::Result<File> {
        let f = opts
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p)?;
        if !f.metadata()?.is_file() {
            return Err(err(libc::EINVAL));
        }
        Ok(f)
    }

    fn open_w(&mut self) -> io::Result<File> {
        let p = self.file()?;
        self.open(&p, OpenOptions::new().write(true))
    }

    fn open_rw(&mut self) -> io::Result<File> {
        let p = self.file()?;
        self.open(&p, OpenOptions::new().read(true).write(true))
    }

    /// Renames every model entry at or under `old` to lie under `new` (or forgets it).
    fn rekey(&mut self, old: &Path, new: Option<&Path>) {
        for list in [&mut self.files, &mut self.dirs, &mut self.others] {
            list.retain_mut(|p| match p.strip_prefix(old) {
                Ok(rest) => match new {
                    Some(n) => {
                        *p = if rest.as_os_str().is_empty() {
                            n.to_path_buf()
                        } else {
                            n.join(rest)
                        };
                        true
                    }
                    None => false,
                },
                Err(_) => true,
            });
        }
    }

    /// Adds an entry (and, for a directory, everything under it) to the model.
    fn adopt(&mut self, p: &Path) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.is_dir() {
            self.dirs.push(p.to_path_buf());
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    self.adopt(&e.path());
                }
            }
        } else if m.is_file() {
            self.files.push(p.to_path_buf());
        } else {
            self.others.push(p.to_path_buf());
        }
    }

    fn iov_parts(&mut self) -> Vec<Vec<u8>> {
        (0..1 + self.rng.below(4))
            .map(|_| {
                let n = 1 + self.rng.below(2048) as usize;
                self.rng.bytes(n)
            })
            .collect()
    }

    // ---- operations ----

    fn exec(&mut self, kind: &str) -> io::Result<()> {
        match kind {
            "create" => {
                let p = self.new_path();
                let mut f = OpenOptions::new().write(true).create_new(true).open(&p)?;
                self.files.push(p);
                let d = self.data();
                f.write_all(&d)
            }
            "write" => {
                let mut f = self.open_w()?;
                let off = self.offset();
                f.seek(SeekFrom::Start(off))?;
                let d = self.data();
                f.write_all(&d)
            }
            "pwrite" => {
                let f = self.open_w()?;
                let off = self.offset();
                let d = self.data();
                f.write_all_at(&d, off)
            }
            "writev" => {
                let mut f = self.open_w()?;
                let off = self.offset();
                f.seek(SeekFrom::Start(off))?;
                let parts = self.iov_parts();
                let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                f.write_vectored(&iov).map(drop)
            }
            "pwritev" | "pwritev2" | "pwritev2_append" => {
                let f = if kind == "pwritev2_append" && self.rng.chance(50) {
                    let p = self.file()?;
                    self.open(&p, OpenOptions::new().append(true))?
                } else {
                    self.open_w()?
                };
                let off = self.offset();
                let parts = self.iov_parts();
                let iov: Vec<libc::iovec> = parts
                    .iter()
                    .map(|p| libc::iovec {
                        iov_base: p.as_ptr() as *mut libc::c_void,
                        iov_len: p.len(),
                    })
                    .collect();
                let flags = match kind {
                    "pwritev2_append" => libc::RWF_APPEND,
                    _ if self.rng.chance(25) => libc::RWF_DSYNC,
                    _ => 0,
                };
                // SAFETY: `iov` describes live buffers in `parts` for the whole call.
                let r = unsafe {
                    if kind == "pwritev" {
                        libc::pwritev(f.as_raw_fd(), iov.as_ptr(), iov.len() as i32, off as i64)
                    } else {
                        libc::pwritev2(
                            f.as_raw_fd(),
                            iov.as_ptr(),
                            iov.len() as i32,
                            off as i64,
                            flags,
                        )
                    }
                };
                check_size(r).map(drop)
            }
            "append_write" => {
                let p = self.file()?;
                let mut f = self.open(&p, OpenOptions::new().append(true))?;
                let d = self.data();
                f.write_all(&d)
            }
            "sparse_high" => {
                let f = self.open_w()?;
                let off = (4 << 30) + self.rng.below(1 << 30);
                let n = 1 + self.rng.below(8192) as usize;
                let d = self.rng.bytes(n);
                f.write_all_at(&d, off)
            }
            "ftruncate_shrink" => {
                let f = self.open_w()?;
                let size = f.metadata()?.len();
                let pct = self.rng.below(100);
                f.set_len(size * pct / 100)
            }
            "ftruncate_grow" => {
                let f = self.open_w()?;
                let size = f.metadata()?.len();
                let grow = if self.rng.chance(10) {
                    (4 << 30) + self.rng.below(1 << 30)
                } else {
                    1 + self.rng.below(1 << 20)
                };
                f.set_len(size + grow)
            }
            "truncate_path" => {
                let p = self.file()?;
                // truncate(2) follows symlinks: refuse anything but a regular file.
                if !fs::symlink_metadata(&p)?.is_file() {
                    return Err(err(libc::EINVAL));
                }
                let size = self.rng.below(512 * 1024) as i64;
                let c = cpath(&p)?;
                // SAFETY: `c` is a valid NUL-terminated path.
                check(unsafe { libc::truncate(c.as_ptr(), size) })
            }
            k if k.starts_with("fallocate_") => {
                let f = self.open_w()?;
                let size = f.metadata()?.len();
                let blocks = (size / 4096).max(1);
                let (mode, off, len) = match k {
                    "fallocate_default" => (0, self.rng.below(64) * 4096, self.rng.below(16) + 1),
                    "fallocate_keep_size" => (
                        libc::FALLOC_FL_KEEP_SIZE,
                        self.rng.below(blocks + 16) * 4096,
                        self.rng.below(16) + 1,
                    ),
                    "fallocate_punch_hole" => (
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        self.rng.below(blocks) * 4096,
                        self.rng.below(16) + 1,
                    ),
                    "fallocate_zero_range" => (
                        libc::FALLOC_FL_ZERO_RANGE,
                        self.rng.below(blocks.min(512) + 4) * 4096,
                        self.rng.below(16) + 1,
                    ),
                    "fallocate_collapse_range" => (
                        libc::FALLOC_FL_COLLAPSE_RANGE,
                        self.rng.below(blocks) * 4096,
                        self.rng.below(4) + 1,
                    ),
                    _ => (
                        libc::FALLOC_FL_INSERT_RANGE,
                        self.rng.below(blocks) * 4096,
                        self.rng.below(4) + 1,
                    ),
                };
                // SAFETY: fallocate on an open descriptor has no memory effects.
                check(unsafe {
                    libc::fallocate(f.as_raw_fd(), mode, off as i64, (len * 4096) as i64)
                })
            }
            "copy_file_range" => {
                let src = self.file()?;
                let src = self.open(&src, OpenOptions::new().read(true))?;
                let dst = self.open_w()?;
                let ssize = src.metadata()?.len();
                let mut off_in = self.rng.below(ssize.max(1)) as i64;
                let mut off_out = self.offset() as i64;
                let len = self.len();
                // SAFETY: both offsets are valid writable i64s; descriptors are open.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_copy_file_range,
                        src.as_raw_fd(),
                        &mut off_in as *mut i64,
                        dst.as_raw_fd(),
                        &mut off_out as *mut i64,
                        len,
                        0u32,
                    )
                };
                check_size(r as isize).map(drop)
            }
            "sendfile" => {
                let src = self.file()?;
                let src = self.open(&src, OpenOptions::new().read(true))?;
                let mut dst = self.open_w()?;
                let off = self.offset();
                dst.seek(SeekFrom::Start(off))?;
                let ssize = src.metadata()?.len();
                let mut off_in = self.rng.below(ssize.max(1)) as i64;
                let len = self.len();
                // SAFETY: `off_in` is a valid writable offset; descriptors are open.
                let r =
                    unsafe { libc::sendfile(dst.as_raw_fd(), src.as_raw_fd(), &mut off_in, len) };
                check_size(r).map(drop)
            }
            "splice" => {
                let f = self.open_w()?;
                let mut fds = [0; 2];
                // SAFETY: `fds` is a writable array of two ints.
                check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
                // SAFETY: both descriptors were just created and are owned by nobody else.
                let (rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
                let n = 1 + self.rng.below(16 * 1024) as usize;
                let d = self.rng.bytes(n);
                (&wr).write_all(&d)?;
                let mut off = self.offset() as i64;
                // SAFETY: `off` is a valid writable offset; descriptors are open.
                let r = unsafe {
                    libc::splice(
                        rd.as_raw_fd(),
                        std::ptr::null_mut(),
                        f.as_raw_fd(),
                        &mut off,
                        n,
                        0,
                    )
                };
                check_size(r).map(drop)
            }
            "open_trunc" => {
                let p = self.file()?;
                let mut f = self.open(&p, OpenOptions::new().write(true).truncate(true))?;
                if self.rng.chance(50) {
                    let d = self.data();
                    f.write_all(&d)?;
                }
                Ok(())
            }
            "creat" => {
                let p = if self.rng.chance(50) {
                    self.file()?
                } else {
                    let p = self.new_path();
                    self.files.push(p.clone());
                    p
                };
                if fs::symlink_metadata(&p).is_ok_and(|m| !m.is_file()) {
                    return Err(err(libc::EINVAL));
                }
                let c = cpath(&p)?;
                // SAFETY: `c` is a valid NUL-terminated path.
                let fd = unsafe { libc::creat(c.as_ptr(), 0o644) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: creat returned a new descriptor owned by nobody else.
                let mut f = unsafe { File::from_raw_fd(fd) };
                let d = self.data();
                f.write_all(&d)
            }
            "uring_write" | "uring_writev" => self.uring(kind == "uring_writev"),
            "uring_open_trunc" => self.uring_open_trunc(),
            "mmap_write" => self.mmap_write(),
            "rename" => {
                let p = self.file()?;
                let n = self.new_path();
                fs::rename(&p, &n)?;
                self.rekey(&p, Some(&n));
                Ok(())
            }
            "rename_over" => {
                let a = self.file()?;
                let b = self.file()?;
                if a == b || !fs::symlink_metadata(&b)?.is_file() {
                    return Err(err(libc::EINVAL));
                }
                fs::rename(&a, &b)?;
                self.rekey(&a, None);
                Ok(())
            }
            "rename_exchange" => {
                let (a, b) = if self.rng.chance(20) {
                    match (self.non_home_dir(), self.non_home_dir()) {
                        (Some(a), Some(b)) => (a, b),
                        _ => return Err(err(libc::ENOENT)),
                    }
                } else {
                    (self.file()?, self.file()?)
                };
                renameat2(&a, &b, libc::RENAME_EXCHANGE)?;
                if fs::symlink_metadata(&a).is_ok_and(|m| m.is_dir()) {
                    // Swap the two subtrees in the model through a temporary key.
                    let tmp = self.home.join("\0swap");
                    self.rekey(&a, Some(&tmp));
                    self.rekey(&b, Some(&a));
                    self.rekey(&tmp, Some(&b));
                }
                Ok(())
            }
            "rename_noreplace" => {
                let a = self.file()?;
                let b = if self.rng.chance(50) {
                    self.file()?
                } else {
                    self.new_path()
                };
                renameat2(&a, &b, libc::RENAME_NOREPLACE)?;
                self.rekey(&a, Some(&b));
                Ok(())
            }
            "rename_dir" => {
                let Some(d) = self.non_home_dir() else {
                    return self.exec("mkdir");
                };
                let n = self.new_path();
                fs::rename(&d, &n)?;
                self.rekey(&d, Some(&n));
                Ok(())
            }
            "rename_cross_subtree" | "rename_cross_root" => {
                let root = if kind == "rename_cross_root" {
                    (self.root + 1 + self.rng.below(self.roots.len() as u64) as usize)
                        % self.roots.len()
                } else {
                    self.root
                };
                let shared = self.roots[root].join(SHARED_DIR);
                if self.rng.chance(50) {
                    // Give: one of ours (sometimes a whole directory) to the shared dir.
                    let p = match self.non_home_dir() {
                        Some(d) if self.rng.chance(15) => d,
                        _ => self.file()?,
                    };
                    let n = shared.join(self.name());
                    self.used.push(n.clone());
                    fs::rename(&p, &n)?;
                    self.rekey(&p, None);
                } else {
                    // Take: anything another worker left in a shared dir.
                    let names: Vec<_> = fs::read_dir(&shared)?.flatten().collect();
                    if names.is_empty() {
                        return Err(err(libc::ENOENT));
                    }
                    let e = &names[self.rng.below(names.len() as u64) as usize];
                    self.used.push(e.path());
                    let n = self.new_path();
                    fs::rename(e.path(), &n)?;
                    self.adopt(&n);
                }
                Ok(())
            }
            "rename_from_unwatched" => {
                self.n += 1;
                let u = self.uhome.join(format!("{UNWATCHED_MARK}-in-{}", self.n));
                if self.rng.chance(40) {
                    // A whole directory with content moves in: its children have
                    // ordinary names (they become part of the watched tree).
                    fs::create_dir(&u)?;
                    fs::create_dir(u.join("sub"))?;
                    let a = self.data();
                    let b = self.data();
                    fs::write(u.join("child"), a)?;
                    fs::write(u.join("sub/grandchild"), b)?;
                    std::os::unix::fs::symlink("child", u.join("sub/ln"))?;
                } else {
                    let d = self.data();
                    fs::write(&u, d)?;
                }
                let n = self.new_path();
                fs::rename(&u, &n)?;
                self.adopt(&n);
                Ok(())
            }
            "rename_to_unwatched" => {
                let p = match self.non_home_dir() {
                    Some(d) if self.rng.chance(20) => d,
                    _ => self.file()?,
                };
                self.n += 1;
                let u = self.uhome.join(format!("{UNWATCHED_MARK}-out-{}", self.n));
                self.used.push(u.clone());
                fs::rename(&p, &u)?;
                self.rekey(&p, None);
                // Changes out there must not be reported.
                if let Ok(f) = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&u)
                {
                    let d = self.data();
                    f.write_all_at(&d, 10)?;
                }
                Ok(())
            }
            "unwatched_ops" => {
                self.n += 1;
                let a = self.uhome.join(format!("{UNWATCHED_MARK}-{}", self.n));
                let b = self.uhome.join(format!("{UNWATCHED_MARK}-{}-b", self.n));
                let d = self.data();
                fs::write(&a, &d)?;
                fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                fs::rename(&a, &b)?;
                fs::hard_link(&b, &a)?;
                fs::remove_file(&b)?;
                fs::create_dir(&b)?;
                Ok(())
            }
            "hard_link" => {
                let p = self.file()?;
                let n = self.new_path();
                fs::hard_link(&p, &n)?;
                self.files.push(n);
                Ok(())
            }
            "symlink" => {
                self.n += 1;
                // Targets never resolve outside the trees: dangling, relative inside,
                // or absolute into a directory that does not exist.
                let target: Vec<u8> = match self.rng.below(5) {
                    0 => format!("target-{}", self.n).into_bytes(),
                    1 => b"../sibling/x".to_vec(),
                    2 => format!("/nonexistent-tandem/{}", self.n).into_bytes(),
                    3 => b"t\xff\xfe-not-utf8".to_vec(),
                    _ => "d\u{e9}j\u{e0}/".repeat(40).into_bytes(),
                };
                let n = self.new_path();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &n)?;
                self.others.push(n);
                Ok(())
            }
            "mkfifo" | "mknod_char" | "mknod_block" | "mknod_socket" => {
                let n = self.new_path();
                let (mode, dev) = match kind {
                    "mkfifo" => (libc::S_IFIFO | 0o640, 0),
                    "mknod_char" => (libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
                    // Major 240 is reserved for local use: no driver, opens fail.
                    "mknod_block" => (libc::S_IFBLK | 0o600, libc::makedev(240, self.id as u32)),
                    _ => (libc::S_IFSOCK | 0o644, 0),
                };
                let c = cpath(&n)?;
                // SAFETY: `c` is a valid NUL-terminated path.
                check(unsafe { libc::mknod(c.as_ptr(), mode, dev) })?;
                self.others.push(n);
                Ok(())
            }
            "unlink" => {
                let p = if self.rng.chance(30) && !self.others.is_empty() {
                    let v = std::mem::take(&mut self.others);
                    let r = self.pick(&v).cloned();
                    self.others = v;
                    r.ok_or_else(|| err(libc::ENOENT))?
                } else {
                    self.file()?
                };
                if fs::symlink_metadata(&p)?.is_dir() {
                    return Err(err(libc::EISDIR));
                }
                fs::remove_file(&p)?;
                self.rekey(&p, None);
                Ok(())
            }
            "mkdir" => {
                let n = self.new_path();
                fs::create_dir(&n)?;
                self.dirs.push(n);
                Ok(())
            }
            "mkdir_deep" => {
                let mut p = self.dir();
                let depth = 20 + self.rng.below(5);
                for _ in 0..depth {
                    p = p.join(self.name());
                    fs::create_dir(&p)?;
                    self.dirs.push(p.clone());
                }
                let f = p.join(self.name());
                let d = self.data();
                fs::write(&f, d)?;
                self.files.push(f);
                Ok(())
            }
            "rmdir" => {
                // Prefer an empty directory among a few candidates.
                let mut cand = None;
                for _ in 0..5 {
                    if let Some(d) = self.non_home_dir()
                        && fs::read_dir(&d).is_ok_and(|mut r| r.next().is_none())
                    {
                        cand = Some(d);
                        break;
                    }
                }
                let d = match cand.or_else(|| self.non_home_dir()) {
                    Some(d) => d,
                    None => return Err(err(libc::ENOENT)),
                };
                fs::remove_dir(&d)?;
                self.rekey(&d, None);
                Ok(())
            }
            "chmod" => {
                let p = self.any_entry().ok_or_else(|| err(libc::ENOENT))?;
                let mode = self.rng.below(0o10000) as libc::mode_t;
                let c = cpath(&p)?;
                // SAFETY: valid path; AT_SYMLINK_NOFOLLOW refuses symlinks (EOPNOTSUPP).
                check(unsafe {
                    libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW)
                })
            }
            "chown" => {
                let p = self.any_entry().ok_or_else(|| err(libc::ENOENT))?;
                let uid = (!self.rng.chance(20)).then(|| 1000 + self.rng.below(5) as u32);
                let gid = (!self.rng.chance(20)).then(|| 1000 + self.rng.below(5) as u32);
                std::os::unix::fs::lchown(&p, uid, gid)
            }
            "setxattr" | "removexattr" => {
                let p = if self.rng.chance(70) {
                    self.file()?
                } else {
                    self.dir()
                };
                let c = cpath(&p)?;
                let name = CString::new(format!("user.k{}", self.rng.below(4)))
                    .map_err(|_| err(libc::EINVAL))?;
                if kind == "setxattr" {
                    let n = self.rng.below(100) as usize;
                    let v = self.rng.bytes(n);
                    // SAFETY: valid strings; `v` is readable for its length.
                    check(unsafe {
                        libc::lsetxattr(c.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                    })
                } else {
                    // Remove an attribute that exists (set one first when there is
                    // none, so the removal really changes something).
                    let mut list = vec![0u8; 4096];
                    // SAFETY: valid path; `list` is writable for its length.
                    let n = check_size(unsafe {
                        libc::llistxattr(c.as_ptr(), list.as_mut_ptr().cast(), list.len())
                    })?;
                    list.truncate(n);
                    let existing: Vec<&[u8]> = list
                        .split(|&b| b == 0)
                        .filter(|k| k.starts_with(b"user."))
                        .collect();
                    let name = match existing.is_empty() {
                        true => {
                            // SAFETY: valid strings; the value is a static byte string.
                            check(unsafe {
                                libc::lsetxattr(
                                    c.as_ptr(),
                                    name.as_ptr(),
                                    b"v".as_ptr().cast(),
                                    1,
                                    0,
                                )
                            })?;
                            name
                        }
                        false => {
                            let k = existing[self.rng.below(existing.len() as u64) as usize];
                            CString::new(k).map_err(|_| err(libc::EINVAL))?
                        }
                    };
                    // SAFETY: valid NUL-terminated strings.
                    check(unsafe { libc::lremovexattr(c.as_ptr(), name.as_ptr()) })
                }
            }
            "utimensat" => {
                let p = self.any_entry().ok_or_else(|| err(libc::ENOENT))?;
                let c = cpath(&p)?;
                let t = |r: &mut Rng| libc::timespec {
                    tv_sec: 1_000_000_000 + r.below(1_000_000_000) as i64,
                    tv_nsec: r.below(1_000_000_000) as i64,
                };
                let ts = [t(&mut self.rng), t(&mut self.rng)];
                // SAFETY: valid path and an array of two timespecs.
                check(unsafe {
                    libc::utimensat(
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        ts.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })
            }
            "fsync" | "fdatasync" => {
                let f = self.open_w()?;
                let off = self.offset();
                let d = self.data();
                f.write_all_at(&d, off)?;
                if kind == "fsync" {
                    f.sync_all()
                } else {
                    f.sync_data()
                }
            }
            other => Err(io::Error::other(format!("unknown kind {other}"))),
        }
    }

    fn uring(&mut self, vectored: bool) -> io::Result<()> {
        use io_uring::{IoUring, opcode, types};
        let f = self.open_w()?;
        let off = self.offset();
        let parts = if vectored {
            self.iov_parts()
        } else {
            vec![self.data()]
        };
        if self.ring.is_none() {
            self.ring = Some(IoUring::new(8)?);
        }
        let ring = self.ring.as_mut().ok_or_else(|| err(libc::EINVAL))?;
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let fd = types::Fd(f.as_raw_fd());
        let entry = if vectored {
            opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(off)
                .build()
        } else {
            opcode::Write::new(fd, parts[0].as_ptr(), parts[0].len() as u32)
                .offset(off)
                .build()
        }
        .user_data(7);
        // SAFETY: the buffers (`parts`), the iovec array and the file stay alive until
        // the completion is reaped, before this function returns.
        unsafe { submit_and_reap(ring, &entry) }.map(drop)
    }

    /// Cuts a file by opening it with `O_TRUNC` through io_uring's openat, then
    /// sometimes writes a shorter content with a plain write.
    fn uring_open_trunc(&mut self) -> io::Result<()> {
        use io_uring::{IoUring, opcode, types};
        let p = self.file()?;
        let c = cpath(&p)?;
        if self.ring.is_none() {
            self.ring = Some(IoUring::new(8)?);
        }
        let ring = self.ring.as_mut().ok_or_else(|| err(libc::EINVAL))?;
        let flags =
            libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr())
            .flags(flags)
            .build()
            .user_data(8);
        // SAFETY: the path (`c`) stays alive until the completion is reaped, before
        // this call returns.
        let fd = unsafe { submit_and_reap(ring, &entry) }?;
        // SAFETY: the ring just opened this descriptor for us; nobody else owns it.
        let mut f = unsafe { File::from_raw_fd(fd) };
        if f.metadata()?.is_file() && self.rng.chance(50) {
            let d = self.data();
            f.write_all(&d)?;
        }
        Ok(())
    }

    fn mmap_write(&mut self) -> io::Result<()> {
        let f = self.open_rw()?;
        let mut size = f.metadata()?.len();
        if size < 4096 {
            size = 8192;
            f.set_len(size)?;
        }
        let map_off = self.rng.below(size.min(1 << 20) / 4096) * 4096;
        let map_len = (size - map_off).min(64 * 1024) as usize;
        // SAFETY: a fresh shared mapping of an open regular file, not aliasing any Rust
        // object; the range lies within the file's size as just measured. Another
        // worker sharing the file may cut it meanwhile: `sigbus` absorbs stores past
        // the new end.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                map_off as i64,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let guard = sigbus::register(addr as usize, map_len);
        let stores = 1 + self.rng.below(8);
        for _ in 0..stores {
            let at = self.rng.below(map_len as u64) as usize;
            let n = (1 + self.rng.below(512) as usize).min(map_len - at);
            let d = self.rng.bytes(n);
            // SAFETY: `at + n <= map_len`, inside the mapping created above.
            unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), addr.cast::<u8>().add(at), n) };
        }
        let sync = match self.rng.below(3) {
            0 => Some(libc::MS_SYNC),
            1 => Some(libc::MS_ASYNC),
            _ => None,
        };
        // SAFETY: `addr`/`map_len` are exactly the mapping created above.
        let r = unsafe {
            let r = match sync {
                Some(flags) => libc::msync(addr, map_len, flags),
                None => 0,
            };
            drop(guard);
            libc::munmap(addr, map_len);
            r
        };
        check(r)
    }
}

/// CLOCK_MONOTONIC in nanoseconds, to order the op log of several workers.
fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u128) * 1_000_000_000 + ts.tv_nsec as u128
}

fn renameat2(a: &Path, b: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (ca, cb) = (cpath(a)?, cpath(b)?);
    // SAFETY: valid NUL-terminated paths.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    })
}

/// Whether a path's bytes contain the unwatched marker.
pub fn has_unwatched_mark(bytes: &[u8]) -> bool {
    bytes
        .windows(UNWATCHED_MARK.len())
        .any(|w| w == UNWATCHED_MARK.as_bytes())
}

/// Size in bytes of everything under a tree (for reports; follows no symlink).
pub fn tree_size(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.blocks() * 512
    }
}

/// Submits one request on `ring` and waits for its completion; its result, or the
/// error it failed with.
///
/// # Safety
/// Everything `entry` points to must stay alive until this returns.
unsafe fn submit_and_reap(
    ring: &mut io_uring::IoUring,
    entry: &io_uring::squeue::Entry,
) -> io::Result<i32> {
    // SAFETY: the caller keeps what the entry points to alive until the completion
    // is reaped below.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion"))?;
    if cqe.result() < 0 {
        return Err(err(-cqe.result()));
    }
    Ok(cqe.result())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_match_kinds() {
        assert_eq!(KINDS.len(), WEIGHTS.len());
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let va: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(Rng::new(0).next_u64(), Rng::new(1).next_u64());
    }

    #[test]
    fn runs_2000_ops_with_every_kind() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("the workload self-test needs root (chown, mknod)");
        }
        let t = tempfile::Builder::new()
            .prefix("tandem-workload-")
            .tempdir_in("/tmp")
            .unwrap();
        let (a, b, u) = (t.path().join("A"), t.path().join("B"), t.path().join("U"));
        for d in [&a, &b, &u] {
            fs::create_dir(d).unwrap();
        }
        let cfg = Config {
            seed: 1234,
            ops: 2000,
            processes: 2,
            threads: 2,
            watched: vec![a.clone(), b.clone()],
            unwatched: u.clone(),
        };
        let c = run(&cfg).unwrap();
        eprintln!("{}", c.report());
        assert!(c.total() >= 2000);
        assert_eq!(c.missing_kinds(), Vec::<&str>::new());
        // Most kinds must also succeed at least once (fallocate modes may be refused
        // by the file system, and that is counted, not hidden).
        let never_ok: Vec<_> = KINDS
            .iter()
            .filter(|k| c.attempted[**k] == c.failed.get(**k).copied().unwrap_or(0))
            .collect();
        assert!(never_ok.is_empty(), "never succeeded: {never_ok:?}");
        // Deep trees and non-UTF-8 names exist; the watched trees hold no marker name
        // except by moving in (which renames).
        let mut deepest = 0;
        let mut non_utf8 = false;
        fn walk(p: &Path, depth: usize, deepest: &mut usize, non_utf8: &mut bool) {
            *deepest = (*deepest).max(depth);
            for e in fs::read_dir(p).unwrap().flatten() {
                let name = e.file_name();
                *non_utf8 |= name.to_str().is_none();
                assert!(!has_unwatched_mark(name.as_bytes()), "{:?}", e.path());
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), depth + 1, deepest, non_utf8);
                }
            }
        }
        walk(&a, 0, &mut deepest, &mut non_utf8);
        walk(&b, 0, &mut deepest, &mut non_utf8);
        assert!(deepest > 16, "deepest {deepest}");
        assert!(non_utf8);
        assert!(tree_size(&u) > 0);
    }
}
