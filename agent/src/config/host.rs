//! `tandem config check`: the file's own rules (all of [`Config::load`]) plus what
//! only the host it runs on can tell: whether the VIP's interface exists, whether
//! this node's addresses are assigned here, whether the directories the agent
//! creates can be created, and whether another filesystem is mounted inside a
//! replicated directory (capture stays on the directory's own filesystem, so the
//! files of such a mount would silently not be replicated).
//!
//! Addresses are only warned about: a file is often checked on one machine before
//! it is installed on another, and an address may be added by the network
//! configuration after the check (a systemd `ExecStartPre` runs early). A missing
//! interface or a directory that cannot be made stops the agent at its first
//! takeover or at start, so those are problems.

use std::{
    collections::HashSet,
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
};

use super::{Config, ConfigError, locate};

/// What the host says about a valid configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostReport {
    /// Things that will stop the agent on this host.
    pub problems: Vec<ConfigError>,
    /// Things that may be wrong, or may be right on the node the file is for.
    pub warnings: Vec<ConfigError>,
}

/// The parts of the host the checks look at, so that tests can give their own.
#[derive(Clone, Debug)]
pub struct Host {
    /// Where the kernel lists network interfaces (`/sys/class/net`).
    pub net: PathBuf,
    /// Whether the check runs as root, as the agent does: only then does a
    /// directory the current user cannot write say anything about the agent.
    pub root: bool,
    /// The mount table (`/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
}

impl Host {
    /// The machine this runs on.
    #[must_use]
    pub fn this() -> Self {
        Self {
            net: PathBuf::from("/sys/class/net"),
            root: nix::unistd::geteuid().is_root(),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }
}

/// The outcome of `tandem config check -c FILE`: the lines to print, and whether
/// the file passed (warnings do not fail it).
#[derive(Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub lines: Vec<String>,
    pub ok: bool,
}

/// Loads `path` and checks it against `host`.
#[must_use]
pub fn check_file(path: &Path, host: &Host) -> CheckOutcome {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return CheckOutcome {
                lines: errors.errors().iter().map(ToString::to_string).collect(),
                ok: false,
            };
        }
    };
    let report = config.check_host(host);
    let mut lines: Vec<String> = report
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    lines.extend(report.problems.iter().map(ToString::to_string));
    let ok = report.problems.is_empty();
    if ok {
        lines.push(format!("{}: ok", path.display()));
    }
    CheckOutcome { lines, ok }
}

impl Config {
    /// Checks what only `host` can tell about this configuration.
    #[must_use]
    pub fn check_host(&self, host: &Host) -> HostReport {
        // Positions come from the file as it is now; a file that vanished since
        // it was loaded only loses them.
        let text = std::fs::read_to_string(&self.origin).unwrap_or_default();
        let mut c = Checker {
            origin: &self.origin,
            text: &text,
            report: HostReport::default(),
        };
        if let Some(v) = &self.vip {
            c.interface(&v.interface, &host.net);
        }
        let mut seen = HashSet::new();
        let mut addresses: Vec<(String, SocketAddr)> = vec![("listen".into(), self.listen)];
        for (i, n) in self.heartbeat.networks.iter().enumerate() {
            addresses.push((format!("heartbeat.networks[{i}].local"), n.local));
        }
        if let Some(m) = &self.metrics {
            addresses.push(("metrics.listen".into(), m.listen));
        }
        if let Some(c) = &self.console {
            addresses.push(("console.listen".into(), c.listen));
        }
        for (key, addr) in addresses {
            // The default heartbeat network uses `listen`'s address: one warning.
            if !addr.ip().is_unspecified() && seen.insert(addr.ip()) {
                c.assigned(&key, addr.ip());
            }
        }
        c.creatable("state_dir", &self.state_dir, host.root);
        // An unreadable table (no /proc) only loses this check.
        let mounts = std::fs::read_to_string(&host.mountinfo)
            .map(|t| mount_points(&t))
            .unwrap_or_default();
        for (i, r) in self.replicated.iter().enumerate() {
            let key = format!("replicated[{i}].path");
            c.creatable(&key, &r.path, host.root);
            c.no_mount_inside(&key, &r.path, &mounts);
        }
        c.report
    }
}

struct Checker<'a> {
    origin: &'a Path,
    text: &'a str,
    report: HostReport,
}

impl Checker<'_> {
    fn finding(&self, key: &str, message: String) -> ConfigError {
        let mut e = ConfigError::unplaced(self.origin.to_path_buf(), key, message);
        if let Some((line, column)) = locate::position_of(self.text, key) {
            e.line = Some(line);
            e.column = Some(column);
        }
        e
    }

    fn interface(&mut self, name: &str, net: &Path) {
        // The name was validated (no `/`), so it cannot leave the directory.
        if !net.join(name).exists() {
            let e = self.finding(
                "vip.interface",
                format!(
                    "this host has no interface `{name}` (not in {})",
                    net.display()
                ),
            );
            self.report.problems.push(e);
        }
    }

    /// Binding a socket to an address succeeds only when the address is assigned
    /// to this host; nothing is sent.
    fn assigned(&mut self, key: &str, ip: IpAddr) {
        if let Err(e) = UdpSocket::bind(SocketAddr::new(ip, 0))
            && e.kind() == ErrorKind::AddrNotAvailable
        {
            let w = self.finding(key, format!("{ip} is not an address of this host"));
            self.report.warnings.push(w);
        }
    }

    /// No other filesystem may be mounted strictly inside a replicated directory:
    /// capture watches the directory's own filesystem and skips mount points, so
    /// what is written there would never reach the peer.
    fn no_mount_inside(&mut self, key: &str, path: &Path, mounts: &[PathBuf]) {
        let dir = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for m in mounts.iter().filter(|m| m.starts_with(&dir) && **m != dir) {
            let e = self.finding(
                key,
                format!(
                    "a filesystem is mounted inside it at `{}`: its files would not be \
                     replicated (capture stays on one filesystem); unmount it, or replicate \
                     it as a directory of its own",
                    m.display()
                ),
            );
            self.report.problems.push(e);
        }
    }

    /// A directory the agent creates at start: it exists as a directory, or its
    /// nearest existing ancestor is a directory the agent may write to.
    fn creatable(&mut self, key: &str, path: &Path, root: bool) {
        let problem = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(format!(
                "`{}` exists and is not a directory",
                path.display()
            )),
            // Not found, or a file stands where a directory above it should be.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                let ancestor = path.ancestors().skip(1).find(|a| a.exists());
                match ancestor {
                    Some(a) if !a.is_dir() => Some(format!(
                        "`{}` cannot be created: `{}` is not a directory",
                        path.display(),
                        a.display()
                    )),
                    Some(a) if root => {
                        use nix::unistd::{AccessFlags, access};
                        access(a, AccessFlags::W_OK | AccessFlags::X_OK)
                            .err()
                            .map(|e| {
                                format!(
                                    "`{}` cannot be created in `{}`: {}",
                                    path.display(),
                                    a.display(),
                                    e.desc()
                                )
                            })
                    }
                    _ => None,
                }
            }
            // Only root's view matters: the agent runs as root.
            Err(e) if e.kind() == ErrorKind::PermissionDenied && !root => None,
            Err(e) => Some(format!("cannot look at `{}`: {e}", path.display())),
        };
        if let Some(message) = problem {
            let e = self.finding(key, message);
            self.report.problems.push(e);
        }
    }
}

/// The mount points of a `/proc/self/mountinfo` text (its fifth field, with the
/// kernel's octal escapes of space, tab, newline and backslash undone).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
