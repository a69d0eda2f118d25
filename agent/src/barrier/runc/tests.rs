//! Unit tests of the runc seccomp agent socket: runc's message format, and the
//! refusal of garbage without registering anything or leaking fds.

use std::{
    io::{IoSlice, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    sync::mpsc,
};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::*;
use crate::barrier::{Listener, ListenerConfig};

/// What runc 1.1.5 sends (captured from a real `docker run` through the runtime wrapper).
const RUNC_MESSAGE: &str = r#"{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":4242,"metadata":"m","state":{"ociVersion":"1.0.2-dev","id":"abc","status":"creating","pid":4242,"bundle":"/run/b","annotations":{"x":"y"}}}"#;

fn pipe_fds() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().expect("pipe")
}

fn send(stream: &UnixStream, bytes: &[u8], fds: &[&OwnedFd]) {
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [IoSlice::new(bytes)];
    sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).expect("sendmsg");
}

#[test]
fn parses_runcs_message_and_picks_the_seccomp_fd() {
    let (r, _w) = pipe_fds();
    let (attach, _fd) = parse_message(RUNC_MESSAGE.as_bytes(), vec![r]).expect("parse");
    assert_eq!(
        attach,
        RuncAttach {
            pid: 4242,
            container_id: "abc".to_owned(),
            bundle: "/run/b".to_owned(),
            metadata: "m".to_owned(),
        }
    );
}

#[test]
fn refuses_bad_messages() {
    let cases: [(&str, usize); 6] = [
        ("not json", 1),
        (RUNC_MESSAGE, 0),
        (RUNC_MESSAGE, 2),
        (&RUNC_MESSAGE.replace("seccompFd", "other"), 1),
        (&RUNC_MESSAGE.replace("4242,\"metadata", "0,\"metadata"), 1),
        (&RUNC_MESSAGE.replace("4242,\"metadata", "-7,\"metadata"), 1),
    ];
    for (text, nfds) in cases {
        let fds = (0..nfds).map(|_| pipe_fds().0).collect();
        assert!(
            parse_message(text.as_bytes(), fds).is_err(),
            "accepted {text:?} with {nfds} fds"
        );
    }
}

#[test]
fn garbage_connections_register_nothing_and_close_their_fds() {
    let (tx, _rx) = mpsc::channel();
    let listener = Listener::start(ListenerConfig::default(), tx).expect("listener");
    let registrar = listener.registrar();
    let big = vec![b'{'; MAX_MESSAGE + 10];
    let (r1, w1) = pipe_fds();
    let (r2, w2) = pipe_fds();
    let messages: [(&[u8], Vec<&OwnedFd>); 4] = [
        (b"garbage", vec![&r1]),
        (RUNC_MESSAGE.as_bytes(), vec![&r1, &r2]),
        (RUNC_MESSAGE.as_bytes(), vec![]),
        (&big, vec![&r1]),
    ];
    for (bytes, fds) in messages {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let writer = thread::scope(|s| {
            let h = s.spawn(|| {
                send(&theirs, &bytes[..bytes.len().min(4096)], &fds);
                let _ = (&theirs).write_all(&bytes[bytes.len().min(4096)..]);
                drop(theirs);
            });
            let got = handle_runc_connection(&ours, &registrar);
            let _ = h.join();
            got
        });
        assert!(writer.is_err(), "garbage was accepted");
    }
    assert_eq!(listener.stats().listeners, 0);
    // Once our read ends are closed, a write fails with EPIPE only if the handler
    // closed the copies it received, too.
    drop((r1, r2));
    for w in [&w1, &w2] {
        let err = nix::unistd::write(w, b"x").expect_err("a received read end leaked");
        assert_eq!(err, nix::errno::Errno::EPIPE);
    }
}

#[test]
fn serve_runc_makes_a_root_only_socket_and_removes_it() {
    let (tx, _rx) = mpsc::channel();
    let listener = Listener::start(ListenerConfig::default(), tx).expect("listener");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seccomp.sock");
    // A stale socket from a crashed agent is replaced.
    drop(UnixListener::bind(&path).expect("stale"));
    let server = serve_runc(&path, listener.registrar()).expect("serve");
    let mode = fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A connection that sends garbage doesn't stop the server.
    let mut c = UnixStream::connect(&path).expect("connect");
    c.write_all(b"nonsense").expect("write");
    drop(c);
    UnixStream::connect(&path).expect("still accepting");
    server.stop();
    assert!(!path.exists());
    // A regular file is never deleted in favour of the socket.
    fs::write(&path, b"x").expect("file");
    assert!(serve_runc(&path, listener.registrar()).is_err());
}
