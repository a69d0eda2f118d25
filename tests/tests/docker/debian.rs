//! What the package tests share: the Debian 12 base image (`tandem/debian:12-HASH`,
//! debootstrap minbase plus systemd-sysv, built once by
//! `tests/docker/debian/build-image.sh` and kept by recipe hash), the packages
//! under test, and running shell commands in a container.
//!
//! The packages are `TANDEM_DEB` / `TANDEM_RPM` when set (`cargo xtask test`
//! builds them from the binary under test), otherwise a test makes them with
//! `cargo xtask package KIND --profile dev --no-build --fast`, from the dev
//! build of the binary (`cargo build -p tandem` first).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use crate::docker;

/// Builds the base image, or finds it; returns its tag.
pub(crate) fn debian_image() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/debian/build-image.sh");
    let started = Instant::now();
    let out = Command::new(&script).output().expect("run build-image.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed:\n{err}", script.display());
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!("image: {} ({:?})", err.trim(), started.elapsed());
    assert!(tag.starts_with("tandem/debian:12-"), "{tag}");
    tag
}

/// The package format a test installs.
#[derive(Clone, Copy)]
pub(crate) enum Format {
    Deb,
    Rpm,
}

impl Format {
    fn env(self) -> &'static str {
        match self {
            Self::Deb => "TANDEM_DEB",
            Self::Rpm => "TANDEM_RPM",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Deb => "deb",
            Self::Rpm => "rpm",
        }
    }
}

/// The package under test, built into `dir` unless the environment names one.
pub(crate) fn package(format: Format, dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os(format.env()) {
        return PathBuf::from(p);
    }
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["xtask", "package", format.name()])
        .args(["--profile", "dev", "--no-build", "--fast", "--out"])
        .arg(dir)
        .current_dir(&root)
        .output()
        .expect("run cargo xtask package");
    assert!(
        out.status.success(),
        "cargo xtask package {} failed:\n{}",
        format.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let pkg = std::fs::read_dir(dir)
        .expect("read the package directory")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == format.name()))
        .unwrap_or_else(|| panic!("cargo xtask package wrote no .{}", format.name()));
    eprintln!("packaged {} in {:?}", pkg.display(), started.elapsed());
    pkg
}

/// `sh -c SCRIPT` in the container: (exit status, stdout, stderr).
pub(crate) fn sh(name: &str, script: &str) -> (i32, String, String) {
    let out = docker(&["exec", name, "sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sh -c SCRIPT` in the container, which must succeed; returns its stdout.
pub(crate) fn sh_ok(name: &str, script: &str) -> String {
    let (code, out, err) = sh(name, script);
    assert_eq!(code, 0, "`{script}` failed:\n{out}{err}");
    out
}

/// The example the packages ship and the tests configure.
pub(crate) const EXAMPLE: &str = "/usr/share/doc/tandem/examples/app.yaml";

/// An address of the container's network with the last octet replaced (the
/// default bridge is a /16, so .250/.251 of the container's /24 are unused unless
/// some other container sits exactly there; nothing is sent to the peer's).
pub(crate) fn sibling(ip: &str, last: u8) -> String {
    let (prefix, _) = ip.rsplit_once('.').expect("an IPv4 address");
    format!("{prefix}.{last}")
}

/// Makes the node keys with `tandem keygen` in /etc/tandem and writes
/// /etc/tandem/app.yaml from the shipped example, as an operator would: the
/// addresses of the container's network (the VIP and the peer beside it, the
/// gateway as the witness), and `start`/`stop` replaced by `app` when given.
pub(crate) fn configure(name: &str, app: Option<(&str, &str)>) {
    let inspect = |what: &str| {
        crate::docker_ok(&[
            "inspect",
            "--format",
            &format!("{{{{.NetworkSettings.{what}}}}}"),
            name,
        ])
    };
    let (ip, len, gw) = (
        inspect("IPAddress"),
        inspect("IPPrefixLen"),
        inspect("Gateway"),
    );
    assert!(
        !ip.is_empty() && !gw.is_empty(),
        "the container has no address"
    );
    let (vip, peer) = (sibling(&ip, 250), sibling(&ip, 251));
    let key = sh_ok(name, "tandem keygen --dir /etc/tandem --node node1");
    assert!(key.contains("fingerprint: sha256:"), "{key}");
    sh_ok(name, "tandem keygen --dir /etc/tandem --node node2");
    let mut sed = format!(
        "sed -e 's/^listen: .*/listen: {ip}:7400/' \
             -e 's/^  address: 192.0.2.12:7400/  address: {peer}:7400/' \
             -e 's|^  address: 192.0.2.50/24|  address: {vip}/{len}|' \
             -e 's/witnesses: .*/witnesses: [{gw}]/'"
    );
    if let Some((start, stop)) = app {
        sed.push_str(&format!(
            " -e 's|^  start: .*|  start: {start}|' -e 's|^  stop: .*|  stop: {stop}|'"
        ));
    }
    sh_ok(name, &format!("{sed} {EXAMPLE} >/etc/tandem/app.yaml"));
    let (code, out, err) = sh(name, "tandem config check -c /etc/tandem/app.yaml");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "/etc/tandem/app.yaml: ok");
}

#[test]
fn sibling_replaces_the_last_octet() {
    assert_eq!(sibling("172.17.0.2", 250), "172.17.0.250");
}
