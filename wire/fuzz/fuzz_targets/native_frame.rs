//! The native frame decoder on arbitrary bytes: it never panics, and every
//! frame it accepts re-encodes to exactly the same bytes (the format is
//! canonical), with `encoded_len` equal to the input's length.
#![no_main]

use kascade_wire::native::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = frame::decode(data) else {
        return;
    };
    assert_eq!(f.encoded_len().expect("a decoded frame encodes"), data.len());
    let mut again = Vec::with_capacity(data.len());
    frame::encode(&f, &mut again).expect("a decoded frame encodes");
    assert_eq!(again, data, "decode then encode gives the same bytes");
    assert_eq!(frame::peek_header(data), Some((f.body.kind(), f.id)));
});
