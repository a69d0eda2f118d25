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
        Command::Lab(args) => crate::lab::cmd::run_cli(&args, &RcgenKeygen),
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

/// Self-signed node certificates for the lab.
// TODO(lead): replace with transport::keygen once it is merged; this is a stand-in.
struct RcgenKeygen;

impl crate::lab::Keygen for RcgenKeygen {
    fn make(&self, dir: &std::path::Path, node: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        use std::os::unix::fs::OpenOptionsExt;
        let made = rcgen::generate_simple_self_signed(vec![node.to_owned()])
            .context("cannot generate a certificate")?;
        let crt = dir.join(format!("{node}.crt"));
        let key = dir.join(format!("{node}.key"));
        std::fs::write(&crt, made.cert.pem())
            .with_context(|| format!("cannot write {}", crt.display()))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(made.signing_key.serialize_pem().as_bytes()))
            .with_context(|| format!("cannot write {}", key.display()))?;
        Ok((crt, key))
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
