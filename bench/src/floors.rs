//! The machine's own limits, measured in the benchmark's run: what no engine can beat.
//!
//! Each floor is measured the way the engine would meet it: memory bandwidth
//! by copying buffers much larger than the caches (and 1 MiB ones, which stay
//! in cache); the disk by appending small records to a file beside the data
//! dir and `fdatasync`ing each (also into a preallocated file, and from several
//! threads on several files at once, as shards do); thread hand-offs by
//! ping-ponging a counter between two threads that wait the way the engine's
//! upcall workers wait (spin, spin-then-park, park), back to back and paced;
//! and the wake-up of a thread parked long enough for its CPU to go idle.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::{latency_histogram, nanos_since, record, Latency};

/// Every floor of one run, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Floors {
    /// Cost of one `Instant::now()` pair around nothing: the resolution of every latency figure.
    pub clock: Latency,
    /// Single-thread memcpy bandwidth over buffers far larger than the caches, bytes/s.
    pub memcpy_large: f64,
    /// Single-thread memcpy bandwidth of 1 MiB buffers (cache resident), bytes/s.
    pub memcpy_1mib: f64,
    /// `write` of 100 B + `fdatasync` of a growing file in the data dir's filesystem.
    pub fdatasync: Latency,
    /// `pwrite` of 100 B + `fdatasync` inside a preallocated, zero-filled file (no size change).
    pub fdatasync_prealloc: Latency,
    /// `write` + `fdatasync` by `parallel_files` threads, each on its own file (as shards do).
    pub fdatasync_parallel: Latency,
    /// Aggregate syncs per second of those threads.
    pub fdatasync_parallel_rate: f64,
    /// How many files (threads) the parallel fdatasync floor used.
    pub parallel_files: usize,
    /// One-way hand-off between two spinning threads.
    pub spin: Latency,
    /// One-way hand-off between spin-then-park threads (the other side is still spinning).
    pub spin_then_park: Latency,
    /// The same hand-off with `idle_gap` between round trips, as in a paced stream: caches go cold.
    pub spin_then_park_paced: Latency,
    /// One-way hand-off between threads that park at once, back to back (the CPUs never go idle).
    pub park: Latency,
    /// One-way wake of a thread parked for a while (its CPU idle), measured directly.
    pub idle_wake: Latency,
    /// What the waker itself pays for that wake: the `unpark()` call.
    pub unpark_call: Latency,
    /// The idle gap before each idle wake.
    pub idle_gap: Duration,
}

/// The latency of reading the clock twice with nothing between.
pub fn clock_overhead(duration: Duration) -> Histogram<u64> {
    let mut h = latency_histogram();
    let end = Instant::now() + duration;
    loop {
        let t = Instant::now();
        let ns = nanos_since(t);
        record(&mut h, ns);
        if t >= end {
            return h;
        }
    }
}

/// Single-thread memcpy bandwidth in bytes/s, copying a `size`-byte buffer repeatedly.
pub fn memcpy_bandwidth(size: usize, duration: Duration) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src); // fault the pages in before timing
    let start = Instant::now();
    let mut copied = 0u64;
    while start.elapsed() < duration || copied == 0 {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copied += size as u64;
    }
    copied as f64 / start.elapsed().as_secs_f64()
}

/// Latency of appending `record_bytes` to a fresh file in `dir` and `fdatasync`ing it, each time.
///
/// `dir` should be a temporary directory on the data dir's filesystem; the file
/// grows like a log segment does, so each sync also carries the size change.
pub fn fdatasync_latency(
    dir: &Path,
    record_bytes: usize,
    duration: Duration,
) -> std::io::Result<Histogram<u64>> {
    let path = dir.join("fdatasync-floor.log");
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let data = vec![0x5Au8; record_bytes];
    // Warm up: the first syncs of a new file also write its inode and directory entry.
    for _ in 0..5 {
        file.write_all(&data)?;
        file.sync_data()?;
    }
    let mut h = latency_histogram();
    let end = Instant::now() + duration;
    let mut n = 0;
    while Instant::now() < end || n < 20 {
        let t = Instant::now();
        file.write_all(&data)?;
        file.sync_data()?;
        record(&mut h, nanos_since(t));
        n += 1;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(h)
}

/// `fdatasync_latency` run by `files` threads at once, each on its own file in `dir`:
/// the merged latencies and the aggregate syncs per second.
pub fn parallel_fdatasync(
    dir: &Path,
    files: usize,
    record_bytes: usize,
    duration: Duration,
) -> std::io::Result<(Histogram<u64>, f64)> {
    let start = Instant::now();
    let results: Vec<std::io::Result<Histogram<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..files)
            .map(|i| {
                s.spawn(move || {
                    let sub = dir.join(format!("parallel-{i}"));
                    std::fs::create_dir_all(&sub)?;
                    let h = fdatasync_latency(&sub, record_bytes, duration);
                    std::fs::remove_dir(&sub)?;
                    h
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an fdatasync thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = latency_histogram();
    for h in results {
        all.add(h?).expect("same histogram bounds");
    }
    let rate = all.len() as f64 / elapsed;
    Ok((all, rate))
}

/// Latency of `pwrite` of `record_bytes` + `fdatasync` at increasing offsets of a file
/// preallocated with zeros: what a log that preallocates its segments would pay.
pub fn fdatasync_prealloc_latency(
    dir: &Path,
    record_bytes: usize,
    duration: Duration,
) -> std::io::Result<Histogram<u64>> {
    let path = dir.join("fdatasync-prealloc-floor.log");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let size: u64 = 32 << 20;
    let zeros = vec![0u8; 1 << 20];
    for i in 0..size / zeros.len() as u64 {
        file.write_all_at(&zeros, i * zeros.len() as u64)?;
    }
    file.sync_all()?;
    let data = vec![0x5Au8; record_bytes];
    let mut offset = 0u64;
    let mut h = latency_histogram();
    let end = Instant::now() + duration;
    let mut n = 0;
    while (Instant::now() < end || n < 20) && offset + record_bytes as u64 <= size {
        let t = Instant::now();
        file.write_all_at(&data, offset)?;
        file.sync_data()?;
        if n >= 5 {
            record(&mut h, nanos_since(t));
        }
        offset += record_bytes as u64;
        n += 1;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(h)
}

/// How one side of a hand-off waits for the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Spin forever.
    Spin,
    /// Spin this long, then park until woken.
    SpinThenPark(Duration),
    /// Park at once.
    Park,
}

/// A one-word mailbox with the spin-then-park protocol of the engine's upcall queues.
#[repr(align(128))]
struct Slot {
    value: AtomicU64,
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            value: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// Publishes `v` and wakes the owner if it parked.
    fn send(&self, v: u64) {
        self.value.store(v, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Waits (by `wait`) until the value differs from `last`, and returns it.
    fn wait_change(&self, last: u64, wait: Wait) -> u64 {
        let start = Instant::now();
        loop {
            let v = self.value.load(Ordering::Acquire);
            if v != last {
                return v;
            }
            let park = match wait {
                Wait::Spin => false,
                Wait::SpinThenPark(limit) => start.elapsed() >= limit,
                Wait::Park => true,
            };
            if park {
                self.sleeping.store(true, Ordering::SeqCst);
                if self.value.load(Ordering::SeqCst) == last {
                    std::thread::park();
                }
                self.sleeping.store(false, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// One-way hand-off latency (round trip / 2) of a ping-pong between two threads waiting by `wait`,
/// with `gap` of spinning before each round trip (zero: back to back).
pub fn handoff(wait: Wait, gap: Duration, duration: Duration) -> Histogram<u64> {
    let ping = Arc::new(Slot::new());
    let pong = Arc::new(Slot::new());
    let _ = pong.thread.set(std::thread::current());
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let responder = std::thread::Builder::new()
        .name("floor-pong".into())
        .spawn(move || {
            let _ = ping2.thread.set(std::thread::current());
            let mut last = 0;
            loop {
                let v = ping2.wait_change(last, wait);
                if v == u64::MAX {
                    return;
                }
                pong2.send(v);
                last = v;
            }
        })
        .expect("spawning the hand-off responder");
    // Let the responder register its thread handle before anyone needs to unpark it.
    while ping.thread.get().is_none() {
        std::thread::yield_now();
    }
    let mut h = latency_histogram();
    let end = Instant::now() + duration;
    let warmup = if gap.is_zero() { 1000 } else { 10 };
    let mut i = 0u64;
    loop {
        i += 1;
        if !gap.is_zero() {
            crate::spin_until(Instant::now() + gap);
        }
        let t = Instant::now();
        ping.send(i);
        let got = pong.wait_change(i - 1, wait);
        debug_assert_eq!(got, i);
        let rtt = nanos_since(t);
        if i > warmup {
            record(&mut h, rtt / 2);
        }
        if i > warmup + 30 && t >= end {
            break;
        }
    }
    ping.send(u64::MAX);
    responder.join().expect("the hand-off responder panicked");
    h
}

/// The wake-up of a thread that has been parked for `gap` (its CPU idle, maybe halted),
/// measured one way: from just before `unpark` to the woken thread running. Also returns
/// what the waker's `unpark()` call itself costs. The waker spins, so only one side sleeps.
pub fn idle_wake(gap: Duration, duration: Duration) -> (Histogram<u64>, Histogram<u64>) {
    let base = Instant::now();
    let slot = Arc::new(Slot::new());
    let reply = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (slot2, reply2) = (slot.clone(), reply.clone());
    let sleeper = std::thread::Builder::new()
        .name("floor-sleeper".into())
        .spawn(move || {
            let _ = slot2.thread.set(std::thread::current());
            let mut last = 0;
            let mut n = 0;
            loop {
                let stamp = slot2.wait_change(last, Wait::Park);
                let now = nanos_since(base);
                if stamp == u64::MAX {
                    return;
                }
                n += 1;
                reply2.1.store(now.saturating_sub(stamp), Ordering::Relaxed);
                reply2.0.store(n, Ordering::Release);
                last = stamp;
            }
        })
        .expect("spawning the sleeper");
    while slot.thread.get().is_none() {
        std::thread::yield_now();
    }
    let mut wake = latency_histogram();
    let mut call = latency_histogram();
    let end = Instant::now() + duration;
    let mut i = 0u64;
    loop {
        crate::spin_until(Instant::now() + gap);
        i += 1;
        let stamp = nanos_since(base).max(1);
        let t = Instant::now();
        slot.send(stamp);
        let called = nanos_since(t);
        while reply.0.load(Ordering::Acquire) < i {
            std::hint::spin_loop();
        }
        if i > 10 {
            record(&mut wake, reply.1.load(Ordering::Relaxed));
            record(&mut call, called);
        }
        if i > 30 && Instant::now() >= end {
            break;
        }
    }
    slot.send(u64::MAX);
    sleeper.join().expect("the sleeper panicked");
    (wake, call)
}

/// Measures every floor; `dir` is a temporary directory on the data dir's filesystem.
///
/// `spin_us` is the spin of the spin-then-park floor, `idle_gap` the idle time
/// before each idle wake and paced hand-off (use the period of the paced stream
/// they are compared with), `parallel_files` the threads of the parallel fdatasync floor.
pub fn measure(
    dir: &Path,
    duration: Duration,
    spin_us: u64,
    idle_gap: Duration,
    parallel_files: usize,
) -> std::io::Result<Floors> {
    let large = 64 << 20;
    let (wake, call) = idle_wake(idle_gap, duration);
    let (parallel, parallel_rate) = parallel_fdatasync(dir, parallel_files, 100, duration)?;
    let spin_then_park = Wait::SpinThenPark(Duration::from_micros(spin_us));
    Ok(Floors {
        clock: Latency::of(&clock_overhead(duration / 4)),
        memcpy_large: memcpy_bandwidth(large, duration),
        memcpy_1mib: memcpy_bandwidth(1 << 20, duration / 2),
        fdatasync: Latency::of(&fdatasync_latency(dir, 100, duration)?),
        fdatasync_prealloc: Latency::of(&fdatasync_prealloc_latency(dir, 100, duration)?),
        fdatasync_parallel: Latency::of(&parallel),
        fdatasync_parallel_rate: parallel_rate,
        parallel_files,
        spin: Latency::of(&handoff(Wait::Spin, Duration::ZERO, duration)),
        spin_then_park: Latency::of(&handoff(spin_then_park, Duration::ZERO, duration)),
        spin_then_park_paced: Latency::of(&handoff(spin_then_park, idle_gap, duration)),
        park: Latency::of(&handoff(Wait::Park, Duration::ZERO, duration)),
        idle_wake: Latency::of(&wake),
        unpark_call: Latency::of(&call),
        idle_gap,
    })
}

/// Serves the loopback round-trip floor's other end: echoes every byte read back on `stream`
/// until the peer closes it.
pub fn tcp_echo(mut stream: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::Read;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// Round trips of `size`-byte messages over `stream`, whose peer echoes them (see [`tcp_echo`]):
/// back to back when `gap` is zero, else with `gap` of sleep before each (the CPUs go idle,
/// as between the messages of a paced stream).
pub fn tcp_round_trip(
    stream: &mut std::net::TcpStream,
    size: usize,
    gap: Duration,
    duration: Duration,
) -> std::io::Result<Histogram<u64>> {
    use std::io::Read;
    stream.set_nodelay(true)?;
    let out = vec![0x5Au8; size.max(1)];
    let mut back = vec![0u8; size.max(1)];
    let mut h = latency_histogram();
    let end = Instant::now() + duration;
    let mut i = 0u64;
    loop {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        let rtt = nanos_since(t);
        i += 1;
        if i > 20 {
            record(&mut h, rtt);
        }
        if i > 50 && t >= end {
            return Ok(h);
        }
    }
}
