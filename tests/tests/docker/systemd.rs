//! The packaged unit under a real systemd: a container of the Debian 12 base
//! image (which has systemd-sysv) runs /sbin/init, the .deb is installed into it,
//! and the agent is started, driven and stopped through `systemctl` as an
//! operator would. It checks what no `systemd-analyze verify` can:
//! - `Type=notify`: `systemctl start` returns once the agent answers `tandem
//!   status`, and the unit's status line is the agent's state;
//! - the sandbox: the agent runs (eBPF and fanotify capture armed, the VIP taken)
//!   with the unit's capability bounding set, and the application's commands
//!   inherit it;
//! - the journal: the agent's events arrive with their fields as journal fields
//!   (`TANDEM_FROM`, `TANDEM_TO`, `TANDEM_REASON` of a state change);
//! - `Restart=on-failure` after kill -9 of the agent, and `systemctl stop`
//!   running the application's stop command.
//!
//! The container gets the capabilities this machine has (not `--privileged`,
//! which asks for all of them), the host's cgroup hierarchy for systemd, tracefs
//! for the eBPF programs, and a host directory (ext4, as replicated directories
//! are) as the replicated directory. It is removed on every exit.

use std::time::{Duration, Instant};

use crate::{
    ContainerName,
    debian::{Format, configure, debian_image, package, sh, sh_ok},
    docker_ok, serial,
};

/// The capabilities Docker 20.10 knows by name, by number (capability.h). Newer
/// ones (PERFMON, BPF, CHECKPOINT_RESTORE) it rejects; CAP_SYS_ADMIN covers eBPF
/// without them.
const DOCKER_CAPS: [&str; 38] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
];

/// Capability numbers as in /proc/PID/status.
const CAP_SYS_MODULE: u32 = 16;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_TIME: u32 = 25;

/// A `Cap*:` line of a /proc/PID/status text, as a bit set.
fn cap_line(status: &str, which: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{which}:")))
        .unwrap_or_else(|| panic!("no {which} in {status}"));
    u64::from_str_radix(line.trim(), 16).expect("a hexadecimal capability set")
}

/// `--cap-add` for every capability Docker knows that this process's bounding
/// set has (some virtual machines lack CAP_SYS_RESOURCE, and Docker refuses a
/// container asking for what it cannot give).
fn cap_args() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let bounding = cap_line(&status, "CapBnd");
    DOCKER_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .flat_map(|(_, name)| ["--cap-add".to_owned(), (*name).to_owned()])
        .collect()
}

/// Polls `check` every 200 ms until it returns true or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent's main pid, as systemd knows it (0 when it does not run).
fn main_pid(n: &str) -> u32 {
    sh_ok(n, "systemctl show -p MainPID --value tandem@app")
        .trim()
        .parse()
        .expect("a pid")
}

/// The journal entries of the unit as JSON lines (one object each).
fn journal(n: &str) -> Vec<serde_json::Value> {
    sh_ok(n, "journalctl -u tandem@app -o json --no-pager")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_unit_runs_the_agent_sandboxed_under_systemd_with_journal_fields() {
    let Some(_serial) = serial() else { return };
    let image = debian_image();
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let deb = package(Format::Deb, dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    let started = Instant::now();

    let name = ContainerName::of_kind("test-systemd");
    let n = name.0.as_str();
    let mut run: Vec<String> = ["run", "-d", "--name", n].map(str::to_owned).to_vec();
    run.extend(cap_args());
    for arg in [
        // systemd as PID 1 of a container: its own seccomp and AppArmor choices,
        // the host's cgroup hierarchy, and tmpfs where it expects them.
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--cgroupns=host",
        "-v=/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs=/run",
        "--tmpfs=/run/lock",
        "-v=/sys/kernel/tracing:/sys/kernel/tracing",
    ] {
        run.push(arg.to_owned());
    }
    run.push(format!("-v={}:/tmp/tandem.deb:ro", deb.display()));
    run.push(format!("-v={}:/srv/app/data", data.display()));
    run.push(image);
    run.push("/sbin/init".to_owned());
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    docker_ok(&run);
    wait_for(Duration::from_secs(30), "systemd to start", || {
        let (_, out, _) = sh(n, "systemctl is-system-running");
        matches!(out.trim(), "running" | "degraded")
    });

    let (code, out, err) = sh(n, "dpkg -i /tmp/tandem.deb");
    assert_eq!(code, 0, "dpkg -i failed:\n{out}{err}");
    // The application: its start command records the capabilities it got; its
    // stop command removes the record.
    configure(
        n,
        Some((
            "sh -c \"grep ^Cap /proc/self/status >/srv/app/data/started\"",
            "rm -f /srv/app/data/started",
        )),
    );

    // Type=notify: when `systemctl start` returns, the agent answers.
    sh_ok(n, "systemctl start tandem@app");
    let status = sh_ok(n, "tandem status -c /etc/tandem/app.yaml --json");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["node"], "node1", "{status}");
    let line = sh_ok(n, "systemctl show -p StatusText --value tandem@app");
    assert!(line.contains("WAIT"), "status line {line:?}");

    // The sandbox as the kernel sees it: the agent lacks what the unit left out
    // and has what it needs; /usr is read-only for it.
    let pid = main_pid(n);
    let proc_status = sh_ok(n, &format!("cat /proc/{pid}/status"));
    let bounding = cap_line(&proc_status, "CapBnd");
    for (cap, want) in [
        (CAP_SYS_MODULE, false),
        (CAP_SYS_TIME, false),
        (CAP_NET_ADMIN, true),
        (CAP_SYS_ADMIN, true),
    ] {
        assert_eq!(
            bounding & (1 << cap) != 0,
            want,
            "capability {cap}: {bounding:x}"
        );
    }
    let (code, ..) = sh(n, &format!("nsenter -t {pid} -m touch /usr/tandem-probe"));
    assert_ne!(code, 0, "/usr is writable for the agent");

    // The peer never answers, so the operator takes over: ALONE, the VIP and the
    // application, started inside the sandbox.
    sh_ok(n, "tandem prim --force -c /etc/tandem/app.yaml");
    let marker = data.join("started");
    wait_for(Duration::from_secs(20), "the application to start", || {
        marker.is_file()
    });
    // Capture (eBPF and fanotify) armed under the sandbox, logged to the journal.
    wait_for(
        Duration::from_secs(20),
        "capture armed in the journal",
        || {
            journal(n).iter().any(|e| {
                e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.contains("capture armed"))
            })
        },
    );
    let app_status = std::fs::read_to_string(&marker).expect("read the marker");
    assert_eq!(
        cap_line(&app_status, "CapBnd"),
        bounding,
        "the application's bounding set differs from the agent's"
    );
    let entries = journal(n);
    let change = entries
        .iter()
        .find(|e| e["TANDEM_TO"] == "ALONE")
        .unwrap_or_else(|| panic!("no state change to ALONE in the journal: {entries:?}"));
    assert_eq!(change["SYSLOG_IDENTIFIER"], "tandem", "{change}");
    assert!(
        change["TANDEM_REASON"]
            .as_str()
            .is_some_and(|r| r.contains("prim --force")),
        "{change}"
    );
    assert!(change["TANDEM_FROM"].is_string(), "{change}");
    let line = sh_ok(n, "systemctl show -p StatusText --value tandem@app");
    assert!(line.contains("ALONE"), "status line {line:?}");

    // kill -9 of the agent: systemd restarts it (Restart=on-failure); the new
    // agent, whose peer is still silent and holds no newer data, takes the
    // application back, after stopping the copy the dead agent left (its start
    // command writes the marker anew).
    let before = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .expect("marker mtime");
    sh_ok(n, &format!("kill -9 {pid}"));
    wait_for(
        Duration::from_secs(60),
        "the restarted agent to run the application",
        || {
            let now = main_pid(n);
            if now == 0 || now == pid {
                return false;
            }
            let (code, out, _) = sh(n, "tandem status -c /etc/tandem/app.yaml --json");
            let Ok(status) = serde_json::from_str::<serde_json::Value>(&out) else {
                return false;
            };
            code == 0 && status["state"] == "ALONE" && status["application"]["running"] == true
        },
    );
    let after = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .expect("marker mtime");
    assert!(after > before, "the application was not restarted");

    // systemctl stop: the agent stops the application with its stop command.
    sh_ok(n, "systemctl stop tandem@app");
    assert!(!marker.exists(), "the stop command did not run");
    let (code, out, _) = sh(n, "systemctl is-active tandem@app");
    assert_ne!(code, 0, "still active: {out}");
    eprintln!("systemd test done in {:?}", started.elapsed());
}
