//! Tandem's agent library: everything the `tandem` binary does lives here, so that
//! tests can drive it in-process.
//!
//! # Layout
//! - [`capture`]: knows every byte range and name that changes under the watched
//!   trees (eBPF for data ranges, fanotify for names), coalesced into one ordered
//!   change stream.
//! - [`cli`]: the command line, parsed by clap.
//! - [`transport`]: the connection to the peer: QUIC with mutual TLS pinned to the
//!   peer's one certificate, carrying an ordered stream of length-prefixed frames.

pub mod capture;
pub mod cli;
pub mod transport;
