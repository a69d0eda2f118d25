// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Tandem's change capture: report every successful change to the contents of a
 * file under a watched tree into the EVENTS ring buffer, with the exact byte range
 * taken at syscall exit from the real return value.
 *
 * Hooks (all loadable by aya 0.14 on a kernel without kprobes, fentry or LSM):
 *  - syscall tracepoints. Each sys_enter_* program resolves the fd to its struct
 *    file, reads what only the entry knows (explicit offset, f_pos or i_size before
 *    the call, flags) and stashes it in STASH keyed by pid_tgid, together with the
 *    file's (dev, ino, dentry). One generic program, sys_exit_file, is attached to
 *    every matching sys_exit_* tracepoint: it checks that the stash belongs to this
 *    syscall, computes the range from the return value, filters and emits. The
 *    filter runs at exit only, so a file renamed into a watched tree while a write
 *    is in flight is still reported.
 *  - The write system calls, which every write on the machine pays for, have
 *    their own programs ("the hot path" below): pwrite64/pwritev have no enter
 *    program (the exit reads the arguments from the saved user registers), and
 *    write/writev keep their enter state in a per-thread array slot, not STASH.
 *  - write/writev/sendfile/pwritev2(-1) use the union of [f_pos(enter), +ret) and
 *    [f_pos(exit) - ret, f_pos(exit)): threads sharing a struct file can move f_pos
 *    between the two hooks, and over-reporting is safe where under-reporting loses
 *    data. Appends (O_APPEND, RWF_APPEND) use [i_size(enter), max(i_size(enter) +
 *    ret, i_size(exit))); pwrite on an O_APPEND fd (which Linux appends) has no
 *    enter, so it reports [i_size(exit) - ret, i_size(exit)) and VERIFY.
 *  - tp_btf/io_uring_submit_req stashes the prepped position of write-like
 *    requests in UREQ keyed by the request pointer; tp_btf/io_uring_complete reads
 *    req->file (fixed files included) and the result. A request whose position is
 *    the file position, or an append, or whose stash was evicted, becomes VERIFY.
 *    An openat/openat2 request with O_TRUNC becomes TRUNCATE at its completion.
 *  - shared writable mmap of a watched file inserts its key into MMAPPED and the
 *    tgid into MAPPERS; tp_btf/writeback_dirty_folio reports the first store to
 *    each clean page of such files; msync/munmap by a MAPPERS tgid become FLUSH.
 *  - rename/unlink/rmdir/link exits (and their io_uring forms) bump GEN, which
 *    invalidates the verdict cache.
 *
 * Filter: the file's own (s_dev, ino) is looked up in WATCHED (user space adds
 * hard-linked inodes there), then each ancestor up the d_parent chain to the root
 * of the file's filesystem, at most MAX_DEPTH levels; a walk that gives up reports
 * the change with TANDEM_F_DEPTH_EXCEEDED. Verdicts are cached in VCACHE under
 * (dev, ino, dentry) for the file and for its parent directory, tagged with GEN[0];
 * the write hot path looks in FCACHE first, a direct-mapped array in front of it.
 * Struct fields are read by snapshotting the head of each kernel object with one
 * bpf_probe_read_kernel and picking fields at CO-RE offsets: that is one helper
 * call per object instead of one per field, which is what the hot path costs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "tandem_abi.h"

char _license[] SEC("license") = "GPL";

#define MAX_DEPTH 64

/* uapi constants (macros are not in BTF, so vmlinux.h lacks them). */
#define T_O_TRUNC 00001000
#define T_O_APPEND 00002000
#define T_O_DSYNC 00010000 /* O_SYNC includes this bit */
#define T_S_IFMT 0170000
#define T_S_IFREG 0100000
#define T_S_IFDIR 0040000
#define T_RWF_DSYNC 0x2
#define T_RWF_SYNC 0x4
#define T_RWF_APPEND 0x10
#define T_MAP_SHARED 0x1
#define T_PROT_WRITE 0x2
#define T_MS_SYNC 4
#define T_SYNC_FILE_RANGE_WAIT_AFTER 4
#define T_PAGE_SHIFT 12
#define T_MAX_ERRNO 4095

/* What the exit program must do with a stash (struct stash.op). */
enum {
	ST_NONE = 0,
	ST_WRITE_OFF,    /* [off, off + ret) */
	ST_WRITE_FPOS,   /* union of f_pos-based candidates; obj = struct file * */
	ST_WRITE_APPEND, /* i_size-based; obj = struct inode * */
	ST_WRITE_UPTR,   /* off from a user loff_t * (obj), read at enter and exit */
	ST_TRUNCATE,
	ST_FALLOCATE,
	ST_OPEN_TRUNC, /* the file is only known at exit (ret is the fd) */
	ST_SYNC,
	ST_SYNCFS,
	ST_MMAP,
	ST_FLUSH,
};

/* Filter verdicts, as cached in VCACHE. */
enum {
	VERDICT_NO = 0,
	VERDICT_YES = 1,
	VERDICT_DEPTH = 2, /* the walk gave up: report, flagged */
};

struct stash {
	__u64 dev;
	__u64 ino;
	__u64 dentry;
	__u64 obj;
	__s64 off;
	__u64 len;
	__u32 nr; /* syscall number, checked at exit */
	__u32 op;
	__u32 aux;
	__u32 sync; /* also emit TANDEM_SYNC_WRITE after the write */
};

struct pstash {
	__u32 nr;
	__u32 flags;
	__u64 len;
	char path[TANDEM_PATH_MAX];
};

struct ureq {
	__s64 pos;
	__u64 len;
	__u32 opcode;
	__u32 tgid;
	__u32 aux;
	__u32 rwf;
};

struct vkey {
	__u64 dev;
	__u64 ino;
	__u64 dentry;
};

struct vval {
	__u64 gen;
	__u32 verdict;
	__u32 pad;
};

struct finfo {
	__u64 dev;
	__u64 ino;
	__u64 dentry;
	__u64 inode;
	__u64 sb;
	__s64 pos;
	__s64 isize;
	__u32 flags;
	__u32 mode;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tandem_key);
	__type(value, __u32);
} WATCHED SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct vkey);
	__type(value, struct vval);
} VCACHE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} GEN SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} EXCLUDED SEC(".maps");

/*
 * Threads of an excluded process whose writes are captured all the same: the
 * agent's barrier writer, which performs an application's synchronous writes on
 * its behalf so that it can hold them until the peer has them. Looked up only
 * for excluded processes, so other writers never pay for it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} CAPTURED_TIDS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TANDEM_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tandem_key);
	__type(value, __u32);
} LOST SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tandem_key);
	__type(value, __u32);
} MMAPPED SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} MAPPERS SEC(".maps");

/*
 * Per-thread stash between a syscall's enter and exit, keyed by pid_tgid. A plain
 * preallocated hash: an LRU costs more per update, and aya 0.14 cannot create
 * task-local storage. The exit deletes its entry; the syscall number guards
 * against an enter whose exit never ran (a thread killed inside the syscall
 * leaves one entry behind until its id is reused).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct stash);
} STASH SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct pstash);
} PSTASH SEC(".maps");

/* Scratch for truncate(2)'s path: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pstash);
} PSCRATCH SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ureq);
} UREQ SEC(".maps");

/*
 * The verdict cache of the hot path: direct-mapped, one slot per hash of the
 * file's (dentry, ino, super_block) identity. An array lookup is inlined by the
 * verifier (no helper call, no hashing in the kernel, no lock), which is most of
 * what makes an unwatched write cheap. The slot holds the identity itself, so a
 * hit is an exact match, not a hash match; the verdict word is XORed with the
 * identity's hash so that a slot torn by two CPUs filling it at once (four plain
 * stores) cannot pass as a valid entry: a torn verdict word decodes to a
 * generation that does not match. A miss costs the VCACHE lookup (and maybe a
 * walk) and refills the slot.
 */
#define FCACHE_SLOTS 16384
struct fslot {
	__u64 dentry;
	__u64 ino;
	__u64 sb;
	__u64 dev;  /* s_dev, so that a watched write needs no super_block read */
	__u64 word; /* hash ^ dev_mix(dev) ^ (gen << 2 | verdict) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FCACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct fslot);
} FCACHE SEC(".maps");

/*
 * What the enter of write/writev (and pwritev2 at the file position or with
 * RWF_APPEND) leaves for its exit: the position before the call (f_pos, or i_size
 * for appends) and, when the file was already known to be unwatched, the
 * generation of that verdict, so that the exit of an unwatched write reads one
 * array slot and returns.
 *
 * Indexed by thread id modulo TSLOT_SLOTS: an array slot is written with plain
 * stores, where a hash map update costs a bucket lock and an element allocation
 * (~200 ns here, the largest part of the old hot path). Two live threads whose ids
 * collide modulo the size (possible only when pid_max is raised above it) share a
 * slot; `id` and `chk` detect that, and the exit then reports conservatively.
 */
#define TSLOT_SLOTS 32768
struct tslot {
	__u64 id; /* pid_tgid of the owner; 0 once the exit consumed it */
	__u64 gen;
	__u64 file;
	__s64 pos;
	__u32 nr;
	__u32 state; /* TS_* */
	__u64 chk;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TSLOT_SLOTS);
	__type(key, __u32);
	__type(value, struct tslot);
} TSLOT SEC(".maps");

/* Snapshot sizes: must cover the last field read from each object. */
#define FILE_SNAP 128
#define INODE_SNAP 96
#define DENTRY_SNAP 56

/* Reads `field` of a `type` object from a snapshot of its head. */
#define SNAP(buf, type, field)                                                 \
	(*(typeof(((type *)0)->field) *)((char *)(buf) +                       \
					  bpf_core_field_offset(type, field)))

/*
 * Reads one field of a kernel object at its CO-RE offset. Written this way rather
 * than with bpf_core_read(&p->field) because aya 0.14 failed to relocate that form
 * in the exit program (it poisoned the instruction), while field-offset
 * relocations resolve everywhere.
 */
#define READ_FIELD(dst, ptr, type, field)                                      \
	bpf_probe_read_kernel((dst), sizeof(*(dst)),                           \
			      (char *)(ptr) + bpf_core_field_offset(type, field))

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&STATS, &idx);

	if (v)
		*v += 1;
}

static __always_inline __u32 cur_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

/*
 * Whether the current task's changes are not ours to capture: they come from the
 * agent (applying replicated data), unless from one of its CAPTURED_TIDS.
 */
static __always_inline int excluded(__u32 tgid)
{
	__u32 tid;

	if (!bpf_map_lookup_elem(&EXCLUDED, &tgid))
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	return !bpf_map_lookup_elem(&CAPTURED_TIDS, &tid);
}

/* A lost event: user space must verify the file; (0, 0) means "unknown file". */
static __always_inline void lost(__u64 dev, __u64 ino)
{
	struct tandem_key k = { .dev = dev, .ino = ino };
	__u32 one = 1;

	stat_inc(TANDEM_STAT_DROPPED);
	bpf_map_update_elem(&LOST, &k, &one, BPF_ANY);
}

static __always_inline void emit(__u32 kind, __u64 dev, __u64 ino, __u64 off,
				 __u64 len, __u32 aux, __u32 flags, __u32 tgid)
{
	struct tandem_event *e = bpf_ringbuf_reserve(&EVENTS, sizeof(*e), 0);

	if (!e) {
		lost(dev, ino);
		return;
	}
	e->dev = dev;
	e->ino = ino;
	e->offset = off;
	e->len = len;
	e->kind = kind;
	e->tgid = tgid;
	e->aux = aux;
	e->flags = flags;
	/*
	 * Data events do not wake the consumer (it drains on a short timer, which
	 * sustains millions of events per second); durability points must be seen
	 * at once because the application is waiting on them.
	 */
	if (kind == TANDEM_EV_SYNC || kind == TANDEM_EV_SYNC_ALL ||
	    kind == TANDEM_EV_FLUSH)
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	else
		bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	stat_inc(TANDEM_STAT_EMITTED);
}

static __always_inline __u64 read_gen(void)
{
	__u32 z = 0;
	__u64 *g = bpf_map_lookup_elem(&GEN, &z);

	return g ? *g : 0;
}

static __always_inline void bump_gen(void)
{
	__u32 z = 0;
	__u64 *g = bpf_map_lookup_elem(&GEN, &z);

	if (g)
		__sync_fetch_and_add(g, 1);
}

/* fd -> struct file of task t (the current task), or NULL. */
static __always_inline struct file *fd_file_of(struct task_struct *t, long fd)
{
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;

	if (fd < 0)
		return NULL;
	/* BTF pointer walks: plain loads, no helper calls. */
	fdt = t->files->fdt;
	if ((__u64)fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]))
		return NULL;
	return f;
}

/* fd -> struct file of the current task, or NULL. */
static __always_inline struct file *fd_file(long fd)
{
	return fd_file_of(bpf_get_current_task_btf(), fd);
}

/*
 * Everything about an open file except its device: two reads (the head of the
 * struct file and of its inode). This is all the unwatched hot path reads; the
 * verdict cache is keyed by the super_block pointer rather than s_dev so that it
 * needs no third read.
 */
static __always_inline int file_head(struct file *f, struct finfo *fi)
{
	__u64 fb[FILE_SNAP / 8];
	__u64 ib[INODE_SNAP / 8];
	struct inode *inode;

	if (!f || bpf_probe_read_kernel(fb, sizeof(fb), f))
		return -1;
	inode = SNAP(fb, struct file, f_inode);
	fi->flags = SNAP(fb, struct file, f_flags);
	fi->dentry = (__u64)SNAP(fb, struct file, f_path.dentry);
	fi->pos = SNAP(fb, struct file, f_pos);
	if (!inode || bpf_probe_read_kernel(ib, sizeof(ib), inode))
		return -1;
	fi->inode = (__u64)inode;
	fi->mode = SNAP(ib, struct inode, i_mode);
	fi->ino = SNAP(ib, struct inode, i_ino);
	fi->isize = SNAP(ib, struct inode, i_size);
	fi->sb = (__u64)SNAP(ib, struct inode, i_sb);
	return 0;
}

static __always_inline int file_dev(struct finfo *fi)
{
	dev_t dev = 0;

	if (READ_FIELD(&dev, fi->sb, struct super_block, s_dev))
		return -1;
	fi->dev = dev;
	return 0;
}

/* Everything the filter and the range computation need about an open file. */
static __always_inline int file_info(struct file *f, struct finfo *fi)
{
	if (file_head(f, fi))
		return -1;
	return file_dev(fi);
}

/*
 * Walks up from the file's dentry. Returns the verdict of the file's parent
 * directory (which is the file's verdict when its own key is not watched) and
 * caches it under the parent's key as well.
 */
static __always_inline __u32 walk(__u64 dev, __u64 dentry, __u64 gen)
{
	__u64 db[DENTRY_SNAP / 8];
	struct tandem_key k = { .dev = dev };
	struct vkey pk = { .dev = dev };
	struct vval pv = { .gen = gen };
	__u64 d = dentry, p, ino;
	struct inode *pi;
	struct vval *cv;
	__u32 v = VERDICT_DEPTH;
	int i;

	if (bpf_probe_read_kernel(db, sizeof(db), (void *)d))
		return VERDICT_DEPTH;
	p = (__u64)SNAP(db, struct dentry, d_parent);
	for (i = 0; i < MAX_DEPTH; i++) {
		if (!p || p == d) {
			v = VERDICT_NO; /* the root of this filesystem */
			break;
		}
		if (bpf_probe_read_kernel(db, sizeof(db), (void *)p)) {
			v = VERDICT_DEPTH;
			break;
		}
		pi = SNAP(db, struct dentry, d_inode);
		ino = 0;
		if (READ_FIELD(&ino, pi, struct inode, i_ino)) {
			v = VERDICT_DEPTH;
			break;
		}
		k.ino = ino;
		if (bpf_map_lookup_elem(&WATCHED, &k)) {
			v = VERDICT_YES;
			break;
		}
		if (i == 0) {
			pk.ino = ino;
			pk.dentry = p;
		}
		struct vkey ck = { .dev = dev, .ino = ino, .dentry = p };
		cv = bpf_map_lookup_elem(&VCACHE, &ck);
		if (cv && cv->gen == gen) {
			if (i == 0)
				return cv->verdict; /* already cached as the parent */
			v = cv->verdict;
			break;
		}
		d = p;
		p = (__u64)SNAP(db, struct dentry, d_parent);
	}
	if (pk.dentry) {
		pv.verdict = v;
		bpf_map_update_elem(&VCACHE, &pk, &pv, BPF_ANY);
	}
	return v;
}

/*
 * A global (non-static, not inlined) function: the verifier checks it once on its
 * own instead of once per path through each caller, which keeps the exit
 * program's verification in the thousands of instructions, not the hundreds of
 * thousands.
 */
__noinline __u32 tandem_verdict(__u64 dev, __u64 ino, __u64 dentry)
{
	struct vkey vk = { .dev = dev, .ino = ino, .dentry = dentry };
	struct tandem_key k = { .dev = dev, .ino = ino };
	__u64 gen = read_gen();
	struct vval nv = { .gen = gen };
	struct vval *cv;

	cv = bpf_map_lookup_elem(&VCACHE, &vk);
	if (cv && cv->gen == gen) {
		stat_inc(TANDEM_STAT_CACHE_HIT);
		return cv->verdict;
	}
	if (bpf_map_lookup_elem(&WATCHED, &k))
		nv.verdict = VERDICT_YES;
	else
		nv.verdict = walk(dev, dentry, gen);
	bpf_map_update_elem(&VCACHE, &vk, &nv, BPF_ANY);
	return nv.verdict;
}

/* Whether a change to this file by tgid is reported; sets the event flags. */
static __always_inline int wanted(__u64 dev, __u64 ino, __u64 dentry,
				  __u32 tgid, __u32 *flags)
{
	__u32 v = tandem_verdict(dev, ino, dentry);

	if (v == VERDICT_NO) {
		stat_inc(TANDEM_STAT_FILTERED);
		return 0;
	}
	if (v == VERDICT_DEPTH)
		*flags |= TANDEM_F_DEPTH_EXCEEDED;
	/* Checked after the verdict: only watched writes pay for it. */
	if (excluded(tgid))
		return 0;
	return 1;
}

static __always_inline int is_reg(__u32 mode)
{
	return (mode & T_S_IFMT) == T_S_IFREG;
}

static __always_inline void put_stash(struct stash *st, struct finfo *fi)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (bpf_map_update_elem(&STASH, &id, st, BPF_ANY))
		lost(fi ? fi->dev : 0, fi ? fi->ino : 0);
}

/*
 * The common sys_enter part for syscalls that act on an fd: resolve it, keep
 * regular files only (and directories for fsync), and stash what exit needs.
 * rwf carries pwritev2's RWF_* flags.
 */
static __always_inline int enter_fd(struct trace_event_raw_sys_enter *ctx,
				    long fd, __u32 op, __s64 off, __u64 len,
				    __u32 aux, __u32 rwf, __u64 uptr)
{
	struct file *f = fd_file(fd);
	struct finfo fi = {};
	struct stash st = {};

	if (file_info(f, &fi))
		return 0;
	if (!is_reg(fi.mode) &&
	    !(op == ST_SYNC && (fi.mode & T_S_IFMT) == T_S_IFDIR))
		return 0;
	st.dev = fi.dev;
	st.ino = fi.ino;
	st.dentry = fi.dentry;
	st.nr = (__u32)ctx->id;
	st.op = op;
	st.off = off;
	st.len = len;
	st.aux = aux;
	if (op == ST_WRITE_OFF || op == ST_WRITE_FPOS || op == ST_WRITE_UPTR) {
		if ((fi.flags & T_O_APPEND) || (rwf & T_RWF_APPEND)) {
			st.op = ST_WRITE_APPEND;
			st.off = fi.isize;
			st.obj = fi.inode;
		} else if (op == ST_WRITE_FPOS) {
			st.off = fi.pos;
			st.obj = (__u64)f;
		} else if (op == ST_WRITE_UPTR) {
			__s64 o = -1;

			st.obj = uptr;
			if (bpf_probe_read_user(&o, sizeof(o), (void *)uptr))
				o = -1;
			st.off = o;
		}
		st.sync = (fi.flags & T_O_DSYNC) ||
			  (rwf & (T_RWF_DSYNC | T_RWF_SYNC));
	}
	put_stash(&st, &fi);
	return 0;
}

static __always_inline __s64 smin(__s64 a, __s64 b)
{
	return a < b ? a : b;
}

static __always_inline __s64 smax(__s64 a, __s64 b)
{
	return a > b ? a : b;
}

/* ---- write(2) and friends: the hot path ------------------------------------- */

/*
 * The unwatched path is what every write on the machine pays, so it is kept to
 * the fd lookup, two struct reads and one inlined array lookup:
 *  - pwrite64/pwritev (and pwritev2 at an explicit offset) have no enter
 *    program: their exit reads the fd and offset from the user registers saved
 *    at syscall entry (bpf_task_pt_regs), which the syscall does not change.
 *  - write/writev (and pwritev2 at f_pos or with RWF_APPEND) need the position
 *    before the call, so their enter stores it in TSLOT together with the
 *    cached verdict; an exit whose enter found the file unwatched at the current
 *    generation reads that slot and returns.
 * Anything not answered by FCACHE goes to report_write, which also handles the
 * watched case.
 */

#define VERDICT_MISS 3 /* fcache_get: not cached */

/* TSLOT states. */
#define TS_POS 0x1    /* a regular file; pos is f_pos before the call */
#define TS_APPEND 0x2 /* a regular file written in append mode; pos is i_size */
#define TS_NO 0x4     /* FCACHE said unwatched at generation `gen` */

/* How report_write finds the range. */
enum {
	RW_OFF,     /* at the explicit offset `lo`, unless the fd appends */
	RW_FPOS,    /* lo is f_pos at enter */
	RW_APPEND,  /* lo is i_size at enter */
	RW_UNKNOWN, /* the enter's slot was lost: best guess, and verify the file */
};

#define T_RWF_NOAPPEND 0x20

/* Syscall arguments at exit, from the user registers saved at entry. */
#if defined(__TARGET_ARCH_arm64)
#define SC_ARG1(r) ((r)->orig_x0) /* x0 now holds the return value */
#define SC_ARG4(r) ((r)->regs[3])
#define SC_ARG6(r) ((r)->regs[5])
#else
#define SC_ARG1(r) ((r)->di)
#define SC_ARG4(r) ((r)->r10)
#define SC_ARG6(r) ((r)->r9)
#endif

/* murmur3's 64-bit finalizer: every input bit affects every output bit. */
static __always_inline __u64 fmix64(__u64 h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static __always_inline __u64 fid_hash(struct finfo *fi)
{
	return fmix64(fi->dentry ^ fmix64(fi->ino ^ (fi->sb * 0x9e3779b97f4a7c15ULL)));
}

static __always_inline struct fslot *fslot_of(__u64 h)
{
	__u32 idx = h & (FCACHE_SLOTS - 1);

	return bpf_map_lookup_elem(&FCACHE, &idx);
}

/* Folds the device into the verdict word: a slot whose dev was torn by another
 * CPU's fill (of a file on another filesystem) then fails to decode. */
static __always_inline __u64 dev_mix(__u64 dev)
{
	return dev * 0x9e3779b97f4a7c15ULL;
}

/* The verdict cached for this file at generation gen, or VERDICT_MISS; on a
 * hit, also the file's device (fi->dev). */
static __always_inline __u32 fcache_get(struct finfo *fi, __u64 h, __u64 gen)
{
	struct fslot *sl = fslot_of(h);
	__u64 w, dev;

	if (!sl || sl->dentry != fi->dentry || sl->ino != fi->ino ||
	    sl->sb != fi->sb)
		return VERDICT_MISS;
	dev = sl->dev;
	w = sl->word ^ h ^ dev_mix(dev);
	if ((w >> 2) != (gen & (~0ULL >> 2)))
		return VERDICT_MISS;
	fi->dev = dev;
	return w & 3;
}

static __always_inline void fcache_put(struct finfo *fi, __u64 h, __u64 gen,
				       __u32 v)
{
	struct fslot *sl = fslot_of(h);

	if (!sl)
		return;
	sl->dentry = fi->dentry;
	sl->ino = fi->ino;
	sl->sb = fi->sb;
	sl->dev = fi->dev;
	sl->word = h ^ dev_mix(fi->dev) ^ ((gen << 2) | v);
}

static __always_inline struct tslot *tslot_of(__u64 id)
{
	__u32 idx = (__u32)id & (TSLOT_SLOTS - 1);

	return bpf_map_lookup_elem(&TSLOT, &idx);
}

/* Detects a slot torn by two colliding threads (see TSLOT). */
static __always_inline __u64 tslot_chk(struct tslot *t)
{
	return fmix64(t->id ^ t->file ^ ((__u64)t->pos * 0x9e3779b97f4a7c15ULL) ^
		      (t->gen * 0xc2b2ae3d27d4eb4fULL) ^
		      ((((__u64)t->state << 32) | t->nr) * 0x165667b19e3779f9ULL));
}

static __always_inline int appends(__u32 fflags, __u32 rwf)
{
	return ((fflags & T_O_APPEND) && !(rwf & T_RWF_NOAPPEND)) ||
	       (rwf & T_RWF_APPEND);
}

/*
 * Reports a successful write of `ret` bytes to the file `fi` (head read) if it
 * is watched. how_v is RW_* | verdict << 8: the caller's FCACHE verdict, which
 * also filled fi->dev, or VERDICT_MISS to take it here. A global function:
 * verified once, not once per caller (and limited to five arguments, hence the
 * packing). The verdict is taken at exit, so that a file moved into a watched
 * tree while the write was in flight is reported.
 */
__noinline int report_write(struct finfo *fi, __u32 how_v, __s64 lo, __s64 ret,
			    __u32 rwf)
{
	__u32 tgid = cur_tgid(), flags = 0, verify = 0;
	__u32 how = how_v & 0xff, v = how_v >> 8;
	__s64 start, end;
	__u64 gen, h;

	if (!fi || ret <= 0)
		return 0;
	if (v == VERDICT_MISS) {
		/* The generation is read before the walk: a rename during it makes
		 * the entry stale at once rather than wrong. */
		gen = read_gen();
		h = fid_hash(fi);
		v = fcache_get(fi, h, gen);
		if (v == VERDICT_MISS) {
			if (file_dev(fi))
				return 0;
			v = tandem_verdict(fi->dev, fi->ino, fi->dentry);
			fcache_put(fi, h, gen, v);
		} else {
			stat_inc(TANDEM_STAT_CACHE_HIT);
		}
	} else {
		stat_inc(TANDEM_STAT_CACHE_HIT);
	}
	if (v == VERDICT_NO) {
		stat_inc(TANDEM_STAT_FILTERED);
		return 0;
	}
	if (v == VERDICT_DEPTH)
		flags |= TANDEM_F_DEPTH_EXCEEDED;
	if (excluded(tgid))
		return 0;

	switch (how) {
	case RW_OFF:
		if (appends(fi->flags, rwf)) {
			/*
			 * pwrite on an O_APPEND fd appends (a Linux quirk). Without
			 * an enter program the size before the call is unknown:
			 * [i_size - ret, i_size) is exact unless another writer
			 * changed the size in between, so verify the file too.
			 */
			start = smax(fi->isize - ret, 0);
			end = smax(fi->isize, start + ret);
			verify = 1;
		} else {
			start = lo;
			end = lo + ret;
		}
		break;
	case RW_FPOS:
		/*
		 * Threads sharing the struct file can move f_pos between the
		 * enter and the exit: the union of both candidates covers the
		 * bytes either way. The file was open at enter; if another thread
		 * closed it since, these reads see a freed file, and the range
		 * only grows.
		 */
		start = smax(smin(lo, fi->pos - ret), 0);
		end = smax(lo + ret, fi->pos);
		break;
	case RW_APPEND:
		start = lo;
		end = smax(lo + ret, fi->isize);
		break;
	default: /* RW_UNKNOWN */
		if (appends(fi->flags, rwf)) {
			start = smax(fi->isize - ret, 0);
			end = smax(fi->isize, start + ret);
		} else {
			start = smax(fi->pos - ret, 0);
			end = start + ret;
		}
		verify = 1;
		break;
	}
	emit(TANDEM_EV_WRITE, fi->dev, fi->ino, start, end - start, 0, flags,
	     tgid);
	if (verify)
		emit(TANDEM_EV_VERIFY, fi->dev, fi->ino, 0, 0, 0, flags, tgid);
	if ((fi->flags & T_O_DSYNC) || (rwf & (T_RWF_DSYNC | T_RWF_SYNC)))
		emit(TANDEM_EV_SYNC, fi->dev, fi->ino, start, end - start,
		     TANDEM_SYNC_WRITE, flags, tgid);
	return 0;
}

/* The exit of a write at an explicit offset: no enter program ran. */
static __always_inline int exit_off(struct task_struct *t, struct pt_regs *r,
				    long ret, __s64 off, __u32 rwf)
{
	struct finfo fi = {};
	__u32 v;

	if (file_head(fd_file_of(t, SC_ARG1(r)), &fi) || !is_reg(fi.mode))
		return 0;
	v = fcache_get(&fi, fid_hash(&fi), read_gen());
	if (v == VERDICT_NO) {
		stat_inc(TANDEM_STAT_FILTERED);
		return 0;
	}
	/* A hit also filled fi.dev: report_write then reads nothing more. */
	return report_write(&fi, RW_OFF | v << 8, off, ret, rwf);
}

/* The enter of a write at the file position, or an append. */
static __always_inline int enter_wpos(struct trace_event_raw_sys_enter *ctx,
				      long fd, __u32 rwf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tslot *sl = tslot_of(id);
	struct tslot n = { .id = id, .nr = (__u32)ctx->id };
	struct finfo fi = {};
	struct file *f;

	if (!sl)
		return 0;
	f = fd_file(fd);
	/* Not a regular file: state 0 tells the exit there is nothing to do. */
	if (!file_head(f, &fi) && is_reg(fi.mode)) {
		__u64 gen = read_gen();

		n.file = (__u64)f;
		if (appends(fi.flags, rwf)) {
			n.state = TS_APPEND;
			n.pos = fi.isize;
		} else {
			n.state = TS_POS;
			n.pos = fi.pos;
		}
		if (fcache_get(&fi, fid_hash(&fi), gen) == VERDICT_NO) {
			n.state |= TS_NO;
			n.gen = gen;
		}
	}
	n.chk = tslot_chk(&n);
	*sl = n;
	return 0;
}

/* The exit matching enter_wpos. */
static __always_inline int exit_wpos(struct trace_event_raw_sys_exit *ctx,
				     __u32 rwf)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tslot *sl = tslot_of(id);
	struct finfo fi = {};
	long ret = ctx->ret;
	struct tslot t;

	if (!sl)
		return 0;
	t = *sl;
	sl->id = 0;
	if (ret <= 0)
		return 0;
	if (t.id != id || t.nr != (__u32)ctx->id || t.chk != tslot_chk(&t)) {
		/* Another thread took the slot, or the enter ran before the
		 * programs were attached: find the file from the registers and
		 * report conservatively. */
		struct task_struct *task = bpf_get_current_task_btf();
		struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(task);

		if (file_head(fd_file_of(task, SC_ARG1(r)), &fi) ||
		    !is_reg(fi.mode))
			return 0;
		return report_write(&fi, RW_UNKNOWN | VERDICT_MISS << 8, 0, ret,
				    rwf);
	}
	if (!(t.state & (TS_POS | TS_APPEND)))
		return 0;
	if ((t.state & TS_NO) && t.gen == read_gen()) {
		stat_inc(TANDEM_STAT_FILTERED);
		return 0;
	}
	/* The struct file the enter saw: the syscall held it in between. */
	if (file_head((struct file *)t.file, &fi)) {
		lost(0, 0);
		return 0;
	}
	return report_write(&fi,
			    ((t.state & TS_APPEND) ? RW_APPEND : RW_FPOS) |
				    VERDICT_MISS << 8,
			    t.pos, ret, rwf);
}

/* ---- sys_enter programs ---------------------------------------------------- */

SEC("tracepoint/syscalls/sys_enter_write")
int sys_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return enter_wpos(ctx, ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int sys_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return enter_wpos(ctx, ctx->args[0], 0);
}

/* pwritev2(fd, iov, cnt, pos_l, pos_h, flags): offset -1 means f_pos. At an
 * explicit offset (the common case) the exit alone suffices. */
SEC("tracepoint/syscalls/sys_enter_pwritev2")
int sys_enter_pwritev2(struct trace_event_raw_sys_enter *ctx)
{
	__s64 off = ctx->args[3];
	__u32 rwf = ctx->args[5];

	if (off != -1 && !(rwf & T_RWF_APPEND))
		return 0;
	return enter_wpos(ctx, ctx->args[0], rwf);
}

SEC("tracepoint/syscalls/sys_enter_ftruncate")
int sys_enter_ftruncate(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx, ctx->args[0], ST_TRUNCATE, ctx->args[1], 0, 0, 0,
			0);
}

SEC("tracepoint/syscalls/sys_enter_fallocate")
int sys_enter_fallocate(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx, ctx->args[0], ST_FALLOCATE, ctx->args[2],
			ctx->args[3], ctx->args[1], 0, 0);
}

/* copy_file_range(fd_in, off_in, fd_out, off_out, len, flags) */
SEC("tracepoint/syscalls/sys_enter_copy_file_range")
int sys_enter_copy_file_range(struct trace_event_raw_sys_enter *ctx)
{
	__u64 uptr = ctx->args[3];

	return enter_fd(ctx, ctx->args[2], uptr ? ST_WRITE_UPTR : ST_WRITE_FPOS,
			0, 0, 0, 0, uptr);
}

/* splice(fd_in, off_in, fd_out, off_out, len, flags) */
SEC("tracepoint/syscalls/sys_enter_splice")
int sys_enter_splice(struct trace_event_raw_sys_enter *ctx)
{
	__u64 uptr = ctx->args[3];

	return enter_fd(ctx, ctx->args[2], uptr ? ST_WRITE_UPTR : ST_WRITE_FPOS,
			0, 0, 0, 0, uptr);
}

/* sendfile64(out_fd, in_fd, offset, count): the offset belongs to in_fd. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int sys_enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx, ctx->args[0], ST_WRITE_FPOS, 0, 0, 0, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_fsync")
int sys_enter_fsync(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx, ctx->args[0], ST_SYNC, 0, 0, TANDEM_SYNC_FSYNC, 0,
			0);
}

SEC("tracepoint/syscalls/sys_enter_fdatasync")
int sys_enter_fdatasync(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx, ctx->args[0], ST_SYNC, 0, 0, TANDEM_SYNC_FDATASYNC,
			0, 0);
}

/* sync_file_range(fd, off, nbytes, flags): durable only with WAIT_AFTER. */
SEC("tracepoint/syscalls/sys_enter_sync_file_range")
int sys_enter_sync_file_range(struct trace_event_raw_sys_enter *ctx)
{
	if (!(ctx->args[3] & T_SYNC_FILE_RANGE_WAIT_AFTER))
		return 0;
	return enter_fd(ctx, ctx->args[0], ST_SYNC, ctx->args[1], ctx->args[2],
			TANDEM_SYNC_FILE_RANGE, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_syncfs")
int sys_enter_syncfs(struct trace_event_raw_sys_enter *ctx)
{
	struct finfo fi = {};
	struct stash st = {};

	/* A bad fd fails the syscall; an fd we cannot read still syncs. */
	file_info(fd_file(ctx->args[0]), &fi);
	st.dev = fi.dev;
	st.nr = (__u32)ctx->id;
	st.op = ST_SYNCFS;
	put_stash(&st, 0);
	return 0;
}

/* mmap(addr, len, prot, flags, fd, off) */
SEC("tracepoint/syscalls/sys_enter_mmap")
int sys_enter_mmap(struct trace_event_raw_sys_enter *ctx)
{
	if (!(ctx->args[3] & T_MAP_SHARED) || !(ctx->args[2] & T_PROT_WRITE))
		return 0;
	return enter_fd(ctx, (int)ctx->args[4], ST_MMAP, ctx->args[5],
			ctx->args[1], 0, 0, 0);
}

static __always_inline int enter_flush(struct trace_event_raw_sys_enter *ctx,
				       __u32 aux)
{
	__u32 tgid = cur_tgid();
	struct stash st = {};

	/* Only processes that mapped a watched file shared and writable. */
	if (!bpf_map_lookup_elem(&MAPPERS, &tgid))
		return 0;
	st.nr = (__u32)ctx->id;
	st.op = ST_FLUSH;
	st.off = ctx->args[0];
	st.len = ctx->args[1];
	st.aux = aux;
	put_stash(&st, 0);
	return 0;
}

/* msync(addr, len, flags) */
SEC("tracepoint/syscalls/sys_enter_msync")
int sys_enter_msync(struct trace_event_raw_sys_enter *ctx)
{
	return enter_flush(ctx, (ctx->args[2] & T_MS_SYNC) ? TANDEM_SYNC_MSYNC : 0);
}

SEC("tracepoint/syscalls/sys_enter_munmap")
int sys_enter_munmap(struct trace_event_raw_sys_enter *ctx)
{
	return enter_flush(ctx, 0);
}

static __always_inline int enter_open(struct trace_event_raw_sys_enter *ctx,
				      __u64 flags)
{
	struct stash st = {};

	if (!(flags & T_O_TRUNC))
		return 0;
	st.nr = (__u32)ctx->id;
	st.op = ST_OPEN_TRUNC;
	put_stash(&st, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int sys_enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int sys_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx, ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int sys_enter_creat(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx, T_O_TRUNC);
}

/* openat2(dfd, path, struct open_how *how, size) */
SEC("tracepoint/syscalls/sys_enter_openat2")
int sys_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	__u64 flags = 0;

	/* A fault here makes the syscall fail with EFAULT as well. */
	if (bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]))
		return 0;
	return enter_open(ctx, flags);
}

/* truncate(path, len): no file to filter on; the path goes to user space. */
SEC("tracepoint/syscalls/sys_enter_truncate")
int sys_enter_truncate(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pstash *ps;
	__u32 z = 0;
	long n;

	ps = bpf_map_lookup_elem(&PSCRATCH, &z);
	if (!ps)
		return 0;
	n = bpf_probe_read_user_str(ps->path, sizeof(ps->path),
				    (void *)ctx->args[0]);
	ps->flags = 0;
	if (n < 0) {
		ps->path[0] = 0;
		ps->flags = TANDEM_F_PATH_TRUNCATED;
	} else if (n >= TANDEM_PATH_MAX) {
		ps->flags = TANDEM_F_PATH_TRUNCATED;
	}
	ps->nr = (__u32)ctx->id;
	ps->len = ctx->args[1];
	if (bpf_map_update_elem(&PSTASH, &id, ps, BPF_ANY))
		lost(0, 0);
	return 0;
}

/* ---- sys_exit programs ----------------------------------------------------- */

SEC("tracepoint/syscalls/sys_exit_truncate")
int sys_exit_truncate(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct tandem_path_event *e;
	struct pstash *ps;

	ps = bpf_map_lookup_elem(&PSTASH, &id);
	if (!ps)
		return 0;
	if (ps->nr != (__u32)ctx->id || ctx->ret != 0 ||
	    excluded(tgid))
		goto out;
	e = bpf_ringbuf_reserve(&EVENTS, sizeof(*e), 0);
	if (!e) {
		lost(0, 0);
		goto out;
	}
	e->hdr.dev = 0;
	e->hdr.ino = 0;
	e->hdr.offset = ps->len;
	e->hdr.len = 0;
	e->hdr.kind = TANDEM_EV_TRUNCATE_PATH;
	e->hdr.tgid = tgid;
	e->hdr.aux = 0;
	e->hdr.flags = ps->flags;
	bpf_probe_read_kernel(e->path, sizeof(e->path), ps->path);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	stat_inc(TANDEM_STAT_EMITTED);
out:
	bpf_map_delete_elem(&PSTASH, &id);
	return 0;
}

/*
 * The one exit program for every syscall whose enter stashed something. It is
 * attached to many sys_exit_* tracepoints; the stashed syscall number says which.
 */
SEC("tracepoint/syscalls/sys_exit_file")
int sys_exit_file(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	long ret = ctx->ret;
	__u32 kind, flags = 0, aux = 0;
	__u64 off = 0, len = 0;
	struct stash *sp, st;

	sp = bpf_map_lookup_elem(&STASH, &id);
	if (!sp)
		return 0;
	st = *sp;
	bpf_map_delete_elem(&STASH, &id);
	if (st.op == ST_NONE)
		return 0;
	if (st.nr != (__u32)ctx->id)
		return 0;

	switch (st.op) {
	case ST_WRITE_OFF:
		if (ret <= 0)
			return 0;
		kind = TANDEM_EV_WRITE;
		off = st.off;
		len = ret;
		break;
	case ST_WRITE_FPOS: {
		__s64 lo = st.off, after = 0, start, end;

		if (ret <= 0)
			return 0;
		/*
		 * The syscall held a reference on the file until just now; a
		 * concurrent close can free it, and then this read is garbage but
		 * harmless (the range only grows).
		 */
		if (READ_FIELD(&after, st.obj, struct file, f_pos))
			after = lo + ret;
		start = smin(lo, after - ret);
		end = smax(lo + ret, after);
		kind = TANDEM_EV_WRITE;
		off = start < 0 ? 0 : start;
		len = end - (__s64)off;
		break;
	}
	case ST_WRITE_APPEND: {
		__s64 lo = st.off, isize = 0;

		if (ret <= 0)
			return 0;
		if (READ_FIELD(&isize, st.obj, struct inode, i_size))
			isize = 0;
		kind = TANDEM_EV_WRITE;
		off = lo;
		len = smax(lo + ret, isize) - lo;
		break;
	}
	case ST_WRITE_UPTR: {
		__s64 lo = st.off, after = -1, start, end;

		if (ret <= 0)
			return 0;
		if (bpf_probe_read_user(&after, sizeof(after), (void *)st.obj))
			after = -1;
		kind = TANDEM_EV_WRITE;
		if (lo >= 0 && after >= ret) {
			start = smin(lo, after - ret);
			end = smax(lo + ret, after);
		} else if (lo >= 0) {
			start = lo;
			end = lo + ret;
		} else if (after >= ret) {
			start = after - ret;
			end = after;
		} else {
			kind = TANDEM_EV_VERIFY;
			start = 0;
			end = 0;
		}
		off = start;
		len = end - start;
		break;
	}
	case ST_TRUNCATE:
		if (ret != 0)
			return 0;
		kind = TANDEM_EV_TRUNCATE;
		off = st.off;
		break;
	case ST_FALLOCATE:
		if (ret != 0)
			return 0;
		kind = TANDEM_EV_FALLOCATE;
		off = st.off;
		len = st.len;
		aux = st.aux;
		break;
	case ST_SYNC:
		if (ret != 0)
			return 0;
		kind = TANDEM_EV_SYNC;
		off = st.off;
		len = st.len;
		aux = st.aux;
		break;
	case ST_MMAP:
		if ((unsigned long)ret >= (unsigned long)-T_MAX_ERRNO)
			return 0;
		kind = TANDEM_EV_MMAP;
		off = st.off;
		len = st.len;
		break;
	case ST_OPEN_TRUNC: {
		struct finfo fi = {};

		if (ret < 0 || file_info(fd_file(ret), &fi) || !is_reg(fi.mode))
			return 0;
		st.dev = fi.dev;
		st.ino = fi.ino;
		st.dentry = fi.dentry;
		kind = TANDEM_EV_TRUNCATE;
		break;
	}
	case ST_SYNCFS:
		if (ret == 0)
			emit(TANDEM_EV_SYNC_ALL, st.dev, 0, 0, 0,
			     TANDEM_SYNC_SYNCFS, 0, tgid);
		return 0;
	case ST_FLUSH:
		if (ret == 0 && !excluded(tgid))
			emit(TANDEM_EV_FLUSH, 0, 0, st.off, st.len, st.aux, 0,
			     tgid);
		return 0;
	default:
		return 0;
	}

	if (!wanted(st.dev, st.ino, st.dentry, tgid, &flags))
		return 0;
	emit(kind, st.dev, st.ino, off, len, aux, flags, tgid);
	if (st.sync)
		emit(TANDEM_EV_SYNC, st.dev, st.ino, off, len, TANDEM_SYNC_WRITE,
		     flags, tgid);
	if (st.op == ST_MMAP) {
		struct tandem_key k = { .dev = st.dev, .ino = st.ino };
		__u32 one = 1;

		bpf_map_update_elem(&MMAPPED, &k, &one, BPF_ANY);
		bpf_map_update_elem(&MAPPERS, &tgid, &one, BPF_ANY);
	}
	return 0;
}

/* Attached to the exits of write and writev. */
SEC("tracepoint/syscalls/sys_exit_write")
int sys_exit_write(struct trace_event_raw_sys_exit *ctx)
{
	return exit_wpos(ctx, 0);
}

/* Attached to the exits of pwrite64 and pwritev: (fd, buf, count, pos). */
SEC("tracepoint/syscalls/sys_exit_pwrite64")
int sys_exit_pwrite(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *t;
	struct pt_regs *r;
	long ret = ctx->ret;

	if (ret <= 0)
		return 0;
	t = bpf_get_current_task_btf();
	r = (struct pt_regs *)bpf_task_pt_regs(t);
	return exit_off(t, r, ret, SC_ARG4(r), 0);
}

SEC("tracepoint/syscalls/sys_exit_pwritev2")
int sys_exit_pwritev2(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct pt_regs *r = (struct pt_regs *)bpf_task_pt_regs(t);
	__s64 off = SC_ARG4(r);
	__u32 rwf = SC_ARG6(r);
	long ret = ctx->ret;

	/* The cases in which the enter program stored a slot. */
	if (off == -1 || (rwf & T_RWF_APPEND))
		return exit_wpos(ctx, rwf);
	if (ret <= 0)
		return 0;
	return exit_off(t, r, ret, off, rwf);
}

SEC("tracepoint/syscalls/sys_exit_sync")
int sys_exit_sync(struct trace_event_raw_sys_exit *ctx)
{
	emit(TANDEM_EV_SYNC_ALL, 0, 0, 0, 0, TANDEM_SYNC_SYNC, 0, cur_tgid());
	return 0;
}

/* Attached to the exits of rename*, unlink*, rmdir and link*: a successful one
 * may move a subtree in or out of a watched tree or recycle a dentry. */
SEC("tracepoint/syscalls/sys_exit_rename")
int sys_exit_namespace(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret == 0)
		bump_gen();
	return 0;
}

/* ---- io_uring ---------------------------------------------------------------- */

static __always_inline int uring_is_write(__u32 op)
{
	return op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE) ||
	       op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITEV) ||
	       op == bpf_core_enum_value(enum io_uring_op,
					 IORING_OP_WRITE_FIXED) ||
	       (bpf_core_enum_value_exists(enum io_uring_op,
					   IORING_OP_WRITEV_FIXED) &&
		op == bpf_core_enum_value(enum io_uring_op,
					  IORING_OP_WRITEV_FIXED));
}

/* The request is prepped here but its file is only assigned at issue. */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(uring_submit, struct io_kiocb *req)
{
	__u32 op = req->opcode;
	struct ureq u = {};
	__u64 key = (__u64)req;

	u.opcode = op;
	u.tgid = cur_tgid();
	if (uring_is_write(op)) {
		struct io_rw *rw = (void *)req;

		u.pos = rw->kiocb.ki_pos;
		u.rwf = rw->flags;
	} else if (op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_FALLOCATE) ||
		   op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_SYNC_FILE_RANGE) ||
		   op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_FSYNC)) {
		struct io_sync *s = (void *)req;

		u.pos = s->off;
		u.len = s->len;
		u.aux = s->mode;
	} else if (bpf_core_enum_value_exists(enum io_uring_op,
					      IORING_OP_FTRUNCATE) &&
		   op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_FTRUNCATE)) {
		struct io_ftrunc *t = (void *)req;

		u.pos = t->len;
	} else if (op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_SPLICE)) {
		struct io_splice *s = (void *)req;

		u.pos = s->off_out;
	} else {
		return 0;
	}
	bpf_map_update_elem(&UREQ, &key, &u, BPF_ANY);
	return 0;
}

/*
 * An io_uring openat/openat2 with O_TRUNC cut its file before it completed: report
 * the cut like the system call's exit does. The open's arguments are still in the
 * request. res is the new fd in the ring owner's table, which io-wq workers and
 * the task running the completion share; with a direct descriptor (file_slot) the
 * file went to the ring's own table, out of reach: then every tree is verified.
 */
static __always_inline int uring_open_done(struct io_kiocb *r, __s32 res)
{
	struct io_open *o = (void *)r;
	__u32 flags = TANDEM_F_URING, tgid = cur_tgid();
	struct finfo fi = {};

	if (res < 0 || !(BPF_CORE_READ(o, how.flags) & T_O_TRUNC))
		return 0;
	if (BPF_CORE_READ(o, file_slot)) {
		if (!excluded(tgid))
			lost(0, 0);
		return 0;
	}
	if (file_info(fd_file(res), &fi)) {
		/* Closed already by another thread: which file it was is unknown. */
		if (!excluded(tgid))
			lost(0, 0);
		return 0;
	}
	if (!is_reg(fi.mode) || !wanted(fi.dev, fi.ino, fi.dentry, tgid, &flags))
		return 0;
	emit(TANDEM_EV_TRUNCATE, fi.dev, fi.ino, 0, 0, 0, flags, tgid);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(uring_complete, struct io_ring_ctx *rctx, void *req,
	     struct io_uring_cqe *cqe)
{
	struct io_kiocb *r = req;
	__u64 key = (__u64)req;
	__u32 flags = TANDEM_F_URING, kind, aux = 0, op, tgid;
	__u64 off = 0, len = 0;
	struct finfo fi = {};
	struct ureq *up, u;
	__s32 res = cqe->res;

	up = bpf_map_lookup_elem(&UREQ, &key);
	if (up) {
		u = *up;
		bpf_map_delete_elem(&UREQ, &key);
	} else {
		/* Not stashed: not a tracked op, or its stash was evicted. */
		op = BPF_CORE_READ(r, opcode);
		if (op == bpf_core_enum_value(enum io_uring_op,
					      IORING_OP_RENAMEAT) ||
		    op == bpf_core_enum_value(enum io_uring_op,
					      IORING_OP_UNLINKAT) ||
		    op == bpf_core_enum_value(enum io_uring_op,
					      IORING_OP_LINKAT)) {
			if (res == 0)
				bump_gen();
			return 0;
		}
		if (op == bpf_core_enum_value(enum io_uring_op,
					      IORING_OP_OPENAT) ||
		    op == bpf_core_enum_value(enum io_uring_op,
					      IORING_OP_OPENAT2))
			return uring_open_done(r, res);
		if (!uring_is_write(op) &&
		    op != bpf_core_enum_value(enum io_uring_op,
					      IORING_OP_SPLICE))
			return 0;
		__builtin_memset(&u, 0, sizeof(u));
		u.opcode = op;
		u.pos = -1;
		u.tgid = cur_tgid();
	}
	op = u.opcode;
	tgid = u.tgid;
	if (res < 0)
		return 0;
	if (file_info(BPF_CORE_READ(r, file), &fi) || !is_reg(fi.mode))
		return 0;

	if (uring_is_write(op) ||
	    op == bpf_core_enum_value(enum io_uring_op, IORING_OP_SPLICE)) {
		if (res == 0)
			return 0;
		if (u.pos < 0 || (u.rwf & T_RWF_APPEND) ||
		    (fi.flags & T_O_APPEND)) {
			kind = TANDEM_EV_VERIFY;
		} else {
			kind = TANDEM_EV_WRITE;
			off = u.pos;
			len = res;
		}
	} else if (res != 0) {
		return 0;
	} else if (op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_FALLOCATE)) {
		kind = TANDEM_EV_FALLOCATE;
		off = u.pos;
		len = u.len;
		aux = u.aux;
	} else if (op == bpf_core_enum_value(enum io_uring_op, IORING_OP_FSYNC)) {
		kind = TANDEM_EV_SYNC;
		aux = TANDEM_SYNC_URING_FSYNC;
	} else if (op == bpf_core_enum_value(enum io_uring_op,
					     IORING_OP_SYNC_FILE_RANGE)) {
		kind = TANDEM_EV_SYNC;
		off = u.pos;
		len = u.len;
		aux = TANDEM_SYNC_URING_RANGE;
	} else {
		kind = TANDEM_EV_TRUNCATE; /* IORING_OP_FTRUNCATE */
		off = u.pos;
	}
	if (!wanted(fi.dev, fi.ino, fi.dentry, tgid, &flags))
		return 0;
	emit(kind, fi.dev, fi.ino, off, len, aux, flags, tgid);
	if (kind == TANDEM_EV_WRITE &&
	    ((fi.flags & T_O_DSYNC) || (u.rwf & (T_RWF_DSYNC | T_RWF_SYNC))))
		emit(TANDEM_EV_SYNC, fi.dev, fi.ino, off, len, TANDEM_SYNC_WRITE,
		     flags, tgid);
	return 0;
}

/* ---- shared mmap ----------------------------------------------------------- */

/* Fires on the first store to a clean page (and on buffered writes that dirty
 * one); only files that a watched shared writable mapping covers are reported. */
SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(dirty_folio, struct folio *folio, struct address_space *mapping)
{
	struct tandem_key k = {};
	__u32 tgid, order = 0;
	struct inode *host;

	if (!mapping || !folio)
		return 0;
	host = mapping->host;
	if (!host)
		return 0;
	k.dev = host->i_sb->s_dev;
	k.ino = host->i_ino;
	if (!bpf_map_lookup_elem(&MMAPPED, &k))
		return 0;
	tgid = cur_tgid();
	if (excluded(tgid))
		return 0;
	if (folio->flags.f & (1UL << bpf_core_enum_value(enum pageflags, PG_head)))
		order = folio->_flags_1 & 0xff;
	emit(TANDEM_EV_PAGE_DIRTY, k.dev, k.ino, folio->index << T_PAGE_SHIFT,
	     (1ULL << T_PAGE_SHIFT) << order, 0, 0, tgid);
	return 0;
}
