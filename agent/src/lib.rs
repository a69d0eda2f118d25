//! Tandem's agent library: everything the `tandem` binary does lives here, so that
//! tests can drive it in-process.
//!
//! # Layout
//! - [`apply`]: the secondary's side of replication: applies the primary's records
//!   to its copy of a replicated directory, confined beneath it, and lists that copy
//!   for a resync.
//! - [`capture`]: knows every byte range and name that changes under the watched
//!   trees (eBPF for data ranges, fanotify for names), coalesced into one ordered
//!   change stream.
//! - [`cli`]: the command line, parsed by clap.

pub mod apply;
pub mod capture;
pub mod cli;
