//! `tandem demo` end to end: the installed binary alone builds its lab, loses the
//! primary, checks the acknowledged writes, brings the node back, swaps back and
//! removes everything. It must pass with no acknowledged write lost and leave no
//! namespace or directory behind.

use std::{path::Path, process::Command, time::Instant};

use tandem_tests::lab::tandem_bin;

#[test]
fn demo_runs_end_to_end_and_loses_no_acknowledged_write() {
    let _g = super::serial();
    // A prefix of its own, so the test never removes a demo lab an operator runs.
    let prefix = format!("tdemo{}", std::process::id() % 100_000);
    let t0 = Instant::now();
    let out = Command::new(tandem_bin())
        .args(["demo", "--prefix", &prefix])
        .output()
        .expect("run tandem demo");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tandem demo failed after {took:?}: {stderr}\n--- output ---\n{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("the summary has no `{name}` row:\n{stdout}"))
            .to_string()
    };
    assert_eq!(row("lost writes"), "0", "{stdout}");
    assert_eq!(row("copies identical"), "yes", "{stdout}");
    let acked = row("acknowledged writes");
    assert!(
        acked.contains("by node1") && acked.contains("by node2"),
        "both nodes should have acknowledged writes: {acked}"
    );
    assert!(stdout.contains("demo passed"), "{stdout}");
    for member in ["node1", "node2", "client", "witness", "br"] {
        let ns = Path::new("/run/netns").join(format!("{prefix}-{member}"));
        assert!(!ns.exists(), "{} left behind", ns.display());
    }
    let dir = Path::new("/var/tmp").join(&prefix);
    assert!(!dir.exists(), "{} left behind", dir.display());
    eprintln!("tandem demo passed in {took:?}");
}
