//! `--system tandem`: two `tandem run` agents in the lab, node1 preferred (`role:
//! primary`, so that it takes the service back once it has returned and caught
//! up, as keepalived's higher priority does), the application being
//! `failover-bench respond` on VIP:7000, started and stopped by the agents.
//!
//! Profiles: `default` (heartbeat 100 ms / 1 s, VIP probe wait 200 ms, the
//! configuration's defaults) and `tuned` (30 ms / 150 ms, probe wait 50 ms).
//!
//! The comparable fault is `node-death`: by design Tandem does not take over when
//! only node1's agent dies (its VIP still answers node2's probe, see ARCHITECTURE.md,
//! "Agent death is not node death"), so a `kill` run reports no takeover.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::{
    events::{Events, now_ns, stamp_child},
    netlab::NetLab,
    pair::Pair,
    probe::APP_PORT,
    proc::NsProc,
};

/// A profile's timings.
#[derive(Clone, Debug)]
struct Profile {
    name: &'static str,
    interval: Duration,
    timeout: Duration,
    probe_wait: Duration,
}

impl Profile {
    fn parse(name: &str) -> anyhow::Result<Profile> {
        match name {
            "default" => Ok(Profile {
                name: "default",
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
                probe_wait: Duration::from_millis(200),
            }),
            "tuned" => Ok(Profile {
                name: "tuned",
                interval: Duration::from_millis(30),
                timeout: Duration::from_millis(150),
                probe_wait: Duration::from_millis(50),
            }),
            other => anyhow::bail!("unknown Tandem profile `{other}` (default, tuned)"),
        }
    }

    /// The VIP probe's own duration: two probes 50 ms apart, then the wait.
    fn probe(&self) -> Duration {
        Duration::from_millis(50) + self.probe_wait
    }
}

/// Tandem as the pair under test.
pub(crate) struct Tandem {
    profile: Profile,
    dir: PathBuf,
    bin: PathBuf,
    configs: [PathBuf; 2],
    sockets: [PathBuf; 2],
    agents: [Option<NsProc>; 2],
    started_at: [u64; 2],
}

impl Tandem {
    pub(crate) fn new(profile: &str, scratch: &Path) -> anyhow::Result<Tandem> {
        let profile = Profile::parse(profile)?;
        let bin = match std::env::var_os("TANDEM_BIN") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()
                .context("cannot find this executable")?
                .with_file_name("tandem"),
        };
        Ok(Tandem {
            profile,
            dir: scratch.to_path_buf(),
            bin,
            configs: [PathBuf::new(), PathBuf::new()],
            sockets: [PathBuf::new(), PathBuf::new()],
            agents: [None, None],
            started_at: [0, 0],
        })
    }

    /// Rewrites node `i`'s lab configuration with the profile's timings, node1's
    /// preference and the application.
    fn configure(&self, lab: &NetLab, i: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
        let node = &lab.layout.nodes[i];
        let text = fs::read_to_string(&node.config)
            .with_context(|| format!("cannot read {}", node.config.display()))?;
        let p = &self.profile;
        let mut out = String::new();
        let mut in_vip = false;
        for line in text.lines() {
            if line.starts_with("  interval:") {
                out.push_str(&format!("  interval: {}ms\n", p.interval.as_millis()));
                continue;
            }
            if line.starts_with("  timeout:") && !in_vip {
                out.push_str(&format!("  timeout: {}ms\n", p.timeout.as_millis()));
                continue;
            }
            if !line.starts_with(' ') {
                in_vip = line.starts_with("vip:");
            }
            out.push_str(line);
            out.push('\n');
            if in_vip && line.starts_with("  interface:") {
                out.push_str(&format!("  probe_wait: {}ms\n", p.probe_wait.as_millis()));
            }
        }
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let pid = self.dir.join(format!("node{}-app.pid", i + 1));
        let log = self.dir.join(format!("node{}-app.log", i + 1));
        let (pid, log, exe) = (pid.display(), log.display(), exe.display());
        let name = lab.node_name(i);
        let vip = lab.vip();
        out.push_str(tandem::lab::LOCAL_ADDITIONS);
        out.push_str(&format!(
            "role: {}\napplication:\n  start: \"setsid {exe} respond {vip}:{APP_PORT} {name} >>{log} 2>&1 </dev/null & echo $! > {pid}\"\n  stop: \"if [ -f {pid} ]; then kill $(cat {pid}) 2>/dev/null; rm -f {pid}; fi; true\"\n  timeout: 10s\n",
            if i == 0 { "primary" } else { "secondary" },
        ));
        fs::write(&node.config, &out)
            .with_context(|| format!("cannot write {}", node.config.display()))?;
        let cfg = tandem::config::Config::load(&node.config)
            .map_err(|e| anyhow::anyhow!("the benchmark wrote an invalid configuration:\n{e}"))?;
        Ok((node.config.clone(), cfg.control_socket))
    }

    fn start_agent(&mut self, lab: &NetLab, events: &Arc<Events>, i: usize) -> anyhow::Result<()> {
        let argv = vec![
            "env".to_string(),
            "TANDEM_LOG=info".into(),
            "NO_COLOR=1".into(),
            self.bin.display().to_string(),
            "run".into(),
            "-c".into(),
            self.configs[i].display().to_string(),
        ];
        self.started_at[i] = now_ns();
        let mut agent = NsProc::spawn(lab.node_ns(i), &argv, true)?;
        let child = agent.child_mut().context("the agent was reaped at once")?;
        let log = self.dir.join(format!("node{}-tandem.log", i + 1));
        stamp_child(child, &log, events, i, strip_ansi)?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    fn status(&self, i: usize) -> Result<tandem::status::Status, String> {
        tandem::runtime::control::query_status(&self.sockets[i])
            .map_err(|e| format!("node{}: {e:#}", i + 1))
    }
}

/// The agent's log lines without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Pair for Tandem {
    fn describe(&self) -> Vec<(String, String)> {
        let p = &self.profile;
        vec![
            (
                "system".into(),
                format!(
                    "tandem {} (debug build unless TANDEM_BIN names another)",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
            ("binary".into(), self.bin.display().to_string()),
            (
                "profile".into(),
                format!(
                    "{}: heartbeat interval {} ms, timeout {} ms, VIP probe 2 x ARP 50 ms apart + {} ms wait",
                    p.name,
                    p.interval.as_millis(),
                    p.timeout.as_millis(),
                    p.probe_wait.as_millis()
                ),
            ),
            (
                "pair".into(),
                "node1 role primary (preferred, fails back once in sync), node2 role secondary; \
                 witness 10.213.7.1; GARP 5 x 200 ms"
                    .into(),
            ),
            (
                "application".into(),
                format!("failover-bench respond on VIP:{APP_PORT}, started by the agent that runs"),
            ),
        ]
    }

    fn start(&mut self, lab: &NetLab, events: &Arc<Events>) -> anyhow::Result<()> {
        for i in 0..2 {
            let (config, socket) = self.configure(lab, i)?;
            self.configs[i] = config;
            self.sockets[i] = socket;
        }
        for i in 0..2 {
            self.start_agent(lab, events, i)?;
        }
        Ok(())
    }

    fn steady(&mut self, _events: &Events, _now: u64) -> Result<(), String> {
        use tandem::status::State;
        for (i, a) in self.agents.iter_mut().enumerate() {
            if !a.as_mut().is_some_and(NsProc::running) {
                return Err(format!("node{}'s agent is not running", i + 1));
            }
        }
        let s1 = self.status(0)?;
        if s1.state != State::Prim || !s1.replication.in_sync || !s1.application.running {
            return Err(format!("node1 is {} ({})", s1.state.as_str(), s1.reason));
        }
        let s2 = self.status(1)?;
        if s2.state != State::Second || !s2.replication.in_sync {
            return Err(format!("node2 is {} ({})", s2.state.as_str(), s2.reason));
        }
        Ok(())
    }

    fn fault_spread(&self) -> Duration {
        self.profile.interval
    }

    fn failover_limit(&self) -> Duration {
        self.profile.timeout * 3 + self.profile.probe() + Duration::from_secs(3)
    }

    fn crash_node1(&mut self) -> anyhow::Result<u64> {
        let agent = self.agents[0]
            .as_ref()
            .context("node1's agent is not running")?;
        let t0 = now_ns();
        agent.signal(Signal::SIGKILL)?;
        Ok(t0)
    }

    fn recover_node1(&mut self, lab: &NetLab, events: &Arc<Events>) -> anyhow::Result<()> {
        if let Some(mut a) = self.agents[0].take() {
            a.reap()?;
        }
        self.start_agent(lab, events, 0)
    }

    fn takeover_reported(&self, events: &Events, t0: u64) -> Option<u64> {
        events
            .lines_since(1, t0)
            .iter()
            .find(|l| {
                l.text.contains("state change")
                    && (l.text.contains("to=\"ALONE\"") || l.text.contains("to=\"PRIM\""))
            })
            .map(|l| l.t)
    }

    fn predicted_window_ms(&self) -> Option<(f64, f64)> {
        // node2 declares node1 lost `timeout` after the last heartbeat it got (the
        // fault falls within one interval after it), then probes the VIP.
        let p = &self.profile;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Some((
            ms(p.timeout) - ms(p.interval) + ms(p.probe()),
            ms(p.timeout) + ms(p.probe()),
        ))
    }

    fn stop(&mut self) {
        // SIGTERM makes an agent stop its application and drop its VIP.
        for a in self.agents.iter_mut().flatten() {
            a.stop(Signal::SIGTERM, Duration::from_secs(20));
        }
        self.agents = [None, None];
    }
}

impl Drop for Tandem {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_keep_the_timeout_above_three_intervals() {
        for name in ["default", "tuned"] {
            let p = Profile::parse(name).expect("profile");
            assert!(p.timeout > p.interval * 3, "{name}");
        }
        assert!(Profile::parse("fast").is_err());
    }

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m state change to=\"ALONE\""),
            " INFO state change to=\"ALONE\""
        );
    }
}
