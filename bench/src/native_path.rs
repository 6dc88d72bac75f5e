//! The native path as its clients see it: one publisher and N subscribers,
//! each a [`Client`] on its own thread, against a running broker.
//!
//! Every value starts with the publisher's `CLOCK_MONOTONIC` time in ns (a
//! clock every process on the host shares) and a sequence number; the
//! subscriber callback (the loop around `next_record`) subtracts the stamp
//! from its own clock. The paced stream sleeps between sends (timer slack
//! 1 ns), so the publisher leaves its CPU to the broker and the subscribers,
//! and it collects the previous acks just before the next send (they have
//! long arrived), never spinning for an ack against a subscriber. A stop
//! record (stamp `u64::MAX`) ends each subscriber.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kascade_wire::native::{Client, ClientOptions, Offset, WaitStrategy};

use crate::kafka_path::tight_timer_slack;
use crate::served::CpuMark;
use crate::{latency_histogram, record};

/// The stamp of the record that ends a case.
const STOP: u64 = u64::MAX;

/// Longest wait for a record or an answer: a guard against a hung case.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// The smallest value: a stamp and a sequence number.
pub const MIN_VALUE: usize = 16;

/// `CLOCK_MONOTONIC` in ns: comparable between processes on this host.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This thread's CPU mask.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain bits (all zero is a valid, empty set); sched_getaffinity
    // fills the one we own for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (rc == 0).then_some(set)
    }
}

/// Restricts the calling thread to `cpus` (nothing when empty).
fn pin(cpus: &[usize]) -> Result<(), String> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: as in `affinity`; CPU_SET ignores a CPU beyond the set's size, and
    // sched_setaffinity only reads the set and applies it to the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(format!(
            "pinning a client thread to CPUs {cpus:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// One case: where, how the clients wait, and what flows.
#[derive(Clone, Debug)]
pub struct Case {
    /// The broker's native URL (`shm:///...` or `tcp://...`).
    pub url: String,
    /// The topic (1 partition, made beforehand).
    pub topic: String,
    /// How every client of the case waits.
    pub wait: WaitStrategy,
    /// Value size in bytes (at least [`MIN_VALUE`]).
    pub size: usize,
    /// Subscribers, each a client on its own thread.
    pub subscribers: usize,
    /// The broker's pid, for its CPU share.
    pub broker_pid: u32,
    /// The publisher's own thread is one of the subscribers: it waits for each record it
    /// publishes (paced cases), so only it and the broker need a CPU per record.
    pub colocated: bool,
    /// Run the publisher and subscriber threads on these CPUs only (empty: anywhere).
    pub client_cpus: Vec<usize>,
}

impl Case {
    fn options(&self, name: &str) -> ClientOptions {
        ClientOptions {
            wait: self.wait,
            request_timeout: Some(HANG_GUARD),
            client_name: name.into(),
            ..ClientOptions::default()
        }
    }
}

/// CPU used over a measured window, in cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// This process: the publisher and the subscribers.
    pub clients: Option<f64>,
    /// The broker process.
    pub broker: Option<f64>,
}

/// What a paced case measured.
#[derive(Clone, Debug)]
pub struct PacedResult {
    /// Publish -> subscriber callback, every subscriber's records merged.
    pub latency: Histogram<u64>,
    /// Records published (warm-up included).
    pub sent: u64,
    /// Records the subscribers received, all together.
    pub received: u64,
    /// Times the publisher fell 50 periods behind and restarted its schedule.
    pub fell_behind: u64,
    /// CPU over the measured window.
    pub cpu: Cpu,
}

/// What a throughput case measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateResult {
    /// Acknowledged publishes per second.
    pub msgs_per_s: f64,
    /// Their value bytes per second.
    pub bytes_per_s: f64,
    /// Records per second the slowest subscriber received, from the first measured send
    /// to the last record's arrival (a subscriber that lags behind shows it), if any.
    pub delivered_per_s: Option<f64>,
    /// CPU over the measured window.
    pub cpu: Cpu,
}

/// What the publisher tells its subscribers.
struct Shared {
    /// Records stamped before this (ns, `CLOCK_MONOTONIC`) are warm-up: not recorded.
    measure_from: AtomicU64,
    /// The first measured sequence number (throughput cases).
    first_seq: AtomicU64,
    /// When the publisher sent it (ns, `CLOCK_MONOTONIC`).
    first_sent: AtomicU64,
}

/// What one subscriber saw.
struct Seen {
    latency: Histogram<u64>,
    received: u64,
    /// When the last record before the stop arrived.
    last_at: u64,
    /// Records from the first measured one on.
    measured: u64,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            latency: latency_histogram(),
            received: 0,
            last_at: 0,
            measured: 0,
        }
    }

    /// Waits for the next record and notes it: its sequence number, or `None` for the stop.
    fn take(&mut self, c: &mut Client, shared: &Shared) -> Result<Option<u64>, String> {
        let d = c
            .next_record(Some(HANG_GUARD))
            .map_err(|e| format!("next_record: {e}"))?
            .ok_or_else(|| format!("no record within {HANG_GUARD:?}"))?;
        let now = mono_ns();
        let v = d.value();
        let word = |i: usize| {
            v.get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let (stamp, seq) = (word(0), word(8));
        if stamp == STOP {
            return Ok(None);
        }
        self.received += 1;
        self.last_at = now;
        if stamp >= shared.measure_from.load(Ordering::Relaxed) {
            record(&mut self.latency, now.saturating_sub(stamp));
        }
        if seq >= shared.first_seq.load(Ordering::Relaxed) {
            self.measured += 1;
        }
        Ok(Some(seq))
    }
}

/// A subscriber client of `case`'s topic, from its end.
fn subscriber(case: &Case) -> Result<Client, String> {
    let mut c = Client::connect_with(&case.url, case.options("bench-subscriber"))
        .map_err(|e| format!("subscriber connect: {e}"))?;
    c.subscribe(&case.topic, &[0], Offset::Latest)
        .map_err(|e| format!("subscribe: {e}"))?;
    Ok(c)
}

fn spawn_subscriber(
    case: &Case,
    index: usize,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<JoinHandle<Result<Seen, String>>, String> {
    let case = case.clone();
    std::thread::Builder::new()
        .name(format!("subscriber-{index}"))
        .spawn(move || {
            if let Err(e) = pin(&case.client_cpus) {
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
            let mut c = match subscriber(&case) {
                Ok(c) => {
                    let _ = ready.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let mut seen = Seen::new();
            while seen.take(&mut c, &shared)?.is_some() {}
            Ok(seen)
        })
        .map_err(|e| format!("spawning a subscriber: {e}"))
}

/// The subscribers of a case, ready to receive.
struct Subscribers {
    handles: Vec<JoinHandle<Result<Seen, String>>>,
    shared: Arc<Shared>,
}

impl Subscribers {
    fn start(case: &Case) -> Result<Subscribers, String> {
        let shared = Arc::new(Shared {
            measure_from: AtomicU64::new(u64::MAX),
            first_seq: AtomicU64::new(u64::MAX),
            first_sent: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        let mut failed = None;
        for i in 0..case.subscribers - usize::from(case.colocated) {
            match spawn_subscriber(case, i, shared.clone(), tx.clone()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for _ in 0..handles.len() {
            match rx.recv_timeout(HANG_GUARD * 2) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or(Some(format!("a subscriber never got ready: {e}"))),
            }
        }
        let subs = Subscribers { handles, shared };
        match failed {
            None => Ok(subs),
            // The ready ones wait for a stop record that never comes: their hang guard ends them.
            Some(e) => Err(e),
        }
    }

    fn join(self) -> Result<Vec<Seen>, String> {
        self.handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a subscriber panicked".to_string())?)
            .collect()
    }
}

/// The publisher's client and its value buffer.
struct Publisher {
    client: Client,
    value: Vec<u8>,
    seq: u64,
    topic: String,
}

impl Publisher {
    fn connect(case: &Case) -> Result<Publisher, String> {
        let client = Client::connect_with(&case.url, case.options("bench-publisher"))
            .map_err(|e| format!("publisher connect: {e}"))?;
        Ok(Publisher {
            client,
            value: vec![0xA5; case.size.max(MIN_VALUE)],
            seq: 0,
            topic: case.topic.clone(),
        })
    }

    /// Stamps the value with `stamp` and the next sequence number, and queues it.
    fn send(&mut self, stamp: u64) -> Result<(), String> {
        self.seq += 1;
        self.value[..8].copy_from_slice(&stamp.to_le_bytes());
        self.value[8..16].copy_from_slice(&self.seq.to_le_bytes());
        self.client
            .publish_nowait(&self.topic, Some(0), None, &self.value, &[])
            .map(|_| ())
            .map_err(|e| format!("publish: {e}"))
    }

    fn flush(&mut self) -> Result<(), String> {
        self.client
            .flush()
            .map(|_| ())
            .map_err(|e| format!("collecting acks: {e}"))
    }

    /// Publishes the stop record (waiting for its ack), after everything queued.
    fn stop(&mut self) -> Result<(), String> {
        self.send(STOP)?;
        self.flush()
    }
}

/// Runs `body` with a publisher and the case's subscribers, then stops and joins them.
fn with_clients<T>(
    case: &Case,
    body: impl FnOnce(&mut Publisher, &Shared) -> Result<T, String>,
) -> Result<(T, Vec<Seen>), String> {
    let subs = Subscribers::start(case)?;
    let mut publisher = Publisher::connect(case)?;
    let before = affinity();
    let result = pin(&case.client_cpus).and_then(|()| body(&mut publisher, &subs.shared));
    let stopped = publisher.stop();
    if let Some(mask) = before {
        // SAFETY: restores this thread's own mask, read by `affinity`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask) };
    }
    let seen = subs.join();
    let out = result?;
    stopped?;
    Ok((out, seen?))
}

/// Publishes at `rate`/s for `warmup` + `duration` (paced by sleeping, late sends caught up at
/// once), recording publish -> subscriber callback latency after the warm-up.
pub fn paced(
    case: &Case,
    rate: u64,
    warmup: Duration,
    duration: Duration,
) -> Result<PacedResult, String> {
    let ((sent, fell_behind, cpu, own), mut seen) = with_clients(case, |p, shared| {
        tight_timer_slack();
        let tcp = case.url.starts_with("tcp://");
        let mut own = match case.colocated && case.subscribers > 0 {
            true => Some((subscriber(case)?, Seen::new())),
            false => None,
        };
        let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
        let warm_end = Instant::now() + warmup;
        let end = warm_end + duration;
        let mut mark = None;
        let mut fell_behind = 0;
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            // The previous acks arrived while this thread slept: collecting them does not wait.
            p.flush()?;
            if mark.is_none() && now >= warm_end {
                shared.measure_from.store(mono_ns(), Ordering::SeqCst);
                mark = Some(CpuMark::now(Some(case.broker_pid)));
            }
            p.send(mono_ns())?;
            if tcp {
                // Over TCP a queued publish leaves only when 64 KiB are queued or a call
                // waits: the client has no way to send it without waiting for its ack.
                p.flush()?;
            }
            if let Some((c, seen)) = own.as_mut() {
                // This thread is a subscriber too: it takes its own record (and any before it).
                while seen.take(c, shared)?.is_some_and(|seq| seq < p.seq) {}
            }
            next += period;
            if now > next + period * 50 {
                next = now + period;
                fell_behind += 1;
            }
        }
        p.flush()?;
        let (clients, broker) = mark.map_or((None, None), |m| m.share_since(Some(case.broker_pid)));
        Ok((
            p.seq,
            fell_behind,
            Cpu { clients, broker },
            own.map(|(_, s)| s),
        ))
    })?;
    seen.extend(own);
    let mut latency = latency_histogram();
    for s in &seen {
        latency
            .add(&s.latency)
            .map_err(|e| format!("merging histograms: {e}"))?;
    }
    Ok(PacedResult {
        latency,
        sent,
        received: seen.iter().map(|s| s.received).sum(),
        fell_behind,
        cpu,
    })
}

/// Publishes as fast as the client takes it (`publish_nowait`, acks collected every few
/// thousand records) for `warmup` + `duration`; the rate of acknowledged publishes, and
/// of records delivered to the slowest subscriber.
pub fn throughput(case: &Case, warmup: Duration, duration: Duration) -> Result<RateResult, String> {
    // Collect acks about every 1 MiB of values (16..16384 records): the answers
    // waiting in the response ring and the client's map stay small.
    let every = ((1usize << 20) / case.size.max(1)).clamp(16, 16384) as u64;
    let ((n, secs, cpu, first_sent), seen) = with_clients(case, |p, shared| {
        let run = |p: &mut Publisher, until: Instant| -> Result<u64, String> {
            let mut n = 0;
            loop {
                for _ in 0..every {
                    p.send(0)?;
                }
                n += every;
                p.flush()?;
                if Instant::now() >= until {
                    return Ok(n);
                }
            }
        };
        run(p, Instant::now() + warmup)?;
        shared.first_sent.store(mono_ns(), Ordering::SeqCst);
        shared.first_seq.store(p.seq + 1, Ordering::SeqCst);
        let mark = CpuMark::now(Some(case.broker_pid));
        let t0 = Instant::now();
        let n = run(p, t0 + duration)?;
        let secs = t0.elapsed().as_secs_f64();
        let (clients, broker) = mark.share_since(Some(case.broker_pid));
        let first_sent = shared.first_sent.load(Ordering::SeqCst);
        Ok((n, secs, Cpu { clients, broker }, first_sent))
    })?;
    let msgs_per_s = n as f64 / secs.max(1e-9);
    let delivered_per_s = seen
        .iter()
        .map(|s| {
            let span = s.last_at.saturating_sub(first_sent);
            s.measured as f64 / (span as f64 / 1e9).max(1e-9)
        })
        .min_by(f64::total_cmp);
    Ok(RateResult {
        msgs_per_s,
        bytes_per_s: msgs_per_s * case.size as f64,
        delivered_per_s,
        cpu,
    })
}
