//! Where a held durability call spends its time: one debug event per stage of
//! its path (listener, capture thread, primary task, the secondary's task, back),
//! stamped with `CLOCK_MONOTONIC`, which every network namespace of one machine
//! shares, so the lab's two agents can be laid side by side. Enable with
//! `TANDEM_LOG=info,tandem::hops=debug`; `tandem-tests`' `hops` binary
//! pairs the stages and prints where the time goes.

/// Microseconds of `CLOCK_MONOTONIC`.
fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1_000
}

/// Marks `stage` of the held call `id` (primary side) or of the barrier record
/// `seq` (0 where not known yet).
pub fn mark(stage: &'static str, id: u64, seq: u64) {
    if tracing::enabled!(target: "tandem::hops", tracing::Level::DEBUG) {
        tracing::debug!(target: "tandem::hops", stage, id, seq, t_us = now_us());
    }
}
