//! Tandem's agent library: everything the `tandem` binary does lives here, so that
//! tests can drive it in-process.
//!
//! # Layout
//! - [`apply`]: the secondary's side of replication: applies the primary's records
//!   to its copy of a replicated directory, confined beneath it, and lists that copy
//!   for a resync.
//! - [`barrier`]: the synchronous durability barrier: an application's fsyncs
//!   wait, through seccomp user notification, until the peer holds their data.
//! - [`capture`]: knows every byte range and name that changes under the watched
//!   trees (eBPF for data ranges, fanotify for names), coalesced into one ordered
//!   change stream.
//! - [`cli`]: the command line, parsed by clap.
//! - [`config`]: the configuration file, read from YAML and validated into typed
//!   values with every problem reported at once.
//! - [`console`]: the web console: a page and a JSON API served by the agent, with
//!   sessions, CSRF tokens and a timeline of recent events.
//! - [`demo`]: `tandem demo`: failover shown end to end in the lab, with a sample
//!   service, a lost primary, the checks and a summary.
//! - [`failover`]: the failover engine (sans-IO): SafeKit's states, heartbeats,
//!   witnesses, VIP probe and data generations decide who runs the application.
//! - [`heartbeat`]: heartbeats to the peer over UDP on one or more networks,
//!   authenticated (HMAC-SHA256) and replay-proof, with round-trip times.
//! - [`lab`]: a two-node test lab in network namespaces (`tandem lab up|status|down`).
//! - [`metrics`]: the Prometheus metrics and their `/metrics` endpoint.
//! - [`replication`]: the protocol cores (sans-IO) of the primary and the secondary,
//!   data generations, the shipper and the resync compare.
//! - [`runtime`]: `tandem run`, the agent: the actors (capture, barrier, replication,
//!   control socket) and their wiring.
//! - [`status`]: the status snapshot shared by the runtime and its readers.
//! - [`transport`]: the connection to the peer: QUIC with mutual TLS pinned to the
//!   peer's one certificate, carrying an ordered stream of length-prefixed frames.
//! - [`vip`]: the virtual IP's I/O: netlink add/remove/list, gratuitous ARP and
//!   unsolicited neighbour advertisements, and the RFC 5227 ARP probe.

pub mod apply;
// The barrier's seccomp filter uses x86_64 system call numbers and ABI checks.
#[cfg(target_arch = "x86_64")]
pub mod barrier;
pub mod capture;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod failover;
pub mod heartbeat;
pub mod lab;
pub mod metrics;
pub mod replication;
pub mod runtime;
pub mod status;
pub mod transport;
pub mod vip;
