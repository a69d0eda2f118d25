//! Frames over one QUIC stream: a 4-byte big-endian length, then that many bytes of
//! postcard (see `agent_common::wire`).
//!
//! The length is checked against the limit before the body is read, so a hostile
//! peer can make the receiver allocate at most `MAX_FRAME_BYTES`; malformed bodies,
//! trailing bytes and a stream that ends inside a frame are errors, never panics.
//! After an error the stream is out of step and the connection should be closed.

use agent_common::wire::{self, Frame};
use quinn::{ReadExactError, WriteError};

use super::TransportError;

/// The sending half of the frame stream.
#[derive(Debug)]
pub struct FrameSender {
    pub(super) stream: quinn::SendStream,
}

impl FrameSender {
    pub(super) fn new(stream: quinn::SendStream) -> Self {
        FrameSender { stream }
    }

    /// Queues one frame; returns once flow control has taken all of it (not when the
    /// peer has it: acknowledgements are frames of their own).
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        let bytes = wire::encode(frame).map_err(TransportError::Wire)?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(TransportError::Write)
    }

    /// Ends the stream after the frames already sent; the peer's `recv` then returns
    /// `None` once it has read them all.
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.stream
            .finish()
            .map_err(|_| TransportError::Write(WriteError::ClosedStream))
    }
}

/// The receiving half of the frame stream.
#[derive(Debug)]
pub struct FrameReceiver {
    pub(super) stream: quinn::RecvStream,
}

impl FrameReceiver {
    pub(super) fn new(stream: quinn::RecvStream) -> Self {
        FrameReceiver { stream }
    }

    /// The next frame, or `None` when the peer finished the stream between frames.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        let mut prefix = [0u8; 4];
        match self.stream.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(error) => return Err(read_error(error, prefix.len())),
        }
        // Checked before allocating: this is the bound on what a peer can make us hold.
        let len = wire::body_len(prefix).map_err(TransportError::Wire)?;
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|error| read_error(error, len))?;
        wire::decode_body(&body)
            .map(Some)
            .map_err(TransportError::Wire)
    }
}

fn read_error(error: ReadExactError, wanted: usize) -> TransportError {
    match error {
        ReadExactError::FinishedEarly(got) => TransportError::Truncated { got, wanted },
        ReadExactError::ReadError(error) => TransportError::Read(error),
    }
}
