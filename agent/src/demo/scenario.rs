//! The demo's story, step by step: a pair in sync serving writes through the VIP,
//! node1 lost, node2 taking over with every acknowledged write, node1 back through
//! a range-only resync, and a swap that hands the service back to node1.

use std::{
    net::SocketAddr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{
    DemoOptions,
    client::{Attempt, Client},
    pair::{Pair, is},
    progress::{Progress, bytes, human},
    service::{self, WRITES_FILE},
    setup,
    summary::{self, Summary},
};
use crate::{
    lab::{Keygen, Layout},
    runtime::control::send_admin,
    status::State,
};

/// One write every this long.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// How long node2 serves alone before node1 returns.
const ALONE_FOR: Duration = Duration::from_secs(3);
/// The first start loads two agents' eBPF programs and copies the data set.
const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Heartbeats time out after 1 s in the lab; the rest is margin.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);
const RESYNC_TIMEOUT: Duration = Duration::from_secs(120);
const SWAP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a swap request may go without visible effect before it is repeated;
/// an accepted one stops the service on node2 within milliseconds.
const SWAP_RETRY: Duration = Duration::from_secs(2);

/// The running story.
struct Scenario<'a> {
    opts: &'a DemoOptions,
    p: Progress,
    stop: &'a AtomicBool,
    pair: Pair,
    summary: Summary,
}

/// Runs the story in a lab it builds (the caller removes it) and returns what was
/// measured.
pub(crate) fn run(
    opts: &DemoOptions,
    keygen: &dyn Keygen,
    p: Progress,
    stop: &AtomicBool,
) -> anyhow::Result<Summary> {
    p.step(format_args!(
        "building the lab `{}`: node1, node2, a client and a witness in network namespaces",
        opts.prefix
    ));
    let layout = setup::up(opts, keygen)?;
    p.say(format_args!(
        "    node1 {}, node2 {}, client {}, VIP {}:{} (the sample service, `tandem lab service`)",
        layout.addresses.node1,
        layout.addresses.node2,
        layout.addresses.client,
        layout.vip,
        opts.port
    ));
    let mut s = Scenario {
        opts,
        p,
        stop,
        pair: Pair::new(&layout)?,
        summary: Summary::default(),
    };
    s.first_sync()?;
    let client = s.workload(&layout)?;
    s.takeover(&client)?;
    s.check_copy(&client, 1, "node2's copy after the takeover")?;
    s.node1_returns()?;
    s.swap_back(&client)?;
    s.pause(Duration::from_secs(1))?;
    let attempts = client.stop();
    s.summary.count(&attempts);
    s.p.step("final check: every acknowledged write on the primary, both copies equal");
    s.check_copy_of(&attempts, 0, "node1's copy at the end")?;
    s.summary.identical = s.copies_converge(Duration::from_secs(10))?;
    s.p.say(format_args!(
        "    copies of {WRITES_FILE} on node1 and node2 are {}",
        if s.summary.identical {
            "identical"
        } else {
            "DIFFERENT"
        }
    ));
    Ok(s.summary)
}

impl Scenario<'_> {
    /// Waits for the pair: node1 PRIM running the service, node2 SECOND in sync.
    fn first_sync(&mut self) -> anyhow::Result<()> {
        self.p.step(format_args!(
            "starting both agents; waiting for node1 PRIM and node2 SECOND in sync \
             (first full copy of the {} data set)",
            bytes(self.opts.dataset_bytes)
        ));
        self.pair.wait(
            &self.p,
            self.stop,
            "node1 is PRIM with the service and node2 SECOND in sync",
            FIRST_SYNC_TIMEOUT,
            |s| {
                is(s[0].as_ref(), State::Prim)
                    && s[0].as_ref().is_some_and(|s| s.application.running)
                    && is(s[1].as_ref(), State::Second)
            },
        )?;
        Ok(())
    }

    /// Starts the client and lets it write through node1 for the workload's time.
    fn workload(&mut self, layout: &Layout) -> anyhow::Result<Client> {
        let target = SocketAddr::new(layout.vip.into(), self.opts.port);
        self.p.step(format_args!(
            "workload: a client in {} sends `WRITE <id>` to {target}, one after another \
             and at most one per {}; the service fdatasyncs each write before it answers OK",
            layout.namespaces.client,
            human(WRITE_EVERY)
        ));
        let client = Client::start(&layout.namespaces.client, target, WRITE_EVERY)?;
        self.until(
            Duration::from_secs(20),
            "node1 acknowledges a write",
            || client.last_acked_by().as_deref() == Some("node1"),
        )?;
        let end = Instant::now() + self.opts.workload;
        while Instant::now() < end {
            self.pause(Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())))?;
            let mut counts = Summary::default();
            counts.count(&client.attempts());
            self.p.say(format_args!(
                "    {} writes acknowledged, last by {}",
                counts.acked(),
                client.last_acked_by().unwrap_or_default()
            ));
        }
        Ok(client)
    }

    /// Cuts node1's links, waits until node2 serves and node1 has fenced itself, and
    /// lets node2 serve alone for a while.
    fn takeover(&mut self, client: &Client) -> anyhow::Result<()> {
        self.p.step(
            "FAULT: cutting node1's network links, public and private (node1 is lost to node2, the witness and the client)",
        );
        // The outage is counted from just before the cut, so it is never understated.
        let cut = Instant::now();
        self.pair.set_links(0, false)?;
        self.p
            .step("waiting for node2 to take over the VIP and the service");
        self.pair.wait(
            &self.p,
            self.stop,
            "node2 serves the writes",
            TAKEOVER_TIMEOUT,
            |_| summary::first_ack(&client.attempts(), cut, "node2").is_some(),
        )?;
        let attempts = client.attempts();
        let first = summary::first_ack(&attempts, cut, "node2").unwrap_or(cut);
        self.summary.outage = first.duration_since(cut);
        let before = summary::last_ack_before(&attempts, cut)
            .map_or_else(|| "?".to_owned(), |t| human(cut.duration_since(t)));
        self.p.say(format_args!(
            "    TAKEOVER: node2 acknowledged its first write {} after the cut \
             (node1's last acknowledgement came {before} before it)",
            human(self.summary.outage)
        ));
        // node1 hears neither its peer nor the witness: it must fence itself.
        self.pair.wait(
            &self.p,
            self.stop,
            "the isolated node1 fences itself (WAIT)",
            TAKEOVER_TIMEOUT,
            |s| s[0].as_ref().is_some_and(|s| s.state == State::Wait),
        )?;
        self.p.say(format_args!(
            "    node2 serves alone for {}; the writes go on",
            human(ALONE_FOR)
        ));
        self.pause(ALONE_FOR)
    }

    /// Checks that every write acknowledged so far is in node `i`'s copy.
    fn check_copy(&mut self, client: &Client, i: usize, what: &str) -> anyhow::Result<()> {
        self.p.step(format_args!(
            "checking every acknowledged write against {what}"
        ));
        // The attempts are taken before the file is read, so every id among them
        // was acknowledged before the read began.
        let attempts = client.attempts();
        self.check_copy_of(&attempts, i, what)
    }

    fn check_copy_of(&mut self, attempts: &[Attempt], i: usize, what: &str) -> anyhow::Result<()> {
        let recorded = service::recorded_ids(&self.pair.nodes[i].data_dir)?;
        let lost = summary::missing(attempts, &recorded);
        let acked = attempts.iter().filter(|a| a.acked_by.is_some()).count();
        if lost.is_empty() {
            self.p.say(format_args!(
                "    all {acked} acknowledged writes are in {what}"
            ));
        } else {
            let some: Vec<String> = lost.iter().take(10).map(u64::to_string).collect();
            self.p.say(format_args!(
                "    LOST: {} of {acked} acknowledged writes are missing from {what} (ids {}...)",
                lost.len(),
                some.join(", ")
            ));
        }
        self.summary.lost.extend(lost);
        Ok(())
    }

    /// Restores node1's links and waits until it is SECOND in sync again.
    fn node1_returns(&mut self) -> anyhow::Result<()> {
        self.p
            .step("restoring node1's links: node1 returns and resyncs from node2");
        self.pair.set_links(0, true)?;
        let now = self.pair.wait(
            &self.p,
            self.stop,
            "node1 is SECOND in sync and node2 PRIM",
            RESYNC_TIMEOUT,
            |s| is(s[0].as_ref(), State::Second) && is(s[1].as_ref(), State::Prim),
        )?;
        self.summary.resync_bytes = now[1]
            .as_ref()
            .map_or(0, |s| s.replication.resync_total_bytes);
        self.summary.data_bytes = dir_bytes(&self.pair.nodes[1].data_dir)?;
        self.p.say(format_args!(
            "    RESYNC: node2 sent {} of the {} it holds: the blocks that differ, not the whole copy",
            bytes(self.summary.resync_bytes),
            bytes(self.summary.data_bytes)
        ));
        Ok(())
    }

    /// `tandem swap` on node2 and waits until node1 serves again.
    fn swap_back(&mut self, client: &Client) -> anyhow::Result<()> {
        self.p
            .step("swap: handing the service back to node1 (`tandem swap` on node2)");
        let start = Instant::now();
        let mut asked = start;
        let (p, node2) = (self.p, self.pair.nodes[1].control_socket.clone());
        ask_swap(&node2)?;
        self.pair.wait(
            &self.p,
            self.stop,
            "node1 is PRIM serving the writes and node2 SECOND in sync",
            SWAP_TIMEOUT,
            |s| {
                // node2's engine hears that node1 is in sync through heartbeats, so
                // right after the resync it may still refuse the swap, and says so
                // only in its log. No handover has begun while node2 is PRIM with
                // the service running and node1 SECOND: then asking again is safe
                // and cannot swap the other way.
                let untouched = is(s[1].as_ref(), State::Prim)
                    && s[1].as_ref().is_some_and(|s| s.application.running)
                    && s[0].as_ref().is_some_and(|s| s.state == State::Second);
                if untouched && asked.elapsed() >= SWAP_RETRY {
                    asked = Instant::now();
                    p.say("    node2 has not begun the handover yet; asking again");
                    if let Err(e) = ask_swap(&node2) {
                        p.say(format_args!("    {e:#}"));
                    }
                }
                is(s[0].as_ref(), State::Prim)
                    && is(s[1].as_ref(), State::Second)
                    && summary::first_ack(&client.attempts(), start, "node1").is_some()
            },
        )?;
        let attempts = client.attempts();
        let first = summary::first_ack(&attempts, start, "node1").unwrap_or(start);
        self.summary.swap = first.duration_since(start);
        self.summary.swap_pause = summary::longest_gap(&attempts, start, first);
        self.p.say(format_args!(
            "    SWAP: node1 acknowledged writes again {} after the swap began \
             (longest pause between acknowledgements {})",
            human(self.summary.swap),
            human(self.summary.swap_pause)
        ));
        Ok(())
    }

    /// Waits until both copies of the writes file are byte for byte the same.
    fn copies_converge(&self, timeout: Duration) -> anyhow::Result<bool> {
        let end = Instant::now() + timeout;
        let read = |i: usize| std::fs::read(self.pair.nodes[i].data_dir.join(WRITES_FILE)).ok();
        loop {
            if read(0).is_some() && read(0) == read(1) {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            self.pause(Duration::from_millis(100))?;
        }
    }

    /// Sleeps `d`, waking for Ctrl-C.
    fn pause(&self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Waits until `done`, for at most `timeout`.
    fn until(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        while !done() {
            if Instant::now() >= end {
                bail!("timed out after {} waiting until {what}", human(timeout));
            }
            self.pause(Duration::from_millis(20))?;
        }
        Ok(())
    }
}

/// Sends `swap` to the agent at `socket`, as `tandem swap` does.
fn ask_swap(socket: &Path) -> anyhow::Result<()> {
    send_admin(socket, "swap", false).context("node2 refused the swap")
}

/// The bytes of the regular files under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
