//! Types shared by Tandem's kernel-side programs, its agent and (later) its wire
//! protocol.
//!
//! `abi` mirrors `agent-ebpf/src/bpf/tandem_abi.h`, the single source of truth of
//! the kernel/user ABI.

pub mod abi;
