//! keepalived as the pair under test: one instance per node namespace, VRRP only,
//! unicast between the two node addresses, with generated configurations and its
//! own pid files under the variant's directory (no systemd, no system
//! configuration is touched). The application is a `failover-bench respond` on
//! VIP:7000 on both nodes, running all the time: only the VIP holder receives
//! the connections, as with keepalived in front of an always-running service.
//!
//! Profiles: `default` is VRRPv2 with `advert_int 1` (keepalived's defaults);
//! `tuned` is VRRPv3 with `advert_int 0.1` (sub-second adverts need VRRPv3).
//! Everything else is left at keepalived's defaults (preemption on, 5 GARPs on
//! becoming MASTER and 5 more 5 s later, no VMAC, no authentication).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    errno::Errno,
    sys::{
        signal::Signal,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tandem::lab::{NODE1_ADDR, NODE2_ADDR, PREFIX_LEN, VIP};

use crate::{
    events::{Events, now_ns, stamp_child},
    netlab::{IFACE, NetLab},
    pair::Pair,
    probe::APP_PORT,
    proc::NsProc,
};

/// node1 is meant to be MASTER, node2 BACKUP.
const PRIORITY: [u8; 2] = [150, 100];
const ROUTER_ID: u8 = 51;
/// keepalived's `garp_master_delay`: a MASTER repeats its GARPs this long after
/// taking over. A node is settled once that second burst is behind it.
const GARP_MASTER_DELAY: Duration = Duration::from_secs(5);

/// A keepalived settings profile.
#[derive(Clone, Debug)]
struct Profile {
    name: String,
    vrrp_version: u8,
    advert: Duration,
}

impl Profile {
    fn parse(name: &str) -> anyhow::Result<Profile> {
        let (vrrp_version, advert) = match name {
            "default" => (2, Duration::from_secs(1)),
            "tuned" => (3, Duration::from_millis(100)),
            other => bail!("unknown keepalived profile `{other}` (default, tuned)"),
        };
        Ok(Profile {
            name: name.to_owned(),
            vrrp_version,
            advert,
        })
    }

    /// `advert_int` as keepalived reads it (seconds, decimals allowed).
    fn advert_int(&self) -> String {
        let s = self.advert.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0}")
        } else {
            format!("{s}")
        }
    }

    /// RFC 5798's Master_Down_Interval of the BACKUP (node2): three adverts plus
    /// the skew time (256 - priority) / 256 adverts.
    fn master_down(&self) -> Duration {
        let adv = self.advert.as_secs_f64();
        let skew = f64::from(256 - u16::from(PRIORITY[1])) / 256.0 * adv;
        Duration::from_secs_f64(3.0 * adv + skew)
    }
}

/// Whether `name` is a keepalived profile.
pub(crate) fn check_profile(name: &str) -> anyhow::Result<()> {
    Profile::parse(name).map(drop)
}

/// One running keepalived: the parent process we started, and its files.
struct Instance {
    parent: NsProc,
    vrrp_pid_file: PathBuf,
}

/// keepalived on both nodes, and the application.
pub(crate) struct Keepalived {
    profile: Profile,
    dir: PathBuf,
    version: String,
    package: String,
    instances: [Option<Instance>; 2],
    /// When each node's current instance was started: its state lines count
    /// from here, earlier ones belong to the instance that was killed.
    started_at: [u64; 2],
    responders: Vec<NsProc>,
    /// The VRRP child of the instance killed by `crash_node1`, to be reaped.
    killed_vrrp: Option<i32>,
}

impl Keepalived {
    /// Checks the profile, installs keepalived if it is missing and makes `dir`.
    pub(crate) fn new(profile: &str, dir: &Path) -> anyhow::Result<Keepalived> {
        let profile = Profile::parse(profile)?;
        ensure_installed()?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Keepalived {
            profile,
            dir: dir.to_path_buf(),
            version: keepalived_version(),
            package: package_version(),
            instances: [None, None],
            started_at: [0, 0],
            responders: Vec::new(),
            killed_vrrp: None,
        })
    }

    fn conf_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.conf", i + 1))
    }

    /// The configuration of node `i`: the research lab's (see BENCHMARKS.md),
    /// with this profile's VRRP version and advert interval.
    fn conf(&self, lab: &NetLab, i: usize) -> String {
        let me = lab.node_addr(i);
        let peer = lab.node_addr(1 - i);
        let version = if self.profile.vrrp_version == 3 {
            "    version 3\n"
        } else {
            ""
        };
        format!(
            "# Written by failover-bench (profile {profile}).\n\
             global_defs {{\n    router_id {prefix}-{name}\n}}\n\
             vrrp_instance VI_1 {{\n\
             \x20   state {state}\n\
             \x20   interface {IFACE}\n\
             \x20   virtual_router_id {ROUTER_ID}\n\
             \x20   priority {prio}\n\
             {version}\
             \x20   advert_int {adv}\n\
             \x20   unicast_src_ip {me}\n\
             \x20   unicast_peer {{\n        {peer}\n    }}\n\
             \x20   virtual_ipaddress {{\n        {vip}/{len} dev {IFACE}\n    }}\n\
             }}\n",
            profile = self.profile.name,
            prefix = lab.prefix(),
            name = lab.node_name(i),
            state = if i == 0 { "MASTER" } else { "BACKUP" },
            prio = PRIORITY[i],
            adv = self.profile.advert_int(),
            vip = lab.vip(),
            len = lab.layout.prefix_len,
        )
    }

    /// The command line of node `i`'s instance.
    fn argv(&self, i: usize) -> Vec<String> {
        let f = |s: &str| {
            self.dir
                .join(format!("node{}{s}", i + 1))
                .display()
                .to_string()
        };
        [
            "keepalived",
            // Foreground, log to the console (stamped by us), detailed, no syslog.
            "-n",
            "-l",
            "-D",
            "-G",
            // VRRP only, no BFD: the instance is exactly a parent and a VRRP child.
            "-P",
            "-B",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([
            "-f".into(),
            self.conf_path(i).display().to_string(),
            // Own pid files: two instances on one host would otherwise share the
            // defaults in /run, and the second one exits with status 0 saying
            // "daemon is already running".
            "-p".into(),
            f(".pid"),
            "-r".into(),
            f("-vrrp.pid"),
        ])
        .collect()
    }

    /// Starts node `i`'s keepalived, its output stamped into `events` and its log.
    fn start_instance(
        &mut self,
        lab: &NetLab,
        events: &Arc<Events>,
        i: usize,
    ) -> anyhow::Result<()> {
        let argv = self.argv(i);
        let vrrp_pid_file = self.dir.join(format!("node{}-vrrp.pid", i + 1));
        // Stale pid files from a killed instance would name dead (or reused) pids.
        for f in [
            self.dir.join(format!("node{}.pid", i + 1)),
            vrrp_pid_file.clone(),
        ] {
            let _ = fs::remove_file(f);
        }
        self.started_at[i] = now_ns();
        let mut parent = NsProc::spawn(lab.node_ns(i), &argv, true)?;
        let child = parent
            .child_mut()
            .context("keepalived was reaped at once")?;
        let log = self.dir.join(format!("node{}-keepalived.log", i + 1));
        stamp_child(child, &log, events, i, str::to_owned)?;
        self.instances[i] = Some(Instance {
            parent,
            vrrp_pid_file,
        });
        Ok(())
    }

    /// Node `i`'s VRRP state from its current instance's last "Entering X STATE"
    /// line, with the line's time.
    fn state(&self, events: &Events, i: usize) -> Option<(String, u64)> {
        events
            .lines_since(i, self.started_at[i])
            .iter()
            .rev()
            .find_map(|l| {
                let rest = l.text.split("Entering ").nth(1)?;
                let state = rest.strip_suffix(" STATE").unwrap_or(rest);
                let state = state.split(' ').next()?;
                Some((state.to_owned(), l.t))
            })
    }
}

impl Pair for Keepalived {
    fn describe(&self) -> Vec<(String, String)> {
        let p = &self.profile;
        vec![
            ("system".into(), self.version.clone()),
            ("package".into(), self.package.clone()),
            (
                "profile".into(),
                format!(
                    "{}: VRRPv{}, advert_int {} s",
                    p.name,
                    p.vrrp_version,
                    p.advert_int()
                ),
            ),
            (
                "instances".into(),
                format!(
                    "node1 state MASTER priority {}, node2 state BACKUP priority {}; unicast \
                     between {NODE1_ADDR} and {NODE2_ADDR}; VIP {VIP}/{PREFIX_LEN} on {IFACE}; \
                     preemption, GARPs and all other settings keepalived's defaults",
                    PRIORITY[0], PRIORITY[1],
                ),
            ),
            ("command".into(), self.argv(0).join(" ")),
            (
                "application".into(),
                format!("failover-bench respond on VIP:{APP_PORT} on both nodes, all the time"),
            ),
        ]
    }

    fn start(&mut self, lab: &NetLab, events: &Arc<Events>) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        for i in 0..2 {
            let argv = vec![
                exe.display().to_string(),
                "respond".into(),
                format!("{}:{APP_PORT}", lab.vip()),
                lab.node_name(i).to_owned(),
            ];
            self.responders
                .push(NsProc::spawn(lab.node_ns(i), &argv, false)?);
        }
        for i in 0..2 {
            let conf = self.conf(lab, i);
            let path = self.conf_path(i);
            fs::write(&path, conf).with_context(|| format!("cannot write {}", path.display()))?;
            check_config(lab.node_ns(i), &path)?;
        }
        for i in 0..2 {
            self.start_instance(lab, events, i)?;
        }
        Ok(())
    }

    fn steady(&mut self, events: &Events, now: u64) -> Result<(), String> {
        for (i, inst) in self.instances.iter_mut().enumerate() {
            if !inst.as_mut().is_some_and(|inst| inst.parent.running()) {
                return Err(format!("node{}'s keepalived is not running", i + 1));
            }
        }
        let settle = u64::try_from((GARP_MASTER_DELAY + Duration::from_secs(1)).as_nanos())
            .unwrap_or(u64::MAX);
        match self.state(events, 0) {
            Some((s, t)) if s == "MASTER" && now.saturating_sub(t) >= settle => {}
            Some((s, t)) if s == "MASTER" => {
                return Err(format!(
                    "node1 MASTER for only {:.1} s",
                    (now.saturating_sub(t)) as f64 / 1e9
                ));
            }
            other => return Err(format!("node1 is {other:?}, not MASTER")),
        }
        match self.state(events, 1) {
            Some((s, _)) if s == "BACKUP" => Ok(()),
            other => Err(format!("node2 is {other:?}, not BACKUP")),
        }
    }

    fn fault_spread(&self) -> Duration {
        self.profile.advert
    }

    fn failover_limit(&self) -> Duration {
        self.profile.master_down() * 2 + Duration::from_secs(2)
    }

    fn crash_node1(&mut self) -> anyhow::Result<u64> {
        let inst = self.instances[0]
            .as_ref()
            .context("node1's keepalived is not running")?;
        // The parent is our own child and not reaped yet, so its pid cannot have
        // been reused.
        let parent = inst.parent.pid().context("node1's keepalived was reaped")?;
        let parent = i32::try_from(parent).context("pid out of range")?;
        let text = fs::read_to_string(&inst.vrrp_pid_file)
            .with_context(|| format!("cannot read {}", inst.vrrp_pid_file.display()))?;
        let vrrp: i32 = text
            .trim()
            .parse()
            .with_context(|| format!("{} holds {text:?}", inst.vrrp_pid_file.display()))?;
        // The pid file could be stale; only a child of our keepalived is killed.
        let ppid = parent_of(vrrp);
        if ppid != Some(parent) {
            bail!(
                "pid {vrrp} from the VRRP pid file is not a child of keepalived {parent} (parent {ppid:?})"
            );
        }
        let t0 = now_ns();
        // The VRRP child first: keepalived's parent makes its children exit
        // gracefully when it dies (sending a priority-0 advert that hands the VIP
        // over at once), which is not a crash.
        nix::sys::signal::kill(Pid::from_raw(vrrp), Signal::SIGKILL)
            .with_context(|| format!("cannot kill keepalived's VRRP child {vrrp}"))?;
        inst.parent.signal(Signal::SIGKILL)?;
        self.killed_vrrp = Some(vrrp);
        Ok(t0)
    }

    fn recover_node1(&mut self, lab: &NetLab, events: &Arc<Events>) -> anyhow::Result<()> {
        if let Some(mut inst) = self.instances[0].take() {
            inst.parent.reap()?;
        }
        if let Some(vrrp) = self.killed_vrrp.take() {
            reap_orphan(vrrp);
        }
        self.start_instance(lab, events, 0)
    }

    fn takeover_reported(&self, events: &Events, t0: u64) -> Option<u64> {
        events
            .lines_since(1, t0)
            .iter()
            .find(|l| l.text.contains("Entering MASTER STATE"))
            .map(|l| l.t)
    }

    fn predicted_window_ms(&self) -> Option<(f64, f64)> {
        // node2 takes over Master_Down_Interval after the last advert it got; the
        // fault falls uniformly within one advert interval after that advert.
        let md = self.profile.master_down().as_secs_f64() * 1e3;
        Some((md - self.profile.advert.as_secs_f64() * 1e3, md))
    }

    fn stop(&mut self) {
        // SIGTERM lets keepalived remove its VIP; the lab goes away next anyway.
        for inst in self.instances.iter_mut().flatten() {
            inst.parent.stop(Signal::SIGTERM, Duration::from_secs(5));
        }
        self.instances = [None, None];
        if let Some(vrrp) = self.killed_vrrp.take() {
            reap_orphan(vrrp);
        }
        for mut r in self.responders.drain(..) {
            r.stop(Signal::SIGKILL, Duration::ZERO);
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold
    // spaces: state, then ppid.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Reaps a killed VRRP child. Its parent was killed too, so it was re-parented to
/// this process (a child subreaper, see main); if it went elsewhere, whoever got
/// it reaps it.
fn reap_orphan(pid: i32) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => return,
        }
    }
}

/// `keepalived -t`: checks a configuration in the node's namespace (so the
/// interface exists) before it is used; a VRRPv2 sub-second advert_int, for one,
/// is refused here rather than silently rounded.
fn check_config(ns: &str, conf: &Path) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "keepalived", "-t", "-l", "-G", "-f"])
        .arg(conf)
        .output()
        .context("cannot run keepalived -t")?;
    if !out.status.success() {
        bail!(
            "keepalived -t refused {} ({}): {}{}",
            conf.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Installs the Debian package if keepalived is missing. Nothing is started by
/// the package here (no systemd; policy-rc.d may also deny it); the benchmark
/// runs its own instances.
fn ensure_installed() -> anyhow::Result<()> {
    if which_keepalived() {
        return Ok(());
    }
    for args in [
        &["install", "-y", "--no-install-recommends", "keepalived"][..],
        &["update"][..],
        &["install", "-y", "--no-install-recommends", "keepalived"][..],
    ] {
        eprintln!("+ apt-get {}", args.join(" "));
        let ok = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?
            .success();
        if ok && args[0] == "install" {
            break;
        }
    }
    if !which_keepalived() {
        bail!("keepalived is not installed and `apt-get install keepalived` did not install it");
    }
    Ok(())
}

fn which_keepalived() -> bool {
    Command::new("keepalived")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `Keepalived v2.2.7 (01/16,2022)`, as `keepalived -v` prints it first.
fn keepalived_version() -> String {
    Command::new("keepalived")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let all = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&all)
                .lines()
                .find(|l| l.starts_with("Keepalived"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "keepalived (version unknown)".into())
}

fn package_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}", "keepalived"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "not from a Debian package".into(),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_predict_the_rfc_master_down_interval() {
        // 3 adverts + (256 - 100) / 256 of one: 3.609 s and 0.361 s.
        let d = Profile::parse("default").map(|p| p.master_down().as_secs_f64());
        let t = Profile::parse("tuned").map(|p| p.master_down().as_secs_f64());
        assert!(d.is_ok_and(|d| (d - 3.609_375).abs() < 1e-9));
        assert!(t.is_ok_and(|t| (t - 0.360_937_5).abs() < 1e-9));
        assert!(Profile::parse("fast").is_err());
    }

    #[test]
    fn advert_int_is_written_as_keepalived_reads_it() {
        let adv = |p: &str| Profile::parse(p).map(|p| p.advert_int()).ok();
        assert_eq!(adv("default").as_deref(), Some("1"));
        assert_eq!(adv("tuned").as_deref(), Some("0.1"));
    }
}
