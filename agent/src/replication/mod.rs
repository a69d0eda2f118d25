//! Replication: the primary ships every captured change to the secondary, which
//! applies it in order and acknowledges; durability points of the application wait
//! for the secondary (RPO = 0); a returning node is brought up to date by a resync.
//!
//! - [`generation`]: data generations, which decide the resync direction and detect
//!   divergence.
//! - [`ship`]: the capture stream turned into wire records, with their data.
//! - [`primary`]: the primary's protocol core (sans-IO).

pub mod generation;
pub mod primary;

