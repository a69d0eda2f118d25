//! The heartbeat datagram and its key: a postcard body between a fixed prefix and an
//! HMAC-SHA256 tag.
//!
//! ```text
//! +-------+---------+--------------------------+-------------------------+
//! | "TDHB"| version | postcard(Body)           | HMAC-SHA256(prefix‖body)|
//! | 4 B   | 1 B     | variable                 | 32 B                    |
//! +-------+---------+--------------------------+-------------------------+
//! ```
//!
//! The tag is checked (in constant time) before a single byte of the body is decoded,
//! so an unauthenticated sender reaches nothing but the length and prefix checks.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a node tells its peer in every heartbeat: the failover engine's beacon.
pub use crate::failover::Beacon as Payload;

/// The shared heartbeat key; both nodes must hold the same one.
///
/// Its `Debug` output never shows the bytes.
#[derive(Clone, Eq, PartialEq)]
pub struct Key([u8; KEY_LEN]);

/// Derives the heartbeat key from a shared secret: HMAC-SHA256 keyed with a fixed
/// domain label, so that the same secret used elsewhere yields an unrelated key.
///
/// The secret is either a configured secret or [`fingerprint_secret`] of both
/// nodes' certificate fingerprints.
pub fn derive_key(secret: &[u8]) -> Key {
    let mut mac = hmac_sha256(KEY_DOMAIN);
    mac.update(secret);
    Key(mac.finalize().into_bytes().into())
}

/// The secret both nodes compute from their two certificate fingerprints: the two
/// concatenated in sorted order, so that it does not depend on who is "local".
///
/// Certificates are not secret, so a key from this protects against accidents and
/// off-path forgers only; a configured secret is stronger.
pub fn fingerprint_secret(a: &[u8], b: &[u8]) -> Vec<u8> {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(first.len() + second.len() + 8);
    // Length-prefix the first so that ("ab", "c") and ("a", "bc") differ.
    out.extend_from_slice(&(first.len() as u64).to_be_bytes());
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}

/// The sender's acknowledgement of the last heartbeat it accepted from us.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub(crate) struct Echo {
    /// The epoch of the echoed packet (ours, when the peer is current).
    pub(crate) epoch: u64,
    /// The sequence number of the echoed packet.
    pub(crate) seq: u64,
    /// How long the echoing node held that packet before this send, in µs; taken
    /// off the round-trip time so that the send interval does not inflate it.
    pub(crate) held_us: u32,
}

/// Everything a heartbeat carries besides the prefix and tag.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
pub(crate) struct Body {
    /// The sender's node name.
    pub(crate) node: String,
    /// The network name this packet was sent on; binding it in the tag stops a
    /// packet captured on one network from being replayed on another.
    pub(crate) network: String,
    /// Random per sender start.
    pub(crate) epoch: u64,
    /// Strictly increasing per (epoch, network), from 1.
    pub(crate) seq: u64,
    /// The last packet of the peer's that the sender accepted, if any.
    pub(crate) echo: Option<Echo>,
    /// The engine's state.
    pub(crate) payload: Payload,
}

/// Why a datagram is not a heartbeat.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub(crate) enum PacketError {
    /// The tag does not verify with our key (a forgery, corruption or wrong key).
    #[error("authentication tag does not verify")]
    BadMac,
    /// The tag verified but the body does not decode (a bug or version skew).
    #[error("authenticated body does not decode")]
    BadBody,
    /// Too short or the wrong prefix: not a heartbeat of this version.
    #[error("not a heartbeat datagram")]
    NotHeartbeat,
    /// The body would exceed [`MAX_DATAGRAM`].
    #[error("heartbeat exceeds {MAX_DATAGRAM} bytes")]
    TooLarge,
}

/// Encodes and tags a body.
pub(crate) fn seal(key: &Key, body: &Body) -> Result<Vec<u8>, PacketError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    let out = postcard::to_extend(body, out).map_err(|_| PacketError::TooLarge)?;
    seal_raw(key, out)
}

/// Tags already-prefixed bytes (split out so tests can tag arbitrary bodies).
pub(crate) fn seal_raw(key: &Key, mut out: Vec<u8>) -> Result<Vec<u8>, PacketError> {
    if out.len() + MAC_LEN > MAX_DATAGRAM {
        return Err(PacketError::TooLarge);
    }
    let mut mac = hmac_sha256(&key.0);
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Checks the prefix and tag, then decodes the body.
pub(crate) fn open(key: &Key, datagram: &[u8]) -> Result<Body, PacketError> {
    if datagram.len() < PREFIX_LEN + MAC_LEN || datagram[..MAGIC.len()] != MAGIC {
        return Err(PacketError::NotHeartbeat);
    }
    if datagram[MAGIC.len()] != VERSION {
        return Err(PacketError::NotHeartbeat);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
    let mut mac = hmac_sha256(&key.0);
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| PacketError::BadMac)?;
    match postcard::take_from_bytes::<Body>(&signed[PREFIX_LEN..]) {
        Ok((body, [])) => Ok(body),
        _ => Err(PacketError::BadBody),
    }
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

// === impl Key ===

impl Key {
    /// A key from raw bytes (for a key generated elsewhere).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Bytes in a [`Key`].
pub const KEY_LEN: usize = 32;
/// The largest heartbeat we send or accept, well under any link's MTU.
pub const MAX_DATAGRAM: usize = 1200;
const MAGIC: [u8; 4] = *b"TDHB";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = MAGIC.len() + 1;
const MAC_LEN: usize = 32;
const KEY_DOMAIN: &[u8] = b"tandem heartbeat key v1";
