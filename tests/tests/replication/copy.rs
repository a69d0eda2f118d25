//! The capture oracle's workload on node1 gives a byte-identical copy on node2.
//!
//! 2,000 operations by default (well under a minute); `TANDEM_REPL_OPS`,
//! `TANDEM_REPL_SEED` and `TANDEM_REPL_WAIT_S` change the run, and
//! `TANDEM_LAB_KEEP_LOGS=DIR` keeps both agents' logs (with
//! `TANDEM_LOG=warn,tandem::replication::ship=trace,tandem::runtime::secondary=trace`,
//! every change shipped and record applied) and `TANDEM_ORACLE_OPLOG=FILE` the
//! workload's operations, to follow a file that differs.

use std::time::Duration;

use tandem_tests::workload::{self, Config};

use super::{pair, serial, wait_identical};

#[test]
fn workload_copy_is_identical_on_the_peer() {
    let _g = serial();
    let lab = pair("cp");
    let data = lab.nodes[0].data_dir.clone();
    let unwatched = lab.dir.join("unwatched");
    std::fs::create_dir_all(&unwatched).expect("mkdir");
    let a = data.join("a");
    let b = data.join("b");
    std::fs::create_dir_all(&a).expect("mkdir");
    std::fs::create_dir_all(&b).expect("mkdir");
    let seed: u64 = std::env::var("TANDEM_REPL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0003);
    let ops: usize = std::env::var("TANDEM_REPL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let counts = workload::run(&Config {
        seed,
        ops,
        processes: 2,
        threads: 2,
        watched: vec![a, b],
        unwatched,
    })
    .expect("workload");
    eprintln!("seed {seed:#x}: {}", counts.report());
    let wait: u64 = std::env::var("TANDEM_REPL_WAIT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let started = std::time::Instant::now();
    let diffs = wait_identical(&data, &lab.nodes[1].data_dir, Duration::from_secs(wait));
    eprintln!("copies compared for {:?}", started.elapsed());
    assert!(
        diffs.is_empty(),
        "seed {seed:#x}: node2's copy differs from node1's:\n{}\n--- node1 log ---\n{}\n--- node2 log ---\n{}",
        diffs.join("\n"),
        lab.log_tail(0, 30),
        lab.log_tail(1, 30)
    );
}
