//! Replication: the primary ships every captured change to the secondary, which
//! applies it in order and acknowledges; durability points of the application wait
//! for the secondary (RPO = 0); a returning node is brought up to date by a resync.
//!
//! - [`generation`]: data generations, which decide the resync direction and detect
//!   divergence.
//! - [`ship`]: the capture stream turned into wire records, with their data.
//! - [`primary`]: the primary's protocol core (sans-IO).
//! - [`secondary`]: the secondary's protocol core (sans-IO).
//! - [`resync`]: the resync source's comparison with the target's manifest.

pub mod generation;
pub mod primary;
pub mod secondary;
