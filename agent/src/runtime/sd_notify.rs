//! systemd's readiness protocol (sd_notify(3)), so that the unit can be
//! `Type=notify`: `systemctl start tandem@NAME` returns once the agent has bound
//! its sockets and its failover engine runs, `systemctl status` shows the node's
//! state and the reason of its last transition, and a stop is announced. Outside
//! systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, net::UnixDatagram},
};

/// Sends `message` (newline-separated `KEY=VALUE` assignments) to the service
/// manager, if there is one. Failures are logged, never fatal: the agent must run
/// the same with or without systemd.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_to(&path, message) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// Sends `message` to the datagram socket at `path`: a file system path, or an
/// abstract socket name written with a leading `@`.
pub fn notify_to(path: &OsStr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), std::path::Path::new(path))?;
    }
    Ok(())
}

/// A `STATUS=` line: one line, whatever the text holds.
#[must_use]
pub fn status_line(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("STATUS={one_line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("tandem-test-notify-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(status_line("PRIM: a\nb"), "STATUS=PRIM: a b");
    }
}
