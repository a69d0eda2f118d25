//! `cargo xtask package`: the .deb (cargo-deb) and the .rpm (cargo-generate-rpm).
//!
//! What goes where is declared once per format in `agent/Cargo.toml`
//! (`[package.metadata.deb]`, `[package.metadata.generate-rpm]`); the maintainer
//! scripts are `packaging/debian/` and `packaging/rpm/`. This task prepares what
//! those declarations call `target/release/package-assets/` (cargo's name for the
//! chosen profile's directory): the binary with its debug information stripped,
//! the man pages (gzip-compressed, Debian policy 12.1) and the shell completions.
//! Then it checks the unit with `systemd-analyze verify` and runs the two tools,
//! installing them first with `cargo install --locked` where they are missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail, ensure};

use crate::{dist::dist, run};

/// The packaging tools, pinned: their metadata keys change between versions.
const CARGO_DEB: Tool = Tool {
    subcommand: "deb",
    krate: "cargo-deb",
    version: "3.8.0",
};
const CARGO_GENERATE_RPM: Tool = Tool {
    subcommand: "generate-rpm",
    krate: "cargo-generate-rpm",
    version: "0.21.1",
};

/// A cargo subcommand installed from crates.io.
struct Tool {
    subcommand: &'static str,
    krate: &'static str,
    version: &'static str,
}

/// Which packages to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    Deb,
    Rpm,
    All,
}

/// How to build the packages.
#[derive(Debug)]
pub(crate) struct Options {
    /// The cargo profile whose binary is packaged (`release`, or `dev` for the
    /// test suite's package of the binary under test).
    pub(crate) profile: String,
    /// Package the binary the profile already built instead of building it.
    pub(crate) no_build: bool,
    /// Where to write the packages (default TARGET/package).
    pub(crate) out: Option<PathBuf>,
    /// Faster, larger compression (cargo-deb's `--fast`, gzip for the .rpm):
    /// the default xz and zstd take a minute over a debug build's binary (the
    /// install tests package the binary under test). Not cargo-deb's `-Z gz`,
    /// which took minutes here.
    pub(crate) fast: bool,
}

/// Builds the packages and returns their paths.
pub(crate) fn package(root: &Path, kind: Kind, opts: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let target = crate::target_dir(root);
    // Cargo's directory for a profile: `dev` builds into `debug`.
    let profile_dir = match opts.profile.as_str() {
        "dev" => "debug",
        "test" | "bench" => bail!(
            "package the `dev` or `release` profile, not `{}`",
            opts.profile
        ),
        p => p,
    };
    if !opts.no_build {
        run(
            root,
            "cargo",
            &["build", "--profile", &opts.profile, "-p", "tandem"],
            &[],
        )?;
    }
    let bin = target.join(profile_dir).join("tandem");
    ensure!(
        bin.is_file(),
        "{} is missing: build it (cargo build --profile {} -p tandem) or drop --no-build",
        bin.display(),
        opts.profile
    );
    let out = opts.out.clone().unwrap_or_else(|| target.join("package"));
    mkdir(&out)?;
    let assets_dir = target.join(profile_dir).join("package-assets");
    assets(root, &bin, &assets_dir)?;
    verify_unit(
        root,
        &bin,
        &assets_dir.join("man"),
        &target.join("package/unit-verify"),
    )?;

    let out_s = s(&out)?;
    let mut built = Vec::new();
    if kind != Kind::Rpm {
        ensure_tool(root, &CARGO_DEB)?;
        // The binary is stripped already (keeping its symbols for backtraces);
        // cargo-deb's own strip would take the symbols too.
        let mut args = vec![
            "deb",
            "-p",
            "tandem",
            "--no-build",
            "--no-strip",
            "--profile",
            &opts.profile,
            "-o",
            &out_s,
        ];
        if opts.fast {
            args.push("--fast");
        }
        let printed = output_in(root, "cargo", &args)?;
        // cargo-deb prints the path of the package it wrote.
        let deb = printed
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.ends_with(".deb"))
            .context("cargo deb printed no .deb path")?;
        built.push(PathBuf::from(deb));
    }
    if kind != Kind::Deb {
        ensure_tool(root, &CARGO_GENERATE_RPM)?;
        let rpm = out.join(format!(
            "tandem-{}-1.{}.rpm",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        ));
        let rpm_s = s(&rpm)?;
        let mut args = vec![
            "generate-rpm",
            "-p",
            "agent",
            "--profile",
            &opts.profile,
            "-o",
            &rpm_s,
        ];
        if opts.fast {
            // zstd at its default level takes most of a minute over a debug
            // build's binary.
            args.extend(["--payload-compress", "gzip"]);
        }
        run(root, "cargo", &args, &[])?;
        built.push(rpm);
    }
    for p in &built {
        ensure!(p.is_file(), "{} was not written", p.display());
        eprintln!("built {}", p.display());
    }
    Ok(built)
}

/// Installs a packaging tool with `cargo install --locked` unless `cargo
/// SUBCOMMAND --version` already answers.
fn ensure_tool(root: &Path, tool: &Tool) -> anyhow::Result<()> {
    let found = Command::new("cargo")
        .args([tool.subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        run(
            root,
            "cargo",
            &[
                "install",
                "--locked",
                &format!("{}@{}", tool.krate, tool.version),
            ],
            &[],
        )
        .with_context(|| format!("cannot install {}", tool.krate))?;
    }
    Ok(())
}

/// Writes what the package metadata calls `package-assets/` into `dir` (emptied
/// first): `tandem`, `man/man1/*.1.gz`, `completions/{tandem.bash,_tandem,tandem.fish}`.
fn assets(root: &Path, bin: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    mkdir(dir)?;
    // Debug information triples the binary (release builds keep line tables for
    // backtraces); the symbols stay, so a backtrace still names functions.
    run(
        root,
        "objcopy",
        &["--strip-debug", &s(bin)?, &s(&dir.join("tandem"))?],
        &[],
    )?;
    // The completions and the man pages, the latter compressed here: cargo-deb
    // compresses man pages itself only when they are not build outputs, and
    // cargo-generate-rpm never does.
    let man1 = dist(dir)?;
    let pages = read_dir(&man1)?
        .iter()
        .map(|p| s(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut gzip = vec!["-9nf"];
    gzip.extend(pages.iter().map(String::as_str));
    run(root, "gzip", &gzip, &[])?;
    Ok(())
}

/// `systemd-analyze verify` on the shipped unit, instantiated as `tandem@app`:
/// unit syntax, the commands' executables and the `man:` documentation link. The
/// package is not installed on this machine, so a copy of the unit names the
/// binary being packaged and MANPATH the generated pages. Skipped, with a note,
/// where systemd-analyze is missing.
fn verify_unit(root: &Path, bin: &Path, manpath: &Path, work: &Path) -> anyhow::Result<()> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("xtask: systemd-analyze not found: the unit is not verified");
        return Ok(());
    }
    let unit = std::fs::read_to_string(root.join("packaging/systemd/tandem@.service"))
        .context("cannot read packaging/systemd/tandem@.service")?;
    mkdir(work)?;
    let copy = work.join("tandem@.service");
    std::fs::write(&copy, unit.replace("/usr/bin/tandem", &s(bin)?))
        .with_context(|| format!("cannot write {}", copy.display()))?;
    let instance = work.join("tandem@app.service");
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
        .env("MANPATH", manpath)
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

fn s(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Runs a command in `dir`, echoing it first, with its stderr shown; returns its
/// stdout (also shown).
fn output_in(dir: &Path, prog: &str, args: &[&str]) -> anyhow::Result<String> {
    eprintln!("+ {prog} {}", args.join(" "));
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {prog}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprint!("{text}");
    if !out.status.success() {
        bail!("`{prog} {}` failed ({})", args.join(" "), out.status);
    }
    Ok(text)
}

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The source files the package metadata names outside the build output,
    /// which must exist in the tree (a renamed document would otherwise only show
    /// when a package is built).
    fn static_sources(manifest: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in manifest.lines() {
            let line = line.trim_start();
            let source = if let Some(rest) = line.strip_prefix("[\"") {
                rest.split('"').next()
            } else if let Some(rest) = line.strip_prefix("{ source = \"") {
                rest.split('"').next()
            } else if let Some((key, value)) = line.split_once(" = \"") {
                key.ends_with("_script")
                    .then(|| value.trim_end_matches('"'))
            } else {
                None
            };
            if let Some(src) = source.filter(|s| !s.contains("target/release/")) {
                found.push(src.to_owned());
            }
        }
        found
    }

    #[test]
    fn every_static_asset_of_the_packages_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest =
            std::fs::read_to_string(root.join("agent/Cargo.toml")).expect("agent/Cargo.toml");
        let sources = static_sources(&manifest);
        // The unit, the README and the maintainer scripts at least, for both formats.
        assert!(sources.len() >= 15, "{sources:?}");
        for src in sources {
            // cargo-deb reads paths from the agent's directory, cargo-generate-rpm
            // from the workspace root (where xtask runs it).
            let base = if src.starts_with("../") {
                root.join("agent")
            } else {
                root.clone()
            };
            let pattern = base.join(&src);
            let (dir, name) = (
                pattern.parent().expect("a parent"),
                pattern.file_name().expect("a name").to_string_lossy(),
            );
            let matches = if let Some(suffix) = name.strip_prefix('*') {
                std::fs::read_dir(dir)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
                    })
                    .unwrap_or(false)
            } else {
                pattern.is_file()
            };
            assert!(matches, "{src} names no file");
        }
        assert!(root.join("packaging/debian/postinst").is_file());
    }
}
