//! The seccomp classic-BPF program of the durability barrier, assembled by hand.
//!
//! The program answers, for every system call of a filtered process:
//! - `SECCOMP_RET_USER_NOTIF` for fsync, fdatasync, syncfs and sync; for
//!   sync_file_range only when its flags (args\[3\]) include `SYNC_FILE_RANGE_WAIT_AFTER`
//!   (without it the call only starts writeback and promises nothing); for msync
//!   only with `MS_SYNC` (args\[2\]); for pwritev2 only with `RWF_SYNC` or `RWF_DSYNC`
//!   (args\[5\]: fd, iov, iovcnt, pos_l, pos_h, flags);
//! - `SECCOMP_RET_USER_NOTIF` for open and openat with `O_DSYNC` in their flags (it is
//!   also part of `O_SYNC`) and for every openat2 (its flags are in memory, out of the
//!   filter's sight): the agent opens such a file itself and places the descriptor in
//!   a reserved range of numbers ([`reserved_fds`], see [`super::proxy`]);
//! - `SECCOMP_RET_USER_NOTIF` for write, pwrite64, writev, pwritev and pwritev2 on a
//!   descriptor in that range, and for dup and fcntl of one (so that a duplicate
//!   stays in the range): the agent performs the write and holds its return;
//! - `SECCOMP_RET_ERRNO(ENOSYS)` for io_uring_setup, see [`program`];
//! - `SECCOMP_RET_KILL_PROCESS` for any ABI other than x86_64;
//! - `SECCOMP_RET_ALLOW` for everything else.
//!
//! Jumps are written against labels and resolved by [`assemble`], so that adding a
//! case can't silently shift a hand-counted offset.

use std::ops::Range;

use libc::sock_filter;

use super::BarrierError;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` (not in libc).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// x32 system calls arrive with arch x86_64 and this bit set in the number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// x32's own pwritev2 entry (`compat_sys_pwritev64v2`), whose flags are args\[4\]
/// because x32 passes the 64-bit offset in one register.
pub const X32_PWRITEV2: u32 = 547;

/// Builds the barrier's filter program.
///
/// io_uring_setup fails with `ENOSYS`: io_uring's `FSYNC` and `SYNC_FILE_RANGE`
/// opcodes never pass through a system call seccomp can see, so a program using
/// io_uring would get durability the barrier can't hold. `ENOSYS` is what a kernel
/// without io_uring answers, and every io_uring user (liburing, glibc-free runtimes,
/// databases) already falls back to plain system calls on it, which the barrier then
/// holds. Docker's default profile refuses io_uring for similar (security) reasons.
///
/// `reserved` is the range of [`reserved_fds`]; with an empty one, no descriptor
/// is held and synchronous opens run as asked.
pub fn program(reserved: &Range<u32>) -> Result<Vec<sock_filter>, BarrierError> {
    use Label::*;
    use Target::{Next, To};
    let nr = |n: libc::c_long| n as u32;
    // Without a range, a synchronous open has nowhere to go: it runs as asked.
    let sync_open = if reserved.is_empty() { Allow } else { Notify };
    let ops = [
        load(OFFSET_ARCH),
        // A foreign ABI (i386 through int 0x80) numbers its system calls differently, so
        // none of the checks below would mean anything: refuse to run it at all.
        jeq(AUDIT_ARCH_X86_64, Next, To(Kill)),
        load(OFFSET_NR),
        // x32 calls use the x86_64 arch value plus a bit in the number; without this an
        // x32 fsync (0x4000004a) would be "some other call" and pass unheld.
        jset(X32_SYSCALL_BIT, Next, To(Common)),
        // Strip the bit: x32 shares the x86_64 numbers of all calls below except pwritev2.
        and(!X32_SYSCALL_BIT),
        // x32 pwritev2 has its own number and its flags one argument earlier.
        jeq(X32_PWRITEV2, To(X32Pwritev2), To(Common)),
        label(Common),
        // Calls that always promise durability go straight to the agent.
        jeq(nr(libc::SYS_fsync), To(Notify), Next),
        jeq(nr(libc::SYS_fdatasync), To(Notify), Next),
        jeq(nr(libc::SYS_syncfs), To(Notify), Next),
        jeq(nr(libc::SYS_sync), To(Notify), Next),
        // Calls that promise durability only with some flag: look at the flag.
        jeq(nr(libc::SYS_sync_file_range), To(SyncFileRange), Next),
        jeq(nr(libc::SYS_msync), To(Msync), Next),
        jeq(nr(libc::SYS_pwritev2), To(Pwritev2), Next),
        // Opening a file for synchronous writes: the agent opens it instead.
        jeq(nr(libc::SYS_open), To(Open), Next),
        jeq(nr(libc::SYS_openat), To(Openat), Next),
        jeq(nr(libc::SYS_openat2), To(sync_open), Next),
        // Calls on a descriptor that may be such a file.
        jeq(nr(libc::SYS_write), To(FdArg), Next),
        jeq(nr(libc::SYS_pwrite64), To(FdArg), Next),
        jeq(nr(libc::SYS_writev), To(FdArg), Next),
        jeq(nr(libc::SYS_pwritev), To(FdArg), Next),
        jeq(nr(libc::SYS_dup), To(FdArg), Next),
        jeq(nr(libc::SYS_fcntl), To(FdArg), Next),
        // io_uring: see the doc comment above.
        jeq(nr(libc::SYS_io_uring_setup), To(Enosys), To(Allow)),
        label(SyncFileRange),
        load(arg_low(3)),
        jset(libc::SYNC_FILE_RANGE_WAIT_AFTER, To(Notify), To(Allow)),
        label(Msync),
        load(arg_low(2)),
        jset(libc::MS_SYNC as u32, To(Notify), To(Allow)),
        label(Pwritev2),
        load(arg_low(5)),
        jset(SYNC_WRITE_FLAGS, To(Notify), To(FdArg)),
        label(Open),
        load(arg_low(1)),
        jset(O_DSYNC, To(sync_open), To(Allow)),
        label(Openat),
        load(arg_low(2)),
        jset(O_DSYNC, To(sync_open), To(Allow)),
        // An fd is a C int: its low 32 bits, compared unsigned, so that a negative
        // one is far above the range.
        label(FdArg),
        load(arg_low(0)),
        jge(reserved.start, Next, To(Allow)),
        jge(reserved.end, To(Allow), To(Notify)),
        label(X32Pwritev2),
        load(arg_low(4)),
        jset(SYNC_WRITE_FLAGS, To(Notify), To(Allow)),
        label(Allow),
        ret(libc::SECCOMP_RET_ALLOW),
        label(Notify),
        ret(libc::SECCOMP_RET_USER_NOTIF),
        label(Enosys),
        ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        label(Kill),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
    ];
    assemble(&ops)
}

/// pwritev2 flags that make the write itself a durability point.
const SYNC_WRITE_FLAGS: u32 = (libc::RWF_SYNC | libc::RWF_DSYNC) as u32;
/// The open flag that makes every write a durability point (`O_SYNC` includes it).
const O_DSYNC: u32 = libc::O_DSYNC as u32;

/// How many descriptor numbers are reserved for synchronous files.
pub const RESERVED_COUNT: u32 = 64;
/// The reserved range never goes higher than this, see [`reserved_fds`].
pub const RESERVED_TOP_MAX: u32 = 65_536;

/// The descriptor numbers where the agent places the files it opens for an
/// application with `O_SYNC`/`O_DSYNC`, given the process's hard `RLIMIT_NOFILE`;
/// writes to them are held. They are the top [`RESERVED_COUNT`] numbers under the
/// hard limit, or under 65,536 if that is lower: the kernel hands out the lowest
/// free number, so a process reaches the range only with nearly that many files
/// open, and a process's descriptor table grows to its highest number and is
/// copied at every fork, so the usual hard limits of 2^19 or 2^20 would cost
/// megabytes per process. Empty when the hard limit is below 1,088.
#[must_use]
pub fn reserved_fds(hard_limit: u64) -> Range<u32> {
    let top =
        u32::try_from(hard_limit.min(u64::from(RESERVED_TOP_MAX))).unwrap_or(RESERVED_TOP_MAX);
    if top < 1024 + RESERVED_COUNT {
        return 0..0;
    }
    top - RESERVED_COUNT..top
}
/// `offsetof(struct seccomp_data, nr)`.
const OFFSET_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const OFFSET_ARCH: u32 = 4;
/// `offsetof(struct seccomp_data, args)`.
const OFFSET_ARGS: u32 = 16;

/// Where a jump goes.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Label {
    Allow,
    Common,
    Enosys,
    Kill,
    FdArg,
    Msync,
    Notify,
    Open,
    Openat,
    Pwritev2,
    SyncFileRange,
    X32Pwritev2,
}

/// A jump target: the next instruction or a label further down (cBPF only jumps forward).
#[derive(Clone, Copy, Debug)]
enum Target {
    Next,
    To(Label),
}

/// One line of the program before jump resolution.
#[derive(Clone, Copy, Debug)]
enum Op {
    Insn(sock_filter),
    Jump {
        code: u32,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Label(Label),
}

/// Offset of the low 32 bits of argument `i` (x86_64 is little-endian).
fn arg_low(i: u32) -> u32 {
    OFFSET_ARGS + 8 * i
}

fn load(offset: u32) -> Op {
    insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn and(k: u32) -> Op {
    insn(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, k)
}

fn ret(k: u32) -> Op {
    insn(libc::BPF_RET | libc::BPF_K, k)
}

fn jeq(k: u32, jt: Target, jf: Target) -> Op {
    Op::Jump {
        code: libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        k,
        jt,
        jf,
    }
}

/// Jumps to `jt` when `A >= k` (unsigned).
fn jge(k: u32, jt: Target, jf: Target) -> Op {
    Op::Jump {
        code: libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
        k,
        jt,
        jf,
    }
}

/// Jumps to `jt` when `A & k != 0`.
fn jset(k: u32, jt: Target, jf: Target) -> Op {
    Op::Jump {
        code: libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
        k,
        jt,
        jf,
    }
}

fn label(l: Label) -> Op {
    Op::Label(l)
}

fn insn(code: u32, k: u32) -> Op {
    // BPF opcodes are 16 bits; libc declares the pieces as u32.
    Op::Insn(sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    })
}

/// Resolves labels into forward jump offsets.
fn assemble(ops: &[Op]) -> Result<Vec<sock_filter>, BarrierError> {
    // First pass: the instruction index each label stands for.
    let mut labels: Vec<(Label, usize)> = Vec::new();
    let mut index = 0;
    for op in ops {
        match op {
            Op::Label(l) => {
                if labels.iter().any(|(seen, _)| seen == l) {
                    return Err(BarrierError::Assemble {
                        reason: "label defined twice",
                    });
                }
                labels.push((*l, index));
            }
            Op::Insn(_) | Op::Jump { .. } => index += 1,
        }
    }
    // Second pass: emit, turning each target into "instructions to skip".
    let mut out = Vec::with_capacity(index);
    for op in ops {
        match *op {
            Op::Label(_) => {}
            Op::Insn(i) => out.push(i),
            Op::Jump { code, k, jt, jf } => {
                let here = out.len();
                let offset = |t: Target| -> Result<u8, BarrierError> {
                    let to = match t {
                        Target::Next => return Ok(0),
                        Target::To(l) => labels
                            .iter()
                            .find(|(seen, _)| *seen == l)
                            .map(|(_, at)| *at)
                            .ok_or(BarrierError::Assemble {
                                reason: "undefined label",
                            })?,
                    };
                    let skip = to.checked_sub(here + 1).ok_or(BarrierError::Assemble {
                        reason: "backward jump",
                    })?;
                    u8::try_from(skip).map_err(|_| BarrierError::Assemble {
                        reason: "jump too far",
                    })
                };
                out.push(sock_filter {
                    code: code as u16,
                    jt: offset(jt)?,
                    jf: offset(jf)?,
                    k,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
