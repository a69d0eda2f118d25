//! The two-node lab: network namespaces for two nodes, a client and a witness on
//! a public bridge, the two nodes also on a private bridge (replication and
//! heartbeats, like a back-to-back cable; see `layout`), each node with its keys,
//! configuration and replicated directory, and optionally its agent running inside
//! its namespace (`tandem lab up`, `status`, `down`).
//!
//! Nothing is created in the root network namespace: the bridges live in their own
//! namespace, so the host's firewall (Docker's FORWARD DROP) never sees lab
//! traffic. `up` is idempotent and repairs a partly built lab; `down` removes
//! whatever exists, also after a partial failure, and does nothing when nothing
//! exists.

pub mod cmd;
mod layout;
pub(crate) mod netns;
pub(crate) mod process;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Serialize;

use self::layout::MARKER;
pub use self::layout::{
    Addresses, BRIDGE, CLIENT_ADDR, HEARTBEAT_PORT, Layout, Member, NODE1_ADDR, NODE1_PRIVATE_ADDR,
    NODE2_ADDR, NODE2_PRIVATE_ADDR, Namespaces, Network, NodeLayout, PREFIX_LEN, PRIVATE_BRIDGE,
    PRIVATE_NETWORK, PUBLIC_NETWORK, REPLICATION_PORT, VIP, WITNESS_ADDR,
};
use crate::config::Config;

/// Overrides the namespace prefix.
pub const ENV_PREFIX: &str = "TANDEM_LAB_PREFIX";
/// Overrides the base directory.
pub const ENV_DIR: &str = "TANDEM_LAB_DIR";
/// The namespace prefix when not overridden.
pub const DEFAULT_PREFIX: &str = "tandem-lab";
/// The parent of the base directory when not overridden (`<this>/<prefix>`).
pub const DEFAULT_BASE_PARENT: &str = "/var/lib/tandem-lab";
/// A line in a node's configuration below which `up` keeps what is there when it
/// rewrites the file (the lab's own keys above it are regenerated).
pub const LOCAL_ADDITIONS: &str = "# --- local additions (kept by tandem lab up) ---\n";
/// Stands for a node's configuration path in [`LabOptions::agent_command`].
pub const CONFIG_PLACEHOLDER: &str = "{config}";

/// Makes a node's certificate and private key.
pub trait Keygen {
    /// Writes the certificate and key of `node` into `dir` (which exists) and
    /// returns their paths (certificate, key).
    fn make(&self, dir: &Path, node: &str) -> anyhow::Result<(PathBuf, PathBuf)>;
}

/// What lab to act on, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Namespace names are `<prefix>-node1` and so on.
    pub prefix: String,
    /// Where nodes' files and `lab.json` live.
    pub base_dir: PathBuf,
    /// Whether `up` starts the agents.
    pub start_agents: bool,
    /// The agent's command line; [`CONFIG_PLACEHOLDER`] arguments are replaced by
    /// the node's configuration path. `None`: `<this executable> run -c {config}`.
    pub agent_command: Option<Vec<String>>,
    /// How long an agent gets to exit after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

/// A lab's state as `tandem lab status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// What the lab is made of (from `lab.json` when it exists).
    #[serde(flatten)]
    pub layout: Layout,
    /// Whether each namespace exists, by name.
    pub present: BTreeMap<String, bool>,
    /// Whether each node's recorded agent is running, by node name.
    pub agents_alive: BTreeMap<String, bool>,
}

/// What `down` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// Agent pids that were stopped.
    pub stopped: Vec<u32>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Whether the base directory was removed.
    pub removed_dir: bool,
}

// === impl LabOptions ===

impl LabOptions {
    /// Options for `prefix` and `base_dir`, with agents started by this executable.
    #[must_use]
    pub fn new(prefix: impl Into<String>, base_dir: impl Into<PathBuf>) -> Self {
        Self {
            prefix: prefix.into(),
            base_dir: base_dir.into(),
            start_agents: true,
            agent_command: None,
            stop_grace: Duration::from_secs(5),
        }
    }

    /// Options from [`ENV_PREFIX`] and [`ENV_DIR`], else the defaults.
    #[must_use]
    pub fn from_env() -> Self {
        let prefix = std::env::var(ENV_PREFIX)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        let base = std::env::var_os(ENV_DIR)
            .filter(|d| !d.is_empty())
            .map_or_else(
                || Path::new(DEFAULT_BASE_PARENT).join(&prefix),
                PathBuf::from,
            );
        Self::new(prefix, base)
    }

    fn check(&self) -> anyhow::Result<()> {
        let ok = (1..=40).contains(&self.prefix.len())
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            bail!(
                "lab prefix `{}` must be 1 to 40 of a-z, A-Z, 0-9, - and _",
                self.prefix.escape_debug()
            );
        }
        if !self.base_dir.is_absolute() {
            bail!("lab directory {} must be absolute", self.base_dir.display());
        }
        Ok(())
    }

    /// The agent command line for a node whose configuration is `config`.
    fn agent_argv(&self, config: &Path) -> anyhow::Result<Vec<String>> {
        let config = config
            .to_str()
            .with_context(|| format!("{} is not UTF-8", config.display()))?
            .to_owned();
        match &self.agent_command {
            Some(argv) if argv.is_empty() => bail!("the agent command is empty"),
            Some(argv) => Ok(argv
                .iter()
                .map(|a| {
                    if a == CONFIG_PLACEHOLDER {
                        config.clone()
                    } else {
                        a.clone()
                    }
                })
                .collect()),
            None => {
                let exe = std::env::current_exe().context("cannot find this executable")?;
                let exe = exe
                    .to_str()
                    .context("this executable's path is not UTF-8")?;
                Ok(vec![exe.to_owned(), "run".into(), "-c".into(), config])
            }
        }
    }
}

/// Builds the lab (or completes and repairs it) and returns its layout.
pub fn up(opts: &LabOptions, keygen: &dyn Keygen) -> anyhow::Result<Layout> {
    opts.check()?;
    need_root()?;
    std::fs::create_dir_all(&opts.base_dir)
        .with_context(|| format!("cannot create {}", opts.base_dir.display()))?;
    let marker = opts.base_dir.join(MARKER);
    if !marker.exists() {
        std::fs::write(&marker, format!("{}\n", opts.prefix))
            .with_context(|| format!("cannot write {}", marker.display()))?;
    }
    let previous = read_record(opts);
    let mut layout = Layout::plan(opts);
    build_network(&layout)?;
    for node in &mut layout.nodes {
        let old = previous
            .as_ref()
            .and_then(|p| p.nodes.iter().find(|n| n.name == node.name));
        prepare_node(node, old, keygen)?;
    }
    // Configurations need both nodes' certificates, so they come after the keys.
    let peers: Vec<NodeLayout> = layout.nodes.iter().rev().cloned().collect();
    for (node, peer) in layout.nodes.iter().zip(&peers) {
        let mut yaml = node.config_yaml(peer)?;
        // What a test or an operator added below the marker survives a repair.
        if let Ok(old) = std::fs::read_to_string(&node.config)
            && let Some(at) = old.find(LOCAL_ADDITIONS)
        {
            yaml.push_str(&old[at..]);
        }
        write_file(&node.config, &yaml)?;
        Config::load(&node.config)
            .map_err(|e| anyhow::anyhow!("the lab wrote an invalid configuration:\n{e}"))?;
    }
    let mut started = Ok(());
    for node in &mut layout.nodes {
        let old = previous
            .as_ref()
            .and_then(|p| p.nodes.iter().find(|n| n.name == node.name));
        started = keep_or_start_agent(opts, node, old);
        if started.is_err() {
            break;
        }
    }
    // Record the agents that did start even if another failed, so `down` stops them.
    write_record(&layout)?;
    started?;
    Ok(layout)
}

/// Removes everything `up` made: stops the recorded agents, deletes the
/// namespaces and the base directory. Does nothing when nothing exists.
pub fn down(opts: &LabOptions) -> anyhow::Result<DownReport> {
    opts.check()?;
    let mut report = DownReport::default();
    // Keep going after a failure so that as much as possible is removed; the
    // first failure is reported at the end.
    let mut failures: Vec<anyhow::Error> = Vec::new();
    let plan = Layout::plan(opts);
    let record = read_record(opts);
    let agents = record
        .iter()
        .flat_map(|r| &r.nodes)
        .filter_map(|n| Some((n.agent_pid?, n.agent_command.as_ref()?)));
    for (pid, argv) in agents {
        match process::stop(pid, argv, opts.stop_grace) {
            Ok(true) => report.stopped.push(pid),
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
    }
    let existing: Vec<&str> = plan
        .all_namespaces()
        .into_iter()
        .filter(|n| netns::exists(n))
        .collect();
    if !existing.is_empty() {
        need_root()?;
    }
    for ns in existing {
        match netns::remove(ns) {
            Ok(true) => report.namespaces.push(ns.to_owned()),
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
    }
    if opts.base_dir.exists() {
        if opts.base_dir.join(MARKER).exists() {
            match std::fs::remove_dir_all(&opts.base_dir) {
                Ok(()) => report.removed_dir = true,
                Err(e) => failures.push(
                    anyhow::Error::new(e)
                        .context(format!("cannot remove {}", opts.base_dir.display())),
                ),
            }
        } else {
            failures.push(anyhow::anyhow!(
                "not removing {}: it has no {MARKER} file, so `tandem lab up` did not make it",
                opts.base_dir.display()
            ));
        }
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(report),
    }
}

/// Reports which namespaces exist and which agents run.
pub fn status(opts: &LabOptions) -> anyhow::Result<Status> {
    opts.check()?;
    let layout = read_record(opts).unwrap_or_else(|| Layout::plan(opts));
    let present = layout
        .all_namespaces()
        .into_iter()
        .map(|n| (n.to_owned(), netns::exists(n)))
        .collect();
    let agents_alive = layout
        .nodes
        .iter()
        .map(|n| {
            let alive = match (n.agent_pid, &n.agent_command) {
                (Some(pid), Some(argv)) => process::is_ours(pid, argv),
                _ => false,
            };
            (n.name.clone(), alive)
        })
        .collect();
    Ok(Status {
        layout,
        present,
        agents_alive,
    })
}

/// The namespaces, one bridge per network, one veth pair per member of each,
/// addresses and routes.
fn build_network(layout: &Layout) -> anyhow::Result<()> {
    let br = &layout.namespaces.bridge;
    netns::ensure(br)?;
    for net in &layout.networks {
        netns::ensure_bridge(br, &net.bridge)?;
        for m in &net.members {
            let ns = m.namespace.as_str();
            netns::ensure(ns)?;
            netns::ensure_port(br, &net.bridge, &m.port, ns, &net.interface)?;
            let cidr = format!("{}/{}", m.address, net.prefix_len);
            netns::ensure_address(ns, &net.interface, &cidr)?;
            if let Some(gw) = net.gateway.filter(|gw| *gw != m.address) {
                netns::ensure_default_route(ns, &net.interface, &gw.to_string())?;
            }
        }
    }
    Ok(())
}

/// Makes the node's directories and, unless they exist from an earlier `up`,
/// its keys.
fn prepare_node(
    node: &mut NodeLayout,
    old: Option<&NodeLayout>,
    keygen: &dyn Keygen,
) -> anyhow::Result<()> {
    for dir in [
        node.data_dir.clone(),
        node.state_dir.clone(),
        node.keys_dir(),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let reusable = old.and_then(|o| match (&o.certificate, &o.key) {
        (Some(c), Some(k)) if c.is_file() && k.is_file() => Some((c.clone(), k.clone())),
        _ => None,
    });
    let (crt, key) = match reusable {
        Some(pair) => pair,
        None => keygen
            .make(&node.keys_dir(), &node.name)
            .with_context(|| format!("cannot make the keys of {}", node.name))?,
    };
    node.certificate = Some(crt);
    node.key = Some(key);
    Ok(())
}

/// Keeps the agent of an earlier `up` if it still runs; otherwise starts one when
/// agents are wanted.
fn keep_or_start_agent(
    opts: &LabOptions,
    node: &mut NodeLayout,
    old: Option<&NodeLayout>,
) -> anyhow::Result<()> {
    if let Some((pid, argv)) = old.and_then(|o| Some((o.agent_pid?, o.agent_command.clone()?)))
        && process::is_ours(pid, &argv)
    {
        node.agent_pid = Some(pid);
        node.agent_command = Some(argv);
        return Ok(());
    }
    if !opts.start_agents {
        return Ok(());
    }
    let argv = opts.agent_argv(&node.config)?;
    let pid = process::start(&node.namespace, &argv, &node.log)?;
    node.agent_pid = Some(pid);
    node.agent_command = Some(argv);
    Ok(())
}

fn need_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab needs root: it creates network namespaces");
    }
    Ok(())
}

/// The layout an earlier `up` recorded, if it is readable.
fn read_record(opts: &LabOptions) -> Option<Layout> {
    let path = opts.base_dir.join(layout::RECORD);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(layout) => Some(layout),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Ignoring an unreadable lab record");
            None
        }
    }
}

fn write_record(layout: &Layout) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(layout).context("cannot encode the lab record")?;
    write_file(&layout.record_path(), &json)
}

/// Writes through a temporary file and a rename, so a crash never leaves half a
/// file behind.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests;
