/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The kernel/user ABI of Tandem's capture programs: the one source of truth.
 *
 * `agent-common/src/abi.rs` mirrors every type and constant in this file with
 * `#[repr(C)]` types; both sides assert the sizes, so a change here that is not
 * made there fails the build on one side or the other.
 *
 * All fields are fixed-width and explicitly padded: no `bool`, no implicit holes,
 * so that the structures are plain old data on both sides.
 */
#ifndef TANDEM_ABI_H
#define TANDEM_ABI_H

/* Event kinds (struct tandem_event.kind). */
#define TANDEM_EV_WRITE 1         /* bytes [offset, offset + len) were written */
#define TANDEM_EV_TRUNCATE 2      /* the file size was set to `offset` */
#define TANDEM_EV_FALLOCATE 3     /* fallocate(mode = aux) over [offset, offset + len) */
#define TANDEM_EV_MMAP 4          /* a shared writable mapping of [offset, offset + len) */
#define TANDEM_EV_PAGE_DIRTY 5    /* a page-cache folio of a mapped file became dirty */
#define TANDEM_EV_SYNC 6          /* a durability point on one file (aux = TANDEM_SYNC_*) */
#define TANDEM_EV_SYNC_ALL 7      /* sync(2) or syncfs(2): a durability point on all files */
#define TANDEM_EV_VERIFY 8        /* the file changed in an unknown range: verify it whole */
#define TANDEM_EV_TRUNCATE_PATH 9 /* truncate(path, offset); a tandem_path_event */
#define TANDEM_EV_FLUSH 10        /* msync/munmap by `tgid`: re-read the pages it mapped */

/* Durability syscalls (aux of TANDEM_EV_SYNC and TANDEM_EV_SYNC_ALL). */
#define TANDEM_SYNC_FSYNC 1
#define TANDEM_SYNC_FDATASYNC 2
#define TANDEM_SYNC_FILE_RANGE 3
#define TANDEM_SYNC_MSYNC 4
#define TANDEM_SYNC_SYNCFS 5
#define TANDEM_SYNC_SYNC 6
#define TANDEM_SYNC_WRITE 7      /* a write with RWF_SYNC/RWF_DSYNC or on an O_(D)SYNC fd */
#define TANDEM_SYNC_URING_FSYNC 8
#define TANDEM_SYNC_URING_RANGE 9

/* struct tandem_event.flags */
#define TANDEM_F_URING 0x1          /* the change came through io_uring */
#define TANDEM_F_PATH_TRUNCATED 0x2 /* the path did not fit: verify the whole tree */
#define TANDEM_F_DEPTH_EXCEEDED 0x4 /* the ancestor walk gave up: reported to be safe */

/* Indexes of the STATS per-CPU array. */
#define TANDEM_STAT_EMITTED 0   /* events written to the ring buffer */
#define TANDEM_STAT_DROPPED 1   /* events lost because the ring buffer was full */
#define TANDEM_STAT_FILTERED 2  /* changes to unwatched files, not reported */
#define TANDEM_STAT_CACHE_HIT 3 /* verdicts answered by the verdict cache */
#define TANDEM_STAT_COUNT 4

#define TANDEM_PATH_MAX 4096

/*
 * A (kernel s_dev, inode number) pair. Kernel s_dev is MAJOR << 20 | MINOR.
 * In the LOST map, the key (0, 0) stands for a lost event that names no file
 * (truncate by path, flush, sync): user space must then verify everything.
 */
struct tandem_key {
	__u64 dev;
	__u64 ino;
};

/* One change, as written to the EVENTS ring buffer. */
struct tandem_event {
	__u64 dev;
	__u64 ino;
	__u64 offset;
	__u64 len;
	__u32 kind;
	__u32 tgid;
	__u32 aux;
	__u32 flags;
};

/* truncate(2) names its file by path: the path is relative to tgid's cwd. */
struct tandem_path_event {
	struct tandem_event hdr;
	char path[TANDEM_PATH_MAX];
};

_Static_assert(sizeof(struct tandem_key) == 16, "tandem_key ABI");
_Static_assert(sizeof(struct tandem_event) == 48, "tandem_event ABI");
_Static_assert(sizeof(struct tandem_path_event) == 48 + TANDEM_PATH_MAX, "tandem_path_event ABI");

#endif /* TANDEM_ABI_H */
