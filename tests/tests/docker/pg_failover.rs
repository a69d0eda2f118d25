//! PostgreSQL survives the loss of its server, end to end in the lab (issue 6).
//!
//! Both lab agents run PostgreSQL (`tandem/postgres:15`) as their application: the
//! start command is a `docker run --runtime tandem-... --network none -e
//! TANDEM_NETNS=/run/netns/<node>` whose data directory is inside the node's
//! replicated directory, so the container is under that node's barrier and lives in
//! the node's network namespace, where the VIP comes and goes. A client in the
//! client namespace inserts numbered rows through the VIP, one `psql` per INSERT,
//! and records every id whose COMMIT was acknowledged.
//!
//! Each round, mid-load, node1 dies: its agent is SIGKILLed, its container
//! `docker kill`ed and its links (public and private) cut. node2 takes over and
//! starts PostgreSQL on its copy. Then every acknowledged id must be there (through
//! the VIP), amcheck must pass, node1 (links back, agent restarted) must become
//! SECOND in sync with a resync of what changed only, and a `tandem swap` must
//! bring PostgreSQL back to node1 with every row. The kill comes after a seeded
//! random delay (`TANDEM_PG_SEED`). Afterwards pgbench measures the barrier's cost
//! against the same container on an unreplicated directory (issue 6 item 4's
//! figure).

use std::{
    collections::BTreeSet,
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tandem_tests::lab::{Lab, Node, tandem_bin};

use crate::{
    ContainerName, RUNC, Runtime, docker, docker_ok,
    postgres::{IMAGE, INITDB, PGDATA, build_image, pgbench_number, psql, start_postgres},
    serial, wrapper_binary,
};

/// Rounds wanted (`TANDEM_PG_ROUNDS` overrides), and the time after which no new
/// round starts.
const ROUNDS: usize = 5;
const ROUNDS_BUDGET: Duration = Duration::from_secs(300);
/// One INSERT (connection included) gets this long before it counts as failed.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);
/// pgbench's run length, for each of its two runs per configuration.
const BENCH_SECONDS: &str = "20";

fn container_of(lab: &Lab, node: &Node) -> String {
    format!("pg-{}-{}", lab.prefix, node.name)
}

fn runtime_of(prefix: &str, node: &Node) -> String {
    format!("tandem-{prefix}-{}", node.name)
}

fn vip(lab: &Lab) -> String {
    lab.layout
        .pointer("/vip")
        .and_then(Value::as_str)
        .expect("lab layout has a vip")
        .to_owned()
}

fn client_ns(lab: &Lab) -> String {
    lab.layout
        .pointer("/namespaces/client")
        .and_then(Value::as_str)
        .expect("lab layout has a client namespace")
        .to_owned()
}

/// A small deterministic generator for the kill delays (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// Runs `psql` once, with `timeout`: Ok(stdout) if it exited 0.
fn run_psql(host: &str, sql: &str, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-h",
            host,
            "-U",
            "postgres",
            "-Atq",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", sql, "postgres"])
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("psql: {e}"))?;
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out".into());
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Enters the network namespace `/run/netns/<ns>` on this thread (and so for the
/// processes it spawns).
fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Runs `sql` through the VIP from the client namespace, retrying until it
/// succeeds or `within` has passed.
fn via_vip(lab: &Lab, sql: &str, within: Duration) -> String {
    let (ns, host, sql) = (client_ns(lab), vip(lab), sql.to_owned());
    std::thread::spawn(move || {
        enter_netns(&ns);
        let end = Instant::now() + within;
        loop {
            match run_psql(&host, &sql, Duration::from_secs(60)) {
                Ok(out) => return out,
                Err(e) if Instant::now() > end => panic!("{sql:?} via the VIP: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .join()
    .expect("client thread")
}

/// One acknowledged INSERT: its id, when it was sent and when the COMMIT returned.
#[derive(Clone, Copy, Debug)]
struct Ack {
    id: u64,
    sent: Instant,
    acked: Instant,
}

/// The client inserting numbered rows through the VIP, one connection each.
struct Inserter {
    stop: Arc<AtomicBool>,
    acks: Arc<std::sync::Mutex<Vec<Ack>>>,
    thread: JoinHandle<u64>,
}

impl Inserter {
    /// Starts at id `first`.
    fn start(lab: &Lab, first: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, list, ns, host) = (stop.clone(), acks.clone(), client_ns(lab), vip(lab));
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let mut id = first;
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let sql = format!("INSERT INTO acked (id, pad) VALUES ({id}, repeat('x', 400))");
                if run_psql(&host, &sql, INSERT_TIMEOUT).is_ok() {
                    let ack = Ack {
                        id,
                        sent,
                        acked: Instant::now(),
                    };
                    list.lock().expect("acks").push(ack);
                } else {
                    // Not at a high rate against a dead address.
                    std::thread::sleep(Duration::from_millis(20));
                }
                id += 1;
            }
            id
        });
        Self { stop, acks, thread }
    }

    fn count(&self) -> usize {
        self.acks.lock().expect("acks").len()
    }

    /// The first acknowledgement of an INSERT sent at or after `t`.
    fn first_sent_after(&self, t: Instant) -> Option<Ack> {
        self.acks
            .lock()
            .expect("acks")
            .iter()
            .find(|a| a.sent >= t)
            .copied()
    }

    /// Stops; returns the acknowledgements and the next unused id.
    fn stop(self) -> (Vec<Ack>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let next = self.thread.join().expect("inserter thread");
        let acks = std::mem::take(&mut *self.acks.lock().expect("acks"));
        (acks, next)
    }
}

/// Node `i`'s links on both lab networks, public and private (a dead node is
/// silent on both).
fn set_link(lab: &Lab, i: usize, up: bool) {
    lab.set_links(i, up).unwrap_or_else(|e| panic!("{e}"));
}

/// Runtimes registered one after the other: each one's Drop puts back the
/// daemon.json it found, so they must go in the reverse order (a Vec drops its
/// elements first to last, which would leave all but the first registered).
struct Runtimes(Vec<Runtime>);

impl Drop for Runtimes {
    fn drop(&mut self) {
        while let Some(runtime) = self.0.pop() {
            drop(runtime);
        }
    }
}

/// Puts node1's links back up if the test stops while they are cut (reporting,
/// not panicking: a panic while unwinding would abort before `lab down`).
struct LinkGuard<'a>(&'a Lab);

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.set_links(0, true) {
            eprintln!("cannot restore node1's links: {e}");
        }
    }
}

fn running(container: &str) -> bool {
    let out = docker(&["inspect", "--format", "{{.State.Running}}", container]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
}

fn status_u64(lab: &Lab, i: usize, pointer: &str) -> u64 {
    lab.status(i)
        .ok()
        .and_then(|v| v.pointer(pointer).and_then(Value::as_u64))
        .unwrap_or_default()
}

fn state(lab: &Lab, i: usize) -> String {
    lab.status(i)
        .ok()
        .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// Every acknowledged id is in the table (read through the VIP), and amcheck
/// passes on the table's B-tree indexes (heap included).
fn check_database(lab: &Lab, acked: &BTreeSet<u64>, when: &str) -> usize {
    let rows = via_vip(
        lab,
        "SELECT id FROM acked ORDER BY id",
        Duration::from_secs(120),
    );
    let present: BTreeSet<u64> = rows.lines().filter_map(|l| l.parse().ok()).collect();
    let missing: Vec<u64> = acked.difference(&present).copied().collect();
    assert!(
        missing.is_empty(),
        "{when}: {} acknowledged rows are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let checked = via_vip(
        lab,
        "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
         WHERE a.amname = 'btree' AND i.indrelid = 'acked'::regclass",
        Duration::from_secs(60),
    );
    assert_eq!(
        checked, "2",
        "{when}: amcheck did not check acked's two indexes"
    );
    present.len()
}

/// `tandem swap` from node `from`, asked again while it is refused. The agent
/// refuses a swap (and the command then waits out its timeout) unless it sees its
/// peer SECOND, in sync and able to run the application; its view of the peer
/// follows the peer's own status by a heartbeat or so, so a swap sent the moment
/// both report in sync can be refused.
fn swap(lab: &Lab, from: usize) {
    let end = Instant::now() + Duration::from_secs(180);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = Command::new(tandem_bin())
            .args(["swap", "--timeout", "15", "-c"])
            .arg(&lab.nodes[from].config)
            .output()
            .expect("tandem swap");
        if out.status.success() {
            if attempts > 1 {
                eprintln!("swap done at attempt {attempts}");
            }
            return;
        }
        // A handover under way: the caller waits for the new roles.
        if state(lab, from) != "PRIM" {
            return;
        }
        assert!(
            Instant::now() < end,
            "swap failed {attempts} times: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            lab.log_tail(from, 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One pgbench run's figures.
#[derive(Clone, Copy, Debug)]
struct Bench {
    tps: f64,
    latency_ms: f64,
    processed: u64,
    failed: u64,
    /// Durability calls that reached node1's barrier meanwhile (0 without it).
    barriers: u64,
    /// Of those, calls released without the peer having the data (node1 ALONE).
    unprotected: u64,
}

/// pgbench in `container` (unix socket, so that no network is measured) with
/// `clients` clients; `lab` given, node1's barrier calls are counted too.
fn pgbench(container: &str, clients: u32, lab: Option<&Lab>) -> Bench {
    // With several clients, the simple-update script (-N): TPC-B-like updates the
    // scale-1 table's single branch row in every transaction, so its clients queue
    // on that row lock and each commit waits for the previous one's flush.
    let script = if clients > 1 { "-N" } else { "-n" };
    let barriers = || lab.map_or(0, |l| status_u64(l, 0, "/replication/barriers"));
    let unprotected = || lab.map_or(0, |l| status_u64(l, 0, "/replication/released_unprotected"));
    let before = barriers();
    let unprotected_before = unprotected();
    let clients = clients.to_string();
    let out = docker_ok(&[
        "exec",
        container,
        "pgbench",
        "-U",
        "postgres",
        "-n",
        script,
        "-c",
        &clients,
        "-j",
        "2",
        "-T",
        BENCH_SECONDS,
        "postgres",
    ]);
    let number = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|r| r.trim_start_matches([' ', '=']).split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in pgbench's output:\n{out}"))
    };
    Bench {
        tps: number("tps"),
        latency_ms: number("latency average"),
        processed: pgbench_number(&out, "number of transactions actually processed"),
        failed: pgbench_number(&out, "number of failed transactions"),
        barriers: barriers() - before,
        unprotected: unprotected() - unprotected_before,
    }
}

impl std::fmt::Display for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} tps, {:.2} ms average latency, {} transactions ({} failed), {} barrier calls \
             ({} released unprotected)",
            self.tps, self.latency_ms, self.processed, self.failed, self.barriers, self.unprotected
        )
    }
}

/// The apparent size of a directory tree, in bytes (`du -sb`).
fn du_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn postgres_survives_the_loss_of_its_server() {
    let Some(_serial) = serial() else { return };
    let started = Instant::now();
    build_image();
    let seed = std::env::var("TANDEM_PG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs()
        });
    eprintln!("kill timings: TANDEM_PG_SEED={seed}");
    let mut rng = Rng(seed | 1);

    // Dropped last: the runtimes outlive the lab, whose agents may still start or
    // stop containers while it goes down.
    let mut runtimes = Runtimes(Vec::new());
    let init = ContainerName::new();
    let lab = Lab::up_with_application_prepared(
        "pgf",
        Duration::from_secs(90),
        |node| {
            let prefix = node
                .namespace
                .strip_suffix(&format!("-{}", node.name))
                .unwrap_or(&node.namespace);
            let c = format!("pg-{prefix}-{}", node.name);
            let start = format!(
                "docker rm -f {c} >/dev/null 2>&1; docker run -d --name {c} --runtime {rt} \
                 --network none -e TANDEM_NETNS=/run/netns/{ns} -v {data}/pgdata:{PGDATA} {IMAGE}",
                rt = runtime_of(prefix, node),
                ns = node.namespace,
                data = node.data_dir.display(),
            );
            let stop = format!(
                "docker stop -t 30 {c} >/dev/null 2>&1; docker rm -f {c} >/dev/null 2>&1; true"
            );
            (start, stop)
        },
        |lab| {
            for node in &lab.nodes {
                let sock = node.state_dir.join("seccomp.sock");
                runtimes.0.push(Runtime::register_as(
                    &runtime_of(&lab.prefix, node),
                    &wrapper_binary(),
                    &[
                        "oci-runtime",
                        "--listener",
                        sock.to_str().expect("utf-8 path"),
                        "--runc",
                        RUNC,
                        "--",
                    ],
                ));
            }
            // The cluster is made before the agents start (initdb under the barrier
            // takes minutes on this machine); node2 gets it by the first sync.
            let pgdata = lab.nodes[0].data_dir.join("pgdata");
            std::fs::create_dir(&pgdata).map_err(|e| e.to_string())?;
            start_postgres(&init, &pgdata, &[], INITDB);
            psql(
                &init.0,
                &[
                    "CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz NOT NULL \
                     DEFAULT clock_timestamp(), pad text)",
                    "CREATE INDEX acked_at ON acked (at)",
                    "CREATE EXTENSION amcheck",
                ],
            );
            docker_ok(&["stop", "-t", "60", &init.0]);
            docker_ok(&["rm", &init.0]);
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Dropped first: the application's containers.
    let names: Vec<String> = lab.nodes.iter().map(|n| container_of(&lab, n)).collect();
    let _containers: Vec<ContainerName> = names.iter().cloned().map(ContainerName).collect();
    let (pg1, pg2) = (&names[0], &names[1]);

    lab.wait_state(0, "PRIM", true, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(1, "SECOND", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    via_vip(&lab, "SELECT 1", Duration::from_secs(120));
    assert!(
        running(pg1) && !running(pg2),
        "PostgreSQL should run on node1 only"
    );
    eprintln!(
        "pair up, PostgreSQL on node1 via the VIP after {:?}",
        started.elapsed()
    );

    // A TANDEM_NETNS that names no namespace: the wrapper refuses the container.
    let refused = ContainerName::new();
    let out = docker(&[
        "run",
        "--name",
        &refused.0,
        "--runtime",
        &runtime_of(&lab.prefix, &lab.nodes[0]),
        "--network",
        "none",
        "-e",
        "TANDEM_NETNS=/run/netns/tandem-test-no-such-namespace",
        "--entrypoint",
        "/bin/true",
        IMAGE,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a container with a missing TANDEM_NETNS started"
    );
    eprintln!("missing TANDEM_NETNS refused: {}", err.trim());
    assert!(err.contains("no such network namespace"), "{err}");
    drop(refused);

    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut next_id = 1;
    let rounds_started = Instant::now();
    let mut summary = Vec::new();
    let rounds = std::env::var("TANDEM_PG_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 1..=rounds {
        if rounds_started.elapsed() > ROUNDS_BUDGET {
            eprintln!("round budget used up after {} rounds", round - 1);
            break;
        }
        let delay = rng.millis(300, 4000);
        let inserter = Inserter::start(&lab, next_id);
        let end = Instant::now() + Duration::from_secs(60);
        while inserter.count() < 3 {
            assert!(
                Instant::now() < end,
                "round {round}: no INSERT acknowledged"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(delay);

        // Node death: agent, container and link, as close together as we can.
        let t_kill = Instant::now();
        lab.signal_agent(0, Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("SIGKILL node1's agent: {e}"));
        set_link(&lab, 0, false);
        let link = LinkGuard(&lab);
        let _ = docker(&["kill", pg1]);
        assert!(lab.wait_agent_gone(0, Duration::from_secs(30)));

        let end = Instant::now() + Duration::from_secs(180);
        let first = loop {
            if let Some(a) = inserter.first_sent_after(t_kill) {
                break a;
            }
            assert!(
                Instant::now() < end,
                "round {round}: no INSERT acknowledged within 180 s of node1's death \
                 (node2 {})\n{}",
                state(&lab, 1),
                lab.log_tail(1, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let outage = first.acked.duration_since(t_kill);
        std::thread::sleep(Duration::from_secs(1));
        let (acks, next) = inserter.stop();
        next_id = next;
        let before_kill = acks.iter().filter(|a| a.acked < t_kill).count();
        acked.extend(acks.iter().map(|a| a.id));
        assert!(
            running(pg2),
            "round {round}: PostgreSQL does not run on node2"
        );
        let rows = check_database(&lab, &acked, &format!("round {round}, on node2"));

        // node1 comes back: link, then agent (as systemd would restart it).
        drop(link);
        lab.restart_missing()
            .unwrap_or_else(|e| panic!("restart node1's agent: {e}"));
        lab.wait_state(0, "SECOND", true, Duration::from_secs(240))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        lab.wait_state(1, "PRIM", true, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let resync = status_u64(&lab, 1, "/replication/resync_total_bytes");
        let pgdata_bytes = du_bytes(&lab.nodes[1].data_dir.join("pgdata"));

        // And takes PostgreSQL back.
        let t_swap = Instant::now();
        swap(&lab, 1);
        lab.wait_state(0, "PRIM", true, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        lab.wait_state(1, "SECOND", true, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let back_rows = check_database(&lab, &acked, &format!("round {round}, back on node1"));
        let swapped = t_swap.elapsed();
        assert!(
            running(pg1) && !running(pg2),
            "round {round}: PostgreSQL should run on node1 only after the swap"
        );
        let line = format!(
            "round {round}: kill after {delay:?} of load; {} acked this round ({before_kill} \
             before the kill), {} acked in all, {rows} rows on node2 / {back_rows} back on \
             node1; outage (kill -> first acked INSERT via the VIP) {outage:?}; node1's \
             resync {resync} bytes (of a {pgdata_bytes}-byte data directory); swap back {swapped:?}",
            acks.len(),
            acked.len()
        );
        eprintln!("{line}");
        summary.push(line);
    }
    eprintln!("--- summary (seed {seed}) ---");
    for line in &summary {
        eprintln!("{line}");
    }
    // TANDEM_PG_ROUNDS=0 measures pgbench only.
    assert!(rounds == 0 || !summary.is_empty(), "no round ran");

    // Issue 6 item 4's figure: pgbench with the barrier (node1 PRIM, node2 in sync)
    // and on an unreplicated directory with plain runc, same image, same settings.
    docker_ok(&[
        "exec", pg1, "pgbench", "-U", "postgres", "-i", "-s", "1", "-q", "postgres",
    ]);
    let before = status_u64(&lab, 0, "/replication/released_unprotected");
    let load_before = loadavg();
    let barrier_1 = pgbench(pg1, 1, Some(&lab));
    let barrier_4 = pgbench(pg1, 4, Some(&lab));
    let unprotected = status_u64(&lab, 0, "/replication/released_unprotected") - before;
    // The barrier listener's own timeout releases are not counted in the status.
    let timeouts = std::fs::read_to_string(&lab.nodes[0].log)
        .unwrap_or_default()
        .matches("released on timeout")
        .count();
    let in_sync = state(&lab, 0);
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain = ContainerName::new();
    let plain_data: PathBuf = plain_dir.path().join("pgdata");
    std::fs::create_dir(&plain_data).expect("pgdata");
    start_postgres(&plain, Path::new(&plain_data), &[], INITDB);
    docker_ok(&[
        "exec", &plain.0, "pgbench", "-U", "postgres", "-i", "-s", "1", "-q", "postgres",
    ]);
    let plain_1 = pgbench(&plain.0, 1, None);
    let plain_4 = pgbench(&plain.0, 4, None);
    let load_after = loadavg();
    eprintln!(
        "pgbench (scale 1, {BENCH_SECONDS} s per run, -j 2, inside the container), \
         agent {}:\n\
         barrier, 1 client, TPC-B-like:      {barrier_1}\n\
         barrier, 4 clients, simple-update:  {barrier_4}\n\
         plain,   1 client, TPC-B-like:      {plain_1}\n\
         plain,   4 clients, simple-update:  {plain_4}\n\
         node1 {in_sync} after the barrier runs, {unprotected} calls released unprotected \
         meanwhile, {timeouts} released on the listener's timeout in node1's whole log; \
         load average {load_before} before, {load_after} after",
        tandem_bin().display()
    );
    assert_eq!(
        barrier_1.failed + barrier_4.failed,
        0,
        "pgbench transactions failed"
    );
    drop(plain);
    eprintln!("test took {:?}", started.elapsed());
}
