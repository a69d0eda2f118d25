//! The command line: one function per command, and the mapping of outcomes to exit
//! codes. Errors are printed as one line with their causes. The clap definitions
//! are in `args`, which depends on nothing but clap and std so that `cargo xtask
//! dist` can compile it too and generate the man page and shell completions from
//! it without building the agent.

pub mod args;
mod logging;

use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Context;
use clap::Parser;

pub use self::args::Cli;
use self::args::{
    CaptureArgs, Command, ConfigArg, ConfigCommand, ConsoleCommand, DemoArgs, ExecArgs, KeygenArgs,
    StatusArgs, SwapArgs,
};

use crate::capture::{
    change::{Change, JsonSink, Op, Sink},
    engine::{CaptureError, Engine, Settings},
};

/// Exit codes, as systemd and operators see them (after sysexits.h).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
enum Exit {
    Failure = 1,
    NoPermission = 77,
    Unavailable = 69,
    /// EX_CONFIG: the configuration is wrong.
    Config = 78,
}

/// `tandem config check` found problems; they were printed already.
#[derive(Debug, thiserror::Error)]
#[error("{}: the configuration has problems", .0.display())]
struct ConfigCheckFailed(PathBuf);

/// Set by SIGINT/SIGTERM; the running command winds down when it sees it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Parses the command line, runs the command and maps its outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent logs what it does (state changes with their reasons, the
    // application's output) at info; the other commands print their results
    // and only warn.
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    logging::init(default_level);
    let result = match cli.command {
        Command::Capture(args) => capture(&args),
        Command::Demo(args) => demo(&args),
        Command::Lab(args) => crate::lab::cmd::run_cli(&args, &TransportKeygen),
        Command::Run(args) => crate::runtime::run(&args.config),
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Console(ConsoleCommand::HashPassword) => hash_password(),
        Command::Status(args) => status(&args),
        Command::Prim(args) => admin(&args.config, "prim", args.force),
        Command::Second(args) => admin(&args, "second", false),
        Command::Swap(args) => swap(&args),
        Command::Stop(args) => stop(&args),
        Command::Start(args) => admin(&args, "start", false),
        Command::Exec(args) => exec(&args),
        Command::Keygen(args) => keygen(&args),
        Command::Completions(args) => completions(args.shell),
        Command::OciRuntime(args) => {
            Err(crate::barrier::oci::run_oci_runtime(&args.runc, &args.listener, &args.args).into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            ExitCode::from(exit_of(&e) as u8)
        }
    }
}

/// Writes the completion script of `shell` to standard output.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    write_completions(shell, &mut out);
    out.flush().context("cannot write the completions")
}

fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "tandem", out);
}

fn exit_of(e: &anyhow::Error) -> Exit {
    if e.is::<ConfigCheckFailed>() {
        return Exit::Config;
    }
    if let Some(c) = e.downcast_ref::<CaptureError>() {
        let text = c.to_string();
        if text.contains("needs root") {
            return Exit::NoPermission;
        }
        if matches!(c, CaptureError::Ebpf(_) | CaptureError::Fanotify(_)) {
            return Exit::Unavailable;
        }
    }
    Exit::Failure
}

fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let cfg =
        crate::config::Config::load(&args.config.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = crate::runtime::control::query_status(&cfg.control_socket).unwrap_or_else(|_| {
        crate::status::Status {
            node: cfg.node.clone(),
            reason: "no agent answers on the control socket".into(),
            peer: crate::status::Peer {
                name: cfg.peer.name.clone(),
                ..Default::default()
            },
            ..Default::default()
        }
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        use std::io::IsTerminal;
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", crate::status::render(&status, color));
    }
    Ok(())
}

fn config_check(args: &ConfigArg) -> anyhow::Result<()> {
    let outcome = crate::config::check_file(&args.config, &crate::config::Host::this());
    let mut out = std::io::stdout().lock();
    for line in &outcome.lines {
        writeln!(out, "{line}").context("cannot write to standard output")?;
    }
    if outcome.ok {
        Ok(())
    } else {
        Err(ConfigCheckFailed(args.config.clone()).into())
    }
}

/// Prints the PHC string of the password on standard input's first line. The
/// password is read from a pipe or a terminal, never from the command line, where
/// every user could see it in the process list.
fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("the password is empty; write it on standard input");
    }
    println!("{}", crate::console::hash_password(password)?);
    Ok(())
}

fn admin(config: &ConfigArg, op: &str, force: bool) -> anyhow::Result<()> {
    let cfg = crate::config::Config::load(&config.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::runtime::control::send_admin(&cfg.control_socket, op, force)
}

/// Stops the module and waits until the application and the VIP are gone, so
/// that what runs next (maintenance, a package upgrade) finds them stopped.
fn stop(config: &ConfigArg) -> anyhow::Result<()> {
    use crate::status::State;
    let cfg = crate::config::Config::load(&config.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::runtime::control::send_admin(&cfg.control_socket, "stop", false)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let s = crate::runtime::control::query_status(&cfg.control_socket)?;
        if s.state == State::Stop && !s.application.running && !s.vip.held {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} did not stop in time: {} ({})",
                s.node,
                s.state.as_str(),
                s.reason
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Asks for a swap and waits until this node's role has flipped.
fn swap(args: &SwapArgs) -> anyhow::Result<()> {
    use crate::status::State;
    let cfg =
        crate::config::Config::load(&args.config.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let before = crate::runtime::control::query_status(&cfg.control_socket)?.state;
    let want: &[State] = match before {
        State::Prim | State::Alone => &[State::Second],
        State::Second => &[State::Prim, State::Alone],
        other => anyhow::bail!("this node is {}: swap needs PRIM or SECOND", other.as_str()),
    };
    crate::runtime::control::send_admin(&cfg.control_socket, "swap", false)?;
    if args.no_wait {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
    loop {
        let s = crate::runtime::control::query_status(&cfg.control_socket)?;
        if want.contains(&s.state) {
            println!("{} is {} ({})", s.node, s.state.as_str(), s.reason);
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the swap did not finish in {} s: {} is {} ({})",
                args.timeout,
                s.node,
                s.state.as_str(),
                s.reason
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn exec(args: &ExecArgs) -> anyhow::Result<()> {
    let socket = match (&args.barrier_socket, &args.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => {
            crate::config::Config::load(c)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .control_socket
        }
        (None, None) => anyhow::bail!("exec needs -c FILE or --barrier-socket PATH"),
    };
    match crate::barrier::exec_under_barrier(&socket, &args.command) {
        Ok(never) => match never {},
        Err(e) => Err(e.into()),
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    // Ctrl-C must reach the demo's own clean-up rather than kill it with the lab
    // still up.
    install_stop_handlers()?;
    let mut opts = crate::demo::DemoOptions::new(args.prefix.clone());
    opts.workload = std::time::Duration::from_secs(args.workload.max(1));
    crate::demo::run(&opts, &TransportKeygen, &STOP)
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let k = crate::transport::keygen(&args.dir, &args.node, args.force)?;
    println!("certificate: {}", k.cert.display());
    println!("key:         {}", k.key.display());
    println!("fingerprint: {}", k.fingerprint);
    Ok(())
}

fn capture(args: &CaptureArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "capture needs root: it loads eBPF programs and places fanotify filesystem marks"
        );
    }
    install_stop_handlers()?;
    let mut settings = Settings::new(args.watch.clone());
    settings.tick = std::time::Duration::from_millis(args.coalesce_ms.max(1));
    let mut engine = Engine::start(settings)?;
    let roots: Vec<String> = args.watch.iter().map(|p| p.display().to_string()).collect();
    let stdout = std::io::stdout().lock();
    if args.json {
        let mut sink = JsonSink::new(std::io::BufWriter::new(stdout), roots);
        sink.ready().context("cannot write to standard output")?;
        engine.run(&mut sink, &STOP)?;
    } else {
        let mut sink = TextSink {
            out: std::io::BufWriter::new(stdout),
            roots,
        };
        eprintln!("tandem: watching {}; Ctrl-C stops", sink.roots.join(", "));
        engine.run(&mut sink, &STOP)?;
    }
    let c = engine.counters();
    // One machine-readable summary line on stderr, for operators and benchmarks.
    eprintln!(
        "tandem: capture stopped: kernel_events={} fanotify_events={} records={} \
         lost_kernel_events={} overflows={} rescans={} index_entries={}",
        c.kernel_events,
        c.fanotify_events,
        c.emitted,
        c.lost_kernel_events,
        c.overflows,
        c.rescans,
        engine.index().len()
    );
    Ok(())
}

/// The lab's node keys come from `tandem keygen`'s code.
struct TransportKeygen;

impl crate::lab::Keygen for TransportKeygen {
    fn make(&self, dir: &std::path::Path, node: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let k = crate::transport::keygen(dir, node, true)?;
        Ok((k.cert, k.key))
    }
}

/// One readable line per change.
struct TextSink<W: Write> {
    out: W,
    roots: Vec<String>,
}

impl<W: Write> Sink for TextSink<W> {
    fn emit(&mut self, c: Change) -> std::io::Result<()> {
        let root = self
            .roots
            .get(usize::from(c.root))
            .map_or("?", String::as_str);
        let path = String::from_utf8_lossy(&c.path);
        let detail = match &c.op {
            Op::Write { offset, len } => format!(" [{offset}, +{len})"),
            Op::Truncate { size } => format!(" to {size}"),
            Op::Create { kind, .. } | Op::Remove { kind } => format!(" ({})", kind.as_str()),
            Op::Rename { new_path } | Op::Link { new_path } | Op::Exchange { new_path } => {
                format!(" -> {}", String::from_utf8_lossy(new_path))
            }
            _ => String::new(),
        };
        writeln!(
            self.out,
            "{:>8} {:<8} {root}/{path}{detail}",
            c.seq,
            c.op.name()
        )
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_stop_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("cannot handle {sig}"))?;
    }
    // A closed pipe must surface as a write error, not kill the process silently.
    // SAFETY: ignoring SIGPIPE installs no handler code at all.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .context("cannot ignore SIGPIPE")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_is_a_subcommand_and_fails_with_ex_config() {
        let cli = Cli::try_parse_from(["tandem", "config", "check", "-c", "/etc/tandem/app.yaml"])
            .expect("parses");
        match cli.command {
            Command::Config(ConfigCommand::Check(a)) => {
                assert_eq!(a.config, PathBuf::from("/etc/tandem/app.yaml"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["tandem", "config", "check"]).is_err());
        let e = anyhow::Error::from(ConfigCheckFailed("/x.yaml".into()));
        assert_eq!(exit_of(&e) as u8, 78);
        assert_eq!(e.to_string(), "/x.yaml: the configuration has problems");
    }

    #[test]
    fn the_demo_prefix_of_the_cli_is_the_demo_s() {
        assert_eq!(args::DEMO_PREFIX, crate::demo::DEFAULT_PREFIX);
    }

    #[test]
    fn completions_name_the_subcommands_for_each_shell() {
        let cli = Cli::try_parse_from(["tandem", "completions", "zsh"]).expect("parses");
        assert!(matches!(cli.command, Command::Completions(_)));
        assert!(Cli::try_parse_from(["tandem", "completions", "tcsh"]).is_err());
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            let text = String::from_utf8(out).expect("UTF-8");
            for sub in ["swap", "status", "config", "completions"] {
                assert!(text.contains(sub), "{shell}: no {sub}");
            }
        }
    }
}
