//! Replication's acceptance tests, in a two-node lab (network namespaces on one
//! machine, `tandem lab`): a workload's copy is identical on the peer; writes the
//! application was told are durable survive kill -9; a returning node gets only what
//! changed; divergence keeps the losing side's files; a hostile peer gets nowhere.
//!
//! Labs are heavy (two agents with eBPF each): tests run one at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test binary: a failed set-up step must panic with its error"
)]

mod copy;
mod hostile;
mod resync;
mod rpo;

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use tandem_tests::{compare::wait_identical, lab::Lab};

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the one-lab-at-a-time lock and checks for root.
fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        nix::unistd::geteuid().is_root(),
        "the replication tests need root (eBPF, namespaces)"
    );
    g
}

/// A lab with both agents up and the pair in sync.
fn pair(tag: &str) -> Lab {
    let lab = Lab::up(tag).unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(0, "PRIM", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    lab.wait_state(1, "SECOND", true, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    lab
}
