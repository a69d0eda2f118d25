//! Pure parser of the byte stream that `read(2)` returns on a fanotify group in FID mode.
//!
//! The parser copies every field out of the buffer with `from_ne_bytes`, so it needs no
//! alignment, no pointer casts and no `unsafe`. Every length the buffer claims is checked
//! against what is really there before it is used: a malformed or truncated buffer gives a
//! [`ParseError`], never a panic and never an out-of-bounds read.

use super::{
    FAN_EVENT_INFO_TYPE_DFID, FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_FID,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FAN_ONDIR,
    FAN_Q_OVERFLOW, FANOTIFY_METADATA_VERSION,
};

/// Size of `struct fanotify_event_metadata` in metadata version 3.
pub(super) const METADATA_LEN: usize = 24;
/// Size of `struct fanotify_event_info_header`.
const INFO_HDR_LEN: usize = 4;
/// Header, fsid and the two fixed fields of `struct file_handle`: the smallest FID record.
const FID_FIXED_LEN: usize = INFO_HDR_LEN + 8 + 8;

/// A file handle as the kernel reports it: the filesystem id and the opaque
/// `struct file_handle` contents that `open_by_handle_at(2)` accepts back.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct Handle {
    /// `f_fsid` of the filesystem, as `statfs(2)` reports it.
    pub fsid: [i32; 2],
    /// `file_handle.handle_type`, chosen by the filesystem's export operations.
    pub handle_type: i32,
    /// `file_handle.f_handle`, `handle_bytes` long.
    pub bytes: Vec<u8>,
}

/// A directory handle and a name inside that directory.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct NamedHandle {
    /// The directory that holds (or held) the entry.
    pub dir: Handle,
    /// The entry name as raw bytes: Linux names need not be UTF-8. It is `"."` for events
    /// on a directory itself and empty for a plain `DFID` record.
    pub name: Vec<u8>,
}

/// One fanotify event with its information records.
///
/// Events that the kernel has not yet handed to user space merge when they concern the
/// same object, so `mask` is a set of things that happened, in no particular order.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct FanEvent {
    /// The `FAN_*` bits of the event.
    pub mask: u64,
    /// Thread group id of the process that caused the event (0 if unknown).
    pub pid: i32,
    /// `FAN_EVENT_INFO_TYPE_DFID_NAME` (or `DFID`, with an empty name).
    pub dir_name: Option<NamedHandle>,
    /// `FAN_EVENT_INFO_TYPE_OLD_DFID_NAME`: where a `FAN_RENAME` came from.
    pub old: Option<NamedHandle>,
    /// `FAN_EVENT_INFO_TYPE_NEW_DFID_NAME`: where a `FAN_RENAME` went to.
    pub new: Option<NamedHandle>,
    /// `FAN_EVENT_INFO_TYPE_FID`: the object itself (the child for directory-entry events).
    pub object: Option<Handle>,
}

impl FanEvent {
    /// The kernel queue overflowed and events were lost: the watched trees must be rescanned.
    pub fn is_overflow(&self) -> bool {
        self.mask & FAN_Q_OVERFLOW != 0
    }

    /// The object of the event is a directory.
    pub fn is_dir(&self) -> bool {
        self.mask & FAN_ONDIR != 0
    }
}

/// Why a buffer could not be parsed. Offsets are from the start of the buffer.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes remain than an event header needs.
    #[error("{remaining} trailing bytes at offset {offset} are too short for an event header")]
    ShortHeader {
        /// Where the partial header starts.
        offset: usize,
        /// How many bytes were left.
        remaining: usize,
    },
    /// The metadata version is not the one this parser knows.
    #[error(
        "event at offset {offset} has metadata version {found}, expected {FANOTIFY_METADATA_VERSION}"
    )]
    Version {
        /// Where the event starts.
        offset: usize,
        /// The version found.
        found: u8,
    },
    /// `event_len` runs past the buffer or is smaller than `metadata_len`.
    #[error(
        "event at offset {offset} claims event_len {event_len} (metadata_len {metadata_len}, {remaining} bytes left)"
    )]
    EventLen {
        /// Where the event starts.
        offset: usize,
        /// The claimed total length.
        event_len: u32,
        /// The claimed metadata length.
        metadata_len: u16,
        /// Bytes left in the buffer from `offset`.
        remaining: usize,
    },
    /// `metadata_len` is smaller than the version 3 metadata structure.
    #[error(
        "event at offset {offset} claims metadata_len {metadata_len}, less than {METADATA_LEN}"
    )]
    MetadataLen {
        /// Where the event starts.
        offset: usize,
        /// The claimed metadata length.
        metadata_len: u16,
    },
    /// An information record header is cut off, has length 0 or runs past its event.
    #[error(
        "info record at offset {offset} has length {len}, but {remaining} bytes remain in its event"
    )]
    InfoLen {
        /// Where the record starts.
        offset: usize,
        /// The claimed record length (0 if the header itself is cut off).
        len: u16,
        /// Bytes left in the event from `offset`.
        remaining: usize,
    },
    /// A FID record is too short for its fsid and handle header, or its handle runs past it.
    #[error(
        "fid record at offset {offset} (length {len}) cannot hold a {handle_bytes}-byte handle"
    )]
    Handle {
        /// Where the record starts.
        offset: usize,
        /// The record length.
        len: u16,
        /// The claimed handle size (0 if the record cannot even hold the handle header).
        handle_bytes: u32,
    },
    /// A name record has no NUL terminator inside the record.
    #[error("name in info record at offset {offset} is not NUL-terminated")]
    MissingNul {
        /// Where the record starts.
        offset: usize,
    },
    /// The same record type appears twice in one event.
    #[error(
        "info record type {info_type} at offset {offset} repeats one already seen in its event"
    )]
    Duplicate {
        /// Where the second record starts.
        offset: usize,
        /// The repeated type.
        info_type: u8,
    },
}

/// Parses every event in `buf` (the bytes one `read(2)` returned) and appends them to `out`.
///
/// Unknown information record types (pidfd, error, range, and future ones) are skipped,
/// because their length is self-describing. On error, the events before the bad one stay
/// in `out`; the caller should treat the rest as lost, like a queue overflow.
pub fn parse_events(buf: &[u8], out: &mut Vec<FanEvent>) -> Result<(), ParseError> {
    parse_events_with_fds(buf, out, |_| {})
}

/// [`parse_events`], also handing every event's `fd` field to `on_fd`, so that the reader
/// can close any descriptor the kernel created (none in FID mode, but a leak would be
/// silent if that ever changed).
pub(super) fn parse_events_with_fds(
    buf: &[u8],
    out: &mut Vec<FanEvent>,
    mut on_fd: impl FnMut(i32),
) -> Result<(), ParseError> {
    let mut offset = 0;
    while offset < buf.len() {
        let rest = &buf[offset..];
        if rest.len() < METADATA_LEN {
            return Err(ParseError::ShortHeader {
                offset,
                remaining: rest.len(),
            });
        }
        let event_len = u32_at(rest, 0);
        let vers = rest[4];
        let metadata_len = u16_at(rest, 6);
        let mask = u64_at(rest, 8);
        let fd = i32_at(rest, 16);
        let pid = i32_at(rest, 20);
        if vers != FANOTIFY_METADATA_VERSION {
            return Err(ParseError::Version {
                offset,
                found: vers,
            });
        }
        let event_size = event_len as usize;
        if event_size > rest.len() || event_size < usize::from(metadata_len) {
            return Err(ParseError::EventLen {
                offset,
                event_len,
                metadata_len,
                remaining: rest.len(),
            });
        }
        if usize::from(metadata_len) < METADATA_LEN {
            return Err(ParseError::MetadataLen {
                offset,
                metadata_len,
            });
        }
        // The fd is reported before the records are checked so that a descriptor is
        // closed even when the rest of its event turns out to be malformed.
        on_fd(fd);
        let mut event = FanEvent {
            mask,
            pid,
            ..FanEvent::default()
        };
        parse_records(
            &rest[usize::from(metadata_len)..event_size],
            offset + usize::from(metadata_len),
            &mut event,
        )?;
        out.push(event);
        offset += event_size;
    }
    Ok(())
}

/// Parses the information records of one event (`records` starts at buffer offset `base`).
fn parse_records(records: &[u8], base: usize, event: &mut FanEvent) -> Result<(), ParseError> {
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        let offset = base + pos;
        if rest.len() < INFO_HDR_LEN {
            return Err(ParseError::InfoLen {
                offset,
                len: 0,
                remaining: rest.len(),
            });
        }
        let info_type = rest[0];
        let len = u16_at(rest, 2);
        let size = usize::from(len);
        // A zero length would make this loop spin forever, and a length shorter than the
        // header would make the next header overlap this one.
        if size < INFO_HDR_LEN || size > rest.len() {
            return Err(ParseError::InfoLen {
                offset,
                len,
                remaining: rest.len(),
            });
        }
        let record = &rest[..size];
        let slot_is_taken = |taken: bool| {
            if taken {
                Err(ParseError::Duplicate { offset, info_type })
            } else {
                Ok(())
            }
        };
        match info_type {
            FAN_EVENT_INFO_TYPE_FID => {
                slot_is_taken(event.object.is_some())?;
                let (handle, _) = parse_fid(record, offset)?;
                event.object = Some(handle);
            }
            FAN_EVENT_INFO_TYPE_DFID => {
                slot_is_taken(event.dir_name.is_some())?;
                let (dir, _) = parse_fid(record, offset)?;
                event.dir_name = Some(NamedHandle {
                    dir,
                    name: Vec::new(),
                });
            }
            FAN_EVENT_INFO_TYPE_DFID_NAME
            | FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
            | FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => {
                let slot = match info_type {
                    FAN_EVENT_INFO_TYPE_DFID_NAME => &mut event.dir_name,
                    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => &mut event.old,
                    _ => &mut event.new,
                };
                slot_is_taken(slot.is_some())?;
                let (dir, tail) = parse_fid(record, offset)?;
                // The name follows the handle, NUL-terminated, then zero padding up to the
                // record's 4-byte alignment.
                let Some(nul) = tail.iter().position(|&b| b == 0) else {
                    return Err(ParseError::MissingNul { offset });
                };
                *slot = Some(NamedHandle {
                    dir,
                    name: tail[..nul].to_vec(),
                });
            }
            // Records this module does not interpret carry their own length and are skipped.
            _ => {}
        }
        pos += size;
    }
    Ok(())
}

/// Parses a FID-style record (header, fsid, `struct file_handle`), returning the handle and
/// the bytes of the record after it.
fn parse_fid(record: &[u8], offset: usize) -> Result<(Handle, &[u8]), ParseError> {
    let len = u16::try_from(record.len()).unwrap_or(u16::MAX);
    if record.len() < FID_FIXED_LEN {
        return Err(ParseError::Handle {
            offset,
            len,
            handle_bytes: 0,
        });
    }
    let fsid = [i32_at(record, 4), i32_at(record, 8)];
    let handle_bytes = u32_at(record, 12);
    let handle_type = i32_at(record, 16);
    let tail = &record[FID_FIXED_LEN..];
    let hb = handle_bytes as usize;
    if hb > tail.len() {
        return Err(ParseError::Handle {
            offset,
            len,
            handle_bytes,
        });
    }
    let handle = Handle {
        fsid,
        handle_type,
        bytes: tail[..hb].to_vec(),
    };
    Ok((handle, &tail[hb..]))
}

// The readers below are only called with offsets the callers have bounds-checked; they
// still fall back to zero instead of panicking, so a mistake here cannot crash the agent.

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_ne_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, i32::from_ne_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

#[cfg(test)]
mod tests;
