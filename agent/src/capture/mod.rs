//! Change capture: every byte range and every name that changes under the watched
//! trees, as one ordered, coalesced stream of [`Change`]s.
//!
//! ```text
//!  kernel                         user space (one capture thread)
//!  ------                         -------------------------------
//!  syscall / io_uring /  --ring-->  ebpf::Probes --(dev,ino,range)--+
//!  writeback tracepoints                                            v
//!                                                       ranges::DirtyFiles --+
//!  fanotify (FID, dir+name) ---->  fanotify::Fanotify -> reconcile::Reconciler|--> Change stream
//!                                        (index::Index: the tree as last seen)+
//! ```

pub mod change;
pub mod ebpf;
pub mod engine;
pub mod fanotify;
pub mod index;
pub mod mapped;
pub mod ranges;
pub mod reconcile;
pub mod truncate_path;
