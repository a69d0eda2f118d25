//! systemd's readiness protocol (sd_notify(3)), so that `tandem@.service` can be
//! `Type=notify`: the agent says `READY=1` once its control socket answers (so
//! `systemctl start` returns when `tandem status` works) and `STOPPING=1` when a
//! stop begins. Without `NOTIFY_SOCKET` (not under systemd) it does nothing.
//!
//! The application's commands and checkers, children of the agent, run without
//! the variable ([`ENV`] is removed from their environment): a message from one of
//! them would be refused by systemd (only the main process may notify) and logged
//! as a warning, and a program that speaks the protocol itself would tell systemd
//! things about the agent's unit.

use std::{
    ffi::OsString,
    os::unix::net::{SocketAddr, UnixDatagram},
};

/// The variable naming systemd's notification socket.
pub const ENV: &str = "NOTIFY_SOCKET";

/// Where to send notifications; `None` when not started by systemd.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    addr: Option<SocketAddr>,
}

impl Notifier {
    /// The notifier systemd asked for, if any.
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_value(std::env::var_os(ENV))
    }

    /// The notifier for a `NOTIFY_SOCKET` value: a path, or `@name` for an
    /// abstract socket. An unusable value is logged and ignored: readiness is a
    /// courtesy to systemd, never a reason for the agent not to run.
    fn from_value(value: Option<OsString>) -> Self {
        let Some(value) = value else {
            return Self::default();
        };
        let bytes = value.as_encoded_bytes();
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        } else {
            SocketAddr::from_pathname(&value)
        };
        match addr {
            Ok(addr) => Self { addr: Some(addr) },
            Err(e) => {
                tracing::warn!(
                    socket = ?value,
                    error = %e,
                    "NOTIFY_SOCKET is unusable; systemd will not hear readiness"
                );
                Self::default()
            }
        }
    }

    /// Sends one notification (`READY=1`, `STOPPING=1`, ...); a failure is
    /// logged.
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.addr else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(state.as_bytes(), addr));
        if let Err(e) = sent {
            tracing::warn!(state, error = %e, "cannot notify systemd");
        }
    }
}

/// A `STATUS=` line for [`Notifier::notify`]: one line, whatever the text holds.
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
    fn a_status_stays_on_one_line() {
        assert_eq!(status_line("PRIM: a\nb"), "STATUS=PRIM: a b");
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::from_value(Some(path.into_os_string()));
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tandem-notify-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("name"),
        )
        .expect("bind");
        let n = Notifier::from_value(Some(format!("@{name}").into()));
        n.notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let n = Notifier::from_value(None);
        assert!(n.addr.is_none());
        n.notify("READY=1");
    }
}
