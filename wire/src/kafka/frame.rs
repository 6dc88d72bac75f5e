//! Length-prefixed framing: a big-endian `i32` size, then that many bytes.
//!
//! The length is checked against a limit before a single byte of the body is
//! decoded or even buffered, so a hostile peer cannot make the broker allocate
//! what it announces.

use bytes::{Buf, Bytes, BytesMut};

/// The default limit on one frame's body: 100 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 << 20;

/// The most room reserved for a frame's body before its bytes arrive: a size
/// prefix alone never buys more than this (the buffer still grows as the
/// bytes come in).
pub const MAX_RESERVE_AHEAD: usize = 1 << 20;

/// Why a frame was refused; the connection should be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced size is over the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        len: u64,
        /// The configured limit.
        limit: usize,
    },
    /// The announced size is negative.
    #[error("frame announces a negative length ({0})")]
    Negative(i32),
}

/// Splits one whole frame body off the front of `buf`, if one has arrived.
///
/// Returns `Ok(None)` when more bytes are needed; then, when the size prefix
/// is known, reserves room for the rest (at most [`MAX_RESERVE_AHEAD`] at a
/// time) so the next read fills it in few goes.
pub fn split_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let announced = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if announced < 0 {
        return Err(FrameError::Negative(announced));
    }
    let len = announced as usize;
    if len > limit {
        return Err(FrameError::TooLarge {
            len: len as u64,
            limit,
        });
    }
    if buf.len() < 4 + len {
        buf.reserve((4 + len - buf.len()).min(MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_whole_frames_and_splits_them() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(split_frame(&mut buf, 10), Ok(None));
        buf.extend_from_slice(&[b'c', 0, 0, 0, 0]);
        assert_eq!(
            split_frame(&mut buf, 10),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(split_frame(&mut buf, 10), Ok(Some(Bytes::new())));
        assert_eq!(split_frame(&mut buf, 10), Ok(None));
    }

    #[test]
    fn refuses_oversized_and_negative_lengths_before_buffering() {
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut buf, 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(
            buf.capacity() < 1024,
            "must not reserve what a peer announces"
        );
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(split_frame(&mut buf, 100), Err(FrameError::Negative(-2)));
    }

    /// A size prefix within the limit used to reserve the whole announced
    /// body at once: 4 bytes bought a 100 MiB allocation per connection.
    #[test]
    fn a_size_prefix_alone_reserves_little_and_the_frame_still_arrives_whole() {
        let len = 8 << 20;
        let mut buf = BytesMut::from(&(len as i32).to_be_bytes()[..]);
        assert_eq!(split_frame(&mut buf, len), Ok(None));
        assert!(
            buf.capacity() <= 4 + MAX_RESERVE_AHEAD,
            "{}",
            buf.capacity()
        );
        let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
        for piece in body.chunks(300_000) {
            assert_eq!(split_frame(&mut buf, len), Ok(None));
            buf.extend_from_slice(piece);
        }
        assert_eq!(split_frame(&mut buf, len), Ok(Some(Bytes::from(body))));
        assert!(buf.is_empty());
    }
}
