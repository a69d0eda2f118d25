//! RPO = 0: a writer under the durability barrier logs each record it was told is
//! durable; node1's agent and the writer are killed with SIGKILL at random moments;
//! every logged record must be in node2's copy. The rounds take turns at how the
//! writer makes records durable: fdatasync, an `O_DSYNC` descriptor, pwritev2 with
//! `RWF_DSYNC`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::signal::Signal;
use tandem_tests::{lab::tandem_bin, rpo::check_records, workload::Rng};

use super::{pair, serial};

fn writer_bin() -> std::path::PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rpo-writer")).to_path_buf()
}

#[test]
fn acknowledged_writes_survive_kill_9_of_agent_and_writer() {
    let _g = serial();
    let rounds: u64 = std::env::var("TANDEM_RPO_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TANDEM_RPO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0A11_CE55);
    let mut rng = Rng::new(seed);
    let lab = pair("rpo");
    let node1 = lab.nodes[0].clone();
    let total_acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    // Acknowledged records per way of making them durable.
    let mut by_how = std::collections::BTreeMap::<&str, usize>::new();
    for round in 0..rounds {
        lab.wait_state(0, "PRIM", true, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let file = node1.data_dir.join(format!("rpo-{round}.log"));
        let how = ["fdatasync", "o-dsync", "rwf-dsync"][(round % 3) as usize];
        // The writer runs in node1's namespace under the barrier, as the application
        // would.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node1.namespace])
            .arg(tandem_bin())
            .arg("exec")
            .arg("-c")
            .arg(&node1.config)
            .arg("--")
            .arg(writer_bin())
            .args(["--how", how])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start writer");
        let stdout = child.stdout.take().expect("stdout");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(n) = line.trim().parse::<u64>() {
                        acked.lock().expect("lock").push(n);
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200 + rng.below(1500)));
        // Agent first or writer first, at random: both orders must keep RPO = 0.
        if rng.chance(50) {
            lab.signal_agent(0, Signal::SIGKILL).expect("kill agent");
            let _ = child.kill();
        } else {
            let _ = child.kill();
            lab.signal_agent(0, Signal::SIGKILL).expect("kill agent");
        }
        let _ = child.wait();
        let _ = reader.join();
        assert!(
            lab.wait_agent_gone(0, Duration::from_secs(30)),
            "round {round}: agent did not die"
        );
        let acked = acked.lock().expect("lock").clone();
        let on_node2 = lab.nodes[1].data_dir.join(format!("rpo-{round}.log"));
        if let Err(e) = check_records(&on_node2, &acked) {
            panic!(
                "seed {seed:#x} round {round} ({how}): {e}\n--- node1 log ---\n{}",
                lab.log_tail(0, 30)
            );
        }
        eprintln!(
            "round {round} ({how}): {} acknowledged records all on node2",
            acked.len()
        );
        *by_how.entry(how).or_default() += acked.len();
        total_acked.lock().expect("lock").extend(acked);
        lab.restart_missing()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    let n = total_acked.lock().expect("lock").len();
    assert!(
        n > 0,
        "the writer never got an fsync acknowledged: the barrier never released"
    );
    // Each way must have been acknowledged at least once: a barrier that never lets
    // a synchronous write return would pass the check above vacuously.
    if rounds >= 3 {
        for how in ["fdatasync", "o-dsync", "rwf-dsync"] {
            assert!(
                by_how.get(how).is_some_and(|&n| n > 0),
                "no {how} record was acknowledged: {by_how:?}"
            );
        }
    }
}
