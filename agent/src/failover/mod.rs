//! The failover engine, sans-IO: events in (heartbeats, witnesses, VIP probes,
//! replication status, application results, checkers, administrator commands, time),
//! commands out (application, VIP, replication role, generations, heartbeats, state
//! transitions with their reason). No I/O, no threads, no clock: `now` is passed in.
//!
//! States are SafeKit's ([`State`]): STOP, WAIT, ALONE, PRIM, SECOND.
//!
//! # Fault model
//! - Nodes crash (the application and the VIP vanish with them), freeze, or lose
//!   only their agent (kill -9, OOM: the application and the VIP stay). What is
//!   persisted (data generations, [`Memory`]) survives; nothing else does.
//! - Heartbeat networks lose, delay, reorder and are cut independently of each
//!   other. Heartbeats are authenticated by the runtime: a peer is faulty by
//!   silence, never by lying.
//! - Each node reaches each witness or not; the VIP probe (RFC 5227 style, on the
//!   VIP's network) sees any host that holds the VIP on that segment.
//! - Only local monotonic time is used; the clocks of the nodes are never compared.
//!
//! # What the engine guarantees within it
//! - No stale promotion. A node starts the application only (a) as a SECOND in sync,
//!   not resyncing, whose peer's last known generations are not newer, once the peer
//!   is silent on every network; (b) when the peer is heard, not running, and the
//!   generations say this node's data is the newest (equal data: the node resuming
//!   after an agent restart, then the preferred node, then a static tie-break);
//!   (c) when the peer is silent and this node remembers that the peer cannot hold
//!   newer data ([`Memory::peer_may_be_newer`]); or (d) by `tandem prim --force`,
//!   the recorded administrator override. A SECOND kept from (a) only by a failing
//!   node checker takes over once it passes, if nothing else changed meanwhile.
//!   Equal generations do not make equal data when one copy is incomplete (a
//!   resync did not finish, [`Memory::consistent`]): that copy counts as the
//!   older one, and so it does whatever the generations say, since it is the
//!   peer's data half copied over this node's own changes, which were kept aside
//!   when the resync began. A SECOND's copy is complete only in sync with a PRIM:
//!   an ALONE source does not wait for it, so what it wrote after the SECOND
//!   caught up may be missing under the very generation the SECOND adopted; the
//!   copy counts as incomplete from hearing the source ALONE until hearing it
//!   PRIM.
//! - At most one runner. A takeover needs the peer silent on every network for the
//!   heartbeat timeout, a witness that answers, and a VIP probe that nobody answers.
//!   A runner that hears neither its peer nor any witness fences itself (stops the
//!   application, drops the VIP, goes WAIT) at the same timeout. Two runners that
//!   hear each other are resolved within a heartbeat: the preferred node (else the
//!   tie-break winner) keeps running, the other becomes SECOND and its own changes
//!   are kept aside ([`Command::ReplicateSecondary`] `diverged`), never dropped.
//!   A runner whose handover is aborted (its peer no longer follows) does not
//!   restart what it stopped beside a peer that took over: with the peer heard
//!   running it waits for the peer to yield; with the peer silent and the VIP
//!   already dropped it probes the VIP first, as a takeover does, and fails over
//!   when the VIP answers.
//! - No takeover by a node that cannot run. Nothing starts on a node while one of
//!   its node checkers fails or has no first result yet (but `--force`); a runner
//!   whose node checker fails hands over to an in-sync SECOND whose node checkers
//!   pass, and keeps running when there is none ([`Params::node_checkers`]).
//! - Convergence. Once faults heal the pair reaches PRIM + SECOND with identical
//!   generations, except when the data diverged while neither runs, or both copies
//!   are incomplete (each node followed the other on a stale heartbeat, and either
//!   resync may have begun): then both WAIT ([`Engine::diverged`]) until the
//!   administrator keeps one side with `tandem prim --force`.
//!
//! # Residual cases (named, tested in the simulation, not hidden)
//! - Symmetric partition: every heartbeat network is cut, each node still reaches
//!   a witness, and the VIP probe cannot cross (the VIP's network is cut as well).
//!   Both run until the partition heals; then one yields and its changes are kept
//!   aside. A heartbeat network that does not share the VIP's switch and a witness
//!   on the VIP's network (the gateway) make this rarer; nothing two nodes can do
//!   alone rules it out. The same holds when the VIP's network is cut while the
//!   peer is silent for another reason (its agent frozen or dead): the probe is
//!   blind, and the silent node cannot fence. Two runners so made are resolved by
//!   heartbeats, so only once both agents run again: an agent frozen or killed
//!   meanwhile keeps its VIP (and, frozen, its application), and nothing the
//!   other node can see tells it so. The simulation excuses two runners or two
//!   VIP holders within two seconds of the VIP's network being cut and, for those
//!   that arose then, until two seconds after both agents are back on machines
//!   that can hear each other.
//! - Changes kept aside are reported, not served: a node that yields or follows
//!   with diverged data sets its own changes since the common generation aside,
//!   and the peer runs without them. When the resync that overwrites them is cut
//!   short, the node's copy is incomplete; the peer, complete, runs (rather than
//!   waiting for changes that are set aside anyway), and the node follows it again
//!   with its changes still kept aside.
//! - A primary cut off from its SECOND keeps writing ALONE, then dies before the
//!   cut heals: the SECOND, in sync as of the cut, finds the VIP free and takes over
//!   without those writes. When the old primary returns its generations show the
//!   divergence and its changes are kept aside.
//! - Agent death is not node death: the application and the VIP of a PRIM whose
//!   agent died stay, the VIP answers the SECOND's probe, and the SECOND does not
//!   take over (no second writer). The restarted agent resumes its role (it wins the
//!   tie on equal data); the runtime must freeze or stop the orphaned application
//!   meanwhile so that it cannot write unreplicated data. An agent that never
//!   returns leaves the service on the orphan until the administrator acts.
//! - A frozen agent (SIGSTOP) keeps its VIP answering, so no takeover happens; a
//!   frozen whole machine does not, the peer takes over, and on resume the old
//!   application runs until the agent's first tick sees the peer running.
//! - A node that restarts while its peer is absent does not start the application
//!   when the peer could hold newer data: availability traded for safety, undone
//!   by `tandem prim --force` (which may run stale data, and says so in the reason).
//! - Without witnesses, isolation cannot be told from a peer failure: only the VIP
//!   probe and the generations guard a takeover.
//!
//! # Wiring
//! The runtime feeds [`Event`]s to [`Engine::handle`] and executes the returned
//! [`Command`]s in order; it sends [`Event::Tick`] no later than
//! [`Engine::poll_timeout`]. See [`Command`] for what each command asks.

mod actions;
mod choice;
mod decide;
mod engine;
mod heartbeat;
mod node_checks;
mod types;

pub use engine::Engine;
pub use types::{Beacon, CheckerAction, Command, Event, Memory, NodeCheck, Params, Preference};

pub use crate::status::State;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
