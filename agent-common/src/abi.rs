//! Mirror of `agent-ebpf/src/bpf/tandem_abi.h`.
//!
//! Every type is `#[repr(C)]` with explicit padding and fixed-width fields, and its
//! size is asserted at compile time here as it is by `_Static_assert` in the header:
//! a change made on one side only fails the build.

/// Bytes `[offset, offset + len)` were written.
pub const EV_WRITE: u32 = 1;
/// The file size was set to `offset`.
pub const EV_TRUNCATE: u32 = 2;
/// `fallocate(mode = aux)` over `[offset, offset + len)`.
pub const EV_FALLOCATE: u32 = 3;
/// A shared writable mapping of `[offset, offset + len)` was created.
pub const EV_MMAP: u32 = 4;
/// A page-cache folio of a mapped file became dirty.
pub const EV_PAGE_DIRTY: u32 = 5;
/// A durability point on one file (`aux` is one of the `SYNC_*` values).
pub const EV_SYNC: u32 = 6;
/// `sync(2)` or `syncfs(2)`: a durability point on all files.
pub const EV_SYNC_ALL: u32 = 7;
/// The file changed in an unknown range: verify it whole.
pub const EV_VERIFY: u32 = 8;
/// `truncate(path, offset)`; the event is a [`PathEvent`].
pub const EV_TRUNCATE_PATH: u32 = 9;
/// `msync`/`munmap` by `tgid`: re-read the pages it has mapped.
pub const EV_FLUSH: u32 = 10;

pub const SYNC_FSYNC: u32 = 1;
pub const SYNC_FDATASYNC: u32 = 2;
pub const SYNC_FILE_RANGE: u32 = 3;
pub const SYNC_MSYNC: u32 = 4;
pub const SYNC_SYNCFS: u32 = 5;
pub const SYNC_SYNC: u32 = 6;
/// A write with `RWF_SYNC`/`RWF_DSYNC` or on an `O_SYNC`/`O_DSYNC` descriptor.
pub const SYNC_WRITE: u32 = 7;
pub const SYNC_URING_FSYNC: u32 = 8;
pub const SYNC_URING_RANGE: u32 = 9;

/// The change came through io_uring.
pub const F_URING: u32 = 0x1;
/// The path of a [`PathEvent`] did not fit: the whole tree must be verified.
pub const F_PATH_TRUNCATED: u32 = 0x2;
/// The kernel-side ancestor walk gave up; the event is reported to be safe.
pub const F_DEPTH_EXCEEDED: u32 = 0x4;

/// Index of the events-written counter in the `STATS` per-CPU array.
pub const STAT_EMITTED: u32 = 0;
/// Index of the events-lost-to-a-full-ring counter.
pub const STAT_DROPPED: u32 = 1;
/// Index of the changes-to-unwatched-files counter.
pub const STAT_FILTERED: u32 = 2;
/// Index of the verdict-cache-hit counter.
pub const STAT_CACHE_HIT: u32 = 3;
pub const STAT_COUNT: u32 = 4;

pub const PATH_MAX: usize = 4096;

/// A (kernel `s_dev`, inode number) pair; kernel `s_dev` is `MAJOR << 20 | MINOR`.
///
/// In the `LOST` map, the key (0, 0) stands for a lost event that names no file
/// (truncate by path, flush, sync): user space must then verify everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
}

/// One change, as written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Event {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub len: u64,
    pub kind: u32,
    pub tgid: u32,
    pub aux: u32,
    pub flags: u32,
}

/// `truncate(2)` names its file by a path relative to the caller's working directory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PathEvent {
    pub hdr: Event,
    pub path: [u8; PATH_MAX],
}

const _: () = assert!(size_of::<Key>() == 16);
const _: () = assert!(size_of::<Event>() == 48);
const _: () = assert!(size_of::<PathEvent>() == 48 + PATH_MAX);

/// Converts a user-space `st_dev` to the kernel's `s_dev` encoding used in [`Key`].
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u64 {
    // glibc's encoding: major in bits 8..20 and 32..44, minor in bits 0..8 and 20..32.
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    (major << 20) | minor
}

impl Event {
    /// Reads an event from the start of a ring-buffer record, if it is long enough.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: the slice holds at least size_of::<Event>() bytes, every bit pattern
        // is a valid Event (plain integers, no padding), and read_unaligned copes with
        // any alignment of the ring-buffer record.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

impl PathEvent {
    /// Reads a path event from a ring-buffer record, if it is long enough.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: as for Event::from_bytes: enough bytes, plain data, unaligned read.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The path bytes up to the first NUL.
    #[must_use]
    pub fn path_bytes(&self) -> &[u8] {
        let end = self.path.iter().position(|&b| b == 0).unwrap_or(PATH_MAX);
        &self.path[..end]
    }
}

// SAFETY: Key and Event are repr(C) plain integers without padding; any bit pattern
// is valid, which is what aya::Pod requires.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Key {}
// SAFETY: see above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_matches_the_kernel_encoding() {
        // /dev/vda is 254:0 -> user 0xfe00, kernel 0xfe00000.
        assert_eq!(kernel_dev(0xfe00), 0x0fe0_0000);
        // tmpfs-style anonymous devices: 0:45 -> 45.
        assert_eq!(kernel_dev(45), 45);
        // A large minor: 8:300 is encoded by glibc as 0x12c08 -> (8<<20)|300.
        let user = (300 & 0xff) | (8 << 8) | ((300 & !0xff) << 12);
        assert_eq!(kernel_dev(user), (8 << 20) | 300);
    }

    #[test]
    fn short_records_are_refused() {
        assert!(Event::from_bytes(&[0u8; 47]).is_none());
        assert!(PathEvent::from_bytes(&[0u8; 48]).is_none());
        let mut raw = [0u8; 48];
        raw[32] = EV_WRITE as u8;
        assert_eq!(Event::from_bytes(&raw).map(|e| e.kind), Some(EV_WRITE));
    }
}
