//! The command line's clap definitions, and nothing else: this file depends only on
//! clap and std, because `cargo xtask dist` compiles it into xtask (`#[path]`) to
//! generate the man page and the shell completions without building the agent.
//! Help texts written here are what `tandem --help`, `man tandem` and the
//! completions show.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The default namespace prefix of `tandem demo` (`crate::demo::DEFAULT_PREFIX`,
/// which a test keeps equal to this one).
pub const DEMO_PREFIX: &str = "tandem-demo";

/// Tandem: a high-availability pair for Linux applications, with synchronous file
/// replication.
#[derive(Debug, Parser)]
#[command(name = "tandem", version)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prints every change under the watched directories until interrupted.
    Capture(CaptureArgs),
    /// Shows failover on this machine: a lab pair with a sample service, a lost
    /// primary, every acknowledged write kept, the return and the swap back.
    Demo(DemoArgs),
    /// Builds, shows or removes a two-node test lab in network namespaces.
    Lab(LabArgs),
    /// Runs the agent in the foreground (systemd runs this).
    Run(ConfigArg),
    /// Works with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Helps set up the web console (docs/console.md).
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Shows the agent's state (STOP when no agent answers).
    Status(StatusArgs),
    /// Makes this node run the application (with --force: even on data that may be
    /// older than the peer's; recorded in the log).
    Prim(PrimArgs),
    /// Makes this node SECOND: it hands the application to its peer, or does not
    /// take it.
    Second(ConfigArg),
    /// Exchanges the roles of the two nodes with no data loss, and waits for it.
    Swap(SwapArgs),
    /// Stops the module on this node: application, VIP, replication (state STOP).
    Stop(ConfigArg),
    /// Starts the module on this node after `stop`.
    Start(ConfigArg),
    /// Runs a command under the durability barrier: its fsyncs wait for the peer.
    Exec(ExecArgs),
    /// Writes a node key and self-signed certificate, and prints its fingerprint.
    Keygen(KeygenArgs),
    /// An OCI runtime for Docker that puts containers under the durability barrier,
    /// then runs runc (registered in /etc/docker/daemon.json, see docs).
    OciRuntime(OciArgs),
    /// Prints the shell completion script for bash, zsh or fish (the packages
    /// install them already), e.g. `tandem completions bash > /etc/bash_completion.d/tandem`.
    Completions(CompletionsArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Checks a configuration file, and what this host can tell about it: the
    /// VIP's interface, this node's addresses, the directories the agent creates.
    /// Prints `FILE: ok`, or every problem one per line (exit status 78).
    Check(ConfigArg),
}

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Reads a password from standard input (its first line) and prints its
    /// argon2id hash, for `console.password_hash`.
    HashPassword,
}

#[derive(Debug, clap::Args)]
pub struct OciArgs {
    /// The agent's runc listener socket (`<state_dir>/seccomp.sock`).
    #[arg(long, value_name = "SOCKET")]
    pub(crate) listener: PathBuf,
    /// The real runc.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/runc")]
    pub(crate) runc: PathBuf,
    /// runc's own arguments, as Docker passes them.
    #[arg(last = true, value_name = "ARGS", allow_hyphen_values = true)]
    pub(crate) args: Vec<std::ffi::OsString>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The lab's namespace prefix; its files go to /var/tmp/PREFIX. A leftover lab
    /// of that prefix is removed first.
    #[arg(long, value_name = "PREFIX", default_value = DEMO_PREFIX)]
    pub(crate) prefix: String,
    /// How long the client writes through node1 before the fault, in seconds.
    #[arg(long, default_value_t = 5, value_name = "S")]
    pub(crate) workload: u64,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub(crate) config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PrimArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Run the application even if the peer may hold newer data.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, clap::Args)]
pub struct SwapArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Return once the agent has the command instead of waiting for the swap.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// How long to wait for the swap, in seconds.
    #[arg(long, default_value_t = 120, value_name = "S")]
    pub(crate) timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The configuration file of the local agent.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        required_unless_present = "barrier_socket"
    )]
    pub(crate) config: Option<PathBuf>,
    /// The agent's control socket, instead of a configuration file.
    #[arg(
        long = "barrier-socket",
        value_name = "PATH",
        conflicts_with = "config"
    )]
    pub(crate) barrier_socket: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write NODE.crt and NODE.key.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// The node's name (the certificate's subject).
    #[arg(long, value_name = "NAME")]
    pub(crate) node: String,
    /// Replace an existing key.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// A directory to watch; repeat for several.
    #[arg(long = "watch", value_name = "DIR", required = true)]
    pub(crate) watch: Vec<PathBuf>,
    /// One JSON object per line (docs/capture-stream.md) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// How long data changes are coalesced, in milliseconds.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub(crate) coalesce_ms: u64,
}

/// Builds, shows or removes the two-node lab (network namespaces on a public and a
/// private bridge).
/// TANDEM_LAB_PREFIX and TANDEM_LAB_DIR choose another lab than the default.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub(crate) command: LabCommand,
}

/// The lab's subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Removes the lab: stops its agents, deletes its namespaces and directory.
    Down,
    /// The demo's sample service (see `tandem demo`); the lab's application
    /// commands start it inside a node's namespace.
    #[command(hide = true)]
    Service {
        /// The node name it answers with.
        #[arg(long)]
        name: String,
        /// The TCP port it listens on (every address).
        #[arg(long)]
        port: u16,
        /// The replicated directory it writes into.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Shows the layout, which namespaces exist and which agents run.
    Status {
        /// Prints JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Builds the lab, or completes and repairs it, and starts both agents.
    Up {
        /// Prints the layout as JSON.
        #[arg(long)]
        json: bool,
        /// Builds everything but does not start the agents.
        #[arg(long)]
        no_agents: bool,
    },
}
