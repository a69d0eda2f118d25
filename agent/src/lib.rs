//! Tandem's agent library: everything the `tandem` binary does lives here, so that
//! tests can drive it in-process.
//!
//! # Layout
//! - [`barrier`]: the synchronous durability barrier: an application's fsyncs
//!   wait, through seccomp user notification, until the peer holds their data.
//! - [`capture`]: knows every byte range and name that changes under the watched
//!   trees (eBPF for data ranges, fanotify for names), coalesced into one ordered
//!   change stream.
//! - [`cli`]: the command line, parsed by clap.

// The barrier's seccomp filter uses x86_64 system call numbers and ABI checks.
#[cfg(target_arch = "x86_64")]
pub mod barrier;
pub mod capture;
pub mod cli;
