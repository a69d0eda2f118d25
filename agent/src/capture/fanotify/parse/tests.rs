//! Unit tests of the fanotify buffer parser on crafted buffers, plus property tests: any
//! byte string parses without panicking, and well-formed events survive a round trip
//! through a small encoder that lays them out as the kernel does.

use super::*;
use crate::capture::fanotify::{FAN_CLOSE_WRITE, FAN_CREATE, FAN_MODIFY, FAN_RENAME};
use proptest::prelude::*;

const FAN_NOFD: i32 = -1;

/// One information record to encode. `Raw` lets tests write records the kernel would
/// never send.
#[derive(Clone, Debug)]
enum Rec {
    Fid(u8, Handle, Option<Vec<u8>>),
    Raw(u8, Vec<u8>),
}

/// Encodes a FID-style record: header, fsid, file_handle, optional NUL-terminated name,
/// zero padding to a multiple of 4 (what the kernel does).
fn fid_record(info_type: u8, h: &Handle, name: Option<&[u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&h.fsid[0].to_ne_bytes());
    body.extend_from_slice(&h.fsid[1].to_ne_bytes());
    body.extend_from_slice(&(h.bytes.len() as u32).to_ne_bytes());
    body.extend_from_slice(&h.handle_type.to_ne_bytes());
    body.extend_from_slice(&h.bytes);
    if let Some(name) = name {
        body.extend_from_slice(name);
        body.push(0);
    }
    while (body.len() + 4) % 4 != 0 {
        body.push(0);
    }
    raw_record(info_type, &body)
}

fn raw_record(info_type: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![info_type, 0];
    r.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
    r.extend_from_slice(body);
    r
}

fn encode_event(mask: u64, fd: i32, pid: i32, records: &[Rec]) -> Vec<u8> {
    let mut recs = Vec::new();
    for r in records {
        match r {
            Rec::Fid(t, h, name) => recs.extend(fid_record(*t, h, name.as_deref())),
            Rec::Raw(t, body) => recs.extend(raw_record(*t, body)),
        }
    }
    let mut e = Vec::new();
    e.extend_from_slice(&((24 + recs.len()) as u32).to_ne_bytes());
    e.push(FANOTIFY_METADATA_VERSION);
    e.push(0);
    e.extend_from_slice(&24u16.to_ne_bytes());
    e.extend_from_slice(&mask.to_ne_bytes());
    e.extend_from_slice(&fd.to_ne_bytes());
    e.extend_from_slice(&pid.to_ne_bytes());
    e.extend(recs);
    e
}

/// Encodes a parsed event back, in the kernel's record order.
fn encode(ev: &FanEvent) -> Vec<u8> {
    let mut recs = Vec::new();
    if let Some(d) = &ev.dir_name {
        recs.push(Rec::Fid(
            FAN_EVENT_INFO_TYPE_DFID_NAME,
            d.dir.clone(),
            Some(d.name.clone()),
        ));
    }
    if let Some(d) = &ev.old {
        recs.push(Rec::Fid(
            FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
            d.dir.clone(),
            Some(d.name.clone()),
        ));
    }
    if let Some(d) = &ev.new {
        recs.push(Rec::Fid(
            FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
            d.dir.clone(),
            Some(d.name.clone()),
        ));
    }
    if let Some(h) = &ev.object {
        recs.push(Rec::Fid(FAN_EVENT_INFO_TYPE_FID, h.clone(), None));
    }
    encode_event(ev.mask, FAN_NOFD, ev.pid, &recs)
}

fn ext4_handle(ino: u32, gen_: u32) -> Handle {
    let mut bytes = ino.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&gen_.to_ne_bytes());
    Handle {
        fsid: [0x1234, -7],
        handle_type: 1,
        bytes,
    }
}

fn parse(buf: &[u8]) -> Result<Vec<FanEvent>, ParseError> {
    let mut out = Vec::new();
    parse_events(buf, &mut out).map(|()| out)
}

#[test]
fn empty_buffer_gives_no_events() {
    assert_eq!(parse(&[]), Ok(vec![]));
}

#[test]
fn create_with_dfid_name_and_fid() {
    let dir = ext4_handle(2, 0);
    let file = ext4_handle(12, 99);
    let buf = encode_event(
        FAN_CREATE,
        FAN_NOFD,
        4242,
        &[
            Rec::Fid(
                FAN_EVENT_INFO_TYPE_DFID_NAME,
                dir.clone(),
                Some(b"new.txt".to_vec()),
            ),
            Rec::Fid(FAN_EVENT_INFO_TYPE_FID, file.clone(), None),
        ],
    );
    let evs = parse(&buf).unwrap();
    assert_eq!(
        evs,
        vec![FanEvent {
            mask: FAN_CREATE,
            pid: 4242,
            dir_name: Some(NamedHandle {
                dir,
                name: b"new.txt".to_vec()
            }),
            old: None,
            new: None,
            object: Some(file),
        }]
    );
    assert!(!evs[0].is_dir());
    assert!(!evs[0].is_overflow());
}

#[test]
fn rename_with_old_and_new() {
    let a = ext4_handle(100, 1);
    let b = ext4_handle(200, 2);
    let obj = ext4_handle(300, 3);
    let buf = encode_event(
        FAN_RENAME | FAN_ONDIR,
        FAN_NOFD,
        1,
        &[
            Rec::Fid(
                FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
                a.clone(),
                Some(b"x".to_vec()),
            ),
            Rec::Fid(
                FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
                b.clone(),
                Some(b"yy".to_vec()),
            ),
            Rec::Fid(FAN_EVENT_INFO_TYPE_FID, obj.clone(), None),
        ],
    );
    let evs = parse(&buf).unwrap();
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert!(e.is_dir());
    assert_eq!(e.dir_name, None);
    assert_eq!(
        e.old,
        Some(NamedHandle {
            dir: a,
            name: b"x".to_vec()
        })
    );
    assert_eq!(
        e.new,
        Some(NamedHandle {
            dir: b,
            name: b"yy".to_vec()
        })
    );
    assert_eq!(e.object, Some(obj));
}

#[test]
fn several_events_in_one_buffer() {
    let d = ext4_handle(2, 0);
    let mut buf = Vec::new();
    for (i, name) in [&b"a"[..], b"bb", b"ccc", b"dddd"].iter().enumerate() {
        buf.extend(encode_event(
            FAN_MODIFY | FAN_CLOSE_WRITE,
            FAN_NOFD,
            i as i32,
            &[Rec::Fid(
                FAN_EVENT_INFO_TYPE_DFID_NAME,
                d.clone(),
                Some(name.to_vec()),
            )],
        ));
    }
    let evs = parse(&buf).unwrap();
    let names: Vec<_> = evs
        .iter()
        .map(|e| e.dir_name.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(
        names,
        vec![
            b"a".to_vec(),
            b"bb".to_vec(),
            b"ccc".to_vec(),
            b"dddd".to_vec()
        ]
    );
    assert_eq!(
        evs.iter().map(|e| e.pid).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn overflow_event_has_no_records() {
    let buf = encode_event(FAN_Q_OVERFLOW, FAN_NOFD, 0, &[]);
    let evs = parse(&buf).unwrap();
    assert_eq!(evs.len(), 1);
    assert!(evs[0].is_overflow());
    assert_eq!(evs[0].dir_name, None);
    assert_eq!(evs[0].object, None);
}

#[test]
fn non_utf8_and_dot_names_are_kept_raw() {
    let d = ext4_handle(2, 0);
    let name = vec![0xff, 0xfe, b'a', 0x80];
    let mut buf = encode_event(
        FAN_CREATE,
        FAN_NOFD,
        1,
        &[Rec::Fid(
            FAN_EVENT_INFO_TYPE_DFID_NAME,
            d.clone(),
            Some(name.clone()),
        )],
    );
    buf.extend(encode_event(
        libc::FAN_DELETE_SELF | FAN_ONDIR,
        FAN_NOFD,
        1,
        &[Rec::Fid(
            FAN_EVENT_INFO_TYPE_DFID_NAME,
            d,
            Some(b".".to_vec()),
        )],
    ));
    let evs = parse(&buf).unwrap();
    assert_eq!(evs[0].dir_name.as_ref().unwrap().name, name);
    assert_eq!(evs[1].dir_name.as_ref().unwrap().name, b".");
}

#[test]
fn dfid_record_gives_empty_name_and_unknown_records_are_skipped() {
    let d = ext4_handle(2, 0);
    let buf = encode_event(
        FAN_CREATE,
        FAN_NOFD,
        1,
        &[
            Rec::Raw(4, 7i32.to_ne_bytes().to_vec()), // a pidfd record
            Rec::Fid(FAN_EVENT_INFO_TYPE_DFID, d.clone(), None),
            Rec::Raw(200, vec![1, 2, 3, 4, 5, 6, 7, 8]),
        ],
    );
    let evs = parse(&buf).unwrap();
    assert_eq!(
        evs[0].dir_name,
        Some(NamedHandle {
            dir: d,
            name: vec![]
        })
    );
}

#[test]
fn fds_are_reported_for_closing() {
    let mut buf = encode_event(FAN_MODIFY, 17, 1, &[]);
    buf.extend(encode_event(FAN_MODIFY, FAN_NOFD, 1, &[]));
    let mut fds = Vec::new();
    let mut out = Vec::new();
    parse_events_with_fds(&buf, &mut out, |fd| fds.push(fd)).unwrap();
    assert_eq!(fds, vec![17, FAN_NOFD]);
    assert_eq!(out.len(), 2);
}

fn good_event() -> Vec<u8> {
    encode_event(
        FAN_CREATE,
        FAN_NOFD,
        1,
        &[
            Rec::Fid(
                FAN_EVENT_INFO_TYPE_DFID_NAME,
                ext4_handle(2, 0),
                Some(b"name".to_vec()),
            ),
            Rec::Fid(FAN_EVENT_INFO_TYPE_FID, ext4_handle(3, 0), None),
        ],
    )
}

fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

#[test]
fn event_len_smaller_than_metadata() {
    let mut buf = good_event();
    set_u32(&mut buf, 0, 16);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::EventLen { offset: 0, .. })
    ));
    // event_len between metadata_len and the real size cuts a record in half.
    let mut buf = good_event();
    set_u32(&mut buf, 0, 30);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::InfoLen { offset: 24, .. })
    ));
}

#[test]
fn metadata_len_too_small() {
    let mut buf = good_event();
    set_u16(&mut buf, 6, 8);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::MetadataLen {
            metadata_len: 8,
            ..
        })
    ));
}

#[test]
fn event_len_past_the_end() {
    let mut buf = good_event();
    let len = buf.len() as u32;
    set_u32(&mut buf, 0, len + 1);
    assert!(matches!(parse(&buf), Err(ParseError::EventLen { .. })));
    set_u32(&mut buf, 0, u32::MAX);
    assert!(matches!(parse(&buf), Err(ParseError::EventLen { .. })));
}

#[test]
fn truncated_buffers() {
    let buf = good_event();
    for cut in 1..buf.len() {
        let r = parse(&buf[..cut]);
        assert!(r.is_err(), "cut at {cut} parsed: {r:?}");
    }
    // A whole event followed by a partial header keeps the first event.
    let mut two = good_event();
    two.extend_from_slice(&good_event()[..10]);
    let mut out = Vec::new();
    assert_eq!(
        parse_events(&two, &mut out),
        Err(ParseError::ShortHeader {
            offset: good_event().len(),
            remaining: 10
        })
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn info_len_zero_or_past_the_event() {
    let mut buf = good_event();
    set_u16(&mut buf, 24 + 2, 0);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::InfoLen { len: 0, .. })
    ));
    let mut buf = good_event();
    set_u16(&mut buf, 24 + 2, 3);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::InfoLen { len: 3, .. })
    ));
    let mut buf = good_event();
    set_u16(&mut buf, 24 + 2, 1000);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::InfoLen { len: 1000, .. })
    ));
}

#[test]
fn info_len_past_its_event_but_inside_the_buffer() {
    // The first event's record claims the bytes of the next event: it must be refused
    // rather than read across the event boundary.
    let mut buf = good_event();
    let first_len = buf.len();
    buf.extend(good_event());
    let rec_len = u16::from_ne_bytes([buf[26], buf[27]]);
    set_u16(&mut buf, 26, rec_len + (first_len as u16));
    assert!(matches!(
        parse(&buf),
        Err(ParseError::InfoLen { offset: 24, .. })
    ));
}

#[test]
fn truncated_handle() {
    // handle_bytes larger than the record.
    let mut buf = good_event();
    set_u32(&mut buf, 24 + 12, 200);
    assert!(matches!(
        parse(&buf),
        Err(ParseError::Handle {
            handle_bytes: 200,
            ..
        })
    ));
    // A FID record too short for even the handle header.
    let buf = encode_event(
        FAN_CREATE,
        FAN_NOFD,
        1,
        &[Rec::Raw(FAN_EVENT_INFO_TYPE_FID, vec![0; 8])],
    );
    assert!(matches!(
        parse(&buf),
        Err(ParseError::Handle {
            handle_bytes: 0,
            ..
        })
    ));
}

#[test]
fn missing_nul_after_name() {
    // A DFID_NAME record whose name runs to the end of the record without a NUL.
    let h = ext4_handle(2, 0);
    let mut body = Vec::new();
    body.extend_from_slice(&h.fsid[0].to_ne_bytes());
    body.extend_from_slice(&h.fsid[1].to_ne_bytes());
    body.extend_from_slice(&8u32.to_ne_bytes());
    body.extend_from_slice(&1i32.to_ne_bytes());
    body.extend_from_slice(&h.bytes);
    body.extend_from_slice(b"abcd");
    let buf = encode_event(
        FAN_CREATE,
        FAN_NOFD,
        1,
        &[Rec::Raw(FAN_EVENT_INFO_TYPE_DFID_NAME, body)],
    );
    assert_eq!(parse(&buf), Err(ParseError::MissingNul { offset: 24 }));
}

#[test]
fn wrong_version() {
    let mut buf = good_event();
    buf[4] = 2;
    assert_eq!(
        parse(&buf),
        Err(ParseError::Version {
            offset: 0,
            found: 2
        })
    );
}

#[test]
fn duplicate_records() {
    let h = ext4_handle(2, 0);
    let buf = encode_event(
        FAN_CREATE,
        FAN_NOFD,
        1,
        &[
            Rec::Fid(FAN_EVENT_INFO_TYPE_FID, h.clone(), None),
            Rec::Fid(FAN_EVENT_INFO_TYPE_FID, h, None),
        ],
    );
    assert!(matches!(
        parse(&buf),
        Err(ParseError::Duplicate {
            info_type: FAN_EVENT_INFO_TYPE_FID,
            ..
        })
    ));
}

#[test]
fn errors_read_in_lowercase() {
    let msg = ParseError::MissingNul { offset: 3 }.to_string();
    assert!(msg.starts_with(char::is_lowercase), "{msg}");
}

fn arb_handle() -> impl Strategy<Value = Handle> {
    (
        any::<[i32; 2]>(),
        any::<i32>(),
        proptest::collection::vec(any::<u8>(), 0..=128),
    )
        .prop_map(|(fsid, handle_type, bytes)| Handle {
            fsid,
            handle_type,
            bytes,
        })
}

fn arb_named() -> impl Strategy<Value = NamedHandle> {
    (arb_handle(), proptest::collection::vec(1u8..=255, 0..=255))
        .prop_map(|(dir, name)| NamedHandle { dir, name })
}

fn arb_event() -> impl Strategy<Value = FanEvent> {
    (
        any::<u64>(),
        any::<i32>(),
        proptest::option::of(arb_named()),
        proptest::option::of(arb_named()),
        proptest::option::of(arb_named()),
        proptest::option::of(arb_handle()),
    )
        .prop_map(|(mask, pid, dir_name, old, new, object)| FanEvent {
            mask,
            pid,
            dir_name,
            old,
            new,
            object,
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut out = Vec::new();
        let _ = parse_events(&buf, &mut out);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        extra in 0u32..600,
    ) {
        // Random records behind a plausible header reach deeper into the parser than
        // fully random bytes, which mostly fail the version check.
        let mut buf = encode_event(FAN_CREATE, FAN_NOFD, 1, &[]);
        buf.extend_from_slice(&tail);
        set_u32(&mut buf, 0, 24 + extra);
        let mut out = Vec::new();
        let _ = parse_events(&buf, &mut out);
    }

    #[test]
    fn mutated_valid_buffers_never_panic(
        evs in proptest::collection::vec(arb_event(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf: Vec<u8> = evs.iter().flat_map(encode).collect();
        for (at, byte) in flips {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        let keep = cut.index(buf.len() + 1);
        buf.truncate(keep);
        let mut out = Vec::new();
        let _ = parse_events(&buf, &mut out);
    }

    #[test]
    fn well_formed_events_round_trip(evs in proptest::collection::vec(arb_event(), 0..6)) {
        let buf: Vec<u8> = evs.iter().flat_map(encode).collect();
        let mut out = Vec::new();
        prop_assert_eq!(parse_events(&buf, &mut out), Ok(()));
        prop_assert_eq!(out, evs);
    }
}
