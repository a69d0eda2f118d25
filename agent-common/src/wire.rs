//! The peer protocol's messages and their framing.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a postcard
//! encoded [`Frame`]. The length is checked against [`MAX_FRAME_BYTES`] before any
//! byte of the body is read, so a hostile peer cannot make the receiver allocate
//! more than that; decoding never panics, whatever the bytes (see the proptests and
//! the fuzz target in `fuzz/`).
//!
//! Paths travel relative to a replicated directory, named by its index in the
//! [`Hello`]'s list of directory names: nodes pair directories by name, so each may
//! keep them anywhere.

use serde::{Deserialize, Serialize};

/// The ALPN protocol of the peer connection; a peer speaking anything else is refused
/// by the TLS handshake itself.
pub const ALPN: &[u8] = b"tandem/1";

/// The protocol version carried in [`Hello`]. Peers with different versions refuse
/// each other with a [`Frame::Error`] naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame body accepted, in bytes.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// The largest data chunk a single [`WireOp::Write`] carries; larger ranges are sent
/// as several records.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Paths (and symlink targets) longer than this are refused.
pub const MAX_PATH_BYTES: usize = 4096;

/// Everything that travels between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame in each direction.
    Hello(Hello),
    /// One change, in capture order (primary to secondary).
    Record(Record),
    /// What the secondary has done (secondary to primary).
    Ack(Ack),
    /// Which entries the secondary must list for the resync (primary to secondary,
    /// after the Hellos): all of them, or only the paths that may differ.
    ManifestRequest(ManifestScope),
    /// The secondary's view of one file, for a resync (secondary to primary).
    Manifest(Manifest),
    /// The secondary has listed everything it holds (secondary to primary).
    ManifestDone,
    /// The primary has sent everything a resync needs; what follows are live records.
    ResyncDone {
        /// The record sequence number the copies are identical at.
        seq: u64,
    },
    /// The sender refuses to go on; the connection is closed after it.
    Error {
        /// One line for the receiver's log.
        message: String,
    },
}

/// The first frame: who is speaking and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// The node's configured name.
    pub node: String,
    /// The replicated directories by name, in the order records refer to them.
    pub dirs: Vec<String>,
    /// The node's data generations (see the agent's `replication::generation`).
    pub generations: Generations,
    /// Whether the sender currently runs the application (PRIM or ALONE).
    pub primary: bool,
    /// The sender's copy may hold changes its generations do not account for (it
    /// applied records from a primary of another lineage and never reached in sync
    /// since): a resync must compare everything.
    pub unsure: bool,
}

/// Data generation identifiers, after DRBD's: `current` changes whenever a node starts
/// writing without its peer; `history` holds the ones before it, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generations {
    pub current: u64,
    pub history: Vec<u64>,
}

/// One change to apply, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Strictly increasing within a connection.
    pub seq: u64,
    /// Index into the sender's [`Hello::dirs`].
    pub dir: u16,
    /// Relative to the directory, `/`-separated, never absolute, never `..`.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub op: WireOp,
}

impl Record {
    /// Bytes of file data the record carries (its share of the replication lag).
    #[must_use]
    pub fn data_len(&self) -> u64 {
        match &self.op {
            WireOp::Write { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

/// The kind of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// Attributes of an entry, all of which the secondary sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Access time, nanoseconds since the epoch.
    pub atime_ns: i64,
    /// Every extended attribute, name and value; the secondary removes the others.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What a record does to its path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOp {
    /// Bytes at an offset of a regular file.
    Write {
        offset: u64,
        // Byte strings travel as one length and a copy: postcard would otherwise
        // encode each byte as an element, ten times slower.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A range that reads as zeros and holds no blocks (a hole).
    Punch { offset: u64, len: u64 },
    /// The file's size.
    Truncate { size: u64 },
    /// A new entry, replacing nothing (a leftover of the same name is removed first).
    Create {
        kind: EntryKind,
        attrs: Attrs,
        /// The target of a symlink.
        #[serde(with = "serde_bytes")]
        target: Option<Vec<u8>>,
        /// The device number of a character or block device.
        rdev: u64,
    },
    /// The entry and, for a directory, everything beneath it.
    Remove,
    /// Moves the entry, replacing what `new_path` named.
    Rename {
        #[serde(with = "serde_bytes")]
        new_path: Vec<u8>,
    },
    /// Swaps two entries.
    Exchange {
        #[serde(with = "serde_bytes")]
        new_path: Vec<u8>,
    },
    /// Makes `new_path` another name of the file.
    Link {
        #[serde(with = "serde_bytes")]
        new_path: Vec<u8>,
    },
    /// Sets the entry's attributes.
    SetAttrs(Attrs),
    /// A durability point: everything before it is made durable before anything after
    /// it is applied, and the ack that follows reports it durable.
    Barrier,
}

/// The secondary's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Every record up to this one is applied.
    pub applied: u64,
    /// Every record up to this one is on the secondary's disk.
    pub durable: u64,
}

/// What a resync compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManifestScope {
    /// Every entry: unknown history.
    All,
    /// Only these paths (directory index, path): the primary's change log says
    /// nothing else can differ.
    Paths(Vec<ScopedPath>),
}

/// A path in a replicated directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScopedPath {
    pub dir: u16,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
}

/// One entry the secondary holds, with block hashes of regular files, so that the
/// primary sends only what differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub dir: u16,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
    /// BLAKE3 of each block of [`Manifest::block_size`] bytes (the last may be short).
    pub blocks: Vec<[u8; 32]>,
    pub block_size: u32,
}

/// Why bytes could not be read as a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame has {0} bytes after its end")]
    Trailing(usize),
}

/// Encodes a frame with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    let body =
        postcard::to_extend(frame, Vec::new()).map_err(|e| WireError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| WireError::TooLarge(body.len()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the length prefix: the body size that follows, once checked.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one frame body (without its length prefix). Every byte must be used.
pub fn decode_body(body: &[u8]) -> Result<Frame, WireError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(body.len()));
    }
    let (frame, rest) = postcard::take_from_bytes::<Frame>(body)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(frame)
}

/// Decodes a whole buffer of one length-prefixed frame.
pub fn decode(buf: &[u8]) -> Result<Frame, WireError> {
    let (prefix, body) = buf
        .split_first_chunk::<4>()
        .ok_or_else(|| WireError::Malformed("shorter than its length prefix".into()))?;
    let len = body_len(*prefix)?;
    if body.len() != len {
        return Err(WireError::Malformed(format!(
            "length prefix says {len} bytes, {} follow",
            body.len()
        )));
    }
    decode_body(body)
}

#[cfg(test)]
mod tests;
