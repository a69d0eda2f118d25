//! Turns the raw file into a [`Config`], checking every value and every rule
//! between values, and collecting all problems instead of stopping at the first.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use serde_saphyr::Location;

use super::{
    ConfigError, ConfigErrors,
    duration::{format_duration, parse_duration},
    locate,
    raw::{RawApplication, RawConfig, RawHeartbeat, RawPeer, RawReplicated, RawResync, Text},
    types::{
        Application, Config, DEFAULT_APPLICATION_TIMEOUT, DEFAULT_BLOCK_SIZE, DEFAULT_BOOT_WAIT,
        DEFAULT_CONTROL_SOCKET_NAME, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_NETWORK,
        DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW, Failover,
        Heartbeat, HeartbeatNetwork, Identity, Peer, PeerPinSpec, Replicated, Resync, Role,
    },
};

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with
/// the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
const MIN_BLOCK_SIZE: u64 = 4096;
const MAX_BLOCK_SIZE: u64 = 16 * 1024 * 1024;

/// Validates `raw` (parsed from `text`, read from `origin`).
pub(super) fn validate(raw: RawConfig, text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        origin,
        text,
        errors: Vec::new(),
    };
    let node = c
        .required(raw.node.as_ref(), "node", None)
        .and_then(|t| c.node_name(t, "node"));
    let listen = c
        .required(raw.listen.as_ref(), "listen", None)
        .and_then(|t| c.socket_addr(t, "listen", true));
    let identity = c.identity(raw.identity.as_ref());
    let peer = c.peer(raw.peer.as_ref(), node.as_deref(), listen);
    let state_dir = c
        .required(raw.state_dir.as_ref(), "state_dir", None)
        .and_then(|t| c.absolute_path(t, "state_dir"));
    let control_socket = match &raw.control_socket {
        Some(t) => c.control_socket(t),
        None => state_dir
            .as_ref()
            .map(|d| d.join(DEFAULT_CONTROL_SOCKET_NAME)),
    };
    let role = raw.role.as_ref().map_or(Some(Role::Auto), |t| c.role(t));
    let replicated = c.replicated(raw.replicated.as_ref());
    if let Some(replicated) = &replicated {
        c.outside_replicated(
            raw.state_dir.as_ref(),
            state_dir.as_deref(),
            "state_dir",
            replicated,
            true,
        );
        // The default socket lives in state_dir, which is checked already.
        if raw.control_socket.is_some() {
            c.outside_replicated(
                raw.control_socket.as_ref(),
                control_socket.as_deref(),
                "control_socket",
                replicated,
                false,
            );
        }
    }
    let heartbeat = c.heartbeat(raw.heartbeat.as_ref().map(|s| &s.value));
    let resync = c.resync(raw.resync.as_ref().map(|s| &s.value));
    let application = match &raw.application {
        Some(a) => c.application(&a.value, a.referenced).map(Some),
        None => Some(None),
    };
    let errors = c.errors;
    match (
        node,
        listen,
        identity,
        peer,
        state_dir,
        control_socket,
        role,
        replicated,
        heartbeat,
        resync,
        application,
    ) {
        (
            Some(node),
            Some(listen),
            Some(identity),
            Some(peer),
            Some(state_dir),
            Some(control_socket),
            Some(role),
            Some(replicated),
            Some(heartbeat),
            Some(resync),
            Some(application),
        ) if errors.is_empty() => Ok(Config {
            failover: Failover {
                preferred: None,
                boot_wait: DEFAULT_BOOT_WAIT,
                witnesses: vec![],
            },
            origin: origin.to_path_buf(),
            node,
            listen,
            identity,
            state_dir,
            control_socket,
            role,
            replicated,
            heartbeat: Heartbeat {
                networks: vec![HeartbeatNetwork {
                    name: DEFAULT_HEARTBEAT_NETWORK.into(),
                    local: SocketAddr::new(listen.ip(), listen.port() + 1),
                    peer: SocketAddr::new(peer.address.ip(), peer.address.port() + 1),
                }],
                ..heartbeat
            },
            peer,
            resync,
            application,
            vip: None,
        }),
        _ => Err(ConfigErrors::sorted(errors)),
    }
}

/// Collects problems; every check returns `None` after recording one.
struct Checker<'a> {
    origin: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// Records a problem at `at`, or at the key's first occurrence in the text when
    /// the parser gave no position.
    fn error(&mut self, key: &str, at: Option<Location>, message: impl Into<String>) {
        let placed = at
            .filter(|l| l.line() > 0)
            .map(|l| (l.line(), l.column()))
            .or_else(|| locate::position_of(self.text, key));
        let mut e = ConfigError::unplaced(self.origin.to_path_buf(), key, message);
        if let Some((line, column)) = placed {
            e.line = Some(line);
            e.column = Some(column);
        }
        self.errors.push(e);
    }

    /// A required scalar; a missing one is reported at its parent mapping.
    fn required<'t>(
        &mut self,
        t: Option<&'t Text>,
        key: &str,
        parent: Option<Location>,
    ) -> Option<&'t Text> {
        if t.is_none() {
            self.error(key, parent, "is required");
        }
        t
    }

    fn node_name(&mut self, t: &Text, key: &str) -> Option<String> {
        let ok = (1..=32).contains(&t.value.len())
            && t.value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Some(t.value.clone())
        } else {
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is not a node name: use 1 to 32 of a-z, 0-9 and -",
                    t.value.escape_debug()
                ),
            );
            None
        }
    }

    /// An IP address and a non-zero port; `any_ip` allows 0.0.0.0 / [::] (listening).
    fn socket_addr(&mut self, t: &Text, key: &str, any_ip: bool) -> Option<SocketAddr> {
        let Ok(addr) = t.value.trim().parse::<SocketAddr>() else {
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is not an IP address and port such as 10.0.0.1:7400 or [fd00::1]:7400",
                    t.value.escape_debug()
                ),
            );
            return None;
        };
        if addr.port() == 0 {
            self.error(key, Some(t.referenced), "the port must not be 0");
            return None;
        }
        if !any_ip && addr.ip().is_unspecified() {
            self.error(
                key,
                Some(t.referenced),
                format!("{} is not an address a node can reach", addr.ip()),
            );
            return None;
        }
        Some(addr)
    }

    /// An absolute path without `..`, normalised (no `.` parts or repeated slashes)
    /// so that nesting can be checked by comparing components.
    fn absolute_path(&mut self, t: &Text, key: &str) -> Option<PathBuf> {
        let path = Path::new(t.value.as_str());
        if !path.is_absolute() {
            self.error(
                key,
                Some(t.referenced),
                format!("`{}` must be an absolute path", path.display()),
            );
            return None;
        }
        if path.components().any(|c| c == Component::ParentDir) {
            self.error(
                key,
                Some(t.referenced),
                format!("`{}` must not contain `..`", path.display()),
            );
            return None;
        }
        Some(path.components().collect())
    }

    /// A file that exists and can be read; relative paths are taken from the
    /// configuration file's directory.
    fn readable_file(&mut self, t: &Text, key: &str) -> Option<PathBuf> {
        let written = Path::new(t.value.as_str());
        if t.value.is_empty() {
            self.error(key, Some(t.referenced), "must name a file");
            return None;
        }
        let path = match self.origin.parent() {
            Some(dir) if written.is_relative() => dir.join(written),
            _ => written.to_path_buf(),
        };
        let opened = File::open(&path).and_then(|f| f.metadata());
        match opened {
            Ok(meta) if meta.is_file() => Some(path),
            Ok(_) => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!("`{}` is not a regular file", path.display()),
                );
                None
            }
            Err(e) => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!("cannot read `{}`: {e}", path.display()),
                );
                None
            }
        }
    }

    fn identity(
        &mut self,
        raw: Option<&serde_saphyr::Spanned<super::raw::RawIdentity>>,
    ) -> Option<Identity> {
        let Some(raw) = raw else {
            self.error("identity", None, "is required");
            return None;
        };
        let at = Some(raw.referenced);
        let certificate = self
            .required(raw.value.certificate.as_ref(), "identity.certificate", at)
            .and_then(|t| self.readable_file(t, "identity.certificate"));
        let key = self
            .required(raw.value.key.as_ref(), "identity.key", at)
            .and_then(|t| self.readable_file(t, "identity.key"));
        Some(Identity {
            certificate: certificate?,
            key: key?,
        })
    }

    fn peer(
        &mut self,
        raw: Option<&serde_saphyr::Spanned<RawPeer>>,
        node: Option<&str>,
        listen: Option<SocketAddr>,
    ) -> Option<Peer> {
        let Some(raw) = raw else {
            self.error("peer", None, "is required");
            return None;
        };
        let at = Some(raw.referenced);
        let p = &raw.value;
        let name = self
            .required(p.name.as_ref(), "peer.name", at)
            .and_then(|t| {
                let name = self.node_name(t, "peer.name")?;
                if Some(name.as_str()) == node {
                    self.error("peer.name", Some(t.referenced), "must differ from `node`");
                    return None;
                }
                Some(name)
            });
        let address = self
            .required(p.address.as_ref(), "peer.address", at)
            .and_then(|t| {
                let addr = self.socket_addr(t, "peer.address", false)?;
                if Some(addr) == listen {
                    self.error(
                        "peer.address",
                        Some(t.referenced),
                        "must differ from `listen`",
                    );
                    return None;
                }
                Some(addr)
            });
        let pin = match (&p.certificate, &p.fingerprint) {
            (Some(c), None) => self
                .readable_file(c, "peer.certificate")
                .map(PeerPinSpec::Certificate),
            (None, Some(f)) => self.fingerprint(f),
            (Some(_), Some(f)) => {
                self.error(
                    "peer.fingerprint",
                    Some(f.referenced),
                    "give either `peer.certificate` or `peer.fingerprint`, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    "peer",
                    at,
                    "needs `certificate` or `fingerprint` to recognise the peer",
                );
                None
            }
        };
        Some(Peer {
            name: name?,
            address: address?,
            pin: pin?,
        })
    }

    fn fingerprint(&mut self, t: &Text) -> Option<PeerPinSpec> {
        let hex = t.value.trim().strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(PeerPinSpec::Fingerprint(hex.to_ascii_lowercase()))
        } else {
            self.error(
                "peer.fingerprint",
                Some(t.referenced),
                "must be `sha256:` followed by 64 hex digits (the SHA-256 of the peer certificate's DER)",
            );
            None
        }
    }

    fn control_socket(&mut self, t: &Text) -> Option<PathBuf> {
        let path = self.absolute_path(t, "control_socket")?;
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            self.error(
                "control_socket",
                Some(t.referenced),
                format!("is longer than the {MAX_SOCKET_PATH} bytes a Unix socket path may have"),
            );
            return None;
        }
        Some(path)
    }

    fn role(&mut self, t: &Text) -> Option<Role> {
        match t.value.as_str() {
            "auto" => Some(Role::Auto),
            "primary" => Some(Role::Primary),
            "secondary" => Some(Role::Secondary),
            other => {
                self.error(
                    "role",
                    Some(t.referenced),
                    format!(
                        "`{}` is not a role: use auto, primary or secondary",
                        other.escape_debug()
                    ),
                );
                None
            }
        }
    }
}

mod sections;
