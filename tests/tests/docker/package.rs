//! The .deb, installed with `dpkg -i` in a fresh Debian 12 container (image
//! `tandem/debian:12-HASH`, a debootstrap minbase built once by
//! `tests/docker/debian/build-image.sh` and kept by recipe hash): the binary runs
//! with what a bare Debian 12 has, `tandem config check` works on the shipped
//! example, the unit, man pages and completions are where systemd, man and the
//! shells look, and `dpkg -r` removes everything the package installed.
//!
//! The package is `TANDEM_DEB` when set (`cargo xtask test` builds it from the
//! binary under test), otherwise this test makes one with `cargo xtask package deb
//! --fast --bin TANDEM_BIN`. The container (`tandem-test-pkg-*`) is removed on every
//! exit; the base image is kept, as the PostgreSQL one is.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use crate::{ContainerName, docker, docker_ok, serial};

/// The example the package ships and the test configures.
const EXAMPLE: &str = "/usr/share/doc/tandem/examples/app.yaml";

/// Builds the base image, or finds it; returns its tag.
fn debian_image() -> String {
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

/// The .deb under test, built into `dir` unless `TANDEM_DEB` names one.
fn deb(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("TANDEM_DEB") {
        return PathBuf::from(p);
    }
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = tandem_tests::lab::tandem_bin();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["xtask", "package", "deb", "--fast", "--bin"])
        .arg(&bin)
        .arg("--out")
        .arg(dir)
        .current_dir(&root)
        .output()
        .expect("run cargo xtask package");
    assert!(
        out.status.success(),
        "cargo xtask package deb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::fs::read_dir(dir)
        .expect("read the package directory")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo xtask package wrote no .deb");
    eprintln!("packaged {} in {:?}", bin.display(), started.elapsed());
    deb
}

/// `sh -c SCRIPT` in the container: (exit status, stdout, stderr).
fn sh(name: &str, script: &str) -> (i32, String, String) {
    let out = docker(&["exec", name, "sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sh -c SCRIPT` in the container, which must succeed; returns its stdout.
fn sh_ok(name: &str, script: &str) -> String {
    let (code, out, err) = sh(name, script);
    assert_eq!(code, 0, "`{script}` failed:\n{out}{err}");
    out
}

/// An address of the container's network with the last octet replaced (the
/// default bridge is a /16, so .250/.251 of the container's /24 are unused unless
/// some other container sits exactly there; `config check` sends nothing to them).
fn sibling(ip: &str, last: u8) -> String {
    let (prefix, _) = ip.rsplit_once('.').expect("an IPv4 address");
    format!("{prefix}.{last}")
}

#[test]
fn deb_installs_in_a_fresh_debian_checks_its_example_and_removes_cleanly() {
    let Some(_serial) = serial() else { return };
    let image = debian_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = deb(dir.path());
    let started = Instant::now();

    let name = ContainerName::of_kind("test-pkg");
    let mount = format!("{}:/tmp/tandem.deb:ro", deb.display());
    docker_ok(&[
        "run", "-d", "--name", &name.0, "-v", &mount, &image, "sleep", "300",
    ]);
    let n = name.0.as_str();
    let before = sh_ok(
        n,
        "find / -xdev -path /proc -prune -o -print | LC_ALL=C sort",
    );

    // Every dependency is in a bare Debian 12: dpkg -i would fail otherwise (there
    // is no apt source to fetch anything from).
    let (code, out, err) = sh(n, "dpkg -i /tmp/tandem.deb");
    assert_eq!(code, 0, "dpkg -i failed:\n{out}{err}");
    let version = sh_ok(n, "tandem --version");
    assert_eq!(
        version.trim(),
        format!("tandem {}", env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    sh_ok(n, "test -f /lib/systemd/system/tandem@.service");
    let unit = sh_ok(n, "cat /lib/systemd/system/tandem@.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/tandem run -c /etc/tandem/%i.yaml"),
        "{unit}"
    );
    for page in ["tandem.1.gz", "tandem-run.1.gz", "tandem-config-check.1.gz"] {
        sh_ok(n, &format!("gzip -t /usr/share/man/man1/{page}"));
    }
    for f in [
        "/usr/share/bash-completion/completions/tandem",
        "/usr/share/zsh/vendor-completions/_tandem",
        "/usr/share/fish/vendor_completions.d/tandem.fish",
        "/usr/share/doc/tandem/copyright",
    ] {
        sh_ok(n, &format!("test -s {f}"));
    }
    // The example as shipped: its certificate files do not exist yet, and every
    // problem is reported with line, column and key, with EX_CONFIG.
    let (code, out, err) = sh(n, &format!("tandem config check -c {EXAMPLE}"));
    assert_eq!(code, 78, "{out}{err}");
    assert!(
        out.contains("identity.certificate: cannot read")
            && out.contains("peer.certificate: cannot read"),
        "{out}"
    );

    // Configured for this container as an operator would: keys made with
    // `tandem keygen` in /etc/tandem, the addresses of its network (the VIP and
    // the peer beside it, the gateway as the witness).
    let ip = docker_ok(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", n]);
    let len = docker_ok(&["inspect", "--format", "{{.NetworkSettings.IPPrefixLen}}", n]);
    let gw = docker_ok(&["inspect", "--format", "{{.NetworkSettings.Gateway}}", n]);
    assert!(
        !ip.is_empty() && !gw.is_empty(),
        "the container has no address"
    );
    let (vip, peer) = (sibling(&ip, 250), sibling(&ip, 251));
    let key = sh_ok(n, "tandem keygen --dir /etc/tandem --node node1");
    assert!(key.contains("fingerprint: sha256:"), "{key}");
    sh_ok(n, "tandem keygen --dir /etc/tandem --node node2");
    sh_ok(
        n,
        &format!(
            "sed -e 's/^listen: .*/listen: {ip}:7400/' \
                 -e 's/^  address: 192.0.2.12:7400/  address: {peer}:7400/' \
                 -e 's|^  address: 192.0.2.50/24|  address: {vip}/{len}|' \
                 -e 's/witnesses: .*/witnesses: [{gw}]/' \
                 {EXAMPLE} >/etc/tandem/app.yaml"
        ),
    );
    let (code, out, err) = sh(n, "tandem config check -c /etc/tandem/app.yaml");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "/etc/tandem/app.yaml: ok");

    // Removal takes everything the package installed; /etc/tandem stays with the
    // operator's files in it.
    let (code, out, err) = sh(n, "dpkg -r tandem");
    assert_eq!(code, 0, "dpkg -r failed:\n{out}{err}");
    let (code, ..) = sh(n, "command -v tandem");
    assert_ne!(code, 0, "tandem is still on the PATH");
    let status = sh_ok(
        n,
        "dpkg-query -W -f='${db:Status-Abbrev}' tandem 2>/dev/null || true",
    );
    assert!(!status.starts_with("ii"), "dpkg says {status:?}");
    sh_ok(n, "rm -r /etc/tandem");
    let after = sh_ok(
        n,
        "find / -xdev -path /proc -prune -o -print | LC_ALL=C sort",
    );
    let left: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .filter(|l| !l.starts_with("/var/lib/dpkg/") && !l.starts_with("/var/log/"))
        .collect();
    assert!(left.is_empty(), "dpkg -r left files behind: {left:?}");
    eprintln!("installed, checked and removed in {:?}", started.elapsed());
}

#[test]
fn sibling_replaces_the_last_octet() {
    assert_eq!(sibling("172.17.0.2", 250), "172.17.0.250");
}
