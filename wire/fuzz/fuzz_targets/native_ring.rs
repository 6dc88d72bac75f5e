//! The ring reader over memory a hostile peer wrote: the fuzzer picks the
//! data area's bytes, the tail the consumer sees and the head the producer
//! sees, after an honest prefix of records. The consumer hands out only the
//! honest records (intact) and then records, `None` or `Corrupt`; the
//! producer refuses a wild head; nothing panics or reads out of bounds
//! (run under AddressSanitizer to check the latter).
#![no_main]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kascade_wire::native::ring::{self, Memory, Ring, RingError};
use libfuzzer_sys::fuzz_target;

const CAP: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((ctl, garbage)) = data.split_first_chunk::<20>() else {
        return;
    };
    let tail = u64::from_le_bytes(ctl[0..8].try_into().unwrap());
    let head = u64::from_le_bytes(ctl[8..16].try_into().unwrap());
    let honest = usize::from(ctl[16] % 8);
    let honest_len = usize::from(ctl[17]) * 4;
    let mode = ctl[18];

    let mem = Arc::new(Memory::heap(ring::ring_bytes(CAP)));
    let r = Ring::create(mem.clone(), 0, CAP).unwrap();
    let (mut p, mut c) = (r.producer(), r.consumer());
    // Some honest records first (moving the positions around the ring).
    let mut buf = Vec::new();
    for i in 0..honest {
        let payload = vec![i as u8; honest_len];
        assert!(p.try_push(&payload).unwrap());
        p.publish();
        assert!(c.copy_next(&mut buf).unwrap());
        assert_eq!(buf, payload);
        c.release();
    }
    let start = c.position();
    // The peer scribbles over the data area and sets a tail.
    if !garbage.is_empty() {
        for i in 0..CAP as usize {
            // SAFETY: `i < CAP`, inside the data area of the heap ring.
            unsafe { *mem.as_ptr().add(ring::HEADER_BYTES + i) = garbage[i % garbage.len()] };
        }
    }
    let tail = match mode % 3 {
        0 => tail,
        1 => start.wrapping_add(tail % (2 * u64::from(CAP))),
        _ => start.wrapping_add(tail % u64::from(CAP)) & !7,
    };
    // SAFETY: the tail word of the ring header, 8-aligned inside the heap block.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(mem.as_ptr().add(64).cast()) }.store(tail, Ordering::Release);
    for _ in 0..2 * CAP {
        match c.copy_next(&mut buf) {
            Ok(true) => {
                assert!(buf.len() <= ring::max_payload(CAP));
                c.release();
            }
            Ok(false) => break,
            Err(e) => {
                assert!(matches!(e, RingError::Corrupt(_)), "{e:?}");
                break;
            }
        }
    }
    // The peer sets a wild head: the producer refuses it or sees sane credits.
    // SAFETY: the head word of the ring header, 8-aligned inside the heap block.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(mem.as_ptr().add(128).cast()) }.store(head, Ordering::Release);
    match p.refresh() {
        Ok(free) => assert!(free <= u64::from(CAP)),
        Err(e) => assert!(matches!(e, RingError::Corrupt(_)), "{e:?}"),
    }
});
