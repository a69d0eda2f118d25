//! The attach conversation on the agent's unix control socket, both ends.
//!
//! ```text
//!  launcher                                  agent
//!  {"op":"barrier-attach"}\n         ---->   read_request_line (byte by byte)
//!  install the filter
//!  {"pid":N}\n + SCM_RIGHTS(listener) ---->  serve_attach: Registrar::add
//!                                    <----   {"ok":true}\n  (or {"ok":false,"error":".."})
//!  exec the application
//! ```
//!
//! The agent reads the request line one byte at a time: a buffered reader could
//! swallow the start of the hello message, and the listener fd riding on it would
//! then be silently closed by the kernel. The agent should set a read timeout on the
//! accepted stream before calling in here: a peer that stops mid-line would
//! otherwise hold the calling thread.

use std::{
    io::{self, IoSlice, IoSliceMut, Read, Write},
    ops::Range,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use super::{BarrierError, listener::Registrar};

/// The `op` of the request line that starts an attach.
pub const ATTACH_OP: &str = "barrier-attach";

/// Longest control line we accept; real ones are a few dozen bytes.
const MAX_LINE: usize = 4096;
/// Most fds we make room for in one hello; exactly one is valid.
const MAX_FDS: usize = 4;

#[derive(Debug, Deserialize, Serialize)]
struct Request {
    op: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct Hello {
    pid: u32,
    /// The descriptor numbers the process reserved for synchronous files
    /// (`[start, end)`); absent from older launchers: none.
    #[serde(default)]
    fds: [u32; 2],
}

#[derive(Debug, Deserialize, Serialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Agent side: reads one request line and, if it is an attach request, serves it.
/// Returns the attached process's pid.
pub fn handle_connection(stream: &UnixStream, registrar: &Registrar) -> Result<u32, BarrierError> {
    let line = read_request_line(stream)?;
    let request: Request = serde_json::from_str(&line).map_err(|_| BarrierError::Protocol {
        what: "request line is not JSON",
    })?;
    if request.op != ATTACH_OP {
        let _ = write_reply(stream, Err("unknown op"));
        return Err(BarrierError::Protocol { what: "unknown op" });
    }
    serve_attach(stream, registrar)
}

/// Agent side, after the `barrier-attach` request line was read: receives the hello
/// and listener fd, registers it, and answers. Returns the attached pid.
pub fn serve_attach(stream: &UnixStream, registrar: &Registrar) -> Result<u32, BarrierError> {
    let (fd, pid, reserved) = match receive_listener(stream) {
        Ok(got) => got,
        Err(e) => {
            let _ = write_reply(stream, Err("bad hello"));
            return Err(e);
        }
    };
    match registrar.add_reserving(fd, pid, reserved) {
        Ok(()) => write_reply(stream, Ok(()))?,
        Err(e) => {
            let _ = write_reply(stream, Err("listener stopped"));
            return Err(e);
        }
    }
    Ok(pid)
}

/// Reads one `\n`-terminated line without reading past it (see the module doc).
pub fn read_request_line(stream: &UnixStream) -> Result<String, BarrierError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match (&*stream).read(&mut byte) {
            Ok(0) => {
                return Err(BarrierError::Protocol {
                    what: "connection closed mid-line",
                });
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(BarrierError::ControlIo {
                    step: "reading a line",
                    error,
                });
            }
        }
        if line.len() > MAX_LINE {
            return Err(BarrierError::Protocol {
                what: "line too long",
            });
        }
    }
    String::from_utf8(line).map_err(|_| BarrierError::Protocol {
        what: "line is not UTF-8",
    })
}

/// Launcher side: the request line.
pub(crate) fn write_request(mut stream: &UnixStream) -> Result<(), BarrierError> {
    let line = json_line(&Request {
        op: ATTACH_OP.to_owned(),
    });
    stream
        .write_all(line.as_bytes())
        .map_err(|error| BarrierError::ControlIo {
            step: "sending the request",
            error,
        })
}

/// Launcher side: the hello message carrying the listener fd.
pub(crate) fn send_listener(
    stream: &UnixStream,
    listener: BorrowedFd<'_>,
    pid: u32,
    reserved: &Range<u32>,
) -> Result<(), BarrierError> {
    let hello = json_line(&Hello {
        pid,
        fds: [reserved.start, reserved.end],
    });
    let fds = [listener.as_raw_fd()];
    let iov = [IoSlice::new(hello.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| BarrierError::ControlIo {
        step: "sending the listener fd",
        error: e.into(),
    })?;
    // The fd travels with the first byte; the rest of a short send is plain data.
    if sent < hello.len() {
        (&*stream)
            .write_all(&hello.as_bytes()[sent..])
            .map_err(|error| BarrierError::ControlIo {
                step: "sending the hello",
                error,
            })?;
    }
    Ok(())
}

/// Launcher side: waits for the agent's answer.
pub(crate) fn read_reply(stream: &UnixStream) -> Result<(), BarrierError> {
    let line = read_request_line(stream)?;
    let reply: Reply = serde_json::from_str(&line).map_err(|_| BarrierError::Protocol {
        what: "reply is not JSON",
    })?;
    if reply.ok {
        Ok(())
    } else {
        Err(BarrierError::Refused {
            reason: reply.error.unwrap_or_default(),
        })
    }
}

/// Agent side: the hello line and the one fd that came with it.
pub(crate) fn receive_listener(
    stream: &UnixStream,
) -> Result<(OwnedFd, u32, Range<u32>), BarrierError> {
    let mut buf = [0u8; 256];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let got = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        // MSG_CMSG_CLOEXEC: a child the agent spawns meanwhile must not inherit the
        // listener, or the listener would outlive the agent.
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| BarrierError::ControlIo {
            step: "receiving the hello",
            error: e.into(),
        })?;
        let cmsgs = msg.cmsgs().map_err(|_| BarrierError::Protocol {
            what: "too many fds in hello",
        })?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: SCM_RIGHTS fds were just installed in our table by recvmsg and
                // nothing else owns them.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        msg.bytes
    };
    let mut line = buf[..got].to_vec();
    if got == 0 {
        return Err(BarrierError::Protocol {
            what: "connection closed before the hello",
        });
    }
    // The hello arrives in one piece in practice; finish it byte by byte if not.
    if !line.contains(&b'\n') {
        line.extend(read_request_line(stream)?.into_bytes());
    } else if line.last() != Some(&b'\n') {
        return Err(BarrierError::Protocol {
            what: "data after the hello",
        });
    }
    let text = std::str::from_utf8(&line).map_err(|_| BarrierError::Protocol {
        what: "hello is not UTF-8",
    })?;
    let hello: Hello =
        serde_json::from_str(text.trim_end()).map_err(|_| BarrierError::Protocol {
            what: "hello is not JSON",
        })?;
    if hello.pid == 0 {
        return Err(BarrierError::Protocol {
            what: "hello pid is 0",
        });
    }
    let [start, end] = hello.fds;
    // The agent places files at these numbers: a range it could not have come
    // from filter::reserved_fds is refused.
    if start > end || end - start > crate::barrier::filter::RESERVED_COUNT {
        return Err(BarrierError::Protocol {
            what: "bad reserved descriptor range in hello",
        });
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(fd), None) => Ok((fd, hello.pid, start..end)),
        (None, _) => Err(BarrierError::MissingFd),
        (Some(_), Some(_)) => Err(BarrierError::Protocol {
            what: "more than one fd in hello",
        }),
    }
}

fn write_reply(mut stream: &UnixStream, result: Result<(), &str>) -> Result<(), BarrierError> {
    let reply = match result {
        Ok(()) => Reply {
            ok: true,
            error: None,
        },
        Err(e) => Reply {
            ok: false,
            error: Some(e.to_owned()),
        },
    };
    stream
        .write_all(json_line(&reply).as_bytes())
        .map_err(|error| BarrierError::ControlIo {
            step: "sending the reply",
            error,
        })
}

fn json_line<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs can't fail; an empty object keeps this total.
    let mut line = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    line.push('\n');
    line
}
