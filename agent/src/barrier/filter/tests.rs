//! Runs the barrier's filter in a small classic-BPF interpreter, so that every branch
//! (including x32 and foreign ABIs, which this machine can't execute) is checked
//! against the decision table. The real kernel runs it in `barrier::tests`.

use std::ops::Range;

use super::*;

/// Interprets the subset of classic BPF that [`program`] uses, over a `seccomp_data`.
fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&nr.to_le_bytes());
    data.extend_from_slice(&arch.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes()); // instruction_pointer
    for a in args {
        data.extend_from_slice(&a.to_le_bytes());
    }
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        let code = u32::from(i.code);
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let at = i.k as usize;
                a = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                pc += 1;
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => {
                a &= i.k;
                pc += 1;
            }
            c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                pc += 1 + usize::from(if a == i.k { i.jt } else { i.jf });
            }
            c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                pc += 1 + usize::from(if a >= i.k { i.jt } else { i.jf });
            }
            c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => {
                pc += 1 + usize::from(if a & i.k != 0 { i.jt } else { i.jf });
            }
            c if c == libc::BPF_RET | libc::BPF_K => return i.k,
            other => panic!("unexpected opcode {other:#x} at {pc}"),
        }
    }
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// The range of a process whose hard descriptor limit is 2^20.
const RESERVED_FDS: Range<u32> = 65_472..65_536;

fn x86(nr: libc::c_long, args: [u64; 6]) -> u32 {
    let prog = program(&RESERVED_FDS).expect("assembles");
    run(&prog, AUDIT_ARCH_X86_64, nr as u32, args)
}

fn x32(nr: u32, args: [u64; 6]) -> u32 {
    let prog = program(&RESERVED_FDS).expect("assembles");
    run(&prog, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, args)
}

#[test]
fn always_durable_calls_notify() {
    for nr in [
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_syncfs,
        libc::SYS_sync,
    ] {
        assert_eq!(x86(nr, [3, 0, 0, 0, 0, 0]), NOTIFY, "syscall {nr}");
    }
}

#[test]
fn flagged_calls_notify_only_with_their_flag() {
    let wait_after = u64::from(libc::SYNC_FILE_RANGE_WAIT_AFTER);
    let write = u64::from(libc::SYNC_FILE_RANGE_WRITE);
    assert_eq!(
        x86(
            libc::SYS_sync_file_range,
            [3, 0, 0, write | wait_after, 0, 0]
        ),
        NOTIFY
    );
    assert_eq!(
        x86(libc::SYS_sync_file_range, [3, 0, 0, write, 0, 0]),
        ALLOW
    );
    let ms_sync = libc::MS_SYNC as u64;
    let ms_async = libc::MS_ASYNC as u64;
    assert_eq!(
        x86(libc::SYS_msync, [0x7000, 4096, ms_sync, 0, 0, 0]),
        NOTIFY
    );
    assert_eq!(
        x86(libc::SYS_msync, [0x7000, 4096, ms_async, 0, 0, 0]),
        ALLOW
    );
    // The offset arguments hold the flag values here to prove only args[5] counts.
    let dsync = libc::RWF_DSYNC as u64;
    let sync = libc::RWF_SYNC as u64;
    assert_eq!(x86(libc::SYS_pwritev2, [3, 0, 1, 0, 0, dsync]), NOTIFY);
    assert_eq!(x86(libc::SYS_pwritev2, [3, 0, 1, 0, 0, sync]), NOTIFY);
    assert_eq!(x86(libc::SYS_pwritev2, [3, 0, 1, dsync, sync, 0]), ALLOW);
    // Without a flag, only a descriptor in the reserved range is held.
    let reserved = u64::from(RESERVED_FDS.start);
    assert_eq!(x86(libc::SYS_pwritev2, [reserved, 0, 1, 0, 0, 0]), NOTIFY);
    assert_eq!(
        x86(libc::SYS_pwritev2, [3, 0, 1, 0, 0, libc::RWF_HIPRI as u64]),
        ALLOW
    );
}

#[test]
fn io_uring_setup_is_refused_and_others_pass() {
    assert_eq!(x86(libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]), ENOSYS);
    for nr in [
        libc::SYS_write,
        libc::SYS_pwritev,
        libc::SYS_read,
        libc::SYS_openat,
        libc::SYS_open,
        libc::SYS_dup,
        511,
    ] {
        assert_eq!(x86(nr, [3, 0, 0, 0, 0, 0]), ALLOW, "syscall {nr}");
    }
}

#[test]
fn synchronous_opens_notify_whatever_else_they_ask() {
    let dsync = libc::O_DSYNC as u64;
    let sync = libc::O_SYNC as u64;
    let plain = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64;
    for flags in [dsync, sync, plain | dsync, plain | sync] {
        assert_eq!(x86(libc::SYS_open, [0x1000, flags, 0o644, 0, 0, 0]), NOTIFY);
        assert_eq!(
            x86(libc::SYS_openat, [3, 0x1000, flags, 0o644, 0, 0]),
            NOTIFY
        );
    }
    // The flag is looked for in the flags argument only.
    assert_eq!(x86(libc::SYS_open, [dsync, plain, dsync, 0, 0, 0]), ALLOW);
    assert_eq!(
        x86(libc::SYS_openat, [dsync, dsync, plain, dsync, 0, 0]),
        ALLOW
    );
    // openat2's flags are in memory: every call goes to the agent.
    assert_eq!(
        x86(libc::SYS_openat2, [3, 0x1000, 0x2000, 24, 0, 0]),
        NOTIFY
    );
}

#[test]
fn only_descriptors_in_the_reserved_range_are_held() {
    let (start, end) = (RESERVED_FDS.start, RESERVED_FDS.end);
    for nr in [
        libc::SYS_write,
        libc::SYS_pwrite64,
        libc::SYS_writev,
        libc::SYS_pwritev,
        libc::SYS_pwritev2,
        libc::SYS_dup,
        libc::SYS_fcntl,
    ] {
        for (fd, want) in [
            (0, ALLOW),
            (3, ALLOW),
            (start - 1, ALLOW),
            (start, NOTIFY),
            (end - 1, NOTIFY),
            (end, ALLOW),
            // -1 as a C int: far above the range once compared unsigned.
            (u32::MAX, ALLOW),
        ] {
            assert_eq!(
                x86(nr, [u64::from(fd), 0, 1, 0, 0, 0]),
                want,
                "syscall {nr} fd {fd}"
            );
        }
        // Only the low 32 bits are the fd.
        let high = (1u64 << 32) | u64::from(start);
        assert_eq!(x86(nr, [high, 0, 1, 0, 0, 0]), NOTIFY, "syscall {nr}");
    }
    // read, fsync's look-alikes and dup2 of a reserved fd are none of the barrier's business.
    for nr in [
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_dup2,
        libc::SYS_close,
    ] {
        assert_eq!(
            x86(nr, [u64::from(start), 0, 0, 0, 0, 0]),
            ALLOW,
            "syscall {nr}"
        );
    }
}

#[test]
fn the_range_sits_under_the_hard_limit_and_65536() {
    assert_eq!(reserved_fds(1 << 20), RESERVED_FDS);
    assert_eq!(reserved_fds(20_000), 19_936..20_000);
    assert_eq!(reserved_fds(1088), 1024..1088);
    assert!(reserved_fds(1087).is_empty());
    assert!(reserved_fds(0).is_empty());
    assert_eq!(reserved_fds(u64::MAX), RESERVED_FDS);
}

#[test]
fn without_a_range_nothing_more_is_held() {
    let prog = program(&(0..0)).expect("assembles");
    let run = |nr: libc::c_long, args| run(&prog, AUDIT_ARCH_X86_64, nr as u32, args);
    let dsync = libc::O_DSYNC as u64;
    assert_eq!(run(libc::SYS_open, [0x1000, dsync, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(libc::SYS_openat, [3, 0x1000, dsync, 0, 0, 0]), ALLOW);
    assert_eq!(run(libc::SYS_openat2, [3, 0x1000, 0x2000, 24, 0, 0]), ALLOW);
    for fd in [0, 3, 65_500, u64::from(u32::MAX)] {
        assert_eq!(run(libc::SYS_write, [fd, 0, 1, 0, 0, 0]), ALLOW);
    }
    // The durability calls are held all the same.
    assert_eq!(run(libc::SYS_fsync, [3, 0, 0, 0, 0, 0]), NOTIFY);
    let rwf = libc::RWF_DSYNC as u64;
    assert_eq!(run(libc::SYS_pwritev2, [3, 0, 1, 0, 0, rwf]), NOTIFY);
}

#[test]
fn x32_calls_are_held_like_x86_64_ones() {
    assert_eq!(x32(libc::SYS_fsync as u32, [3, 0, 0, 0, 0, 0]), NOTIFY);
    assert_eq!(
        x32(
            libc::SYS_msync as u32,
            [0, 0, libc::MS_SYNC as u64, 0, 0, 0]
        ),
        NOTIFY
    );
    assert_eq!(
        x32(
            libc::SYS_msync as u32,
            [0, 0, libc::MS_ASYNC as u64, 0, 0, 0]
        ),
        ALLOW
    );
    assert_eq!(
        x32(libc::SYS_io_uring_setup as u32, [8, 0, 0, 0, 0, 0]),
        ENOSYS
    );
    assert_eq!(x32(libc::SYS_write as u32, [3, 0, 0, 0, 0, 0]), ALLOW);
    let dsync = libc::RWF_DSYNC as u64;
    assert_eq!(x32(X32_PWRITEV2, [3, 0, 1, 0, dsync, 0]), NOTIFY);
    assert_eq!(x32(X32_PWRITEV2, [3, 0, 1, 0, 0, dsync]), ALLOW);
}

#[test]
fn foreign_abis_are_killed() {
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    let prog = program(&RESERVED_FDS).expect("assembles");
    // i386 fsync is 118; whatever the number, the answer is the same.
    for nr in [118, libc::SYS_write as u32] {
        assert_eq!(
            run(&prog, AUDIT_ARCH_I386, nr, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}

#[test]
fn assembler_rejects_bad_programs() {
    let backward = [
        label(Label::Allow),
        jeq(1, Target::To(Label::Allow), Target::Next),
    ];
    assert!(matches!(
        assemble(&backward),
        Err(BarrierError::Assemble {
            reason: "backward jump"
        })
    ));
    let undefined = [jeq(1, Target::To(Label::Kill), Target::Next), ret(0)];
    assert!(matches!(
        assemble(&undefined),
        Err(BarrierError::Assemble {
            reason: "undefined label"
        })
    ));
    let mut far = vec![jeq(1, Target::To(Label::Allow), Target::Next)];
    far.extend(std::iter::repeat_n(ret(0), 300));
    far.push(label(Label::Allow));
    far.push(ret(0));
    assert!(matches!(
        assemble(&far),
        Err(BarrierError::Assemble {
            reason: "jump too far"
        })
    ));
}
