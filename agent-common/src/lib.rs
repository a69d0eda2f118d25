//! Types shared by Tandem's kernel-side programs, its agent and its wire
//! protocol.
//!
//! `abi` mirrors `agent-ebpf/src/bpf/tandem_abi.h`, the single source of truth of
//! the kernel/user ABI.
//!
//! `wire` holds the peer protocol: frames, their codec and their limits.

pub mod abi;
pub mod wire;
