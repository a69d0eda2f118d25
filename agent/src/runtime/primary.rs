//! The primary's replication task: feeds the protocol core with captured records,
//! durability points, the peer's frames and time, and performs what it commands.
//!
//! The peer is dialled whenever the link is down; once it answers, the core holds
//! live records while the resync compare (against the peer's manifest) runs in a
//! blocking task, then sends the held records behind it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use agent_common::wire::{Frame, ManifestScope, Record, ScopedPath, WireOp};
use tokio::sync::{mpsc, watch};

use super::{
    Ctx,
    capture::Captured,
    lag::LagClock,
    link::{self, Link},
};
use crate::{
    metrics::Direction,
    replication::{
        changelog::ChangeLog,
        generation::Relation,
        primary::{Command, Input, Link as LinkState, Primary},
        resync::{self, TargetView},
    },
};

/// Bytes of data captured but not yet applied by the peer before capture is
/// throttled (memory stays bounded; the kernel ring then absorbs the rest, and a
/// ring overflow is verified by content).
const MAX_LAG_BYTES: u64 = 256 << 20;

pub use super::role::{ListenerTimeouts, Waiters};

enum Event {
    Captured(Option<Captured>),
    Frame(Option<Result<Frame, String>>),
    Resync(Option<ResyncMsg>),
    /// A dial's outcome, with the dial's number (a replaced dial's is dropped).
    Connected(u64, Result<Link, String>),
    Tick,
    Stop,
}

enum ResyncMsg {
    Records(Vec<Record>),
    Done(resync::Totals),
    Failed(String),
}

/// Runs until `stop` turns true.
pub async fn run(
    ctx: Arc<Ctx>,
    mut captured: mpsc::Receiver<Captured>,
    waiters: Waiters,
    timeouts: ListenerTimeouts,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let timeout = ctx.cfg.heartbeat.timeout;
    let mut core = Primary::new(ctx.ack_timeout(), Instant::now());
    let mut session = Session::default();
    let (conn_tx, mut conn_rx) = mpsc::channel::<(u64, Result<Link, String>)>(1);
    let mut dial: Option<Dial> = None;
    let mut dials = 0u64;
    let mut next_dial = Instant::now();
    let mut peer_heard = false;
    let mut peer_stopped = false;
    let mut manifest: TargetView = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut out = Vec::new();
    let mut alone_generation = false;
    let mut armed = false;
    let roots: Vec<std::path::PathBuf> =
        ctx.cfg.replicated.iter().map(|r| r.path.clone()).collect();
    let mut log = ChangeLog::open(&ctx.cfg.state_dir, &roots)
        .map_err(|e| anyhow::anyhow!("cannot open the change log: {e}"))?;
    // Records sent and not yet durable at the peer: (seq, path, moves a name).
    let mut unacked: VecDeque<(u64, ScopedPath, bool)> = VecDeque::new();
    let mut scope: Option<Vec<ScopedPath>> = None;
    let mut was_in_sync = false;
    let mut last_checkpoint = Instant::now();
    // A role that starts with its follower in sync (PRIM) keeps the generation they
    // share; one that goes on without it starts a new one (below) before anything
    // the peer lacks is acknowledged.
    let mut armed_at: Option<Instant> = None;
    let mut had_link = false;
    let mut lag_clock = LagClock::default();
    // Calls released without the peer, as last added to the status: the core's,
    // and those the barrier listener let run on its own limit.
    let mut core_unprotected = 0;
    let mut listener_timeouts = timeouts.count();
    let mut unheld_seen = timeouts.unreserved_opens();
    loop {
        let wants = core.wants_more(MAX_LAG_BYTES);
        let ev = tokio::select! {
            m = captured.recv(), if wants => Event::Captured(m),
            f = recv_link(&mut session.link) => Event::Frame(f),
            r = recv_opt(&mut session.resync) => Event::Resync(r),
            c = conn_rx.recv() => match c { Some((id, c)) => Event::Connected(id, c), None => Event::Tick },
            _ = tick.tick() => Event::Tick,
            _ = stop.changed() => Event::Stop,
        };
        let now = Instant::now();
        match ev {
            Event::Stop => break,
            Event::Captured(None) => anyhow::bail!("capture stopped"),
            Event::Captured(Some(Captured::Failed(e))) => anyhow::bail!("capture failed: {e}"),
            Event::Captured(Some(Captured::Armed)) => {
                armed = true;
                armed_at = Some(now);
            }
            Event::Captured(Some(Captured::Batch(b))) => {
                ctx.status.update(|s| s.replication.bytes_total += b.bytes);
                if core.link() == LinkState::Resyncing && !b.records.is_empty() {
                    // The core holds these behind the resync until it is done.
                    lag_clock.holding(true, now);
                }
                if !core.in_sync() {
                    for r in &b.records {
                        log.record(r);
                    }
                }
                core.handle(Input::Captured(b.records), now, &mut out);
            }
            Event::Captured(Some(Captured::Barrier(id))) => {
                super::hops::mark("primary_in", id, 0);
                core.handle(Input::Barrier(id), now, &mut out);
            }
            Event::Connected(id, r) if dial.as_ref().is_none_or(|d| d.id != id) => {
                // A dial replaced by a newer one finished anyway.
                if let Ok(l) = r {
                    l.close("superseded");
                }
            }
            Event::Connected(_, Err(e)) => {
                dial = None;
                tracing::debug!(error = %e, "peer not reachable");
            }
            Event::Connected(_, Ok(l)) => {
                dial = None;
                manifest.clear();
                let peer_gen = l.hello.generations.clone();
                let rel = ctx.relate(&peer_gen);
                tracing::info!(peer = %ctx.cfg.peer.name, relation = ?rel, "peer connected; resynchronising it");
                if rel == Relation::Older || rel == Relation::Diverged {
                    tracing::warn!(
                        relation = ?rel,
                        "the peer has changes this node lacks; it keeps them in its conflict directory"
                    );
                }
                // Only the paths the change log names can differ when the peer
                // still holds the generation the log started from.
                scope = match rel {
                    Relation::Same | Relation::Newer if !l.hello.unsure => {
                        log.scope_for(peer_gen.current)
                    }
                    _ => None,
                };
                let request = match &scope {
                    Some(paths) => {
                        tracing::info!(paths = paths.len(), "the change log limits the resync");
                        ManifestScope::Paths(paths.clone())
                    }
                    None => ManifestScope::All,
                };
                l.send(Frame::ManifestRequest(request));
                session.link = Some(l);
                core.handle(Input::Linked, now, &mut out);
                lag_clock.reset();
                ctx.status.update(|s| {
                    s.replication.resync_total_bytes = 0;
                    s.replication.linked = true;
                });
            }
            Event::Frame(Some(Ok(f))) => match f {
                Frame::Ack(a) => {
                    super::hops::mark("ack_in", 0, a.durable);
                    core.handle(Input::Ack(a), now, &mut out);
                }
                Frame::Manifest(m) => {
                    if manifest.len() < 50_000_000 {
                        manifest.insert((m.dir, m.path.clone()), m);
                    }
                }
                Frame::ManifestDone => {
                    session.resync = Some(start_compare(
                        &ctx,
                        std::mem::take(&mut manifest),
                        scope.take(),
                    ));
                }
                Frame::Error { message } => {
                    tracing::error!(%message, "peer refused");
                    drop_link(&mut session, &mut core, now, &mut out);
                }
                other => {
                    tracing::error!(
                        frame = crate::replication::secondary::frame_name(&other),
                        "unexpected frame from the peer"
                    );
                    drop_link(&mut session, &mut core, now, &mut out);
                }
            },
            Event::Frame(Some(Err(e))) | Event::Resync(Some(ResyncMsg::Failed(e))) => {
                tracing::warn!(error = %e, "replication link lost");
                drop_link(&mut session, &mut core, now, &mut out);
            }
            Event::Frame(None) => {
                tracing::warn!("peer closed the replication stream");
                drop_link(&mut session, &mut core, now, &mut out);
            }
            Event::Resync(Some(ResyncMsg::Records(r))) => {
                core.handle(Input::Resync(r), now, &mut out)
            }
            Event::Resync(Some(ResyncMsg::Done(t))) => {
                tracing::info!(
                    entries = t.entries,
                    source_bytes = t.source_bytes,
                    sent_bytes = t.data_bytes,
                    "resync compare done"
                );
                session.resync = None;
                core.handle(Input::ResyncComplete, now, &mut out);
            }
            Event::Resync(None) => session.resync = None,
            Event::Tick => {
                core.handle(Input::Tick, now, &mut out);
                // A dial sent while the peer's agent was down went to a closed port
                // and is only retried at QUIC's handshake timeouts (a second or
                // more): once the heartbeats hear the peer again, its endpoint is
                // bound (it binds before it sends heartbeats), so a dial started
                // before then is replaced by one at once.
                //
                // A peer restarted within the heartbeat timeout is never unheard: its
                // last heartbeat said STOP, and its next says otherwise. That is news
                // too (seen in run G2: a dial to the stopped agent cost 0.4 s).
                let (heard, stopped) = ctx.status.read(|s| {
                    (
                        s.peer.connected,
                        s.peer.state == Some(crate::status::State::Stop),
                    )
                });
                let news = heard && (!peer_heard || (peer_stopped && !stopped));
                peer_heard = heard;
                peer_stopped = stopped;
                if news && let Some(d) = dial.take_if(|d| !d.heard) {
                    d.task.abort();
                }
                if armed && session.link.is_none() && dial.is_none() && (news || now >= next_dial) {
                    dials += 1;
                    next_dial = now + Duration::from_millis(500);
                    let (id, ctx2, tx) = (dials, ctx.clone(), conn_tx.clone());
                    let task = tokio::spawn(async move {
                        let r = link::dial(&ctx2).await.map_err(|e| format!("{e:#}"));
                        let _ = tx.send((id, r)).await;
                    });
                    dial = Some(Dial {
                        id,
                        task,
                        heard: heard && !stopped,
                    });
                }
            }
        }
        // A call the listener let run on its own limit returned to the application
        // without the peer's acknowledgement: the peer is not in sync any more (a
        // new generation, and a resync of what it lacks), as when the core releases
        // one without it.
        let timed_out = timeouts.count().saturating_sub(listener_timeouts);
        listener_timeouts += timed_out;
        // Synchronous files the applications opened whose writes cannot be held:
        // counted for the operator (and logged by the listener).
        let fresh_unheld = timeouts.unreserved_opens().saturating_sub(unheld_seen);
        unheld_seen += fresh_unheld;
        if fresh_unheld > 0 {
            ctx.metrics.unheld_sync_opens(fresh_unheld);
        }
        if timed_out > 0 {
            tracing::warn!(
                calls = timed_out,
                "durability calls ran on the barrier listener's limit, without the peer"
            );
            if log.is_dirty() {
                log.flush()
                    .map_err(|e| anyhow::anyhow!("cannot write the change log: {e}"))?;
            }
            go_alone(
                &ctx,
                &mut alone_generation,
                "released on the listener's limit",
            )?;
            if session.link.is_some() {
                drop_link(&mut session, &mut core, now, &mut out);
            }
        }
        let mut new_generation_mid_session = false;
        for c in out.drain(..) {
            match c {
                Command::Send(f) => {
                    let data = match &f {
                        Frame::Record(r) => {
                            lag_clock.sent(r.seq, now);
                            r.data_len()
                        }
                        _ => 0,
                    };
                    if let Frame::Record(r) = &f
                        && r.op == WireOp::Barrier
                    {
                        super::hops::mark("sent", 0, r.seq);
                    } else if let Frame::Record(r) = &f {
                        let moved = matches!(
                            r.op,
                            WireOp::Rename { .. } | WireOp::Exchange { .. } | WireOp::Link { .. }
                        );
                        let p = ScopedPath {
                            dir: r.dir,
                            path: r.path.clone(),
                        };
                        unacked.push_back((r.seq, p, moved));
                    }
                    if let Some(l) = &session.link {
                        if l.send(f) {
                            ctx.metrics.replicated(Direction::Sent, data);
                        } else {
                            tracing::warn!("replication link lost while sending");
                            core.handle(Input::Unlinked, now, &mut Vec::new());
                        }
                    }
                }
                Command::Release(id) => {
                    // Released without the peer: what it covers must be in the
                    // change log on disk first.
                    if log.is_dirty() {
                        log.flush()
                            .map_err(|e| anyhow::anyhow!("cannot write the change log: {e}"))?;
                    }
                    let w = waiters
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    if let Some(w) = w {
                        let protected = core.link() != LinkState::Down && core.in_sync();
                        if !protected {
                            let started =
                                go_alone(&ctx, &mut alone_generation, "released without the peer")?;
                            // The peer's session began under the previous
                            // generation, which it would adopt when in sync: a
                            // new session tells it the new one.
                            new_generation_mid_session |= started && session.link.is_some();
                        }
                        super::role::release(w, protected);
                        super::hops::mark("released", id, 0);
                    }
                }
                Command::Drop(reason) => {
                    tracing::warn!(reason, "giving the peer up");
                    session.close(reason);
                }
            }
        }
        if new_generation_mid_session {
            tracing::info!("new data generation during the peer's session: starting a new one");
            drop_link(&mut session, &mut core, now, &mut out);
        }
        if core.link() == LinkState::Down && session.link.is_some() {
            session.close("link down");
        }
        let in_sync = core.in_sync();
        let durable = core.acked().durable;
        while unacked
            .front()
            .is_some_and(|(seq, _, _)| *seq <= durable && core.link() != LinkState::Down)
        {
            unacked.pop_front();
        }
        if core.link() == LinkState::Down || (was_in_sync && !in_sync) {
            // What the peer may lack goes to the change log.
            spill(&mut unacked, &mut log);
        }
        if in_sync && !was_in_sync {
            log.reset(ctx.generations().current)
                .map_err(|e| anyhow::anyhow!("cannot reset the change log: {e}"))?;
        }
        was_in_sync = in_sync;
        let checkpoint =
            in_sync && unacked.is_empty() && last_checkpoint.elapsed() >= Duration::from_secs(1);
        if log.flush_due() || checkpoint {
            log.flush()
                .map_err(|e| anyhow::anyhow!("cannot write the change log: {e}"))?;
            last_checkpoint = Instant::now();
        }
        had_link |= core.link() != LinkState::Down;
        // The peer is dialled once capture is armed; it gets a timeout from then.
        let late = armed_at.is_some_and(|t| t.elapsed() >= timeout);
        if core.link() == LinkState::Down && (had_link || late) {
            go_alone(&ctx, &mut alone_generation, "the peer is not connected")?;
        } else if in_sync {
            alone_generation = false;
        }
        let lag = core.lag_bytes();
        let acked = core.acked();
        if core.link() == LinkState::Down {
            lag_clock.reset();
        } else if core.link() != LinkState::Resyncing {
            lag_clock.holding(false, now);
        }
        let lag_seconds = lag_clock
            .lag(acked.applied, core.last_seq(), now)
            .as_secs_f64();
        let fresh = core.released_unprotected - core_unprotected + timed_out;
        core_unprotected = core.released_unprotected;
        if fresh > 0 {
            ctx.metrics.released_unprotected(fresh);
        }
        ctx.status.update(|s| {
            s.replication.linked = session.link.is_some();
            s.replication.in_sync = in_sync;
            s.replication.lag_bytes = lag;
            s.replication.lag_seconds = lag_seconds;
            // While the peer is not in sync, what it still lacks of the resync is the
            // data sent or held that it has not applied.
            s.replication.resync_remaining_bytes = if in_sync { 0 } else { lag };
            s.replication.seq = acked.durable;
            // Counted since the agent started, across roles and their cores.
            s.replication.released_unprotected += fresh;
        });
    }
    session.close("agent stopping");
    spill(&mut unacked, &mut log);
    log.close_clean()
        .map_err(|e| anyhow::anyhow!("cannot close the change log: {e}"))?;
    Ok(())
}

/// Becomes ALONE: a new data generation starts before any change made without the
/// peer is acknowledged, so that the peer is recognised as older when it returns.
fn go_alone(ctx: &Ctx, started: &mut bool, reason: &str) -> anyhow::Result<bool> {
    if *started {
        return Ok(false);
    }
    ctx.generations
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .start_new()
        .map_err(|e| anyhow::anyhow!("cannot record a new data generation: {e}"))?;
    *started = true;
    tracing::info!(reason, "replicating without the peer: new data generation");
    Ok(true)
}

/// A dial in progress.
struct Dial {
    id: u64,
    task: tokio::task::JoinHandle<()>,
    /// Whether the peer was heard, and not stopped, when it started: only such a
    /// dial can have reached a listening endpoint.
    heard: bool,
}

/// One connection to the peer and the channels that live with it.
#[derive(Default)]
struct Session {
    link: Option<Link>,
    resync: Option<mpsc::Receiver<ResyncMsg>>,
}

impl Session {
    /// Closes the connection (if any) and forgets its channels.
    fn close(&mut self, reason: &str) {
        if let Some(l) = self.link.take() {
            l.close(reason);
        }
        self.resync = None;
    }
}

fn drop_link(session: &mut Session, core: &mut Primary, now: Instant, out: &mut Vec<Command>) {
    session.close("link dropped");
    core.handle(Input::Unlinked, now, out);
}

/// Moves the records the peer may lack into the change log.
fn spill(unacked: &mut VecDeque<(u64, ScopedPath, bool)>, log: &mut ChangeLog) {
    for (_, p, moved) in unacked.drain(..) {
        if moved {
            log.note_moved();
        }
        log.note(p);
    }
}

/// The next frame of the peer's link, if there is a link (cancel-safe).
async fn recv_link(link: &mut Option<Link>) -> Option<Result<Frame, String>> {
    match link {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the resync compare of every replicated directory in a blocking task.
fn start_compare(
    ctx: &Arc<Ctx>,
    view: TargetView,
    scope: Option<Vec<ScopedPath>>,
) -> mpsc::Receiver<ResyncMsg> {
    let (tx, rx) = mpsc::channel(8);
    let dirs: Vec<_> = ctx.cfg.replicated.iter().map(|r| r.path.clone()).collect();
    let status = ctx.status.clone();
    tokio::task::spawn_blocking(move || {
        let mut totals = resync::Totals::default();
        for (i, root) in dirs.iter().enumerate() {
            let Ok(dir) = u16::try_from(i) else { break };
            let mut send = |records: Vec<Record>| {
                let bytes: u64 = records.iter().map(Record::data_len).sum();
                status.update(|s| s.replication.resync_total_bytes += bytes);
                tx.blocking_send(ResyncMsg::Records(records)).is_ok()
            };
            let r = match &scope {
                Some(paths) => {
                    let mut mine: Vec<Vec<u8>> = paths
                        .iter()
                        .filter(|p| p.dir == dir)
                        .map(|p| p.path.clone())
                        .collect();
                    mine.sort();
                    resync::compare_paths(dir, root, &mine, &view, &mut send)
                }
                None => resync::compare(dir, root, &view, &mut send),
            };
            match r {
                Ok(t) => {
                    totals.entries += t.entries;
                    totals.source_bytes += t.source_bytes;
                    totals.data_bytes += t.data_bytes;
                }
                Err(e) => {
                    let _ = tx.blocking_send(ResyncMsg::Failed(format!(
                        "resync compare of {}: {e}",
                        root.display()
                    )));
                    return;
                }
            }
        }
        let _ = tx.blocking_send(ResyncMsg::Done(totals));
    });
    rx
}
