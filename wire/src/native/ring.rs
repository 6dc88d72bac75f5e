//! THE ring: a single-producer single-consumer byte ring over raw memory,
//! shared by every transport (a memfd mapping for shm, registered memory for
//! RDMA, plain heap memory in tests and for the ping-pong floor).
//!
//! Layout (little-endian), see `native-design.md`:
//! ```text
//! 0   magic u32 "KRNG" | 4 version u32 | 8 capacity u32
//! 64  tail u64  (producer only)      128 head u64 (consumer only)
//! 192 consumer_sleeping u32          196 producer_sleeping u32
//! 256 data[capacity]: records `len u32, kind u32, payload`, each padded to 8
//! ```
//! A record never wraps: when it does not fit before the end, the producer
//! writes a padding record (kind 2) over the rest and starts again at 0.
//!
//! Both halves treat the region as untrusted: each keeps its own copy of the
//! capacity and of its own position, reads the peer's position once per check
//! and validates it, reads record headers with atomic loads, and never forms a
//! reference to bytes the peer may write, except [`Consumer::peek_view`]
//! (the client side, which trusts its broker for the life of the view).

use std::ptr;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

pub use super::memory::Memory;

/// "KRNG".
pub const MAGIC: u32 = 0x4b52_4e47;
/// Ring layout version.
pub const RING_VERSION: u32 = 1;
/// Bytes before the data area.
pub const HEADER_BYTES: usize = 256;
/// Smallest capacity.
pub const MIN_CAPACITY: u32 = 4096;
/// Largest capacity (1 GiB).
pub const MAX_CAPACITY: u32 = 1 << 30;
/// Record kind: a frame.
pub const KIND_FRAME: u32 = 1;
/// Record kind: padding up to the end of the data area.
pub const KIND_PADDING: u32 = 2;
/// Bytes of a record header (`len`, `kind`).
pub const RECORD_HEADER: usize = 8;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 4;
const OFF_CAPACITY: usize = 8;
pub(crate) const OFF_TAIL: usize = 64;
pub(crate) const OFF_HEAD: usize = 128;
const OFF_CONSUMER_SLEEPING: usize = 192;
const OFF_PRODUCER_SLEEPING: usize = 196;

/// What is wrong with a ring; the connection is closed.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// The capacity is not a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    #[error("ring capacity {0} must be a power of two between 4096 and 1 GiB")]
    BadCapacity(u64),
    /// The region is too small or misaligned for the ring placed in it.
    #[error("a ring of {need} bytes does not fit the {have}-byte region (or its start is not 64-byte aligned)")]
    RegionTooSmall {
        /// Bytes the ring needs.
        need: usize,
        /// Bytes the region has after the ring's offset.
        have: usize,
    },
    /// The header's magic, version or capacity is not what was agreed.
    #[error("ring header is corrupt: {0}")]
    BadHeader(&'static str),
    /// The peer wrote a position or record that breaks the ring's rules.
    #[error("ring is corrupt: {0}")]
    Corrupt(Corruption),
    /// A record larger than the ring allows.
    #[error("a record of {len} bytes exceeds the ring's largest record of {max} bytes")]
    TooLarge {
        /// Payload bytes asked for.
        len: usize,
        /// The ring's largest payload.
        max: usize,
    },
}

/// Which ring rule the peer broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The producer's tail is behind what was already read.
    TailBehindHead,
    /// The producer's tail is more than a capacity ahead of the head.
    TailTooFar,
    /// The tail is not a multiple of 8.
    UnalignedTail,
    /// The consumer's head is ahead of the tail.
    HeadAheadOfTail,
    /// The consumer's head is more than a capacity behind the tail.
    HeadTooFar,
    /// A record's kind is neither frame nor padding.
    BadKind(u32),
    /// A record runs past the end of the data area.
    RecordPastEnd,
    /// A record runs past the published tail.
    RecordPastTail,
    /// A record's length is over the ring's largest payload.
    RecordTooLong,
    /// A padding record's length does not reach the end of the data area.
    BadPadding,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::TailBehindHead => f.write_str("the tail is behind the head"),
            Corruption::TailTooFar => {
                f.write_str("the tail is more than a capacity ahead of the head")
            }
            Corruption::UnalignedTail => f.write_str("the tail is not 8-byte aligned"),
            Corruption::HeadAheadOfTail => f.write_str("the head is ahead of the tail"),
            Corruption::HeadTooFar => {
                f.write_str("the head is more than a capacity behind the tail")
            }
            Corruption::BadKind(k) => {
                write!(f, "record kind {k} is neither frame (1) nor padding (2)")
            }
            Corruption::RecordPastEnd => f.write_str("a record runs past the end of the data area"),
            Corruption::RecordPastTail => f.write_str("a record runs past the published tail"),
            Corruption::RecordTooLong => {
                f.write_str("a record is longer than the ring's largest payload")
            }
            Corruption::BadPadding => {
                f.write_str("a padding record does not reach the end of the data area")
            }
        }
    }
}

fn corrupt(c: Corruption) -> RingError {
    RingError::Corrupt(c)
}

/// Bytes a ring of `capacity` occupies (header + data).
pub fn ring_bytes(capacity: u32) -> usize {
    HEADER_BYTES + capacity as usize
}

/// The largest payload a ring of `capacity` carries: `capacity / 2 - 8`, so a
/// record always fits after a padding record.
pub fn max_payload(capacity: u32) -> usize {
    capacity as usize / 2 - RECORD_HEADER
}

/// Checks a capacity: a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
pub fn check_capacity(capacity: u64) -> Result<u32, RingError> {
    if capacity.is_power_of_two() && (MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&capacity)
    {
        Ok(capacity as u32)
    } else {
        Err(RingError::BadCapacity(capacity))
    }
}

fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

/// One ring inside a [`Memory`]: where it starts and its (trusted, own) capacity.
#[derive(Clone)]
pub struct Ring {
    mem: Arc<Memory>,
    base: *mut u8,
    capacity: u32,
}

// SAFETY: `base` points into `mem`, which is Send + Sync and kept alive by the Arc.
unsafe impl Send for Ring {}

impl Ring {
    fn place(mem: Arc<Memory>, offset: usize, capacity: u32) -> Result<Ring, RingError> {
        let capacity = check_capacity(u64::from(capacity))?;
        let need = ring_bytes(capacity);
        let have = mem.len().saturating_sub(offset);
        let addr = (mem.as_ptr() as usize).wrapping_add(offset);
        if have < need || offset > mem.len() || !addr.is_multiple_of(64) {
            return Err(RingError::RegionTooSmall { need, have });
        }
        // SAFETY: `offset + need <= mem.len()`, checked above.
        let base = unsafe { mem.as_ptr().add(offset) };
        Ok(Ring {
            mem,
            base,
            capacity,
        })
    }

    /// Writes a fresh ring header (empty ring) at `offset` of `mem`.
    pub fn create(mem: Arc<Memory>, offset: usize, capacity: u32) -> Result<Ring, RingError> {
        let ring = Ring::place(mem, offset, capacity)?;
        ring.u32_at(OFF_MAGIC).store(MAGIC, Ordering::Relaxed);
        ring.u32_at(OFF_VERSION)
            .store(RING_VERSION, Ordering::Relaxed);
        ring.u32_at(OFF_CAPACITY).store(capacity, Ordering::Relaxed);
        ring.u64_at(OFF_TAIL).store(0, Ordering::Relaxed);
        ring.u64_at(OFF_HEAD).store(0, Ordering::Relaxed);
        ring.u32_at(OFF_CONSUMER_SLEEPING)
            .store(0, Ordering::Relaxed);
        ring.u32_at(OFF_PRODUCER_SLEEPING)
            .store(0, Ordering::Release);
        Ok(ring)
    }

    /// Attaches to a ring another party created at `offset` of `mem`; checks
    /// the header's magic, version and that its capacity is the agreed one.
    pub fn attach(mem: Arc<Memory>, offset: usize, capacity: u32) -> Result<Ring, RingError> {
        let ring = Ring::place(mem, offset, capacity)?;
        if ring.u32_at(OFF_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(RingError::BadHeader("bad magic"));
        }
        if ring.u32_at(OFF_VERSION).load(Ordering::Relaxed) != RING_VERSION {
            return Err(RingError::BadHeader("unknown ring version"));
        }
        if ring.u32_at(OFF_CAPACITY).load(Ordering::Relaxed) != capacity {
            return Err(RingError::BadHeader(
                "capacity differs from the handshake's",
            ));
        }
        Ok(ring)
    }

    /// The data capacity in bytes.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.mem
    }

    /// The producer half. Exactly one may exist per ring (across processes).
    pub fn producer(&self) -> Producer {
        Producer {
            ring: self.clone(),
            mask: u64::from(self.capacity) - 1,
            tail: 0,
            published: 0,
            head: 0,
        }
    }

    /// The consumer half. Exactly one may exist per ring (across processes).
    pub fn consumer(&self) -> Consumer {
        Consumer {
            ring: self.clone(),
            mask: u64::from(self.capacity) - 1,
            read: 0,
            head: 0,
            tail: 0,
            current: None,
        }
    }

    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is one of the header's 8-aligned word offsets, inside the
        // ring (checked in `place`), the base is 64-aligned, and the memory lives
        // as long as `self.mem`. Atomics permit the peer's concurrent writes.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast()) }
    }

    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as for `u64_at`, with 4-aligned offsets.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }

    /// The data byte at `off` (must be `< capacity`).
    fn data(&self, off: u64) -> *mut u8 {
        debug_assert!(off < u64::from(self.capacity));
        // SAFETY: `HEADER_BYTES + off < ring_bytes(capacity)`, inside the ring.
        unsafe { self.base.add(HEADER_BYTES + off as usize) }
    }

    /// The data word at `off` (8-aligned, `< capacity`).
    pub(crate) fn data_u32(&self, off: u64) -> &AtomicU32 {
        // SAFETY: `off` is 8-aligned and `off + 8 <= capacity` (records start on
        // 8-byte boundaries), so both words lie inside the data area.
        unsafe { AtomicU32::from_ptr(self.data(off).cast()) }
    }

    /// The consumer's sleeping flag.
    pub fn consumer_sleeping(&self) -> &AtomicU32 {
        self.u32_at(OFF_CONSUMER_SLEEPING)
    }

    /// The producer's sleeping flag.
    pub fn producer_sleeping(&self) -> &AtomicU32 {
        self.u32_at(OFF_PRODUCER_SLEEPING)
    }
}

/// The writing half of a ring.
pub struct Producer {
    ring: Ring,
    mask: u64,
    /// Our write position (own copy; never read back from memory).
    tail: u64,
    /// The tail last stored for the consumer.
    published: u64,
    /// The consumer's head as last read (validated).
    head: u64,
}

impl Producer {
    /// The ring this writes.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The largest payload one record may carry.
    pub fn max_payload(&self) -> usize {
        max_payload(self.ring.capacity)
    }

    /// Our write position (bytes ever written, padding included).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Re-reads the consumer's head and returns the free bytes.
    pub fn refresh(&mut self) -> Result<u64, RingError> {
        let h = self.ring.u64_at(OFF_HEAD).load(Ordering::Acquire);
        let cap = u64::from(self.ring.capacity);
        if h > self.tail {
            return Err(corrupt(Corruption::HeadAheadOfTail));
        }
        if self.tail - h > cap {
            return Err(corrupt(Corruption::HeadTooFar));
        }
        self.head = h;
        Ok(cap - (self.tail - h))
    }

    /// Bytes a payload of `len` takes at the current tail, padding record included.
    fn needed(&self, len: usize) -> u64 {
        let rec = pad8((RECORD_HEADER + len) as u64);
        let off = self.tail & self.mask;
        let cap = u64::from(self.ring.capacity);
        if off + rec > cap {
            (cap - off) + rec
        } else {
            rec
        }
    }

    /// True when a payload of `len` bytes fits now (re-reading the head if needed).
    pub fn has_room(&mut self, len: usize) -> Result<bool, RingError> {
        let cap = u64::from(self.ring.capacity);
        let need = self.needed(len);
        if cap - (self.tail - self.head) >= need {
            return Ok(true);
        }
        Ok(self.refresh()? >= need)
    }

    /// Writes one record of `len` payload bytes, filled in place by `fill`
    /// (given a raw pointer to exactly `len` writable bytes), if it fits.
    /// Returns false (writing nothing) when the ring lacks room. The record is
    /// not visible to the consumer until [`Producer::publish`].
    pub fn try_write_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(*mut u8),
    ) -> Result<bool, RingError> {
        let max = self.max_payload();
        if len > max {
            return Err(RingError::TooLarge { len, max });
        }
        if !self.has_room(len)? {
            return Ok(false);
        }
        let cap = u64::from(self.ring.capacity);
        let rec = pad8((RECORD_HEADER + len) as u64);
        let mut off = self.tail & self.mask;
        if off + rec > cap {
            // Padding over the rest of the data area; `cap - off >= 8`.
            self.ring
                .data_u32(off)
                .store((cap - off) as u32 - RECORD_HEADER as u32, Ordering::Relaxed);
            self.ring
                .data_u32(off + 4)
                .store(KIND_PADDING, Ordering::Relaxed);
            self.tail += cap - off;
            off = 0;
        }
        self.ring.data_u32(off).store(len as u32, Ordering::Relaxed);
        self.ring
            .data_u32(off + 4)
            .store(KIND_FRAME, Ordering::Relaxed);
        fill(self.ring.data(off + RECORD_HEADER as u64));
        self.tail += rec;
        Ok(true)
    }

    /// Copies `payload` in as one record, if it fits (see [`Producer::try_write_with`]).
    pub fn try_push(&mut self, payload: &[u8]) -> Result<bool, RingError> {
        self.try_write_with(payload.len(), |dst| {
            // SAFETY: `dst` is `payload.len()` writable bytes inside the ring's
            // data area, which `payload` (our own memory) does not overlap.
            unsafe { ptr::copy_nonoverlapping(payload.as_ptr(), dst, payload.len()) }
        })
    }

    /// Makes every written record visible (stores the tail with Release), then
    /// returns true when the consumer is parked and must be rung.
    pub fn publish(&mut self) -> bool {
        if self.published == self.tail {
            return false;
        }
        self.ring
            .u64_at(OFF_TAIL)
            .store(self.tail, Ordering::Release);
        self.published = self.tail;
        fence(Ordering::SeqCst);
        self.ring.consumer_sleeping().load(Ordering::Relaxed) != 0
    }

    /// True when records were written but not yet published.
    pub fn unpublished(&self) -> bool {
        self.published != self.tail
    }
}

/// The reading half of a ring.
pub struct Consumer {
    ring: Ring,
    mask: u64,
    /// Our read position: past every record handed out (own copy).
    read: u64,
    /// The head last stored for the producer (own copy).
    head: u64,
    /// The producer's tail as last read (validated).
    tail: u64,
    /// The record under `read`: (data offset of its payload, payload length).
    current: Option<(u64, usize)>,
}

impl Consumer {
    /// The ring this reads.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The largest payload a record may carry.
    pub fn max_payload(&self) -> usize {
        max_payload(self.ring.capacity)
    }

    /// Our read position.
    pub fn position(&self) -> u64 {
        self.read
    }

    fn refresh_tail(&mut self) -> Result<(), RingError> {
        let t = self.ring.u64_at(OFF_TAIL).load(Ordering::Acquire);
        if t < self.read {
            return Err(corrupt(Corruption::TailBehindHead));
        }
        if t - self.head > u64::from(self.ring.capacity) {
            return Err(corrupt(Corruption::TailTooFar));
        }
        if !t.is_multiple_of(8) {
            return Err(corrupt(Corruption::UnalignedTail));
        }
        self.tail = t;
        Ok(())
    }

    /// True when a record (or padding) is waiting. Does not validate it.
    pub fn has_data(&mut self) -> Result<bool, RingError> {
        if self.current.is_some() || self.read != self.tail {
            return Ok(true);
        }
        self.refresh_tail()?;
        Ok(self.read != self.tail)
    }

    /// Finds the next frame record, skipping padding; `(payload offset, len)`.
    fn locate(&mut self) -> Result<Option<(u64, usize)>, RingError> {
        if let Some(cur) = self.current {
            return Ok(Some(cur));
        }
        let cap = u64::from(self.ring.capacity);
        loop {
            if self.read == self.tail {
                self.refresh_tail()?;
                if self.read == self.tail {
                    return Ok(None);
                }
            }
            let avail = self.tail - self.read;
            let off = self.read & self.mask;
            if avail < RECORD_HEADER as u64 {
                return Err(corrupt(Corruption::RecordPastTail));
            }
            let len = self.ring.data_u32(off).load(Ordering::Relaxed);
            let kind = self.ring.data_u32(off + 4).load(Ordering::Relaxed);
            match kind {
                KIND_PADDING => {
                    let rest = cap - off;
                    if u64::from(len) + RECORD_HEADER as u64 != rest {
                        return Err(corrupt(Corruption::BadPadding));
                    }
                    if rest > avail {
                        return Err(corrupt(Corruption::RecordPastTail));
                    }
                    self.read += rest;
                }
                KIND_FRAME => {
                    let len = len as usize;
                    if len > self.max_payload() {
                        return Err(corrupt(Corruption::RecordTooLong));
                    }
                    let rec = pad8((RECORD_HEADER + len) as u64);
                    if off + RECORD_HEADER as u64 + len as u64 > cap {
                        return Err(corrupt(Corruption::RecordPastEnd));
                    }
                    if rec > avail {
                        return Err(corrupt(Corruption::RecordPastTail));
                    }
                    let cur = (off + RECORD_HEADER as u64, len);
                    self.current = Some(cur);
                    return Ok(Some(cur));
                }
                other => return Err(corrupt(Corruption::BadKind(other))),
            }
        }
    }

    /// The next record's payload length, if one is waiting.
    pub fn peek_len(&mut self) -> Result<Option<usize>, RingError> {
        Ok(self.locate()?.map(|(_, len)| len))
    }

    /// Copies the next record's payload into `buf` (replacing its contents) and
    /// consumes it. The broker side reads only this way: the bytes are copied
    /// out before anything decodes them. Returns false when the ring is empty.
    pub fn copy_next(&mut self, buf: &mut Vec<u8>) -> Result<bool, RingError> {
        let Some((off, len)) = self.locate()? else {
            return Ok(false);
        };
        buf.clear();
        buf.reserve(len);
        // SAFETY: `off..off+len` lies inside the data area (checked in
        // `locate` against our own capacity); `buf` has room for `len` bytes
        // and is our own memory. The copy reads bytes, never references them.
        unsafe {
            ptr::copy_nonoverlapping(self.ring.data(off), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        self.consume();
        Ok(true)
    }

    /// A view of the next record's payload in place, without consuming it.
    ///
    /// The slice points into shared memory the producer could overwrite if it
    /// broke the protocol; the client uses this for its trusted broker only.
    pub fn peek_view(&mut self) -> Result<Option<&[u8]>, RingError> {
        let Some((off, len)) = self.locate()? else {
            return Ok(None);
        };
        // SAFETY: the range is inside the data area (checked in `locate`), and
        // a producer that follows the protocol never writes between head and
        // tail, so the bytes do not change while the view (which borrows
        // `self`, blocking `consume`) lives.
        Ok(Some(unsafe {
            std::slice::from_raw_parts(self.ring.data(off), len)
        }))
    }

    /// The payload `peek_view` last returned, again (no refresh).
    pub fn current_view(&self) -> Option<&[u8]> {
        let (off, len) = self.current?;
        // SAFETY: as in `peek_view`.
        Some(unsafe { std::slice::from_raw_parts(self.ring.data(off), len) })
    }

    /// Moves past the record last located (no-op when none). Call
    /// [`Consumer::release`] to hand the space back to the producer.
    pub fn consume(&mut self) {
        // `locate` skipped any padding, so the record starts at `read`.
        if let Some((_, len)) = self.current.take() {
            self.read += pad8((RECORD_HEADER + len) as u64);
        }
    }

    /// Stores our head (Release) so the producer sees the freed space; returns
    /// true when the producer is parked waiting for credits and must be rung.
    pub fn release(&mut self) -> bool {
        if self.head == self.read {
            return false;
        }
        self.ring
            .u64_at(OFF_HEAD)
            .store(self.read, Ordering::Release);
        self.head = self.read;
        fence(Ordering::SeqCst);
        self.ring.producer_sleeping().load(Ordering::Relaxed) != 0
    }

    /// Our head as last released.
    pub fn released(&self) -> u64 {
        self.head
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
