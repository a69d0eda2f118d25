//! The secondary's replication task: accepts the primary's connection, lists what it
//! holds (the manifest the primary compares against), then applies the records in
//! order, syncing at barriers and acknowledging.
//!
//! When this node's data has changes the primary lacks (it ran alone, or both did),
//! every file the resync is about to change or remove is first copied to a conflict
//! directory under the state directory and reported: divergence never silently
//! discards data.

use std::{
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use agent_common::wire::{Frame, ManifestScope, WireOp};
use tokio::sync::{mpsc, watch};

use super::{Ctx, conflict::Conflicts, link};
use crate::{
    apply::{Applier, ApplyError},
    metrics::Direction,
    replication::{
        generation::Relation,
        secondary::{Command, Secondary, frame_name},
    },
};

/// Block size of the manifest's hashes: 4 KiB makes a resync send little more than
/// the bytes that differ, for 32 bytes of hash per block.
const MANIFEST_BLOCK: u32 = 4096;

/// Writes up to this size are applied on the async worker itself.
const INLINE_APPLY_BYTES: u64 = 64 << 10;

/// Runs until `stop` turns true.
pub async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        let conn = tokio::select! {
            c = ctx.endpoint.accept() => c,
            _ = stop.changed() => return Ok(()),
        };
        let conn = match conn {
            None => anyhow::bail!("the replication endpoint closed"),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "refused a connection");
                continue;
            }
            Some(Ok(c)) => c,
        };
        let link = match link::greet(&ctx, conn).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "refused the peer");
                continue;
            }
        };
        let result = serve(&ctx, link, &mut stop).await;
        ctx.status.update(|s| {
            s.replication.linked = false;
            s.replication.in_sync = false;
            s.replication.resyncing = false;
        });
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::info!("the primary left; waiting for it"),
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "replication session ended; waiting for the primary"
                );
            }
        }
    }
}

/// Serves one connection; Ok(true) when the agent is stopping.
async fn serve(
    ctx: &Arc<Ctx>,
    mut link: link::Link,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let peer_gen = link.hello.generations.clone();
    let rel = ctx.relate(&peer_gen);
    // Our indexes of the primary's directories, by its numbering.
    let mut map = Vec::new();
    for name in &link.hello.dirs {
        let i = ctx.cfg.replicated.iter().position(|r| r.name == *name);
        map.push(i.ok_or_else(|| anyhow::anyhow!("unknown directory {name:?}"))?);
    }
    let mut appliers = Vec::new();
    for r in &ctx.cfg.replicated {
        appliers.push(
            Applier::open(&r.path).map_err(|e| anyhow::anyhow!("{}: {e}", r.path.display()))?,
        );
    }
    if matches!(
        rel,
        Relation::PeerEmpty | Relation::Newer | Relation::Diverged
    ) {
        // Records from a primary of another lineage: until this copy is in sync
        // with it, no primary may limit a resync to its own change log.
        std::fs::write(ctx.unsure_marker(), b"")
            .map_err(|e| anyhow::anyhow!("cannot mark the copy unsure: {e}"))?;
    }
    let mut conflicts = match rel {
        Relation::Newer | Relation::Diverged => {
            let c = Conflicts::new(&ctx.cfg.state_dir, &ctx.cfg.replicated)?;
            tracing::error!(
                relation = ?rel,
                keep = %c.dir().display(),
                "this node changed data the primary does not have; its changed files are kept in the conflict directory"
            );
            Some(c)
        }
        _ => None,
    };
    ctx.status.update(|s| {
        s.replication.linked = true;
        s.replication.in_sync = false;
        s.replication.resyncing = true;
        s.replication.phase = (s.replication.phase.0 + 1, false);
    });
    tracing::info!("resynchronising from the primary");
    // The primary says what to list: everything, or the paths its change log names.
    let scope = match tokio::time::timeout(Duration::from_secs(10), link.recv()).await {
        Ok(Some(Ok(Frame::ManifestRequest(scope)))) => scope,
        Ok(Some(Ok(Frame::Error { message }))) => anyhow::bail!("the primary refused: {message}"),
        Ok(Some(Ok(other))) => {
            link.close("protocol error");
            anyhow::bail!("expected a manifest request, got {}", frame_name(&other));
        }
        Ok(Some(Err(e))) => anyhow::bail!("replication stream: {e}"),
        Ok(None) => return Ok(false),
        Err(_) => {
            link.close("no manifest request");
            anyhow::bail!("the primary sent no manifest request in time");
        }
    };
    // The manifest, listed in a blocking task and sent as it comes.
    let (mtx, mut mrx) = mpsc::channel::<Frame>(256);
    let roots: Vec<_> = ctx.cfg.replicated.iter().map(|r| r.path.clone()).collect();
    let back: Vec<u16> = (0..ctx.cfg.replicated.len())
        .map(|local| {
            map.iter()
                .position(|&m| m == local)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(u16::MAX)
        })
        .collect();
    let lister = tokio::task::spawn_blocking(move || list(&roots, &back, &scope, &mtx));
    while let Some(f) = mrx.recv().await {
        if !link.send(f) {
            anyhow::bail!("the primary left during the manifest");
        }
    }
    match lister.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_hostile() => {
            link.send(Frame::Error {
                message: format!("manifest request refused: {e}"),
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            link.close("hostile manifest request");
            anyhow::bail!("hostile manifest request: {e}");
        }
        Ok(Err(e)) => anyhow::bail!("cannot list the replicated directories: {e}"),
        Err(e) => anyhow::bail!("manifest task failed: {e}"),
    }
    let mut core = Secondary::new(map, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        tokio::select! {
            f = link.recv() => match f {
                Some(Ok(f)) => {
                    if let Frame::Record(r) = &f
                        && r.op == WireOp::Barrier
                    {
                        super::hops::mark("secondary_in", 0, r.seq);
                    }
                    core.on_frame(f, &mut out);
                }
                Some(Err(e)) => {
                    link.close("read error");
                    anyhow::bail!("replication stream: {e}");
                }
                None => {
                    link.close("stream ended");
                    return Ok(false);
                }
            },
            _ = tick.tick() => core.on_tick(now, &mut out),
            _ = stop.changed() => {
                link.close("agent stopping");
                return Ok(true);
            }
        }
        for c in out.drain(..) {
            match c {
                Command::Apply { local, record } => {
                    let Some(a) = appliers.get_mut(local) else {
                        continue;
                    };
                    if let Some(k) = conflicts.as_mut().filter(|_| !core.in_sync()) {
                        k.keep_before(local, a, &record);
                    }
                    let bytes = record.data_len();
                    tracing::trace!(
                        seq = record.seq,
                        path = %record.path.escape_ascii(),
                        op = crate::replication::secondary::op_name(&record.op),
                        "applying"
                    );
                    let small =
                        matches!(record.op, WireOp::Write { .. }) && bytes <= INLINE_APPLY_BYTES;
                    let applied = if small {
                        // A few KiB into the page cache: handing the worker to
                        // another thread first (block_in_place) costs more.
                        a.apply(&record.path, &record.op)
                    } else {
                        tokio::task::block_in_place(|| a.apply(&record.path, &record.op))
                    };
                    match applied {
                        Ok(()) => {
                            ctx.status.update(|s| s.replication.bytes_total += bytes);
                            ctx.metrics.replicated(Direction::Applied, bytes);
                        }
                        Err(e) if e.is_hostile() => {
                            tracing::error!(error = %e, seq = record.seq, "the primary sent a path outside the replicated directory; closing");
                            link.send(Frame::Error {
                                message: format!("record {} refused: {e}", record.seq),
                            });
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            link.close("hostile record");
                            anyhow::bail!("hostile record {}: {e}", record.seq);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, seq = record.seq, "cannot apply a record")
                        }
                    }
                }
                Command::Sync => {
                    super::hops::mark("sync_start", 0, core.applied());
                    for a in &mut appliers {
                        if let Err(e) = tokio::task::block_in_place(|| a.sync()) {
                            tracing::error!(error = %e, "cannot make replicated data durable");
                        }
                    }
                    super::hops::mark("synced", 0, core.applied());
                }
                Command::Send(f) => {
                    if let Frame::Ack(a) = &f {
                        super::hops::mark("ack_out", 0, a.durable);
                    }
                    if !link.send(f) {
                        return Ok(false);
                    }
                }
                Command::InSync => {
                    ctx.generations
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .adopt(&peer_gen)
                        .map_err(|e| {
                            anyhow::anyhow!("cannot record the primary's data generation: {e}")
                        })?;
                    let _ = std::fs::remove_file(ctx.unsure_marker());
                    if let Some(k) = conflicts.take() {
                        k.report();
                    }
                    ctx.status.update(|s| {
                        s.replication.in_sync = true;
                        s.replication.resyncing = false;
                        s.replication.phase = (s.replication.phase.0 + 1, true);
                    });
                    tracing::info!("in sync with the primary");
                }
                Command::Close(reason) => {
                    tracing::error!(%reason, "closing the replication link");
                    link.send(Frame::Error {
                        message: reason.clone(),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    link.close("protocol error");
                    anyhow::bail!("{reason}");
                }
            }
        }
        let applied = core.applied();
        ctx.status.update(|s| s.replication.seq = applied);
    }
}

/// Lists every replicated directory (or the requested paths of each) as manifest
/// frames, then `ManifestDone`. `back[local]` is the primary's index of our directory.
fn list(
    roots: &[std::path::PathBuf],
    back: &[u16],
    scope: &ManifestScope,
    tx: &mpsc::Sender<Frame>,
) -> Result<(), ApplyError> {
    let mut send = |m| {
        tx.blocking_send(Frame::Manifest(m))
            .map_err(|_| ApplyError::Io {
                op: "send the manifest of",
                path: Vec::new(),
                source: std::io::Error::other("the connection closed"),
            })
    };
    for (local, root) in roots.iter().enumerate() {
        let a = Applier::open(root)?;
        let dir = back.get(local).copied().unwrap_or(u16::MAX);
        match scope {
            ManifestScope::All => a.manifest(dir, MANIFEST_BLOCK, &mut send)?,
            ManifestScope::Paths(paths) => {
                let mut mine: Vec<Vec<u8>> = paths
                    .iter()
                    .filter(|p| p.dir == dir)
                    .map(|p| p.path.clone())
                    .collect();
                mine.sort();
                a.manifest_paths(dir, MANIFEST_BLOCK, &mine, &mut send)?;
            }
        }
    }
    let _ = tx.blocking_send(Frame::ManifestDone);
    Ok(())
}
