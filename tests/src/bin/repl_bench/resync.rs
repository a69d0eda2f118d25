//! Benchmark 4: a returning secondary's resync against rsync moving the same change
//! set over the same lab link. node2 is stopped, N MiB change on node1 (random 4 KiB
//! blocks of the big files and some new small files), node2 is restarted and timed
//! until it reports SECOND and in sync. Before node2 returns, copies of node2's old
//! tree and node1's new tree are made; an rsync daemon in node2's namespace then
//! receives the same change from an rsync client in node1's namespace.

use std::{
    collections::HashSet,
    fs::{self, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tandem_tests::{compare::compare_trees, lab::Lab, workload::Rng};

use super::util::{Guard, MIB, Res, check_interrupted, link_bytes, repl_u64, sleep, sync_all};

/// The data set and the change sizes.
pub(crate) struct ResyncOptions {
    pub(crate) big_files: u64,
    pub(crate) big_size: u64,
    pub(crate) small_files: u64,
    pub(crate) changes_mib: Vec<u64>,
}

/// One change size's figures.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub(crate) changed_mib: u64,
    pub(crate) changed_bytes: u64,
    pub(crate) tandem_secs: f64,
    pub(crate) tandem_data_bytes: u64,
    pub(crate) tandem_link_bytes: u64,
    pub(crate) tandem_identical: bool,
    pub(crate) rsync_secs: f64,
    pub(crate) rsync_sent: u64,
    pub(crate) rsync_received: u64,
    pub(crate) rsync_literal: u64,
    pub(crate) rsync_link_bytes: u64,
    pub(crate) rsync_identical: bool,
}

const RSYNC_PORT: u16 = 8730;

fn io<T>(what: &Path, r: std::io::Result<T>) -> Res<T> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

/// Writes the data set in node1's tree: big files plus small files in 10 directories.
fn make_data_set(root: &Path, o: &ResyncOptions, rng: &mut Rng) -> Res<()> {
    let big = root.join("big");
    io(&big, fs::create_dir_all(&big))?;
    for i in 0..o.big_files {
        let p = big.join(format!("big-{i}.bin"));
        let f = io(&p, fs::File::create(&p))?;
        for off in (0..o.big_size).step_by(4 << 20) {
            io(&p, f.write_all_at(&rng.bytes(4 << 20), off))?;
        }
        io(&p, f.sync_all())?;
    }
    for j in 0..o.small_files {
        let d = root.join(format!("small/d{}", j % 10));
        io(&d, fs::create_dir_all(&d))?;
        let p = d.join(format!("f-{j}.dat"));
        let len = 1024 + rng.below(7 * 1024);
        io(
            &p,
            fs::write(&p, rng.bytes(usize::try_from(len).unwrap_or(1024))),
        )?;
    }
    Ok(())
}

/// Changes `mib` MiB of node1's tree: three quarters as distinct random 4 KiB blocks
/// spread over the big files, one quarter as new 16 KiB files. Returns bytes changed.
fn change(root: &Path, o: &ResyncOptions, mib: u64, round: usize, rng: &mut Rng) -> Res<u64> {
    let blocks = mib * MIB * 3 / 4 / 4096;
    let per_file = o.big_size / 4096;
    let mut touched = HashSet::new();
    while (touched.len() as u64) < blocks.min(per_file * o.big_files) {
        touched.insert(rng.below(per_file * o.big_files));
    }
    let files: Vec<_> = (0..o.big_files)
        .map(|i| {
            let p = root.join(format!("big/big-{i}.bin"));
            io(&p, OpenOptions::new().write(true).open(&p))
        })
        .collect::<Res<_>>()?;
    for b in &touched {
        let (f, off) = (&files[(b / per_file) as usize], (b % per_file) * 4096);
        io(root, f.write_all_at(&rng.bytes(4096), off))?;
    }
    for f in &files {
        io(root, f.sync_all())?;
    }
    let new_bytes = mib * MIB / 4;
    let d = root.join(format!("new-{round}"));
    io(&d, fs::create_dir_all(&d))?;
    for j in 0..new_bytes / (16 * 1024) {
        let p = d.join(format!("n-{j}.dat"));
        io(&p, fs::write(&p, rng.bytes(16 * 1024)))?;
    }
    Ok(touched.len() as u64 * 4096 + new_bytes / (16 * 1024) * 16 * 1024)
}

fn copy_tree(from: &Path, to: &Path) -> Res<()> {
    let _ = fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !st.success() {
        return Err(format!("cp -a {} {} failed", from.display(), to.display()));
    }
    Ok(())
}

fn wait_identical(a: &Path, b: &Path, timeout: Duration) -> Res<bool> {
    let end = Instant::now() + timeout;
    loop {
        let diffs = compare_trees(a, b, 5).map_err(|e| format!("compare: {e}"))?;
        if diffs.is_empty() {
            return Ok(true);
        }
        if Instant::now() > end {
            eprintln!("repl-bench: trees differ: {diffs:?}");
            return Ok(false);
        }
        sleep(Duration::from_millis(500))?;
    }
}

/// Seconds since the Unix epoch, for log marks.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Polls node `i` every 25 ms until it reports `state` and in sync.
fn wait_in_sync(lab: &Lab, i: usize, state: &str, timeout: Duration) -> Res<()> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        check_interrupted()?;
        if let Ok(v) = lab.status(i)
            && v.get("state").and_then(Value::as_str) == Some(state)
            && v.pointer("/replication/in_sync").and_then(Value::as_bool) == Some(true)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!(
        "node {} not {state} in sync after {timeout:?}\n{}",
        i + 1,
        lab.log_tail(i, 30)
    ))
}

fn stop_node2(lab: &Lab) -> Res<()> {
    lab.signal_agent(1, Signal::SIGTERM)?;
    if !lab.wait_agent_gone(1, Duration::from_secs(30)) {
        return Err("node2's agent did not stop".into());
    }
    lab.wait_state(0, "ALONE", false, Duration::from_secs(30))
        .map(|_| ())
}

/// The number after `label` in rsync's `--stats` output (commas removed).
fn stat(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or(0)
}

/// Starts an rsync daemon in node2's namespace serving `dst` as module `dst`.
fn rsync_daemon(lab: &Lab, dst: &Path) -> Res<Guard> {
    let conf = lab.dir.join("rsyncd.conf");
    let text = format!(
        "use chroot = no\nreverse lookup = no\nuid = root\ngid = root\nmax connections = 4\nlog file = {}\n\
         [dst]\n  path = {}\n  read only = false\n",
        lab.dir.join("rsyncd.log").display(),
        dst.display()
    );
    io(&conf, fs::write(&conf, text))?;
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &lab.nodes[1].namespace,
        "rsync",
        "--daemon",
    ])
    .args(["--no-detach", "--port", &RSYNC_PORT.to_string()])
    .arg(format!("--address={}", lab.nodes[1].address))
    .arg(format!("--config={}", conf.display()))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let g = Guard::spawn(c)?;
    // Ready once a module list comes back over the link.
    for _ in 0..100 {
        let ok = rsync_client(
            lab,
            &[format!("rsync://{}:{RSYNC_PORT}/", lab.nodes[1].address)],
        )
        .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(g);
        }
        sleep(Duration::from_millis(50))?;
    }
    Err("the rsync daemon did not answer".into())
}

fn rsync_client(lab: &Lab, args: &[String]) -> Res<std::process::Output> {
    Command::new("ip")
        .args(["netns", "exec", &lab.nodes[0].namespace, "rsync"])
        .args(args)
        .output()
        .map_err(|e| format!("rsync: {e}"))
}

/// Sets the data set up, then measures each change size.
pub(crate) fn run(lab: &Lab, o: &ResyncOptions) -> Res<Vec<Row>> {
    let mut rng = Rng::new(0x5E5C_2026);
    let (d1, d2) = (lab.nodes[0].data_dir.clone(), lab.nodes[1].data_dir.clone());
    eprintln!("repl-bench: writing the resync data set");
    make_data_set(&d1, o, &mut rng)?;
    sync_all();
    if !wait_identical(&d1, &d2, Duration::from_secs(300))? {
        return Err("the initial copy never became identical".into());
    }
    wait_in_sync(lab, 1, "SECOND", Duration::from_secs(60))?;
    let work: PathBuf = lab.dir.join("rsync");
    io(&work, fs::create_dir_all(&work))?;
    let (src, dst) = (work.join("src"), work.join("dst"));
    let mut rows = Vec::new();
    for (round, &mib) in o.changes_mib.iter().enumerate() {
        check_interrupted()?;
        eprintln!("repl-bench: resync round with {mib} MiB changed");
        stop_node2(lab)?;
        copy_tree(&d2, &dst)?;
        let changed = change(&d1, o, mib, round, &mut rng)?;
        copy_tree(&d1, &src)?;
        sync_all();
        // Let the capture take the last changes before node2 comes back.
        sleep(Duration::from_secs(1))?;
        let mut row = Row {
            changed_mib: mib,
            changed_bytes: changed,
            ..Row::default()
        };
        let before = link_bytes(lab, 0)?;
        let t = Instant::now();
        let wall = unix_now();
        lab.restart_missing()?;
        let started = t.elapsed().as_secs_f64();
        wait_in_sync(lab, 1, "SECOND", Duration::from_secs(600))?;
        row.tandem_secs = t.elapsed().as_secs_f64();
        // Wall-clock marks, to line the agents' logs up with the timed interval.
        eprintln!(
            "repl-bench: node2 restarted at unix {wall:.6}; `tandem lab up` returned after {started:.3} s; SECOND in sync seen after {:.3} s",
            row.tandem_secs
        );
        row.tandem_link_bytes = link_bytes(lab, 0)?.saturating_sub(before);
        row.tandem_data_bytes = repl_u64(lab, 0, "resync_total_bytes")?;
        row.tandem_identical = wait_identical(&d1, &d2, Duration::from_secs(60))?;
        sync_all();
        {
            let _daemon = rsync_daemon(lab, &dst)?;
            let before = link_bytes(lab, 0)?;
            let t = Instant::now();
            let out = rsync_client(
                lab,
                &[
                    "-a".to_owned(),
                    "--stats".to_owned(),
                    format!("{}/", src.display()),
                    format!("rsync://{}:{RSYNC_PORT}/dst/", lab.nodes[1].address),
                ],
            )?;
            row.rsync_secs = t.elapsed().as_secs_f64();
            row.rsync_link_bytes = link_bytes(lab, 0)?.saturating_sub(before);
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "rsync failed: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            row.rsync_sent = stat(&text, "Total bytes sent:");
            row.rsync_received = stat(&text, "Total bytes received:");
            row.rsync_literal = stat(&text, "Literal data:");
        }
        row.rsync_identical = wait_identical(&src, &dst, Duration::ZERO)?;
        eprintln!("repl-bench: {row:?}");
        rows.push(row);
        let _ = fs::remove_dir_all(&src);
        let _ = fs::remove_dir_all(&dst);
    }
    Ok(rows)
}
