//! `cargo xtask package`: the .deb (dpkg-deb) and the .rpm (rpmbuild).
//!
//! Both packages hold the same files, staged once by [`stage`]: the binary
//! (debug information stripped), the systemd unit `tandem@.service`, the man
//! pages, the completions, the example configurations and the documentation.
//! Only the places differ where the distributions differ (Debian's unit directory
//! is `/lib/systemd/system`, Fedora's `/usr/lib/systemd/system`; zsh's directory
//! for packaged completions).
//!
//! No configuration is installed in `/etc/tandem`: a configuration names this
//! node, its peer and their certificates, so there is no default that could run.
//! The examples go to `/usr/share/doc/tandem/examples`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail, ensure};

use crate::{dist::dist, run};

const NAME: &str = "tandem";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAINTAINER: &str = "Tandem developers <tandem@example.invalid>";
const HOMEPAGE: &str = "https://example.invalid/tandem";
const SUMMARY: &str = "high-availability pair for one application, with synchronous replication";
/// The long description, one paragraph (wrapped by [`deb_description`]).
const DESCRIPTION: &str = "Tandem turns two Linux servers into a high-availability pair for \
one stateful application (a Docker Compose stack, a database, any service) with no shared \
disk, no kernel module and no cluster stack. One agent per server captures every change \
under the replicated directories with eBPF and fanotify, ships the changed byte ranges to \
the peer over QUIC with mutual TLS, holds the application's fsyncs until the peer has the \
data, and moves a virtual IP and the application to the survivor when a server fails.";

/// Which packages to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    Deb,
    Rpm,
    All,
}

/// Where a distribution family puts what the packages install.
struct Layout {
    unit_dir: &'static str,
    zsh_dir: &'static str,
}

const DEBIAN: Layout = Layout {
    unit_dir: "lib/systemd/system",
    zsh_dir: "usr/share/zsh/vendor-completions",
};
const FEDORA: Layout = Layout {
    unit_dir: "usr/lib/systemd/system",
    zsh_dir: "usr/share/zsh/site-functions",
};

/// How to build the packages.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// The binary to package; without it the release build is made (`cargo build
    /// --release`).
    pub(crate) bin: Option<PathBuf>,
    /// Where to write the packages (default TARGET/package).
    pub(crate) out: Option<PathBuf>,
    /// gzip -1 instead of xz for the .deb: xz takes a minute over a debug build's
    /// 50 MB, gzip half a second (the install test packages the binary under test).
    pub(crate) fast: bool,
}

/// Builds the packages and returns their paths.
pub(crate) fn package(root: &Path, kind: Kind, opts: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let target = crate::target_dir(root);
    let bin = match &opts.bin {
        Some(b) => b.clone(),
        None => {
            run(root, "cargo", &["build", "--release", "-p", "tandem"], &[])?;
            target.join("release/tandem")
        }
    };
    ensure!(bin.is_file(), "{} is not a file", bin.display());
    let work = target.join("package");
    let out = opts.out.clone().unwrap_or_else(|| work.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let generated = dist(&target.join("dist"))?;
    let mut built = Vec::new();
    if kind != Kind::Rpm {
        let stage_dir = work.join("deb-root");
        stage(root, &bin, &generated, &stage_dir, &DEBIAN)?;
        verify_unit(&stage_dir, &DEBIAN, &work)?;
        built.push(deb(&stage_dir, &work, &out, opts.fast)?);
    }
    if kind != Kind::Deb {
        let stage_dir = work.join("rpm-root");
        stage(root, &bin, &generated, &stage_dir, &FEDORA)?;
        built.push(rpm(&stage_dir, &work, &out)?);
    }
    for p in &built {
        eprintln!("built {}", p.display());
    }
    Ok(built)
}

/// Lays out every file the packages install under `dir` (emptied first), with the
/// modes they must have whatever the umask.
fn stage(
    root: &Path,
    bin: &Path,
    generated: &crate::dist::Dist,
    dir: &Path,
    layout: &Layout,
) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let usr_bin = dir.join("usr/bin/tandem");
    mkdir(usr_bin.parent().context("no parent")?)?;
    // Debug information triples the binary (release builds keep line tables for
    // backtraces); the symbols stay, so a backtrace still names functions.
    run(
        root,
        "objcopy",
        &["--strip-debug", &s(bin)?, &s(&usr_bin)?],
        &[],
    )?;
    chmod(&usr_bin, 0o755)?;

    install(
        &root.join("packaging/systemd/tandem@.service"),
        &dir.join(layout.unit_dir).join("tandem@.service"),
    )?;

    let comp = &generated.completions;
    install(
        &comp.join("tandem.bash"),
        &dir.join("usr/share/bash-completion/completions/tandem"),
    )?;
    install(
        &comp.join("_tandem"),
        &dir.join(layout.zsh_dir).join("_tandem"),
    )?;
    install(
        &comp.join("tandem.fish"),
        &dir.join("usr/share/fish/vendor_completions.d/tandem.fish"),
    )?;

    // Man pages are installed compressed (Debian policy 12.1; rpm would compress
    // them itself, but the staged tree is shared).
    let man1 = dir.join("usr/share/man/man1");
    mkdir(&man1)?;
    for entry in read_dir(&generated.man)? {
        let name = entry.file_name().context("man page without a name")?;
        let to = man1.join(name);
        std::fs::copy(&entry, &to).with_context(|| format!("cannot copy {}", entry.display()))?;
        chmod(&to, 0o644)?;
        run(root, "gzip", &["-9nf", &s(&to)?], &[])?;
    }

    let doc = dir.join("usr/share/doc/tandem");
    for (from, to) in [
        ("README.md", "README.md"),
        ("docs/install.md", "install.md"),
        ("docs/configuration.md", "configuration.md"),
        ("docs/docker.md", "docker.md"),
        ("docs/metrics.md", "metrics.md"),
        ("packaging/grafana/tandem.json", "grafana/tandem.json"),
    ] {
        install(&root.join(from), &doc.join(to))?;
    }
    std::fs::write(doc.join("copyright"), COPYRIGHT).context("cannot write copyright")?;
    chmod(&doc.join("copyright"), 0o644)?;
    copy_tree(&root.join("packaging/examples"), &doc.join("examples"))?;

    // The directory operators put NAME.yaml and the node keys in; it is the
    // package's, so that it exists before the first `tandem keygen`.
    mkdir(&dir.join("etc/tandem"))?;
    Ok(())
}

/// `systemd-analyze verify` on the staged unit, instantiated as `tandem@app`: unit
/// syntax, the commands' executables and the `man:` documentation link. The
/// binary and the man pages are not installed on this machine, so a copy of the
/// unit names the staged binary and MANPATH the staged pages. Skipped, with a
/// note, where systemd-analyze is missing.
fn verify_unit(stage_dir: &Path, layout: &Layout, work: &Path) -> anyhow::Result<()> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("xtask: systemd-analyze not found: the unit is not verified");
        return Ok(());
    }
    let unit = std::fs::read_to_string(stage_dir.join(layout.unit_dir).join("tandem@.service"))
        .context("cannot read the staged unit")?;
    let dir = work.join("unit-verify");
    mkdir(&dir)?;
    let staged_bin = s(&stage_dir.join("usr/bin/tandem"))?;
    write_file(
        &dir.join("tandem@.service"),
        &unit.replace("/usr/bin/tandem", &staged_bin),
        0o644,
    )?;
    let instance = dir.join("tandem@app.service");
    eprintln!("+ systemd-analyze verify {}", instance.display());
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    // Without man-db the documentation check could only fail.
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("xtask: man not found: the unit's man: link is not checked");
        verify.arg("--man=no");
    }
    let out = verify
        .arg(&instance)
        .env("MANPATH", stage_dir.join("usr/share/man"))
        .output()
        .context("cannot run systemd-analyze")?;
    // It exits 0 with warnings on stderr too; any line is a problem to fix.
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {}",
        err.trim()
    );
    Ok(())
}

/// Builds the .deb from the staged tree.
fn deb(stage_dir: &Path, work: &Path, out: &Path, fast: bool) -> anyhow::Result<PathBuf> {
    let arch = output("dpkg", &["--print-architecture"])?;
    let depends = shlib_depends(&stage_dir.join("usr/bin/tandem"), work)?;
    let control_dir = stage_dir.join("DEBIAN");
    mkdir(&control_dir)?;

    let installed_kib = output("du", &["-sk", "--exclude=DEBIAN", &s(stage_dir)?])?;
    let installed_kib = installed_kib
        .split_whitespace()
        .next()
        .context("du printed nothing")?;
    let mut control = String::new();
    writeln!(control, "Package: {NAME}")?;
    writeln!(control, "Version: {VERSION}")?;
    writeln!(control, "Architecture: {arch}")?;
    writeln!(control, "Maintainer: {MAINTAINER}")?;
    writeln!(control, "Installed-Size: {installed_kib}")?;
    writeln!(control, "Depends: {depends}")?;
    // `ip` builds the lab's and the demo's namespaces; the agent itself speaks
    // netlink.
    writeln!(control, "Recommends: iproute2")?;
    writeln!(control, "Section: admin")?;
    writeln!(control, "Priority: optional")?;
    writeln!(control, "Homepage: {HOMEPAGE}")?;
    writeln!(control, "Description: {SUMMARY}")?;
    control.push_str(&deb_description(DESCRIPTION));
    write_file(&control_dir.join("control"), &control, 0o644)?;
    write_file(&control_dir.join("postinst"), DEB_POSTINST, 0o755)?;
    write_file(&control_dir.join("prerm"), DEB_PRERM, 0o755)?;
    write_file(&control_dir.join("postrm"), DEB_POSTRM, 0o755)?;
    let md5 = Command::new("sh")
        .args([
            "-c",
            "find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\\./||' | LC_ALL=C sort \
             | xargs -d '\\n' md5sum",
        ])
        .current_dir(stage_dir)
        .output()
        .context("cannot run md5sum")?;
    ensure!(
        md5.status.success(),
        "md5sum failed: {}",
        String::from_utf8_lossy(&md5.stderr).trim()
    );
    write_file(
        &control_dir.join("md5sums"),
        &String::from_utf8_lossy(&md5.stdout),
        0o644,
    )?;

    let deb = out.join(format!("{NAME}_{VERSION}_{arch}.deb"));
    let mut args = vec!["--root-owner-group"];
    if fast {
        args.extend(["-Zgzip", "-z1"]);
    }
    let (from, to) = (s(stage_dir)?, s(&deb)?);
    args.extend(["--build", &from, &to]);
    run(stage_dir, "dpkg-deb", &args, &[])?;
    Ok(deb)
}

/// The `Depends` the binary's shared libraries call for, with the minimum
/// versions of the symbols it uses, as dpkg-shlibdeps computes them (it wants a
/// `debian/control` in its working directory, so it gets a scratch one).
fn shlib_depends(bin: &Path, work: &Path) -> anyhow::Result<String> {
    let scratch = work.join("shlibdeps");
    mkdir(&scratch.join("debian"))?;
    std::fs::write(
        scratch.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n"),
    )
    .context("cannot write the scratch debian/control")?;
    let out = Command::new("dpkg-shlibdeps")
        .args(["-O", "--warnings=0"])
        .arg(bin)
        .current_dir(&scratch)
        .output()
        .context("cannot run dpkg-shlibdeps (apt-get install dpkg-dev)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "dpkg-shlibdeps failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(depends.trim().to_owned())
}

/// A Debian long description: lines of at most 79 columns, each starting with a
/// space.
fn deb_description(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 78 {
            out.push(' ');
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push(' ');
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Builds the .rpm from the staged tree with rpmbuild, which computes the
/// `Requires` on shared libraries itself.
fn rpm(stage_dir: &Path, work: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let top = work.join("rpmbuild");
    if top.exists() {
        std::fs::remove_dir_all(&top)
            .with_context(|| format!("cannot remove {}", top.display()))?;
    }
    mkdir(&top)?;
    let arch = std::env::consts::ARCH;
    let mut files = String::new();
    // Directories shared with other packages are not listed (only their contents);
    // the package's own directories are, so that erasing it removes them.
    for own in ["/etc/tandem", "/usr/share/doc/tandem"] {
        writeln!(files, "%dir {own}")?;
    }
    for f in walk(stage_dir)? {
        let rel = f.strip_prefix(stage_dir).context("outside the stage")?;
        writeln!(files, "/{}", rel.display())?;
    }
    let spec = format!(
        "Name: {NAME}\n\
         Version: {VERSION}\n\
         Release: 1\n\
         Summary: {SUMMARY}\n\
         License: Apache-2.0\n\
         URL: {HOMEPAGE}\n\
         Packager: {MAINTAINER}\n\
         BuildArch: {arch}\n\
         Recommends: iproute\n\
         \n\
         # The binary is built and stripped by cargo xtask; rpmbuild only packs it.\n\
         %global debug_package %{{nil}}\n\
         %global __os_install_post %{{nil}}\n\
         %global _build_id_links none\n\
         \n\
         %description\n\
         {DESCRIPTION}\n\
         \n\
         %install\n\
         cp -a {stage}/. %{{buildroot}}/\n\
         \n\
         %files\n\
         {files}\n\
         %post\n{RPM_POST}\n\
         %preun\n{RPM_PREUN}\n\
         %postun\n{RPM_POSTUN}\n",
        stage = s(stage_dir)?,
    );
    let spec_path = top.join("tandem.spec");
    write_file(&spec_path, &spec, 0o644)?;
    run(
        work,
        "rpmbuild",
        &[
            "-bb",
            "--define",
            &format!("_topdir {}", s(&top)?),
            "--define",
            &format!("_rpmdir {}", s(out)?),
            "--define",
            "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
            &s(&spec_path)?,
        ],
        &[],
    )
    .context("rpmbuild failed (apt-get install rpm)")?;
    Ok(out.join(format!("{NAME}-{VERSION}-1.{arch}.rpm")))
}

/// Debian: reload systemd so that it sees the new or changed unit. Running
/// instances are not restarted on an upgrade: restarting an agent stops and starts
/// its application (an outage on the PRIM), so the operator chooses the moment
/// (docs/install.md: upgrade the SECOND, swap, upgrade the other).
const DEB_POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
";

/// Debian: on removal (not on an upgrade), the agents stop before their binary
/// goes; a running agent whose binary is gone could not be restarted by systemd.
const DEB_PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop 'tandem@*.service' >/dev/null 2>&1 || true
fi
";

/// Debian: systemd forgets the unit once it is gone. /etc/tandem's keys and
/// configurations and the state directories are left, also on purge: they are
/// the operator's, and the state decides which node may run the application.
const DEB_POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
";

/// RPM scriptlets: the same as the Debian ones (`$1` counts the versions left).
const RPM_POST: &str =
    "if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi";
const RPM_PREUN: &str = "if [ \"$1\" -eq 0 ] && [ -d /run/systemd/system ]; then \
systemctl stop 'tandem@*.service' >/dev/null 2>&1 || :; fi";
const RPM_POSTUN: &str =
    "if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi";

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tandem
Source: https://example.invalid/tandem

Files: *
Copyright: Tandem developers
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
";

fn s(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn output(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Copies a regular file to `to` (creating its directory) with mode 0644.
fn install(from: &Path, to: &Path) -> anyhow::Result<()> {
    mkdir(to.parent().context("no parent")?)?;
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    chmod(to, 0o644)
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    chmod(path, mode)
}

/// The entries of a directory, sorted.
fn read_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        v.push(e?.path());
    }
    v.sort();
    Ok(v)
}

/// Every regular file below `dir`, sorted.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in read_dir(&d)? {
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Copies a tree of regular files (directories 0755, files 0644).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    mkdir(to)?;
    for p in read_dir(from)? {
        let name = p.file_name().context("entry without a name")?;
        if p.is_dir() {
            copy_tree(&p, &to.join(name))?;
        } else {
            install(&p, &to.join(name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_description_lines_are_indented_and_short() {
        let d = deb_description(DESCRIPTION);
        assert!(d.lines().count() > 3);
        for line in d.lines() {
            assert!(line.starts_with(' ') && !line.starts_with("  "), "{line:?}");
            assert!(line.len() <= 79, "{line:?}");
        }
        assert_eq!(
            d.split_whitespace().collect::<Vec<_>>(),
            DESCRIPTION.split_whitespace().collect::<Vec<_>>()
        );
    }
}
