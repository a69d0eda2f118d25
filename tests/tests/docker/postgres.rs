//! PostgreSQL 15 (Debian 12's packages, image `tandem/postgres:15` built by
//! `tests/docker/postgres/build-image.sh`) in a container under `tandem
//! oci-runtime`, its data directory inside node1's replicated directory of a
//! two-node lab. The container's seccomp listener goes to node1's real agent
//! (`<state_dir>/seccomp.sock`), so every fsync PostgreSQL makes waits for node2.
//!
//! What it shows: each COMMIT's WAL flush reaches the agent's barrier; a COMMIT is
//! not acknowledged while the peer is silent (until the heartbeat timeout makes
//! node1 ALONE); pgbench runs to completion; after a clean stop node2's copy is
//! identical, starts, holds every acknowledged transaction and passes amcheck; and
//! with the agent gone, a COMMIT fails and PostgreSQL stops.
//!
//! The image build (debootstrap) takes minutes the first time; the script keeps
//! the image while its recipe is unchanged, so later runs start at once.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tandem_tests::{compare::compare_trees, lab::Lab};

use crate::{ContainerName, RUNC, Runtime, docker, docker_ok, serial, wrapper_binary};

pub(crate) const IMAGE: &str = "tandem/postgres:15";
pub(crate) const PGDATA: &str = "/var/lib/postgresql/data";
/// Single-statement transactions whose WAL flushes are counted one by one.
const COMMITS: u64 = 50;
/// pgbench's clients: at most this many commits can share one WAL flush.
const CLIENTS: u64 = 4;
/// initdb under the barrier: it fsyncs each of its ~1000 files, and each waits for
/// node2. That took 26-45 s on the 2-core CI machine and over 120 s when other
/// builds loaded it, hence the margin.
pub(crate) const INITDB: Duration = Duration::from_secs(300);
/// Starting on an existing cluster (recovery after a clean stop is short).
const STARTUP: Duration = Duration::from_secs(120);

/// Builds the image, or finds it up to date (the script decides by recipe hash).
pub(crate) fn build_image() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/postgres/build-image.sh");
    let started = Instant::now();
    let out = Command::new(&script)
        .env("TANDEM_PG_IMAGE", IMAGE)
        .output()
        .expect("run build-image.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed:\n{err}", script.display());
    eprintln!("image: {} ({:?})", err.trim(), started.elapsed());
}

/// A lab with node1 PRIM and node2 SECOND, in sync.
fn pair() -> Lab {
    let lab = Lab::up("pg").unwrap_or_else(|e| panic!("{e}"));
    wait_in_sync(&lab);
    lab
}

fn wait_in_sync(lab: &Lab) {
    lab.wait_state(0, "PRIM", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(1, "SECOND", true, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// node1's barrier counters: calls that reached the barrier, and calls released
/// without the peer having the data.
#[derive(Clone, Copy, Debug)]
struct Counters {
    barriers: u64,
    unprotected: u64,
}

fn counters(lab: &Lab) -> Counters {
    let status = lab.status(0).unwrap_or_else(|e| panic!("{e}"));
    let get = |key: &str| {
        status
            .pointer(&format!("/replication/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("status has no replication.{key}: {status}"))
    };
    Counters {
        barriers: get("barriers"),
        unprotected: get("released_unprotected"),
    }
}

/// Runs `f` while another thread polls node1's status every 50 ms; returns what
/// `f` returned and whether node1 was seen anything but PRIM in sync meanwhile.
fn watched<T>(lab: &Lab, f: impl FnOnce() -> T) -> (T, bool) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let monitor = scope.spawn(|| {
            let mut degraded = false;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(v) = lab.status(0) {
                    let prim = v.get("state").and_then(Value::as_str) == Some("PRIM");
                    let in_sync =
                        v.pointer("/replication/in_sync").and_then(Value::as_bool) == Some(true);
                    degraded |= !(prim && in_sync);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            degraded
        });
        let out = f();
        // The status's counters follow the releases by one tick of the primary
        // (20 ms); a little more watching covers a state change made meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        (out, monitor.join().expect("status monitor"))
    })
}

/// Calls released without the peer having the data are what ALONE means; while
/// node1 stays PRIM in sync there must be none. On this shared 2-core machine a
/// loaded moment can make the peer's acknowledgement miss the lab's 1 s timeout,
/// and node1 then rightly goes ALONE: that is reported, not failed, and the copy
/// check at the end still finds every commit on node2.
fn check_unprotected(phase: &str, before: Counters, after: Counters, degraded: bool) {
    let released = after.unprotected - before.unprotected;
    if released == 0 {
        return;
    }
    assert!(
        degraded,
        "{phase}: {released} durability calls were released without the peer \
         while node1 stayed PRIM in sync"
    );
    eprintln!(
        "{phase}: node1 left PRIM in sync meanwhile; {released} durability calls were \
         released without the peer, as ALONE allows"
    );
}

/// Runs each statement in `sql` as its own transaction (one `-c` each, which psql
/// sends separately, in autocommit) in the container; returns the output.
pub(crate) fn psql(container: &str, sql: &[&str]) -> String {
    let mut args = vec![
        "exec",
        container,
        "psql",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "postgres",
        "-Atq",
    ];
    for statement in sql {
        args.extend(["-c", statement]);
    }
    docker_ok(&args)
}

/// Starts a PostgreSQL container on `data` (extra options before the image) and
/// waits at most `timeout` until its health check passes.
pub(crate) fn start_postgres(name: &ContainerName, data: &Path, extra: &[&str], timeout: Duration) {
    let volume = format!("{}:{PGDATA}", data.display());
    let mut args = vec!["run", "-d", "--name", &name.0, "--network", "none"];
    args.extend(extra);
    args.extend(["-v", &volume, IMAGE]);
    docker_ok(&args);
    let started = Instant::now();
    loop {
        let health = docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", &name.0]);
        if health == "healthy" {
            eprintln!("{} healthy after {:?}", name.0, started.elapsed());
            return;
        }
        let running = docker_ok(&["inspect", "--format", "{{.State.Running}}", &name.0]);
        assert!(
            running == "true" && started.elapsed() < timeout,
            "PostgreSQL did not become healthy (running={running}, health={health}):\n{}",
            logs(name)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn logs(name: &ContainerName) -> String {
    let out = docker(&["logs", "--tail", "40", &name.0]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The number after `key: ` on pgbench's summary line starting with `key`.
pub(crate) fn pgbench_number(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in pgbench's output:\n{out}"))
}

/// An open psql session in the container, with `\timing` on: statements are sent
/// one at a time and timed by psql, from sending to the server's answer, so that
/// neither `docker exec` nor the connection set-up is part of the time.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    fn open(container: &str) -> Self {
        let mut child = Command::new("docker")
            .args([
                "exec", "-i", container, "psql", "-X", "-At", "-U", "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("docker exec psql");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut session = Self {
            child,
            stdin,
            stdout,
        };
        session.send("\\timing on");
        session.timed("SELECT 1");
        session
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to psql");
        self.stdin.flush().expect("flush to psql");
    }

    /// Runs one statement and returns the time psql reports for it.
    fn timed(&mut self, sql: &str) -> Duration {
        self.send(&format!("{sql};"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read from psql");
            assert!(n > 0, "psql ended before answering {sql:?}");
            if let Some(ms) = line
                .strip_prefix("Time: ")
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse::<f64>().ok())
            {
                return Duration::from_secs_f64(ms / 1000.0);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// node2's agent stopped with SIGSTOP, continued again on drop (also when the test
/// fails, so that `lab down` finds an agent that can act on SIGTERM).
struct Paused<'a> {
    lab: &'a Lab,
}

impl<'a> Paused<'a> {
    fn node2(lab: &'a Lab) -> Self {
        lab.signal_agent(1, Signal::SIGSTOP)
            .unwrap_or_else(|e| panic!("SIGSTOP node2's agent: {e}"));
        Self { lab }
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = self.lab.signal_agent(1, Signal::SIGCONT);
    }
}

/// Waits until both copies are identical; the remaining differences on timeout.
fn wait_identical(a: &Path, b: &Path, timeout: Duration) -> Vec<String> {
    let end = Instant::now() + timeout;
    loop {
        let diffs = compare_trees(a, b, 20).unwrap_or_else(|e| vec![format!("compare: {e}")]);
        if diffs.is_empty() || Instant::now() > end {
            return diffs;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn postgres_commits_wait_for_the_peer_under_the_oci_runtime() {
    let Some(_serial) = serial() else { return };
    let started = Instant::now();
    build_image();
    // Declared in this order so that they are dropped in the reverse one: the
    // containers go before their runtime leaves daemon.json, and both before the
    // lab (and with it the agent and the data directories) is taken down.
    let lab = pair();
    let runtime_ready = Instant::now();
    let sock = lab.nodes[0].state_dir.join("seccomp.sock");
    let runtime = Runtime::register(
        &wrapper_binary(),
        &[
            "oci-runtime",
            "--listener",
            sock.to_str().expect("utf-8 path"),
            "--runc",
            RUNC,
            "--",
        ],
    );
    let pgdata: PathBuf = lab.nodes[0].data_dir.join("pgdata");
    std::fs::create_dir(&pgdata).expect("create pgdata");
    let pg = ContainerName::new();
    let before_init = counters(&lab);
    // initdb and the first start run under the barrier too (initdb fsyncs every
    // file it wrote), so a cluster is never acknowledged without its peer copy.
    start_postgres(&pg, &pgdata, &["--runtime", &runtime.name], INITDB);
    let after_init = counters(&lab);
    eprintln!(
        "initdb + start: {} durability calls through the barrier ({:?} since the pair was up)",
        after_init.barriers - before_init.barriers,
        runtime_ready.elapsed()
    );
    assert!(
        after_init.barriers > before_init.barriers,
        "initdb's fsyncs never reached node1's agent: is the container under the runtime?"
    );

    // Every single-statement COMMIT flushes the WAL (fdatasync) before it returns;
    // with one client no flush can cover two commits.
    psql(&pg.0, &["CREATE TABLE commits (n bigint PRIMARY KEY)"]);
    let before = counters(&lab);
    let inserts: Vec<String> = (1..=COMMITS)
        .map(|n| format!("INSERT INTO commits VALUES ({n})"))
        .collect();
    let ((), degraded) = watched(&lab, || {
        psql(
            &pg.0,
            &inserts.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    });
    let after = counters(&lab);
    eprintln!(
        "{COMMITS} commits: {} durability calls through the barrier",
        after.barriers - before.barriers
    );
    assert!(
        after.barriers - before.barriers >= COMMITS,
        "{COMMITS} commits made only {} durability calls reach the barrier",
        after.barriers - before.barriers
    );
    check_unprotected("the single commits", before, after, degraded);

    // A COMMIT waits for the peer: with node2's agent stopped it returns only after
    // the heartbeat timeout (1 s in the lab), when node1 gives the peer up and goes
    // ALONE. (The barrier listener's own timeout is the same 1 s, so either of the
    // two may be the one that releases the call.)
    wait_in_sync(&lab);
    // The session is open before node2 stops, so the COMMIT is sent right after
    // the SIGSTOP, while node1 still counts on its peer.
    let mut session = Session::open(&pg.0);
    let usual = session.timed(&format!("INSERT INTO commits VALUES ({})", COMMITS + 1));
    let paused = Paused::node2(&lab);
    let held = session.timed(&format!("INSERT INTO commits VALUES ({})", COMMITS + 2));
    drop(session);
    let alone = lab.wait_state(0, "ALONE", false, Duration::from_secs(10));
    drop(paused);
    eprintln!("a commit took {usual:?} with the peer and {held:?} with the peer stopped");
    assert!(
        held >= usual + Duration::from_millis(500),
        "the commit returned after {held:?} while the peer was stopped ({usual:?} usually): \
         it did not wait for the peer"
    );
    if let Err(e) = alone {
        panic!("node1 did not give its stopped peer up: {e}");
    }
    wait_in_sync(&lab);

    // pgbench's TPC-B-like load: it completes under the barrier, and each group of
    // at most CLIENTS concurrent commits needs its own WAL flush.
    docker_ok(&[
        "exec", &pg.0, "pgbench", "-U", "postgres", "-i", "-s", "1", "-q", "postgres",
    ]);
    let before = counters(&lab);
    let clients = CLIENTS.to_string();
    let (bench, degraded) = watched(&lab, || {
        docker_ok(&[
            "exec", &pg.0, "pgbench", "-U", "postgres", "-n", "-c", &clients, "-j", "2", "-T",
            "10", "postgres",
        ])
    });
    let after = counters(&lab);
    let processed = pgbench_number(&bench, "number of transactions actually processed");
    let failed = pgbench_number(&bench, "number of failed transactions");
    let tps = bench
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or_default();
    eprintln!(
        "pgbench: {processed} transactions, {failed} failed, {tps}; {} durability calls through the barrier",
        after.barriers - before.barriers
    );
    assert!(processed > 0, "pgbench committed nothing:\n{bench}");
    assert_eq!(failed, 0, "{bench}");
    assert!(
        after.barriers - before.barriers >= processed.div_ceil(CLIENTS),
        "{processed} pgbench transactions made only {} durability calls reach the barrier",
        after.barriers - before.barriers
    );
    check_unprotected("pgbench", before, after, degraded);

    // A clean stop (SIGINT: fast shutdown, final checkpoint); then node2's copy must
    // be node1's, and a server started on it must hold every acknowledged commit.
    docker_ok(&["stop", "-t", "60", &pg.0]);
    let stopped = logs(&pg);
    assert!(
        stopped.contains("database system is shut down"),
        "no clean shutdown:\n{stopped}"
    );
    let diffs = wait_identical(
        &pgdata,
        &lab.nodes[1].data_dir.join("pgdata"),
        Duration::from_secs(60),
    );
    assert!(diffs.is_empty(), "node2's copy differs: {diffs:#?}");
    // A copy of node2's copy: the server's start writes to its data directory, and
    // node2's is the agent's to write.
    let copy = tempfile::tempdir().expect("tempdir");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(lab.nodes[1].data_dir.join("pgdata"))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(copied.success(), "cp -a node2's pgdata");
    let on_node2 = ContainerName::new();
    start_postgres(&on_node2, &copy.path().join("pgdata"), &[], STARTUP);
    let rows = psql(
        &on_node2.0,
        &["SELECT count(*), min(n), max(n) FROM commits"],
    );
    assert_eq!(rows, format!("{}|1|{}", COMMITS + 2, COMMITS + 2));
    let history = psql(&on_node2.0, &["SELECT count(*) FROM pgbench_history"]);
    assert_eq!(
        history,
        processed.to_string(),
        "node2 lacks pgbench transactions that were acknowledged"
    );
    let checked = psql(
        &on_node2.0,
        &[
            "CREATE EXTENSION amcheck",
            "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
             WHERE a.amname = 'btree' AND c.relname IN ('pgbench_accounts_pkey', \
             'pgbench_branches_pkey', 'pgbench_tellers_pkey', 'commits_pkey')",
        ],
    );
    assert_eq!(checked, "4", "amcheck did not check the four indexes");
    eprintln!("node2's copy: every commit present, amcheck passed");

    // The agent gone while PostgreSQL runs: its listener fd closes, the kernel fails
    // the next WAL flush with ENOSYS, and PostgreSQL stops (PANIC) instead of
    // acknowledging a COMMIT that the peer may not have.
    let again = ContainerName::new();
    start_postgres(&again, &pgdata, &["--runtime", &runtime.name], STARTUP);
    lab.signal_agent(0, Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("SIGKILL node1's agent: {e}"));
    assert!(
        lab.wait_agent_gone(0, Duration::from_secs(30)),
        "node1's agent did not die"
    );
    let insert = docker(&[
        "exec",
        &again.0,
        "psql",
        "-X",
        "-U",
        "postgres",
        "-c",
        "INSERT INTO commits VALUES (0)",
    ]);
    assert!(
        !insert.status.success(),
        "a COMMIT was acknowledged after the agent was gone"
    );
    let end = Instant::now() + Duration::from_secs(30);
    while docker_ok(&["inspect", "--format", "{{.State.Running}}", &again.0]) == "true" {
        assert!(
            Instant::now() < end,
            "PostgreSQL still runs without the agent:\n{}",
            logs(&again)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let crashed = logs(&again);
    assert!(
        crashed.contains("PANIC") && crashed.contains("Function not implemented"),
        "PostgreSQL did not stop on the failed flush:\n{crashed}"
    );
    let panic_line = crashed
        .lines()
        .find(|l| l.contains("PANIC"))
        .unwrap_or_default();
    // Not asserted, reported: the barrier listener lets a call through on its own
    // when it is held longer than heartbeat.timeout, without node1 going ALONE and
    // without a status counter (one of these may be the commit held above, whose
    // release races with node1 giving the peer up). On a loaded machine, slow
    // acknowledgements of write bursts (initdb, pgbench -i) hit it too.
    let log = std::fs::read_to_string(&lab.nodes[0].log).unwrap_or_default();
    eprintln!(
        "node1's barrier listener released {} calls on its own timeout",
        log.matches("released on timeout").count()
    );
    eprintln!(
        "agent gone: the COMMIT failed and PostgreSQL stopped ({panic_line}); test took {:?}",
        started.elapsed()
    );
}
