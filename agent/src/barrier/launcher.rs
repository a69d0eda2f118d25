//! The launcher side of the barrier: installs the seccomp filter in the current
//! process, hands the listener to the agent and execs the application.

use std::{
    convert::Infallible,
    ffi::OsString,
    io,
    ops::Range,
    os::{
        fd::{AsFd, FromRawFd, OwnedFd},
        unix::{net::UnixStream, process::CommandExt},
    },
    path::Path,
    process::Command,
};

use super::{BarrierError, attach, filter};

/// The `tandem exec` flag naming the agent's control socket (see [`barrier_command`]).
pub const BARRIER_SOCKET_FLAG: &str = "--barrier-socket";

/// Installs the barrier's filter in the current process (all its threads) and sends
/// the listener fd, with a hello naming our pid, over `listener_sink`. From now on
/// every durability call of this process and its descendants waits for whoever
/// holds the listener.
pub fn install_and_send(listener_sink: &UnixStream) -> Result<(), BarrierError> {
    let reserved = reserve_fds();
    let listener = install(&reserved)?;
    attach::send_listener(
        listener_sink,
        listener.as_fd(),
        std::process::id(),
        &reserved,
    )?;
    // Our copy must go: if the launcher kept it, the listener would never report
    // that all filtered processes exited, and calls would block on a reader that
    // never reads.
    drop(listener);
    Ok(())
}

/// Runs `argv` under the barrier of the agent listening on `control_socket`: attach,
/// wait for the agent's acknowledgement, then `execvp`. Returns only on failure.
pub fn exec_under_barrier(
    control_socket: &Path,
    argv: &[OsString],
) -> Result<Infallible, BarrierError> {
    let (program, args) = argv.split_first().ok_or(BarrierError::EmptyCommand)?;
    let stream = UnixStream::connect(control_socket).map_err(|error| BarrierError::Connect {
        path: control_socket.to_owned(),
        error,
    })?;
    attach::write_request(&stream)?;
    install_and_send(&stream)?;
    // Until the agent has registered the listener nobody would answer a held call,
    // so the application must not start before this reply.
    attach::read_reply(&stream)?;
    drop(stream);
    let error = Command::new(program).args(args).exec();
    Err(BarrierError::Exec {
        program: program.clone(),
        error,
    })
}

/// The command the agent uses to start its own application under the barrier:
/// `<tandem_exe> exec --barrier-socket <control_socket> -- sh -c <shell_command>`.
/// It goes through a fresh `tandem` process rather than a `pre_exec` hook because
/// the attach conversation is not async-signal-safe (see the module doc).
pub fn barrier_command(tandem_exe: &Path, control_socket: &Path, shell_command: &str) -> Command {
    let mut cmd = Command::new(tandem_exe);
    cmd.arg("exec")
        .arg(BARRIER_SOCKET_FLAG)
        .arg(control_socket)
        .arg("--")
        .args(["/bin/sh", "-c", shell_command]);
    cmd
}

/// Chooses the descriptor numbers reserved for synchronous files
/// ([`filter::reserved_fds`], under our hard `RLIMIT_NOFILE`) and raises the soft
/// limit to cover them. That only lifts a ceiling: the process still gets the
/// lowest free numbers, as before. If the limit can't be raised, nothing is
/// reserved, and synchronous writes are not held.
fn reserve_fds() -> Range<u32> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0..0;
    };
    let reserved = filter::reserved_fds(hard);
    if reserved.is_empty() {
        tracing::warn!(
            hard_limit = hard,
            "the open-file limit leaves no descriptors to reserve; writes through O_SYNC/O_DSYNC files will not wait for the peer"
        );
        return reserved;
    }
    let want = u64::from(reserved.end);
    if soft < want
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard)
    {
        tracing::warn!(error = %e, "cannot raise the open-file limit; synchronous writes will not wait for the peer");
        return 0..0;
    }
    reserved
}

/// Sets no_new_privs and installs the filter with a new listener.
fn install(reserved: &Range<u32>) -> Result<OwnedFd, BarrierError> {
    let mut program = filter::program(reserved)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| BarrierError::NoNewPrivs(e.into()))?;
    let len = u16::try_from(program.len()).map_err(|_| BarrierError::Assemble {
        reason: "program too long",
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    // TSYNC applies the filter to every thread of the process, not only the caller
    // (TSYNC_ESRCH makes it combinable with NEW_LISTENER). WAIT_KILLABLE_RECV keeps a
    // held call from being restarted by every harmless signal once the agent has
    // received it; kernels before 5.19 lack it, so we retry without.
    let base = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        | libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for flags in [base | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, base] {
        // SAFETY: fprog points to `program`, which outlives the call; the kernel copies
        // the instructions and returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &raw const fprog,
            )
        };
        if fd >= 0 {
            let fd = i32::try_from(fd)
                .map_err(|_| BarrierError::Install(io::Error::from_raw_os_error(libc::EBADF)))?;
            // SAFETY: the kernel just returned this new fd, which nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        last = io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    Err(BarrierError::Install(last))
}
