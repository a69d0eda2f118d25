//! Shared fixtures of the integration tests: the capture oracle's workload generator,
//! its stream consumer (the shadow replayer) and the tree comparator.

pub mod compare;
pub mod lab;
pub mod shadow;
pub mod sys;
pub mod vip_client;
pub mod workload;
