//! The packages, installed into a fresh Debian 12 (the base image of `debian`):
//! - the .deb with `dpkg -i` in a container: the binary runs with what a bare
//!   Debian 12 has, `tandem config check` works on the shipped example, the unit,
//!   man pages and completions are where systemd, man and the shells look, and
//!   `dpkg -r` removes everything the package installed;
//! - the .rpm with Debian's `rpm --root` into a copy of the same root filesystem
//!   (there is no RPM distribution image without a registry): its scriptlets run
//!   there, its files verify, the binary runs and checks the example, and `rpm -e`
//!   removes everything it installed.
//!
//! Containers (`tandem-test-pkg-*`) and copies are removed on every exit; the
//! base image is kept, as the PostgreSQL one is.

use std::{path::Path, process::Command, time::Instant};

use crate::{
    ContainerName,
    debian::{EXAMPLE, Format, configure, debian_image, package, sh, sh_ok},
    docker_ok, serial,
};

/// Every path of a root filesystem, sorted (for what a removal leaves behind).
const FIND_ALL: &str = "find / -xdev -path /proc -prune -o -print | LC_ALL=C sort";

#[test]
fn deb_installs_in_a_fresh_debian_checks_its_example_and_removes_cleanly() {
    let Some(_serial) = serial() else { return };
    let image = debian_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = package(Format::Deb, dir.path());
    let started = Instant::now();

    let name = ContainerName::of_kind("test-pkg");
    let mount = format!("{}:/tmp/tandem.deb:ro", deb.display());
    docker_ok(&[
        "run", "-d", "--name", &name.0, "-v", &mount, &image, "sleep", "300",
    ]);
    let n = name.0.as_str();
    let before = sh_ok(n, FIND_ALL);

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

    // Configured for this container as an operator would.
    configure(n, None);

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
    let after = sh_ok(n, FIND_ALL);
    let left: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .filter(|l| !l.starts_with("/var/lib/dpkg/") && !l.starts_with("/var/log/"))
        .collect();
    assert!(left.is_empty(), "dpkg -r left files behind: {left:?}");
    eprintln!("installed, checked and removed in {:?}", started.elapsed());
}

/// Where the .rpm installs into directories it does not own (see the test).
const SHARED_DIRS: [&str; 5] = [
    "./usr/share/fish",
    "./usr/share/fish/vendor_completions.d",
    "./usr/share/licenses",
    "./usr/share/zsh/site-functions",
    "./usr/lib/systemd/system",
];

/// `rpm --root ROOT ARGS`, which must succeed; returns its stdout.
fn rpm(root: &Path, args: &[&str]) -> String {
    let out = Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run rpm (apt-get install rpm)");
    assert!(
        out.status.success(),
        "rpm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `chroot ROOT sh -c SCRIPT`: (exit status, stdout + stderr).
fn chroot(root: &Path, script: &str) -> (i32, String) {
    let out = Command::new("chroot")
        .arg(root)
        .args(["sh", "-c", script])
        .output()
        .expect("run chroot");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Every path under `root`, relative and sorted.
fn tree(root: &Path) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -xdev | LC_ALL=C sort")
        .arg("sh")
        .arg(root)
        .output()
        .expect("run find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn rpm_installs_into_a_debian_root_verifies_and_erases_cleanly() {
    let Some(_serial) = serial() else { return };
    let image = debian_image();
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let pkg = package(Format::Rpm, dir.path());
    let started = Instant::now();

    // The image's root filesystem, as a directory to install into.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    let name = ContainerName::of_kind("test-rpm");
    docker_ok(&["create", "--name", &name.0, &image, "true"]);
    let export = Command::new("sh")
        .arg("-c")
        .arg("docker export \"$1\" | tar -x -C \"$2\"")
        .arg("sh")
        .arg(&name.0)
        .arg(&root)
        .status()
        .expect("docker export");
    assert!(export.success(), "docker export | tar failed");

    rpm(&root, &["--initdb"]);
    let before = tree(&root);
    // --nodeps: this root's libraries were installed by dpkg, so its rpm database
    // does not know them (the Requires are checked below instead).
    let pkg_s = pkg.to_string_lossy();
    rpm(&root, &["-i", "--nodeps", &pkg_s]);
    let requires = rpm(&root, &["-q", "--requires", "tandem"]);
    assert!(requires.contains("libc.so.6(GLIBC_"), "{requires}");
    assert!(
        rpm(&root, &["-V", "--nodeps", "tandem"]).trim().is_empty(),
        "the installed files differ from the package"
    );
    let files = rpm(&root, &["-ql", "tandem"]);
    for f in [
        "/usr/bin/tandem",
        "/usr/lib/systemd/system/tandem@.service",
        "/usr/share/man/man1/tandem.1.gz",
        "/usr/share/bash-completion/completions/tandem",
        "/usr/share/zsh/site-functions/_tandem",
        "/usr/share/doc/tandem/examples/app.yaml",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} is not in the package");
    }
    // The post-install scriptlet made the operators' directory.
    assert!(root.join("etc/tandem").is_dir(), "no /etc/tandem");

    let (code, version) = chroot(&root, "tandem --version");
    assert_eq!(code, 0, "{version}");
    assert_eq!(
        version.trim(),
        format!("tandem {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out) = chroot(&root, &format!("tandem config check -c {EXAMPLE}"));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("identity.certificate: cannot read"), "{out}");

    rpm(&root, &["-e", "tandem"]);
    std::fs::remove_dir(root.join("etc/tandem")).expect("/etc/tandem is left, empty");
    let left: Vec<String> = tree(&root)
        .into_iter()
        .filter(|l| !before.contains(l))
        // The rpm database itself.
        .filter(|l| !l.starts_with("./var/lib/rpm") && !l.starts_with("./usr/lib/sysimage/rpm"))
        // Directories shared by many packages, which RPM distributions' own
        // `filesystem` package owns; in this Debian root nothing does, so rpm
        // made them and leaves them.
        .filter(|l| !SHARED_DIRS.contains(&l.as_str()))
        .collect();
    assert!(left.is_empty(), "rpm -e left files behind: {left:?}");
    eprintln!("installed, verified and erased in {:?}", started.elapsed());
}
