//! Developer tasks, run as `cargo xtask <task>`: the generated vmlinux header, lint,
//! the whole test suite (unprivileged and privileged parts), the demo, benchmarks,
//! the man pages and completions (`dist`) and the packages (`package`).
//!
//! Every task is a plain sequence of commands, printed before it runs, so that what
//! CI does can be repeated by hand.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod dist;
mod package;

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Regenerates agent-ebpf/src/bpf/vmlinux/x86_64/vmlinux.h from this kernel's BTF.
    Vmlinux,
    /// rustfmt check, clippy with warnings denied, and the tidy checks.
    Lint,
    /// The whole test suite: lint, unit tests, then the privileged integration tests.
    Test {
        /// Seeds of the capture oracle (tests/tests/capture), comma separated.
        #[arg(long, default_value = "1,2,3")]
        seeds: String,
        /// Operations of the capture oracle's workload per seed.
        #[arg(long, default_value_t = 10_000)]
        oracle_ops: u32,
        /// Skip lint (for quick local runs; CI does not skip it).
        #[arg(long)]
        no_lint: bool,
        /// Skip the capture oracle (for quick local runs; CI does not skip it).
        #[arg(long)]
        no_oracle: bool,
    },
    /// Builds the agent in release mode and runs the benchmarks, printing their
    /// reports: `capture` (issue 2), `repl` (issue 3, two-node lab), both (`all`),
    /// or `failover` (issue 4, HA pair failover time; not part of `all`: until
    /// Tandem's failover is wired it measures keepalived's baseline only).
    Bench {
        /// Which benchmark: `capture`, `repl`, `all` (those two) or `failover`.
        #[arg(default_value = "all", value_parser = ["all", "capture", "repl", "failover"])]
        which: String,
        /// Options passed on to the benchmark binary (with one benchmark only).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Generates the man pages and the bash, zsh and fish completions from the
    /// command line's definitions, into TARGET/dist/{man,completions}.
    Dist,
    /// Builds the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) into
    /// TARGET/package, installing either tool with `cargo install` if it is
    /// missing.
    Package {
        /// Which packages: `deb`, `rpm` or both (`all`).
        #[arg(value_enum, default_value = "all")]
        kind: package::Kind,
        /// The cargo profile to package (`release`, or `dev` for tests).
        #[arg(long, default_value = "release")]
        profile: String,
        /// Package what the profile already built instead of building it (the
        /// install test packages the binary under test).
        #[arg(long)]
        no_build: bool,
        /// Where to write the packages (default TARGET/package).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Compress faster and less (cargo-deb's --fast, gzip for the .rpm):
        /// seconds instead of a minute for a debug build; for tests.
        #[arg(long)]
        fast: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.task {
        Task::Vmlinux => vmlinux(&root),
        Task::Lint => lint(&root),
        Task::Test {
            seeds,
            oracle_ops,
            no_lint,
            no_oracle,
        } => {
            let oracle = (!no_oracle).then_some(Oracle {
                seeds,
                ops: oracle_ops,
            });
            test(&root, no_lint, oracle.as_ref())
        }
        Task::Bench { which, args } => bench(&root, &which, &args),
        Task::Dist => dist::dist(&target_dir(&root).join("dist")).map(drop),
        Task::Package {
            kind,
            profile,
            no_build,
            out,
            fast,
        } => package::package(
            &root,
            kind,
            &package::Options {
                profile,
                no_build,
                out,
                fast,
            },
        )
        .map(drop),
    }
}

/// Cargo's target directory: CARGO_TARGET_DIR (relative to the workspace root when
/// relative, as cargo reads it) or `target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d))
}

/// Runs the chosen benchmarks against the release build of the agent.
fn bench(root: &Path, which: &str, args: &[String]) -> anyhow::Result<()> {
    if which == "all" && !args.is_empty() {
        bail!(
            "options after `--` need one benchmark: `cargo xtask bench capture|repl|failover -- ...`"
        );
    }
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let bench_bin = |name: &'static str| {
        let mut a = vec!["run", "--release", "-p", "tandem-tests", "--bin", name];
        if !extra.is_empty() {
            a.push("--");
            a.extend(&extra);
        }
        a
    };
    if which == "failover" {
        // keepalived is installed by the benchmark itself (it knows which systems
        // it measures); Tandem's side will need the release agent.
        return run(root, "cargo", &bench_bin("failover-bench"), &[]);
    }
    if which != "repl" {
        // capture-bench builds the release agent itself.
        run(root, "cargo", &bench_bin("capture-bench"), &[])?;
    }
    if which != "capture" {
        // The replication benchmark compares Tandem's resync with rsync.
        if !Command::new("rsync")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            run(root, "apt-get", &["install", "-y", "rsync"], &[])?;
        }
        run(root, "cargo", &["build", "--release", "-p", "tandem"], &[])?;
        let bin = target_dir(root).join("release/tandem");
        let bin = bin.to_string_lossy();
        run(
            root,
            "cargo",
            &bench_bin("repl-bench"),
            &[("TANDEM_BIN", &bin)],
        )?;
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").context("run through `cargo xtask`")?;
    Path::new(&dir)
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Runs a command in `dir`, echoing it first; a failure names the command.
fn run(dir: &Path, prog: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("+ {prog} {}", args.join(" "));
    let status = Command::new(prog)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {prog}"))?;
    if !status.success() {
        bail!("`{prog} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn vmlinux(root: &Path) -> anyhow::Result<()> {
    let out = root.join("agent-ebpf/src/bpf/vmlinux/x86_64/vmlinux.h");
    let dump = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "c",
        ])
        .output()
        .context("cannot run bpftool (apt-get install bpftool)")?;
    if !dump.status.success() {
        bail!("bpftool failed: {}", String::from_utf8_lossy(&dump.stderr));
    }
    std::fs::write(&out, dump.stdout).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn lint(root: &Path) -> anyhow::Result<()> {
    run(root, "cargo", &["fmt", "--all", "--check"], &[])?;
    run(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The agent without its optional parts (the `docker` checker) must build too.
    run(
        root,
        "cargo",
        &[
            "clippy",
            "-p",
            "tandem",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    tidy(root)
}

/// House rules no compiler checks: every crate opts into the workspace lints and
/// every Rust source starts with a module doc comment.
fn tidy(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for krate in ["agent", "agent-common", "agent-ebpf", "xtask", "tests"] {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))?;
        if !manifest.contains("[lints]\nworkspace = true") {
            problems.push(format!(
                "{krate}/Cargo.toml does not set [lints] workspace = true"
            ));
        }
        let mut stack = vec![root.join(krate)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() && !path.ends_with("target") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path)?;
                    if !text.trim_start().starts_with("//!") {
                        problems.push(format!("{} has no `//!` module doc", path.display()));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("tidy:\n{}", problems.join("\n"));
    }
    eprintln!("tidy: ok");
    Ok(())
}

/// What the capture oracle runs: its seeds and the operations per seed.
struct Oracle {
    seeds: String,
    ops: u32,
}

fn test(root: &Path, no_lint: bool, oracle: Option<&Oracle>) -> anyhow::Result<()> {
    if !no_lint {
        lint(root)?;
    }
    if !nix_is_root() {
        bail!("the test suite needs root (eBPF, fanotify, namespaces): run it with sudo");
    }
    run(
        root,
        "cargo",
        &["build", "--workspace", "--all-targets"],
        &[],
    )?;
    run(
        root,
        "cargo",
        &["test", "--workspace", "--exclude", "tandem-tests"],
        &[],
    )?;
    let bin = target_dir(root).join("debug/tandem");
    let bin = bin.to_string_lossy();
    run(root, "cargo", &["test", "-p", "tandem-tests", "--lib"], &[])?;
    // The capture oracle: a random workload of every kind of change, from several
    // processes at once, compared with what `tandem capture` reported (about 10 s
    // a seed). Before the lab tests, which build on capture.
    match oracle {
        Some(o) => {
            let ops = o.ops.to_string();
            integration_tests(
                root,
                "capture",
                &[
                    ("TANDEM_BIN", &bin),
                    ("TANDEM_ORACLE_SEEDS", &o.seeds),
                    ("TANDEM_ORACLE_OPS", &ops),
                ],
            )?;
        }
        None => eprintln!("xtask: capture oracle skipped (--no-oracle)"),
    }
    // The docker target's install tests install packages of the binary under test.
    let opts = package::Options {
        profile: "dev".to_owned(),
        no_build: true,
        out: Some(target_dir(root).join("package/test")),
        fast: true,
    };
    let packages = package::package(root, package::Kind::All, &opts)?;
    let find = |ext: &str| {
        packages
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .map(|p| p.to_string_lossy().into_owned())
            .with_context(|| format!("no .{ext} was built"))
    };
    let (deb, rpm) = (find("deb")?, find("rpm")?);
    // Replication and failover in a two-node lab: heavy (two agents with eBPF each),
    // one at a time; then containers under the durability barrier, through a real
    // Docker daemon, and the package's install test.
    for target in ["replication", "failover", "docker"] {
        integration_tests(
            root,
            target,
            &[
                ("TANDEM_BIN", &bin),
                ("TANDEM_DEB", &deb),
                ("TANDEM_RPM", &rpm),
            ],
        )?;
    }
    Ok(())
}

/// One integration test target of `tandem-tests`, its tests one at a time (they
/// share the machine's namespaces, eBPF programs and Docker daemon).
fn integration_tests(root: &Path, target: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    run(
        root,
        "cargo",
        &[
            "test",
            "-p",
            "tandem-tests",
            "--test",
            target,
            "--",
            "--test-threads=1",
        ],
        env,
    )
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
