//! Turns the raw file into a [`Config`], checking every value and every rule
//! between values, and collecting all problems instead of stopping at the first.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use serde_saphyr::{Location, Spanned};

use super::{
    ConfigError, ConfigErrors,
    duration::{format_duration, parse_duration},
    locate,
    raw::{
        RawApplication, RawChecker, RawConfig, RawConsole, RawFailover, RawHeartbeat,
        RawHeartbeatNetwork, RawIdentity, RawMetrics, RawPeer, RawReplicated, RawResync, RawVip,
        Text,
    },
    types::{
        Application, Checker, CheckerAction, CheckerKind, CheckerScope, Config, Console,
        DEFAULT_ANNOUNCE_COUNT, DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_APPLICATION_TIMEOUT,
        DEFAULT_BLOCK_SIZE, DEFAULT_BOOT_WAIT, DEFAULT_CHECK_FAILURES, DEFAULT_CHECK_INTERVAL,
        DEFAULT_CONTROL_SOCKET_NAME, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_NETWORK,
        DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_MAX_RESTARTS, DEFAULT_NICE, DEFAULT_PROBE_WAIT,
        DEFAULT_RESTART_WINDOW, Failover, Heartbeat, HeartbeatNetwork, Identity, Metrics, Peer,
        PeerPinSpec, Replicated, Resync, Role, Vip,
    },
};

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with
/// the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
const MIN_BLOCK_SIZE: u64 = 4096;
const MAX_BLOCK_SIZE: u64 = 16 * 1024 * 1024;

/// Validates `raw` (parsed from `text`, read from `origin`).
pub(super) fn validate(raw: RawConfig, text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let mut c = Validator {
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
        Some(t) => c.socket_path(t, "control_socket"),
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
    let ends = Ends {
        listen: raw.listen.as_ref().zip(listen),
        peer: raw
            .peer
            .as_ref()
            .and_then(|p| p.value.address.as_ref())
            .zip(peer.address),
    };
    let heartbeat = c.heartbeat(raw.heartbeat.as_ref(), ends);
    let resync = c.resync(raw.resync.as_ref().map(|s| &s.value));
    let application = match &raw.application {
        Some(a) => c.application(&a.value, a.referenced).map(Some),
        None => Some(None),
    };
    let nodes = node_addresses(listen, peer.address, heartbeat.as_ref());
    let (vip_address, vip) = match &raw.vip {
        Some(v) => {
            let (address, vip) = c.vip(&v.value, v.referenced, &nodes);
            (address, vip.map(Some))
        }
        None => (VipAddress::Absent, Some(None)),
    };
    let failover = c.failover(
        raw.failover.as_ref(),
        [node.as_deref(), peer.name.as_deref()],
        vip_address,
        &nodes,
    );
    let metrics = match &raw.metrics {
        Some(m) => c.metrics(&m.value, m.referenced).map(Some),
        None => Some(None),
    };
    let console = match &raw.console {
        Some(s) => c.console(&s.value, s.referenced).map(Some),
        None => Some(None),
    };
    let errors = c.errors;
    let config = (|| {
        Some(Config {
            origin: origin.to_path_buf(),
            node: node?,
            listen: listen?,
            identity: identity?,
            peer: peer.complete()?,
            state_dir: state_dir?,
            control_socket: control_socket?,
            role: role?,
            replicated: replicated?,
            heartbeat: heartbeat?,
            resync: resync?,
            application: application?,
            vip: vip?,
            failover: failover?,
            metrics: metrics?,
            console: console?,
        })
    })();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            debug_assert!(!errors.is_empty(), "a value was rejected without a message");
            Err(ConfigErrors::sorted(errors))
        }
    }
}

/// The replication endpoints as written and validated, both known only when valid;
/// the default heartbeat network is derived from them.
#[derive(Clone, Copy)]
struct Ends<'t> {
    listen: Option<(&'t Text, SocketAddr)>,
    peer: Option<(&'t Text, SocketAddr)>,
}

/// Every address the two nodes are known to have, each with how to name it in a
/// message: the VIP and the witnesses must be other addresses.
fn node_addresses(
    listen: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    heartbeat: Option<&Heartbeat>,
) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    if let Some(l) = listen.filter(|l| !l.ip().is_unspecified()) {
        out.push((l.ip(), "this node's address (`listen`)".to_owned()));
    }
    if let Some(p) = peer {
        out.push((p.ip(), "the peer's address (`peer.address`)".to_owned()));
    }
    for n in heartbeat.map_or(&[][..], |h| &h.networks) {
        out.push((
            n.local.ip(),
            format!("this node's address on heartbeat network `{}`", n.name),
        ));
        out.push((
            n.peer.ip(),
            format!("the peer's address on heartbeat network `{}`", n.name),
        ));
    }
    out
}

/// The parts of `peer` that are valid, so that checks needing only its name or
/// address still run when its pin is wrong.
struct PeerParts {
    name: Option<String>,
    address: Option<SocketAddr>,
    pin: Option<PeerPinSpec>,
}

impl PeerParts {
    fn complete(self) -> Option<Peer> {
        Some(Peer {
            name: self.name?,
            address: self.address?,
            pin: self.pin?,
        })
    }
}

/// Collects problems; every check returns `None` after recording one.
struct Validator<'a> {
    origin: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
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
        self.short_name(t, key, "node name")
    }

    /// A name of 1 to 32 characters of a-z, 0-9 and - (`what` names it in the
    /// message).
    fn short_name(&mut self, t: &Text, key: &str, what: &str) -> Option<String> {
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
                    "`{}` is not a {what}: use 1 to 32 of a-z, 0-9 and -",
                    t.value.escape_debug()
                ),
            );
            None
        }
    }

    /// A name unique among the items of a list (`earlier`: the valid names of
    /// the items before, with their index; `list` is the list's key).
    fn unique_name(
        &mut self,
        t: &Text,
        key: &str,
        list: &str,
        earlier: &[(usize, String)],
    ) -> Option<()> {
        if let Some((j, _)) = earlier.iter().find(|(_, name)| *name == t.value) {
            self.error(
                key,
                Some(t.referenced),
                format!("`{}` is already the name of {list}[{j}]", t.value),
            );
            return None;
        }
        Some(())
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

    fn identity(&mut self, raw: Option<&Spanned<RawIdentity>>) -> Option<Identity> {
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
        raw: Option<&Spanned<RawPeer>>,
        node: Option<&str>,
        listen: Option<SocketAddr>,
    ) -> PeerParts {
        let Some(raw) = raw else {
            self.error("peer", None, "is required");
            return PeerParts {
                name: None,
                address: None,
                pin: None,
            };
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
        PeerParts { name, address, pin }
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

    /// An absolute path short enough for a Unix socket address.
    fn socket_path(&mut self, t: &Text, key: &str) -> Option<PathBuf> {
        let path = self.absolute_path(t, key)?;
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            self.error(
                key,
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

mod checkers;
mod console;
mod failover;
mod sections;

use self::failover::VipAddress;
