//! The protected application's commands and checkers.
//!
//! Start and stop are shell commands run with a timeout and an environment that tells
//! them why they run (`TANDEM_ACTION`, `TANDEM_STATE`, `TANDEM_NODE`, `TANDEM_PEER`);
//! their output goes to the agent's log line by line. The start command runs under
//! the durability barrier (through `tandem exec`), so the application and every
//! process it forks have their durability calls held until the peer has the data.
//!
//! The application's checkers (`scope: application`) run only while the application
//! runs here; each one reports to the failover actor when it crosses its failure
//! threshold and when it passes again. Node checkers run in every state
//! ([`super::node_checks`]).

use std::{net::SocketAddr, process::Stdio, time::Instant};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    config::{Application, Checker, CheckerKind, CheckerScope},
    failover::{CheckerAction, Event},
    metrics::Metrics,
    status::State,
};

/// Why a command runs.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    Start,
    Stop,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
        }
    }
}

/// What a command's environment says about the node.
#[derive(Clone, Debug)]
pub struct Env {
    pub node: String,
    pub peer: String,
    pub state: State,
}

/// Runs the start or stop command; `Ok` when it exited with status 0 in time.
pub async fn run_command(
    app: &Application,
    action: Action,
    env: &Env,
    control_socket: &std::path::Path,
) -> anyhow::Result<()> {
    let shell = match action {
        Action::Start => &app.start,
        Action::Stop => &app.stop,
    };
    let mut cmd = match action {
        // The application inherits the barrier from the process that starts it.
        Action::Start => {
            let exe = std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find the tandem executable: {e}"))?;
            Command::from(crate::barrier::barrier_command(&exe, control_socket, shell))
        }
        Action::Stop => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(shell);
            c
        }
    };
    super::priority::restore_in_child(&mut cmd);
    cmd.env_remove(super::notify::ENV)
        .env("TANDEM_ACTION", action.as_str())
        .env("TANDEM_STATE", env.state.as_str())
        .env("TANDEM_NODE", &env.node)
        .env("TANDEM_PEER", &env.peer)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A command that outlives its timeout is killed with its shell; what it
        // started in the background (the application) is not.
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run the {} command: {e}", action.as_str()))?;
    // The application started in the background may keep the pipes open for its
    // whole life: the readers log what comes and are never waited for.
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(out, action, "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(err, action, "stderr"));
    }
    match tokio::time::timeout(app.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(
                action = action.as_str(),
                took_ms = started.elapsed().as_millis() as u64,
                "application command succeeded"
            );
            Ok(())
        }
        Ok(Ok(status)) => anyhow::bail!("the {} command failed: {status}", action.as_str()),
        Ok(Err(e)) => anyhow::bail!("cannot wait for the {} command: {e}", action.as_str()),
        Err(_) => {
            let _ = child.start_kill();
            anyhow::bail!(
                "the {} command did not finish within {:?}",
                action.as_str(),
                app.timeout
            )
        }
    }
}

async fn log_lines(r: impl tokio::io::AsyncRead + Unpin, action: Action, stream: &'static str) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(action = action.as_str(), stream, "{line}");
    }
}

/// The checkers of a running application; dropping this stops them.
pub struct Checkers {
    tasks: Vec<JoinHandle<()>>,
}

impl Checkers {
    /// Starts every checker of the application (node checkers run elsewhere);
    /// events go to the failover actor, failures are also counted in `metrics`.
    #[must_use]
    pub fn start(
        checkers: &[Checker],
        events: &mpsc::Sender<Event>,
        running: &watch::Receiver<bool>,
        metrics: &Metrics,
    ) -> Self {
        let tasks = checkers
            .iter()
            .filter(|c| c.scope == CheckerScope::Application)
            .map(|c| {
                metrics.checker_known(&c.name);
                tokio::spawn(check_loop(
                    c.clone(),
                    events.clone(),
                    running.clone(),
                    metrics.clone(),
                ))
            })
            .collect();
        Self { tasks }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Checks every interval while the application runs; reports crossing the threshold
/// (and every further failure, so that a restart policy sees repeated failures) and
/// recovery.
async fn check_loop(
    c: Checker,
    events: mpsc::Sender<Event>,
    mut running: watch::Receiver<bool>,
    metrics: Metrics,
) {
    let action = match c.action {
        crate::config::CheckerAction::Restart => CheckerAction::Restart,
        crate::config::CheckerAction::Failover => CheckerAction::Failover,
    };
    let mut failures = 0u32;
    let mut failed = false;
    let mut tick = tokio::time::interval(c.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !*running.borrow_and_update() {
            // A stopped application is not checked; a start begins a fresh count.
            failures = 0;
            if running.changed().await.is_err() {
                return;
            }
            // Give the application one interval to come up.
            tokio::time::sleep(c.interval).await;
            continue;
        }
        let ok = tokio::time::timeout(c.timeout, check_once(&c.kind))
            .await
            .unwrap_or(false);
        if ok {
            failures = 0;
            if failed {
                failed = false;
                tracing::info!(checker = %c.name, "checker passes again");
                let _ = events
                    .send(Event::CheckerOk {
                        checker: c.name.clone(),
                    })
                    .await;
            }
            continue;
        }
        failures += 1;
        if failures >= c.failures {
            if !failed {
                tracing::warn!(checker = %c.name, failures, "checker failed");
            }
            failed = true;
            failures = 0;
            metrics.checker_failed(&c.name);
            let _ = events
                .send(Event::CheckerFailed {
                    checker: c.name.clone(),
                    action,
                })
                .await;
        }
    }
}

/// One check; `true` when it passed.
pub(super) async fn check_once(kind: &CheckerKind) -> bool {
    match kind {
        CheckerKind::Tcp(addr) => tcp(*addr).await,
        CheckerKind::Command(shell) => {
            let mut cmd = Command::new("/bin/sh");
            super::priority::restore_in_child(&mut cmd);
            cmd.env_remove(super::notify::ENV)
                .arg("-c")
                .arg(shell)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
        CheckerKind::Process(name) => process_alive(name),
        #[cfg(feature = "docker")]
        CheckerKind::Docker { container, socket } => {
            super::docker::container_healthy(socket, container).await
        }
    }
}

async fn tcp(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// Whether a process whose `comm` is `name` exists.
fn process_alive(name: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::CheckerAction as ConfigAction;

    fn app(stop: &str, timeout: Duration) -> Application {
        Application {
            start: "true".into(),
            stop: stop.into(),
            timeout,
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
            checkers: vec![],
        }
    }

    fn env() -> Env {
        Env {
            node: "node1".into(),
            peer: "node2".into(),
            state: State::Prim,
        }
    }

    #[tokio::test]
    async fn stop_command_sees_its_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("env");
        let cmd = format!(
            "echo \"$TANDEM_ACTION $TANDEM_STATE $TANDEM_NODE $TANDEM_PEER\" > {}",
            out.display()
        );
        run_command(
            &app(&cmd, Duration::from_secs(5)),
            Action::Stop,
            &env(),
            dir.path(),
        )
        .await
        .expect("stop");
        let text = std::fs::read_to_string(&out).expect("read");
        assert_eq!(text.trim(), "stop PRIM node1 node2");
    }

    #[tokio::test]
    async fn failing_and_slow_commands_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = run_command(
            &app("exit 3", Duration::from_secs(5)),
            Action::Stop,
            &env(),
            dir.path(),
        )
        .await
        .expect_err("exit 3");
        assert!(e.to_string().contains("failed"), "{e}");
        let t = Instant::now();
        let e = run_command(
            &app("sleep 5", Duration::from_millis(200)),
            Action::Stop,
            &env(),
            dir.path(),
        )
        .await
        .expect_err("timeout");
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_block_the_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        run_command(
            &app("sleep 3 &", Duration::from_secs(2)),
            Action::Stop,
            &env(),
            dir.path(),
        )
        .await
        .expect("returns when the shell exits");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn checks_of_each_kind() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = l.local_addr().expect("addr");
        drop(l);
        assert!(!check_once(&CheckerKind::Tcp(open)).await);
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(check_once(&CheckerKind::Tcp(l.local_addr().expect("addr"))).await);
        assert!(check_once(&CheckerKind::Command("true".into())).await);
        assert!(!check_once(&CheckerKind::Command("false".into())).await);
        let me = std::fs::read_to_string("/proc/self/comm").expect("comm");
        assert!(check_once(&CheckerKind::Process(me.trim().into())).await);
        assert!(!check_once(&CheckerKind::Process("no-such-proc-xyz".into())).await);
        // No daemon behind the socket: a failed check (docker/tests.rs has the rest).
        #[cfg(feature = "docker")]
        assert!(
            !check_once(&CheckerKind::Docker {
                container: "tandem-pg".into(),
                socket: "/nonexistent/docker.sock".into(),
            })
            .await
        );
    }

    #[tokio::test]
    async fn a_checker_reports_its_threshold_and_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ok");
        let checker = Checker {
            name: "flag".into(),
            scope: CheckerScope::Application,
            kind: CheckerKind::Command(format!("test -f {}", flag.display())),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            failures: 3,
            action: ConfigAction::Failover,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let (_running_tx, running) = watch::channel(true);
        let metrics = Metrics::new();
        let _c = Checkers::start(&[checker], &tx, &running, &metrics);
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time");
        assert_eq!(
            ev,
            Some(Event::CheckerFailed {
                checker: "flag".into(),
                action: CheckerAction::Failover
            })
        );
        // The threshold crossing was counted before it was reported (more than
        // once if the checker failed again meanwhile).
        let text = metrics.encode(&crate::status::Status::default());
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("tandem_checker_failures_total{checker=\"flag\"} "))
            .expect("a series for the checker");
        assert_ne!(count, "0", "{text}");
        std::fs::write(&flag, b"").expect("write");
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("in time");
            if ev
                == Some(Event::CheckerOk {
                    checker: "flag".into(),
                })
            {
                break;
            }
        }
    }
}
