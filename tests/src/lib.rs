//! Shared fixtures of the integration tests: the capture oracle's workload generator,
//! its stream consumer (the shadow replayer), the tree comparator, the lab, the VIP
//! client, the RPO workload and the oracle's scratch file system.

pub mod compare;
pub mod lab;
pub mod rpo;
pub mod scratch;
pub mod shadow;
pub mod sys;
pub mod vip_client;
pub mod workload;
