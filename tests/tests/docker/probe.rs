//! Every durability call, with and without the flag that makes it one, from a real
//! program (`barrier-probe`) in a container: exactly the flagged ones are held, and
//! all of them still work, under the generated profile and under Docker's default.

use tandem::barrier::SyncCall;

use crate::{Barrier, ContainerName, Image, RUNC, Runtime, finish, run, serial, wrapper_binary};

/// The probe's output lines in order, and the calls that must reach the barrier.
const PROBE_EXPECTED: [(&str, &str); 15] = [
    ("pwritev2_plain", "0"),
    ("pwritev2_dsync", "0"),
    ("pwritev2_sync", "0"),
    ("msync_async", "0"),
    ("msync_sync", "0"),
    ("sfr_write", "0"),
    ("sfr_wait", "0"),
    ("fdatasync", "0"),
    ("syncfs", "0"),
    ("sync", "0"),
    ("io_uring_setup", "ENOSYS"),
    ("open_dsync", "0"),
    ("reserved_fd", "1"),
    ("pwrite_dsync", "0"),
    ("write_plain", "0"),
];
const PROBE_HELD: [SyncCall; 8] = [
    SyncCall::SyncWrite,
    SyncCall::SyncWrite,
    SyncCall::Msync,
    SyncCall::SyncFileRange,
    SyncCall::Fdatasync,
    SyncCall::Syncfs,
    SyncCall::Sync,
    SyncCall::SyncWrite,
];

/// Runs `barrier-probe` in a container and checks that exactly the flagged calls
/// were held, in order, and that every call still works.
fn probe(barrier: &Barrier, image: &Image, extra: &[&str]) {
    let name = ContainerName::new();
    let child = run(
        &name.0,
        image,
        &barrier.data,
        extra,
        "/bin/barrier-probe /data/probe",
    );
    let mut held = Vec::new();
    for _ in PROBE_HELD {
        let request = barrier.next();
        held.push(request.call.syscall);
        request.release();
    }
    let (ok, out, err) = finish(child);
    assert!(ok, "probe failed: {out} {err}");
    assert_eq!(held, PROBE_HELD, "{out}");
    let lines: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(lines, PROBE_EXPECTED);
    assert!(
        barrier.requests.try_recv().is_err(),
        "a call without its durability flag reached the barrier"
    );
}

#[test]
fn docker_barrier_holds_each_durability_call_only_with_its_flag() {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    let barrier = Barrier::start();
    let runtime = Runtime::register(
        &wrapper_binary(),
        &[
            "oci-runtime",
            "--listener",
            barrier.sock(),
            "--runc",
            RUNC,
            "--",
        ],
    );
    let security = format!("seccomp={}", barrier.write_profile().display());
    // The generated profile (default action ALLOW) ...
    probe(
        &barrier,
        &image,
        &["--runtime", &runtime.name, "--security-opt", &security],
    );
    // ... and Docker's default profile (default action ERRNO) with the barrier's rules
    // merged in: there the unflagged variants need their own ALLOW rules.
    probe(&barrier, &image, &["--runtime", &runtime.name]);
}
