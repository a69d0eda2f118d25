//! PostgreSQL 15 (Debian 12's packages, image `tandem/postgres:15` built by
//! `tests/docker/postgres/build-image.sh`) in a container under `tandem
//! oci-runtime`, its data directory inside node1's replicated directory of a
//! two-node lab. The container's seccomp listener goes to node1's real agent
//! (`<state_dir>/seccomp.sock`), so every fsync PostgreSQL makes waits for node2.
//!
//! What it shows: each COMMIT's WAL flush reaches the agent's barrier; a COMMIT is
//! not acknowledged while the peer is silent (until the heartbeat timeout makes
//! node1 ALONE); pgbench runs to completion; and after a clean stop node2's copy
//! is identical, starts, holds every acknowledged transaction and passes amcheck.
//!
//! The image build (debootstrap) takes minutes the first time; the script keeps
//! the image while its recipe is unchanged, so later runs start at once.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tandem_tests::{compare::compare_trees, lab::Lab};

use crate::{ContainerName, RUNC, Runtime, docker, docker_ok, serial, wrapper_binary};

const IMAGE: &str = "tandem/postgres:15";
const PGDATA: &str = "/var/lib/postgresql/data";
/// Single-statement transactions whose WAL flushes are counted one by one.
const COMMITS: u64 = 50;
/// pgbench's clients: at most this many commits can share one WAL flush.
const CLIENTS: u64 = 4;

/// Builds the image, or finds it up to date (the script decides by recipe hash).
fn build_image() {
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

fn state(lab: &Lab, node: usize) -> String {
    let status = lab.status(node).unwrap_or_else(|e| panic!("{e}"));
    status
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Runs each statement in `sql` as its own transaction (one `-c` each, which psql
/// sends separately, in autocommit) in the container; returns the output.
fn psql(container: &str, sql: &[&str]) -> String {
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
/// waits until its health check passes.
fn start_postgres(name: &ContainerName, data: &Path, extra: &[&str]) {
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
            running == "true" && started.elapsed() < Duration::from_secs(120),
            "PostgreSQL did not become healthy (running={running}, health={health}):\n{}",
            logs(name)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn logs(name: &ContainerName) -> String {
    let out = docker(&["logs", "--tail", "40", &name.0]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The number after `key: ` on pgbench's summary line starting with `key`.
fn pgbench_number(out: &str, key: &str) -> u64 {
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

/// How long one single-row INSERT takes from `docker exec` to its return.
fn timed_commit(container: &str, n: u64) -> Duration {
    let started = Instant::now();
    psql(container, &[&format!("INSERT INTO commits VALUES ({n})")]);
    started.elapsed()
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
    start_postgres(&pg, &pgdata, &["--runtime", &runtime.name]);
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
    psql(
        &pg.0,
        &inserts.iter().map(String::as_str).collect::<Vec<_>>(),
    );
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
    assert_eq!(
        after.unprotected, before.unprotected,
        "a commit was acknowledged without the peer while the pair was in sync"
    );
    assert_eq!(state(&lab, 0), "PRIM");

    // A COMMIT waits for the peer: with node2's agent stopped it returns only when
    // node1 gives up on the peer (heartbeat timeout, 1 s in the lab) and goes ALONE.
    let usual = timed_commit(&pg.0, COMMITS + 1);
    let paused = Paused::node2(&lab);
    let held = timed_commit(&pg.0, COMMITS + 2);
    let alone = counters(&lab);
    let state_alone = state(&lab, 0);
    drop(paused);
    eprintln!("a commit took {usual:?} with the peer and {held:?} with the peer stopped");
    assert!(
        held >= usual + Duration::from_millis(500),
        "the commit returned after {held:?} while the peer was stopped ({usual:?} usually): \
         it did not wait for the peer"
    );
    assert!(
        alone.unprotected > after.unprotected,
        "the held commit was released without being counted as unprotected"
    );
    assert_eq!(state_alone, "ALONE");
    wait_in_sync(&lab);

    // pgbench's TPC-B-like load: it completes under the barrier, and each group of
    // at most CLIENTS concurrent commits needs its own WAL flush.
    docker_ok(&[
        "exec", &pg.0, "pgbench", "-U", "postgres", "-i", "-s", "1", "-q", "postgres",
    ]);
    let before = counters(&lab);
    let clients = CLIENTS.to_string();
    let bench = docker_ok(&[
        "exec", &pg.0, "pgbench", "-U", "postgres", "-n", "-c", &clients, "-j", "2", "-T", "10",
        "postgres",
    ]);
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
    assert_eq!(
        after.unprotected, before.unprotected,
        "a pgbench commit was acknowledged without the peer while the pair was in sync"
    );

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
    start_postgres(&on_node2, &copy.path().join("pgdata"), &[]);
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
    eprintln!(
        "node2's copy: every commit present, amcheck passed; test took {:?}",
        started.elapsed()
    );
}
