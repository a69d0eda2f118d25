//! Feeds arbitrary bytes to the peer wire decoder, as a hostile peer would: decoding
//! must return an error or a frame, never panic or allocate without bound, and any
//! frame it returns must survive a round trip through the encoder.

#![no_main]

use agent_common::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A whole length-prefixed frame, as `decode` takes it.
    if let Ok(frame) = wire::decode(data) {
        round_trip(&frame);
    }
    // The same bytes as a bare body, as the receiver hands them over after the prefix.
    if let Ok(frame) = wire::decode_body(data) {
        round_trip(&frame);
    }
    // The prefix check alone: never more than the limit.
    if let Some(prefix) = data.first_chunk::<4>() {
        if let Ok(len) = wire::body_len(*prefix) {
            assert!(len <= wire::MAX_FRAME_BYTES);
        }
    }
});

/// What was decoded encodes again (no larger than the limit) and decodes to itself.
fn round_trip(frame: &wire::Frame) {
    let bytes = wire::encode(frame).expect("a decoded frame must encode");
    assert_eq!(wire::decode(&bytes).as_ref(), Ok(frame));
}
