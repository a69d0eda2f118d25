//! Resynchronisation: a node that was away gets only what changed (bytes sent at most
//! 1.2 × bytes changed, plus metadata), also after kill -9 of the primary while it
//! was alone; divergence keeps the losing side's files in its conflict directory.

use std::{
    io::{Seek, SeekFrom, Write},
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tandem_tests::{
    lab::{Lab, tandem_bin},
    workload::Rng,
};

use super::{pair, serial, wait_identical};

const MIB: u64 = 1 << 20;

/// Overwrites `blocks` random 4 KiB blocks of `file`; returns the bytes changed.
fn scribble(file: &Path, blocks: u64, rng: &mut Rng) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open");
    let size = f.metadata().expect("stat").len();
    let mut touched = std::collections::HashSet::new();
    for _ in 0..blocks {
        let b = rng.below(size / 4096);
        touched.insert(b);
        f.seek(SeekFrom::Start(b * 4096)).expect("seek");
        f.write_all(&rng.bytes(4096)).expect("write");
    }
    f.sync_all().expect("sync");
    touched.len() as u64 * 4096
}

fn stop_agent(lab: &Lab, i: usize, sig: Signal) {
    lab.signal_agent(i, sig).expect("signal agent");
    assert!(
        lab.wait_agent_gone(i, Duration::from_secs(30)),
        "agent {i} did not stop"
    );
}

fn resync_bytes(lab: &Lab) -> u64 {
    let st: Value = lab.status(0).expect("status");
    st.pointer("/replication/resync_total_bytes")
        .and_then(Value::as_u64)
        .expect("resync_total_bytes")
}

fn base_file(lab: &Lab, rng: &mut Rng) -> std::path::PathBuf {
    let base = lab.nodes[0].data_dir.join("base.bin");
    std::fs::write(&base, rng.bytes(usize::try_from(32 * MIB).expect("fits"))).expect("write base");
    let d = wait_identical(
        &lab.nodes[0].data_dir,
        &lab.nodes[1].data_dir,
        Duration::from_secs(60),
    );
    assert!(d.is_empty(), "initial copy differs: {d:?}");
    base
}

fn check_ratio(what: &str, sent: u64, changed: u64) {
    // Metadata: hashes travel the other way; what the primary sends beyond data is
    // attributes and names, a few KiB here.
    let limit = changed + changed / 5 + 256 * 1024;
    eprintln!("{what}: changed {changed} bytes, resync sent {sent} bytes of data");
    assert!(
        sent <= limit,
        "{what}: resync sent {sent} bytes for {changed} changed (limit {limit})"
    );
}

#[test]
fn returning_secondary_gets_only_what_changed() {
    let _g = serial();
    let mut rng = Rng::new(0x2E5C);
    let lab = pair("rs");
    let base = base_file(&lab, &mut rng);
    stop_agent(&lab, 1, Signal::SIGTERM);
    lab.wait_state(0, "ALONE", false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut changed = scribble(&base, 1024, &mut rng);
    let fresh = lab.nodes[0].data_dir.join("fresh.bin");
    std::fs::write(&fresh, rng.bytes(usize::try_from(2 * MIB).expect("fits"))).expect("write");
    changed += 2 * MIB;
    lab.restart_missing().unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(1, "SECOND", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let d = wait_identical(
        &lab.nodes[0].data_dir,
        &lab.nodes[1].data_dir,
        Duration::from_secs(30),
    );
    assert!(d.is_empty(), "copies differ after resync: {d:?}");
    check_ratio("secondary returned", resync_bytes(&lab), changed);
}

#[test]
fn resync_after_kill_9_of_the_primary_while_alone() {
    let _g = serial();
    let mut rng = Rng::new(0x6B11);
    let lab = pair("rk");
    let base = base_file(&lab, &mut rng);
    stop_agent(&lab, 1, Signal::SIGTERM);
    lab.wait_state(0, "ALONE", false, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let changed = scribble(&base, 512, &mut rng);
    stop_agent(&lab, 0, Signal::SIGKILL);
    lab.restart_missing().unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(0, "PRIM", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let d = wait_identical(
        &lab.nodes[0].data_dir,
        &lab.nodes[1].data_dir,
        Duration::from_secs(30),
    );
    assert!(d.is_empty(), "copies differ after resync: {d:?}");
    check_ratio("primary killed while alone", resync_bytes(&lab), changed);
}

/// An agent this test started by hand: stopped when dropped, also if the test fails
/// (`ip netns exec` execs it, so the child is the agent itself).
struct ManualAgent(Child);

impl ManualAgent {
    fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Drop for ManualAgent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Starts node `i`'s agent by hand with another configuration (a child of this test).
fn run_agent(lab: &Lab, i: usize, config: &Path) -> ManualAgent {
    let log = std::fs::File::create(lab.dir.join(format!("manual-{i}.log"))).expect("log");
    Command::new("ip")
        .args(["netns", "exec", &lab.nodes[i].namespace])
        .arg(tandem_bin())
        .arg("run")
        .arg("-c")
        .arg(config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .map(ManualAgent)
        .expect("start agent")
}

fn status_of(config: &Path) -> Option<Value> {
    let out = Command::new(tandem_bin())
        .args(["status", "--json", "-c"])
        .arg(config)
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn divergence_keeps_the_losing_sides_files() {
    let _g = serial();
    let lab = pair("dv");
    let d1 = lab.nodes[0].data_dir.clone();
    let d2 = lab.nodes[1].data_dir.clone();
    std::fs::write(d1.join("shared.txt"), b"agreed\n").expect("write");
    assert!(wait_identical(&d1, &d2, Duration::from_secs(30)).is_empty());
    // node1 goes on alone.
    stop_agent(&lab, 1, Signal::SIGTERM);
    std::fs::write(d1.join("mine.txt"), b"node1 alone\n").expect("write");
    std::fs::write(d1.join("shared.txt"), b"node1's version\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    stop_agent(&lab, 0, Signal::SIGTERM);
    // node2 starts without its peer: it waits, since node1 may hold newer data,
    // until an operator forces it to run the application alone.
    let mut agent = run_agent(&lab, 1, &lab.nodes[1].config);
    let waiting = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        status_of(&lab.nodes[1].config).is_some_and(|s| s["state"] == "WAIT")
    });
    assert!(
        waiting,
        "node2 did not wait for its peer\n{}",
        lab.log_tail(1, 30)
    );
    lab.node_cmd(1, &["prim", "--force"])
        .unwrap_or_else(|e| panic!("{e}"));
    let alone = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        status_of(&lab.nodes[1].config).is_some_and(|s| s["state"] == "ALONE")
    });
    assert!(alone, "node2 never went ALONE");
    std::fs::write(d2.join("theirs.txt"), b"node2 alone\n").expect("write");
    std::fs::write(d2.join("shared.txt"), b"node2's version\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    agent.stop();
    // Both return; their data diverged, so neither runs until the operator picks
    // node1's data. node2 then follows and keeps its own changes aside.
    lab.restart_missing().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..2 {
        lab.wait_state(i, "WAIT", false, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    lab.node_cmd(0, &["prim", "--force"])
        .unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(1, "SECOND", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tail(1, 30)));
    let diffs = wait_identical(&d1, &d2, Duration::from_secs(30));
    assert!(diffs.is_empty(), "copies differ: {diffs:?}");
    assert_eq!(
        std::fs::read(d2.join("shared.txt")).expect("read"),
        b"node1's version\n"
    );
    // node2's own changes are kept, not lost.
    let conflicts = lab.nodes[1].state_dir.join("conflicts");
    let kept: Vec<_> = std::fs::read_dir(&conflicts)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", conflicts.display(), lab.log_tail(1, 30)))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "one conflict set expected: {kept:?}");
    let set = &kept[0];
    assert_eq!(
        std::fs::read(set.join("data/theirs.txt")).expect("kept theirs"),
        b"node2 alone\n"
    );
    assert_eq!(
        std::fs::read(set.join("data/shared.txt")).expect("kept shared"),
        b"node2's version\n"
    );
    assert!(set.join("REPORT").exists());
}
