//! One network lost out of two is not the peer lost. The lab cables a pair as a
//! real one is: the public network carries the VIP, the client and the witness;
//! the private one (a back-to-back link) carries replication; heartbeats go on
//! both. Each network is cut in turn by taking its bridge down (its switch dies:
//! every interface stays up, only silence tells the nodes), while the client
//! probes the VIP and a writer on node1 makes records durable under the barrier.
//!
//! - Private network cut: node2 still hears node1 on the public network, so
//!   nothing moves. node1 keeps the VIP and the service; its held durability calls
//!   are released without the peer once the replication link is given up, and it
//!   goes on writing with the peer out of sync. node2 stays SECOND, not in sync,
//!   its status showing the private network down and the public one up. Healed,
//!   node2 resyncs and no acknowledged record is missing from it.
//! - Public network cut: the client reaches nobody, but the nodes hear each other
//!   on the private network, so neither fences nor takes over, and replication
//!   (on the private network) stays in sync: the writer is not even slowed.
//!
//! Throughout, the client is only ever served by node1.

use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_tests::{
    compare::wait_identical,
    lab::Lab,
    rpo::{self, Writer},
    vip_client::{self, Sample},
};

use super::{assert_single_server, client, pair, serial, wait_served};

/// How long each cut lasts at least: the replication link's loss is noticed
/// after the heartbeat timeout (1 s, QUIC's idle timeout too) and a held
/// durability call waits at most the ack timeout (5 s in the lab, `Ctx::ack_timeout`),
/// so after this the writer must be moving again.
const CUT: Duration = Duration::from_secs(8);
/// How often the nodes' statuses are read during a cut.
const POLL: Duration = Duration::from_millis(200);

fn writer_bin() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_rpo-writer")).to_path_buf()
}

/// Takes network `name` down; back up when dropped, also when the test fails
/// (reporting, not panicking, so that the lab's own guard still runs).
struct NetworkCut<'a> {
    lab: &'a Lab,
    name: &'static str,
}

impl<'a> NetworkCut<'a> {
    fn new(lab: &'a Lab, name: &'static str) -> Self {
        lab.set_network(name, false)
            .unwrap_or_else(|e| panic!("cannot cut the {name} network: {e}"));
        Self { lab, name }
    }
}

impl Drop for NetworkCut<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.lab.set_network(self.name, true) {
            eprintln!("cannot restore the {} network: {e}", self.name);
        }
    }
}

/// One reading of both nodes' statuses.
struct Reading {
    at: Instant,
    node: [Value; 2],
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn bool_at(v: &Value, pointer: &str) -> Option<bool> {
    v.pointer(pointer).and_then(Value::as_bool)
}

/// Whether heartbeat network `name` is up in `status` (`None`: not listed).
fn heartbeat_up(status: &Value, name: &str) -> Option<bool> {
    status
        .pointer("/peer/networks")?
        .as_array()?
        .iter()
        .find(|n| n.get("name").and_then(Value::as_str) == Some(name))?
        .get("up")?
        .as_bool()
}

/// Reads both statuses every [`POLL`] for `d`, checking on each reading that
/// node1 alone runs the service and holds the VIP.
fn watch(lab: &Lab, d: Duration, what: &str) -> Vec<Reading> {
    let end = Instant::now() + d;
    let mut readings = Vec::new();
    while Instant::now() < end {
        let at = Instant::now();
        // A status the agent is too busy to give in time is skipped, not a failure:
        // what the readings check is who serves.
        let (Ok(n1), Ok(n2)) = (lab.status(0), lab.status(1)) else {
            eprintln!("{what}: a status was not read at {at:?}");
            std::thread::sleep(POLL);
            continue;
        };
        let node = [n1, n2];
        let (n1, n2) = (&node[0], &node[1]);
        assert!(
            matches!(str_at(n1, "/state"), "PRIM" | "ALONE")
                && bool_at(n1, "/vip/held") == Some(true)
                && bool_at(n1, "/application/running") == Some(true),
            "{what}: node1 stopped serving: {n1}\n{}",
            lab.log_tail(0, 40)
        );
        assert!(
            str_at(n2, "/state") == "SECOND"
                && bool_at(n2, "/vip/held") == Some(false)
                && bool_at(n2, "/application/running") == Some(false),
            "{what}: node2 left SECOND: {n2}\n{}",
            lab.log_tail(1, 40)
        );
        readings.push(Reading { at, node });
        std::thread::sleep(POLL);
    }
    // A handful of readings spread over the cut, at the least.
    assert!(
        readings.len() >= 5,
        "{what}: only {} statuses read in {d:?}",
        readings.len()
    );
    readings
}

/// The longest run of unanswered probes within `[from, to]`.
fn longest_unanswered(samples: &[Sample], from: Instant, to: Instant) -> Duration {
    let mut start: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    for s in samples.iter().filter(|s| s.at >= from && s.at <= to) {
        match (&s.answer, start) {
            (None, None) => start = Some(s.at),
            (Some(_), Some(t)) => {
                longest = longest.max(s.at.duration_since(t));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(t) = start {
        longest = longest.max(to.saturating_duration_since(t));
    }
    longest
}

#[test]
fn one_network_cut_moves_nothing() {
    let _g = serial();
    let lab = pair("net");
    let started = Instant::now();
    let c = client(&lab);
    wait_served(&c, "node1", Duration::from_secs(10));
    let mut writer = Writer::start(&lab.nodes[0], &writer_bin(), "rpo-networks.log")
        .unwrap_or_else(|e| panic!("{e}"));
    let end = Instant::now() + Duration::from_secs(10);
    while writer.acked_since(started) < 20 {
        assert!(
            Instant::now() < end,
            "the writer made nothing durable while the pair was in sync"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // --- The private network (replication, heartbeats) fails. ---
    let t0 = Instant::now();
    let cut = NetworkCut::new(&lab, "private");
    let readings = watch(&lab, CUT, "private network cut");
    let t1 = Instant::now();
    let last = &readings.last().expect("readings").node;
    let (n1, n2) = (&last[0], &last[1]);
    assert_eq!(
        (heartbeat_up(n2, "private"), heartbeat_up(n2, "public")),
        (Some(false), Some(true)),
        "node2 should hear node1 on the public network only: {n2}"
    );
    assert_eq!(
        bool_at(n2, "/replication/in_sync"),
        Some(false),
        "node2 missed records and cannot be in sync: {n2}"
    );
    assert_eq!(bool_at(n1, "/replication/in_sync"), Some(false), "{n1}");
    assert!(writer.running(), "the writer failed during the private cut");
    // node1 goes on: durability calls are released without the peer (counted).
    let late = t1 - Duration::from_secs(2);
    assert!(
        writer.acked_since(late) > 0,
        "node1's writer made nothing durable in the last 2 s of the cut: its calls are held\n{}",
        lab.log_tail(0, 40)
    );
    assert!(
        n1.pointer("/replication/released_unprotected")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0),
        "node1 acknowledged writes without the peer but counted none: {n1}"
    );
    let private_stall = rpo::longest_stall(&writer.acks(), t0, t1);
    let node1_states: Vec<&str> = readings
        .iter()
        .map(|r| str_at(&r.node[0], "/state"))
        .collect();
    eprintln!(
        "private cut: node1 {} ({}), writer stalled {private_stall:?} at most",
        node1_states.last().copied().unwrap_or(""),
        str_at(n1, "/reason"),
    );

    // Healed: node2 resyncs, and has every record acknowledged so far.
    drop(cut);
    lab.wait_state(1, "SECOND", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n--- node1 ---\n{}", lab.log_tail(0, 40)));
    lab.wait_state(0, "PRIM", true, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let healed = Instant::now();
    let on_node2 = lab.nodes[1].data_dir.join("rpo-networks.log");
    let acked: Vec<u64> = writer.acks().iter().map(|(n, _)| *n).collect();
    rpo::check_records(&on_node2, &acked).unwrap_or_else(|e| panic!("after the private cut: {e}"));
    eprintln!(
        "private network back: node2 in sync again after {:?}",
        healed - t1
    );

    // --- The public network (VIP, client, witness, heartbeats) fails. ---
    let t2 = Instant::now();
    let cut = NetworkCut::new(&lab, "public");
    let readings = watch(&lab, Duration::from_secs(4), "public network cut");
    let t3 = Instant::now();
    // Replication is on the private network: in sync all along.
    for r in &readings {
        assert_eq!(
            (
                bool_at(&r.node[0], "/replication/in_sync"),
                bool_at(&r.node[1], "/replication/in_sync"),
                str_at(&r.node[0], "/state"),
            ),
            (Some(true), Some(true), "PRIM"),
            "the pair left PRIM + SECOND in sync {:?} into the public cut: {} / {}",
            r.at - t2,
            r.node[0],
            r.node[1]
        );
    }
    let n2 = &readings.last().expect("readings").node[1];
    assert_eq!(
        (heartbeat_up(n2, "private"), heartbeat_up(n2, "public")),
        (Some(true), Some(false)),
        "node2 should hear node1 on the private network only: {n2}"
    );
    let public_stall = rpo::longest_stall(&writer.acks(), t2, t3);
    drop(cut);
    wait_served(&c, "node1", Duration::from_secs(10));
    let back = t3.elapsed();

    // The end: the copies are identical and hold every acknowledged record.
    let acks = writer.stop();
    let samples = c.finish(&lab, 0);
    let acked: Vec<u64> = acks.iter().map(|(n, _)| *n).collect();
    let diffs = wait_identical(
        &lab.nodes[0].data_dir,
        &lab.nodes[1].data_dir,
        Duration::from_secs(30),
    );
    assert!(diffs.is_empty(), "the copies differ: {diffs:?}");
    rpo::check_records(&on_node2, &acked).unwrap_or_else(|e| panic!("at the end: {e}"));
    assert_single_server(&samples, started, &["node1"]);
    let first = vip_client::first_answer_from(&samples, t3, "node1");
    eprintln!(
        "private cut: client unanswered {:?} at most (reads), writer stalled {private_stall:?}; \
         public cut: client unanswered {:?} (nobody reachable), writer stalled {public_stall:?}, \
         served again {first:?} after the repair (seen {back:?}); {} records acknowledged, all on node2",
        longest_unanswered(&samples, t0, t1),
        longest_unanswered(&samples, t2, t3),
        acked.len()
    );
}
