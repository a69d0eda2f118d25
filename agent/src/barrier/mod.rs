//! The synchronous durability barrier: an application's fsync-like system calls wait
//! until the peer holds everything they cover (RPO = 0), then run.
//!
//! # How it works
//! A process started under the barrier installs a seccomp filter ([`filter`]) that
//! turns each durability call (fsync, fdatasync, sync_file_range with `WAIT_AFTER`,
//! msync with `MS_SYNC`, syncfs, sync, pwritev2 with `RWF_SYNC`/`RWF_DSYNC`) into a
//! seccomp user notification. The filter is inherited across fork and exec, so the
//! whole process tree of the application is covered. The notification listener fd
//! is handed to the agent over its unix control socket ([`attach`]); the agent's
//! [`Listener`] thread receives each notification, names the file it concerns
//! ([`Durability`]), and passes it as a [`BarrierRequest`] to the replication actor.
//! When that actor releases the request, the kernel lets the original system call
//! run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), so the application sees the real
//! result of its fsync, after the peer has the data.
//!
//! ```text
//!  application (filtered)        kernel               agent
//!  fsync(fd) ----blocks----> USER_NOTIF ---poll---> Listener thread
//!                                                     | BarrierRequest (mpsc)
//!                                                     v
//!                                                 replication actor: waits for peer ack
//!                                                     | Releaser::release (or drop)
//!  fsync runs, returns  <--- NOTIF_SEND CONTINUE <----+
//! ```
//!
//! # Starting a process under the barrier
//! A filter can only be installed by the process itself, and only before it runs
//! the application, so the agent can't attach to processes that already run.
//! [`exec_under_barrier`] (for `tandem exec --barrier-socket PATH -- CMD`) connects
//! to the agent's control socket, installs the filter, sends the listener fd, waits
//! for the agent's acknowledgement and then execs the command.
//!
//! The agent starts its own application command the same way, as
//! `/proc/self/exe exec --barrier-socket PATH -- sh -c CMD` ([`barrier_command`]),
//! instead of installing the filter in a `pre_exec` hook: between fork and exec only
//! async-signal-safe code may run, while the hand-off needs a socket conversation,
//! JSON and allocation.
//!
//! # Containers
//! runc (≥ 1.1) installs a profile's `SCMP_ACT_NOTIFY` rules itself and hands the
//! notification fd to the unix socket named by the profile's `listenerPath`;
//! [`runc::serve_runc`] receives it and registers it like a launcher's. The rules
//! come from [`profile`]: [`profile::docker_profile`] for `docker run --security-opt
//! seccomp=FILE` on Docker ≥ 23.0, and, because Docker 20.10 drops `listenerPath`,
//! the OCI runtime wrapper [`oci`] (a Docker runtime that merges the rules and the
//! socket path into each container's resolved profile, keeping Docker's default
//! one). Both are exercised against a real Docker in `tests/tests/docker`. A
//! container whose socket has no listener fails to start; one whose agent went away
//! gets `ENOSYS` from its durability calls, as above, until it is restarted.
//!
//! # Cost
//! Measured by `tests::fsync_latency_through_the_barrier` (release build, this 2-core
//! VM with other builds running): an immediately released fsync on tmpfs takes a
//! median of 11–33 µs (p99 20–55 µs) instead of 0.2 µs. The raw kernel round trip
//! (kexp/t7's C loop, run alternately with it) took 12.5–13.8 µs at the same time;
//! the rest is the hand-off to the consumer thread and the `/proc` lookup.
//!
//! # Failure behaviour (measured, see the tests)
//! - No release within `release_after` (the agent sets it 1 s beyond the primary's
//!   own limit): the call is released anyway and `released_on_timeout` counts it;
//!   the primary task reads that count ([`Registrar::stats`]), adds it to
//!   `released_unprotected` and gives the peer up, since it lacks what the call
//!   covered.
//! - The consumer drops a request (or its channel) without releasing: dropping
//!   releases, so an application is never stuck because a consumer crashed.
//! - The agent's listener closes (agent exit or crash, [`Listener::shutdown`]):
//!   pending calls are released first on a clean shutdown; after the listener fd is
//!   closed the kernel fails every further trapped call with `ENOSYS`, which most
//!   databases treat as a fatal fsync error. A supervisor must therefore keep the
//!   agent alive for as long as the application runs.
//!
//! # Synchronous writes
//! A write through an `O_SYNC`/`O_DSYNC` descriptor or with `RWF_SYNC`/`RWF_DSYNC`
//! is durable when it *returns*, and seccomp can only stop a call before it runs.
//! So the agent performs such writes itself, on the caller's own open file, and
//! holds the result ([`proxy`]); the filter finds the descriptors because the
//! agent opens synchronous files for the application into a reserved range of
//! numbers ([`filter::RESERVED_FDS`]). The launcher raises the soft descriptor
//! limit to cover that range when the hard limit allows.
//!
//! # Not covered
//! io_uring fsync opcodes (io_uring is refused, see [`filter`]); the copies of a
//! synchronous descriptor listed in [`proxy`]; write(2) on a synchronous file in a
//! container (runc refuses to trap write, see [`profile`]); synchronous writes of
//! x32 programs, which are held before they run. Processes running another ABI than
//! x86_64 (i386) are killed by the filter.

pub mod attach;
pub mod call;
pub mod filter;
pub mod launcher;
pub mod listener;
mod notify;
pub mod oci;
pub mod profile;
mod proxy;
pub mod runc;

use std::{ffi::OsString, io, path::PathBuf};

pub use attach::{handle_connection, read_request_line, serve_attach};
pub use call::{Durability, FileId, Scope, SyncCall};
pub use launcher::{barrier_command, exec_under_barrier, install_and_send};
pub use listener::{BarrierRequest, BarrierStats, Listener, ListenerConfig, Registrar, Releaser};

/// Everything that can go wrong while installing, attaching or serving the barrier.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    /// The seccomp program could not be assembled (a bug in [`filter`]).
    #[error("cannot assemble the seccomp filter: {reason}")]
    Assemble { reason: &'static str },
    /// A socket operation on the control connection failed.
    #[error("control socket i/o failed while {step}")]
    ControlIo {
        step: &'static str,
        #[source]
        error: io::Error,
    },
    /// The agent's control socket could not be reached.
    #[error("cannot connect to the agent's control socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    /// No command was given to run under the barrier.
    #[error("no command to run under the barrier")]
    EmptyCommand,
    /// `execvp` of the application failed.
    #[error("cannot execute {program:?}")]
    Exec {
        program: OsString,
        #[source]
        error: io::Error,
    },
    /// The seccomp filter could not be installed.
    #[error("cannot install the seccomp filter")]
    Install(#[source] io::Error),
    /// The kernel's notification structures are smaller than the ones we read.
    #[error("kernel seccomp notification size {kernel} is smaller than ours ({ours})")]
    KernelNotifSize { kernel: usize, ours: usize },
    /// A hello message came without a listener fd.
    #[error("the barrier hello message carried no listener fd")]
    MissingFd,
    /// `PR_SET_NO_NEW_PRIVS` failed; seccomp refuses unprivileged filters without it.
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] io::Error),
    /// The kernel refused to report its notification sizes.
    #[error("cannot query the seccomp notification sizes")]
    NotifSizes(#[source] io::Error),
    /// A control-socket message did not follow the protocol.
    #[error("malformed barrier message: {what}")]
    Protocol { what: &'static str },
    /// The agent answered the attach request with a refusal.
    #[error("the agent refused to attach the barrier: {reason}")]
    Refused { reason: String },
    /// The listener thread could not be started.
    #[error("cannot start the barrier listener thread")]
    Spawn(#[source] io::Error),
    /// The listener has shut down and accepts no more processes.
    #[error("the barrier listener has stopped")]
    Stopped,
}

#[cfg(test)]
mod tests;
