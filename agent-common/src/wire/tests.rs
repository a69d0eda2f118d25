//! Round trips and hostile input for the frame codec.

use proptest::prelude::*;

use super::*;

fn sample() -> Vec<Frame> {
    vec![
        Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            node: "node1".into(),
            dirs: vec!["data".into(), "conf".into()],
            generations: Generations {
                current: 7,
                history: vec![5, 3],
            },
            primary: true,
            unsure: false,
        }),
        Frame::Record(Record {
            seq: 1,
            dir: 0,
            path: b"a/\xff name".to_vec(),
            op: WireOp::Write {
                offset: 5 << 32,
                data: vec![1, 2, 3],
            },
        }),
        Frame::Record(Record {
            seq: 2,
            dir: 1,
            path: b"l".to_vec(),
            op: WireOp::Create {
                kind: EntryKind::Symlink,
                attrs: Attrs {
                    mode: 0o777,
                    xattrs: vec![(b"user.x".to_vec(), b"v".to_vec())],
                    ..Attrs::default()
                },
                target: Some(b"../x".to_vec()),
                rdev: 0,
            },
        }),
        Frame::Record(Record {
            seq: 3,
            dir: 0,
            path: b"f".to_vec(),
            op: WireOp::Barrier,
        }),
        Frame::Ack(Ack {
            applied: 3,
            durable: 3,
        }),
        Frame::Manifest(Manifest {
            dir: 0,
            path: b"f".to_vec(),
            kind: EntryKind::File,
            size: 10,
            blocks: vec![[9; 32]],
            block_size: 65536,
        }),
        Frame::ManifestDone,
        Frame::ManifestRequest(ManifestScope::Paths(vec![ScopedPath {
            dir: 1,
            path: b"a/b".to_vec(),
        }])),
        Frame::ManifestRequest(ManifestScope::All),
        Frame::ResyncDone { seq: 3 },
        Frame::Error {
            message: "no".into(),
        },
    ]
}

#[test]
fn frames_round_trip() {
    for f in sample() {
        let bytes = encode(&f).expect("encodes");
        assert_eq!(decode(&bytes), Ok(f));
    }
}

#[test]
fn oversized_length_prefix_is_refused_before_reading() {
    let prefix = u32::try_from(MAX_FRAME_BYTES + 1)
        .expect("fits")
        .to_be_bytes();
    assert_eq!(
        body_len(prefix),
        Err(WireError::TooLarge(MAX_FRAME_BYTES + 1))
    );
    assert!(body_len(u32::MAX.to_be_bytes()).is_err());
}

#[test]
fn oversized_frame_is_not_encoded() {
    let f = Frame::Record(Record {
        seq: 1,
        dir: 0,
        path: b"f".to_vec(),
        op: WireOp::Write {
            offset: 0,
            data: vec![0; MAX_FRAME_BYTES + 1],
        },
    });
    assert!(matches!(encode(&f), Err(WireError::TooLarge(_))));
}

#[test]
fn truncated_and_trailing_bytes_are_refused() {
    let bytes = encode(&sample()[1]).expect("encodes");
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut body = bytes[4..].to_vec();
    body.push(0);
    assert_eq!(decode_body(&body), Err(WireError::Trailing(1)));
}

#[test]
fn huge_declared_vector_length_does_not_allocate() {
    // A Record whose path claims 2^62 bytes: postcard must fail on the short input
    // rather than reserve that much.
    let mut body = vec![1u8, 1, 0]; // variant Record, seq 1, dir 0
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    assert!(decode_body(&body).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_body(&body);
        let _ = decode(&body);
    }

    #[test]
    fn mutated_frames_never_panic(i in 0usize..11, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode(&sample()[i]).expect("encodes");
        let at = pos.index(bytes.len());
        bytes[at] = byte;
        let _ = decode(&bytes);
    }
}
