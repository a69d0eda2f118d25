//! One authenticated connection to the peer, after the Hello exchange: a writer task
//! fed by a channel (so the actors never block on the network), the receiving half
//! (read by the actor itself, one thread hop less per frame than a forwarding task),
//! and the peer's Hello.

use std::time::Duration;

use agent_common::wire::{Frame, Hello, PROTOCOL_VERSION};
use anyhow::Context;
use tokio::sync::mpsc;

use super::Ctx;
use crate::transport::{FrameReceiver, FrameSender, PeerConn, PeerLink};

/// How long the Hello exchange may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected, greeted peer.
pub struct Link {
    pub hello: Hello,
    tx: mpsc::UnboundedSender<Frame>,
    peer: PeerLink,
    receiver: FrameReceiver,
}

impl Link {
    /// Queues a frame for the writer task; false once the connection is gone.
    pub fn send(&self, f: Frame) -> bool {
        self.tx.send(f).is_ok()
    }

    /// The next frame from the peer: `None` once it finished the stream, an error
    /// when the stream broke or carried something malformed (then the connection
    /// should be closed). Cancel-safe, for the actors' `select!`.
    pub async fn recv(&mut self) -> Option<Result<Frame, String>> {
        match self.receiver.recv().await {
            Ok(Some(f)) => {
                mark_frame("read", &f);
                Some(Ok(f))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// Closes the connection with a reason the peer logs.
    pub fn close(self, reason: &str) {
        self.peer.close(reason);
    }

    /// The measured round-trip time.
    #[must_use]
    pub fn rtt(&self) -> Duration {
        self.peer.rtt()
    }
}

fn start(conn: PeerConn, hello: Hello) -> Link {
    let (peer, sender, receiver) = conn.into_parts();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(sender, rx));
    Link {
        hello,
        tx,
        peer,
        receiver,
    }
}

async fn writer(mut sender: FrameSender, mut rx: mpsc::UnboundedReceiver<Frame>) {
    while let Some(f) = rx.recv().await {
        mark_frame("written", &f);
        if let Err(e) = sender.send(&f).await {
            tracing::debug!(error = %e, "replication stream closed while writing");
            return;
        }
    }
    let _ = sender.finish();
}

/// Connects to the peer and exchanges Hellos (the dialling side speaks first).
pub async fn dial(ctx: &Ctx) -> anyhow::Result<Link> {
    let mut conn = tokio::time::timeout(HELLO_TIMEOUT, ctx.endpoint.connect(ctx.cfg.peer.address))
        .await
        .context("connecting to the peer timed out")??;
    conn.sender().send(&Frame::Hello(ctx.hello())).await?;
    let hello = recv_hello(conn.receiver()).await?;
    check(ctx, &hello)?;
    Ok(start(conn, hello))
}

/// Greets a connection the peer opened (it spoke first).
pub async fn greet(ctx: &Ctx, mut conn: PeerConn) -> anyhow::Result<Link> {
    let hello = recv_hello(conn.receiver()).await?;
    if let Err(e) = check(ctx, &hello) {
        let _ = conn
            .sender()
            .send(&Frame::Error {
                message: format!("{e:#}"),
            })
            .await;
        conn.close("refused");
        return Err(e);
    }
    conn.sender().send(&Frame::Hello(ctx.hello())).await?;
    Ok(start(conn, hello))
}

async fn recv_hello(rx: &mut FrameReceiver) -> anyhow::Result<Hello> {
    match tokio::time::timeout(HELLO_TIMEOUT, rx.recv())
        .await
        .context("the peer sent no hello in time")??
    {
        Some(Frame::Hello(h)) => Ok(h),
        Some(Frame::Error { message }) => anyhow::bail!("the peer refused: {message}"),
        Some(_) => anyhow::bail!("the peer's first frame is not a hello"),
        None => anyhow::bail!("the peer closed the stream before its hello"),
    }
}

/// Checks the peer's Hello against our configuration.
fn check(ctx: &Ctx, h: &Hello) -> anyhow::Result<()> {
    anyhow::ensure!(
        h.version == PROTOCOL_VERSION,
        "protocol version {} is not ours ({PROTOCOL_VERSION})",
        h.version
    );
    anyhow::ensure!(
        h.node == ctx.cfg.peer.name,
        "the peer calls itself {:?}, the configuration names {:?}",
        h.node,
        ctx.cfg.peer.name
    );
    anyhow::ensure!(
        h.primary != ctx.is_primary(),
        "both nodes are {}: refusing to replicate",
        if ctx.is_primary() {
            "primary (split brain)"
        } else {
            "secondary"
        }
    );
    for r in &ctx.cfg.replicated {
        anyhow::ensure!(
            h.dirs.contains(&r.name),
            "the peer does not replicate directory {:?}",
            r.name
        );
    }
    for d in &h.dirs {
        anyhow::ensure!(
            ctx.cfg.replicated.iter().any(|r| r.name == *d),
            "the peer replicates directory {d:?}, which this node does not"
        );
    }
    Ok(())
}

/// Marks barrier records and acknowledgements for [`super::hops`].
fn mark_frame(stage: &'static str, f: &Frame) {
    match f {
        Frame::Record(r) if r.op == agent_common::wire::WireOp::Barrier => {
            super::hops::mark(stage, 0, r.seq);
        }
        Frame::Ack(a) => super::hops::mark(stage, 0, a.durable),
        _ => {}
    }
}
