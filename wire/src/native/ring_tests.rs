use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::native::shm::{ShmPair, Side};
use crate::native::wait::WaitStrategy;

const CAP: u32 = 4096;

fn heap_ring(cap: u32) -> Ring {
    Ring::create(Arc::new(Memory::heap(ring_bytes(cap))), 0, cap).unwrap()
}

/// A ring whose data area ends right before a PROT_NONE page (and whose
/// mapping starts right after one): any read outside the region faults.
fn guarded_ring(cap: u32) -> Ring {
    let page = 4096usize;
    let need = ring_bytes(cap);
    let mid = need.div_ceil(page) * page;
    let total = mid + 2 * page;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let p = p.cast::<u8>();
    // SAFETY: both pages lie inside the mapping just made. The guard pages
    // stay mapped for the life of the test process (a deliberate leak).
    unsafe {
        assert_eq!(libc::mprotect(p.cast(), page, libc::PROT_NONE), 0);
        assert_eq!(
            libc::mprotect(p.add(page + mid).cast(), page, libc::PROT_NONE),
            0
        );
    }
    // SAFETY: `p + page .. + mid` is mapped read-write and owned by this Memory.
    let mem = unsafe { Memory::from_mmap(std::ptr::NonNull::new(p.add(page)).unwrap(), mid) };
    Ring::create(Arc::new(mem), mid - need, cap).unwrap()
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn records_wrap_around_with_padding_and_arrive_intact() {
    let ring = heap_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    let mut buf = Vec::new();
    let mut paddings = 0;
    for i in 0..2000 {
        let len = (i * 37) % 700;
        let before = p.tail();
        assert!(
            p.try_push(&payload(i, len)).unwrap(),
            "an empty ring has room"
        );
        // More than the record itself was written: a padding record came first.
        if p.tail() - before > (8 + len as u64).next_multiple_of(8) {
            paddings += 1;
            assert_eq!(
                p.tail() % u64::from(CAP),
                (8 + len as u64).next_multiple_of(8)
            );
        }
        p.publish();
        assert!(c.copy_next(&mut buf).unwrap());
        assert_eq!(buf, payload(i, len));
        c.release();
        assert!(!c.copy_next(&mut buf).unwrap(), "nothing more");
    }
    assert!(
        paddings > 10,
        "the ring wrapped with padding ({paddings} times)"
    );
}

#[test]
fn a_padding_record_is_skipped_and_the_record_starts_at_zero() {
    let ring = heap_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    let mut buf = Vec::new();
    // 3 records of 1016 bytes (1024 with header) leave 1024 at the end.
    for i in 0..3 {
        assert!(p.try_push(&payload(i, 1016)).unwrap());
    }
    p.publish();
    for _ in 0..3 {
        assert!(c.copy_next(&mut buf).unwrap());
    }
    c.release();
    // 1100 bytes do not fit in the last 1024: padding, then offset 0.
    assert!(p.try_push(&payload(9, 1100)).unwrap());
    assert_eq!(p.tail(), 4096 + 1112);
    p.publish();
    assert_eq!(ring.data_u32(3072).load(Ordering::Relaxed), 1024 - 8);
    assert_eq!(ring.data_u32(3076).load(Ordering::Relaxed), KIND_PADDING);
    assert!(c.copy_next(&mut buf).unwrap());
    assert_eq!(buf, payload(9, 1100));
    assert_eq!(c.position(), 4096 + 1112);
}

#[test]
fn credits_stop_the_producer_until_the_consumer_releases() {
    let ring = heap_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    let mut n = 0;
    while p.try_push(&[7u8; 504]).unwrap() {
        n += 1;
    }
    assert_eq!(n, 8, "4096 bytes hold eight 512-byte records");
    p.publish();
    let mut buf = Vec::new();
    assert!(c.copy_next(&mut buf).unwrap());
    // Consumed but not released: still no credit.
    assert!(!p.try_push(&[7u8; 504]).unwrap());
    assert!(!c.release(), "the producer is not parked");
    assert!(p.try_push(&[7u8; 504]).unwrap());
    assert!(!p.try_push(&[7u8; 504]).unwrap());
    assert_eq!(p.refresh().unwrap(), 0);
}

#[test]
fn the_largest_payload_always_fits_and_one_more_byte_is_refused() {
    let ring = heap_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    let max = p.max_payload();
    assert_eq!(max, 2040);
    assert_eq!(
        p.try_push(&vec![0; max + 1]),
        Err(RingError::TooLarge { len: max + 1, max })
    );
    let mut buf = Vec::new();
    for i in 0..50 {
        let small = payload(i, i * 13 % 300);
        assert!(p.try_push(&small).unwrap());
        p.publish();
        assert!(c.copy_next(&mut buf).unwrap());
        c.release();
        assert!(
            p.try_push(&payload(i, max)).unwrap(),
            "a max record fits in an empty ring at any offset"
        );
        p.publish();
        assert!(c.copy_next(&mut buf).unwrap());
        assert_eq!(buf, payload(i, max));
        c.release();
    }
}

#[test]
fn flags_tell_each_side_when_to_ring() {
    let ring = heap_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    p.try_push(b"x").unwrap();
    assert!(!p.publish(), "consumer awake: no doorbell");
    ring.consumer_sleeping().store(1, Ordering::Relaxed);
    p.try_push(b"y").unwrap();
    assert!(p.publish(), "consumer asleep: ring it");
    assert!(!p.publish(), "nothing new: no doorbell");
    ring.producer_sleeping().store(1, Ordering::Relaxed);
    let mut buf = Vec::new();
    c.copy_next(&mut buf).unwrap();
    assert!(c.release(), "producer asleep: ring it");
}

#[test]
fn zero_copy_view_then_consume() {
    let ring = heap_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    p.try_push(b"hello").unwrap();
    p.try_push(b"world").unwrap();
    p.publish();
    assert_eq!(c.peek_view().unwrap(), Some(&b"hello"[..]));
    assert_eq!(
        c.peek_view().unwrap(),
        Some(&b"hello"[..]),
        "peek does not consume"
    );
    assert_eq!(c.current_view(), Some(&b"hello"[..]));
    c.consume();
    assert_eq!(c.peek_len().unwrap(), Some(5));
    assert_eq!(c.peek_view().unwrap(), Some(&b"world"[..]));
    c.consume();
    assert_eq!(c.peek_view().unwrap(), None);
    c.release();
    assert_eq!(ring.u64_at(OFF_HEAD).load(Ordering::Relaxed), 32);
}

#[test]
fn attach_checks_the_header() {
    let mem = Arc::new(Memory::heap(ring_bytes(CAP)));
    assert_eq!(
        Ring::attach(mem.clone(), 0, CAP).err(),
        Some(RingError::BadHeader("bad magic"))
    );
    Ring::create(mem.clone(), 0, CAP).unwrap();
    assert!(Ring::attach(mem.clone(), 0, CAP).is_ok());
    assert_eq!(
        Ring::attach(mem.clone(), 0, CAP * 2).err(),
        Some(RingError::RegionTooSmall {
            need: ring_bytes(CAP * 2),
            have: ring_bytes(CAP)
        })
    );
    assert_eq!(
        Ring::create(mem.clone(), 0, 5000).err(),
        Some(RingError::BadCapacity(5000))
    );
    Ring::create(mem.clone(), 0, CAP)
        .unwrap()
        .u32_at(4)
        .store(9, Ordering::Relaxed);
    assert_eq!(
        Ring::attach(mem, 0, CAP).err(),
        Some(RingError::BadHeader("unknown ring version"))
    );
}

/// Advances both halves by `n` records of `len` bytes.
fn advance(p: &mut Producer, c: &mut Consumer, n: usize, len: usize) {
    let mut buf = Vec::new();
    for _ in 0..n {
        assert!(p.try_push(&vec![1; len]).unwrap());
        p.publish();
        assert!(c.copy_next(&mut buf).unwrap());
        c.release();
    }
}

fn set_record(ring: &Ring, off: u64, len: u32, kind: u32) {
    ring.data_u32(off).store(len, Ordering::Relaxed);
    ring.data_u32(off + 4).store(kind, Ordering::Relaxed);
}

#[test]
fn a_wild_peer_gets_typed_errors_and_no_out_of_bounds_read() {
    use Corruption::*;
    let mut buf = Vec::new();
    type Wreck = Box<dyn Fn(&Ring, u64)>;
    let cases: Vec<(&str, Wreck, Corruption)> = vec![
        (
            "tail behind",
            Box::new(|r, at| r.u64_at(OFF_TAIL).store(at - 8, Ordering::Release)),
            TailBehindHead,
        ),
        (
            "tail too far",
            Box::new(|r, at| {
                r.u64_at(OFF_TAIL)
                    .store(at + u64::from(CAP) + 8, Ordering::Release)
            }),
            TailTooFar,
        ),
        (
            "tail unaligned",
            Box::new(|r, at| r.u64_at(OFF_TAIL).store(at + 13, Ordering::Release)),
            UnalignedTail,
        ),
        (
            "bad kind",
            Box::new(|r, at| {
                set_record(r, at % u64::from(CAP), 8, 77);
                r.u64_at(OFF_TAIL).store(at + 16, Ordering::Release);
            }),
            BadKind(77),
        ),
        (
            "len over max",
            Box::new(|r, at| {
                set_record(r, at % u64::from(CAP), u32::MAX, KIND_FRAME);
                r.u64_at(OFF_TAIL).store(at + 16, Ordering::Release);
            }),
            RecordTooLong,
        ),
        (
            "past tail",
            Box::new(|r, at| {
                set_record(r, at % u64::from(CAP), 40, KIND_FRAME);
                r.u64_at(OFF_TAIL).store(at + 16, Ordering::Release);
            }),
            RecordPastTail,
        ),
        (
            "past end",
            Box::new(|r, at| {
                set_record(r, at % u64::from(CAP), 1000, KIND_FRAME);
                r.u64_at(OFF_TAIL).store(at + 1008, Ordering::Release);
            }),
            RecordPastEnd,
        ),
        (
            "short padding",
            Box::new(|r, at| {
                set_record(r, at % u64::from(CAP), 8, KIND_PADDING);
                r.u64_at(OFF_TAIL).store(at + 512, Ordering::Release);
            }),
            BadPadding,
        ),
        (
            "padding past tail",
            Box::new(|r, at| {
                let off = at % u64::from(CAP);
                set_record(r, off, (u64::from(CAP) - off - 8) as u32, KIND_PADDING);
                r.u64_at(OFF_TAIL).store(at + 16, Ordering::Release);
            }),
            RecordPastTail,
        ),
    ];
    for (what, wreck, want) in cases {
        let ring = guarded_ring(CAP);
        let (mut p, mut c) = (ring.producer(), ring.consumer());
        // Move to 64 bytes before the end, so wild lengths point past it.
        advance(&mut p, &mut c, 63, 56);
        let at = c.position();
        assert_eq!(at, 63 * 64);
        wreck(&ring, at);
        assert_eq!(
            c.copy_next(&mut buf),
            Err(RingError::Corrupt(want)),
            "{what}"
        );
    }
}

#[test]
fn a_wild_head_stops_the_producer() {
    let ring = guarded_ring(CAP);
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    ring.u64_at(OFF_HEAD).store(64, Ordering::Release);
    // The producer trusts its cached credits until they run out, then re-reads.
    assert_eq!(
        p.refresh(),
        Err(RingError::Corrupt(Corruption::HeadAheadOfTail))
    );
    ring.u64_at(OFF_HEAD).store(0, Ordering::Release);
    advance(&mut p, &mut c, 100, 120);
    ring.u64_at(OFF_HEAD).store(0, Ordering::Release);
    assert_eq!(p.refresh(), Err(RingError::Corrupt(Corruption::HeadTooFar)));
    // Fill the ring so `has_room` must re-read the head.
    ring.u64_at(OFF_HEAD).store(p.tail(), Ordering::Release);
    while p.try_push(&[0; 200]).unwrap() {}
    ring.u64_at(OFF_HEAD).store(u64::MAX, Ordering::Release);
    assert_eq!(
        p.try_push(&[0; 200]),
        Err(RingError::Corrupt(Corruption::HeadAheadOfTail))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random bytes everywhere and a random tail: the reader returns records,
    /// `None` or `Corrupt`, and never touches a byte outside the region (a
    /// guard page would fault).
    #[test]
    fn random_rings_never_read_outside(seed in proptest::collection::vec(any::<u8>(), 64..512), tail in any::<u64>(), small in any::<bool>()) {
        let ring = guarded_ring(CAP);
        let data = HEADER_BYTES;
        for i in 0..CAP as usize {
            // SAFETY: inside the data area of the ring just created.
            unsafe { *ring.base.add(data + i) = seed[i % seed.len()] ^ (i as u8) };
        }
        // Small tails make well-formed headers likely to be reached.
        let tail = if small { (tail % u64::from(CAP)) & !7 } else { tail };
        ring.u64_at(OFF_TAIL).store(tail, Ordering::Release);
        let mut c = ring.consumer();
        let mut buf = Vec::new();
        for _ in 0..1000 {
            match c.copy_next(&mut buf) {
                Ok(true) => {
                    prop_assert!(buf.len() <= max_payload(CAP));
                    c.release();
                }
                Ok(false) => break,
                Err(e) => {
                    prop_assert!(matches!(e, RingError::Corrupt(_)), "{:?}", e);
                    break;
                }
            }
        }
    }
}

fn ping_pong(wait: WaitStrategy) {
    let pair = ShmPair::create(64 << 10).unwrap();
    let mut a = pair.end(Side::A).unwrap();
    let mut b = pair.end(Side::B).unwrap();
    const N: usize = 2000;
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..N {
            assert!(b
                .recv(
                    &mut buf,
                    wait,
                    Some(Instant::now() + Duration::from_secs(60))
                )
                .unwrap());
            b.send(&buf, wait).unwrap();
        }
    });
    let mut buf = Vec::new();
    for i in 0..N {
        let msg = payload(i, i % 900);
        a.send(&msg, wait).unwrap();
        assert!(a
            .recv(
                &mut buf,
                wait,
                Some(Instant::now() + Duration::from_secs(60))
            )
            .unwrap());
        assert_eq!(buf, msg);
    }
    echo.join().unwrap();
}

fn stream_with_backpressure(wait: WaitStrategy) {
    // A small ring and a slow reader: the writer must wait for credits.
    let pair = ShmPair::create(CAP).unwrap();
    let mut a = pair.end(Side::A).unwrap();
    let mut b = pair.end(Side::B).unwrap();
    const N: usize = 3000;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..N {
            assert!(b
                .recv(
                    &mut buf,
                    wait,
                    Some(Instant::now() + Duration::from_secs(60))
                )
                .unwrap());
            assert_eq!(buf, payload(i, i % 1500));
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    for i in 0..N {
        a.send(&payload(i, i % 1500), wait).unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn two_threads_ping_pong_with_spin_then_park() {
    ping_pong(WaitStrategy::SpinThenPark { spin_us: 20 });
}

#[test]
fn two_threads_ping_pong_blocking() {
    ping_pong(WaitStrategy::Block);
}

#[test]
fn two_threads_ping_pong_busy_polling() {
    ping_pong(WaitStrategy::BusyPoll);
}

#[test]
fn credits_block_a_writer_until_a_slow_reader_catches_up_spin_then_park() {
    stream_with_backpressure(WaitStrategy::SpinThenPark { spin_us: 20 });
}

#[test]
fn credits_block_a_writer_until_a_slow_reader_catches_up_blocking() {
    stream_with_backpressure(WaitStrategy::Block);
}

#[test]
fn a_receive_times_out_when_nothing_comes() {
    let pair = ShmPair::create(CAP).unwrap();
    let mut a = pair.end(Side::A).unwrap();
    let mut buf = Vec::new();
    for wait in [
        WaitStrategy::Block,
        WaitStrategy::SpinThenPark { spin_us: 10 },
        WaitStrategy::BusyPoll,
    ] {
        assert!(!a
            .recv(
                &mut buf,
                wait,
                Some(Instant::now() + Duration::from_millis(20))
            )
            .unwrap());
    }
}
