//! The command line: parsing with clap, one function per command, and the mapping
//! of outcomes to exit codes. Errors are printed as one line with their causes.

use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::capture::{
    change::{Change, JsonSink, Op, Sink},
    engine::{CaptureError, Engine, Settings},
};

/// Tandem: a high-availability pair for Linux applications, with synchronous file
/// replication.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints every change under the watched directories until interrupted.
    Capture(CaptureArgs),
    /// Builds, shows or removes a two-node test lab in network namespaces.
    Lab(crate::lab::cmd::LabArgs),
    /// Runs the agent in the foreground (systemd runs this).
    Run(ConfigArg),
    /// Shows the agent's state (STOP when no agent answers).
    Status(StatusArgs),
    /// Runs a command under the durability barrier: its fsyncs wait for the peer.
    Exec(ExecArgs),
    /// Writes a node key and self-signed certificate, and prints its fingerprint.
    Keygen(KeygenArgs),
    /// An OCI runtime for Docker that puts containers under the durability barrier,
    /// then runs runc (registered in /etc/docker/daemon.json, see docs).
    OciRuntime(OciArgs),
}

#[derive(Debug, clap::Args)]
struct OciArgs {
    /// The agent's runc listener socket (`<state_dir>/seccomp.sock`).
    #[arg(long, value_name = "SOCKET")]
    listener: PathBuf,
    /// The real runc.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/runc")]
    runc: PathBuf,
    /// runc's own arguments, as Docker passes them.
    #[arg(last = true, value_name = "ARGS", allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// The configuration file of the local agent.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        required_unless_present = "barrier_socket"
    )]
    config: Option<PathBuf>,
    /// The agent's control socket, instead of a configuration file.
    #[arg(
        long = "barrier-socket",
        value_name = "PATH",
        conflicts_with = "config"
    )]
    barrier_socket: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Where to write NODE.crt and NODE.key.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The node's name (the certificate's subject).
    #[arg(long, value_name = "NAME")]
    node: String,
    /// Replace an existing key.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct CaptureArgs {
    /// A directory to watch; repeat for several.
    #[arg(long = "watch", value_name = "DIR", required = true)]
    watch: Vec<PathBuf>,
    /// One JSON object per line (docs/capture-stream.md) instead of text.
    #[arg(long)]
    json: bool,
    /// How long data changes are coalesced, in milliseconds.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    coalesce_ms: u64,
}

/// Exit codes, as systemd and operators see them (after sysexits.h).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
enum Exit {
    Failure = 1,
    NoPermission = 77,
    Unavailable = 69,
}

/// Set by SIGINT/SIGTERM; the running command winds down when it sees it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Parses the command line, runs the command and maps its outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Capture(args) => capture(&args),
        Command::Lab(args) => crate::lab::cmd::run_cli(&args, &TransportKeygen),
        Command::Run(args) => crate::runtime::run(&args.config),
        Command::Status(args) => status(&args),
        Command::Exec(args) => exec(&args),
        Command::Keygen(args) => keygen(&args),
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn exit_of(e: &anyhow::Error) -> Exit {
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
        print!("{}", crate::status::render(&status));
    }
    Ok(())
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
