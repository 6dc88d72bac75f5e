#![allow(dead_code)] // each user of this file takes the part it needs
//! The example GPU lambda's computation (examples/gpu-lambda/threshold.cu) on
//! the CPU, for the tests to compare the GPU's output with byte for byte and
//! for the benchmark's CPU lambda. Included with `#[path]` where it is used.

/// The threshold a params block holds: its first 4 bytes as a little-endian
/// float32, or 0.0 when it is shorter.
pub fn threshold_of(params: &[u8]) -> f32 {
    params
        .get(..4)
        .map_or(0.0, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The little-endian float32s of `payload` above `limit`, their bytes
/// unchanged, in order (a trailing piece shorter than 4 bytes is ignored).
pub fn threshold(payload: &[u8], limit: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    for value in payload.chunks_exact(4) {
        if f32::from_le_bytes([value[0], value[1], value[2], value[3]]) > limit {
            out.extend_from_slice(value);
        }
    }
    out
}

/// A payload of `count` float32s, spread around 0.5 (deterministic, from `seed`),
/// with a few values that are not ordinary numbers (NaN, infinities, -0.0).
pub fn payload(count: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(count * 4);
    for i in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let v = match i % 97 {
            13 => f32::NAN,
            29 => f32::INFINITY,
            41 => f32::NEG_INFINITY,
            53 => -0.0,
            _ => (state >> 40) as f32 / (1u64 << 24) as f32,
        };
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
