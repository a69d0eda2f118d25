//! A two-node lab for integration tests, driven through the `tandem lab` command
//! exactly as an operator would: `up --json` gives the layout, `down` removes it, also
//! when the test fails (the guard's Drop).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The `tandem` binary under test.
#[must_use]
pub fn tandem_bin() -> PathBuf {
    match std::env::var_os("TANDEM_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tandem"),
    }
}

/// One node of the lab, from the layout.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub namespace: String,
    pub address: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

/// A lab brought up for one test; brought down when dropped.
pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    pub layout: Value,
    pub nodes: Vec<Node>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The port the lab's service answers on.
pub const SERVICE_PORT: u16 = 7000;
/// The lab service's acknowledged-write port (see `lab-service`).
pub const SERVICE_WRITE_PORT: u16 = SERVICE_PORT + 1;
/// The lab service's ledger of acknowledged writes, in the replicated directory.
pub const LEDGER: &str = "acked.log";

impl Lab {
    /// Brings a lab up with a prefix unique to this process and test. The prefix
    /// starts with `TANDEM_LAB_PREFIX` when it is set (so that people sharing a
    /// machine can keep their labs apart), else with `tt` and this process's id.
    pub fn up(tag: &str) -> Result<Lab, String> {
        Self::up_with(tag, true)
    }

    /// Brings a lab up whose nodes run the lab's service as their application
    /// (`lab-service`, answering its node name on [`SERVICE_PORT`] and taking
    /// acknowledged writes into [`LEDGER`] on [`SERVICE_WRITE_PORT`]), with a TCP
    /// checker on it.
    pub fn up_with_service(tag: &str, service_bin: &Path) -> Result<Lab, String> {
        Self::up_with_service_edited(tag, service_bin, |_, text| text)
    }

    /// [`Lab::up_with_service`], with each node's configuration passed through
    /// `edit(node index, text)` before the agents start (a later `lab up`, as in
    /// [`Lab::restart_missing`], regenerates the lab's own keys but keeps what is
    /// below the local-additions marker).
    pub fn up_with_service_edited(
        tag: &str,
        service_bin: &Path,
        edit: impl Fn(usize, String) -> String,
    ) -> Result<Lab, String> {
        let commands = |n: &Node| {
            let pid = n.state_dir.join("service.pid");
            let log = n.state_dir.join("service.log");
            let (pid, log, bin) = (pid.display(), log.display(), service_bin.display());
            let start = format!(
                "if [ -f {pid} ] && kill -0 $(cat {pid}) 2>/dev/null; then exit 0; fi; setsid {bin} {name} {SERVICE_PORT} {ledger} >>{log} 2>&1 </dev/null & echo $! > {pid}",
                name = n.name,
                ledger = n.data_dir.join(LEDGER).display(),
            );
            let stop = format!(
                "if [ -f {pid} ]; then kill $(cat {pid}) 2>/dev/null; rm -f {pid}; fi; true"
            );
            (start, stop)
        };
        Self::up_with_application_edited(tag, Duration::from_secs(10), commands, |_| Ok(()), edit)
    }

    /// Brings a lab up whose nodes run `commands(node) = (start, stop)` as their
    /// application (shell commands, run by the agent in the node's namespace),
    /// with `timeout` for each, and no checker.
    pub fn up_with_application(
        tag: &str,
        timeout: Duration,
        commands: impl Fn(&Node) -> (String, String),
    ) -> Result<Lab, String> {
        Self::up_with_application_prepared(tag, timeout, commands, |_| Ok(()))
    }

    /// [`Lab::up_with_application`], with `prepare(&lab)` run after the lab's
    /// namespaces and directories exist and before any agent starts (to put an
    /// application's initial data into node1's replicated directory, say).
    pub fn up_with_application_prepared(
        tag: &str,
        timeout: Duration,
        commands: impl Fn(&Node) -> (String, String),
        prepare: impl FnOnce(&Lab) -> Result<(), String>,
    ) -> Result<Lab, String> {
        Self::up_with_application_edited(tag, timeout, commands, prepare, |_, text| text)
    }

    fn up_with_application_edited(
        tag: &str,
        timeout: Duration,
        commands: impl Fn(&Node) -> (String, String),
        prepare: impl FnOnce(&Lab) -> Result<(), String>,
        edit: impl Fn(usize, String) -> String,
    ) -> Result<Lab, String> {
        let lab = Self::up_with(tag, false)?;
        for (i, n) in lab.nodes.iter().enumerate() {
            let (start, stop) = commands(n);
            let quote = |c: &str| serde_json::to_string(c).unwrap_or_default();
            let section = format!(
                "application:\n  start: {}\n  stop: {}\n  timeout: {}ms\n",
                quote(&start),
                quote(&stop),
                timeout.as_millis()
            );
            let mut text = std::fs::read_to_string(&n.config)
                .map_err(|e| format!("{}: {e}", n.config.display()))?;
            text.push_str(tandem::lab::LOCAL_ADDITIONS);
            text.push_str(&section);
            let text = edit(i, text);
            std::fs::write(&n.config, text).map_err(|e| format!("{}: {e}", n.config.display()))?;
        }
        prepare(&lab)?;
        lab.restart_missing()?;
        Ok(lab)
    }

    /// The pid of node `i`'s service, if it runs.
    pub fn service_pid(&self, i: usize) -> Option<i32> {
        let text = std::fs::read_to_string(self.nodes[i].state_dir.join("service.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    fn up_with(tag: &str, agents: bool) -> Result<Lab, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::var("TANDEM_LAB_PREFIX")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("tt{}", std::process::id() % 10000));
        let prefix = format!("{base}{tag}{n}");
        let dir = std::env::temp_dir().join(format!("tandem-lab-{prefix}"));
        let mut lab = Lab {
            prefix,
            dir,
            layout: Value::Null,
            nodes: Vec::new(),
        };
        let out = if agents {
            lab.cmd(&["lab", "up", "--json"])?
        } else {
            lab.cmd(&["lab", "up", "--json", "--no-agents"])?
        };
        lab.layout =
            serde_json::from_str(&out).map_err(|e| format!("lab up --json: {e}: {out}"))?;
        lab.nodes = lab
            .layout
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or("layout has no nodes")?
            .iter()
            .map(|v| Node {
                name: s(v, "name"),
                namespace: s(v, "namespace"),
                address: s(v, "address"),
                config: PathBuf::from(s(v, "config")),
                data_dir: PathBuf::from(s(v, "data_dir")),
                state_dir: PathBuf::from(s(v, "state_dir")),
                log: PathBuf::from(s(v, "log")),
            })
            .collect();
        Ok(lab)
    }

    /// Runs `tandem ARGS` with this lab's prefix and directory; stdout on success.
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        self.cmd_with_env(args, &[])
    }

    /// [`Lab::cmd`] with extra environment variables, which the agents a `lab up`
    /// starts inherit.
    pub fn cmd_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
        let out = Command::new(tandem_bin())
            .args(args)
            .envs(env.iter().copied())
            .env("TANDEM_LAB_PREFIX", &self.prefix)
            .env("TANDEM_LAB_DIR", &self.dir)
            .output()
            .map_err(|e| format!("tandem {args:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tandem {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `tandem ARGS -c <node i's config>` (an administrator's command on that
    /// node); stdout on success.
    pub fn node_cmd(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let c = self.nodes[i].config.display().to_string();
        let mut all = args.to_vec();
        all.extend(["-c", &c]);
        self.cmd(&all)
    }

    /// `tandem status --json` of node `i` (0 or 1).
    pub fn status(&self, i: usize) -> Result<Value, String> {
        let c = self.nodes[i].config.display().to_string();
        let out = self.cmd(&["status", "-c", &c, "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("status: {e}: {out}"))
    }

    /// Waits until node `i` reports `state` and, if asked, in sync.
    pub fn wait_state(
        &self,
        i: usize,
        state: &str,
        in_sync: bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let end = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < end {
            if let Ok(v) = self.status(i) {
                let ok_state = v.get("state").and_then(Value::as_str) == Some(state);
                let ok_sync = !in_sync
                    || v.pointer("/replication/in_sync").and_then(Value::as_bool) == Some(true);
                if ok_state && ok_sync {
                    return Ok(v);
                }
                last = v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "node {} not {state}{} after {timeout:?}: {last}\n--- log ---\n{}",
            self.nodes[i].name,
            if in_sync { " in sync" } else { "" },
            self.log_tail(i, 40)
        ))
    }

    /// The last lines of node `i`'s agent log.
    #[must_use]
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// The pid of node `i`'s agent, from `lab status --json`.
    pub fn agent_pid(&self, i: usize) -> Option<i32> {
        let out = self.cmd(&["lab", "status", "--json"]).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        let pid = v.get("nodes")?.get(i)?.get("agent_pid")?.as_i64()?;
        i32::try_from(pid).ok()
    }

    /// Sends `sig` to node `i`'s agent (a process this lab started).
    pub fn signal_agent(&self, i: usize, sig: nix::sys::signal::Signal) -> Result<(), String> {
        let pid = self.agent_pid(i).ok_or("no agent pid")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| e.to_string())
    }

    /// Waits until node `i`'s agent process is gone.
    pub fn wait_agent_gone(&self, i: usize, timeout: Duration) -> bool {
        let Some(pid) = self.agent_pid(i) else {
            return true;
        };
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The lab's networks as (name, bridge, interface), from the layout (`public`
    /// and `private`).
    #[must_use]
    pub fn networks(&self) -> Vec<(String, String, String)> {
        self.layout
            .get("networks")
            .and_then(Value::as_array)
            .map(|nets| {
                nets.iter()
                    .map(|n| (s(n, "name"), s(n, "bridge"), s(n, "interface")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets node `i`'s interfaces on every lab network down or up: cut, the node is
    /// lost to its peer, the witness and the client alike (its cables pulled).
    pub fn set_links(&self, i: usize, up: bool) -> Result<(), String> {
        let ns = &self.nodes[i].namespace;
        let nets = self.networks();
        if nets.is_empty() {
            return Err("the lab layout names no networks".into());
        }
        for (_, _, dev) in nets {
            ip(&[
                "-n",
                ns,
                "link",
                "set",
                &dev,
                if up { "up" } else { "down" },
            ])?;
        }
        Ok(())
    }

    /// Sets the bridge of network `name` down or up: the whole network fails (its
    /// switch dies) while every member's interface stays up, so nothing but
    /// silence tells the nodes.
    pub fn set_network(&self, name: &str, up: bool) -> Result<(), String> {
        let bridge_ns = self
            .layout
            .pointer("/namespaces/bridge")
            .and_then(Value::as_str)
            .ok_or("the lab layout has no bridge namespace")?;
        let (_, bridge, _) = self
            .networks()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| format!("the lab has no network {name}"))?;
        ip(&[
            "-n",
            bridge_ns,
            "link",
            "set",
            &bridge,
            if up { "up" } else { "down" },
        ])
    }

    /// Starts whatever agents are not running (`lab up` is idempotent).
    pub fn restart_missing(&self) -> Result<(), String> {
        self.cmd(&["lab", "up", "--json"]).map(|_| ())
    }
}

/// Runs `ip ARGS` (only ever with `-n <a lab namespace>`).
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(keep) = std::env::var_os("TANDEM_LAB_KEEP_LOGS") {
            for n in &self.nodes {
                // Named by the thread (the test) and the lab's prefix, so that a
                // whole run's labs are kept side by side.
                let test = std::thread::current()
                    .name()
                    .unwrap_or("lab")
                    .replace("::", "-");
                let name = format!("{test}-{}-{}.log", self.prefix, n.name);
                let _ = std::fs::copy(&n.log, Path::new(&keep).join(name));
            }
        }
        if let Err(e) = self.cmd(&["lab", "down"]) {
            eprintln!("lab down failed: {e}");
        }
    }
}
