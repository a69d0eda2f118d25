//! Tandem's kernel-side programs, compiled from C by `build.rs` and embedded here.
//!
//! The sources are in `src/bpf/`; their ABI is `src/bpf/tandem_abi.h`, mirrored by
//! `agent_common::abi`.

/// The capture object: syscall, io_uring and writeback tracepoints that report the
/// changed byte ranges of files under the watched trees. Empty when the crate was
/// built with `TANDEM_BPF_SKIP=1`.
pub static CAPTURE_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));
