//! `split_frame` on arbitrary bytes arriving in arbitrary pieces: it never
//! panics, never hands out a frame over the limit, loses or invents no byte,
//! and finds the same frames however the bytes are cut.
#![no_main]

use bytes::BytesMut;
use kascade_wire::kafka::frame::{split_frame, FrameError};
use libfuzzer_sys::fuzz_target;

/// Splits everything `pieces` deliver; the frames, and the error that stopped it if any.
fn split_all<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    limit: usize,
) -> (Vec<Vec<u8>>, Option<FrameError>, usize) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for piece in pieces {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match split_frame(&mut buf, limit) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= limit, "a frame over the limit");
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e), fed),
            }
        }
    }
    let consumed: usize = frames.iter().map(|f| 4 + f.len()).sum();
    assert_eq!(consumed + buf.len(), fed, "bytes lost or invented");
    (frames, None, fed)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(a) * 4;
    let step = usize::from(b).max(1);
    let (whole, whole_err, _) = split_all(std::iter::once(input), limit);
    let (pieces, pieces_err, _) = split_all(input.chunks(step), limit);
    assert_eq!(whole, pieces, "frames depend on how the bytes arrive");
    assert_eq!(
        whole_err, pieces_err,
        "errors depend on how the bytes arrive"
    );
});
