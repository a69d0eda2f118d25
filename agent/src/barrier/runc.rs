//! The seccomp agent socket for OCI runtimes: runc hands each container's seccomp
//! notification fd to the barrier here.
//!
//! When a container's seccomp profile uses `SCMP_ACT_NOTIFY` and sets `listenerPath`,
//! runc (≥ 1.1) installs the filter in the container's init (and in every `runc exec`
//! process), then connects to the unix socket at `listenerPath` and sends exactly one
//! message: the JSON `ContainerProcessState` of the OCI runtime spec
//! (`{"ociVersion", "fds": ["seccompFd"], "pid", "metadata", "state": {...}}`) with the
//! notification fd attached as `SCM_RIGHTS`, at the index of `"seccompFd"` in `fds`.
//! It then closes the connection without waiting for an answer. `pid` is the
//! process's pid as the runtime sees it, i.e. in the host's pid namespace, which is
//! the namespace the agent runs in.
//!
//! [`serve_runc`] accepts these connections on one thread and registers each fd with
//! the barrier's [`Registrar`], so the existing [`Listener`](super::Listener) holds
//! the container's durability calls exactly like those of a `tandem exec` process.
//!
//! If nothing listens on the socket, runc fails the container start with "failed
//! to connect with seccomp agent"; if the listener fd is closed later (agent gone),
//! every trapped call fails with `ENOSYS` (measured in the Docker tests).
//!
//! Only root may connect: the socket is created `0600` and each peer's uid is
//! checked, since a notification fd lets its holder stall the processes behind it.

use std::{
    fs,
    io::{self, IoSliceMut},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{
            fs::{FileTypeExt, PermissionsExt},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::socket::{ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sockopt::PeerCredentials},
};
use serde::Deserialize;

use super::{BarrierError, listener::Registrar};

/// The name runc gives the notification fd in `fds` (`specs.SeccompFdName`).
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// Largest message accepted. Real ones are a few hundred bytes plus the container's
/// annotations; anything this large is not runc.
const MAX_MESSAGE: usize = 256 * 1024;
/// Most fds we make room for per `recvmsg`; runc sends one. Extra ones are closed.
const MAX_FDS: usize = 8;
/// How long one client may take to send its message; runc sends it in one call.
/// Connections are served one at a time, so this also bounds how long a stuck
/// client delays the next container.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How many recent attachments [`RuncServer::recent`] remembers.
const RECENT: usize = 64;

/// One process whose seccomp fd runc handed over.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct RuncAttach {
    /// The process the filter was installed in (host pid namespace): the container's
    /// init, or a `runc exec` process.
    pub pid: u32,
    /// The container id (Docker's full container id).
    pub container_id: String,
    /// The container's bundle directory.
    pub bundle: String,
    /// The profile's `listenerMetadata`, if any.
    pub metadata: String,
}

/// The accepting thread; [`RuncServer::stop`] (or dropping it) ends it and removes
/// the socket file.
#[derive(Debug)]
pub struct RuncServer {
    path: PathBuf,
    waker: Option<UnixStream>,
    thread: Option<thread::JoinHandle<()>>,
    recent: Arc<Mutex<Vec<RuncAttach>>>,
}

/// The parts of runc's message the barrier needs; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct ProcessState {
    fds: Vec<String>,
    pid: i64,
    #[serde(default)]
    metadata: String,
    state: ContainerState,
}

#[derive(Debug, Deserialize)]
struct ContainerState {
    #[serde(default)]
    id: String,
    #[serde(default)]
    bundle: String,
}

/// Listens on `path` for runc's seccomp agent connections and registers every
/// notification fd received with `registrar`. A stale socket file at `path` is
/// replaced; any other kind of file there is an error.
pub fn serve_runc(path: &Path, registrar: Registrar) -> Result<RuncServer, BarrierError> {
    let io_err =
        |step: &'static str| move |error: io::Error| BarrierError::ControlIo { step, error };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            fs::remove_file(path).map_err(io_err("removing a stale runc socket"))?
        }
        Ok(_) => {
            return Err(BarrierError::ControlIo {
                step: "creating the runc socket",
                error: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "path exists and is not a socket",
                ),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspecting the runc socket path")(e)),
    }
    // connect(2) needs write permission on the socket file, which the usual umask
    // already withholds from others; 0600 makes that explicit.
    let listener = UnixListener::bind(path).map_err(io_err("binding the runc socket"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_err("restricting the runc socket"))?;
    let (waker, wake_rx) = UnixStream::pair().map_err(io_err("creating the runc waker"))?;
    let recent = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&recent);
    let thread = thread::Builder::new()
        .name("barrier-runc".to_owned())
        .spawn(move || accept_loop(&listener, &wake_rx, &registrar, &shared))
        .map_err(BarrierError::Spawn)?;
    Ok(RuncServer {
        path: path.to_owned(),
        waker: Some(waker),
        thread: Some(thread),
        recent,
    })
}

impl RuncServer {
    /// The socket path to put in a profile's `listenerPath`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The most recent attachments, oldest first.
    pub fn recent(&self) -> Vec<RuncAttach> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting and removes the socket file. Fds already registered stay
    /// with the barrier listener.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing the waker makes the thread's poll return.
        drop(self.waker.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("runc seccomp agent thread panicked");
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for RuncServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: &UnixListener,
    wake_rx: &UnixStream,
    registrar: &Registrar,
    recent: &Mutex<Vec<RuncAttach>>,
) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "runc seccomp agent cannot poll; stopping");
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "runc seccomp agent accept failed");
                continue;
            }
        };
        match handle_runc_connection(&stream, registrar) {
            Ok(attach) => {
                tracing::info!(pid = attach.pid, container = %attach.container_id, "container attached to the barrier");
                let mut recent = recent.lock().unwrap_or_else(PoisonError::into_inner);
                if recent.len() == RECENT {
                    recent.remove(0);
                }
                recent.push(attach);
            }
            Err(e) => tracing::warn!(error = %e, "runc seccomp agent connection refused"),
        }
    }
}

/// Serves one runc connection: checks the peer, reads its message and registers
/// the notification fd.
pub fn handle_runc_connection(
    stream: &UnixStream,
    registrar: &Registrar,
) -> Result<RuncAttach, BarrierError> {
    let creds = getsockopt(stream, PeerCredentials).map_err(|e| BarrierError::ControlIo {
        step: "reading the runc peer's credentials",
        error: e.into(),
    })?;
    // SAFETY: geteuid has no preconditions and can't fail.
    let me = unsafe { libc::geteuid() };
    if creds.uid() != me {
        return Err(BarrierError::Protocol {
            what: "runc peer runs as another user",
        });
    }
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|error| BarrierError::ControlIo {
            step: "setting the runc read timeout",
            error,
        })?;
    let (bytes, fds) = read_message(stream)?;
    let (attach, fd) = parse_message(&bytes, fds)?;
    let reserved = super::profile::reserved_from_metadata(&attach.metadata);
    registrar.add_reserving(fd, attach.pid, reserved)?;
    Ok(attach)
}

/// Reads until the peer closes, keeping every fd that arrives (closing them on error).
fn read_message(stream: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), BarrierError> {
    let mut bytes = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        if Instant::now() > deadline {
            return Err(BarrierError::Protocol {
                what: "runc message took too long",
            });
        }
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        // MSG_CMSG_CLOEXEC: a child the agent spawns must not inherit a notification fd.
        let msg = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(BarrierError::ControlIo {
                    step: "receiving runc's message",
                    error: e.into(),
                });
            }
        };
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: SCM_RIGHTS fds were just installed in our table by recvmsg
                    // and nothing else owns them.
                    fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                }
            }
        }
        let got = msg.bytes;
        if got == 0 {
            return Ok((bytes, fds));
        }
        if bytes.len() + got > MAX_MESSAGE {
            return Err(BarrierError::Protocol {
                what: "runc message too large",
            });
        }
        bytes.extend_from_slice(&buf[..got]);
    }
}

/// Decodes runc's `ContainerProcessState` and picks the notification fd out of the
/// received ones; the others are closed when dropped.
fn parse_message(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(RuncAttach, OwnedFd), BarrierError> {
    let state: ProcessState =
        serde_json::from_slice(bytes).map_err(|_| BarrierError::Protocol {
            what: "runc message is not a ContainerProcessState",
        })?;
    if fds.is_empty() {
        return Err(BarrierError::MissingFd);
    }
    if state.fds.len() != fds.len() {
        return Err(BarrierError::Protocol {
            what: "runc message names another number of fds than it carries",
        });
    }
    let index = state
        .fds
        .iter()
        .position(|name| name == SECCOMP_FD_NAME)
        .ok_or(BarrierError::Protocol {
            what: "runc message carries no seccompFd",
        })?;
    let pid = u32::try_from(state.pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(BarrierError::Protocol {
            what: "runc message has an invalid pid",
        })?;
    let fd = fds.into_iter().nth(index).ok_or(BarrierError::MissingFd)?;
    Ok((
        RuncAttach {
            pid,
            container_id: state.state.id,
            bundle: state.state.bundle,
            metadata: state.metadata,
        },
        fd,
    ))
}

#[cfg(test)]
mod tests;
