//! Frames over one QUIC stream: a 4-byte big-endian length, then that many bytes of
//! postcard (see `agent_common::wire`).
//!
//! The length is checked against the limit before the body is read, so a hostile
//! peer can make the receiver allocate at most `MAX_FRAME_BYTES`; malformed bodies,
//! trailing bytes and a stream that ends inside a frame are errors, never panics.
//! After an error the stream is out of step and the connection should be closed.

use agent_common::wire::{self, Frame};
use quinn::WriteError;

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
    /// Bytes read and not yet returned as frames: `buf[start..]`. Kept here, not in
    /// the future, so that [`FrameReceiver::recv`] is cancel-safe.
    buf: Vec<u8>,
    start: usize,
}

/// The most a single read takes from the stream.
const READ_CHUNK: usize = 256 << 10;

impl FrameReceiver {
    pub(super) fn new(stream: quinn::RecvStream) -> Self {
        FrameReceiver {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next frame, or `None` when the peer finished the stream between frames.
    ///
    /// Cancel-safe: a frame partly read when the future is dropped is completed by
    /// the next call, so an actor can wait for frames in a `select!` beside its other
    /// inputs, without a task (and a thread hop) in between.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            // `read_chunk` makes progress or none at all: dropped, it loses nothing.
            match self.stream.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    let got = self.buf.len() - self.start;
                    if got == 0 {
                        return Ok(None);
                    }
                    // Inside the length prefix, or inside the body it announced.
                    return Err(match self.prefix().and_then(|p| wire::body_len(p).ok()) {
                        Some(wanted) => TransportError::Truncated {
                            got: got - 4,
                            wanted,
                        },
                        None => TransportError::Truncated { got, wanted: 4 },
                    });
                }
                Err(error) => return Err(TransportError::Read(error)),
            }
        }
    }

    /// The length prefix of the frame at the front, once it is in.
    fn prefix(&self) -> Option<[u8; 4]> {
        self.buf.get(self.start..self.start + 4)?.try_into().ok()
    }

    /// A whole frame from the front of the buffer, if one is there.
    fn take_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        let Some(prefix) = self.prefix() else {
            return Ok(None);
        };
        // Checked before waiting for the body: the bound on what a peer can make us
        // hold is one frame's limit plus one read.
        let len = wire::body_len(prefix).map_err(TransportError::Wire)?;
        let Some(body) = self.buf.get(self.start + 4..self.start + 4 + len) else {
            return Ok(None);
        };
        let frame = wire::decode_body(body).map_err(TransportError::Wire)?;
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }
}
